//! Forge clients: GitHub, GitLab and Gitea over their REST APIs.
//!
//! Escalation files one issue per incident key: the key travels as a label (`auto-agent:<hash>`),
//! so an issue is found by listing by label (consistent, unlike GitHub's search index) and a new
//! leader never opens a duplicate. GitOps proposals use the same clients for branches, file
//! commits and pull requests (`pulls`).
//!
//! Errors say what went wrong and whether a retry can help, never the token.

mod error;
mod gitea;
mod github;
mod gitlab;
mod http;
mod issues;
mod pulls;
mod secret;
#[cfg(test)]
mod test_server;

pub use error::ForgeError;
pub use issues::{Forge, ForgeConfig, ForgeKind, Issue};
pub use pulls::{FileAt, PullRequest, PullState};
pub use secret::Secret;
