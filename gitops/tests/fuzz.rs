//! Fuzzing the values editor on stable Rust (proptest): it edits files people wrote, in
//! repositories anyone with push rights can change. Whatever the text, it edits or refuses, never
//! panics; an edit changes exactly the one line and reads back as the value written. Budget:
//! `PROPTEST_CASES` (proptest's 256 in `make test`, more in `make fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_gitops::edit::{Document, EditError, read, set};
use auto_agent_gitops::path::KeyPath;
use proptest::collection::vec;
use proptest::prelude::*;

const HELM: &str = include_str!("fixtures/helm-values.yaml");
const CRLF: &str = include_str!("fixtures/crlf-values.yaml");
const ANCHORS: &str = include_str!("fixtures/anchors-values.yaml");

/// Paths into the fixtures, and some that are not there.
const PATHS: &[&str] = &[
    "resources.limits.memory",
    "resources.requests.memory",
    "image.tag",
    "image.repository",
    "replicaCount",
    "worker.resources.limits.memory",
    "global.imageRegistry",
    "global.imagePullSecrets[0]",
    "nothing.here",
];

/// A one-line value a proposal could write, sometimes with YAML's special characters.
fn new_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(Mi|Gi)",
        "[a-z0-9.-]{1,10}/[a-z]{1,8}:[0-9.]{1,6}",
        "[^\\p{Cc}\\x{feff}]{1,12}".prop_filter("trimmed", |v| v.trim() == v),
    ]
}

/// Every line but one is byte-identical, and the texts have the same number of lines.
fn one_line_differs(before: &str, after: &str) -> bool {
    let (b, a): (Vec<&str>, Vec<&str>) =
        (before.split('\n').collect(), after.split('\n').collect());
    b.len() == a.len() && b.iter().zip(&a).filter(|(x, y)| x != y).count() <= 1
}

fn check_edit(text: &str, path: &str, value: &str) -> Result<(), TestCaseError> {
    let path: KeyPath = path.parse().unwrap();
    if let Ok(edited) = set(text, &Document::Only, &path, value) {
        prop_assert!(
            one_line_differs(text, &edited.text),
            "more than one line changed"
        );
        let back = read(&edited.text, &Document::Only, &path).unwrap();
        prop_assert_eq!(back.value, value);
        prop_assert_eq!(back.line, edited.line);
    }
    Ok(())
}

proptest! {
    /// Any text, any path, any value: an edit or a refusal.
    #[test]
    fn fuzz_any_text_is_edited_or_refused(
        text in any::<String>(), path in 0..PATHS.len(), value in any::<String>(),
    ) {
        let path: KeyPath = PATHS[path].parse().unwrap();
        let _ = read(&text, &Document::Only, &path);
        let _ = set(&text, &Document::Index(0), &path, &value);
    }

    /// Real files with arbitrary text spliced in (non-ASCII, quotes, colons, comments, line
    /// breaks): edits still change exactly one line and read back.
    #[test]
    fn fuzz_spliced_real_files_edit_one_line_or_refuse(
        file in 0..3usize,
        splices in vec((any::<prop::sample::Index>(), "[^\\r]{0,8}"), 0..4),
        path in 0..PATHS.len(),
        value in new_value(),
    ) {
        let mut text = [HELM, CRLF, ANCHORS][file].to_owned();
        for (at, insert) in splices {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let i = boundaries.get(at.index(boundaries.len().max(1))).copied().unwrap_or(0);
            text.insert_str(i, &insert);
        }
        check_edit(&text, PATHS[path], &value)?;
    }

    /// Generated values files (any keys and scalars, any quoting, comments, non-ASCII text):
    /// every key can be set and reads back; no other line moves.
    #[test]
    fn fuzz_generated_values_files_edit_each_key(
        entries in vec(("[a-z][a-zA-Z0-9]{0,6}", "[^\\p{Cc}\\x{feff}'\"#:\\\\]{1,10}", 0..3usize,
                        proptest::option::of("[^\\p{Cc}\\x{feff}]{0,10}")), 1..6),
        pick in any::<prop::sample::Index>(),
        value in new_value(),
    ) {
        let mut text = String::from("# generated\n");
        let mut keys = Vec::new();
        for (i, (key, scalar, quote, comment)) in entries.iter().enumerate() {
            let key = format!("{key}{i}");
            let scalar = scalar.trim();
            let scalar = if scalar.is_empty() { "x" } else { scalar };
            let plain: String = scalar.chars().filter(char::is_ascii_alphanumeric).collect();
            let shown = match quote {
                0 => format!("'{scalar}'"),
                1 => format!("\"{scalar}\""),
                _ => format!("v{plain}"),
            };
            let comment = comment.as_ref().map(|c| format!("  # {c}")).unwrap_or_default();
            text.push_str(&format!("section{i}:\n  {key}: {shown}{comment}\n"));
            keys.push((format!("section{i}.{key}"), *quote == 2));
        }
        let (key, plain) = &keys[pick.index(keys.len())];
        let path: KeyPath = key.parse().unwrap();
        let edited = set(&text, &Document::Only, &path, &value);
        // A quoted value takes anything one-line; a plain one may refuse a value that would read
        // back as something else (it never writes it).
        prop_assert!(
            edited.is_ok() || (*plain && matches!(edited, Err(EditError::Unverified { .. }))),
            "{key} in\n{text}\n{edited:?}"
        );
        check_edit(&text, key, &value)?;
    }
}
