//! The scale benchmark (`make bench`): the agent on a local control plane of N KWOK nodes and M
//! pods, side by side with the naive design and k8sgpt. Not a test; it writes the report.
//!
//!     make bench                 (BENCH_SIZES=100x3000,300x9000,1000x30000 by default)
//!
//! It runs on a control plane of its own (`$AUTO_AGENT_CACHE/bench-cluster`, started fresh and
//! stopped at the end unless BENCH_KEEP=1), so the e2e tests' cluster is untouched. Per size:
//! - the cluster grows to N nodes and M pods (the chart's sensor DaemonSet has a pod on each);
//! - `BENCH_REAL_SENSORS` (100) release-built sensor processes run for the first nodes, each with
//!   a token bound to its node's DaemonSet pod; the load generator opens one stream for every node
//!   with the same kind of token and speaks the real protocol;
//! - apiserver load: the real sensors (re)started and 30 s of their watches, versus the same number
//!   of naive agents each listing and watching every pod; plus a quiet phase as the background;
//! - the controller (release, one replica, TLS): RSS and CPU idle with every stream open, during a
//!   storm of one crash-loop finding per pod, and the ingest rate of new and of duplicate findings;
//! - detection -> action latency of 100 crash loops (one pod of each of 100 Deployments on the
//!   real sensors' nodes) under background pod churn;
//! - k8sgpt `analyze --filter Pod` on 100 broken pods versus the agent's time to detect them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use auto_agent_e2e::agents::{
    CONTROLLER_TLS_NAME, Controller, ControllerIdentity, ControllerOptions, Install, Sensor,
    SensorIdentity, SensorOptions,
};
use auto_agent_e2e::apiserver;
use auto_agent_e2e::bench::{clock_ticks, cpu_ticks, rss_kib};
use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::loadgen::{Answers, LoadStream, PodTarget, crash_finding};
use auto_agent_e2e::pki::TestPki;
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, Workload, scale, scenario};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod report;
use report::{Ingest, K8sgptRun, PhaseLoad, SizeRow};

const AGENT_NS: &str = "auto-agent-bench";
const BACKGROUND_NS: &str = "bench-background";
/// The app Deployments' namespaces: `bench-apps`, or `bench-apps-<k>` for
/// `BENCH_APP_NAMESPACES` > 1 (app a in namespace a mod k): the controller reconciles one change
/// at a time per namespace, so how many namespaces 100 crash loops share bounds how many are
/// remediated at once.
fn app_namespaces() -> Vec<String> {
    match env_or("BENCH_APP_NAMESPACES", "1")
        .parse::<usize>()
        .unwrap_or(1)
    {
        0 | 1 => vec!["bench-apps".into()],
        k => (0..k).map(|i| format!("bench-apps-{i}")).collect(),
    }
}

/// App pods in CrashLoopBackOff, deleted; returns how many.
async fn clear_crash_loops(client: &Client) -> anyhow::Result<usize> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut n = 0;
    for p in api
        .list(&ListParams::default().labels("tier=bench"))
        .await?
        .items
    {
        let looping = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
                })
            });
        if looping && p.metadata.deletion_timestamp.is_none() {
            let pods: Api<Pod> =
                Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            pods.delete(&p.name_any(), &Default::default()).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// App Deployments whose every replica is ready.
async fn ready_apps(client: &Client) -> anyhow::Result<usize> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|d| {
            d.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("app-"))
        })
        .filter(|d| {
            d.status.as_ref().and_then(|s| s.ready_replicas) == Some(APP_REPLICAS as i32)
                && d.status.as_ref().and_then(|s| s.updated_replicas) == Some(APP_REPLICAS as i32)
        })
        .count())
}

/// Waits until every app Deployment reports all its replicas ready.
async fn wait_apps_ready(client: &Client) -> anyhow::Result<()> {
    poll_until(
        "every app Deployment ready",
        Duration::from_secs(300),
        || {
            let client = client.clone();
            async move { Ok(ready_apps(&client).await? >= APPS) }
        },
    )
    .await
}

/// Running app pods in all the app namespaces.
async fn running_apps(client: &Client) -> anyhow::Result<usize> {
    let mut n = 0;
    for ns in app_namespaces() {
        n += scale::running_pods(client, &ns, "tier=bench").await?;
    }
    Ok(n)
}
const BROKEN_NS: &str = "bench-broken";
const NAIVE_SA: &str = "naive-agent";
const APPS: usize = 100;
const APP_REPLICAS: usize = 3;
const BROKEN: usize = 100;
const PHASE: Duration = Duration::from_secs(30);
const CHURN_PER_SECOND: u32 = 10;

struct Bench {
    cluster: Cluster,
    client: Client,
    install: Install,
    controller: Controller,
    pki: TestPki,
    sensor_ids: Vec<SensorIdentity>,
    sensors: Vec<Sensor>,
    real: usize,
    ticks: f64,
    out: PathBuf,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn sizes() -> anyhow::Result<Vec<(usize, usize)>> {
    env_or("BENCH_SIZES", "100x3000,300x9000,1000x30000")
        .split(',')
        .map(|s| {
            let (n, m) = s
                .trim()
                .split_once('x')
                .context("BENCH_SIZES: NODESxPODS,...")?;
            Ok((n.parse()?, m.parse()?))
        })
        .collect()
}

fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    cpu_ticks(pid).unwrap_or_default() as f64 / ticks
}

fn mib(kib: Option<u64>) -> f64 {
    kib.unwrap_or_default() as f64 / 1024.0
}

/// Samples a process's RSS every 200 ms while `work` runs: (result, max RSS MiB, CPU % of a core).
async fn sampled<T>(
    pid: u32,
    ticks: f64,
    work: impl std::future::Future<Output = T>,
) -> (T, f64, f64) {
    let start = Instant::now();
    let cpu0 = cpu_seconds(pid, ticks);
    let max = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let sampler = {
        let (max, stop) = (max.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                max.fetch_max(rss_kib(pid).unwrap_or_default(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = work.await;
    stop.cancel();
    let _ = sampler.await;
    let cpu = (cpu_seconds(pid, ticks) - cpu0) / start.elapsed().as_secs_f64() * 100.0;
    let max = max.load(Ordering::Relaxed) as f64 / 1024.0;
    (out, max.max(mib(rss_kib(pid))), cpu)
}

async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn apply(cluster: &Cluster, doc: &serde_json::Value) -> anyhow::Result<()> {
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))?;
    if !ok {
        bail!("kubectl apply: {err}");
    }
    Ok(())
}

/// Every figure of one size, on a cluster already grown to it.
async fn measure_size(
    bench: &mut Bench,
    naive: &Client,
    index: usize,
    row: &mut SizeRow,
) -> anyhow::Result<()> {
    let (cluster, client, ticks) = (bench.cluster.clone(), bench.client.clone(), bench.ticks);
    let real = bench.real.min(row.nodes);
    let pid = bench.controller.process.pid();

    // The previous size's sensors stop first, so the quiet phase is the background alone.
    bench.sensors.clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("-- quiet");
    let quiet = phase_load(&cluster, &client, ticks, "bench-sensor", async {
        tokio::time::sleep(PHASE).await;
        Ok(0)
    })
    .await?;
    row.load.insert("quiet", quiet);

    eprintln!("-- the agent's sensors, started anew");
    let agent = phase_load(&cluster, &client, ticks, "bench-sensor", async {
        let started = Instant::now();
        bench.start_sensors().await?;
        tokio::time::sleep(PHASE.saturating_sub(started.elapsed())).await;
        Ok(real)
    })
    .await?;
    row.load.insert("agent", agent);

    eprintln!("-- the naive design");
    let stop = CancellationToken::new();
    let naive_load = phase_load(&cluster, &client, ticks, "bench-naive", async {
        let started = Instant::now();
        let (events, listed) = scale::naive_watchers(naive.clone(), real, stop.clone());
        poll_until("the naive agents listed", Duration::from_secs(900), || {
            let listed = listed.clone();
            async move { Ok(listed.load(std::sync::atomic::Ordering::Relaxed) >= real as u64) }
        })
        .await?;
        row.naive_init_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(PHASE).await;
        row.naive_events = events.load(std::sync::atomic::Ordering::Relaxed);
        Ok(real)
    })
    .await?;
    stop.cancel();
    row.load.insert("naive", naive_load);
    tokio::time::sleep(Duration::from_secs(3)).await;

    eprintln!("-- {} load generator streams", row.nodes);
    let tokens = bench.node_tokens(row.nodes).await?;
    // What the streams themselves cost: the RSS just before they open (the real sensors' own
    // streams are open already).
    row.before_streams_rss_mib = mib(rss_kib(pid));
    let opened = Instant::now();
    let mut streams = bench.open_streams(&tokens).await?;
    row.streams = streams.len();
    row.streams_open_seconds = opened.elapsed().as_secs_f64();

    eprintln!("-- controller idle");
    let mut idle_cpu = 0.0;
    let idle = phase_load(&cluster, &client, ticks, "bench-controller", async {
        idle_cpu = sampled(pid, ticks, tokio::time::sleep(PHASE)).await.2;
        Ok(1)
    })
    .await?;
    row.idle_rss_mib = mib(rss_kib(pid));
    row.idle_cpu_percent = idle_cpu;
    row.idle_controller_requests = idle.requests;

    eprintln!("-- storm");
    let targets = background_by_node(&client).await?;
    let findings: HashMap<String, Vec<auto_agent_shared::proto::v1::Finding>> = targets
        .iter()
        .map(|(node, pods)| {
            (
                node.clone(),
                pods.iter()
                    .map(|p| crash_finding(node, p, index as u32))
                    .collect(),
            )
        })
        .collect();
    let mut storm = None;
    let storm_load = phase_load(&cluster, &client, ticks, "bench-controller", async {
        let (result, max, cpu) = sampled(pid, ticks, send_round(&mut streams, &findings)).await;
        storm = Some((result?, max, cpu));
        Ok(1)
    })
    .await?;
    let ((answers, seconds), max, cpu) = storm.context("storm ran")?;
    row.storm.add(&answers, seconds, max, cpu);
    row.storm.controller_requests = storm_load.requests;
    row.storm_rejected = answers.rejected;

    eprintln!("-- duplicates");
    let mut dedupe = Ingest::default();
    let dedupe_load = phase_load(&cluster, &client, ticks, "bench-controller", async {
        for _ in 0..3 {
            let (result, max, cpu) = sampled(pid, ticks, send_round(&mut streams, &findings)).await;
            let (answers, seconds) = result?;
            dedupe.add(&answers, seconds, max, cpu / 3.0);
        }
        Ok(1)
    })
    .await?;
    dedupe.controller_requests = dedupe_load.requests;
    row.dedupe = dedupe;
    drop(streams);
    tokio::time::sleep(Duration::from_secs(2)).await;
    row.after_rss_mib = mib(rss_kib(pid));

    eprintln!("-- latency under churn");
    // The round measures restarts, not the disruption breaker: it starts from whole Deployments
    // as the apiserver reports them (a pod the node controller marked not ready counts).
    wait_apps_ready(&client).await?;
    let stop = CancellationToken::new();
    let background = row
        .pods
        .saturating_sub(APPS * APP_REPLICAS + BROKEN + row.nodes);
    let churn = tokio::spawn(scale::churn(
        client.clone(),
        BACKGROUND_NS.into(),
        background,
        row.nodes,
        CHURN_PER_SECOND,
        stop.clone(),
    ));
    let latencies = latency_round(&client, index as i32 + 2).await;
    stop.cancel();
    let _ = churn.await;
    row.latencies = latencies?;
    row.app_namespaces = app_namespaces().len();
    // A crash loop the agent did not restart (a safety rule refused it; the report counts them)
    // is ended here; the next round waits for the Deployments to be whole again.
    let leftovers = clear_crash_loops(&client).await?;
    if leftovers > 0 {
        eprintln!("{leftovers} crash-looping app pods the agent left were deleted");
    }

    eprintln!("-- 100 broken pods: the agent, then k8sgpt");
    row.agent_detect_seconds = broken_round(bench, index as i32 + 2).await?;
    let binary = k8sgpt_binary()?;
    let home = std::env::temp_dir().join("bench-k8sgpt-home");
    std::fs::create_dir_all(&home)?;
    row.k8sgpt = Some(run_k8sgpt(&binary, cluster.kubeconfig_path(), &home)?);
    Ok(())
}

/// What `work` (which returns how many clients it ran) cost the apiserver, with the requests of
/// the flow schema `schema` attributed to it.
async fn phase_load<F: std::future::Future<Output = anyhow::Result<usize>>>(
    cluster: &Cluster,
    client: &Client,
    ticks: f64,
    schema: &str,
    work: F,
) -> anyhow::Result<PhaseLoad> {
    let api_pid = apiserver::pid(cluster, "kube-apiserver")?;
    let etcd_pid = apiserver::pid(cluster, "etcd")?;
    let before = apiserver::scrape(client).await?;
    let (api0, etcd0) = (cpu_seconds(api_pid, ticks), cpu_seconds(etcd_pid, ticks));
    let start = Instant::now();
    let (clients, apiserver_max_rss_mib, _) = sampled(api_pid, ticks, work).await;
    let clients = clients?;
    let during = apiserver::scrape(client).await?;
    let delta = during.minus(&before);
    let load = apiserver::client_load(&delta, schema);
    Ok(PhaseLoad {
        seconds: start.elapsed().as_secs_f64(),
        clients,
        requests: load.requests,
        execution_seconds: load.execution_seconds,
        by_verb: delta.sum_by(
            "apiserver_request_total",
            &[("resource", "pods")],
            &["verb"],
        ),
        pod_response_bytes: delta.sum("apiserver_response_sizes_sum", &[("resource", "pods")]),
        pod_watches: during.sum(
            "apiserver_longrunning_requests",
            &[("resource", "pods"), ("verb", "WATCH")],
        ),
        apiserver_cpu_seconds: cpu_seconds(api_pid, ticks) - api0,
        apiserver_max_rss_mib,
        etcd_cpu_seconds: cpu_seconds(etcd_pid, ticks) - etcd0,
    })
}

impl Bench {
    async fn start_sensors(&mut self) -> anyhow::Result<()> {
        let controller = format!("https://{}", self.controller.grpc);
        let options: Vec<SensorOptions> = (0..self.real)
            .map(|i| SensorOptions {
                node: scale::node_name(i),
                controller: controller.clone(),
                ca_file: Some(self.pki.ca_file.clone()),
                tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
                release: true,
                ..SensorOptions::default()
            })
            .collect();
        let cluster = &self.cluster;
        let sensors: Vec<Sensor> = stream::iter(self.sensor_ids.iter().zip(options.iter()))
            .map(|(id, o)| Sensor::start(cluster, id, o))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        self.sensors = sensors;
        Ok(())
    }

    /// Tokens bound to the chart's sensor pod on each of the first `n` nodes.
    async fn node_tokens(&self, n: usize) -> anyhow::Result<Vec<(String, String)>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), AGENT_NS);
        let list = pods
            .list(&ListParams::default().labels(&self.install.chart.selector("sensor")))
            .await?;
        let by_node: HashMap<String, (String, String)> = list
            .items
            .into_iter()
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                Some((node, (p.name_any(), p.uid()?)))
            })
            .collect();
        let sa = self.install.chart.sensor_service_account();
        let cluster = &self.cluster;
        stream::iter(0..n)
            .map(|i| {
                let node = scale::node_name(i);
                let pod = by_node.get(&node).cloned();
                let sa = sa.clone();
                async move {
                    let (name, uid) = pod.with_context(|| format!("no sensor pod on {node}"))?;
                    let token = cluster
                        .bound_token(
                            AGENT_NS,
                            &sa,
                            &[auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE],
                            (&name, &uid),
                        )
                        .await?;
                    anyhow::Ok((node, token))
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    async fn open_streams(&self, tokens: &[(String, String)]) -> anyhow::Result<Vec<LoadStream>> {
        let addr = self.controller.grpc;
        let ca = self.pki.ca_file.clone();
        stream::iter(tokens.iter())
            .map(|(node, token)| {
                let ca = ca.clone();
                async move {
                    // The controller allows 32 handshakes per peer address in progress; a refused
                    // one is retried.
                    let mut last = None;
                    for _ in 0..20 {
                        match LoadStream::open(addr, &ca, node, token).await {
                            Ok(s) => return Ok(s),
                            Err(e) => {
                                last = Some(e);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    Err(last.unwrap_or_else(|| anyhow::anyhow!("{node}: no stream")))
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    async fn controller_metric(&self, name: &str, label: &str) -> f64 {
        let text = self.controller.metrics().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// Every background pod, grouped by node.
async fn background_by_node(client: &Client) -> anyhow::Result<HashMap<String, Vec<PodTarget>>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), BACKGROUND_NS);
    let mut out: HashMap<String, Vec<PodTarget>> = HashMap::new();
    let mut params = ListParams::default().labels("app=background").limit(5000);
    loop {
        let page = api.list(&params).await?;
        for p in page.items {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            out.entry(node).or_default().push(PodTarget {
                namespace: BACKGROUND_NS.into(),
                name: p.name_any(),
                uid: p.uid().unwrap_or_default(),
                container: "app".into(),
                image: "registry.example.com/background:1".into(),
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// Sends each stream its findings at once; the answers summed.
async fn send_round(
    streams: &mut [LoadStream],
    findings: &HashMap<String, Vec<auto_agent_shared::proto::v1::Finding>>,
) -> anyhow::Result<(Answers, f64)> {
    let start = Instant::now();
    let results = futures::future::join_all(streams.iter_mut().map(|s| {
        let batch = findings.get(&s.node).cloned().unwrap_or_default();
        s.send_all(batch)
    }))
    .await;
    let mut total = Answers::default();
    for r in results {
        total.add(&r?);
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

/// The k8sgpt binary, built (cached) by scripts/k8sgpt.sh.
fn k8sgpt_binary() -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("scripts/k8sgpt.sh"))
        .arg("path")
        .output()
        .context("running scripts/k8sgpt.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/k8sgpt.sh path: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// `k8sgpt analyze --filter Pod` on the whole cluster, timed by /usr/bin/time.
fn run_k8sgpt(binary: &Path, kubeconfig: &Path, home: &Path) -> anyhow::Result<K8sgptRun> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %U %S %M"])
        .arg(binary)
        .args(k8sgpt_args(kubeconfig, &home.join("k8sgpt.yaml")))
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .output()
        .context("running k8sgpt")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let times: Vec<f64> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("TIME "))
        .context("no timing from /usr/bin/time")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // An analyzer's error is printed as a line before the JSON.
    let json = stdout.find('{').map_or("", |i| &stdout[i..]);
    let report: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("k8sgpt output is not JSON: {stdout:.400} {stderr:.400}"))?;
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let broken_found = results
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{BROKEN_NS}/")))
        })
        .count();
    let sample = results
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with(BROKEN_NS)))
        .map(|r| r.to_string())
        .unwrap_or_default();
    Ok(K8sgptRun {
        wall_seconds: times.first().copied().unwrap_or_default(),
        cpu_seconds: times.get(1).copied().unwrap_or_default()
            + times.get(2).copied().unwrap_or_default(),
        max_rss_mib: times.get(3).copied().unwrap_or_default() / 1024.0,
        results: results.len(),
        broken_found,
        sample,
    })
}

/// No AI backend (no `--explain`); a config path that does not exist, so nothing is written.
fn k8sgpt_args(kubeconfig: &Path, config: &Path) -> Vec<String> {
    vec![
        "--config".into(),
        config.display().to_string(),
        "analyze".into(),
        "--filter".into(),
        "Pod".into(),
        "--output".into(),
        "json".into(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ]
}

/// Crash-loops one ready pod of each app Deployment, `per_second` at a time, and returns the
/// seconds from each status change to the pod's deletion by the agent.
async fn latency_round(client: &Client, restart_count: i32) -> anyhow::Result<Vec<f64>> {
    let api: Api<Pod> = Api::all(client.clone());
    let pods = api
        .list(&ListParams::default().labels("tier=bench"))
        .await?
        .items;
    // app -> (namespace, pod)
    let mut chosen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for p in &pods {
        let ready = auto_agent_e2e::workloads::running_and_ready(p);
        let app = p.labels().get("app").cloned().unwrap_or_default();
        if ready && p.metadata.deletion_timestamp.is_none() {
            chosen
                .entry(app)
                .or_insert_with(|| (p.namespace().unwrap_or_default(), p.name_any()));
        }
    }
    if chosen.len() < APPS {
        eprintln!(
            "warning: only {} of {APPS} apps have a ready pod; measuring those",
            chosen.len()
        );
    }
    let set_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let deleted_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = CancellationToken::new();
    let watch = {
        let (api, deleted_at, stop) = (api.clone(), deleted_at.clone(), stop.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default().labels("tier=bench")).boxed();
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    () = stop.cancelled() => None,
                };
                let Some(event) = event else { return };
                let now = Instant::now();
                let gone = |p: &Pod| {
                    deleted_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(p.name_any())
                        .or_insert(now);
                };
                match event {
                    Ok(watcher::Event::Apply(p)) if p.metadata.deletion_timestamp.is_some() => {
                        gone(&p)
                    }
                    Ok(watcher::Event::Delete(p)) => gone(&p),
                    _ => {}
                }
            }
        })
    };
    // Let the watch list first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for (ns, pod) in chosen.values() {
        tick.tick().await;
        scenario::crash_loop(client, ns, pod, None, restart_count, 1).await?;
        set_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.clone(), Instant::now());
    }
    let names: Vec<String> = chosen.values().map(|(_, pod)| pod.clone()).collect();
    let done = poll_until(
        "every crash loop restarted",
        Duration::from_secs(180),
        || {
            let deleted_at = deleted_at.clone();
            let names = names.clone();
            async move {
                let d = deleted_at.lock().unwrap_or_else(|e| e.into_inner());
                Ok(names.iter().all(|n| d.contains_key(n)))
            }
        },
    )
    .await;
    stop.cancel();
    let _ = watch.await;
    if let Err(e) = done {
        let d = deleted_at.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("warning: {e}: {} of {} restarted", d.len(), names.len());
    }
    let set_at = set_at.lock().unwrap_or_else(|e| e.into_inner());
    let deleted_at = deleted_at.lock().unwrap_or_else(|e| e.into_inner());
    Ok(names
        .iter()
        .filter_map(|n| {
            let set = set_at.get(n)?;
            let gone = deleted_at.get(n)?;
            Some(gone.saturating_duration_since(*set).as_secs_f64())
        })
        .collect())
}

/// Sets every broken pod to CrashLoopBackOff with a new restart count and returns the seconds
/// until the controller accepted a finding for each.
async fn broken_round(bench: &Bench, restart_count: i32) -> anyhow::Result<f64> {
    let accepted =
        || bench.controller_metric("auto_agent_findings_received_total", "outcome=\"accepted\"");
    let before = accepted().await;
    let start = Instant::now();
    stream::iter(0..BROKEN)
        .map(|i| {
            let client = bench.client.clone();
            async move {
                scenario::crash_loop(
                    &client,
                    BROKEN_NS,
                    &format!("broken-{i}"),
                    None,
                    restart_count,
                    1,
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    poll_until(
        "the broken pods' findings accepted",
        Duration::from_secs(120),
        || {
            let accepted = accepted();
            async move { Ok(accepted.await - before >= BROKEN as f64) }
        },
    )
    .await?;
    Ok(start.elapsed().as_secs_f64())
}

fn broken_pod(i: usize, node: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("broken-{i}"),
                     "labels": {"app": "broken", scenario::HOLD_LABEL: "true"}},
        "spec": {"nodeName": node,
                 "containers": [{"name": "app", "image": "registry.example.com/broken:1"}]}
    }))?)
}

fn main() -> anyhow::Result<()> {
    // A control plane of the benchmark's own, with the controller-manager's and scheduler's
    // client rates raised (they create and bind thousands of pods). Set before any thread runs.
    let cache = std::env::var("AUTO_AGENT_CACHE").map_or_else(
        |_| PathBuf::from(env_or("HOME", "/root")).join(".cache/auto-agent"),
        PathBuf::from,
    );
    let state = cache.join("bench-cluster");
    if std::env::var_os("AUTO_AGENT_CLUSTER_DIR").as_deref() != Some(state.as_os_str()) {
        // Run again with the cluster script's environment pointing at the benchmark's cluster.
        let status = Command::new(std::env::current_exe()?)
            .env("AUTO_AGENT_CLUSTER_DIR", &state)
            .env("AUTO_AGENT_CLUSTER_API_QPS", "500")
            // With 1,000 KWOK nodes on two cores the node leases are renewed late while the naive
            // baseline loads the apiserver; after 40 s the node controller would mark every pod
            // of a late node not ready, and KWOK never marks it ready again.
            .env("AUTO_AGENT_CLUSTER_NODE_GRACE", "10m")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let down = || {
        Command::new(repo_root().join("e2e/cluster"))
            .arg("down")
            .status()
            .map(|_| ())
    };
    down()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run());
    drop(runtime);
    if std::env::var("BENCH_KEEP").is_err() {
        down()?;
    }
    result
}

async fn run() -> anyhow::Result<()> {
    let sizes = sizes()?;
    let real = env_or("BENCH_REAL_SENSORS", "100").parse::<usize>()?;
    let out = repo_root().join(env_or("BENCH_OUT", "docs/bench"));
    std::fs::create_dir_all(&out)?;
    // Built (or found cached) before anything starts, so a missing k8sgpt fails at once.
    k8sgpt_binary()?;

    let cluster = Cluster::get()?;
    let client = cluster.admin().await?;
    // `up` makes three nodes of its own; the benchmark's are kwok-scale-<i>.
    cluster.kubectl(
        &[
            "delete",
            "node",
            "kwok-node-0",
            "kwok-node-1",
            "kwok-node-2",
        ],
        None,
    )?;
    for ns in [AGENT_NS, BACKGROUND_NS, BROKEN_NS] {
        ensure_namespace(&client, ns).await?;
    }
    for ns in app_namespaces() {
        ensure_namespace(&client, &ns).await?;
    }
    cluster.install_crds().await?;
    let install = Install::create(&cluster, AGENT_NS).await?;
    let controller_id = ControllerIdentity::create(&cluster, &install).await?;
    let sensor_sa = install.chart.sensor_service_account();
    let controller_sa = install.chart.controller_service_account();
    apply(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": NAIVE_SA, "namespace": AGENT_NS}}),
    )?;
    apply(
        &cluster,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "bench-naive-agent"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
    )?;
    apply(
        &cluster,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "bench-naive-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-naive-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": NAIVE_SA, "namespace": AGENT_NS}]}),
    )?;
    for (schema, sa) in [
        ("bench-sensor", sensor_sa.as_str()),
        ("bench-controller", controller_sa.as_str()),
        ("bench-naive", NAIVE_SA),
    ] {
        apply(&cluster, &apiserver::flow_schema(schema, AGENT_NS, sa))?;
    }
    let pki = TestPki::create(&controller_id.dir.join("pki"), &[CONTROLLER_TLS_NAME])?;
    let controller = Controller::start(
        &controller_id,
        &ControllerOptions {
            name: "bench-controller-0".into(),
            sensor_service_account: controller_id.sensor_service_account.clone(),
            tls: Some(pki.clone()),
            lease_seconds: 15,
            renew_seconds: 5,
            fence_margin_seconds: 5,
            bundle_dir: controller_id.dir.join("bundles"),
            env: vec![
                // The load generator's streams send as fast as the acks come back: the
                // per-stream limit (200/s) would measure itself, not the pipeline.
                ("AUTO_AGENT_STREAM_RATE".into(), "1000000".into()),
                (
                    "AUTO_AGENT_CLUSTER_BUDGETS".into(),
                    "RestartPod=100000/3600".into(),
                ),
            ],
            release: true,
        },
    )
    .await?;
    poll_until("the controller leads", Duration::from_secs(60), || {
        let c = &controller;
        async move { Ok(metric_sum(&c.metrics().await?, "auto_agent_leader") >= 1.0) }
    })
    .await?;
    let naive_client = cluster.client_as(AGENT_NS, NAIVE_SA).await?;
    let mut bench = Bench {
        cluster: cluster.clone(),
        client: client.clone(),
        install,
        controller,
        pki,
        sensor_ids: Vec::new(),
        sensors: Vec::new(),
        real,
        ticks: clock_ticks() as f64,
        out: out.clone(),
    };

    let mut rows: Vec<SizeRow> = Vec::new();
    for (index, &(nodes, pods)) in sizes.iter().enumerate() {
        let real = real.min(nodes);
        let mut row = SizeRow {
            nodes,
            pods,
            ..SizeRow::default()
        };
        eprintln!("== {nodes} nodes, {pods} pods");
        let start = Instant::now();
        scale::ensure_nodes(&client, nodes, real).await?;
        poll_until("nodes Ready", Duration::from_secs(600), || {
            let client = client.clone();
            async move { Ok(scale::ready_nodes(&client).await? >= nodes) }
        })
        .await?;
        let fixed = APPS * APP_REPLICAS + BROKEN + nodes;
        let background = pods.saturating_sub(fixed);
        scale::ensure_pods(&client, BACKGROUND_NS, background, nodes).await?;
        let sensor_selector = bench.install.chart.selector("sensor");
        poll_until("pods running", Duration::from_secs(1800), || {
            let client = client.clone();
            let sensor_selector = sensor_selector.clone();
            async move {
                Ok(
                    scale::running_pods(&client, BACKGROUND_NS, "app=background").await?
                        >= background
                        && scale::running_pods(&client, AGENT_NS, &sensor_selector).await? >= nodes,
                )
            }
        })
        .await?;
        if index == 0 {
            // The Deployments the latency rounds crash-loop, and the pods k8sgpt is asked about,
            // on the real sensors' nodes.
            let namespaces = app_namespaces();
            for ns in &namespaces {
                apply(
                    &cluster,
                    &json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                    "metadata": {"name": "bench", "namespace": ns},
                    "spec": {"targetSelector": {"matchLabels": {"tier": "bench"}}, "actions": {"restartStuckPods": true},
                             "safety": {"cooldownSeconds": 0, "maxRepeats": 100, "stormWindowSeconds": 0},
                             "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 10000, "windowSeconds": 3600},
                                         {"action": "RestartPod", "scope": "Target", "max": 100, "windowSeconds": 3600}]}}),
                )?;
            }
            for a in 0..APPS {
                let w = Workload::new(&format!("app-{a}"))
                    .replicas(APP_REPLICAS as i32)
                    .label("tier", "bench");
                let mut d = w.build();
                if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                    spec.node_selector =
                        Some([("bench.autoagent.io/sensor".to_owned(), "real".to_owned())].into());
                }
                let api: Api<k8s_openapi::api::apps::v1::Deployment> =
                    Api::namespaced(client.clone(), &namespaces[a % namespaces.len()]);
                api.create(&PostParams::default(), &d).await?;
            }
            let broken: Api<Pod> = Api::namespaced(client.clone(), BROKEN_NS);
            for i in 0..BROKEN {
                broken
                    .create(
                        &PostParams::default(),
                        &broken_pod(i, &scale::node_name(i % real))?,
                    )
                    .await?;
            }
            poll_until("app pods running", Duration::from_secs(300), || {
                let client = client.clone();
                async move { Ok(running_apps(&client).await? >= APPS * APP_REPLICAS) }
            })
            .await?;
            for i in 0..real {
                bench.sensor_ids.push(
                    SensorIdentity::for_node(&cluster, &bench.install, &scale::node_name(i))
                        .await?,
                );
            }
        }
        row.populate_seconds = start.elapsed().as_secs_f64();

        measure_size(&mut bench, &naive_client, index, &mut row).await?;
        eprintln!("{row:?}");
        rows.push(row);
        report::write(&bench.out, &rows, std::env::var_os("BENCH_OUT").is_none())?;
    }
    Ok(())
}
