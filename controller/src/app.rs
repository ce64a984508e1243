//! The wiring in one place: every stage is built here from the flags and connected by channels and
//! shared indexes; `run` serves until SIGTERM, then drains in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngestServer;
use auto_agent_shared::runtime::{AdminServer, Readiness, Shutdown, metrics as runtime_metrics};
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::act::Executor;
use crate::args::{Args, cluster_budgets, sensor_user};
use crate::cluster::workloads::WorkloadCache;
use crate::escalate::stage::Stage;
use crate::escalate::{Escalations, channels};
use crate::evidence::{bundle, handoff};
use crate::ingest::limits::{NodeStreams, PeerHandshakes};
use crate::ingest::server::{Ingest, IngestLimits};
use crate::ingest::{auth, pipeline};
use crate::platform::events::EventSink;
use crate::platform::features::Features;
use crate::platform::incidents::Incidents;
use crate::platform::leader::{self, LeaderConfig};
use crate::platform::metrics::ControllerMetrics;
use crate::platform::records::Store;
use crate::platform::tls::{self, ReloadingIdentity};
use crate::policies::health::ScaleHealth;
use crate::policies::index::{self as policies, PolicyIndex};
use crate::policies::node_index::{self, NodePolicyIndex};
use crate::policies::recent::RecentActions;
use crate::policies::{node_status, status};
use crate::reconcile::Dispatcher;
use crate::reconcile::ledger::Ledger;
use crate::reconcile::node::NodeReconciler;
use crate::reconcile::outcome::Outcomes;
use crate::reconcile::pod::PodReconciler;
use crate::reconcile::scale::Scaler;

/// Runs one controller replica until SIGTERM, then drains and hands off what it holds.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // One TLS provider for every client in the process (kube, tonic and the registry client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = runtime_metrics::registry()?;
    let metrics = ControllerMetrics::register(&registry)?;
    let features = Features::parse(&args.features)?;
    let allowed = features.allowed_actions();
    let cluster_budgets = cluster_budgets(&args.cluster_budgets)?;
    let mirrors = auto_agent_registry::MirrorAllowlist::parse(&args.allowed_mirror_registries)
        .context("--allowed-mirror-registries")?;
    tracing::info!(registries = %mirrors, "Mirror registries policies may name");
    let timings = leader::Timings::from_seconds(
        args.lease_seconds,
        args.renew_seconds,
        args.fence_margin_seconds,
    )?;
    let config = auto_agent_shared::runtime::kube_config::kube_config(
        args.kubeconfig.as_deref(),
        "auto-agent-controller",
        &args.identity,
    )
    .await?;
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
        (Some(cert), Some(key), false) => {
            Some(ReloadingIdentity::load(cert, key).context("loading the gRPC TLS identity")?)
        }
        _ => bail!(
            "--tls-cert-file and --tls-key-file are required unless --insecure-plaintext is set"
        ),
    };

    let leader_config = LeaderConfig {
        namespace: args.namespace.clone(),
        lease_name: args.lease_name.clone(),
        identity: args.identity.clone(),
        advertise: args.grpc_advertise.clone(),
        ttl: timings.ttl,
        renew_every: timings.renew_every,
        margin: timings.margin,
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
    let node_changed = Arc::new(Notify::new());
    let policy_watch = tokio::spawn(policies::watch(
        client.clone(),
        index.clone(),
        metrics.clone(),
        synced.clone(),
        changed.clone(),
        stop.clone(),
    ));
    let node_policies = NodePolicyIndex::default();
    let node_policy_watch = tokio::spawn(node_index::watch(
        client.clone(),
        node_policies.clone(),
        node_changed.clone(),
        stop.clone(),
    ));
    let recent = RecentActions::new(changed.clone(), node_changed.clone());
    let scale_health = ScaleHealth::new(changed.clone());
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
    let node_status_writer = tokio::spawn(node_status::run(
        client.clone(),
        node_policies.clone(),
        leadership.clone(),
        metrics.clone(),
        recent.clone(),
        node_changed,
        stop.clone(),
    ));

    // The pipeline and the dispatcher keep running through the drain; they stop when `work_stop`
    // fires.
    let work_stop = CancellationToken::new();
    let (changes_tx, changes_rx) = mpsc::channel(1024);
    let incidents = Incidents::new();
    let (pipeline, pipeline_task) = pipeline::start(
        metrics.clone(),
        incidents.clone(),
        leadership.clone(),
        changes_tx,
        work_stop.clone(),
    );
    let event_reporter = EventReporter {
        controller: "auto-agent".into(),
        instance: Some(args.identity.clone()),
    };
    let events = EventSink {
        recorder: Recorder::new(client.clone(), event_reporter),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
    };
    // Escalation: reconcile stages signal without waiting; the stage (leader only) keeps the
    // records in the cluster and delivers to Slack and ticket trackers off the action path.
    let (escalation_tx, escalation_rx) = mpsc::channel(4096);
    let allowed_routes = auto_agent_escalation::allow::Allowlist::parse(
        &args.escalation.escalation_allowed_slack_channels,
        &args.escalation.escalation_allowed_ticket_projects,
    )
    .context("--escalation-allowed-ticket-projects")?;
    let escalations = Escalations::new(escalation_tx, metrics.clone(), allowed_routes);
    let deliverer = channels::deliverer(&args.escalation)?;
    // GitOps proposals use the same forge clients (the installation's tokens) as tickets.
    let forges = crate::gitops::stage::Forges {
        github: deliverer.tickets.github.clone(),
        gitlab: deliverer.tickets.gitlab.clone(),
        gitea: deliverer.tickets.gitea.clone(),
    };
    let escalation_stage = Stage {
        client: client.clone(),
        store: Store::new(
            client.clone(),
            &args.namespace,
            leadership.clone(),
            "escalation",
        ),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        deliverer,
        rules: auto_agent_escalation::record::Rules {
            reopen_window_ms: i64::try_from(args.escalation.escalation_reopen_window_seconds)
                .unwrap_or(86_400)
                * 1000,
            ..auto_agent_escalation::record::Rules::default()
        },
        quiet: Duration::from_secs(args.escalation.escalation_resolve_quiet_seconds),
        max_records: usize::try_from(args.escalation.escalation_max_records).unwrap_or(1000),
        health_every: Duration::from_secs(5),
    };
    let escalation_task = tokio::spawn(escalation_stage.run(escalation_rx, stop.clone()));
    // GitOps: proposals for workloads GitOps manages go to a pull request, off the action path.
    let (gitops_tx, gitops_rx) = mpsc::channel(4096);
    let gitops_defaults = crate::gitops::route::Defaults {
        provider: args
            .gitops
            .gitops_provider
            .as_deref()
            .and_then(crate::gitops::route::Provider::parse),
        project: args.gitops.gitops_repo.clone(),
        base: args.gitops.gitops_branch.clone(),
        file: args.gitops.gitops_values_file.clone(),
        allowed: crate::gitops::route::Defaults::parse_allowed(&args.gitops.gitops_allowed_repos)
            .context("--gitops-allowed-repos")?,
    };
    let proposals = crate::gitops::Proposals::new(gitops_tx, metrics.clone(), gitops_defaults);
    let gitops_stage = crate::gitops::stage::Stage {
        client: client.clone(),
        store: Store::new(
            client.clone(),
            &args.namespace,
            leadership.clone(),
            "gitops",
        ),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        recent: recent.clone(),
        forges,
        check_every: Duration::from_secs(10),
    };
    let gitops_task = tokio::spawn(gitops_stage.run(gitops_rx, stop.clone()));
    let outcomes = Outcomes {
        events: events.clone(),
        metrics: metrics.clone(),
        recent: recent.clone(),
        escalations: escalations.clone(),
        proposals,
        incidents: incidents.clone(),
    };
    let ledger = Ledger::new(
        client.clone(),
        &args.namespace,
        &args.ledger_name,
        leadership.clone(),
        metrics.clone(),
    );
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
    let executor = Arc::new(Executor {
        client: client.clone(),
        eviction_client,
        leadership: leadership.clone(),
        evidence: evidence.clone(),
    });
    let nodes = NodeReconciler {
        client: client.clone(),
        outcomes: outcomes.clone(),
        policies: index.clone(),
        node_policies,
        ledger: ledger.clone(),
        executor: executor.clone(),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        allowed: allowed.clone(),
        swept_all: Arc::default(),
    };
    let sweeper = tokio::spawn(nodes.clone().run_sweeper(stop.clone()));
    let pods = PodReconciler {
        client: client.clone(),
        outcomes: outcomes.clone(),
        policies: index.clone(),
        workloads: Arc::new(WorkloadCache::new(client.clone(), Duration::from_secs(30))),
        metrics: metrics.clone(),
        ledger: ledger.clone(),
        executor: executor.clone(),
        cluster_budgets: cluster_budgets.clone(),
        allowed: allowed.clone(),
        registry: auto_agent_registry::RegistryClient::new(
            args.plain_http_registries.clone(),
            args.registry_auth_file.clone(),
        )?
        .allowing(mirrors),
        bundle_defaults,
    };
    let dispatcher = Dispatcher {
        pods,
        nodes,
        events: events.clone(),
        metrics: metrics.clone(),
        workers: usize::from(args.reconcile_workers),
        escalations,
    };
    let prom = match &args.prometheus_url {
        Some(url) => Some(auto_agent_prom::PromClient::new(
            url,
            Duration::from_secs(args.prometheus_timeout_seconds),
        )?),
        None => None,
    };
    let scaler = Scaler {
        client: client.clone(),
        prom,
        policies: index.clone(),
        ledger,
        leadership: leadership.clone(),
        outcomes,
        executor,
        metrics: metrics.clone(),
        health: scale_health,
        interval: Duration::from_secs(args.scale_interval_seconds),
        failures_before_degraded: args.scale_failures_before_degraded,
        features,
        allowed: allowed.clone(),
        cluster_budgets: cluster_budgets.clone(),
    };
    let scale_task = tokio::spawn(scaler.run(stop.clone()));
    let report_task = tokio::spawn(Arc::new(dispatcher).run(changes_rx, work_stop.clone()));

    let ingest = Ingest {
        auth: Arc::new(auth::Authenticator::new(
            client.clone(),
            args.token_audience.clone(),
            sensor_user(&args.sensor_service_account)?,
            auth::AuthLimits {
                max_reviews: args.token_reviews,
                ..auth::AuthLimits::default()
            },
            metrics.token_reviews.clone(),
        )),
        leadership: leadership.clone(),
        pipeline,
        streams: Arc::new(Semaphore::new(args.max_streams)),
        handshakes: PeerHandshakes::new(args.handshakes_per_peer),
        nodes: NodeStreams::new(args.streams_per_node),
        limits: IngestLimits {
            max_message_bytes: args.max_message_bytes,
            rate_per_second: args.stream_rate,
            burst: args.stream_rate * 10.0,
            recheck_every: Duration::from_secs(args.token_recheck_seconds.max(1)),
        },
        metrics: metrics.clone(),
        identity: args.identity.clone(),
        verifier: crate::ingest::verify::Verifier {
            client: client.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
        },
        last_refusal_log: std::sync::Mutex::new(None),
    };
    let service = SensorIngestServer::new(ingest).max_decoding_message_size(args.max_message_bytes);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service);
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    tracing::info!(addr = %listener.local_addr()?, advertise = %args.grpc_advertise, "gRPC ingest listening");
    let grpc_stop = stop.clone();
    let grpc_stopped = async move { grpc_stop.cancelled().await };
    // With TLS, the server terminates it itself so that a renewed certificate is served without a
    // restart (platform::tls).
    let grpc = match tls {
        Some(identity) => {
            let incoming = tls::incoming(listener, identity.server_config()?, stop.clone());
            tokio::spawn(
                identity
                    .clone()
                    .watch(Duration::from_secs(args.tls_reload_seconds), stop.clone()),
            );
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, grpc_stopped))
        }
        None => tokio::spawn(
            router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), grpc_stopped),
        ),
    };

    let ready = readiness.clone();
    tokio::spawn(async move {
        synced.notified().await;
        ready.set(true);
        tracing::info!("Policy watch synced; ready");
    });
    tracing::info!(identity = %args.identity, version = auto_agent_shared::VERSION, "Controller started");
    let incidents_route = crate::platform::incidents::router(
        incidents,
        leadership.clone(),
        args.identity.clone(),
        cluster_budgets.clone(),
        allowed.clone(),
    );
    AdminServer::new(readiness, registry)
        .with_routes(incidents_route)
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
        node_status_writer,
        node_policy_watch,
        sweeper,
        delivery,
        scale_task,
        escalation_task,
        gitops_task
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
    let allowed_buckets: Vec<String> = args
        .bundle_s3_bucket
        .iter()
        .chain(&args.bundle_allowed_buckets)
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    tracing::info!(buckets = ?allowed_buckets, "S3 buckets policies may send bundles to");
    let stores = Stores {
        s3: Some(auto_agent_evidence::store::s3_client(&settings).await),
        allowed_roots,
        allowed_buckets,
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
