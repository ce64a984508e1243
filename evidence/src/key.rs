//! The object key of a bundle, the seed's layout:
//! `<prefix>/<namespace>/<workload>/<reason>/<yyyy-mm-dd>/<pod>-<restartCount>.json`.
//! The restart count keeps repeats of one pod apart; a store adds a further suffix if a different
//! bundle already holds the key, so nothing is overwritten.

/// Replaces what could escape the layout (separators, `..`, NUL) in one path segment.
fn segment(s: &str) -> String {
    let clean = s.replace(['/', '\\', '\0'], "_").replace("..", "_");
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
    let prefix: Vec<String> = prefix
        .split('/')
        .filter(|s| !s.is_empty())
        .map(segment)
        .collect();
    if prefix.is_empty() {
        tail
    } else {
        format!("{}/{tail}", prefix.join("/"))
    }
}

/// The n-th alternative of a key already taken by another bundle: `x.json` -> `x.2.json`.
pub fn alternative(key: &str, n: u32) -> String {
    format!("{}.{n}.json", key.trim_end_matches(".json"))
}

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
}
