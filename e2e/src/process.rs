//! The project's binaries as processes under test: built once, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, bail};

use crate::cluster::repo_root;

/// Which profiles were built in this process: [debug, release].
static BUILT: Mutex<[bool; 2]> = Mutex::new([false, false]);

/// Path of a workspace binary, building the agent binaries first (once per test process and
/// profile). Benchmarks use `release`.
pub fn binary(name: &str, release: bool) -> anyhow::Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built[usize::from(release)] {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "auto-agent-sensor",
            "-p",
            "auto-agent-controller",
            "-p",
            "auto-agent-kubectl",
        ]);
        if release {
            cmd.arg("--release");
        }
        if !cmd.status().context("running cargo build")?.success() {
            bail!("building the agent binaries failed");
        }
        built[usize::from(release)] = true;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| repo_root().join("target"), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join(name))
}

/// A child process that is killed when dropped. Its output goes to a log file for post-mortems.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    killed: bool,
}

impl Process {
    pub fn spawn(mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        Ok(Self {
            child,
            log,
            killed: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far (for assertion messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    pub fn exited(&self) -> bool {
        self.killed
    }

    /// SIGSTOP: the process keeps its sockets and its place, and runs nothing (a long GC pause, a
    /// frozen VM) until `resume`.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()?;
        if !sent.success() {
            bail!("kill {signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet sends on pod deletion, then waits up to `grace` for the exit
    /// (SIGKILL after it, as the kubelet would).
    pub async fn terminate(&mut self, grace: std::time::Duration) -> anyhow::Result<()> {
        self.signal("-TERM")?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                self.killed = true;
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.kill();
        bail!("did not stop within {grace:?} of SIGTERM")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP/1.0 GET against a local admin server: (status code, body). Bounded at 5 s: a
/// paused process still accepts connections (the kernel does) and would never answer.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        http_get_unbounded(addr, path),
    )
    .await
    .map_err(|_| anyhow::anyhow!("GET http://{addr}{path}: no answer within 5 s"))?
}

async fn http_get_unbounded(
    addr: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled (or the sum of a labelled) Prometheus counter or gauge in `/metrics` text.
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
