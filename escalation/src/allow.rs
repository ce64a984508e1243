//! Which Slack channels and ticket projects policies may route to. Policy authors choose routes,
//! but the installation's credentials reach further than any one team should: without this, a
//! policy could file tickets in any repository the token can write to or post into any channel
//! the bot can reach. Empty lists allow nothing (the safe default); `*` allows any.

use crate::record::{Routes, TicketProvider};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    channels: Vec<String>,
    /// `(provider, project)`; a project `*` allows every project of that provider.
    projects: Vec<(Option<TicketProvider>, String)>,
}

/// Why an entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?}: {why}")]
pub struct AllowlistError {
    pub entry: String,
    pub why: &'static str,
}

fn provider(name: &str) -> Option<TicketProvider> {
    match name.to_ascii_lowercase().as_str() {
        "github" => Some(TicketProvider::GitHub),
        "gitlab" => Some(TicketProvider::GitLab),
        "gitea" => Some(TicketProvider::Gitea),
        "jira" => Some(TicketProvider::Jira),
        _ => None,
    }
}

fn channel_name(c: &str) -> String {
    c.trim().trim_start_matches('#').to_ascii_lowercase()
}

impl Allowlist {
    /// `channels`: `#name`, `name`, a channel ID or `*`. `projects`: `provider:project`
    /// (`github:acme/ops`, `jira:OPS`), `provider:*`, or `*`.
    pub fn parse(channels: &[String], projects: &[String]) -> Result<Self, AllowlistError> {
        let channels = channels
            .iter()
            .map(|c| channel_name(c))
            .filter(|c| !c.is_empty())
            .collect();
        let mut parsed = Vec::new();
        for p in projects.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            if p == "*" {
                parsed.push((None, "*".to_owned()));
                continue;
            }
            let Some((name, project)) = p.split_once(':') else {
                return Err(AllowlistError {
                    entry: p.to_owned(),
                    why: "expected provider:project (github, gitlab, gitea or jira)",
                });
            };
            let Some(kind) = provider(name) else {
                return Err(AllowlistError {
                    entry: p.to_owned(),
                    why: "unknown provider (github, gitlab, gitea or jira)",
                });
            };
            if project.is_empty() {
                return Err(AllowlistError {
                    entry: p.to_owned(),
                    why: "empty project",
                });
            }
            parsed.push((Some(kind), project.to_owned()));
        }
        Ok(Self {
            channels,
            projects: parsed,
        })
    }

    pub fn allows_channel(&self, channel: &str) -> bool {
        let c = channel_name(channel);
        self.channels.iter().any(|a| a == "*" || *a == c)
    }

    pub fn allows_project(&self, provider: TicketProvider, project: &str) -> bool {
        self.projects.iter().any(|(p, a)| match p {
            None => true,
            Some(p) => *p == provider && (a == "*" || a.eq_ignore_ascii_case(project)),
        })
    }

    /// The routes this installation allows, and what was dropped (for the log and the metric).
    pub fn filter(&self, routes: Routes) -> (Routes, Vec<String>) {
        let mut refused = Vec::new();
        let slack_channel = match routes.slack_channel {
            Some(c) if self.allows_channel(&c) => Some(c),
            Some(c) => {
                refused.push(format!("Slack channel {c}"));
                None
            }
            None => None,
        };
        let ticket = match routes.ticket {
            Some(t) if self.allows_project(t.provider, &t.project) => Some(t),
            Some(t) => {
                refused.push(format!("{} project {}", t.provider.as_str(), t.project));
                None
            }
            None => None,
        };
        (
            Routes {
                slack_channel,
                ticket,
                after_seconds: routes.after_seconds,
            },
            refused,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TicketRoute;

    fn routes(channel: &str, provider: TicketProvider, project: &str) -> Routes {
        Routes {
            slack_channel: Some(channel.into()),
            ticket: Some(TicketRoute {
                provider,
                project: project.into(),
            }),
            after_seconds: Some(60),
        }
    }

    fn list(channels: &[&str], projects: &[&str]) -> Allowlist {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        Allowlist::parse(&s(channels), &s(projects)).unwrap()
    }

    #[test]
    fn table_of_routes_and_lists() {
        use TicketProvider::*;
        let cases = [
            // (channels, projects, route channel, provider, project, slack kept, ticket kept)
            (vec![], vec![], "#ops", GitHub, "acme/ops", false, false),
            (
                vec!["#ops"],
                vec!["github:acme/ops"],
                "#ops",
                GitHub,
                "acme/ops",
                true,
                true,
            ),
            (
                vec!["ops"],
                vec!["github:acme/ops"],
                "#OPS",
                GitHub,
                "ACME/ops",
                true,
                true,
            ),
            (
                vec!["#ops"],
                vec!["github:acme/ops"],
                "#other",
                GitHub,
                "acme/other",
                false,
                false,
            ),
            (
                vec!["*"],
                vec!["github:*"],
                "#any",
                GitHub,
                "any/repo",
                true,
                true,
            ),
            (
                vec!["*"],
                vec!["github:*"],
                "#any",
                GitLab,
                "any/repo",
                true,
                false,
            ),
            (
                vec!["C0123456789"],
                vec!["*"],
                "C0123456789",
                Jira,
                "OPS",
                true,
                true,
            ),
            (vec![], vec!["jira:OPS"], "#ops", Jira, "OPS", false, true),
            (vec![], vec!["jira:OPS"], "#ops", Gitea, "OPS", false, false),
        ];
        for (channels, projects, channel, provider, project, slack, ticket) in cases {
            let (r, refused) =
                list(&channels, &projects).filter(routes(channel, provider, project));
            assert_eq!(r.slack_channel.is_some(), slack, "{channels:?} {channel}");
            assert_eq!(
                r.ticket.is_some(),
                ticket,
                "{projects:?} {provider:?}:{project}"
            );
            assert_eq!(refused.len(), usize::from(!slack) + usize::from(!ticket));
            assert_eq!(r.after_seconds, Some(60));
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let bad = |p: &str| Allowlist::parse(&[], &[p.to_owned()]).unwrap_err();
        assert_eq!(bad("acme/ops").entry, "acme/ops");
        assert!(bad("bitbucket:acme/ops").why.contains("unknown provider"));
        assert!(bad("github:").why.contains("empty"));
    }
}
