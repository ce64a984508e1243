//! A real Gitea for the forge tests: the binary `e2e/integrations build` compiles into the shared
//! cache, on SQLite in a directory of the test's, with an admin user and an access token made by
//! Gitea's own CLI. It can be stopped and started again on the same port and data to simulate an
//! outage.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::process::{Process, free_port, http_get};
use crate::wait::poll_until;

/// The version `e2e/integrations build` builds.
pub const GITEA_VERSION: &str = "v1.27.3";
/// The admin user the token belongs to; repositories are created under it.
pub const ADMIN: &str = "auto-agent";
/// Only ever used against this throwaway local instance.
const ADMIN_PASSWORD: &str = "e2e-Gitea-admin-1";
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The cache directory holding `gitea` and the `options/` and `templates/` it serves from.
pub fn gitea_home() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("AUTO_AGENT_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/auto-agent"),
        PathBuf::from,
    );
    let home = cache.join(format!("gitea-{GITEA_VERSION}"));
    for needed in ["gitea", "options", "templates"] {
        anyhow::ensure!(
            home.join(needed).exists(),
            "{} is missing; run `e2e/integrations build` (it builds Gitea {GITEA_VERSION} into the cache)",
            home.join(needed).display()
        );
    }
    Ok(home)
}

/// A running Gitea. `Debug` leaves the token out.
pub struct Gitea {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `url` + `/api/v1`.
    pub api_url: String,
    /// An access token of [`ADMIN`] with every scope.
    pub token: String,
    /// The user owning the repositories [`create_repo`](Self::create_repo) makes.
    pub owner: String,
    dir: PathBuf,
    home: PathBuf,
    addr: SocketAddr,
    process: Option<Process>,
    http: reqwest::Client,
}

impl fmt::Debug for Gitea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gitea")
            .field("url", &self.url)
            .field("owner", &self.owner)
            .field("dir", &self.dir)
            .field("running", &self.process.is_some())
            .finish_non_exhaustive()
    }
}

impl Gitea {
    /// Sets up a fresh Gitea in `dir` (emptied first) on a free port and starts it: app.ini,
    /// `migrate`, the admin user, its token, then `web` until `/api/healthz` answers.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let home = gitea_home()?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let url = format!("http://{addr}");

        let secret_key = gitea_output(&home, dir, &["generate", "secret", "SECRET_KEY"])?;
        let internal_token = gitea_output(&home, dir, &["generate", "secret", "INTERNAL_TOKEN"])?;
        std::fs::write(
            dir.join("app.ini"),
            app_ini(dir, &home, addr, &secret_key, &internal_token)?,
        )?;
        gitea_output(&home, dir, &with_config(dir, &["migrate"]))?;
        gitea_output(
            &home,
            dir,
            &with_config(
                dir,
                &[
                    "admin",
                    "user",
                    "create",
                    "--username",
                    ADMIN,
                    "--password",
                    ADMIN_PASSWORD,
                    "--email",
                    "auto-agent@example.com",
                    "--admin",
                    "--must-change-password=false",
                ],
            ),
        )?;
        let token = gitea_output(
            &home,
            dir,
            &with_config(
                dir,
                &[
                    "admin",
                    "user",
                    "generate-access-token",
                    "--username",
                    ADMIN,
                    "--token-name",
                    "e2e",
                    "--scopes",
                    "all",
                    "--raw",
                ],
            ),
        )?;
        // The last line is the token; Gitea may log a warning (running as root) before it.
        let token = token
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .context("gitea printed no access token")?
            .to_owned();

        // reqwest built without a crypto provider of its own needs a process default to build.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut gitea = Self {
            api_url: format!("{url}/api/v1"),
            url,
            token,
            owner: ADMIN.to_owned(),
            dir: dir.to_owned(),
            home,
            addr,
            process: None,
            http,
        };
        gitea.start_again().await?;
        Ok(gitea)
    }

    /// Starts `gitea web` again (same port, same data) after [`stop`](Self::stop).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut cmd = gitea_command(&self.home, &self.dir);
        cmd.args(with_config(&self.dir, &["web"]));
        let process =
            Process::spawn(cmd, self.dir.join("web.log")).context("starting gitea web")?;
        let addr = self.addr;
        poll_until("gitea /api/healthz", START_TIMEOUT, || async move {
            Ok(matches!(http_get(addr, "/api/healthz").await, Ok((200, _))))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", process.output()))?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops Gitea (SIGKILL); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Creates a public repository `name` owned by [`ADMIN`], with an initial commit.
    pub async fn create_repo(&self, name: &str) -> anyhow::Result<()> {
        self.api_post(
            "/user/repos",
            &json!({ "name": name, "auto_init": true, "private": false }),
        )
        .await?;
        Ok(())
    }

    /// `GET {api_url}{path}` with the admin token, as JSON.
    pub async fn api_get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}{path}", self.api_url));
        self.exchange(request, "GET", path).await
    }

    /// `POST {api_url}{path}` with the admin token and a JSON body, as JSON.
    pub async fn api_post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = self.http.post(format!("{}{path}", self.api_url)).json(body);
        self.exchange(request, "POST", path).await
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        path: &str,
    ) -> anyhow::Result<Value> {
        let response = request
            .header("authorization", format!("token {}", self.token))
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text}"))
    }
}

impl Drop for Gitea {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `gitea` with the environment every run needs.
fn gitea_command(home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(home.join("gitea"));
    cmd.current_dir(dir)
        .env("GITEA_WORK_DIR", dir)
        // Gitea refuses root unless told; 1.27 reads the GITEA_-prefixed name, older ones the bare one.
        .env("GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT", "true")
        .env("I_AM_BEING_UNSAFE_RUNNING_AS_ROOT", "true");
    cmd
}

/// Runs one CLI command to completion and returns its standard output, trimmed.
fn gitea_output<S: AsRef<str>>(home: &Path, dir: &Path, args: &[S]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = gitea_command(home, dir)
        .args(&args)
        .output()
        .with_context(|| format!("running gitea {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "gitea {} failed ({}):\n{}{}",
            // The admin password is the only secret in the arguments.
            args.join(" ").replace(ADMIN_PASSWORD, "<redacted>"),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn with_config(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        "--work-path".to_owned(),
        dir.display().to_string(),
        "--config".to_owned(),
        dir.join("app.ini").display().to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all
}

fn current_user() -> anyhow::Result<String> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .context("running id -un")?;
    anyhow::ensure!(out.status.success(), "id -un failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The configuration: SQLite, loopback only, no SSH, no outside calls, install done, static
/// files (`options/`, `templates/`) from the cache, issues searched in the database.
fn app_ini(
    dir: &Path,
    home: &Path,
    addr: SocketAddr,
    secret_key: &str,
    internal_token: &str,
) -> anyhow::Result<String> {
    let user = current_user()?;
    let root_ok = if user == "root" {
        "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n"
    } else {
        ""
    };
    let dir = dir.display();
    Ok(format!(
        "APP_NAME = auto-agent e2e
RUN_USER = {user}
RUN_MODE = prod
WORK_PATH = {dir}
{root_ok}
[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = http://{addr}/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = {home}
APP_DATA_PATH = {dir}/data

[database]
DB_TYPE = sqlite3
PATH = {dir}/data/gitea.db

[repository]
ROOT = {dir}/repositories

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret_key}
INTERNAL_TOKEN = {internal_token}

[service]
DISABLE_REGISTRATION = true

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[mailer]
ENABLED = false

[cron]
ENABLED = false

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = {dir}/log
",
        port = addr.port(),
        home = home.display(),
    ))
}
