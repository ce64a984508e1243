//! `NodeRemediationPolicy`: the cluster-scoped companion that governs node actions (cordon, evict),
//! shaped like medik8s NodeHealthCheck.

// clippy reads the repeated `type_` keys of separate `printcolumn(...)` groups as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Budget, PolicyStatus};

/// Opts the nodes selected by `nodeSelector` into pressure remediation.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "autoagent.io",
    version = "v1alpha1",
    kind = "NodeRemediationPolicy",
    shortname = "nrp",
    category = "auto-agent",
    status = "PolicyStatus",
    derive = "PartialEq",
    doc = "Opts nodes into pressure remediation (cordon, evict) within disruption limits.",
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.matchedTargets",
        description = "Nodes the policy matches"
    ),
    printcolumn(
        name = "Max Unavailable",
        type_ = "string",
        json_path = ".spec.maxUnavailableNodes"
    ),
    printcolumn(
        name = "Cordoned",
        type_ = "integer",
        json_path = ".status.cordonedNodes",
        description = "Nodes the agent cordoned under this policy now"
    ),
    printcolumn(name = "DryRun", type_ = "boolean", json_path = ".spec.dryRun"),
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
        json_path = ".status.lastAction.outcome"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.cordon || !self.evict")
    .message("evict requires cordon: evicting from a schedulable node would only reschedule there")
    .field_path(".evict"))]
pub struct NodeRemediationPolicySpec {
    /// Selects the nodes this policy governs. An empty selector matches every node.
    pub node_selector: LabelSelector,
    /// The node conditions to act on.
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(validation = kube::core::Rule::new("self.all(c, self.exists_one(d, d == c))")
        .message("conditions must not repeat"))]
    pub conditions: Vec<NodeConditionType>,
    /// Mark an affected node unschedulable.
    #[serde(default = "default_true")]
    pub cordon: bool,
    /// Evict pods from an affected node through the Eviction API (PodDisruptionBudgets honoured;
    /// only pods whose AutoRemediationPolicy sets `evictOnNodePressure`).
    #[serde(default)]
    pub evict: bool,
    /// Seconds an eviction pass may take before the agent stops and reports.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 30, max = 86400))]
    pub drain_timeout_seconds: i32,
    /// Never have more than this many nodes cordoned by the agent at once: a count (`1`) or a
    /// percent of the selected nodes (`10%`).
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = kube::core::Rule::new(
        "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')"
    ).message("maxUnavailableNodes must be a non-negative count or a percent from 0% to 100%"))]
    pub max_unavailable_nodes: IntOrString,
    /// Uncordon a node the agent cordoned once its pressure has been clear for this many seconds.
    /// 0 leaves it cordoned.
    #[serde(default = "default_uncordon_after")]
    #[schemars(range(min = 0, max = 86400))]
    pub uncordon_after_seconds: i32,
    /// If more than this percent of the selected nodes are under pressure at once, suspect the
    /// signal and stop disruptive actions (kube-controller-manager uses 55%).
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold_percent: i32,
    /// Report the plan without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Where node incidents that need a human go (Slack thread, ticket); as on
    /// AutoRemediationPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<crate::crd::policy::Escalation>,
    /// Per-action budgets (`CordonNode`, `EvictPod`, `UncordonNode`). At most one entry per action
    /// and scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(b, self.exists_one(c, c.action == b.action && c.scope == b.scope))"
    ).message("budgets: at most one entry per action and scope"))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(b, b.action in ['CordonNode', 'UncordonNode', 'EvictPod'])"
    ).message("node budgets may only limit CordonNode, UncordonNode and EvictPod"))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(b, !has(b.scope) || b.scope != 'Namespace')"
    ).message("node budgets count per node (Target) or per policy: nodes belong to no namespace"))]
    pub budgets: Vec<Budget>,
}

/// Node conditions the agent can remediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NodeConditionType {
    MemoryPressure,
    DiskPressure,
    #[serde(rename = "PIDPressure")]
    PidPressure,
    /// `Ready` is `False` or `Unknown`.
    NotReady,
}

fn default_true() -> bool {
    true
}
fn default_drain_timeout() -> i32 {
    600
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}
fn default_uncordon_after() -> i32 {
    300
}
fn default_unhealthy_threshold() -> i32 {
    55
}
