//! The object key of a bundle, the seed's layout:
//! `<prefix>/<namespace>/<workload>/<reason>/<yyyy-mm-dd>/<pod>-<restartCount>.json`.
//! The restart count keeps repeats of one pod apart; a store adds a further suffix if a different
//! bundle already holds the key, so nothing is overwritten.
//!
//! [`validate_key`] is the one rule every key meets before a store writes it, whether it was
//! built just now by [`bundle_key`] or read back from the spool or a hand-off ConfigMap: relative,
//! no empty, `.` or `..` segment, no hidden segment, only `A-Z a-z 0-9 - _ . =`, bounded length,
//! ending in `.json`. [`bundle_key`] only builds keys that meet it.

/// S3 allows 1,024 bytes in a key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Linux allows 255 bytes in a file name.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Name parts (namespace, workload, reason, date, pod, each prefix segment) are cut to this many
/// characters, and the prefix to [`MAX_PREFIX_BYTES`], so the longest key `bundle_key` builds,
/// with the longest alternative suffix a store adds (`.101`), stays within [`MAX_KEY_BYTES`].
const MAX_PART_CHARS: usize = 96;
/// The policy's schema allows a 512-character prefix.
const MAX_PREFIX_BYTES: usize = 512;
/// Bundle ids are 24 hex digits; spooled entries may carry nothing longer or stranger than this.
const MAX_BUNDLE_ID_CHARS: usize = 64;

/// Why a key (or a name stored beside it) is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long, more than {MAX_KEY_BYTES}")]
    TooLong(usize),
    #[error("the key is absolute")]
    Absolute,
    #[error("the key has an empty segment")]
    EmptySegment,
    #[error("the key has a `.`, `..` or hidden segment")]
    DotSegment,
    #[error("a key segment is longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong,
    #[error("the key holds the character {0:?}, outside A-Z a-z 0-9 - _ . =")]
    Character(char),
    #[error("the key does not end in .json")]
    NotJson,
    #[error("the bundle id is not 1 to {MAX_BUNDLE_ID_CHARS} of A-Z a-z 0-9 - _")]
    BundleId,
    #[error("the bucket name is not 1 to 255 of A-Z a-z 0-9 . - _ without `..`")]
    Bucket,
    #[error("the filesystem root is not an absolute path without `..`")]
    Root,
}

/// The characters a key segment may hold.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')
}

/// Checks a bundle key: the same rule for keys built by [`bundle_key`] and for keys read back
/// from the spool or a hand-off, so nothing read from disk or the cluster can leave a store's
/// root.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.starts_with('/') {
        return Err(KeyError::Absolute);
    }
    if let Some(c) = key.chars().find(|&c| c != '/' && !allowed(c)) {
        return Err(KeyError::Character(c));
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return Err(KeyError::EmptySegment);
        }
        if seg.starts_with('.') || seg.contains("..") {
            return Err(KeyError::DotSegment);
        }
        if seg.len() > MAX_SEGMENT_BYTES {
            return Err(KeyError::SegmentTooLong);
        }
    }
    if !key.ends_with(".json") {
        return Err(KeyError::NotJson);
    }
    Ok(())
}

/// Checks a bundle id, which names temporary files and spool entries.
pub fn validate_bundle_id(id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BUNDLE_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(KeyError::BundleId) }
}

/// Makes one path segment out of any name: characters outside the allowed set become `_`, `..`
/// and a leading `.` become `_`, and the result is at most [`MAX_PART_CHARS`] long and never
/// empty.
fn segment(s: &str) -> String {
    let mut clean: String = s
        .chars()
        .take(MAX_PART_CHARS)
        .map(|c| if allowed(c) { c } else { '_' })
        .collect::<String>()
        // One pass leaves no `..`: a run of dots becomes underscores and at most one last dot.
        .replace("..", "_");
    if clean.starts_with('.') {
        clean.replace_range(..1, "_");
    }
    if clean.is_empty() {
        "_".to_owned()
    } else {
        clean
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParts<'a> {
    pub namespace: &'a str,
    pub workload: &'a str,
    pub reason: &'a str,
    pub date: &'a str,
    pub pod: &'a str,
    pub restart_count: u32,
}

pub fn bundle_key(prefix: &str, parts: &KeyParts<'_>) -> String {
    let tail = format!(
        "{}/{}/{}/{}/{}-{}.json",
        segment(parts.namespace),
        segment(parts.workload),
        segment(parts.reason),
        segment(parts.date),
        segment(parts.pod),
        parts.restart_count
    );
    let mut kept = String::new();
    for seg in prefix.split('/').filter(|s| !s.is_empty()).map(segment) {
        if kept.len() + seg.len() + 1 > MAX_PREFIX_BYTES {
            break;
        }
        kept.push_str(&seg);
        kept.push('/');
    }
    format!("{kept}{tail}")
}

/// The n-th alternative of a key already taken by another bundle: `x.json` -> `x.2.json`.
pub fn alternative(key: &str, n: u32) -> String {
    format!("{}.{n}.json", key.trim_end_matches(".json"))
}

/// Keys read back from the spool or a hand-off that must never reach a store.
#[cfg(test)]
pub(crate) const HOSTILE_KEYS: &[(&str, KeyError)] = &[
    ("../../etc/passwd.json", KeyError::DotSegment),
    ("a/../../b.json", KeyError::DotSegment),
    ("..", KeyError::DotSegment),
    ("/abs.json", KeyError::Absolute),
    ("/etc/cron.d/x.json", KeyError::Absolute),
    ("a//b.json", KeyError::EmptySegment),
    ("a/b.json/", KeyError::EmptySegment),
    ("a/./b.json", KeyError::DotSegment),
    ("a/.hidden.json", KeyError::DotSegment),
    ("a/b..json", KeyError::DotSegment),
    ("a/b\\.json", KeyError::Character('\\')),
    ("a/b\u{0}.json", KeyError::Character('\u{0}')),
    ("a\\..\\b.json", KeyError::Character('\\')),
    ("a/b c.json", KeyError::Character(' ')),
    ("a/b\n.json", KeyError::Character('\n')),
    // Lookalikes of `.` and `/`: one dot leader, fullwidth full stop and solidus, division
    // slash.
    ("a/\u{2024}\u{2024}/b.json", KeyError::Character('\u{2024}')),
    (
        "a/\u{ff0e}\u{ff0e}\u{ff0f}b.json",
        KeyError::Character('\u{ff0e}'),
    ),
    ("a\u{2215}b.json", KeyError::Character('\u{2215}')),
    ("", KeyError::Empty),
    ("a/b", KeyError::NotJson),
    ("a/b.json.sh", KeyError::NotJson),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(ns: &'a str, pod: &'a str) -> KeyParts<'a> {
        KeyParts {
            namespace: ns,
            workload: "api",
            reason: "CrashLoopBackOff",
            date: "2026-11-25",
            pod,
            restart_count: 4,
        }
    }

    #[test]
    fn layout() {
        let table = [
            ("", "prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json"),
            (
                "bundles",
                "bundles/prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json",
            ),
            (
                "a/b/",
                "a/b/prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json",
            ),
            (
                "/x//y",
                "x/y/prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json",
            ),
        ];
        for (prefix, want) in table {
            assert_eq!(bundle_key(prefix, &parts("prod", "api-1")), want);
        }
    }

    #[test]
    fn cannot_escape() {
        let key = bundle_key("../..", &parts("..", "../../etc/passwd"));
        assert!(!key.contains(".."), "{key}");
        assert_eq!(key.matches('/').count(), 6, "{key}");
        assert_eq!(alternative("a/b.json", 2), "a/b.2.json");
    }

    #[test]
    fn hostile_keys_are_refused() {
        for (key, want) in HOSTILE_KEYS {
            assert_eq!(validate_key(key).as_ref(), Err(want), "{key:?}");
        }
        let long = format!("{}.json", "a/".repeat(600));
        assert_eq!(validate_key(&long), Err(KeyError::TooLong(long.len())));
        let wide = format!("{}.json", "a".repeat(300));
        assert_eq!(validate_key(&wide), Err(KeyError::SegmentTooLong));
        for ok in [
            "a.json",
            "bundles/prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json",
            "team=a/x.2.json",
        ] {
            assert_eq!(validate_key(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn bundle_ids() {
        for ok in ["0123456789abcdef01234567", "b-1", "one"] {
            assert_eq!(validate_bundle_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/../../x", "a.b", "a/b", "x\0", &"a".repeat(65)] {
            assert_eq!(validate_bundle_id(bad), Err(KeyError::BundleId), "{bad:?}");
        }
    }

    #[test]
    fn every_fresh_key_passes_the_same_validation() {
        let long = "x".repeat(300);
        let long_prefix = "p".repeat(90) + "/";
        let long_prefix = long_prefix.repeat(20);
        let names = [
            "..",
            ".",
            "",
            "../../etc/passwd",
            "/abs",
            "a//b",
            "a/./b",
            "nul\0byte",
            ".hidden",
            "...",
            "\u{2024}\u{2024}\u{ff0f}",
            "sp ace",
            long.as_str(),
        ];
        for name in names {
            for prefix in ["", "bundles", "/x//y", "../..", name, long_prefix.as_str()] {
                let key = bundle_key(
                    prefix,
                    &KeyParts {
                        namespace: name,
                        workload: name,
                        reason: name,
                        date: name,
                        pod: name,
                        restart_count: u32::MAX,
                    },
                );
                assert_eq!(validate_key(&key), Ok(()), "{prefix:?} {name:?} -> {key}");
                // Also the last alternative a store may try.
                assert_eq!(validate_key(&alternative(&key, 101)), Ok(()), "{key}");
            }
        }
    }
}
