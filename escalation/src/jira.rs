//! Jira tickets, one per incident key: the key travels as a label, so an issue is found by an
//! exact JQL label match and a new leader never files a duplicate.
//!
//! Cloud speaks REST v3 (Basic auth with the account's email and an API token, descriptions and
//! comments in ADF, search at `/rest/api/3/search/jql`); Data Center speaks REST v2 (a Bearer
//! personal access token, plain-text bodies, `/rest/api/2/search`). Transitions are looked up per
//! issue: their ids differ per workflow, only the target status category is known.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use auto_agent_forge::Secret;
use base64::Engine;
use serde_json::{Value, json};

use crate::deliver::ChannelError;
use crate::doc::Doc;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
// Issues created by this process remembered for the search's lag (Cloud's search is eventually
// consistent): a handful per incident burst is plenty.
const CREATED_CACHE: usize = 256;
// Jira refuses longer summaries.
const MAX_SUMMARY_CHARS: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JiraFlavor {
    /// Atlassian Cloud: REST v3, ADF, Basic auth (email + API token).
    Cloud,
    /// Jira Data Center / Server: REST v2, plain text, Bearer personal access token.
    DataCenter,
}

#[derive(Clone, Debug)]
pub struct JiraConfig {
    pub flavor: JiraFlavor,
    /// The site, e.g. `https://example.atlassian.net`.
    pub url: String,
    /// The Basic auth user of Cloud (the account's email); unused on Data Center.
    pub email: Option<String>,
    pub token: Secret,
    /// The issue type of new tickets (`Task` by default).
    pub issue_type: String,
}

impl JiraConfig {
    pub fn new(flavor: JiraFlavor, url: impl Into<String>, token: Secret) -> Self {
        Self {
            flavor,
            url: url.into(),
            email: None,
            token,
            issue_type: "Task".to_owned(),
        }
    }
}

/// A ticket: its key, its browse URL, and whether its status category is other than `done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JiraIssue {
    pub key: String,
    pub url: String,
    pub open: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JiraError {
    /// Rate limited (429) or Jira failed (5xx, 503 with `Retry-After` too): try again, after
    /// `after` when Jira said.
    #[error("Jira is busy or failing ({status}); retry{}", after.map(|a| format!(" after {}s", a.as_secs())).unwrap_or_default())]
    Retry {
        status: u16,
        after: Option<Duration>,
    },
    /// Jira could not be reached or the connection broke.
    #[error("Jira unreachable: {reason}")]
    Unreachable { reason: String },
    /// The credentials are wrong or lack a permission (401/403): a human must fix the Secret.
    #[error("Jira refused the credentials ({status})")]
    Unauthorized { status: u16 },
    /// The issue or project does not exist, or the account may not see it (404).
    #[error("Jira: {what} not found")]
    NotFound { what: String },
    /// The request was refused for a reason a retry cannot change (400, 409, 410, 422...).
    #[error("Jira rejected the request ({status}): {reason}")]
    Rejected { status: u16, reason: String },
    /// The issue's workflow offers no transition to the wanted status category.
    #[error("Jira issue {key} has no transition to a status whose category is {wanted}")]
    NoTransition { key: String, wanted: &'static str },
    /// The answer was not what the API documents.
    #[error("Jira answered unexpectedly: {reason}")]
    Protocol { reason: String },
    /// The configuration or an argument cannot work (missing email on Cloud, a label with spaces).
    #[error("Jira configuration: {0}")]
    Config(String),
}

impl JiraError {
    /// Whether trying the same call again later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Unreachable { .. })
    }

    /// How long Jira asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retry { after, .. } => *after,
            _ => None,
        }
    }

    /// A short label for metrics: `rate_limited`, `server_error`, `unreachable`, `unauthorized`,
    /// `not_found`, `rejected`, `no_transition`, `protocol`, `config`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Retry { status: 429, .. } => "rate_limited",
            Self::Retry { .. } => "server_error",
            Self::Unreachable { .. } => "unreachable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::Rejected { .. } => "rejected",
            Self::NoTransition { .. } => "no_transition",
            Self::Protocol { .. } => "protocol",
            Self::Config(_) => "config",
        }
    }
}

impl From<JiraError> for ChannelError {
    fn from(e: JiraError) -> Self {
        Self {
            retryable: e.retryable(),
            after: e.retry_after(),
            category: e.category(),
            message: e.to_string(),
        }
    }
}

/// A Jira client for one site.
#[derive(Debug)]
pub struct Jira {
    http: reqwest::Client,
    flavor: JiraFlavor,
    base: String,
    auth: Secret,
    issue_type: String,
    /// (project, label) -> key of issues this process created, newest last.
    created: Mutex<VecDeque<(String, String, String)>>,
}

impl Jira {
    pub fn new(config: JiraConfig) -> Result<Self, JiraError> {
        Self::with_timeout(config, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(config: JiraConfig, timeout: Duration) -> Result<Self, JiraError> {
        let base = config.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(JiraError::Config(format!(
                "the Jira URL `{base}` must be http(s)"
            )));
        }
        if config.token.is_empty() {
            return Err(JiraError::Config("the Jira token is empty".to_owned()));
        }
        if config.issue_type.trim().is_empty() {
            return Err(JiraError::Config("the issue type is empty".to_owned()));
        }
        let auth = match config.flavor {
            JiraFlavor::Cloud => {
                let email = config
                    .email
                    .as_deref()
                    .filter(|e| e.contains('@'))
                    .ok_or_else(|| {
                        JiraError::Config(
                        "Jira Cloud needs the account's email for Basic auth with the API token"
                            .to_owned(),
                    )
                    })?;
                let pair = format!("{email}:{}", config.token.expose());
                Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            JiraFlavor::DataCenter => Secret::new(format!("Bearer {}", config.token.expose())),
        };
        Ok(Self {
            http: crate::http::client(timeout).map_err(JiraError::Config)?,
            flavor: config.flavor,
            base,
            auth,
            issue_type: config.issue_type,
            created: Mutex::new(VecDeque::new()),
        })
    }

    fn api(&self) -> String {
        match self.flavor {
            JiraFlavor::Cloud => format!("{}/rest/api/3", self.base),
            JiraFlavor::DataCenter => format!("{}/rest/api/2", self.base),
        }
    }

    fn browse(&self, key: &str) -> String {
        format!("{}/browse/{key}", self.base)
    }

    fn text(&self, doc: &Doc) -> Value {
        match self.flavor {
            JiraFlavor::Cloud => doc.to_adf(),
            JiraFlavor::DataCenter => Value::String(doc.to_plain()),
        }
    }

    /// The newest issue of `project_key` carrying `label`, or `None`. Falls back to issues this
    /// process created when the search does not show them yet.
    pub async fn find_issue(
        &self,
        project_key: &str,
        label: &str,
    ) -> Result<Option<JiraIssue>, JiraError> {
        check_project(project_key)?;
        check_label(label)?;
        let jql = format!(
            "project = {project_key} AND labels = \"{}\" ORDER BY created DESC",
            jql_escape(label)
        );
        let path = match self.flavor {
            JiraFlavor::Cloud => "/search/jql",
            JiraFlavor::DataCenter => "/search",
        };
        let body = json!({"jql": jql, "fields": ["status"], "maxResults": 1});
        let answer = self
            .call(reqwest::Method::POST, path, Some(&body), "search")
            .await?;
        let issues = answer["issues"]
            .as_array()
            .ok_or_else(|| protocol("search answered without `issues`"))?;
        if let Some(issue) = issues.first() {
            let key = issue["key"]
                .as_str()
                .ok_or_else(|| protocol("a search hit has no `key`"))?;
            return Ok(Some(JiraIssue {
                key: key.to_owned(),
                url: self.browse(key),
                open: open_of(issue)?,
            }));
        }
        let cached = self.cached(project_key, label);
        match cached {
            // Reading one issue by key is consistent, unlike the search.
            Some(key) => match self.status_of(&key).await {
                Ok(open) => Ok(Some(JiraIssue {
                    url: self.browse(&key),
                    key,
                    open,
                })),
                Err(JiraError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Files a new issue with `summary` (one line, cut to Jira's 255 characters), `description`
    /// and `label`.
    pub async fn create_issue(
        &self,
        project_key: &str,
        summary: &str,
        description: &Doc,
        label: &str,
    ) -> Result<JiraIssue, JiraError> {
        check_project(project_key)?;
        check_label(label)?;
        let body = json!({"fields": {
            "project": {"key": project_key},
            "summary": one_line_summary(summary),
            "issuetype": {"name": self.issue_type},
            "description": self.text(description),
            "labels": [label],
        }});
        let answer = self
            .call(reqwest::Method::POST, "/issue", Some(&body), "project")
            .await?;
        let key = answer["key"]
            .as_str()
            .ok_or_else(|| protocol("create answered without `key`"))?
            .to_owned();
        self.remember(project_key, label, &key);
        Ok(JiraIssue {
            url: self.browse(&key),
            key,
            open: true,
        })
    }

    /// Adds `body` as a comment.
    pub async fn comment(&self, key: &str, body: &Doc) -> Result<(), JiraError> {
        check_key(key)?;
        let payload = json!({"body": self.text(body)});
        self.call(
            reqwest::Method::POST,
            &format!("/issue/{key}/comment"),
            Some(&payload),
            key,
        )
        .await?;
        Ok(())
    }

    /// Moves the issue to a status whose category is not `done` (`open`) or is `done`, through the
    /// first transition its workflow offers for that; nothing when it is there already.
    pub async fn set_open(&self, key: &str, open: bool) -> Result<(), JiraError> {
        check_key(key)?;
        if self.status_of(key).await? == open {
            return Ok(());
        }
        let answer = self
            .call(
                reqwest::Method::GET,
                &format!("/issue/{key}/transitions"),
                None,
                key,
            )
            .await?;
        let transitions = answer["transitions"]
            .as_array()
            .ok_or_else(|| protocol("transitions answered without `transitions`"))?;
        let chosen = transitions.iter().find(|t| {
            let done = t["to"]["statusCategory"]["key"].as_str() == Some("done");
            done != open
        });
        let Some(id) = chosen.and_then(|t| t["id"].as_str()) else {
            return Err(JiraError::NoTransition {
                key: key.to_owned(),
                wanted: if open { "not done" } else { "done" },
            });
        };
        self.call(
            reqwest::Method::POST,
            &format!("/issue/{key}/transitions"),
            Some(&json!({"transition": {"id": id}})),
            key,
        )
        .await?;
        Ok(())
    }

    /// Whether the issue's status category is other than `done`.
    async fn status_of(&self, key: &str) -> Result<bool, JiraError> {
        let issue = self
            .call(
                reqwest::Method::GET,
                &format!("/issue/{key}?fields=status"),
                None,
                key,
            )
            .await?;
        open_of(&issue)
    }

    fn remember(&self, project: &str, label: &str, key: &str) {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created.retain(|(p, l, _)| !(p == project && l == label));
        if created.len() >= CREATED_CACHE {
            created.pop_front();
        }
        created.push_back((project.to_owned(), label.to_owned(), key.to_owned()));
    }

    fn cached(&self, project: &str, label: &str) -> Option<String> {
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created
            .iter()
            .rev()
            .find(|(p, l, _)| p == project && l == label)
            .map(|(_, _, k)| k.clone())
    }

    /// One call: `what` names the object a 404 is about.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, JiraError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api()))
            .header(reqwest::header::AUTHORIZATION, self.auth.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status().as_u16();
        let after = crate::http::retry_after(resp.headers());
        let text = resp.text().await.map_err(transport_error)?;
        match status {
            200..=299 if text.trim().is_empty() => Ok(Value::Null),
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| protocol(&format!("{status} answer is not JSON: {e}"))),
            429 | 500..=599 => Err(JiraError::Retry { status, after }),
            401 | 403 => Err(JiraError::Unauthorized { status }),
            404 => Err(JiraError::NotFound {
                what: what.to_owned(),
            }),
            _ => Err(JiraError::Rejected {
                status,
                reason: error_reason(&text),
            }),
        }
    }
}

/// Jira's error body: `errorMessages` and the per-field `errors`, cut short.
fn error_reason(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return crate::http::cut(text.trim());
    };
    let mut parts: Vec<String> = v["errorMessages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    if let Some(fields) = v["errors"].as_object() {
        parts.extend(
            fields
                .iter()
                .map(|(k, m)| format!("{k}: {}", m.as_str().unwrap_or_default())),
        );
    }
    if parts.is_empty() {
        crate::http::cut(text.trim())
    } else {
        crate::http::cut(&parts.join("; "))
    }
}

fn open_of(issue: &Value) -> Result<bool, JiraError> {
    issue["fields"]["status"]["statusCategory"]["key"]
        .as_str()
        .map(|k| k != "done")
        .ok_or_else(|| protocol("an issue came without fields.status.statusCategory.key"))
}

fn one_line_summary(summary: &str) -> String {
    let line = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_SUMMARY_CHARS) {
        Some((i, _)) => line[..i].to_owned(),
        None => line,
    }
}

// Project keys are upper-case letters, digits and underscores, starting with a letter; checking
// keeps the JQL and the URLs free of anything a caller did not mean.
fn check_project(key: &str) -> Result<(), JiraError> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(JiraError::Config(format!(
            "`{key}` is not a Jira project key"
        )))
    }
}

fn check_key(key: &str) -> Result<(), JiraError> {
    match key.rsplit_once('-') {
        Some((project, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            check_project(project)
        }
        _ => Err(JiraError::Config(format!(
            "`{key}` is not a Jira issue key"
        ))),
    }
}

// Jira labels cannot hold spaces; `labels = "x"` is an exact match.
fn check_label(label: &str) -> Result<(), JiraError> {
    if label.is_empty() || label.chars().count() > 255 || label.chars().any(char::is_whitespace) {
        return Err(JiraError::Config(format!(
            "`{label}` is not a Jira label (1 to 255 characters, no spaces)"
        )));
    }
    Ok(())
}

fn jql_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn protocol(reason: &str) -> JiraError {
    JiraError::Protocol {
        reason: reason.to_owned(),
    }
}

fn transport_error(e: reqwest::Error) -> JiraError {
    JiraError::Unreachable {
        reason: crate::http::cause_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Block;
    use crate::slack::scripted::{Answer, Scripted};

    fn doc() -> Doc {
        let mut d = Doc::new();
        d.push(Block::Heading("Crash loop".into()))
            .push(Block::Paragraph("restarted api-1".into()));
        d
    }

    fn cloud(server: &Scripted) -> Jira {
        let mut config = JiraConfig::new(
            JiraFlavor::Cloud,
            format!("{}/", server.url()),
            Secret::new("cloud-api-token"),
        );
        config.email = Some("bot@example.com".to_owned());
        Jira::new(config).unwrap()
    }

    fn dc(server: &Scripted) -> Jira {
        Jira::new(JiraConfig::new(
            JiraFlavor::DataCenter,
            server.url(),
            Secret::new("dc-pat"),
        ))
        .unwrap()
    }

    fn status(category: &str) -> Value {
        json!({"key": "OPS-1", "fields": {"status": {"name": "x", "statusCategory": {"key": category}}}})
    }

    #[tokio::test]
    async fn cloud_requests_have_basic_auth_adf_and_the_jql_search() {
        let server = Scripted::start(vec![
            Answer::json(200, json!({"issues": [], "isLast": true})),
            Answer::json(201, json!({"id": "1", "key": "OPS-7", "self": "x"})),
            Answer::json(201, json!({"id": "2"})),
        ])
        .await;
        let jira = cloud(&server);
        assert_eq!(
            jira.find_issue("OPS", "auto-agent-ab12").await.unwrap(),
            None
        );
        let issue = jira
            .create_issue("OPS", "Crash loop\nin api", &doc(), "auto-agent-ab12")
            .await
            .unwrap();
        assert_eq!(
            issue,
            JiraIssue {
                key: "OPS-7".into(),
                url: format!("{}/browse/OPS-7", server.url()),
                open: true
            }
        );
        jira.comment("OPS-7", &doc()).await.unwrap();

        let seen = server.requests();
        let basic =
            base64::engine::general_purpose::STANDARD.encode("bot@example.com:cloud-api-token");
        assert!(
            seen.iter()
                .all(|r| r.header("authorization") == format!("Basic {basic}"))
        );
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/rest/api/3/search/jql")
        );
        assert_eq!(
            seen[0].json(),
            json!({"jql": "project = OPS AND labels = \"auto-agent-ab12\" ORDER BY created DESC", "fields": ["status"], "maxResults": 1})
        );
        let fields = &seen[1].json()["fields"];
        assert_eq!(seen[1].path, "/rest/api/3/issue");
        assert_eq!(fields["summary"], "Crash loop in api");
        assert_eq!(fields["issuetype"]["name"], "Task");
        assert_eq!(fields["labels"], json!(["auto-agent-ab12"]));
        assert_eq!(fields["description"]["type"], "doc");
        assert_eq!(fields["description"]["version"], 1);
        assert_eq!(seen[2].path, "/rest/api/3/issue/OPS-7/comment");
        assert_eq!(seen[2].json()["body"]["type"], "doc");
    }

    #[tokio::test]
    async fn data_center_uses_v2_bearer_and_plain_text() {
        let server = Scripted::start(vec![
            Answer::json(201, json!({"id": "1", "key": "OPS-1"})),
            Answer::json(
                200,
                json!({"startAt": 0, "total": 1, "issues": [status("new")]}),
            ),
        ])
        .await;
        let jira = dc(&server);
        jira.create_issue("OPS", "s", &doc(), "auto-agent-x")
            .await
            .unwrap();
        let found = jira
            .find_issue("OPS", "auto-agent-x")
            .await
            .unwrap()
            .unwrap();
        assert!(found.open);
        let seen = server.requests();
        assert_eq!(seen[0].path, "/rest/api/2/issue");
        assert_eq!(seen[0].header("authorization"), "Bearer dc-pat");
        assert_eq!(
            seen[0].json()["fields"]["description"],
            json!("Crash loop\n\nrestarted api-1")
        );
        assert_eq!(seen[1].path, "/rest/api/2/search");
    }

    #[tokio::test]
    async fn a_created_issue_is_found_while_the_search_lags() {
        let server = Scripted::start(vec![
            Answer::json(201, json!({"id": "1", "key": "OPS-3"})),
            Answer::json(200, json!({"issues": [], "isLast": true})),
            Answer::json(200, status("new")),
        ])
        .await;
        let jira = cloud(&server);
        jira.create_issue("OPS", "s", &doc(), "auto-agent-lag")
            .await
            .unwrap();
        let found = jira
            .find_issue("OPS", "auto-agent-lag")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.key, "OPS-3");
        let seen = server.requests();
        assert_eq!(seen[2].path, "/rest/api/3/issue/OPS-3");
        assert_eq!(seen[2].query.as_deref(), Some("fields=status"));
        // Another label is not answered from the cache.
        let other = Scripted::start(vec![Answer::json(200, json!({"issues": []}))]).await;
        assert_eq!(
            cloud(&other)
                .find_issue("OPS", "auto-agent-lag")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn set_open_picks_the_transition_by_target_category() {
        let transitions = json!({"transitions": [
            {"id": "21", "to": {"statusCategory": {"key": "indeterminate"}}},
            {"id": "31", "to": {"statusCategory": {"key": "done"}}},
        ]});
        let server = Scripted::start(vec![
            Answer::json(200, status("new")),
            Answer::json(200, transitions.clone()),
            Answer::empty(204),
            Answer::json(200, status("done")),
            Answer::json(
                200,
                json!({"transitions": [{"id": "41", "to": {"statusCategory": {"key": "new"}}}]}),
            ),
            Answer::empty(204),
            Answer::json(200, status("done")),
            Answer::json(200, json!({"transitions": []})),
            Answer::json(200, status("new")),
        ])
        .await;
        let jira = cloud(&server);
        jira.set_open("OPS-1", false).await.unwrap();
        jira.set_open("OPS-1", true).await.unwrap();
        let e = jira.set_open("OPS-1", true).await.unwrap_err();
        assert!(
            matches!(
                e,
                JiraError::NoTransition {
                    wanted: "not done",
                    ..
                }
            ),
            "{e}"
        );
        // Already open: no transition is looked up.
        jira.set_open("OPS-1", true).await.unwrap();
        let seen = server.requests();
        assert_eq!(seen[2].json(), json!({"transition": {"id": "31"}}));
        assert_eq!(seen[5].json(), json!({"transition": {"id": "41"}}));
        assert_eq!(seen.len(), 9);
    }

    #[tokio::test]
    async fn statuses_map_to_typed_errors() {
        let server = Scripted::start(vec![
            Answer::json(429, json!({})).retry_after("12"),
            Answer::text(503, "down").retry_after("4"),
            Answer::text(502, "bad gateway"),
            Answer::json(401, json!({"errorMessages": ["nope"]})),
            Answer::json(404, json!({"errorMessages": ["Issue does not exist"], "errors": {}})),
            Answer::json(400, json!({"errorMessages": [], "errors": {"summary": "You must specify a summary of the issue."}})),
            Answer::json(410, json!({"errorMessages": ["gone"]})),
            Answer::text(200, "not json"),
        ])
        .await;
        let jira = cloud(&server);
        let mut errors = Vec::new();
        for _ in 0..8 {
            errors.push(jira.comment("OPS-1", &doc()).await.unwrap_err());
        }
        assert_eq!(errors[0].category(), "rate_limited");
        assert_eq!(errors[0].retry_after(), Some(Duration::from_secs(12)));
        let channel = ChannelError::from(JiraError::Unauthorized { status: 401 });
        assert_eq!(
            (channel.retryable, channel.category),
            (false, "unauthorized")
        );
        assert!(errors[1].retryable() && errors[1].retry_after() == Some(Duration::from_secs(4)));
        assert!(errors[2].retryable() && errors[2].category() == "server_error");
        assert_eq!(errors[3].category(), "unauthorized");
        assert!(matches!(&errors[4], JiraError::NotFound { what } if what == "OPS-1"));
        assert!(
            errors[5]
                .to_string()
                .contains("summary: You must specify a summary"),
            "{}",
            errors[5]
        );
        assert!(!errors[5].retryable());
        assert!(matches!(errors[6], JiraError::Rejected { status: 410, .. }));
        assert_eq!(errors[7].category(), "protocol");
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("cloud-api-token"), "{shown}");
        }
        assert!(!format!("{jira:?}").contains("cloud-api-token"));
    }

    #[test]
    fn arguments_and_configuration_are_checked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let jira = Jira::new(JiraConfig::new(
            JiraFlavor::DataCenter,
            "http://127.0.0.1:9",
            Secret::new("t"),
        ))
        .unwrap();
        for (project, label) in [
            ("ops", "l"),
            ("OPS", "has space"),
            ("OPS\"", "l"),
            ("OPS", ""),
        ] {
            let e = rt.block_on(jira.find_issue(project, label)).unwrap_err();
            assert_eq!(e.category(), "config", "{project} {label}");
        }
        assert_eq!(
            rt.block_on(jira.comment("OPS-1/../x", &doc()))
                .unwrap_err()
                .category(),
            "config"
        );
        // Cloud without an email cannot authenticate.
        let e = Jira::new(JiraConfig::new(
            JiraFlavor::Cloud,
            "https://x.atlassian.net",
            Secret::new("t"),
        ))
        .unwrap_err();
        assert_eq!(e.category(), "config");
        assert_eq!(jql_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(one_line_summary(&"é".repeat(300)).chars().count(), 255);
    }
}
