//! The installation's escalation channels from the flags and the environment. Credentials come
//! only from environment variables the chart fills from Secrets; they are never flags, logged or
//! echoed in errors.

use std::time::Duration;

use anyhow::Context;
use auto_agent_escalation::channels::{MAX_BACKOFF, PERMANENT_BACKOFF, Trackers};
use auto_agent_escalation::deliver::Deliverer;
use auto_agent_escalation::jira::{Jira, JiraConfig, JiraFlavor};
use auto_agent_escalation::llm::{Llm, LlmConfig, MaxTokensField};
use auto_agent_escalation::slack::{Slack, SlackRoute};
use auto_agent_forge::{Forge, ForgeConfig, ForgeKind, Secret};

use crate::args::EscalationArgs;

/// A credential from the environment; unset or empty is `None`.
fn secret(var: &str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

pub fn deliverer(args: &EscalationArgs) -> anyhow::Result<Deliverer<Slack, Trackers, Llm>> {
    // A bot token gives threads; a webhook only single messages. With both, the bot wins.
    let slack = match (
        secret("AUTO_AGENT_SLACK_BOT_TOKEN"),
        secret("AUTO_AGENT_SLACK_WEBHOOK_URL"),
    ) {
        (Some(token), _) => Some(SlackRoute::Bot {
            api_url: args.slack_api_url.clone(),
            token,
        }),
        (None, Some(url)) => Some(SlackRoute::Webhook { url }),
        (None, None) => None,
    }
    .map(Slack::new)
    .transpose()
    .context("Slack client")?;
    let forge =
        |kind: ForgeKind, api_url: Option<&String>, var: &str| -> anyhow::Result<Option<Forge>> {
            match (api_url, secret(var)) {
                (Some(url), Some(token)) => Ok(Some(
                    Forge::new(ForgeConfig {
                        kind,
                        api_url: url.clone(),
                        token,
                    })
                    .with_context(|| format!("{} client", kind.name()))?,
                )),
                _ => Ok(None),
            }
        };
    let jira = match (&args.jira_url, secret("AUTO_AGENT_JIRA_API_TOKEN")) {
        (Some(url), Some(token)) => Some(
            Jira::new(JiraConfig {
                flavor: if args.jira_flavor == "data-center" {
                    JiraFlavor::DataCenter
                } else {
                    JiraFlavor::Cloud
                },
                url: url.clone(),
                email: std::env::var("AUTO_AGENT_JIRA_EMAIL")
                    .ok()
                    .filter(|e| !e.is_empty()),
                token,
                issue_type: args.jira_issue_type.clone(),
            })
            .context("Jira client")?,
        ),
        _ => None,
    };
    let tickets = Trackers {
        github: forge(
            ForgeKind::GitHub,
            Some(&args.github_api_url),
            "AUTO_AGENT_GITHUB_TOKEN",
        )?,
        gitlab: forge(
            ForgeKind::GitLab,
            Some(&args.gitlab_api_url),
            "AUTO_AGENT_GITLAB_TOKEN",
        )?,
        gitea: forge(
            ForgeKind::Gitea,
            args.gitea_api_url.as_ref(),
            "AUTO_AGENT_GITEA_TOKEN",
        )?,
        jira,
    };
    let llm = match &args.llm_base_url {
        Some(base) => {
            let mut cfg = LlmConfig::new(base.clone(), args.llm_model.clone());
            cfg.api_key = secret("AUTO_AGENT_LLM_API_KEY");
            cfg.max_tokens = args.llm_max_tokens;
            cfg.max_tokens_field = if args.llm_max_tokens_field == "max_completion_tokens" {
                MaxTokensField::MaxCompletionTokens
            } else {
                MaxTokensField::MaxTokens
            };
            cfg.timeout = Duration::from_secs(args.llm_timeout_seconds);
            Some(Llm::new(cfg).context("model client")?)
        }
        None => None,
    };
    tracing::info!(
        slack = slack
            .as_ref()
            .map(|s| if s.threads() { "bot" } else { "webhook" }),
        github = tickets.github.is_some(),
        gitlab = tickets.gitlab.is_some(),
        gitea = tickets.gitea.is_some(),
        jira = tickets.jira.is_some(),
        llm = llm.is_some(),
        "Escalation channels"
    );
    Ok(Deliverer {
        slack,
        tickets,
        llm,
        max_backoff: MAX_BACKOFF,
        permanent_backoff: PERMANENT_BACKOFF,
    })
}
