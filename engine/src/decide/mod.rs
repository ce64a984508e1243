//! The decision: (incident, policy, facts read from the cluster, action history, now) -> a plan or a
//! refusal, each with a machine-readable reason. Pure and deterministic; dry-run produces the very
//! same plan, only marked as not to be executed.
//!
//! Stages: choose the remediation for the finding kind (`plan_for`), then run the safety chain
//! (`rules::chain`) in order; the first rule that refuses wins.

pub mod budget;
pub mod image;
pub mod ledger;
pub mod node;
pub mod plan;
pub mod rules;
pub mod scale_admission;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, FindingKind};
use crate::incident::IncidentKey;

pub use budget::{ActionRecord, BudgetLimit, BudgetScope, History, Key};
pub use plan::{BytesChange, PlannedAction, PodTarget, Target, WorkloadTarget};

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
    pub const ALL: [Self; 8] = [
        Self::RestartPod,
        Self::BumpMemory,
        Self::MirrorImage,
        Self::EvictPod,
        Self::CordonNode,
        Self::UncordonNode,
        Self::ScaleUp,
        Self::ScaleDown,
    ];

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

    /// The installation feature (the chart's `features.<name>`) that allows this action.
    pub fn feature(self) -> &'static str {
        match self {
            Self::RestartPod => "restart",
            Self::BumpMemory => "memoryBump",
            Self::MirrorImage => "mirrorImage",
            Self::EvictPod | Self::CordonNode | Self::UncordonNode => "nodeRemediation",
            Self::ScaleUp | Self::ScaleDown => "scaling",
        }
    }

    /// Actions that take capacity away (a pod goes, a node closes).
    pub fn is_disruptive(self) -> bool {
        matches!(self, Self::RestartPod | Self::EvictPod | Self::CordonNode)
    }
}

/// The actions this installation may take: its `features.*` switches, which also decide the
/// controller's RBAC. An action left out is refused (`FeatureDisabled`) instead of failing with 403.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedActions(BTreeSet<ActionKind>);

impl AllowedActions {
    pub fn all() -> Self {
        Self::from_kinds(ActionKind::ALL)
    }

    pub fn from_kinds(kinds: impl IntoIterator<Item = ActionKind>) -> Self {
        Self(kinds.into_iter().collect())
    }

    pub fn allows(&self, kind: ActionKind) -> bool {
        self.0.contains(&kind)
    }

    /// `Ok` when `kind` is allowed, else the `FeatureDisabled` refusal naming it.
    pub fn permit(&self, kind: ActionKind) -> Result<(), Refusal> {
        if self.allows(kind) {
            return Ok(());
        }
        Err(Refusal {
            reason: RefusalReason::FeatureDisabled,
            message: format!(
                "{} is planned, but this installation has features.{} off (no RBAC for it)",
                kind.as_str(),
                kind.feature()
            ),
        })
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
    /// How long a disruptive action on a replicated workload waits after its pod's failure became
    /// known, so that the other pods failing in the same storm are known too (0: no wait).
    pub storm_window_ms: i64,
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
    /// Pods of this workload with an open failure the leader knows of, this one included. Leads
    /// `desired - ready`, which lags behind a storm (readiness probes take their time).
    pub failing_pods: u32,
    /// How long this pod's failure has been known.
    pub incident_age_ms: i64,
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
    /// The workload's pod template has the finding's container (among `containers`).
    pub container_in_template: bool,
    /// The image the template gives that container.
    pub template_image: Option<String>,
    /// The names of the template's containers (a GitOps proposal needs to know whether the
    /// finding's container is the only one).
    #[serde(default)]
    pub template_containers: Vec<String>,
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
    /// Waiting out the storm window so the breaker sees the whole storm. Never escalates: the
    /// controller decides again later instead of reporting it.
    Settling,
    /// The workload's pod template does not have the failing container, or runs another image
    /// for it (a rollout moved on, or the pod is not what its owner would create): the agent
    /// changes only what the template has, and never adds a container.
    TemplateMismatch,
}

impl RefusalReason {
    /// Every reason, for metrics created at 0 before the first refusal.
    pub const ALL: [Self; 22] = [
        Self::NoPolicy,
        Self::ActionNotEnabled,
        Self::ConditionCleared,
        Self::OptedOut,
        Self::MirrorPod,
        Self::DaemonSetPod,
        Self::SystemNamespace,
        Self::TooFewReadyReplicas,
        Self::BudgetExhausted,
        Self::Cooldown,
        Self::LoopDetected,
        Self::DisruptionBreaker,
        Self::AtMemoryCap,
        Self::GitOpsManaged,
        Self::NotSupported,
        Self::MaxUnavailable,
        Self::CriticalPriority,
        Self::EvictionNotAllowed,
        Self::MirrorMissing,
        Self::FeatureDisabled,
        Self::Settling,
        Self::TemplateMismatch,
    ];

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
            Self::Settling => "Settling",
            Self::TemplateMismatch => "TemplateMismatch",
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
                | Self::MaxUnavailable
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
    /// The workload is managed by GitOps: the plan (which every other rule allowed) is proposed
    /// as a pull request instead of made live; the refusal says why it is not made live.
    Propose(Plan, Refusal),
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
    /// What the installation may do at all.
    pub allowed: &'a AllowedActions,
    pub now_ms: i64,
}

/// The workload a pod finding's actions target, as `Kind/namespace/name` (`Node//name` for a node
/// finding): the target of its ledger records.
pub fn workload_target(f: &Finding) -> String {
    match WorkloadTarget::of_finding(f) {
        Some(w) => w.to_string(),
        None => format!("Node//{}", f.node),
    }
}

fn refuse(reason: RefusalReason, message: impl Into<String>) -> Decision {
    Decision::Refuse(Refusal {
        reason,
        message: message.into(),
    })
}

/// `value`, or a `NotSupported` refusal saying the finding lacks `what`.
fn required<T>(value: Option<T>, what: &str) -> Result<T, Refusal> {
    value.ok_or_else(|| Refusal {
        reason: RefusalReason::NotSupported,
        message: format!("the finding names no {what}"),
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
            Ok(vec![PlannedAction::RestartPod {
                pod: required(PodTarget::of_finding(f), "pod")?,
                reason: format!(
                    "container {} is in CrashLoopBackOff after {} restarts",
                    f.container.as_deref().unwrap_or("?"),
                    f.restart_count
                ),
            }])
        }
        FindingKind::OomKilled => {
            let Some(percent) = policy.bump_memory_percent else {
                return Err(not_enabled("bumpMemoryPercent"));
            };
            let workload = required(WorkloadTarget::of_finding(f), "pod")?;
            let container = required(f.container.clone(), "container")?;
            in_template(input.facts, &workload, &container)?;
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
            let request = input.facts.memory_request_bytes.map(|r| BytesChange {
                from: Some(r),
                to: bumped(
                    r,
                    percent,
                    policy.memory_min_increase_bytes,
                    Some(new_limit),
                ),
            });
            Ok(vec![PlannedAction::BumpMemory {
                reason: format!(
                    "container {container} was OOMKilled; limit {} -> {}",
                    crate::quantity::format_bytes(limit),
                    crate::quantity::format_bytes(new_limit)
                ),
                workload,
                container,
                limit: BytesChange {
                    from: Some(limit),
                    to: new_limit,
                },
                request,
            }])
        }
        FindingKind::ImagePullBackOff if policy.image_mirror.is_none() => {
            Err(not_enabled("imageMirror"))
        }
        FindingKind::ImagePullBackOff => match &input.facts.mirror_image {
            Some((image, true)) => {
                let from = required(f.image.clone(), "image")?;
                let container = required(f.container.clone(), "container")?;
                let workload = required(WorkloadTarget::of_finding(f), "pod")?;
                in_template(input.facts, &workload, &container)?;
                if input.facts.template_image.as_deref() != Some(from.as_str()) {
                    return Err(Refusal {
                        reason: RefusalReason::TemplateMismatch,
                        message: format!(
                            "{workload} runs {} for container {container}, not the failing {from}; not replacing it",
                            input.facts.template_image.as_deref().unwrap_or("no image")
                        ),
                    });
                }
                Ok(vec![PlannedAction::MirrorImage {
                    workload,
                    reason: format!("{container} cannot pull {from}; the mirror has {image}"),
                    container,
                    from,
                    to: image.clone(),
                }])
            }
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

/// A `TemplateMismatch` refusal unless the workload's template has the container.
fn in_template(facts: &Facts, workload: &WorkloadTarget, container: &str) -> Result<(), Refusal> {
    if facts.container_in_template {
        return Ok(());
    }
    Err(Refusal {
        reason: RefusalReason::TemplateMismatch,
        message: format!(
            "{workload}'s pod template has no container {container}; the agent never adds one"
        ),
    })
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
    let mut gitops = None;
    for action in &actions {
        match rules::chain(input, policy, action) {
            Ok(()) => {}
            // The chain's last rule: everything else allowed it; GitOps owns the spec.
            Err(refusal) if refusal.reason == RefusalReason::GitOpsManaged => {
                gitops = Some(refusal);
            }
            Err(refusal) => return Decision::Refuse(refusal),
        }
    }
    let plan = Plan {
        incident: input.incident.clone(),
        policy: policy.name.clone(),
        dry_run: policy.dry_run,
        actions,
    };
    match gitops {
        Some(refusal) => Decision::Propose(plan, refusal),
        None => Decision::Act(plan),
    }
}

#[cfg(test)]
mod tests {
    use super::RefusalReason::*;

    #[test]
    fn every_refusal_reason_is_listed_once_in_order() {
        // Exhaustive: a new reason does not compile here until it is numbered (next number:
        // ALL.len()), and then fails below until ALL lists it.
        fn number(r: super::RefusalReason) -> usize {
            match r {
                NoPolicy => 0,
                ActionNotEnabled => 1,
                ConditionCleared => 2,
                OptedOut => 3,
                MirrorPod => 4,
                DaemonSetPod => 5,
                SystemNamespace => 6,
                TooFewReadyReplicas => 7,
                BudgetExhausted => 8,
                Cooldown => 9,
                LoopDetected => 10,
                DisruptionBreaker => 11,
                AtMemoryCap => 12,
                GitOpsManaged => 13,
                NotSupported => 14,
                MaxUnavailable => 15,
                CriticalPriority => 16,
                EvictionNotAllowed => 17,
                MirrorMissing => 18,
                FeatureDisabled => 19,
                Settling => 20,
                TemplateMismatch => 21,
            }
        }
        let numbers: Vec<usize> = super::RefusalReason::ALL
            .iter()
            .map(|r| number(*r))
            .collect();
        assert_eq!(numbers, (0..=21).collect::<Vec<_>>());
    }

    #[test]
    fn refusals_that_ask_for_a_human_escalate() {
        for r in [
            LoopDetected,
            AtMemoryCap,
            BudgetExhausted,
            DisruptionBreaker,
            MirrorMissing,
            MaxUnavailable,
        ] {
            assert!(r.escalates(), "{r:?}");
        }
        for r in [
            NoPolicy,
            Cooldown,
            OptedOut,
            Settling,
            TooFewReadyReplicas,
            FeatureDisabled,
            GitOpsManaged,
        ] {
            assert!(!r.escalates(), "{r:?}");
        }
    }
}
