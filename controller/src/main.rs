//! auto-agent-controller: the leader-elected half of auto-agent (Deployment, 2+ replicas).
//!
//! Every replica serves the sensors' gRPC ingest and watches policies; the Lease holder records
//! findings into incidents, matches them to AutoRemediationPolicies, and reports (Events, policy
//! status, metrics). Deciding and acting are the remediation engine's next step: nothing here
//! changes workloads yet.

#![forbid(unsafe_code)]

mod act;
mod auth;
mod bundle;
mod events;
mod features;
mod gather;
mod handoff;
mod ingest;
mod leader;
mod ledger;
mod metrics;
mod node_policies;
mod nodes;
mod pipeline;
mod policies;
mod recent;
mod registry;
mod report;
mod scale;
mod status;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngestServer;
use auto_agent_shared::runtime::{
    AdminArgs, AdminServer, LogArgs, Readiness, Shutdown, metrics as runtime_metrics,
};
use clap::Parser;
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::ingest::{Ingest, IngestLimits};
use crate::leader::LeaderConfig;
use crate::metrics::ControllerMetrics;
use crate::policies::PolicyIndex;
use crate::report::Reporter;
use crate::workloads::WorkloadCache;

/// Ingests sensor findings, decides within AutoRemediationPolicy rules and safety limits, acts and
/// reports.
#[derive(Debug, Parser)]
#[command(name = "auto-agent-controller", version = auto_agent_shared::VERSION)]
struct Args {
    /// This replica's identity in leader election (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "auto-agent-controller")]
    identity: String,

    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "auto-agent")]
    namespace: String,

    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "AUTO_AGENT_LEASE_NAME",
        default_value = "auto-agent-controller"
    )]
    lease_name: String,

    /// Lease duration in seconds; failover takes at most this plus one renew period.
    #[arg(long, env = "AUTO_AGENT_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,

    /// Seconds between lease renewals.
    #[arg(long, env = "AUTO_AGENT_RENEW_SECONDS", default_value_t = 5)]
    renew_seconds: u64,

    /// Writes stop this many seconds before the lease would run out.
    #[arg(long, env = "AUTO_AGENT_FENCE_MARGIN_SECONDS", default_value_t = 5)]
    fence_margin_seconds: u64,

    /// Address the gRPC ingest listens on.
    #[arg(long, env = "AUTO_AGENT_GRPC_ADDR", default_value = "0.0.0.0:9443")]
    grpc_addr: SocketAddr,

    /// host:port sensors can reach this replica at, published on the Lease while it leads
    /// (in a pod: $(POD_IP):9443).
    #[arg(long, env = "AUTO_AGENT_GRPC_ADVERTISE")]
    grpc_advertise: String,

    /// TLS certificate (PEM) of the gRPC ingest.
    #[arg(long, env = "AUTO_AGENT_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,

    /// TLS private key (PEM) of the gRPC ingest.
    #[arg(long, env = "AUTO_AGENT_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,

    /// Development only: serve the gRPC ingest without TLS.
    #[arg(long, env = "AUTO_AGENT_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,

    /// The sensor ServiceAccount as `namespace/name`; only its tokens may stream.
    #[arg(
        long,
        env = "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT",
        default_value = "auto-agent/auto-agent-sensor"
    )]
    sensor_service_account: String,

    /// Audience sensor tokens must carry.
    #[arg(long, env = "AUTO_AGENT_TOKEN_AUDIENCE", default_value = auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE)]
    token_audience: String,

    /// Sensor streams open at once, at most.
    #[arg(long, env = "AUTO_AGENT_MAX_STREAMS", default_value_t = 5000)]
    max_streams: usize,

    /// Largest sensor message accepted, in bytes.
    #[arg(long, env = "AUTO_AGENT_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    max_message_bytes: usize,

    /// Findings per second one stream may send, sustained (bursts up to 10x).
    #[arg(long, env = "AUTO_AGENT_STREAM_RATE", default_value_t = 200.0)]
    stream_rate: f64,

    /// Name of the ConfigMap (in --namespace) that keeps the action ledger: budgets, cooldowns and
    /// loop state that survive leader failover.
    #[arg(
        long,
        env = "AUTO_AGENT_LEDGER_NAME",
        default_value = "auto-agent-ledger"
    )]
    ledger_name: String,

    /// Directory of the default evidence store when no S3 bucket is set (an EFS or other mounted
    /// volume); also an allowed root for policies' logBundle.filesystem.path.
    #[arg(
        long,
        env = "AUTO_AGENT_BUNDLE_DIR",
        default_value = "/var/lib/auto-agent/bundles"
    )]
    bundle_dir: PathBuf,

    /// Directories a policy's logBundle.filesystem.path may lie below (comma-separated); the
    /// bundle directory is always allowed.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_ALLOWED_ROOTS", value_delimiter = ',')]
    bundle_allowed_roots: Vec<PathBuf>,

    /// Default S3 bucket for bundles (instead of --bundle-dir) when a policy names no logBundle.
    /// Credentials come from the SDK's default chain (environment, IRSA web identity, profile,
    /// container or instance metadata), never from flags.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_S3_BUCKET")]
    bundle_s3_bucket: Option<String>,

    /// Key prefix for the default S3 bucket.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_S3_PREFIX", default_value = "")]
    bundle_s3_prefix: String,

    /// S3 region; when unset the SDK's chain decides (AWS_REGION, profile, instance metadata).
    #[arg(long, env = "AUTO_AGENT_S3_REGION")]
    s3_region: Option<String>,

    /// Endpoint of an S3-compatible store (MinIO, Ceph, s3s); unset for AWS S3.
    #[arg(long, env = "AUTO_AGENT_S3_ENDPOINT_URL")]
    s3_endpoint_url: Option<String>,

    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible stores need.
    #[arg(long, env = "AUTO_AGENT_S3_FORCE_PATH_STYLE")]
    s3_force_path_style: bool,

    /// Default server-side encryption of bundle objects: AES256 or aws:kms.
    #[arg(long, env = "AUTO_AGENT_S3_SSE", value_parser = ["AES256", "aws:kms"])]
    s3_sse: Option<String>,

    /// KMS key for --s3-sse aws:kms (the bucket's default key when unset).
    #[arg(long, env = "AUTO_AGENT_S3_SSE_KMS_KEY_ID", requires = "s3_sse")]
    s3_sse_kms_key_id: Option<String>,

    /// Local spool for bundles whose store is unreachable (the controller's own volume).
    #[arg(
        long,
        env = "AUTO_AGENT_SPOOL_DIR",
        default_value = "/var/lib/auto-agent/spool"
    )]
    spool_dir: PathBuf,

    /// Bundles the spool holds at most; when full, a restart whose bundle cannot be saved is
    /// refused (the pod keeps its evidence).
    #[arg(long, env = "AUTO_AGENT_SPOOL_MAX_BUNDLES", default_value_t = 1000)]
    spool_max_bundles: usize,

    /// Bytes the spool holds at most.
    #[arg(long, env = "AUTO_AGENT_SPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    spool_max_bytes: u64,

    /// What a restart waits for: `local` (the bundle is in its store or the local spool) or
    /// `remote` (the bundle is in its store; otherwise the restart is refused and retried on the
    /// next finding).
    #[arg(long, env = "AUTO_AGENT_BUNDLE_DURABILITY", default_value = "local", value_parser = ["local", "remote"])]
    bundle_durability: String,

    /// Seconds one direct bundle write may take before the bundle is spooled instead.
    #[arg(
        long,
        env = "AUTO_AGENT_BUNDLE_WRITE_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    bundle_write_timeout_seconds: u64,

    /// Pod restarts per hour across the whole cluster, at most.
    #[arg(
        long,
        env = "AUTO_AGENT_CLUSTER_RESTARTS_PER_HOUR",
        default_value_t = 50
    )]
    cluster_restarts_per_hour: u32,

    /// Remediation features this installation allows (comma-separated: restart, memoryBump,
    /// mirrorImage, nodeRemediation, scaling); the chart sets it from `features.*` with the RBAC.
    /// A disabled feature's actions are refused as FeatureDisabled.
    #[arg(
        long,
        env = "AUTO_AGENT_FEATURES",
        value_delimiter = ',',
        default_value = "restart,memoryBump,mirrorImage,nodeRemediation,scaling"
    )]
    features: Vec<String>,

    /// Prometheus base URL for policies with scale.enabled (e.g. http://prometheus:9090); without
    /// it such policies show Degraded/PrometheusNotConfigured and nothing scales.
    #[arg(long, env = "AUTO_AGENT_PROMETHEUS_URL")]
    prometheus_url: Option<String>,

    /// Seconds one Prometheus query may take.
    #[arg(
        long,
        env = "AUTO_AGENT_PROMETHEUS_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    prometheus_timeout_seconds: u64,

    /// Seconds between scaling evaluations.
    #[arg(long, env = "AUTO_AGENT_SCALE_INTERVAL_SECONDS", default_value_t = 30)]
    scale_interval_seconds: u64,

    /// Evaluations in a row with failed queries before a scaling policy shows Degraded.
    #[arg(
        long,
        env = "AUTO_AGENT_SCALE_FAILURES_BEFORE_DEGRADED",
        default_value_t = 3
    )]
    scale_failures_before_degraded: u32,

    /// Registries (host:port) spoken to over plain HTTP for mirror checks, e.g. a local mirror.
    #[arg(long, env = "AUTO_AGENT_PLAIN_HTTP_REGISTRIES", value_delimiter = ',')]
    plain_http_registries: Vec<String>,

    /// Docker config JSON with mirror registry logins (`{"auths": {"host": {"auth": ...}}}`, the
    /// `.dockerconfigjson` of a Secret); read on every mirror check. Without it, checks are anonymous
    /// (public registries' anonymous tokens still work).
    #[arg(long, env = "AUTO_AGENT_REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,

    /// Kubeconfig file; in a pod the in-cluster configuration is used.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    admin: AdminArgs,
}

fn sensor_user(sa: &str) -> anyhow::Result<String> {
    match sa.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok(format!("system:serviceaccount:{ns}:{name}"))
        }
        _ => bail!("--sensor-service-account must be namespace/name, got {sa:?}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    // One TLS provider for every client in the process (kube, tonic and the registry client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = runtime_metrics::registry()?;
    let metrics = ControllerMetrics::register(&registry)?;
    let features = features::Features::parse(&args.features)?;
    let config =
        auto_agent_shared::runtime::kube_config::kube_config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config.clone())?;
    // Evictions must see a PodDisruptionBudget's 429 at once (and retry on their own schedule),
    // not have the client retry it for minutes.
    let mut eviction_config = config;
    eviction_config.default_retry = false;
    let eviction_client = kube::Client::try_from(eviction_config)?;
    let shutdown = Shutdown::new();
    shutdown.spawn_signal_handler()?;
    let readiness = Readiness::new();

    let tls = match (
        &args.tls_cert_file,
        &args.tls_key_file,
        args.insecure_plaintext,
    ) {
        (_, _, true) => {
            tracing::warn!("Plaintext gRPC (--insecure-plaintext): for development only");
            None
        }
        (Some(cert), Some(key), false) => Some(tonic::transport::Identity::from_pem(
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
        )),
        _ => bail!(
            "--tls-cert-file and --tls-key-file are required unless --insecure-plaintext is set"
        ),
    };

    let leader_config = LeaderConfig {
        namespace: args.namespace.clone(),
        lease_name: args.lease_name.clone(),
        identity: args.identity.clone(),
        advertise: args.grpc_advertise.clone(),
        ttl: Duration::from_secs(args.lease_seconds),
        renew_every: Duration::from_secs(args.renew_seconds),
        margin: Duration::from_secs(args.fence_margin_seconds),
    };
    let (leader_tx, leadership) = leader::channel(&leader_config, metrics.clone());
    let stop = shutdown.token();
    let release = CancellationToken::new();
    let election = tokio::spawn(leader::run(
        client.clone(),
        leader_config,
        leader_tx,
        metrics.clone(),
        stop.clone(),
        release.clone(),
    ));

    let index = PolicyIndex::default();
    let synced = Arc::new(Notify::new());
    let changed = Arc::new(Notify::new());
    let policy_watch = tokio::spawn(policies::watch(
        client.clone(),
        index.clone(),
        metrics.clone(),
        synced.clone(),
        changed.clone(),
        stop.clone(),
    ));
    let recent = recent::RecentActions::new(changed.clone());
    let scale_health = scale::ScaleHealth::new(changed.clone());
    let status_writer = tokio::spawn(status::run(
        client.clone(),
        index.clone(),
        leadership.clone(),
        metrics.clone(),
        status::StatusSources {
            recent: recent.clone(),
            scale_health: scale_health.clone(),
        },
        changed,
        stop.clone(),
    ));

    // The pipeline and reporter keep running through the drain; they stop when `work_stop` fires.
    let work_stop = CancellationToken::new();
    let (changes_tx, changes_rx) = mpsc::channel(1024);
    let (pipeline, pipeline_task) = pipeline::start(
        metrics.clone(),
        leadership.clone(),
        changes_tx,
        work_stop.clone(),
    );
    let node_policies = node_policies::NodePolicyIndex::default();
    let node_policy_watch = tokio::spawn(node_policies::watch(
        client.clone(),
        node_policies.clone(),
        stop.clone(),
    ));
    let event_reporter = EventReporter {
        controller: "auto-agent".into(),
        instance: Some(args.identity.clone()),
    };
    let ledger = ledger::Ledger::new(
        client.clone(),
        &args.namespace,
        &args.ledger_name,
        leadership.clone(),
    );
    let node_remediator = nodes::NodeRemediator {
        client: eviction_client,
        events: events::EventSink {
            recorder: Recorder::new(client.clone(), event_reporter.clone()),
            leadership: leadership.clone(),
            metrics: metrics.clone(),
        },
        policies: index.clone(),
        node_policies,
        ledger: ledger.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        features: features.clone(),
    };
    let sweeper = tokio::spawn(node_remediator.clone().run_sweeper(stop.clone()));
    let (evidence, bundle_defaults) = evidence_keeper(&args, &registry).await?;
    // Bundles a stopped replica handed off (its spool was on its own volume) join ours first.
    handoff::take_over(
        client.clone(),
        &args.namespace,
        &evidence.spool,
        &metrics.bundle_handoffs,
    )
    .await;
    evidence.refresh_gauges();
    let delivery = tokio::spawn(evidence.clone().deliver(stop.clone()));
    let reporter = Reporter {
        events: events::EventSink {
            recorder: Recorder::new(client.clone(), event_reporter.clone()),
            leadership: leadership.clone(),
            metrics: metrics.clone(),
        },
        policies: index.clone(),
        workloads: Arc::new(WorkloadCache::new(client.clone(), Duration::from_secs(30))),
        metrics: metrics.clone(),
        client: client.clone(),
        ledger: ledger.clone(),
        nodes: node_remediator,
        registry: registry::RegistryClient::new(
            args.plain_http_registries.clone(),
            args.registry_auth_file.clone(),
        )?,
        executor: act::Executor {
            client: client.clone(),
            leadership: leadership.clone(),
            evidence: evidence.clone(),
        },
        bundle_defaults,
        features: features.clone(),
        recent: recent.clone(),
        cluster_budgets: vec![auto_agent_engine::decide::BudgetLimit {
            action: auto_agent_engine::decide::ActionKind::RestartPod,
            scope: auto_agent_engine::decide::BudgetScope::Cluster,
            max: args.cluster_restarts_per_hour,
            window_ms: 3_600_000,
        }],
    };
    let prom = match &args.prometheus_url {
        Some(url) => Some(auto_agent_prom::PromClient::new(
            url,
            Duration::from_secs(args.prometheus_timeout_seconds),
        )?),
        None => None,
    };
    let scaler = scale::Scaler {
        client: client.clone(),
        prom,
        policies: index.clone(),
        ledger: ledger.clone(),
        leadership: leadership.clone(),
        events: events::EventSink {
            recorder: Recorder::new(client.clone(), event_reporter.clone()),
            leadership: leadership.clone(),
            metrics: metrics.clone(),
        },
        metrics: metrics.clone(),
        recent: recent.clone(),
        health: scale_health,
        interval: Duration::from_secs(args.scale_interval_seconds),
        failures_before_degraded: args.scale_failures_before_degraded,
        features,
    };
    let scale_task = tokio::spawn(scaler.run(stop.clone()));
    let report_task = tokio::spawn(reporter.run(changes_rx, work_stop.clone()));

    let ingest = Ingest {
        auth: Arc::new(auth::Authenticator::new(
            client.clone(),
            args.token_audience.clone(),
            sensor_user(&args.sensor_service_account)?,
        )),
        leadership: leadership.clone(),
        pipeline,
        streams: Arc::new(Semaphore::new(args.max_streams)),
        limits: IngestLimits {
            max_message_bytes: args.max_message_bytes,
            rate_per_second: args.stream_rate,
            burst: args.stream_rate * 10.0,
        },
        metrics: metrics.clone(),
        identity: args.identity.clone(),
    };
    let service = SensorIngestServer::new(ingest).max_decoding_message_size(args.max_message_bytes);
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(identity) = tls {
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    tracing::info!(addr = %listener.local_addr()?, advertise = %args.grpc_advertise, "gRPC ingest listening");
    let grpc_stop = stop.clone();
    let grpc = tokio::spawn(
        server
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                grpc_stop.cancelled().await
            }),
    );

    let ready = readiness.clone();
    tokio::spawn(async move {
        synced.notified().await;
        ready.set(true);
        tracing::info!("Policy watch synced; ready");
    });
    tracing::info!(identity = %args.identity, version = auto_agent_shared::VERSION, "Controller started");
    AdminServer::new(readiness, registry)
        .serve(args.admin.admin_addr, shutdown.clone())
        .await?;

    // Drain: the election loop marks this replica non-leader (streams get NotLeader), queued
    // findings are recorded and reported, then the lease is released for the next leader.
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), grpc).await;
    work_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = pipeline_task.await;
        let _ = report_task.await;
    })
    .await;
    release.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    let _ = tokio::join!(
        policy_watch,
        status_writer,
        node_policy_watch,
        sweeper,
        delivery,
        scale_task
    );
    // What the store could not take yet leaves with us unless handed to the cluster.
    handoff::hand_off(
        client,
        &args.namespace,
        &args.lease_name,
        &evidence.spool,
        &metrics.bundle_handoffs,
    )
    .await;
    tracing::info!("Controller stopped");
    Ok(())
}

/// The evidence keeper from the flags: stores, spool, durability, and the default destination.
async fn evidence_keeper(
    args: &Args,
    registry: &prometheus::Registry,
) -> anyhow::Result<(Arc<auto_agent_evidence::Keeper>, bundle::BundleDefaults)> {
    use auto_agent_evidence::{
        Destination, Durability, EvidenceMetrics, Keeper, Spool, Sse, Stores,
    };
    let settings = auto_agent_evidence::S3Settings {
        region: args.s3_region.clone(),
        endpoint_url: args.s3_endpoint_url.clone(),
        force_path_style: args.s3_force_path_style,
    };
    let mut allowed_roots = vec![args.bundle_dir.clone()];
    allowed_roots.extend(args.bundle_allowed_roots.iter().cloned());
    let stores = Stores {
        s3: Some(auto_agent_evidence::store::s3_client(&settings).await),
        allowed_roots,
    };
    let sse = args.s3_sse.as_ref().map(|algorithm| Sse {
        algorithm: algorithm.clone(),
        kms_key_id: args.s3_sse_kms_key_id.clone(),
    });
    let destination = match &args.bundle_s3_bucket {
        Some(bucket) => Destination::S3 {
            bucket: bucket.clone(),
            prefix: args.bundle_s3_prefix.clone(),
            sse: sse.clone(),
        },
        None => Destination::Filesystem {
            root: args.bundle_dir.clone(),
        },
    };
    let durability = if args.bundle_durability == "remote" {
        Durability::Remote
    } else {
        Durability::Local
    };
    let keeper = Keeper::new(
        stores,
        Spool::new(
            &args.spool_dir,
            args.spool_max_bundles,
            args.spool_max_bytes,
        ),
        EvidenceMetrics::register(registry)?,
        durability,
        Duration::from_secs(args.bundle_write_timeout_seconds),
    );
    Ok((
        Arc::new(keeper),
        bundle::BundleDefaults { destination, sse },
    ))
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
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id} has no env name");
        }
    }

    #[test]
    fn sensor_service_account_becomes_a_username() {
        assert_eq!(
            sensor_user("auto-agent/auto-agent-sensor").unwrap(),
            "system:serviceaccount:auto-agent:auto-agent-sensor"
        );
        assert!(sensor_user("nope").is_err());
        assert!(sensor_user("/x").is_err());
    }
}
