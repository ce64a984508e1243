//! The contract servers for Slack, GitHub, GitLab and Jira (`e2e/contract/server.py`): one
//! process on one loopback port, a path prefix per provider, every request validated against the
//! provider's machine-readable API description before it is served from in-memory state. Its
//! environment (a venv and the description files) is built by `e2e/integrations build`.
//!
//! Tests point the clients at the `*_url()`s, inject faults with [`ContractServer::fault`], and end
//! with `assert!(server.rejected().await?.is_empty())`: a request that broke the contract is
//! answered 400 (GitHub 422) and recorded as rejected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::repo_root;
use crate::process::{Process, free_port, http_get};
use crate::wait::poll_until;

/// Test credentials the server accepts (written to its config at start).
pub const SLACK_TOKEN: &str = "xoxb-1111111111-contract-bot";
pub const GITHUB_TOKEN: &str = "ghp_contractservertoken";
pub const GITLAB_TOKEN: &str = "glpat-contractservertoken";
pub const JIRA_CLOUD_EMAIL: &str = "auto-agent@example.com";
pub const JIRA_CLOUD_TOKEN: &str = "jira-cloud-contract-api-token";
pub const JIRA_DC_TOKEN: &str = "jira-dc-contract-pat";
/// Slack channels that exist (by name, without `#`); others answer `channel_not_found`.
pub const SLACK_CHANNELS: &[&str] = &["alerts", "prod-incidents", "general"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Slack,
    GitHub,
    GitLab,
    JiraCloud,
    JiraDc,
}

impl Provider {
    /// The path prefix and the name in records and the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::JiraCloud => "jira-cloud",
            Self::JiraDc => "jira-dc",
        }
    }
}

/// One request as the server saw it, with the validation result. Credentials are recorded as
/// their scheme only (`Bearer xoxb-<redacted>`), webhook secrets as `<redacted>`.
#[derive(Clone, Debug, Deserialize)]
pub struct RecordedRequest {
    pub seq: u64,
    pub provider: String,
    pub method: String,
    /// The path below the provider prefix.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    pub auth: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Value,
    /// Whether the request kept the contract.
    pub valid: bool,
    /// The rule that failed (`block_kit`, `body_schema`, `adf`, `auth`, ...).
    pub rule: Option<String>,
    pub reason: Option<String>,
    /// What the server answered.
    pub status: u16,
    /// Answered by an injected fault instead of the state.
    #[serde(default)]
    pub fault: bool,
    /// GitHub: the operationId matched in the OpenAPI description.
    #[serde(default)]
    pub operation: Option<String>,
}

/// Where the cached environment is, from `e2e/integrations paths`.
pub fn contract_dir() -> anyhow::Result<PathBuf> {
    let script = repo_root().join("e2e/integrations");
    let out = Command::new("bash")
        .arg(&script)
        .arg("paths")
        .output()
        .with_context(|| format!("running {} paths", script.display()))?;
    if !out.status.success() {
        bail!(
            "e2e/integrations paths failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("CONTRACT_DIR="))
        .context("e2e/integrations paths printed no CONTRACT_DIR")?;
    let dir = PathBuf::from(dir);
    anyhow::ensure!(
        dir.join("venv/bin/python").exists() && dir.join("specs").is_dir(),
        "{} is missing; run `e2e/integrations build contract` (or `e2e/integrations build`)",
        dir.display()
    );
    Ok(dir)
}

#[derive(Debug)]
pub struct ContractServer {
    pub addr: SocketAddr,
    dir: PathBuf,
    env: PathBuf,
    webhook_path: String,
    process: Option<Process>,
}

impl ContractServer {
    /// Starts the server on a free port; `dir` (created) holds its config and log.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let env = contract_dir()?;
        std::fs::create_dir_all(dir)?;
        let config = json!({
            "slack_token": SLACK_TOKEN,
            "slack_channels": SLACK_CHANNELS,
            "github_token": GITHUB_TOKEN,
            "gitlab_token": GITLAB_TOKEN,
            "jira_cloud_email": JIRA_CLOUD_EMAIL,
            "jira_cloud_token": JIRA_CLOUD_TOKEN,
            "jira_dc_token": JIRA_DC_TOKEN,
        });
        std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        // The webhook URL is a credential in real life; a fresh one per server keeps tests honest
        // about never printing it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let mut server = Self {
            addr,
            dir: dir.to_owned(),
            env,
            webhook_path: format!("/slack/webhook/T0CONTRACT/B0CONTRACT/whsecret{nanos:09}"),
            process: None,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts the server again on the same port after [`stop`](Self::stop). Its state (messages,
    /// issues, records) starts empty.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(self.env.join("venv/bin/python"));
        cmd.arg(repo_root().join("e2e/contract/server.py"))
            .args(["--port", &self.addr.port().to_string()])
            .arg("--specs")
            .arg(self.env.join("specs"))
            .arg("--config")
            .arg(self.dir.join("config.json"));
        let process = Process::spawn(cmd, self.dir.join("server.log"))
            .context("starting the contract server")?;
        let addr = self.addr;
        poll_until(
            "the contract server listening",
            Duration::from_secs(60),
            || async move {
                Ok(http_get(addr, "/_control/health")
                    .await
                    .is_ok_and(|(s, _)| s == 200))
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", process.output()))?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The server's log so far (for assertion messages).
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stands for `https://slack.com/api`.
    pub fn slack_api_url(&self) -> String {
        format!("{}/slack/api", self.base_url())
    }

    /// An incoming webhook URL (`https://hooks.slack.com/services/T/B/secret`).
    pub fn slack_webhook_url(&self) -> String {
        format!("{}{}", self.base_url(), self.webhook_path)
    }

    /// Stands for `https://api.github.com`.
    pub fn github_api_url(&self) -> String {
        format!("{}/github", self.base_url())
    }

    /// Stands for `https://gitlab.example.com/api/v4`.
    pub fn gitlab_api_url(&self) -> String {
        format!("{}/gitlab/api/v4", self.base_url())
    }

    /// A Jira Cloud site (`https://example.atlassian.net`); the API is below `/rest/api/3`.
    pub fn jira_cloud_url(&self) -> String {
        format!("{}/jira-cloud", self.base_url())
    }

    /// A Jira Data Center site; the API is below `/rest/api/2`.
    pub fn jira_dc_url(&self) -> String {
        format!("{}/jira-dc", self.base_url())
    }

    /// Answers the next `count` valid requests to `provider` with `status` (and `Retry-After:
    /// retry_after` seconds when given) instead of serving them.
    pub async fn fault(
        &self,
        provider: Provider,
        status: u16,
        retry_after: Option<u64>,
        count: u32,
    ) -> anyhow::Result<()> {
        self.control_post(
            "/_control/fault",
            &json!({"provider": provider.as_str(), "status": status, "retry_after": retry_after, "count": count}),
        )
        .await
    }

    /// Like [`fault`](Self::fault) with a plain-text body (a webhook's `channel_not_found`).
    pub async fn fault_with_text(
        &self,
        provider: Provider,
        status: u16,
        text: &str,
    ) -> anyhow::Result<()> {
        self.control_post(
            "/_control/fault",
            &json!({"provider": provider.as_str(), "status": status, "count": 1, "body": text}),
        )
        .await
    }

    /// Hides Jira issues from search for `seconds` after their creation, as Cloud's eventually
    /// consistent search does.
    pub async fn jira_search_lag(&self, provider: Provider, seconds: f64) -> anyhow::Result<()> {
        self.control_post(
            "/_control/jira",
            &json!({"flavor": provider.as_str(), "search_lag_seconds": seconds}),
        )
        .await
    }

    /// Every request to `provider` so far, accepted and rejected, in order.
    pub async fn requests(&self, provider: Provider) -> anyhow::Result<Vec<RecordedRequest>> {
        self.records(&format!(
            "/_control/requests?provider={}",
            provider.as_str()
        ))
        .await
    }

    /// Every request of any provider that broke the contract (or reached an operation the
    /// server does not serve).
    pub async fn rejected(&self) -> anyhow::Result<Vec<RecordedRequest>> {
        self.records("/_control/requests?rejected=true").await
    }

    /// The server's state: Slack channels and messages, GitHub repos, GitLab projects, Jira
    /// issues.
    pub async fn state(&self) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.addr, "/_control/state").await?;
        anyhow::ensure!(status == 200, "state: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn records(&self, path: &str) -> anyhow::Result<Vec<RecordedRequest>> {
        let (status, body) = http_get(self.addr, path).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {body}");
        serde_json::from_str(&body).with_context(|| format!("decoding {path}"))
    }

    async fn control_post(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let (status, answer) = http_post_json(self.addr, path, body).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {answer}");
        Ok(())
    }
}

impl Drop for ContractServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.0 POST with a JSON body: (status code, body).
async fn http_post_json(
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let answer = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, answer))
}
