//! Escalation that reaches people.
//!
//! An incident the agent cannot fix, or fixed but that stays open, goes to the routes its policy
//! names: one Slack thread and one ticket per incident key, each with a summary (from an
//! OpenAI-compatible model when one is configured, else a template). The decision of when to
//! escalate and what to send is pure (`record`, `render`, `deliver`); the channels are thin
//! adapters (`slack`, `llm`, `jira`, and the forge crate for GitHub, GitLab and Gitea).

pub mod allow;
pub mod channels;
pub mod deliver;
pub mod doc;
mod http;
pub mod jira;
pub mod llm;
pub mod record;
pub mod render;
pub mod slack;
