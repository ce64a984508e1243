//! The controller's stages depend on each other one way only: a module may use its own stage and
//! the stages below it, never one above. Reads every source file and fails on an upward `crate::`
//! path, so a cycle such as `status -> scale -> report` cannot come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Lowest first. `lib.rs` and `main.rs` declare modules and start the app; they are not checked.
const STAGES: &[&str] = &[
    "args",
    "platform",
    // Test support (cfg(test)): fakes of the API and the leader, which every stage's tests use.
    "testing",
    "cluster",
    "policies",
    "ingest",
    "evidence",
    "act",
    "escalate",
    "gitops",
    "reconcile",
    "app",
];

fn rank(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The stage a file belongs to: its folder under src/, or its own name for a top-level file.
fn stage_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every stage named by a `crate::<stage>` path in the text.
fn used_stages(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .filter(|(i, _)| {
            // `auto_agent_crate::` or `some_crate::` are not ours.
            *i == 0
                || !text.as_bytes()[i - 1].is_ascii_alphanumeric() && text.as_bytes()[i - 1] != b'_'
        })
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn stages_depend_downward_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let stage = stage_of(&src, file);
        if stage == "lib" || stage == "main" {
            continue;
        }
        let own = rank(&stage).unwrap_or_else(|| panic!("{} is in no known stage", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for used in used_stages(&text) {
            checked += 1;
            match rank(&used) {
                Some(r) if r <= own => {}
                Some(_) => {
                    violations.push(format!("{} ({stage}) uses crate::{used}", file.display()))
                }
                None => violations.push(format!(
                    "{} uses crate::{used}, no known stage",
                    file.display()
                )),
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} crate paths found; is the scan broken?"
    );
    assert!(
        violations.is_empty(),
        "upward dependencies:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_sees_an_upward_path() {
    assert_eq!(used_stages("use crate::reconcile::pod;"), ["reconcile"]);
    assert!(used_stages("use auto_agent_crate::x; my_crate::y").is_empty());
    assert!(rank("reconcile") > rank("policies"));
}
