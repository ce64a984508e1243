//! `AutoRemediationPolicy`: which workloads of a namespace the agent may remediate, how, and within
//! which budgets. No policy, no action.

// clippy reads the repeated `type_` keys of separate `printcolumn(...)` groups as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Budget, PolicyStatus};

/// Opts the workloads selected by `targetSelector` in this namespace into auto-remediation.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "autoagent.io",
    version = "v1alpha1",
    kind = "AutoRemediationPolicy",
    namespaced,
    shortname = "arp",
    category = "auto-agent",
    status = "PolicyStatus",
    derive = "PartialEq",
    doc = "Opts workloads of a namespace into auto-remediation and bounds what the agent may do to them.",
    printcolumn(
        name = "Targets",
        type_ = "integer",
        json_path = ".status.matchedTargets",
        description = "Workloads the policy matches"
    ),
    printcolumn(
        name = "DryRun",
        type_ = "boolean",
        json_path = ".spec.dryRun",
        description = "Plans are reported, nothing is changed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Last Action",
        type_ = "string",
        json_path = ".status.lastAction.action"
    ),
    printcolumn(
        name = "Last Outcome",
        type_ = "string",
        json_path = ".status.lastAction.outcome",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AutoRemediationPolicySpec {
    /// Selects the workloads (Deployments, StatefulSets, ...) the policy governs, by the labels of the
    /// workload's pods. An empty selector matches every workload of the namespace.
    pub target_selector: LabelSelector,
    /// Workloads whose pods match this selector are never touched, even if `targetSelector` matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_selector: Option<LabelSelector>,
    /// What the agent may do. Every action is off unless enabled here.
    #[serde(default)]
    pub actions: Actions,
    /// Where incidents are escalated when the agent stops acting or needs a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// Where evidence bundles (previous logs, events, spec, status) are written before any
    /// destructive action. Defaults to the store configured in the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bundle: Option<LogBundle>,
    /// Propose changes as pull requests to a GitOps repository instead of patching live objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ops: Option<GitOps>,
    /// Report the plan (Events, status, logs, metrics) without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Safety limits beyond the cluster-wide defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Per-action budgets; they override the chart's defaults for this policy's targets.
    /// At most one entry per action and scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(b, self.exists_one(c, c.action == b.action && c.scope == b.scope))"
    ).message("budgets: at most one entry per action and scope"))]
    pub budgets: Vec<Budget>,
}

/// The remediations the policy enables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Actions {
    /// Delete crash-looping pods (after saving their evidence) so their controller recreates them.
    #[serde(default)]
    pub restart_stuck_pods: bool,
    /// After OOMKilled, raise the container's memory limit (and request, where set) by this percent
    /// on the owning workload. Unset disables the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub bump_memory_percent: Option<i32>,
    /// Floor and cap of memory bumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bump: Option<MemoryBump>,
    /// After ImagePullBackOff, swap the image's registry for this mirror (checked to have the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_mirror: Option<ImageMirror>,
    /// Whether this policy's pods may be evicted (Eviction API, PDBs honoured) when their node is
    /// under pressure and a NodeRemediationPolicy evicts.
    #[serde(default)]
    pub evict_on_node_pressure: bool,
    /// Scale the workload on Prometheus signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
}

/// Bounds for memory bumps. VPA's rule of thumb: at least +100Mi per bump.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryBump {
    /// The smallest increase of one bump, as a Kubernetes quantity.
    #[serde(default = "default_min_increase")]
    #[x_kube(validation = kube::core::Rule::new("isQuantity(self)")
        .message("memoryBump.minIncrease must be a quantity such as 100Mi"))]
    #[schemars(length(max = 32))]
    pub min_increase: String,
    /// The agent never raises a limit above this quantity; at the cap it escalates instead.
    #[x_kube(validation = kube::core::Rule::new("isQuantity(self)")
        .message("memoryBump.maxLimit must be a quantity such as 4Gi"))]
    #[schemars(length(max = 32))]
    pub max_limit: String,
}

fn default_min_increase() -> String {
    "100Mi".to_owned()
}

/// The registry mirror used after ImagePullBackOff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageMirror {
    /// Registry host (and optional path prefix) that replaces the image's registry, e.g.
    /// `mirror.example.com/dockerhub`. It must be on the installation's allowlist
    /// (`security.allowedMirrorRegistries`); another is refused and not contacted.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([a-z0-9.:-]*[a-z0-9])?(/[a-z0-9._-]+)*$")
    )]
    pub registry: String,
}

/// Scaling on Prometheus signals: up only when CPU is high AND (with gates) another signal agrees;
/// down one replica at a time, only when CPU is low and no gate is active for the whole
/// stabilization window; hold on missing data; never against an HPA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas")
    .message("scale.minReplicas must be less than or equal to scale.maxReplicas")
    .field_path(".minReplicas"))]
#[x_kube(validation = kube::core::Rule::new("self.scaleDownCpuThreshold < self.cpuThreshold")
    .message("scale.scaleDownCpuThreshold must be below scale.cpuThreshold")
    .field_path(".scaleDownCpuThreshold"))]
pub struct Scale {
    /// Turns scaling on.
    #[serde(default)]
    pub enabled: bool,
    /// Never scale below this many replicas.
    #[schemars(range(min = 0, max = 10000))]
    pub min_replicas: i32,
    /// Never scale above this many replicas.
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,
    /// Scale up when CPU usage / CPU requests is above this ratio (and, with gates, one agrees).
    #[serde(default = "default_cpu_threshold")]
    #[schemars(range(min = 0.01, max = 10.0))]
    pub cpu_threshold: f64,
    /// Scale down when CPU usage / CPU requests is below this ratio.
    #[serde(default = "default_scale_down_cpu_threshold")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub scale_down_cpu_threshold: f64,
    /// PromQL for the CPU ratio, replacing the default template. `$namespace`, `$workload` and
    /// `$pods` (a regex of the workload's own pods) are substituted; every selector is confined to
    /// the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub cpu_query: Option<String>,
    /// Extra signals: with any configured, one must be active for a scale-up, and none may be
    /// active (or failing) for a scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<ScaleGates>,
    /// z-score anomaly detection on a metric: an anomaly is reported as an incident and vetoes
    /// scale-down while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<ScaleAnomaly>,
    /// Replicas added by one scale-up: the larger of this count and `stepPercent` of the current.
    #[serde(default = "default_step_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub step_replicas: i32,
    /// Percent of the current replicas added by one scale-up (see `stepReplicas`).
    #[serde(default = "default_step_percent")]
    #[schemars(range(min = 0, max = 1000))]
    pub step_percent: i32,
    /// Seconds after a scale-up before another scale-up.
    #[serde(default = "default_cooldown_up")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_up_seconds: i32,
    /// Seconds after any scaling before a scale-down.
    #[serde(default = "default_cooldown_down")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_down_seconds: i32,
    /// Seconds the quiet signals must hold before a scale-down (HPA's default is 300).
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub stabilization_window_seconds: i32,
}

fn default_cpu_threshold() -> f64 {
    0.80
}
fn default_scale_down_cpu_threshold() -> f64 {
    0.30
}
fn default_step_replicas() -> i32 {
    1
}
fn default_step_percent() -> i32 {
    50
}
fn default_cooldown_up() -> i32 {
    180
}
fn default_cooldown_down() -> i32 {
    900
}
fn default_stabilization() -> i32 {
    300
}

/// Signals besides CPU. A scale-up needs high CPU AND at least one active gate (never CPU alone
/// when gates are configured); a scale-down needs every gate inactive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleGates {
    /// Queue depth, e.g. `sum(queue_messages_ready{queue="jobs"})`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<ScaleGate>,
    /// Error rate, e.g. the ratio of 5xx responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ScaleGate>,
    /// p95 latency, e.g. `histogram_quantile(0.95, ...)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency: Option<ScaleGate>,
}

/// One PromQL gate: active when the query returns a non-empty result, or, with a threshold, a value
/// above it. An empty result is not active; a failed query is never active and holds scale-down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleGate {
    /// The PromQL expression (`$namespace`, `$workload` and `$pods` are substituted; every selector
    /// is confined to the policy's namespace).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = kube::core::Rule::new("self.trim() != ''")
        .message("a scale gate needs a non-blank query"))]
    pub query: String,
    /// The gate is active when the query's value is above this threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// z-score anomaly detection: `z = (x - mean) / stddev` of the query's range over the window, the
/// newest point against the ones before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleAnomaly {
    /// PromQL returning one series (`$namespace`, `$workload` and `$pods` are substituted; every
    /// selector is confined to the policy's namespace).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = kube::core::Rule::new("self.trim() != ''")
        .message("scale.anomaly.query must not be blank"))]
    pub query: String,
    /// How far back the baseline reaches.
    #[serde(default = "default_anomaly_window")]
    #[schemars(range(min = 60, max = 604800))]
    pub window_seconds: i32,
    /// Resolution of the range query.
    #[serde(default = "default_anomaly_step")]
    #[schemars(range(min = 1, max = 3600))]
    pub step_seconds: i32,
    /// |z| above this is an anomaly.
    #[serde(default = "default_z_threshold")]
    #[schemars(range(min = 0.5, max = 100.0))]
    pub z_threshold: f64,
}

fn default_anomaly_window() -> i32 {
    3600
}
fn default_anomaly_step() -> i32 {
    60
}
fn default_z_threshold() -> f64 {
    3.0
}

/// Escalation targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// Slack channel name (`#prod-incidents`) or ID (`C0123456789`) for incident threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{8,})$"))]
    pub slack_channel: Option<String>,
    /// Ticket system for incidents that need a human; one ticket per incident key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Ticket>,
    /// Also escalate an incident still open this many seconds after the agent acted on it
    /// (unset: only refusals that need a human and failed actions escalate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 604800))]
    pub after_seconds: Option<i32>,
}

/// Where tickets are filed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub provider: TicketProvider,
    /// Jira project key (`OPS`), GitHub or Gitea repository (`owner/name`), GitLab project path
    /// (`group/name`) or numeric id. The installation holds the credentials (chart `tickets.*`).
    #[schemars(length(min = 1, max = 200))]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"))]
    pub project: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TicketProvider {
    Jira,
    GitHub,
    GitLab,
    Gitea,
}

/// Evidence bundle destination: exactly one of `s3` and `filesystem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.s3) != has(self.filesystem)")
    .message("logBundle needs exactly one of s3 and filesystem"))]
pub struct LogBundle {
    /// An S3 (or S3-compatible) bucket; credentials come from the controller's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A mounted filesystem such as EFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemDestination>,
    /// Lines of the previous container's log to keep.
    #[serde(default = "default_tail_lines")]
    #[schemars(range(min = 1, max = 5000))]
    pub tail_lines: i32,
}

fn default_tail_lines() -> i32 {
    50
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')")
    .message("s3.kmsKeyId needs serverSideEncryption aws:kms")
    .field_path(".kmsKeyId"))]
pub struct S3Destination {
    /// Bucket name (S3 naming rules). It must be the installation's default bucket or on its
    /// allowlist (`security.allowedBuckets`); another is refused and nothing is sent there.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Key prefix, without leading slash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512), regex(pattern = r"^([^/].*)?$"))]
    pub prefix: String,
    /// Server-side encryption of every bundle object; the controller's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// KMS key for `aws:kms` (id, alias or ARN); the bucket's default key when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

/// S3 server-side encryption algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ServerSideEncryption {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl ServerSideEncryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256 => "AES256",
            Self::AwsKms => "aws:kms",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemDestination {
    /// Absolute path inside the controller's volume; bundles go below it.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('..')")
        .message("filesystem.path must not contain '..'"))]
    pub path: String,
}

/// GitOps mode: changes become pull requests against the repository that owns the workload.
/// Every field left out takes the installation's default (the chart's `gitops.*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOps {
    /// Propose pull requests instead of patching live objects, also for workloads without Argo CD
    /// or Flux markers (those always get proposals).
    #[serde(default)]
    pub enabled: bool,
    /// Hosting provider of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<GitProvider>,
    /// Repository as `owner/name` (GitHub, Gitea) or `group/project` (GitLab); the installation
    /// must allow it (`gitops.allowedRepos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub repo: Option<String>,
    /// Base branch of the pull requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// Path inside the repository of the file the workload comes from: a Helm values file, a
    /// manifest or kustomize patch holding the workload, or a kustomization.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("!self.startsWith('/') && !self.contains('..')")
        .message("gitOps.valuesFile must be a relative path inside the repository"))]
    pub values_file: Option<String>,
    /// Key paths in the file for each thing the agent may change, replacing the documented
    /// defaults; `{container}` and `{workload}` stand for the names.
    #[serde(default)]
    pub value_paths: ValuePaths,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum GitProvider {
    GitHub,
    GitLab,
    Gitea,
    /// A plain git remote: no pull requests (refused with a reason).
    Git,
}

/// Key paths (`resources.limits.memory`, `containers[name=app].image`) in the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuePaths {
    /// Where the memory limit lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub memory_limit: Option<String>,
    /// Where the memory request lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub memory_request: Option<String>,
    /// Where the replica count lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub replicas: Option<String>,
    /// Where the image (or image repository) lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

/// Safety limits for this policy's targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// Destructive actions (delete, evict) need at least this many ready replicas in the workload
    /// (VPA's updater uses 2). 0 or 1 allows them on single-replica workloads.
    #[serde(default = "default_min_ready_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_ready_replicas: i32,
    /// Seconds after an action before the same incident may be acted on again.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_seconds: i32,
    /// The same action on the same target this many times without recovery stops and escalates.
    #[serde(default = "default_max_repeats")]
    #[schemars(range(min = 1, max = 100))]
    pub max_repeats: i32,
    /// If more than this percent of a workload's pods are unhealthy at once, suspect the signal:
    /// no disruptive action, report instead.
    #[serde(default = "default_max_unhealthy_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unhealthy_percent: i32,
    /// Disruptive pod actions on a workload of 2 or more replicas wait until the pod's failure has
    /// been known this long, so the disruption breaker counts every pod failing in the same storm
    /// before the first one is touched. 0 acts at once.
    #[serde(default = "default_storm_window")]
    #[schemars(range(min = 0, max = 60))]
    pub storm_window_seconds: i32,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            min_ready_replicas: default_min_ready_replicas(),
            cooldown_seconds: default_cooldown(),
            max_repeats: default_max_repeats(),
            max_unhealthy_percent: default_max_unhealthy_percent(),
            storm_window_seconds: default_storm_window(),
        }
    }
}

fn default_min_ready_replicas() -> i32 {
    2
}
fn default_cooldown() -> i32 {
    300
}
fn default_max_repeats() -> i32 {
    3
}
fn default_max_unhealthy_percent() -> i32 {
    50
}

fn default_storm_window() -> i32 {
    1
}
