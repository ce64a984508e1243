//! Where a value lives in a YAML document: `resources.limits.memory`,
//! `spec.template.spec.containers[name=app].image`, `images[0].newName`,
//! `podAnnotations["example.com/team"]`.

use std::fmt;
use std::str::FromStr;

/// One step from a node to its child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A mapping's key.
    Key(String),
    /// A sequence's item by position.
    Index(usize),
    /// The one item of a sequence of mappings whose `key` is `equals` (`containers[name=app]`).
    Item { key: String, equals: String },
}

/// A path of steps from a document's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Step>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key path {path:?}: {why}")]
pub struct PathError {
    pub path: String,
    pub why: &'static str,
}

impl KeyPath {
    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// This path followed by `step`.
    pub fn child(&self, step: Step) -> Self {
        let mut steps = self.0.clone();
        steps.push(step);
        Self(steps)
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '$'))
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Step::Key(k) => write!(f, "[{k:?}]")?,
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Item { key, equals } => write!(f, "[{key}={equals}]")?,
            }
        }
        Ok(())
    }
}

impl FromStr for KeyPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, PathError> {
        let err = |why| PathError {
            path: s.to_owned(),
            why,
        };
        let mut steps = Vec::new();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut expect_key = true;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('[') {
                let Some(close) = bracket_end(inner) else {
                    return Err(err("an unclosed ["));
                };
                let body = &inner[..close];
                rest = &inner[close + 1..];
                steps.push(
                    bracket(body).ok_or_else(|| {
                        err("[...] holds an index, key=value or a \"quoted key\"")
                    })?,
                );
                expect_key = false;
                continue;
            }
            if let Some(after_dot) = rest.strip_prefix('.') {
                if expect_key {
                    return Err(err("an empty key"));
                }
                rest = after_dot;
                expect_key = true;
                continue;
            }
            if !expect_key {
                return Err(err("a key must follow a dot"));
            }
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            if !plain_key(key) {
                return Err(err(
                    "keys are letters, digits, _ - / $ (quote others: [\"a.b\"])",
                ));
            }
            steps.push(Step::Key(key.to_owned()));
            rest = &rest[end..];
            expect_key = false;
        }
        if expect_key {
            return Err(err("ends with a dot"));
        }
        Ok(Self(steps))
    }
}

/// The index of the `]` closing a bracket, skipping a quoted key's characters.
fn bracket_end(inner: &str) -> Option<usize> {
    if let Some(quoted) = inner.strip_prefix('"') {
        let close = quoted.find('"')?;
        let after = close + 2;
        return (inner[after..].starts_with(']')).then_some(after);
    }
    inner.find(']')
}

fn bracket(body: &str) -> Option<Step> {
    if let Some(q) = body.strip_prefix('"').and_then(|b| b.strip_suffix('"')) {
        return (!q.is_empty()).then(|| Step::Key(q.to_owned()));
    }
    if let Ok(n) = body.parse::<usize>() {
        return Some(Step::Index(n));
    }
    let (key, equals) = body.split_once('=')?;
    let (key, equals) = (key.trim(), equals.trim());
    (plain_key(key) && !equals.is_empty()).then(|| Step::Item {
        key: key.to_owned(),
        equals: equals.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.into())
    }

    #[test]
    fn paths_parse_and_print_back() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "resources.limits.memory",
                vec![key("resources"), key("limits"), key("memory")],
            ),
            (
                "spec.template.spec.containers[name=app].image",
                vec![
                    key("spec"),
                    key("template"),
                    key("spec"),
                    key("containers"),
                    Step::Item {
                        key: "name".into(),
                        equals: "app".into(),
                    },
                    key("image"),
                ],
            ),
            (
                "images[0].newName",
                vec![key("images"), Step::Index(0), key("newName")],
            ),
            (
                "podAnnotations[\"example.com/team\"]",
                vec![key("podAnnotations"), key("example.com/team")],
            ),
            ("replicaCount", vec![key("replicaCount")]),
            (
                "api-server.resources",
                vec![key("api-server"), key("resources")],
            ),
        ];
        for (text, steps) in cases {
            let path: KeyPath = text.parse().unwrap();
            assert_eq!(path.0, steps, "{text}");
            assert_eq!(path.to_string(), text);
        }
    }

    #[test]
    fn malformed_paths_say_why() {
        for bad in [
            "", ".a", "a.", "a..b", "a[", "a[x]", "a[=x]", "a[k=]", "a b", "a[0]b", "a[\"\"]",
            "a[\"x]",
        ] {
            let e = bad.parse::<KeyPath>().unwrap_err();
            assert_eq!(e.path, bad);
            assert!(!e.why.is_empty());
        }
    }
}
