//! A real S3 server for the evidence tests: `s3s-fs` (crates.io), built into the shared cache by
//! `scripts/setup.sh`, serving a directory with SigV4 authentication. It can be stopped and
//! started again on the same port and data to simulate an outage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::{Process, free_port, http_get};
use crate::wait::poll_until;

/// The version `scripts/setup.sh` builds.
pub const S3S_FS_VERSION: &str = "0.14.1";
/// Test credentials; the controller gets them the way a user's pod would (environment).
pub const ACCESS_KEY: &str = "AKIDAUTOAGENTTEST";
pub const SECRET_KEY: &str = "auto-agent-test-secret-key";
pub const REGION: &str = "us-east-1";

pub fn s3s_fs_binary() -> anyhow::Result<PathBuf> {
    let cache = std::env::var("AUTO_AGENT_CACHE").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/auto-agent"),
        PathBuf::from,
    );
    let bin = cache.join(format!("s3s-fs-{S3S_FS_VERSION}/bin/s3s-fs"));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing; run `make setup` (scripts/setup.sh builds s3s-fs)",
        bin.display()
    );
    Ok(bin)
}

#[derive(Debug)]
pub struct S3Server {
    pub root: PathBuf,
    pub addr: SocketAddr,
    /// The buckets created at start; the controller is allowed to write to these.
    pub buckets: Vec<String>,
    log: PathBuf,
    process: Option<Process>,
}

impl S3Server {
    /// Starts s3s-fs over `root` (created) with `buckets` created as directories.
    pub async fn start(root: &Path, buckets: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(root, buckets, "127.0.0.1").await
    }

    /// [`start`](Self::start) listening on `host` (an address of this machine), for clients in
    /// pods of the real node.
    pub async fn start_on(root: &Path, buckets: &[&str], host: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)?;
        for b in buckets {
            std::fs::create_dir_all(root.join(b))?;
        }
        let addr: SocketAddr = format!("{host}:{}", free_port()?).parse()?;
        let mut server = Self {
            root: root.to_owned(),
            addr,
            buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
            log: root.with_extension("log"),
            process: None,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts the server again (same port, same data) after [`stop`](Self::stop).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(s3s_fs_binary()?);
        cmd.args([
            "--host",
            &self.addr.ip().to_string(),
            "--port",
            &self.addr.port().to_string(),
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .arg(&self.root);
        let process = Process::spawn(cmd, self.log.clone()).context("starting s3s-fs")?;
        let addr = self.addr;
        poll_until("s3s-fs listening", Duration::from_secs(30), || async move {
            // Any HTTP answer (403 without a signature) means it serves.
            Ok(http_get(addr, "/").await.is_ok())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", process.output()))?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (SIGKILL); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The controller environment for this store: the SDK's standard variables and the
    /// controller's endpoint flags, as a user would set them for an S3-compatible store.
    pub fn controller_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AUTO_AGENT_S3_ENDPOINT_URL", self.endpoint()),
            ("AUTO_AGENT_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("AUTO_AGENT_BUNDLE_ALLOWED_BUCKETS", self.buckets.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Object keys in `bucket` (s3s-fs keeps each object as a file under `<root>/<bucket>/`).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let base = self.root.join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.retain(|k| k.ends_with(".json"));
        out.sort();
        out
    }

    pub fn read(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.root.join(bucket).join(key))?)
    }
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, root, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
