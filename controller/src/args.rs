//! The controller's process flags, each with an environment variable (the chart sets them). Behaviour
//! lives in the policies; flags say where things are and what this installation allows.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use auto_agent_engine::decide::{ActionKind, BudgetLimit, BudgetScope};
use auto_agent_shared::runtime::{AdminArgs, LogArgs};
use clap::Parser;

/// The cluster-wide budgets when none are configured (the chart's defaults too).
pub const DEFAULT_CLUSTER_BUDGETS: &str = "RestartPod=50/3600,BumpMemory=20/3600,MirrorImage=20/3600,EvictPod=50/3600,CordonNode=3/3600,ScaleUp=100/3600,ScaleDown=100/3600";

/// Parses `--cluster-budgets` entries (`Action=max/windowSeconds`); empty entries are skipped.
pub fn cluster_budgets(entries: &[String]) -> anyhow::Result<Vec<BudgetLimit>> {
    let mut out: Vec<BudgetLimit> = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let parse = || -> anyhow::Result<BudgetLimit> {
            let (action, rest) = entry
                .split_once('=')
                .context("expected Action=max/windowSeconds")?;
            let (max, window) = rest
                .split_once('/')
                .context("expected Action=max/windowSeconds")?;
            let action = ActionKind::ALL
                .iter()
                .copied()
                .find(|a| a.as_str() == action.trim())
                .with_context(|| format!("unknown action {action:?}"))?;
            let max: u32 = max.trim().parse().context("max is not a whole number")?;
            let window: i64 = window
                .trim()
                .parse()
                .context("windowSeconds is not a whole number")?;
            if !(60..=604_800).contains(&window) {
                bail!("windowSeconds must be within 60..604800");
            }
            Ok(BudgetLimit {
                action,
                scope: BudgetScope::Cluster,
                max,
                window_ms: window * 1000,
            })
        };
        let limit = parse().with_context(|| format!("--cluster-budgets entry {entry:?}"))?;
        if out.iter().any(|l| l.action == limit.action) {
            bail!("--cluster-budgets names {} twice", limit.action.as_str());
        }
        out.push(limit);
    }
    Ok(out)
}

/// Ingests sensor findings, decides within AutoRemediationPolicy rules and safety limits, acts and
/// reports.
#[derive(Debug, Parser)]
#[command(name = "auto-agent-controller", version = auto_agent_shared::VERSION)]
pub struct Args {
    /// This replica's identity in leader election (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "auto-agent-controller")]
    pub identity: String,

    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "auto-agent")]
    pub namespace: String,

    /// Name of the Lease used for leader election.
    #[arg(
        long,
        env = "AUTO_AGENT_LEASE_NAME",
        default_value = "auto-agent-controller"
    )]
    pub lease_name: String,

    /// Lease duration in seconds (at most 3600, more than renew + fence margin); failover takes at
    /// most this plus one renew period.
    #[arg(long, env = "AUTO_AGENT_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Seconds between lease renewals (1 to 3600).
    #[arg(long, env = "AUTO_AGENT_RENEW_SECONDS", default_value_t = 5)]
    pub renew_seconds: u64,

    /// Writes stop this many seconds before the lease would run out (0 to 3600).
    #[arg(long, env = "AUTO_AGENT_FENCE_MARGIN_SECONDS", default_value_t = 5)]
    pub fence_margin_seconds: u64,

    /// Address the gRPC ingest listens on.
    #[arg(long, env = "AUTO_AGENT_GRPC_ADDR", default_value = "0.0.0.0:9443")]
    pub grpc_addr: SocketAddr,

    /// host:port sensors can reach this replica at, published on the Lease while it leads
    /// (in a pod: $(POD_IP):9443).
    #[arg(long, env = "AUTO_AGENT_GRPC_ADVERTISE")]
    pub grpc_advertise: String,

    /// TLS certificate (PEM) of the gRPC ingest.
    #[arg(long, env = "AUTO_AGENT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// TLS private key (PEM) of the gRPC ingest.
    #[arg(long, env = "AUTO_AGENT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// How often the TLS certificate and key files are checked for a renewal (new streams get the
    /// new certificate; no restart).
    #[arg(long, env = "AUTO_AGENT_TLS_RELOAD_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_reload_seconds: u64,

    /// Development only: serve the gRPC ingest without TLS.
    #[arg(long, env = "AUTO_AGENT_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// The sensor ServiceAccount as `namespace/name`; only its tokens may stream.
    #[arg(
        long,
        env = "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT",
        default_value = "auto-agent/auto-agent-sensor"
    )]
    pub sensor_service_account: String,

    /// Audience sensor tokens must carry.
    #[arg(long, env = "AUTO_AGENT_TOKEN_AUDIENCE", default_value = auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE)]
    pub token_audience: String,

    /// Namespaces whose incidents are reconciled at once (each namespace one change at a time, so
    /// one whose mirror or API calls hang cannot hold up another).
    #[arg(long, env = "AUTO_AGENT_RECONCILE_WORKERS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub reconcile_workers: u16,

    /// Sensor streams open at once, at most.
    #[arg(long, env = "AUTO_AGENT_MAX_STREAMS", default_value_t = 5000)]
    pub max_streams: usize,

    /// Largest sensor message accepted, in bytes.
    #[arg(long, env = "AUTO_AGENT_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,

    /// Findings per second one stream may send, sustained (bursts up to 10x).
    #[arg(long, env = "AUTO_AGENT_STREAM_RATE", default_value_t = 200.0)]
    pub stream_rate: f64,

    /// Sensor streams one node may hold at once; a newer stream closes the oldest.
    #[arg(long, env = "AUTO_AGENT_STREAMS_PER_NODE", default_value_t = 2)]
    pub streams_per_node: usize,

    /// Unauthenticated stream handshakes in progress from one peer IP, at most.
    #[arg(long, env = "AUTO_AGENT_HANDSHAKES_PER_PEER", default_value_t = 32)]
    pub handshakes_per_peer: usize,

    /// TokenReviews in flight at once, at most (tokens that fail the local checks cost none).
    #[arg(long, env = "AUTO_AGENT_TOKEN_REVIEWS", default_value_t = 8)]
    pub token_reviews: usize,

    /// Seconds between re-reviews of an open stream's token (a revoked token closes its stream
    /// within this; an expired one closes it at once).
    #[arg(long, env = "AUTO_AGENT_TOKEN_RECHECK_SECONDS", default_value_t = 300)]
    pub token_recheck_seconds: u64,

    /// Name of the ConfigMap (in --namespace) that keeps the action ledger: budgets, cooldowns and
    /// loop state that survive leader failover.
    #[arg(
        long,
        env = "AUTO_AGENT_LEDGER_NAME",
        default_value = "auto-agent-ledger"
    )]
    pub ledger_name: String,

    /// Directory of the default evidence store when no S3 bucket is set (an EFS or other mounted
    /// volume); also an allowed root for policies' logBundle.filesystem.path.
    #[arg(
        long,
        env = "AUTO_AGENT_BUNDLE_DIR",
        default_value = "/var/lib/auto-agent/bundles"
    )]
    pub bundle_dir: PathBuf,

    /// Directories a policy's logBundle.filesystem.path may lie below (comma-separated); the
    /// bundle directory is always allowed.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_ALLOWED_ROOTS", value_delimiter = ',')]
    pub bundle_allowed_roots: Vec<PathBuf>,

    /// S3 buckets a policy's logBundle.s3.bucket may name (comma-separated), besides
    /// --bundle-s3-bucket, which is always allowed. A bundle for any other bucket is neither
    /// written nor spooled, and the restart waiting for it is refused with the reason.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_ALLOWED_BUCKETS", value_delimiter = ',')]
    pub bundle_allowed_buckets: Vec<String>,

    /// Default S3 bucket for bundles (instead of --bundle-dir) when a policy names no logBundle.
    /// Credentials come from the SDK's default chain (environment, IRSA web identity, profile,
    /// container or instance metadata), never from flags.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_S3_BUCKET")]
    pub bundle_s3_bucket: Option<String>,

    /// Key prefix for the default S3 bucket.
    #[arg(long, env = "AUTO_AGENT_BUNDLE_S3_PREFIX", default_value = "")]
    pub bundle_s3_prefix: String,

    /// S3 region; when unset the SDK's chain decides (AWS_REGION, profile, instance metadata).
    #[arg(long, env = "AUTO_AGENT_S3_REGION")]
    pub s3_region: Option<String>,

    /// Endpoint of an S3-compatible store (MinIO, Ceph, s3s); unset for AWS S3.
    #[arg(long, env = "AUTO_AGENT_S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,

    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible stores need.
    #[arg(long, env = "AUTO_AGENT_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,

    /// Default server-side encryption of bundle objects: AES256 or aws:kms.
    #[arg(long, env = "AUTO_AGENT_S3_SSE", value_parser = ["AES256", "aws:kms"])]
    pub s3_sse: Option<String>,

    /// KMS key for --s3-sse aws:kms (the bucket's default key when unset).
    #[arg(long, env = "AUTO_AGENT_S3_SSE_KMS_KEY_ID", requires = "s3_sse")]
    pub s3_sse_kms_key_id: Option<String>,

    /// Local spool for bundles whose store is unreachable (the controller's own volume).
    #[arg(
        long,
        env = "AUTO_AGENT_SPOOL_DIR",
        default_value = "/var/lib/auto-agent/spool"
    )]
    pub spool_dir: PathBuf,

    /// Bundles the spool holds at most; when full, a restart whose bundle cannot be saved is
    /// refused (the pod keeps its evidence).
    #[arg(long, env = "AUTO_AGENT_SPOOL_MAX_BUNDLES", default_value_t = 1000)]
    pub spool_max_bundles: usize,

    /// Bytes the spool holds at most.
    #[arg(long, env = "AUTO_AGENT_SPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spool_max_bytes: u64,

    /// What a restart waits for: `local` (the bundle is in its store or the local spool) or
    /// `remote` (the bundle is in its store; otherwise the restart is refused and retried on the
    /// next finding).
    #[arg(long, env = "AUTO_AGENT_BUNDLE_DURABILITY", default_value = "local", value_parser = ["local", "remote"])]
    pub bundle_durability: String,

    /// Seconds one direct bundle write may take before the bundle is spooled instead.
    #[arg(
        long,
        env = "AUTO_AGENT_BUNDLE_WRITE_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub bundle_write_timeout_seconds: u64,

    /// Cluster-wide budgets, one per action: `Action=max/windowSeconds`, comma-separated (the chart
    /// renders `budgets.cluster`). Actions: RestartPod, BumpMemory, MirrorImage, EvictPod,
    /// CordonNode, UncordonNode, ScaleUp, ScaleDown. An action left out has no cluster-wide budget
    /// (policy budgets and their defaults still apply).
    #[arg(
        long,
        env = "AUTO_AGENT_CLUSTER_BUDGETS",
        value_delimiter = ',',
        default_value = DEFAULT_CLUSTER_BUDGETS
    )]
    pub cluster_budgets: Vec<String>,

    /// Remediation features this installation allows (comma-separated: restart, memoryBump,
    /// mirrorImage, nodeRemediation, scaling); the chart sets it from `features.*` with the RBAC.
    /// A disabled feature's actions are refused as FeatureDisabled.
    #[arg(
        long,
        env = "AUTO_AGENT_FEATURES",
        value_delimiter = ',',
        default_value = "restart,memoryBump,mirrorImage,nodeRemediation,scaling"
    )]
    pub features: Vec<String>,

    /// Prometheus base URL for policies with scale.enabled (e.g. http://prometheus:9090); without
    /// it such policies show Degraded/PrometheusNotConfigured and nothing scales.
    #[arg(long, env = "AUTO_AGENT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// Seconds one Prometheus query may take.
    #[arg(
        long,
        env = "AUTO_AGENT_PROMETHEUS_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub prometheus_timeout_seconds: u64,

    /// Seconds between scaling evaluations.
    #[arg(long, env = "AUTO_AGENT_SCALE_INTERVAL_SECONDS", default_value_t = 30)]
    pub scale_interval_seconds: u64,

    /// Evaluations in a row with failed queries before a scaling policy shows Degraded.
    #[arg(
        long,
        env = "AUTO_AGENT_SCALE_FAILURES_BEFORE_DEGRADED",
        default_value_t = 3
    )]
    pub scale_failures_before_degraded: u32,

    /// Registries (host:port) spoken to over plain HTTP for mirror checks, e.g. a local mirror.
    #[arg(long, env = "AUTO_AGENT_PLAIN_HTTP_REGISTRIES", value_delimiter = ',')]
    pub plain_http_registries: Vec<String>,

    /// Mirror registries a policy's actions.imageMirror.registry may name (comma-separated
    /// `host[:port]`, or `host[:port]/path` for repositories below that path). A registry's token
    /// service on another host (Docker Hub's auth.docker.io) must be listed too. None listed: no
    /// mirror is contacted, and image swaps are refused with the reason.
    #[arg(
        long,
        env = "AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES",
        value_delimiter = ','
    )]
    pub allowed_mirror_registries: Vec<String>,

    /// Docker config JSON with mirror registry logins (`{"auths": {"host": {"auth": ...}}}`, the
    /// `.dockerconfigjson` of a Secret); read on every mirror check. Without it, checks are anonymous
    /// (public registries' anonymous tokens still work).
    #[arg(long, env = "AUTO_AGENT_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,

    #[command(flatten)]
    pub escalation: EscalationArgs,

    #[command(flatten)]
    pub gitops: GitOpsArgs,

    /// Kubeconfig file; in a pod the in-cluster configuration is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The Kubernetes username of the sensor ServiceAccount `namespace/name`.
pub fn sensor_user(sa: &str) -> anyhow::Result<String> {
    match sa.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok(format!("system:serviceaccount:{ns}:{name}"))
        }
        _ => bail!("--sensor-service-account must be namespace/name, got {sa:?}"),
    }
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

    #[test]
    fn cluster_budgets_parse_or_name_the_bad_entry() {
        let defaults = cluster_budgets(
            &DEFAULT_CLUSTER_BUDGETS
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(defaults.len(), 7);
        assert!(defaults.iter().all(|b| b.scope == BudgetScope::Cluster));
        let restart = defaults
            .iter()
            .find(|b| b.action == ActionKind::RestartPod)
            .unwrap();
        assert_eq!((restart.max, restart.window_ms), (50, 3_600_000));
        assert!(cluster_budgets(&[String::new()]).unwrap().is_empty());
        for (bad, says) in [
            ("Restart=5/3600", "unknown action"),
            ("RestartPod=5", "expected"),
            ("RestartPod=x/3600", "max"),
            ("RestartPod=5/10", "60..604800"),
        ] {
            let err = format!("{:#}", cluster_budgets(&[bad.to_owned()]).unwrap_err());
            assert!(err.contains(bad) && err.contains(says), "{bad}: {err}");
        }
        let twice = cluster_budgets(&["EvictPod=1/600".into(), "EvictPod=2/600".into()]);
        assert!(format!("{:#}", twice.unwrap_err()).contains("twice"));
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

/// Where escalations go and how. Credentials are never flags: they come from the environment
/// (`AUTO_AGENT_SLACK_WEBHOOK_URL`, `AUTO_AGENT_SLACK_BOT_TOKEN`, `AUTO_AGENT_LLM_API_KEY`,
/// `AUTO_AGENT_GITHUB_TOKEN`, `AUTO_AGENT_GITLAB_TOKEN`, `AUTO_AGENT_GITEA_TOKEN`,
/// `AUTO_AGENT_JIRA_EMAIL`, `AUTO_AGENT_JIRA_API_TOKEN`), which the chart fills from Secrets.
#[derive(Clone, Debug, clap::Args)]
pub struct EscalationArgs {
    /// Slack Web API base (chat.postMessage, chat.update) used with a bot token.
    #[arg(
        long,
        env = "AUTO_AGENT_SLACK_API_URL",
        default_value = "https://slack.com/api"
    )]
    pub slack_api_url: String,

    /// OpenAI-compatible endpoint for incident summaries (`{base}/v1/chat/completions`); without
    /// it summaries come from a template.
    #[arg(long, env = "AUTO_AGENT_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,

    /// The model to ask.
    #[arg(long, env = "AUTO_AGENT_LLM_MODEL", default_value = "")]
    pub llm_model: String,

    /// Tokens a summary may take.
    #[arg(long, env = "AUTO_AGENT_LLM_MAX_TOKENS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub llm_max_tokens: u32,

    /// The request field that bounds them: `max_tokens` (llama.cpp, Ollama, vLLM) or
    /// `max_completion_tokens` (OpenAI's newer models).
    #[arg(long, env = "AUTO_AGENT_LLM_MAX_TOKENS_FIELD", default_value = "max_tokens", value_parser = ["max_tokens", "max_completion_tokens"])]
    pub llm_max_tokens_field: String,

    /// Seconds a summary may take before the template is used instead.
    #[arg(long, env = "AUTO_AGENT_LLM_TIMEOUT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub llm_timeout_seconds: u64,

    /// GitHub REST API base for tickets (GitHub Enterprise: `https://host/api/v3`).
    #[arg(
        long,
        env = "AUTO_AGENT_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// GitLab REST v4 base for tickets.
    #[arg(
        long,
        env = "AUTO_AGENT_GITLAB_API_URL",
        default_value = "https://gitlab.com/api/v4"
    )]
    pub gitlab_api_url: String,

    /// Gitea API base for tickets (`https://host/api/v1`).
    #[arg(long, env = "AUTO_AGENT_GITEA_API_URL")]
    pub gitea_api_url: Option<String>,

    /// Jira base URL (`https://your-domain.atlassian.net` or a Data Center server).
    #[arg(long, env = "AUTO_AGENT_JIRA_URL")]
    pub jira_url: Option<String>,

    /// `cloud` (REST v3, ADF, Basic email:token) or `data-center` (REST v2, Bearer PAT).
    #[arg(long, env = "AUTO_AGENT_JIRA_FLAVOR", default_value = "cloud", value_parser = ["cloud", "data-center"])]
    pub jira_flavor: String,

    /// Issue type of new Jira tickets.
    #[arg(long, env = "AUTO_AGENT_JIRA_ISSUE_TYPE", default_value = "Task")]
    pub jira_issue_type: String,

    /// A recurrence this soon after resolving reuses the incident's Slack thread and reopens its
    /// ticket; later, a new thread and ticket.
    #[arg(long, env = "AUTO_AGENT_ESCALATION_REOPEN_WINDOW_SECONDS", default_value_t = 86400, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub escalation_reopen_window_seconds: u64,

    /// Escalation records kept at most (one ConfigMap each); resolved ones make room first.
    #[arg(long, env = "AUTO_AGENT_ESCALATION_MAX_RECORDS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub escalation_max_records: u64,

    /// Slack channels policies may route escalations to (comma-separated `#name`, name or ID;
    /// `*` for any). None listed: no Slack route is followed.
    #[arg(
        long,
        env = "AUTO_AGENT_ESCALATION_ALLOWED_SLACK_CHANNELS",
        value_delimiter = ','
    )]
    pub escalation_allowed_slack_channels: Vec<String>,

    /// Ticket projects policies may route escalations to (comma-separated `provider:project`,
    /// e.g. `github:acme/ops`, `jira:OPS`, `gitlab:*`; `*` for any). None listed: no ticket is
    /// filed.
    #[arg(
        long,
        env = "AUTO_AGENT_ESCALATION_ALLOWED_TICKET_PROJECTS",
        value_delimiter = ','
    )]
    pub escalation_allowed_ticket_projects: Vec<String>,

    /// An escalated pod incident counts as resolved after this long without a failure, once its
    /// workload has all replicas ready.
    #[arg(long, env = "AUTO_AGENT_ESCALATION_RESOLVE_QUIET_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub escalation_resolve_quiet_seconds: u64,
}

/// GitOps proposals: the installation's default repository, base branch and file (a policy's
/// `gitOps` overrides each), and the other repositories policies may name. The forges' API URLs
/// and tokens are the escalation ones (`--github-api-url`, `AUTO_AGENT_GITHUB_TOKEN`, ...).
#[derive(Clone, Debug, clap::Args)]
pub struct GitOpsArgs {
    /// Forge of the default repository: github, gitlab or gitea.
    #[arg(long, env = "AUTO_AGENT_GITOPS_PROVIDER", value_parser = ["github", "gitlab", "gitea"])]
    pub gitops_provider: Option<String>,

    /// The default repository (`owner/name`, GitLab `group/project`).
    #[arg(long, env = "AUTO_AGENT_GITOPS_REPO")]
    pub gitops_repo: Option<String>,

    /// The default base branch of the pull requests.
    #[arg(long, env = "AUTO_AGENT_GITOPS_BRANCH", default_value = "main")]
    pub gitops_branch: String,

    /// The default file inside the repository (Helm values, manifests or kustomization.yaml).
    #[arg(long, env = "AUTO_AGENT_GITOPS_VALUES_FILE")]
    pub gitops_values_file: Option<String>,

    /// Other repositories policies may propose into (comma-separated `provider:project`,
    /// `provider:*`). The default repository is always allowed; none listed: only it.
    #[arg(long, env = "AUTO_AGENT_GITOPS_ALLOWED_REPOS", value_delimiter = ',')]
    pub gitops_allowed_repos: Vec<String>,
}
