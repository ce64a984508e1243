//! Pieces shared by both policy kinds: budgets, status conditions, recent actions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The kinds of action the agent can take. Budgets, metrics and Events use these names.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum ActionType {
    /// Delete a crash-looping pod (after saving its evidence) so its controller recreates it.
    RestartPod,
    /// Raise a container's memory limit on the owning workload after OOMKilled.
    BumpMemory,
    /// Point a container's image at the mirror registry after ImagePullBackOff.
    MirrorImage,
    /// Evict a pod through the Eviction API because its node is under pressure.
    EvictPod,
    /// Raise a workload's replicas through the scale subresource.
    ScaleUp,
    /// Lower a workload's replicas through the scale subresource.
    ScaleDown,
    /// Mark a node unschedulable.
    CordonNode,
    /// Make a node schedulable again after its pressure cleared.
    UncordonNode,
}

impl ActionType {
    /// The name used in Events, metric labels and budgets.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestartPod => "RestartPod",
            Self::BumpMemory => "BumpMemory",
            Self::MirrorImage => "MirrorImage",
            Self::EvictPod => "EvictPod",
            Self::ScaleUp => "ScaleUp",
            Self::ScaleDown => "ScaleDown",
            Self::CordonNode => "CordonNode",
            Self::UncordonNode => "UncordonNode",
        }
    }
}

/// What a budget counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BudgetScope {
    /// One workload (Deployment, StatefulSet, ...) or, for node policies, one node.
    Target,
    /// Everything this policy governs.
    Policy,
    /// Every target in the policy's namespace, whichever policy acted (node policies: not allowed).
    Namespace,
}

/// A token bucket: at most `max` actions of type `action` per `windowSeconds` in `scope`.
/// Budgets are never exceeded; an action over budget is refused with reason `BudgetExhausted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The action this budget limits.
    pub action: ActionType,
    /// What the budget counts against.
    #[serde(default = "default_budget_scope")]
    pub scope: BudgetScope,
    /// Actions allowed per window. 0 forbids the action.
    #[schemars(range(min = 0, max = 10000))]
    pub max: i32,
    /// Length of the window, in seconds (1 minute to 7 days).
    #[schemars(range(min = 60, max = 604800))]
    pub window_seconds: i32,
}

fn default_budget_scope() -> BudgetScope {
    BudgetScope::Target
}

/// Whether an action ran, was only planned (dry-run), was refused by a safety rule, failed, or
/// was proposed as a pull request (GitOps-managed workloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ActionOutcome {
    Executed,
    DryRun,
    Refused,
    Failed,
    Proposed,
}

/// One entry of a policy's recent actions, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentAction {
    /// RFC 3339 time of the decision.
    pub time: String,
    pub action: ActionType,
    pub outcome: ActionOutcome,
    /// `Kind/namespace/name` of the target (`Node/name` for nodes).
    pub target: String,
    /// Machine-readable reason, the same string used in Events and metric labels.
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Status the controller writes on both policy kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the policy is valid and active) and `Degraded` (something it needs fails: a query,
    /// a store, a budget), each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many workloads (or nodes) the policy currently matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_targets: Option<i32>,
    /// NodeRemediationPolicy only: nodes cordoned by the agent under this policy now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordoned_nodes: Option<i32>,
    /// The most recent action, also the first entry of `recentActions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<RecentAction>,
    /// The last few actions and refusals, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_actions: Vec<RecentAction>,
}

/// Condition types written in `status.conditions`.
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Most entries kept in `status.recentActions`.
pub const MAX_RECENT_ACTIONS: usize = 10;
