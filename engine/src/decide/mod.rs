//! The decision: (incident, policy, facts read from the cluster, action history, now) -> a plan or a
//! refusal, each with a machine-readable reason. Pure and deterministic; dry-run produces the very
//! same plan, only marked as not to be executed.
//!
//! Stages: choose the remediation for the finding kind (`plan_for`), then run the safety chain
//! (`rules::chain`) in order; the first rule that refuses wins.

pub mod budget;
pub mod image;
pub mod node;
pub mod rules;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, FindingKind};
use crate::incident::IncidentKey;

pub use budget::{ActionRecord, BudgetLimit, BudgetScope, History};

/// What the agent can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionKind {
    RestartPod,
    BumpMemory,
    MirrorImage,
    EvictPod,
    CordonNode,
    UncordonNode,
    /// Replicas raised through the scale subresource (the scaling loop).
    ScaleUp,
    /// Replicas lowered through the scale subresource (the scaling loop).
    ScaleDown,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestartPod => "RestartPod",
            Self::BumpMemory => "BumpMemory",
            Self::MirrorImage => "MirrorImage",
            Self::EvictPod => "EvictPod",
            Self::CordonNode => "CordonNode",
            Self::UncordonNode => "UncordonNode",
            Self::ScaleUp => "ScaleUp",
            Self::ScaleDown => "ScaleDown",
        }
    }

    /// Actions that take capacity away (a pod goes, a node closes).
    pub fn is_disruptive(self) -> bool {
        matches!(self, Self::RestartPod | Self::EvictPod | Self::CordonNode)
    }
}

/// The parts of a policy the decision reads (converted from the CRD at the edge).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub restart_stuck_pods: bool,
    pub bump_memory_percent: Option<u32>,
    pub memory_min_increase_bytes: u64,
    pub memory_max_limit_bytes: Option<u64>,
    pub image_mirror: Option<String>,
    pub min_ready_replicas: u32,
    pub cooldown_ms: i64,
    pub max_repeats: u32,
    pub max_unhealthy_percent: u32,
    pub budgets: Vec<BudgetLimit>,
}

/// What the controller read from the cluster right before deciding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The condition the finding reported still holds (re-read from the API).
    pub condition_holds: bool,
    pub pod_annotations: BTreeMap<String, String>,
    pub workload_annotations: BTreeMap<String, String>,
    pub is_mirror_pod: bool,
    /// The pod's controller is a DaemonSet.
    pub daemonset_pod: bool,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    /// Argo CD or Flux manages the workload: live patches would be reverted.
    pub gitops_managed: bool,
    /// The affected container's memory limit and request, in bytes.
    pub memory_limit_bytes: Option<u64>,
    pub memory_request_bytes: Option<u64>,
    /// The failing image's mirror reference and whether the mirror serves it (manifest HEAD);
    /// `None` when not checked (no mirror, or the check failed).
    pub mirror_image: Option<(String, bool)>,
    /// Why the mirror could not be checked (unreachable, credentials missing or refused), for the
    /// refusal's message.
    pub mirror_check_error: Option<String>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub kind: ActionKind,
    /// `Kind/namespace/name` of what is changed.
    pub target: String,
    /// Why, for Events and logs.
    pub reason: String,
    /// For BumpMemory: the new limit and request in bytes.
    pub new_memory_limit_bytes: Option<u64>,
    pub new_memory_request_bytes: Option<u64>,
    /// For MirrorImage: the image to switch to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub incident: IncidentKey,
    pub policy: String,
    /// Report only; write nothing.
    pub dry_run: bool,
    pub actions: Vec<PlannedAction>,
}

/// Machine-readable refusal reasons; the same strings appear in Events, status, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalReason {
    NoPolicy,
    ActionNotEnabled,
    ConditionCleared,
    OptedOut,
    MirrorPod,
    DaemonSetPod,
    SystemNamespace,
    TooFewReadyReplicas,
    BudgetExhausted,
    Cooldown,
    LoopDetected,
    DisruptionBreaker,
    AtMemoryCap,
    GitOpsManaged,
    NotSupported,
    MaxUnavailable,
    CriticalPriority,
    EvictionNotAllowed,
    MirrorMissing,
    /// The installation's `features.*` leaves this action out (the controller has no RBAC for it).
    FeatureDisabled,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPolicy => "NoPolicy",
            Self::ActionNotEnabled => "ActionNotEnabled",
            Self::ConditionCleared => "ConditionCleared",
            Self::OptedOut => "OptedOut",
            Self::MirrorPod => "MirrorPod",
            Self::DaemonSetPod => "DaemonSetPod",
            Self::SystemNamespace => "SystemNamespace",
            Self::TooFewReadyReplicas => "TooFewReadyReplicas",
            Self::BudgetExhausted => "BudgetExhausted",
            Self::Cooldown => "Cooldown",
            Self::LoopDetected => "LoopDetected",
            Self::DisruptionBreaker => "DisruptionBreaker",
            Self::AtMemoryCap => "AtMemoryCap",
            Self::GitOpsManaged => "GitOpsManaged",
            Self::NotSupported => "NotSupported",
            Self::MaxUnavailable => "MaxUnavailable",
            Self::CriticalPriority => "CriticalPriority",
            Self::EvictionNotAllowed => "EvictionNotAllowed",
            Self::MirrorMissing => "MirrorMissing",
            Self::FeatureDisabled => "FeatureDisabled",
        }
    }

    /// Refusals after which a human should look: the incident escalates.
    pub fn escalates(self) -> bool {
        matches!(
            self,
            Self::LoopDetected
                | Self::AtMemoryCap
                | Self::BudgetExhausted
                | Self::DisruptionBreaker
                | Self::MirrorMissing
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Act(Plan),
    Refuse(Refusal),
}

/// Everything one decision looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub incident: &'a IncidentKey,
    pub finding: &'a Finding,
    pub policy: Option<&'a PolicyView>,
    pub facts: &'a Facts,
    pub history: &'a History,
    /// Cluster-wide budgets (from the controller's configuration).
    pub cluster_budgets: &'a [BudgetLimit],
    pub now_ms: i64,
}

/// The workload a pod finding's actions target, as `Kind/namespace/name`.
pub fn workload_target(f: &Finding) -> String {
    match (&f.pod, &f.owner) {
        (Some(p), Some(o)) => format!("{}/{}/{}", o.kind, p.namespace, o.name),
        (Some(p), None) => format!("Pod/{}/{}", p.namespace, p.name),
        (None, _) => format!("Node//{}", f.node),
    }
}

fn refuse(reason: RefusalReason, message: impl Into<String>) -> Decision {
    Decision::Refuse(Refusal {
        reason,
        message: message.into(),
    })
}

/// The remediation for the finding kind, before safety rules.
pub fn plan_for(input: &Input<'_>, policy: &PolicyView) -> Result<Vec<PlannedAction>, Refusal> {
    let f = input.finding;
    let not_enabled = |what: &str| Refusal {
        reason: RefusalReason::ActionNotEnabled,
        message: format!("policy {} does not enable {what}", policy.name),
    };
    match f.kind {
        FindingKind::CrashLoopBackOff => {
            if !policy.restart_stuck_pods {
                return Err(not_enabled("restartStuckPods"));
            }
            let pod = f
                .pod
                .as_ref()
                .map(|p| format!("Pod/{}/{}", p.namespace, p.name))
                .unwrap_or_default();
            Ok(vec![PlannedAction {
                kind: ActionKind::RestartPod,
                target: pod,
                reason: format!(
                    "container {} is in CrashLoopBackOff after {} restarts",
                    f.container.as_deref().unwrap_or("?"),
                    f.restart_count
                ),
                new_memory_limit_bytes: None,
                new_memory_request_bytes: None,
                new_image: None,
            }])
        }
        FindingKind::OomKilled => {
            let Some(percent) = policy.bump_memory_percent else {
                return Err(not_enabled("bumpMemoryPercent"));
            };
            let Some(limit) = input.facts.memory_limit_bytes else {
                return Err(Refusal {
                    reason: RefusalReason::NotSupported,
                    message: "the container has no memory limit to raise".into(),
                });
            };
            let new_limit = bumped(
                limit,
                percent,
                policy.memory_min_increase_bytes,
                policy.memory_max_limit_bytes,
            );
            if new_limit <= limit {
                return Err(Refusal {
                    reason: RefusalReason::AtMemoryCap,
                    message: format!("the memory limit {limit} is at the policy's cap; escalating"),
                });
            }
            let new_request = input.facts.memory_request_bytes.map(|r| {
                bumped(
                    r,
                    percent,
                    policy.memory_min_increase_bytes,
                    Some(new_limit),
                )
            });
            Ok(vec![PlannedAction {
                kind: ActionKind::BumpMemory,
                target: workload_target(f),
                reason: format!(
                    "container {} was OOMKilled; limit {} -> {}",
                    f.container.as_deref().unwrap_or("?"),
                    crate::quantity::format_bytes(limit),
                    crate::quantity::format_bytes(new_limit)
                ),
                new_memory_limit_bytes: Some(new_limit),
                new_memory_request_bytes: new_request,
                new_image: None,
            }])
        }
        FindingKind::ImagePullBackOff if policy.image_mirror.is_none() => {
            Err(not_enabled("imageMirror"))
        }
        FindingKind::ImagePullBackOff => match &input.facts.mirror_image {
            Some((image, true)) => Ok(vec![PlannedAction {
                kind: ActionKind::MirrorImage,
                target: workload_target(f),
                reason: format!(
                    "{} cannot pull {}; the mirror has {image}",
                    f.container.as_deref().unwrap_or("?"),
                    f.image.as_deref().unwrap_or("?")
                ),
                new_memory_limit_bytes: None,
                new_memory_request_bytes: None,
                new_image: Some(image.clone()),
            }]),
            Some((image, false)) => Err(Refusal {
                reason: RefusalReason::MirrorMissing,
                message: format!("the mirror does not have {image}; escalating"),
            }),
            None => Err(Refusal {
                reason: RefusalReason::MirrorMissing,
                message: match &input.facts.mirror_check_error {
                    Some(why) => format!("the mirror could not be checked: {why}; escalating"),
                    None => "the mirror could not be checked for this image; escalating".into(),
                },
            }),
        },
        _ => Err(Refusal {
            reason: RefusalReason::NotSupported,
            message: format!("no remediation for {} in this version", f.kind.as_str()),
        }),
    }
}

/// `value` raised by `percent`, by at least `min_increase`, never above `cap`.
pub fn bumped(value: u64, percent: u32, min_increase: u64, cap: Option<u64>) -> u64 {
    let by_percent = value.saturating_mul(u64::from(percent)) / 100;
    let raised = value.saturating_add(by_percent.max(min_increase));
    match cap {
        Some(cap) => raised.min(cap).max(value.min(cap)),
        None => raised,
    }
}

/// Decides what to do about one incident.
pub fn decide(input: &Input<'_>) -> Decision {
    let Some(policy) = input.policy else {
        return refuse(
            RefusalReason::NoPolicy,
            "no AutoRemediationPolicy selects this workload",
        );
    };
    let actions = match plan_for(input, policy) {
        Ok(a) => a,
        Err(r) => return Decision::Refuse(r),
    };
    for action in &actions {
        if let Err(refusal) = rules::chain(input, policy, action) {
            return Decision::Refuse(refusal);
        }
    }
    Decision::Act(Plan {
        incident: input.incident.clone(),
        policy: policy.name.clone(),
        dry_run: policy.dry_run,
        actions,
    })
}
