//! The real channels behind the delivery traits: the forge clients (GitHub, GitLab, Gitea) and
//! Jira as ticket trackers, and the model client as summarizer (the Slack client implements
//! `SlackApi` in slack.rs). Thin: each maps
//! its client's error to a `ChannelError` (retryable or not, Retry-After, a metric category and a
//! message without credentials).

use std::time::Duration;

use auto_agent_forge::{Forge, ForgeError};

use crate::deliver::{ChannelError, Summarizer, TicketInfo, Tickets};
use crate::doc::Doc;
use crate::jira::Jira;
use crate::llm::{Llm, LlmError, SYSTEM_PROMPT};
use crate::record::{TicketProvider, TicketRoute};

fn forge_error(e: ForgeError) -> ChannelError {
    ChannelError {
        retryable: e.retryable(),
        after: e.retry_after(),
        category: e.category(),
        message: e.to_string(),
    }
}

fn llm_error(e: LlmError) -> ChannelError {
    ChannelError {
        retryable: e.retryable(),
        after: e.retry_after(),
        category: e.category(),
        message: e.to_string(),
    }
}

impl Summarizer for Llm {
    async fn summarize(&self, input: &str) -> Result<(String, String), ChannelError> {
        let s = Llm::summarize(self, SYSTEM_PROMPT, input)
            .await
            .map_err(llm_error)?;
        Ok((s.text, s.model))
    }
}

/// The trackers an installation has credentials for; a route to one it lacks is reported as
/// `not_configured` (and kept, so adding the Secret later delivers it).
#[derive(Debug, Default)]
pub struct Trackers {
    pub github: Option<Forge>,
    pub gitlab: Option<Forge>,
    pub gitea: Option<Forge>,
    pub jira: Option<Jira>,
}

enum Tracker<'a> {
    Forge(&'a Forge),
    Jira(&'a Jira),
}

impl Trackers {
    fn pick(&self, provider: TicketProvider) -> Result<Tracker<'_>, ChannelError> {
        let missing = || ChannelError::not_configured(provider.as_str());
        Ok(match provider {
            TicketProvider::GitHub => Tracker::Forge(self.github.as_ref().ok_or_else(missing)?),
            TicketProvider::GitLab => Tracker::Forge(self.gitlab.as_ref().ok_or_else(missing)?),
            TicketProvider::Gitea => Tracker::Forge(self.gitea.as_ref().ok_or_else(missing)?),
            TicketProvider::Jira => Tracker::Jira(self.jira.as_ref().ok_or_else(missing)?),
        })
    }
}

fn number(id: &str) -> Result<u64, ChannelError> {
    id.parse().map_err(|_| ChannelError {
        retryable: false,
        after: None,
        category: "protocol",
        message: format!("ticket id {id:?} is not an issue number"),
    })
}

impl Tickets for Trackers {
    async fn find(
        &self,
        route: &TicketRoute,
        label: &str,
    ) -> Result<Option<TicketInfo>, ChannelError> {
        match self.pick(route.provider)? {
            Tracker::Forge(f) => Ok(f
                .find_issue(&route.project, label)
                .await
                .map_err(forge_error)?
                .map(|i| TicketInfo {
                    id: i.number.to_string(),
                    url: i.url,
                    open: i.open,
                })),
            Tracker::Jira(j) => Ok(j
                .find_issue(&route.project, label)
                .await
                .map_err(ChannelError::from)?
                .map(|i| TicketInfo {
                    id: i.key,
                    url: i.url,
                    open: i.open,
                })),
        }
    }

    async fn create(
        &self,
        route: &TicketRoute,
        title: &str,
        body: &Doc,
        label: &str,
    ) -> Result<TicketInfo, ChannelError> {
        match self.pick(route.provider)? {
            Tracker::Forge(f) => {
                let i = f
                    .create_issue(&route.project, title, &body.to_markdown(), label)
                    .await
                    .map_err(forge_error)?;
                Ok(TicketInfo {
                    id: i.number.to_string(),
                    url: i.url,
                    open: i.open,
                })
            }
            Tracker::Jira(j) => {
                let i = j
                    .create_issue(&route.project, title, body, label)
                    .await
                    .map_err(ChannelError::from)?;
                Ok(TicketInfo {
                    id: i.key,
                    url: i.url,
                    open: i.open,
                })
            }
        }
    }

    async fn comment(&self, route: &TicketRoute, id: &str, body: &Doc) -> Result<(), ChannelError> {
        match self.pick(route.provider)? {
            Tracker::Forge(f) => f
                .comment(&route.project, number(id)?, &body.to_markdown())
                .await
                .map_err(forge_error),
            Tracker::Jira(j) => j.comment(id, body).await.map_err(ChannelError::from),
        }
    }

    async fn set_open(
        &self,
        route: &TicketRoute,
        id: &str,
        open: bool,
    ) -> Result<(), ChannelError> {
        match self.pick(route.provider)? {
            Tracker::Forge(f) => f
                .set_open(&route.project, number(id)?, open)
                .await
                .map_err(forge_error),
            Tracker::Jira(j) => j.set_open(id, open).await.map_err(ChannelError::from),
        }
    }
}

/// How long to wait for a channel that named no time, at most; and after a failure retrying
/// cannot fix soon (credentials, a missing project).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
pub const PERMANENT_BACKOFF: Duration = Duration::from_secs(600);
