//! What people read: ticket titles and bodies, Slack Block Kit messages, the template summary and
//! the model's input, all rendered from a record (pure). Every text carries the incident key.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::doc::{Block, Doc};
use crate::record::{Record, Status, What};

/// The label that carries an incident key on a ticket: `auto-agent-<16 hex of SHA-256(key)>`.
/// Valid as a GitHub, GitLab and Gitea label and as a Jira label (no spaces), so one search finds
/// the incident's ticket on every tracker.
pub fn label(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("auto-agent-{hex}")
}

/// The Slack Block Kit limits the messages stay within.
pub const HEADER_MAX: usize = 150;
pub const SECTION_MAX: usize = 3000;
pub const FIELD_MAX: usize = 2000;
pub const FIELDS_MAX: usize = 10;

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn status_word(r: &Record) -> &'static str {
    match r.status {
        Status::Resolved => "Resolved",
        Status::Escalated => "Needs a human",
        Status::Watching => "Watching",
    }
}

/// `[auto-agent] CrashLoopBackOff on Deployment/shop/api`, at most 200 characters (Jira allows 255).
pub fn ticket_title(r: &Record) -> String {
    clip(
        &format!("[auto-agent] {} on {}", r.facts.failure, r.facts.target),
        200,
    )
}

/// The template summary: used when no model is configured, or it is slow or failing.
pub fn template_summary(r: &Record) -> String {
    let mut s = format!(
        "{} on {} needs a human: {}.",
        r.facts.failure,
        r.facts.target,
        explain(&r.reason)
    );
    if let Some(last) = r.history.iter().rev().find(|l| l.text != "resolved") {
        s.push_str(&format!(" Last: {}.", last.text.trim_end_matches('.')));
    }
    if r.repeats > 0 {
        s.push_str(&format!(" Seen {} more time(s) since.", r.repeats));
    }
    if r.status == Status::Resolved {
        s.push_str(" It has since resolved.");
    }
    clip(&s, 1500)
}

/// Why an incident escalated, in words.
pub fn explain(reason: &str) -> String {
    match reason {
        "LoopDetected" => "the same action repeated without curing it".into(),
        "AtMemoryCap" => "memory is already at the policy's cap".into(),
        "BudgetExhausted" => "the action budget is exhausted".into(),
        "DisruptionBreaker" => "too many of the workload's pods are failing at once".into(),
        "MirrorMissing" => "the image is not in the mirror registry".into(),
        "MaxUnavailable" => "too many nodes are already unavailable".into(),
        "DrainTimeout" => "draining the node did not finish in time".into(),
        "StillOpen" => "the incident is still open after the agent acted".into(),
        other if other.contains("Failed(") => format!("an action failed ({other})"),
        other => other.to_owned(),
    }
}

/// The model's input: the record's facts only (the log tail is redacted before it gets here).
pub fn llm_input(r: &Record) -> String {
    let v = json!({
        "incidentKey": r.key,
        "target": r.facts.target,
        "failure": r.facts.failure,
        "escalatedBecause": explain(&r.reason),
        "status": status_word(r),
        "repeatsSinceEscalation": r.repeats,
        "history": r.history.iter().map(|l| &l.text).collect::<Vec<_>>(),
        "logTail": r.facts.log_tail,
    });
    v.to_string()
}

fn facts_fields(r: &Record) -> Vec<(String, String)> {
    let mut f = vec![
        ("Incident key".to_owned(), r.key.clone()),
        ("Status".to_owned(), status_word(r).to_owned()),
        ("Target".to_owned(), r.facts.target.clone()),
        ("Failure".to_owned(), r.facts.failure.clone()),
        ("Escalated because".to_owned(), explain(&r.reason)),
        ("Policy".to_owned(), r.facts.policy.clone()),
    ];
    if let Some(e) = &r.facts.evidence {
        f.push(("Evidence bundle".to_owned(), e.clone()));
    }
    if r.repeats > 0 {
        f.push(("Seen again".to_owned(), r.repeats.to_string()));
    }
    f
}

/// The ticket's body when it is filed.
pub fn ticket_body(r: &Record, summary: &str) -> Doc {
    let mut d = Doc::new();
    d.push(Block::Paragraph(clip(summary, 3000)))
        .push(Block::Fields(facts_fields(r)));
    if !r.history.is_empty() {
        d.push(Block::Heading("What the agent did and refused".into()))
            .push(Block::Bullets(
                r.history.iter().map(|l| l.text.clone()).collect(),
            ));
    }
    if !r.facts.log_tail.is_empty() {
        d.push(Block::Heading("Last log lines (redacted)".into()))
            .push(Block::Code(r.facts.log_tail.join("\n")));
    }
    d.push(Block::Paragraph(format!(
        "Filed by auto-agent for incident {}; one ticket per incident key, found again by its label {}.",
        r.key,
        label(&r.key)
    )));
    d
}

/// A comment on the ticket: a repeat, a recurrence or the resolution.
pub fn ticket_comment(r: &Record, what: What, summary: &str) -> Doc {
    let mut d = Doc::new();
    let head = match (what, r.status) {
        (What::Resolve, _) | (_, Status::Resolved) => {
            format!("Resolved: incident {} is over.", r.key)
        }
        (What::Open, _) => format!(
            "The incident happened again and escalated: {}.",
            explain(&r.reason)
        ),
        (What::Update, _) => format!("Update on incident {}.", r.key),
    };
    d.push(Block::Paragraph(head))
        .push(Block::Paragraph(clip(summary, 3000)));
    if let Some(last) = r.history.last() {
        d.push(Block::Fields(vec![
            ("Latest".to_owned(), last.text.clone()),
            ("Seen again".to_owned(), r.repeats.to_string()),
        ]));
    }
    d
}

/// A Slack message: the thread's root (full facts) or a reply (short).
#[derive(Clone, Debug, PartialEq)]
pub struct SlackText {
    /// The top-level `text` fallback (notifications, screen readers).
    pub text: String,
    pub blocks: Value,
}

fn mrkdwn_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The thread's root message, also used to update it (`chat.update`) when the status changes.
pub fn slack_root(r: &Record, summary: &str, ticket_url: Option<&str>) -> SlackText {
    let header = clip(
        &format!(
            "{}: {} on {}",
            status_word(r),
            r.facts.failure,
            r.facts.target
        ),
        HEADER_MAX,
    );
    let mut fields: Vec<Value> = facts_fields(r)
        .into_iter()
        .map(|(k, v)| {
            json!({"type": "mrkdwn", "text": clip(&format!("*{k}*\n{}", mrkdwn_escape(&v)), FIELD_MAX)})
        })
        .collect();
    if let Some(url) = ticket_url {
        fields.push(json!({"type": "mrkdwn", "text": clip(&format!("*Ticket*\n{}", mrkdwn_escape(url)), FIELD_MAX)}));
    }
    fields.truncate(FIELDS_MAX);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&mrkdwn_escape(summary), SECTION_MAX)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if !r.history.is_empty() {
        let lines: Vec<String> = r
            .history
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(|l| format!("• {}", mrkdwn_escape(&l.text)))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*What the agent did and refused*\n{}", lines.join("\n")), SECTION_MAX)}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&format!("auto-agent incident `{}`", mrkdwn_escape(&r.key)), FIELD_MAX)}]}));
    SlackText {
        text: clip(
            &format!(
                "{}: {} on {} (incident {})",
                status_word(r),
                r.facts.failure,
                r.facts.target,
                r.key
            ),
            SECTION_MAX,
        ),
        blocks: Value::Array(blocks),
    }
}

/// A reply in the thread (or, through a webhook, a message of its own).
pub fn slack_reply(r: &Record, what: What, summary: &str) -> SlackText {
    let text = match (what, r.status) {
        (What::Resolve, _) | (_, Status::Resolved) => {
            format!("Resolved: incident {} is over.", r.key)
        }
        (What::Open, _) => format!(
            "Escalated again ({}): incident {}",
            explain(&r.reason),
            r.key
        ),
        (What::Update, _) => format!(
            "Update: {} (seen {} more time(s)); incident {}",
            r.history.last().map_or("", |l| l.text.as_str()),
            r.repeats,
            r.key
        ),
    };
    let text = clip(&text, SECTION_MAX);
    let blocks = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_escape(&text)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&mrkdwn_escape(summary), FIELD_MAX)}]},
    ]);
    SlackText { text, blocks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Facts, Line, Routes};

    fn record() -> Record {
        Record {
            key: "pod/shop/Deployment/api/CrashLoopBackOff".into(),
            status: Status::Escalated,
            revision: 2,
            routes: Routes::default(),
            facts: Facts {
                target: "Deployment/shop/api".into(),
                namespace: Some("shop".into()),
                policy: "shop/restart".into(),
                failure: "CrashLoopBackOff".into(),
                evidence: Some("s3://bundles/shop/api/1.json".into()),
                log_tail: vec!["panic: <boom> & more".into()],
                subject: None,
            },
            reason: "BudgetExhausted".into(),
            opened_at_ms: 0,
            last_at_ms: 0,
            last_failure_ms: 0,
            last_acted_ms: None,
            escalate_at_ms: None,
            resolved_at_ms: None,
            repeats: 1,
            history: vec![Line {
                at_ms: 0,
                text: "RestartPod: restarted api-1".into(),
            }],
            summary: None,
            slack: None,
            ticket: None,
            outbox: vec![],
        }
    }

    #[test]
    fn label_is_stable_short_and_valid_everywhere() {
        let l = label("pod/shop/Deployment/api/CrashLoopBackOff");
        assert_eq!(l, label("pod/shop/Deployment/api/CrashLoopBackOff"));
        assert_ne!(l, label("pod/shop/Deployment/api/OOMKilled"));
        assert_eq!(l.len(), "auto-agent-".len() + 16);
        assert!(l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn every_text_carries_the_key_and_the_summary() {
        let r = record();
        let body = ticket_body(&r, "the summary").to_markdown();
        for needle in [
            r.key.as_str(),
            "the summary",
            "Deployment/shop/api",
            "the action budget is exhausted",
            "s3://bundles/shop/api/1.json",
            "RestartPod: restarted api-1",
            &label(&r.key),
        ] {
            assert!(body.contains(needle), "{needle} missing from {body}");
        }
        let root = slack_root(&r, "the summary", Some("http://forge/issues/1"));
        let s = root.blocks.to_string();
        assert!(root.text.contains(&r.key));
        assert!(s.contains("the summary") && s.contains("http://forge/issues/1"));
        // mrkdwn control characters from a log or name cannot form links or mentions
        let ticket = ticket_comment(&r, What::Update, "sum").to_plain();
        assert!(ticket.contains("Update on incident"));
        assert!(
            slack_reply(&r, What::Resolve, "s")
                .text
                .starts_with("Resolved")
        );
    }

    #[test]
    fn slack_messages_stay_within_block_kit_limits() {
        let mut r = record();
        r.facts.target = "x".repeat(500);
        r.facts.failure = "y".repeat(500);
        r.history = (0..100)
            .map(|i| Line {
                at_ms: i,
                text: "z".repeat(300),
            })
            .collect();
        let msg = slack_root(&r, &"s".repeat(10_000), Some(&"u".repeat(5000)));
        let blocks = msg.blocks.as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= HEADER_MAX);
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= SECTION_MAX);
            }
            if let Some(f) = b["fields"].as_array() {
                assert!(f.len() <= FIELDS_MAX);
                assert!(
                    f.iter()
                        .all(|x| x["text"].as_str().unwrap().chars().count() <= FIELD_MAX)
                );
            }
        }
        assert!(msg.text.chars().count() <= SECTION_MAX);
        assert!(ticket_title(&r).chars().count() <= 200);
    }

    #[test]
    fn mrkdwn_is_escaped() {
        let r = record();
        let s = slack_root(&r, "<!channel> & <http://evil|click>", None)
            .blocks
            .to_string();
        assert!(!s.contains("<!channel>"));
        assert!(s.contains("&lt;!channel&gt;"));
    }

    #[test]
    fn template_summary_and_model_input_say_what_happened() {
        let mut r = record();
        let t = template_summary(&r);
        assert!(t.contains("CrashLoopBackOff on Deployment/shop/api"));
        assert!(t.contains("budget is exhausted"));
        assert!(t.contains("Seen 1 more time"));
        r.status = Status::Resolved;
        assert!(template_summary(&r).contains("resolved"));
        let input: Value = serde_json::from_str(&llm_input(&r)).unwrap();
        assert_eq!(input["incidentKey"], r.key);
        assert_eq!(input["logTail"][0], "panic: <boom> & more");
        for reason in [
            "LoopDetected",
            "AtMemoryCap",
            "DisruptionBreaker",
            "MirrorMissing",
            "MaxUnavailable",
            "StillOpen",
        ] {
            assert_ne!(explain(reason), reason);
        }
        assert!(explain("BumpMemoryFailed(api)").contains("an action failed"));
    }
}
