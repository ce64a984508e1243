//! The provider-neutral issue API escalation uses: find the newest issue carrying an incident
//! label, create one, comment, close and reopen.
//!
//! Labels on create, per forge:
//! - GitHub creates a label named in `POST /issues` when the repository lacks it (for tokens
//!   with push access; without it GitHub drops or refuses the labels).
//! - GitLab documents the same for `labels` on `POST /projects/:id/issues`.
//! - Gitea takes label ids only, so the label is looked up by name and created first.
//!
//! Every create checks that the answer carries the label: an unlabelled issue could never be
//! found again, and each later attempt would open another one.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ForgeError;
use crate::http::{CONNECT_TIMEOUT, Http, REQUEST_TIMEOUT};
use crate::secret::Secret;
use crate::{gitea, github, gitlab};

/// Which forge's API a [`Forge`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    Gitea,
}

impl ForgeKind {
    /// The name used in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::GitHub => "GitHub",
            Self::GitLab => "GitLab",
            Self::Gitea => "Gitea",
        }
    }
}

/// Where and how to reach a forge. `Debug` prints the token as `<redacted>`.
#[derive(Clone, Debug)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// The API root: `https://api.github.com` (GitHub Enterprise: `https://host/api/v3`),
    /// `https://gitlab.com/api/v4`, `http://host:port/api/v1` (Gitea).
    pub api_url: String,
    pub token: Secret,
}

/// An issue as escalation needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// GitHub's and Gitea's issue number, GitLab's `iid` (the number in the project).
    pub number: u64,
    /// The page a human opens (`html_url`, GitLab's `web_url`).
    pub url: String,
    pub open: bool,
    /// RFC 3339, as the API gave it; `None` while open (and for issues never closed).
    pub closed_at: Option<String>,
}

/// A client for one forge's issues.
///
/// `project` is `owner/name` for GitHub and Gitea, and the numeric id or the full path
/// (`group/sub/name`, sent URL-encoded) for GitLab.
#[derive(Clone, Debug)]
pub struct Forge {
    http: Http,
}

/// The longest label every forge accepts (GitHub's and Gitea's limit is 50 characters).
const MAX_LABEL_CHARS: usize = 50;
/// Titles are cut to what all three forges accept (GitLab: 255 characters).
const MAX_TITLE_CHARS: usize = 255;

impl Forge {
    /// A client with a 5 s connect and a 15 s request timeout. Checks the API URL and token;
    /// nothing is sent yet.
    pub fn new(config: ForgeConfig) -> Result<Self, ForgeError> {
        Self::with_timeouts(config, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    pub(crate) fn with_timeouts(
        config: ForgeConfig,
        connect: Duration,
        request: Duration,
    ) -> Result<Self, ForgeError> {
        let http = Http::new(
            config.kind,
            &config.api_url,
            &config.token,
            connect,
            request,
        )?;
        Ok(Self { http })
    }

    pub fn kind(&self) -> ForgeKind {
        self.http.kind()
    }

    pub(crate) fn http(&self) -> &Http {
        &self.http
    }

    /// The newest issue (never a pull request) carrying `label`, open or closed; `None` if
    /// there is none. Lists by label (consistent right after a create), never via search.
    pub async fn find_issue(
        &self,
        project: &str,
        label: &str,
    ) -> Result<Option<Issue>, ForgeError> {
        check_label(self.kind(), label)?;
        let project = Project::parse(self.kind(), project)?;
        match self.kind() {
            ForgeKind::GitHub => github::find_issue(&self.http, &project, label).await,
            ForgeKind::GitLab => gitlab::find_issue(&self.http, &project, label).await,
            ForgeKind::Gitea => gitea::find_issue(&self.http, &project, label).await,
        }
    }

    /// Opens an issue with `label` (created first where the forge needs that). The title is cut
    /// to 255 characters.
    pub async fn create_issue(
        &self,
        project: &str,
        title: &str,
        body_markdown: &str,
        label: &str,
    ) -> Result<Issue, ForgeError> {
        check_label(self.kind(), label)?;
        let project = Project::parse(self.kind(), project)?;
        if title.trim().is_empty() {
            return Err(self.config("the issue title is empty".into()));
        }
        let title: String = title.chars().take(MAX_TITLE_CHARS).collect();
        let created = match self.kind() {
            ForgeKind::GitHub => {
                github::create_issue(&self.http, &project, &title, body_markdown, label).await?
            }
            ForgeKind::GitLab => {
                gitlab::create_issue(&self.http, &project, &title, body_markdown, label).await?
            }
            ForgeKind::Gitea => {
                gitea::create_issue(&self.http, &project, &title, body_markdown, label).await?
            }
        };
        if !created.labelled {
            return Err(ForgeError::Rejected {
                provider: self.kind().name(),
                status: 201,
                reason: format!(
                    "issue #{} was created without the label `{label}` (does the token have write access?), so it cannot be found again",
                    created.issue.number
                ),
            });
        }
        Ok(created.issue)
    }

    /// Adds a comment to issue `number`.
    pub async fn comment(
        &self,
        project: &str,
        number: u64,
        body_markdown: &str,
    ) -> Result<(), ForgeError> {
        let project = Project::parse(self.kind(), project)?;
        match self.kind() {
            // Gitea's comment call is GitHub's.
            ForgeKind::GitHub | ForgeKind::Gitea => {
                github::comment(&self.http, &project, number, body_markdown).await
            }
            ForgeKind::GitLab => gitlab::comment(&self.http, &project, number, body_markdown).await,
        }
    }

    /// Reopens (`open`) or closes issue `number`; doing it twice is harmless.
    pub async fn set_open(&self, project: &str, number: u64, open: bool) -> Result<(), ForgeError> {
        let project = Project::parse(self.kind(), project)?;
        match self.kind() {
            ForgeKind::GitHub => github::set_open(&self.http, &project, number, open).await,
            ForgeKind::GitLab => gitlab::set_open(&self.http, &project, number, open).await,
            ForgeKind::Gitea => gitea::set_open(&self.http, &project, number, open).await,
        }
    }

    fn config(&self, reason: String) -> ForgeError {
        ForgeError::Config {
            provider: self.kind().name(),
            reason,
        }
    }
}

/// A project reference checked for the forge's form.
#[derive(Debug)]
pub(crate) struct Project<'a> {
    /// As given, for error messages.
    pub display: &'a str,
    /// `[owner, name]` for GitHub and Gitea, `[id or path]` for GitLab (one URL segment).
    pub segments: Vec<&'a str>,
}

impl<'a> Project<'a> {
    pub(crate) fn parse(kind: ForgeKind, project: &'a str) -> Result<Self, ForgeError> {
        let parts: Vec<&str> = project.split('/').collect();
        let well_formed = parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
        let ok = match kind {
            ForgeKind::GitHub | ForgeKind::Gitea => parts.len() == 2 && well_formed,
            ForgeKind::GitLab => well_formed,
        };
        if !ok {
            let form = match kind {
                ForgeKind::GitHub | ForgeKind::Gitea => "`owner/name`",
                ForgeKind::GitLab => "a numeric id or a path like `group/name`",
            };
            return Err(ForgeError::Config {
                provider: kind.name(),
                reason: format!("project `{project}` is not {form}"),
            });
        }
        let segments = match kind {
            ForgeKind::GitHub | ForgeKind::Gitea => parts,
            ForgeKind::GitLab => vec![project],
        };
        Ok(Self {
            display: project,
            segments,
        })
    }
}

/// Labels travel in comma-separated query parameters and have length limits.
fn check_label(kind: ForgeKind, label: &str) -> Result<(), ForgeError> {
    let problem = if label.trim().is_empty() {
        Some("is empty".to_owned())
    } else if label.chars().count() > MAX_LABEL_CHARS {
        Some(format!("is longer than {MAX_LABEL_CHARS} characters"))
    } else if label.contains(',') || label.chars().any(char::is_control) {
        Some("contains a comma or a control character".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ForgeError::Config {
            provider: kind.name(),
            reason: format!("the label `{}` {problem}", label.escape_debug()),
        }),
        None => Ok(()),
    }
}

/// An issue a provider just created, and whether the answer shows the label on it.
pub(crate) struct Created {
    pub issue: Issue,
    pub labelled: bool,
}

/// A label as issues carry it: GitHub and Gitea send objects, GitLab plain names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum LabelRef {
    Name(String),
    Object { name: String },
}

/// Whether `labels` holds `label` (forges compare label names without case).
pub(crate) fn carries(labels: &[LabelRef], label: &str) -> bool {
    labels.iter().any(|l| {
        let name = match l {
            LabelRef::Name(name) | LabelRef::Object { name } => name,
        };
        name.eq_ignore_ascii_case(label)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_take_each_forges_form() {
        let github = Project::parse(ForgeKind::GitHub, "acme/api").expect("owner/name");
        assert_eq!(github.segments, ["acme", "api"]);
        let gitlab = Project::parse(ForgeKind::GitLab, "acme/platform/api").expect("path");
        assert_eq!(gitlab.segments, ["acme/platform/api"]);
        let id = Project::parse(ForgeKind::GitLab, "4711").expect("id");
        assert_eq!(id.segments, ["4711"]);
        for (kind, bad) in [
            (ForgeKind::GitHub, "acme"),
            (ForgeKind::GitHub, "acme/api/x"),
            (ForgeKind::Gitea, "acme/"),
            (ForgeKind::Gitea, "../api"),
            (ForgeKind::GitLab, ""),
            (ForgeKind::GitLab, "acme//api"),
        ] {
            let err = Project::parse(kind, bad).expect_err(bad);
            assert_eq!(err.category(), "config", "{bad}");
        }
    }

    #[test]
    fn labels_must_fit_every_forge() {
        assert!(check_label(ForgeKind::GitHub, "auto-agent:0123456789abcdef").is_ok());
        for bad in ["", " ", "a,b", "a\nb", &"x".repeat(51)] {
            let err = check_label(ForgeKind::GitLab, bad).expect_err(bad);
            assert_eq!(err.category(), "config", "{bad:?}");
        }
    }

    #[test]
    fn labels_match_by_name_in_either_shape() {
        let labels: Vec<LabelRef> = serde_json::from_str(
            r#"["bug", {"id": 3, "name": "Auto-Agent:AB", "color": "d93f0b"}]"#,
        )
        .expect("labels");
        assert!(carries(&labels, "bug"));
        assert!(carries(&labels, "auto-agent:ab"));
        assert!(!carries(&labels, "auto-agent:abc"));
    }

    #[test]
    fn the_config_never_prints_the_token() {
        let config = ForgeConfig {
            kind: ForgeKind::GitHub,
            api_url: "https://api.github.com".into(),
            token: Secret::new("ghp_topsecret"),
        };
        let forge = Forge::new(config.clone()).expect("client");
        let printed = format!("{config:?} {forge:?}");
        assert!(!printed.contains("topsecret"), "{printed}");
    }

    #[test]
    fn bad_urls_and_tokens_are_refused_before_any_request() {
        let make = |api_url: &str, token: &str| {
            Forge::new(ForgeConfig {
                kind: ForgeKind::Gitea,
                api_url: api_url.into(),
                token: Secret::new(token),
            })
        };
        for (url, token) in [
            ("not a url", "t"),
            ("ftp://gitea.example/api/v1", "t"),
            ("https://user:pw@gitea.example/api/v1", "t"),
            ("https://gitea.example/api/v1?x=1", "t"),
            ("https://gitea.example/api/v1", ""),
            ("https://gitea.example/api/v1", "bad\ntoken"),
        ] {
            let err = make(url, token).expect_err(url);
            assert_eq!(err.category(), "config", "{url} {token:?}: {err}");
            assert!(!err.to_string().contains("bad\ntoken"));
        }
        assert!(make("http://127.0.0.1:3000/api/v1/", "t").is_ok());
    }
}
