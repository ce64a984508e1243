//! A small document model for incident texts, rendered per channel: Markdown for GitHub, GitLab
//! and Gitea, Atlassian Document Format for Jira Cloud, plain text for Jira Data Center. One model
//! means every channel says the same thing.

use serde_json::{Value, json};

/// A block of an incident text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    Heading(String),
    Paragraph(String),
    /// `label: value` lines.
    Fields(Vec<(String, String)>),
    Bullets(Vec<String>),
    /// Preformatted text (log lines, keys).
    Code(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc {
    pub blocks: Vec<Block>,
}

impl Doc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, block: Block) -> &mut Self {
        self.blocks.push(block);
        self
    }

    pub fn to_markdown(&self) -> String {
        let mut out = Vec::new();
        for block in &self.blocks {
            out.push(match block {
                Block::Heading(t) => format!("### {}", one_line(t)),
                Block::Paragraph(t) => t.clone(),
                Block::Fields(fields) => fields
                    .iter()
                    .map(|(k, v)| format!("- **{}**: {}", one_line(k), md_inline(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Block::Bullets(items) => items
                    .iter()
                    .map(|i| format!("- {}", one_line(i)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Block::Code(t) => format!("```\n{}\n```", t.replace("```", "'''")),
            });
        }
        out.join("\n\n")
    }

    /// Plain text (Jira Data Center descriptions and comments).
    pub fn to_plain(&self) -> String {
        let mut out = Vec::new();
        for block in &self.blocks {
            out.push(match block {
                Block::Heading(t) => one_line(t),
                Block::Paragraph(t) | Block::Code(t) => t.clone(),
                Block::Fields(fields) => fields
                    .iter()
                    .map(|(k, v)| format!("{}: {}", one_line(k), one_line(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Block::Bullets(items) => items
                    .iter()
                    .map(|i| format!("* {}", one_line(i)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        out.join("\n\n")
    }

    /// Atlassian Document Format (Jira Cloud REST v3 descriptions and comments).
    pub fn to_adf(&self) -> Value {
        let mut content = Vec::new();
        for block in &self.blocks {
            match block {
                Block::Heading(t) => content.push(json!({
                    "type": "heading", "attrs": {"level": 3},
                    "content": [text_node(&one_line(t))],
                })),
                Block::Paragraph(t) => content.push(paragraph(t)),
                Block::Fields(fields) => content.push(json!({
                    "type": "bulletList",
                    "content": fields.iter().map(|(k, v)| json!({
                        "type": "listItem",
                        "content": [{"type": "paragraph", "content": [
                            {"type": "text", "text": format!("{}: ", one_line(k)), "marks": [{"type": "strong"}]},
                            text_node(&one_line(v)),
                        ]}],
                    })).collect::<Vec<_>>(),
                })),
                Block::Bullets(items) => content.push(json!({
                    "type": "bulletList",
                    "content": items.iter().map(|i| json!({
                        "type": "listItem", "content": [paragraph(&one_line(i))],
                    })).collect::<Vec<_>>(),
                })),
                Block::Code(t) => content.push(json!({
                    "type": "codeBlock",
                    "content": if t.is_empty() { vec![] } else { vec![text_node(t)] },
                })),
            }
        }
        json!({"type": "doc", "version": 1, "content": content})
    }
}

// ADF text nodes must not be empty.
fn text_node(t: &str) -> Value {
    let t = if t.is_empty() { " " } else { t };
    json!({"type": "text", "text": t})
}

fn paragraph(t: &str) -> Value {
    if t.is_empty() {
        json!({"type": "paragraph", "content": []})
    } else {
        json!({"type": "paragraph", "content": [text_node(t)]})
    }
}

fn one_line(t: &str) -> String {
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

// Keys and names may hold characters Markdown would format; code spans keep them literal.
fn md_inline(v: &str) -> String {
    let v = one_line(v);
    if v.contains(['*', '_', '`', '[', ']', '<', '>', '#', '|']) {
        format!("`{}`", v.replace('`', "'"))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Doc {
        let mut d = Doc::new();
        d.push(Block::Heading("Crash loop\nin shop".into()))
            .push(Block::Fields(vec![
                (
                    "Incident key".into(),
                    "pod/shop/Deployment/api/CrashLoopBackOff".into(),
                ),
                ("Workload".into(), "Deployment shop/api".into()),
            ]))
            .push(Block::Bullets(vec!["restarted pod api-1".into()]))
            .push(Block::Code("panic: boom\n```".into()));
        d
    }

    #[test]
    fn markdown_keeps_keys_literal_and_fences_closed() {
        let md = sample().to_markdown();
        assert!(md.starts_with("### Crash loop in shop\n\n"));
        assert!(md.contains("- **Incident key**: pod/shop/Deployment/api/CrashLoopBackOff"));
        assert!(md.contains("- restarted pod api-1"));
        // a fence inside the log cannot end the code block early
        assert_eq!(md.matches("```").count(), 2);
        let mut d = Doc::new();
        d.push(Block::Fields(vec![("k".into(), "a_b*c".into())]));
        assert_eq!(d.to_markdown(), "- **k**: `a_b*c`");
    }

    #[test]
    fn adf_is_a_version_1_doc_without_empty_text_nodes() {
        let adf = sample().to_adf();
        assert_eq!(adf["type"], "doc");
        assert_eq!(adf["version"], 1);
        let content = adf["content"].as_array().unwrap();
        assert_eq!(content.len(), 4);
        assert_eq!(content[0]["type"], "heading");
        assert_eq!(content[1]["type"], "bulletList");
        assert_eq!(content[3]["type"], "codeBlock");
        fn walk(v: &Value) {
            if v["type"] == "text" {
                assert!(!v["text"].as_str().unwrap().is_empty());
            }
            if let Some(children) = v["content"].as_array() {
                children.iter().for_each(walk);
            }
        }
        walk(&adf);
        let mut empty = Doc::new();
        empty.push(Block::Paragraph(String::new()));
        assert_eq!(empty.to_adf()["content"][0]["content"], json!([]));
    }

    #[test]
    fn plain_text_has_every_field() {
        let plain = sample().to_plain();
        assert!(plain.contains("Incident key: pod/shop/Deployment/api/CrashLoopBackOff"));
        assert!(plain.contains("* restarted pod api-1"));
    }
}
