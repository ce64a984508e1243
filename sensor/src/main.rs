//! auto-agent-sensor: the per-node half of auto-agent (DaemonSet).
//!
//! Watches the pods on its node and its Node object, detects failures edge-triggered, attaches the
//! previous container's log tail, and streams findings to the controller leader over gRPC with
//! at-least-once delivery. It never writes to the Kubernetes API.

#![forbid(unsafe_code)]

mod evidence;
mod logtail;
mod metrics;
mod queue;
mod stream;
mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use auto_agent_shared::runtime::{
    AdminArgs, AdminServer, LogArgs, Readiness, Shutdown, metrics as runtime_metrics,
};
use clap::Parser;
use tokio::sync::{Notify, Semaphore};

use crate::evidence::EvidenceReader;
use crate::logtail::TailLimits;
use crate::metrics::SensorMetrics;
use crate::queue::Queue;
use crate::stream::{StreamConfig, Streamer, TlsConfig};
use crate::watch::{Sink, SyncGate};

/// Watches the pods and the Node object of one node and streams findings to the controller.
#[derive(Debug, Parser)]
#[command(name = "auto-agent-sensor", version = auto_agent_shared::VERSION)]
struct Args {
    /// The node this sensor watches (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// The controller's gRPC address, e.g. https://auto-agent-controller.auto-agent.svc:9443.
    #[arg(long, env = "AUTO_AGENT_CONTROLLER")]
    controller: String,

    /// Projected ServiceAccount token presented on every stream; re-read when it rotates.
    #[arg(
        long,
        env = "AUTO_AGENT_TOKEN_FILE",
        default_value = "/var/run/secrets/auto-agent/token"
    )]
    token_file: PathBuf,

    /// CA bundle that signed the controller's certificate.
    #[arg(long, env = "AUTO_AGENT_CA_FILE")]
    ca_file: Option<PathBuf>,

    /// Name the controller's certificate must carry; defaults to the host of --controller.
    #[arg(long, env = "AUTO_AGENT_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,

    /// Development only: talk to the controller without TLS.
    #[arg(long, env = "AUTO_AGENT_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,

    /// Kubeconfig file; in a pod the in-cluster configuration is used.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Root of the kubelet's container logs on this node (mounted read-only).
    #[arg(long, env = "AUTO_AGENT_POD_LOG_DIR", default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,

    /// Lines of the previous container's log attached to crash and OOM findings.
    #[arg(long, env = "AUTO_AGENT_LOG_TAIL_LINES", default_value_t = 50)]
    log_tail_lines: usize,

    /// Bytes of log attached to one finding, at most.
    #[arg(long, env = "AUTO_AGENT_LOG_TAIL_BYTES", default_value_t = 16 * 1024)]
    log_tail_bytes: usize,

    /// Findings held while the controller is unreachable, at most; more are dropped and counted.
    #[arg(long, env = "AUTO_AGENT_QUEUE_CAPACITY", default_value_t = 4096)]
    queue_capacity: usize,

    /// Seconds between checks of the token file for a rotated token (the stream reopens with it).
    #[arg(long, env = "AUTO_AGENT_TOKEN_CHECK_SECONDS", default_value_t = 30)]
    token_check_seconds: u64,

    /// Page size of the initial pod list.
    #[arg(long, env = "AUTO_AGENT_WATCH_PAGE_SIZE", default_value_t = 500)]
    watch_page_size: u32,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    admin: AdminArgs,
}

fn tls_config(args: &Args) -> anyhow::Result<Option<TlsConfig>> {
    if args.insecure_plaintext {
        tracing::warn!("Plaintext gRPC (--insecure-plaintext): for development only");
        return Ok(None);
    }
    let Some(ca_file) = args.ca_file.clone() else {
        bail!("--ca-file is required unless --insecure-plaintext is set");
    };
    let server_name = match &args.tls_server_name {
        Some(name) => name.clone(),
        None => {
            let uri: tonic::codegen::http::Uri =
                args.controller.parse().context("parsing --controller")?;
            uri.host().context("--controller has no host")?.to_owned()
        }
    };
    Ok(Some(TlsConfig {
        ca_file,
        server_name,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let registry = runtime_metrics::registry()?;
    let metrics = SensorMetrics::register(&registry)?;
    let tls = tls_config(&args)?;
    let client = kube::Client::try_from(
        auto_agent_shared::runtime::kube_config::kube_config(
            args.kubeconfig.as_deref(),
            "auto-agent-sensor",
            &args.node_name,
        )
        .await?,
    )?;

    let shutdown = Shutdown::new();
    shutdown.spawn_signal_handler()?;
    let readiness = Readiness::new();
    let queue = Arc::new(Mutex::new(Queue::new(args.queue_capacity)));
    let notify = Arc::new(Notify::new());
    let evidence = Arc::new(EvidenceReader {
        client: client.clone(),
        pod_log_dir: args.pod_log_dir.clone(),
        limits: TailLimits {
            lines: args.log_tail_lines,
            total_bytes: args.log_tail_bytes,
            ..TailLimits::default()
        },
        metrics: metrics.clone(),
    });
    let sink = Sink {
        queue: queue.clone(),
        notify: notify.clone(),
        metrics: metrics.clone(),
        evidence,
        readers: Arc::new(Semaphore::new(4)),
    };
    let gate = SyncGate::new(2, readiness.clone());
    let stop = shutdown.token();

    let (resync_tx, resync_rx) = tokio::sync::watch::channel(0u64);
    let streamer = Streamer {
        config: StreamConfig {
            controller: args.controller.clone(),
            tls,
            token_file: args.token_file.clone(),
            node: args.node_name.clone(),
            instance_id: auto_agent_shared::clock::process_instance_id(),
            window: 128,
            token_check: Duration::from_secs(args.token_check_seconds.max(1)),
        },
        queue,
        notify,
        metrics,
        resync: resync_tx,
    };
    tracing::info!(node = %args.node_name, controller = %args.controller, version = auto_agent_shared::VERSION, "Sensor starting");
    let pods = tokio::spawn(watch::pods(
        client.clone(),
        args.node_name.clone(),
        args.watch_page_size,
        sink.clone(),
        gate.clone(),
        resync_rx.clone(),
        stop.clone(),
    ));
    let node = tokio::spawn(watch::node(
        client,
        args.node_name.clone(),
        sink,
        gate,
        resync_rx,
        stop.clone(),
    ));
    let stream = tokio::spawn(streamer.run(stop.clone()));
    AdminServer::new(readiness, registry)
        .serve(args.admin.admin_addr, shutdown.clone())
        .await?;
    shutdown.trigger();
    let _ = tokio::join!(pods, node, stream);
    tracing::info!("Sensor stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_name() {
        let missing = auto_agent_shared::runtime::flags_without_env(&Args::command());
        assert!(missing.is_empty(), "no env name: {missing:?}");
    }
}
