//! The values editor: change exactly one scalar of a YAML file and nothing else.
//!
//! A GitOps pull request is reviewed by people who know the file: it must change the one line
//! that has to change and keep every comment, anchor, key order, quote style and blank line. So
//! the editor never re-serialises: it finds the scalar through the parser's events (which carry
//! source spans), replaces those bytes only, parses the result again and checks that the new
//! document equals the old one with that single value changed. What it cannot change safely (an
//! alias or an anchor used elsewhere, a key that comes from a merge `<<`, a block scalar) is
//! refused with a reason naming the path, never guessed.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::path::{KeyPath, Step};

/// Which document of a (possibly multi-document) file holds the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// The file's only document (a Helm values file).
    Only,
    /// The document at this position, from 0.
    Index(usize),
    /// The one document that is this resource (`kind`, `metadata.name`): manifests, kustomize
    /// patches.
    Resource { kind: String, name: String },
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Only => f.write_str("the only document"),
            Self::Index(i) => write!(f, "document {i}"),
            Self::Resource { kind, name } => write!(f, "the {kind} {name}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("not valid YAML (line {line}): {message}")]
    Parse { line: usize, message: String },
    #[error("the file holds no YAML document")]
    Empty,
    #[error("the file holds {count} documents: name the resource (kind and name)")]
    ManyDocuments { count: usize },
    #[error("no document {document} (the file holds {count})")]
    NoDocument { document: String, count: usize },
    #[error("{count} documents are {document}")]
    ManyResources { document: String, count: usize },
    #[error("{path}: not found (the file has {found} but nothing under it by that name)")]
    Missing { path: String, found: String },
    #[error("{path}: {count} items match; the path must name one")]
    AmbiguousItem { path: String, count: usize },
    #[error("{path}: the key appears {count} times in one mapping")]
    DuplicateKey { path: String, count: usize },
    #[error("{path}: {found} is a {kind}, not what the path expects")]
    WrongShape {
        path: String,
        found: String,
        kind: &'static str,
    },
    #[error(
        "{path}: reached through an alias (*): the value is shared with other keys, so it is not changed here"
    )]
    Alias { path: String },
    #[error(
        "{path}: comes from a merge key (<<): changing it would change every mapping that merges it"
    )]
    Merged { path: String },
    #[error("{path}: anchored (&) and used by {uses} alias(es): changing it would change them too")]
    Shared { path: String, uses: usize },
    #[error("{path}: a block scalar (| or >), not a single value")]
    Block { path: String },
    #[error("{path}: spans several lines; only a one-line value is changed")]
    MultiLine { path: String },
    #[error("the new value {value:?} is not a one-line value")]
    BadValue { value: String },
    #[error("{path}: the edited file does not differ from the original in exactly that value")]
    Unverified { path: String },
}

/// A value found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    /// 1-based line of the value.
    pub line: usize,
}

/// The result of `set`: the new text and the one line that changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    pub before: String,
    pub after: String,
    /// 1-based line of the value.
    pub line: usize,
    pub old_line: String,
    pub new_line: String,
}

impl Edited {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }

    /// A unified diff of the change, for a pull request's body.
    pub fn diff(&self, file: &str) -> String {
        if !self.changed() {
            return String::new();
        }
        format!(
            "--- a/{file}\n+++ b/{file}\n@@ -{l},1 +{l},1 @@\n-{}\n+{}\n",
            self.old_line,
            self.new_line,
            l = self.line
        )
    }
}

/// The value at `path` in `document`.
pub fn read(text: &str, document: &Document, path: &KeyPath) -> Result<Found, EditError> {
    let docs = load(text)?;
    let index = select(&docs, document)?;
    let target = locate(&docs[index], path)?;
    let Node::Scalar { value, line, .. } = target.node else {
        return Err(not_scalar(path, target.node));
    };
    Ok(Found {
        value: value.clone(),
        line: *line,
    })
}

/// `text` with the value at `path` in `document` set to `value`, and nothing else changed.
pub fn set(
    text: &str,
    document: &Document,
    path: &KeyPath,
    value: &str,
) -> Result<Edited, EditError> {
    if value.is_empty() || value.chars().any(char::is_control) || value.trim() != value {
        return Err(EditError::BadValue {
            value: value.to_owned(),
        });
    }
    let docs = load(text)?;
    let index = select(&docs, document)?;
    let target = locate(&docs[index], path)?;
    let Node::Scalar {
        value: before,
        style,
        start,
        end,
        line,
        ..
    } = target.node
    else {
        return Err(not_scalar(path, target.node));
    };
    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
        return Err(EditError::Block {
            path: path.to_string(),
        });
    }
    let (b0, b1) = quoted_bytes(text, *start, *end, *style);
    if text[b0..b1].contains('\n') {
        return Err(EditError::MultiLine {
            path: path.to_string(),
        });
    }
    let line_start = text[..b0].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[b1..].find('\n').map_or(text.len(), |i| b1 + i);
    let old_line = text[line_start..line_end].trim_end_matches('\r').to_owned();
    if before == value {
        return Ok(Edited {
            text: text.to_owned(),
            before: before.clone(),
            after: value.to_owned(),
            line: *line,
            new_line: old_line.clone(),
            old_line,
        });
    }
    let literal = render(value, before, *style);
    let mut edited = String::with_capacity(text.len() + literal.len());
    edited.push_str(&text[..b0]);
    edited.push_str(&literal);
    edited.push_str(&text[b1..]);

    // Proof: the new file parses to the old documents with that one value changed.
    let mut expected = docs.clone();
    if let Some(Node::Scalar { value: v, .. }) = node_at_mut(&mut expected[index], &target.route) {
        *v = value.to_owned();
    }
    let reparsed = load(&edited).map_err(|_| EditError::Unverified {
        path: path.to_string(),
    })?;
    let same = reparsed.len() == expected.len()
        && reparsed.iter().zip(&expected).all(|(a, b)| a.same_as(b));
    if !same {
        return Err(EditError::Unverified {
            path: path.to_string(),
        });
    }
    let new_line_end = line_end + literal.len() - (b1 - b0);
    Ok(Edited {
        new_line: edited[line_start..new_line_end]
            .trim_end_matches('\r')
            .to_owned(),
        text: edited,
        before: before.clone(),
        after: value.to_owned(),
        line: *line,
        old_line,
    })
}

/// One node of a document, with where its scalar sits in the source (in characters).
#[derive(Clone, Debug)]
enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<String>,
        start: usize,
        end: usize,
        line: usize,
    },
    Map {
        anchor: usize,
        tag: Option<String>,
        entries: Vec<(Node, Node)>,
    },
    Seq {
        anchor: usize,
        tag: Option<String>,
        items: Vec<Node>,
    },
    Alias {
        id: usize,
    },
}

impl Node {
    fn anchor(&self) -> usize {
        match self {
            Node::Scalar { anchor, .. } | Node::Map { anchor, .. } | Node::Seq { anchor, .. } => {
                *anchor
            }
            Node::Alias { .. } => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "single value",
            Node::Map { .. } => "mapping",
            Node::Seq { .. } => "sequence",
            Node::Alias { .. } => "alias",
        }
    }

    fn scalar(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The same content, anchors and tags, wherever and however it is written.
    fn same_as(&self, other: &Node) -> bool {
        match (self, other) {
            (
                Node::Scalar {
                    value: a,
                    anchor: aa,
                    tag: at,
                    ..
                },
                Node::Scalar {
                    value: b,
                    anchor: ba,
                    tag: bt,
                    ..
                },
            ) => a == b && aa == ba && at == bt,
            (
                Node::Map {
                    anchor: aa,
                    tag: at,
                    entries: a,
                },
                Node::Map {
                    anchor: ba,
                    tag: bt,
                    entries: b,
                },
            ) => {
                aa == ba
                    && at == bt
                    && a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ak, av), (bk, bv))| ak.same_as(bk) && av.same_as(bv))
            }
            (
                Node::Seq {
                    anchor: aa,
                    tag: at,
                    items: a,
                },
                Node::Seq {
                    anchor: ba,
                    tag: bt,
                    items: b,
                },
            ) => {
                aa == ba
                    && at == bt
                    && a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            (Node::Alias { id: a }, Node::Alias { id: b }) => a == b,
            _ => false,
        }
    }

    /// Every alias in this subtree, by anchor id.
    fn aliases(&self, out: &mut Vec<usize>) {
        match self {
            Node::Alias { id } => out.push(*id),
            Node::Map { entries, .. } => entries.iter().for_each(|(k, v)| {
                k.aliases(out);
                v.aliases(out);
            }),
            Node::Seq { items, .. } => items.iter().for_each(|i| i.aliases(out)),
            Node::Scalar { .. } => {}
        }
    }

    /// The node carrying anchor `id` in this subtree.
    fn anchored(&self, id: usize) -> Option<&Node> {
        if self.anchor() == id {
            return Some(self);
        }
        match self {
            Node::Map { entries, .. } => entries
                .iter()
                .find_map(|(k, v)| k.anchored(id).or_else(|| v.anchored(id))),
            Node::Seq { items, .. } => items.iter().find_map(|i| i.anchored(id)),
            _ => None,
        }
    }
}

enum Frame {
    Map {
        anchor: usize,
        tag: Option<String>,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
    Seq {
        anchor: usize,
        tag: Option<String>,
        items: Vec<Node>,
    },
}

/// Every document of `text` as nodes.
fn load(text: &str) -> Result<Vec<Node>, EditError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| EditError::Parse {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
        let node = match event {
            Event::Scalar(value, style, anchor, tag) => Node::Scalar {
                value: value.into_owned(),
                style,
                anchor,
                tag: tag.map(|t| t.to_string()),
                start: span.start.index(),
                end: span.end.index(),
                line: span.start.line(),
            },
            Event::Alias(id) => Node::Alias { id },
            Event::MappingStart(anchor, tag) => {
                stack.push(Frame::Map {
                    anchor,
                    tag: tag.map(|t| t.to_string()),
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceStart(anchor, tag) => {
                stack.push(Frame::Seq {
                    anchor,
                    tag: tag.map(|t| t.to_string()),
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                Some(Frame::Map {
                    anchor,
                    tag,
                    entries,
                    ..
                }) => Node::Map {
                    anchor,
                    tag,
                    entries,
                },
                Some(Frame::Seq { anchor, tag, items }) => Node::Seq { anchor, tag, items },
                None => continue,
            },
            _ => continue,
        };
        match stack.last_mut() {
            None => docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
        }
    }
    Ok(docs)
}

/// A document that is only an empty value (`---` at the end of a file).
fn is_blank(node: &Node) -> bool {
    matches!(node, Node::Scalar { value, style: ScalarStyle::Plain, .. } if value.is_empty() || value == "~")
}

fn select(docs: &[Node], document: &Document) -> Result<usize, EditError> {
    let present: Vec<usize> = (0..docs.len()).filter(|&i| !is_blank(&docs[i])).collect();
    match document {
        Document::Only => match present.as_slice() {
            [] => Err(EditError::Empty),
            [one] => Ok(*one),
            many => Err(EditError::ManyDocuments { count: many.len() }),
        },
        Document::Index(i) => present.get(*i).copied().ok_or(EditError::NoDocument {
            document: document.to_string(),
            count: present.len(),
        }),
        Document::Resource { kind, name } => {
            let matching: Vec<usize> = present
                .iter()
                .copied()
                .filter(|&i| {
                    let d = &docs[i];
                    get(d, "kind").and_then(Node::scalar) == Some(kind.as_str())
                        && get(d, "metadata")
                            .and_then(|m| get(m, "name"))
                            .and_then(Node::scalar)
                            == Some(name.as_str())
                })
                .collect();
            match matching.as_slice() {
                [one] => Ok(*one),
                [] => Err(EditError::NoDocument {
                    document: document.to_string(),
                    count: present.len(),
                }),
                many => Err(EditError::ManyResources {
                    document: document.to_string(),
                    count: many.len(),
                }),
            }
        }
    }
}

fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match node {
        Node::Map { entries, .. } => entries
            .iter()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The node a path leads to, and the child indices that reach it.
struct Located<'a> {
    node: &'a Node,
    route: Vec<usize>,
}

fn locate<'a>(root: &'a Node, path: &KeyPath) -> Result<Located<'a>, EditError> {
    let mut uses = Vec::new();
    root.aliases(&mut uses);
    let shared = |node: &Node, at: &KeyPath| -> Result<(), EditError> {
        let anchor = node.anchor();
        let n = uses.iter().filter(|&&u| u == anchor && anchor != 0).count();
        if n > 0 {
            return Err(EditError::Shared {
                path: at.to_string(),
                uses: n,
            });
        }
        Ok(())
    };
    let mut node = root;
    let mut route = Vec::new();
    let mut walked = KeyPath(Vec::new());
    for step in path.steps() {
        shared(node, &walked)?;
        let here = walked.child(step.clone());
        let missing = |walked: &KeyPath| EditError::Missing {
            path: path.to_string(),
            found: if walked.0.is_empty() {
                "the document".to_owned()
            } else {
                walked.to_string()
            },
        };
        let (index, next) = match (step, node) {
            (Step::Key(key), Node::Map { entries, .. }) => {
                let hits: Vec<usize> = (0..entries.len())
                    .filter(|&i| entries[i].0.scalar() == Some(key.as_str()))
                    .collect();
                match hits.as_slice() {
                    [i] => (*i, &entries[*i].1),
                    [] => {
                        let merged = entries
                            .iter()
                            .filter(|(k, _)| k.scalar() == Some("<<"))
                            .any(|(_, v)| merges_key(root, v, key));
                        return Err(if merged {
                            EditError::Merged {
                                path: here.to_string(),
                            }
                        } else {
                            missing(&walked)
                        });
                    }
                    many => {
                        return Err(EditError::DuplicateKey {
                            path: here.to_string(),
                            count: many.len(),
                        });
                    }
                }
            }
            (Step::Index(i), Node::Seq { items, .. }) => match items.get(*i) {
                Some(item) => (*i, item),
                None => return Err(missing(&walked)),
            },
            (Step::Item { key, equals }, Node::Seq { items, .. }) => {
                let hits: Vec<usize> = (0..items.len())
                    .filter(|&i| {
                        get(&items[i], key).and_then(Node::scalar) == Some(equals.as_str())
                    })
                    .collect();
                match hits.as_slice() {
                    [i] => (*i, &items[*i]),
                    [] => return Err(missing(&walked)),
                    many => {
                        return Err(EditError::AmbiguousItem {
                            path: here.to_string(),
                            count: many.len(),
                        });
                    }
                }
            }
            (_, Node::Alias { .. }) => {
                return Err(EditError::Alias {
                    path: walked.to_string(),
                });
            }
            (_, other) => {
                return Err(EditError::WrongShape {
                    path: path.to_string(),
                    found: if walked.0.is_empty() {
                        "the document".to_owned()
                    } else {
                        walked.to_string()
                    },
                    kind: other.kind(),
                });
            }
        };
        route.push(index);
        node = next;
        walked = here;
    }
    if let Node::Alias { .. } = node {
        return Err(EditError::Alias {
            path: path.to_string(),
        });
    }
    shared(node, path)?;
    Ok(Located { node, route })
}

/// Whether a merge value (`<<: *base` or `<<: [*a, *b]`) brings in `key`.
fn merges_key(root: &Node, merge: &Node, key: &str) -> bool {
    match merge {
        Node::Alias { id } => root
            .anchored(*id)
            .is_some_and(|m| get(m, key).is_some() || merged_in(root, m, key)),
        Node::Seq { items, .. } => items.iter().any(|i| merges_key(root, i, key)),
        Node::Map { .. } => get(merge, key).is_some(),
        Node::Scalar { .. } => false,
    }
}

fn merged_in(root: &Node, map: &Node, key: &str) -> bool {
    match map {
        Node::Map { entries, .. } => entries
            .iter()
            .filter(|(k, _)| k.scalar() == Some("<<"))
            .any(|(_, v)| merges_key(root, v, key)),
        _ => false,
    }
}

fn node_at_mut<'a>(root: &'a mut Node, route: &[usize]) -> Option<&'a mut Node> {
    let mut node = root;
    for &i in route {
        node = match node {
            Node::Map { entries, .. } => &mut entries.get_mut(i)?.1,
            Node::Seq { items, .. } => items.get_mut(i)?,
            _ => return None,
        };
    }
    Some(node)
}

fn not_scalar(path: &KeyPath, node: &Node) -> EditError {
    EditError::WrongShape {
        path: path.to_string(),
        found: path.to_string(),
        kind: node.kind(),
    }
}

/// Byte range of the scalar's value as written (after its anchor or tag), quotes included. A quoted scalar's end is found by
/// scanning to its closing quote: the parser's span may run on past it (to a trailing comment).
fn quoted_bytes(text: &str, start: usize, end: usize, style: ScalarStyle) -> (usize, usize) {
    let byte = |chars: usize| {
        text.char_indices()
            .nth(chars)
            .map_or(text.len(), |(b, _)| b)
    };
    let (mut b0, b1) = (byte(start), byte(end));
    // The span of an anchored or tagged scalar starts at its properties (`&name`, `!tag`).
    while b0 < b1 && text[b0..].starts_with(['&', '!']) {
        let word = text[b0..b1].find([' ', '\t']).map_or(b1, |i| b0 + i);
        b0 = text[word..b1]
            .find(|c| c != ' ' && c != '\t')
            .map_or(b1, |i| word + i);
    }
    let quote = match style {
        ScalarStyle::SingleQuoted => '\'',
        ScalarStyle::DoubleQuoted => '"',
        _ => return (b0, b1),
    };
    if !text[b0..].starts_with(quote) && text[..b0].ends_with(quote) {
        b0 -= 1;
    }
    let mut chars = text[b0 + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => {
                // In single quotes, '' is an escaped quote.
                if quote == '\'' && text[b0 + 1 + i + 1..].starts_with('\'') {
                    chars.next();
                    continue;
                }
                return (b0, b0 + 1 + i + 1);
            }
            _ => {}
        }
    }
    (b0, b1)
}

/// The YAML 1.2 core-schema type a plain scalar resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolved {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

fn resolve(plain: &str) -> Resolved {
    let s = plain;
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Resolved::Null;
    }
    if matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE") {
        return Resolved::Bool;
    }
    let digits = |t: &str, radix: u32| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10)
        || s.strip_prefix("0o").is_some_and(|t| digits(t, 8))
        || s.strip_prefix("0x").is_some_and(|t| digits(t, 16))
    {
        return Resolved::Int;
    }
    if matches!(
        unsigned,
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
    ) || is_decimal_float(unsigned)
    {
        return Resolved::Float;
    }
    Resolved::Str
}

/// `1.5`, `.5`, `1.`, `1e3`, `1.5E-3` (the sign already stripped).
fn is_decimal_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    // An integer is not a float; "1e3" is.
    mantissa_ok && exponent_ok && (frac.is_some() || exponent.is_some())
}

/// Written as a plain scalar, `value` reads back as itself.
fn plain_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    !"-?:,[]{}#&*!|>'\"%@`".contains(first)
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.ends_with(':')
        && !value.contains(['\t', '\n', '\r'])
}

/// `value` written in the original's style; a plain value that would read back as another
/// type than the one it replaces (a string becoming a number or a boolean) is double-quoted.
fn render(value: &str, before: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        ScalarStyle::Plain
            if plain_safe(value)
                && (resolve(value) == Resolved::Str || resolve(value) == resolve(before)) =>
        {
            value.to_owned()
        }
        _ => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

#[cfg(test)]
mod tests;
