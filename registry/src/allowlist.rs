//! Which mirror registries this installation lets policies name. A namespace's policy chooses its
//! mirror (`actions.imageMirror.registry`), and the controller connects wherever that points, from
//! inside the cluster; so a mirror is contacted only when the operator listed it
//! (`--allowed-mirror-registries`, the chart's `security.allowedMirrorRegistries`). An empty list
//! allows none: mirror swaps are refused, with the reason, until the operator names a mirror.
//!
//! An entry is `host[:port]` (any repository there) or `host[:port]/path/prefix` (only
//! repositories below the prefix). Hosts compare case-insensitively and ports exactly
//! (`mirror:5000` is not `mirror`); a prefix matches whole path segments (`cache` allows
//! `cache/team/app`, not `cache-other/app`).

use std::fmt;

/// One allowed registry, or repositories below a path of one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `host` or `host:port`, lowercase.
    host: String,
    /// Path prefix without leading or trailing `/`; empty for the whole registry.
    prefix: String,
}

/// The mirror registries policies may name. [`Default`] allows none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorAllowlist {
    entries: Vec<Entry>,
}

/// An allowlist entry that is not `host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allowed mirror registry {entry:?} is not host[:port][/path]: {why}")]
pub struct AllowlistError {
    pub entry: String,
    pub why: &'static str,
}

fn valid_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if name.is_empty() || name.len() > 253 {
        return Err("the host is empty or too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        || name.starts_with(['-', '.'])
        || name.ends_with(['-', '.'])
    {
        return Err("the host must be a DNS name or an IPv4 address");
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("the port must be a number from 1 to 65535");
    }
    Ok(())
}

fn valid_path(path: &str) -> bool {
    path.split('/').all(|segment| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && segment.starts_with(|c: char| c.is_ascii_alphanumeric())
    })
}

impl MirrorAllowlist {
    /// Parses entries as the flag gives them; blank entries are skipped, anything else that is
    /// not `host[:port][/path]` (a scheme, a wildcard, a query, `..`) is refused.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowlistError> {
        let mut out = Vec::new();
        for raw in entries.iter().map(|e| e.as_ref().trim()) {
            if raw.is_empty() {
                continue;
            }
            let refuse = |why| AllowlistError {
                entry: raw.to_owned(),
                why,
            };
            if raw.contains("://") {
                return Err(refuse(
                    "leave out the scheme (plain HTTP is --plain-http-registries)",
                ));
            }
            let trimmed = raw.trim_end_matches('/');
            let (host, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            valid_host(host).map_err(refuse)?;
            if !prefix.is_empty() && !valid_path(prefix) {
                return Err(refuse(
                    "the path must be lowercase repository segments separated by /",
                ));
            }
            out.push(Entry {
                host: host.to_ascii_lowercase(),
                prefix: prefix.to_owned(),
            });
        }
        Ok(Self { entries: out })
    }

    /// Whether no registry is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `repository` at `registry` (`host[:port]`) is allowed.
    pub fn allows(&self, registry: &str, repository: &str) -> bool {
        self.entries.iter().any(|e| {
            e.host.eq_ignore_ascii_case(registry)
                && (e.prefix.is_empty()
                    || repository == e.prefix
                    || repository
                        .strip_prefix(e.prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }

    /// Whether some entry names `host` (`host[:port]`): a token service of an allowed registry may
    /// live there.
    pub fn allows_host(&self, host: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.host.eq_ignore_ascii_case(host))
    }
}

impl fmt::Display for MirrorAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("(none)");
        }
        let shown: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                if e.prefix.is_empty() {
                    e.host.clone()
                } else {
                    format!("{}/{}", e.host, e.prefix)
                }
            })
            .collect();
        f.write_str(&shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_allow_their_registry_and_prefix_only() {
        let list = MirrorAllowlist::parse(&[
            "Mirror.Example.com",
            "127.0.0.1:5000/cache/",
            " ",
            "harbor.internal/proxy/docker",
        ])
        .unwrap();
        // (registry, repository, allowed)
        let table: &[(&str, &str, bool)] = &[
            ("mirror.example.com", "library/nginx", true),
            ("MIRROR.example.com", "a", true),
            ("mirror.example.com:443", "library/nginx", false),
            ("evil.mirror.example.com", "library/nginx", false),
            ("mirror.example.com.evil", "library/nginx", false),
            ("127.0.0.1:5000", "cache/team/app", true),
            ("127.0.0.1:5000", "cache", true),
            ("127.0.0.1:5000", "cache-other/app", false),
            ("127.0.0.1:5000", "other/cache/app", false),
            ("127.0.0.1", "cache/team/app", false),
            ("127.0.0.1:5001", "cache/team/app", false),
            ("harbor.internal", "proxy/docker/library/nginx", true),
            ("harbor.internal", "proxy/library/nginx", false),
            ("metadata.google.internal", "x", false),
            ("169.254.169.254", "latest", false),
        ];
        for (registry, repository, want) in table {
            assert_eq!(
                list.allows(registry, repository),
                *want,
                "{registry}/{repository}"
            );
        }
        assert!(list.allows_host("harbor.internal"));
        assert!(!list.allows_host("auth.docker.io"));
        assert_eq!(
            list.to_string(),
            "mirror.example.com, 127.0.0.1:5000/cache, harbor.internal/proxy/docker"
        );
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        for list in [
            MirrorAllowlist::default(),
            MirrorAllowlist::parse::<&str>(&[]).unwrap(),
            MirrorAllowlist::parse(&["", "  "]).unwrap(),
        ] {
            assert!(list.is_empty());
            assert!(!list.allows("mirror.example.com", "library/nginx"));
            assert!(!list.allows_host("mirror.example.com"));
            assert_eq!(list.to_string(), "(none)");
        }
    }

    #[test]
    fn malformed_entries_are_refused_by_name() {
        for bad in [
            "https://mirror.example.com",
            "*.example.com",
            "mirror.example.com:0",
            "mirror.example.com:99999",
            "mirror.example.com:http",
            "mirror.example.com/../etc",
            "mirror.example.com/a//b",
            "mirror.example.com/UPPER",
            "mirror.example.com/a?b=c",
            "user@mirror.example.com",
            "-mirror.example.com",
            ":5000",
        ] {
            let err = MirrorAllowlist::parse(&[bad]).unwrap_err();
            assert_eq!(err.entry, bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
