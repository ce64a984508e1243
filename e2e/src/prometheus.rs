//! A real Prometheus (Debian's package, installed by `make setup`) for the scaling tests: it
//! scrapes the given targets every second into a throwaway TSDB on 127.0.0.1, and can be stopped
//! and started again on the same port and data to simulate an outage the controller must ride
//! out.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use auto_agent_prom::PromClient;
use serde_json::json;

use crate::process::{Process, free_port, http_get};
use crate::wait::poll_until;

/// How long a (re)started Prometheus may take to open its TSDB and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of the clients this harness hands out.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// `prometheus` on PATH, where `scripts/setup.sh` looks for it.
pub fn prometheus_binary() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .context("`prometheus` is not installed; run `make setup` (it installs Debian's package)")
}

/// One scrape job with one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// The `job` label; targets with the same job share one scrape config.
    pub job: String,
    /// `host:port`.
    pub address: String,
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
}

impl ScrapeTarget {
    /// `http://<address>/metrics`, the usual exporter.
    pub fn http(job: &str, address: impl ToString) -> Self {
        Self {
            job: job.to_owned(),
            address: address.to_string(),
            metrics_path: "/metrics".to_owned(),
            scheme: "http".to_owned(),
        }
    }
}

/// A Prometheus process; killed when dropped, and its directory (config, TSDB, logs) removed
/// unless the test is failing.
#[derive(Debug)]
pub struct Prometheus {
    addr: SocketAddr,
    dir: PathBuf,
    /// How many times it was started; each run logs to its own file.
    runs: u32,
    process: Option<Process>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second on a free port, and waits until it is
    /// ready (`/-/ready`). Targets may be down; Prometheus keeps trying. The first scrape comes
    /// about 5 s after each (re)start: Prometheus applies new targets on a 5 s tick.
    pub async fn start(targets: &[ScrapeTarget]) -> anyhow::Result<Self> {
        let config = config(targets)?;
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("e2e-prometheus-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let mut prometheus = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            runs: 0,
            process: None,
        };
        prometheus.start_again().await?;
        Ok(prometheus)
    }

    /// Starts it again after [`stop`](Self::stop): same port, config and TSDB, so samples scraped
    /// before the outage are still queryable.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.process.is_some() {
            bail!("Prometheus at {} is already running", self.url());
        }
        let mut command = Command::new(prometheus_binary()?);
        command
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr));
        self.runs += 1;
        let mut process = Process::spawn(command, self.log())?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    process.output()
                );
            }
            if matches!(http_get(self.addr, "/-/ready").await, Ok((200, _))) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = Some(process);
        Ok(())
    }

    /// Kills Prometheus abruptly (SIGKILL), like a crashed pod; the TSDB stays for
    /// [`start_again`](Self::start_again). Samples scraped so far survive in its WAL.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `http://127.0.0.1:<port>`, the base URL for a [`PromClient`] or the controller's flag.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client for this server; it keeps pointing at the same URL across stop and restart.
    pub fn client(&self) -> anyhow::Result<PromClient> {
        Ok(PromClient::new(&self.url(), QUERY_TIMEOUT)?)
    }

    /// The output of the current (or last) run, for assertion messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Polls the instant query `query` until its value (see
    /// [`QueryResult::single_value`](auto_agent_prom::QueryResult::single_value)) satisfies
    /// `pred`, and returns it; fails after `timeout` naming the last value seen or error.
    pub async fn wait_for_value(
        &self,
        query: &str,
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let client = self.client()?;
        let matched = Cell::new(None);
        poll_until(&format!("`{query}` to match"), timeout, || {
            let (client, matched, pred) = (&client, &matched, &pred);
            async move {
                match client.instant(query, None).await?.single_value() {
                    Some(value) if pred(value) => {
                        matched.set(Some(value));
                        Ok(true)
                    }
                    // Reported by poll_until as the last error if time runs out.
                    Some(value) => bail!("`{query}` is {value}"),
                    None => bail!("`{query}` has no value"),
                }
            }
        })
        .await?;
        matched.get().context("poll_until returned without a match")
    }

    /// Whether the scrape job `job` has targets and all of them are up (last scrape succeeded).
    pub async fn targets_up(&self, job: &str) -> anyhow::Result<bool> {
        let (status, body) = http_get(self.addr, "/api/v1/targets?state=active").await?;
        if status != 200 {
            bail!("/api/v1/targets answered {status}: {body}");
        }
        let answer: serde_json::Value = serde_json::from_str(&body)?;
        let targets = answer["data"]["activeTargets"]
            .as_array()
            .context("no activeTargets in /api/v1/targets")?;
        let health: Vec<&str> = targets
            .iter()
            .filter(|t| t["scrapePool"] == job)
            .map(|t| t["health"].as_str().unwrap_or_default())
            .collect();
        Ok(!health.is_empty() && health.iter().all(|h| *h == "up"))
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("prometheus.{}.log", self.runs))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "keeping Prometheus's directory for post-mortem: {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The configuration file: 1 s scrape and evaluation intervals so tests see a new value within
/// about a second, one scrape config per job.
fn config(targets: &[ScrapeTarget]) -> anyhow::Result<String> {
    let mut jobs: BTreeMap<&str, (&ScrapeTarget, Vec<&str>)> = BTreeMap::new();
    for target in targets {
        let (first, addresses) = jobs
            .entry(&target.job)
            .or_insert_with(|| (target, Vec::new()));
        if (&first.scheme, &first.metrics_path) != (&target.scheme, &target.metrics_path) {
            bail!(
                "job `{}` has targets with different schemes or metrics paths",
                target.job
            );
        }
        addresses.push(&target.address);
    }
    let scrape_configs: Vec<serde_json::Value> = jobs
        .into_iter()
        .map(|(job, (first, addresses))| {
            json!({
                "job_name": job,
                "scheme": first.scheme,
                "metrics_path": first.metrics_path,
                "static_configs": [{"targets": addresses}],
            })
        })
        .collect();
    Ok(serde_norway::to_string(&json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scrape_config_per_job() {
        let yaml = config(&[
            ScrapeTarget::http("app", "127.0.0.1:1"),
            ScrapeTarget::http("app", "127.0.0.1:2"),
            ScrapeTarget::http("other", "127.0.0.1:3"),
        ])
        .unwrap();
        let parsed: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
        let jobs = parsed["scrape_configs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0]["static_configs"][0]["targets"],
            json!(["127.0.0.1:1", "127.0.0.1:2"])
        );

        let mut tls = ScrapeTarget::http("app", "127.0.0.1:4");
        tls.scheme = "https".to_owned();
        assert!(config(&[ScrapeTarget::http("app", "127.0.0.1:1"), tls]).is_err());
    }
}
