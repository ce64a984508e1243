//! Node pressure decisions, governed by a NodeRemediationPolicy: cordon the node, then evict the
//! pods that may be evicted, never exceeding `maxUnavailableNodes` and stopping when too many nodes
//! look unhealthy at once (the signal is suspect). Pure; the controller gathers the facts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::budget::{BudgetLimit, BudgetScope, History};
use super::{
    ActionKind, AllowedActions, Decision, Plan, PlannedAction, PodTarget, Refusal, RefusalReason,
};
use crate::incident::IncidentKey;

/// Priority at and above which pods are system-critical (`system-cluster-critical`).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaxUnavailable {
    Count(u32),
    Percent(u32),
}

impl MaxUnavailable {
    /// The number of nodes this allows out of `selected` (a percent rounds down, like
    /// maxUnavailable elsewhere in Kubernetes, but never below one when the percent is not zero).
    pub fn allowed(self, selected: u32) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(0) => 0,
            Self::Percent(p) => (selected * p / 100).max(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePolicyView {
    pub name: String,
    /// Condition kinds it acts on: `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NotReady`.
    pub conditions: Vec<String>,
    pub cordon: bool,
    pub evict: bool,
    pub max_unavailable: MaxUnavailable,
    pub unhealthy_threshold_percent: u32,
    pub uncordon_after_ms: i64,
    /// How long blocked evictions (PodDisruptionBudget) are retried.
    pub drain_timeout_ms: i64,
    pub dry_run: bool,
    pub budgets: Vec<BudgetLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub node: String,
    /// The condition still holds on the Node, re-read.
    pub condition_holds: bool,
    /// Nodes the policy selects, and how many of them are under a watched condition now.
    pub selected_nodes: u32,
    pub unhealthy_nodes: u32,
    /// Nodes the agent has cordoned and not yet uncordoned (this one excluded).
    pub cordoned_by_agent: u32,
    /// This node is already unschedulable (by anyone).
    pub already_cordoned: bool,
}

/// A pod on the node, as eviction sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCandidate {
    pub namespace: String,
    pub name: String,
    /// Guards the eviction against a pod recreated under the same name; empty when unknown.
    pub uid: String,
    pub daemonset: bool,
    pub mirror: bool,
    pub priority: Option<i32>,
    pub annotations: BTreeMap<String, String>,
    /// An AutoRemediationPolicy in the pod's namespace selects it and sets `evictOnNodePressure`.
    pub policy_allows_eviction: bool,
    /// Succeeded or Failed: nothing to evict.
    pub terminal: bool,
}

/// Whether a pod may be evicted for node pressure, and if not, why.
pub fn evictable(p: &PodCandidate) -> Result<(), RefusalReason> {
    if p.terminal {
        return Err(RefusalReason::ConditionCleared);
    }
    if p.mirror {
        return Err(RefusalReason::MirrorPod);
    }
    if p.daemonset {
        return Err(RefusalReason::DaemonSetPod);
    }
    if p.namespace == "kube-system" {
        return Err(RefusalReason::SystemNamespace);
    }
    if p.priority.is_some_and(|pr| pr >= SYSTEM_CRITICAL_PRIORITY) {
        return Err(RefusalReason::CriticalPriority);
    }
    super::rules::opted_out(&[&p.annotations], true).map_err(|r| r.reason)?;
    if !p.policy_allows_eviction {
        return Err(RefusalReason::EvictionNotAllowed);
    }
    Ok(())
}

fn refuse(reason: RefusalReason, message: impl Into<String>) -> Decision {
    Decision::Refuse(Refusal {
        reason,
        message: message.into(),
    })
}

/// Budgets for node actions that apply when the policy sets none.
fn node_budgets(policy: &[BudgetLimit]) -> Vec<BudgetLimit> {
    let mut out = policy.to_vec();
    let defaults = [
        BudgetLimit {
            action: ActionKind::CordonNode,
            scope: BudgetScope::Policy,
            max: 2,
            window_ms: 3_600_000,
        },
        BudgetLimit {
            action: ActionKind::EvictPod,
            scope: BudgetScope::Policy,
            max: 50,
            window_ms: 3_600_000,
        },
    ];
    for d in defaults {
        if !out
            .iter()
            .any(|b| b.action == d.action && b.scope == d.scope)
        {
            out.push(d);
        }
    }
    out
}

/// Everything one node decision looks at.
#[derive(Clone, Debug)]
pub struct NodeInput<'a> {
    pub incident: &'a IncidentKey,
    /// The watched condition: `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NotReady`.
    pub condition: &'a str,
    pub policy: Option<&'a NodePolicyView>,
    pub facts: &'a NodeFacts,
    /// The pods on the node.
    pub pods: &'a [PodCandidate],
    pub history: &'a History,
    /// What the installation may do at all; a planned action it leaves out refuses the decision.
    pub allowed: &'a AllowedActions,
    pub now_ms: i64,
}

/// Decides what to do about a node under a condition; also returns the pods left out of the
/// evictions, and why.
pub fn decide_node(input: &NodeInput<'_>) -> (Decision, Vec<(String, RefusalReason)>) {
    let NodeInput {
        incident,
        condition,
        policy,
        facts,
        pods,
        history,
        allowed,
        now_ms,
    } = *input;
    let Some(policy) = policy else {
        return (
            refuse(
                RefusalReason::NoPolicy,
                "no NodeRemediationPolicy selects this node",
            ),
            vec![],
        );
    };
    if !policy.conditions.iter().any(|c| c == condition) {
        return (
            refuse(
                RefusalReason::ActionNotEnabled,
                format!("policy {} does not act on {condition}", policy.name),
            ),
            vec![],
        );
    }
    if !facts.condition_holds {
        return (
            refuse(
                RefusalReason::ConditionCleared,
                "the condition no longer holds",
            ),
            vec![],
        );
    }
    if let Some(percent) = (facts.unhealthy_nodes * 100).checked_div(facts.selected_nodes)
        && percent > policy.unhealthy_threshold_percent
    {
        return (
            refuse(
                RefusalReason::DisruptionBreaker,
                format!(
                    "{} of {} nodes unhealthy ({percent}% > {}%): suspecting the signal, not disrupting",
                    facts.unhealthy_nodes, facts.selected_nodes, policy.unhealthy_threshold_percent
                ),
            ),
            vec![],
        );
    }
    let target = format!("Node//{}", facts.node);
    let mut actions = Vec::new();
    if policy.cordon && !facts.already_cordoned {
        if let Err(refusal) = allowed.permit(ActionKind::CordonNode) {
            return (Decision::Refuse(refusal), vec![]);
        }
        let allowed = policy.max_unavailable.allowed(facts.selected_nodes);
        if facts.cordoned_by_agent >= allowed {
            return (
                refuse(
                    RefusalReason::MaxUnavailable,
                    format!(
                        "{} nodes already cordoned by the agent; maxUnavailableNodes allows {allowed}",
                        facts.cordoned_by_agent
                    ),
                ),
                vec![],
            );
        }
        let limits = node_budgets(&policy.budgets);
        for limit in limits.iter().filter(|l| l.action == ActionKind::CordonNode) {
            if history.used(limit, &target, &policy.name, now_ms) >= limit.max {
                return (
                    refuse(
                        RefusalReason::BudgetExhausted,
                        format!(
                            "CordonNode budget used up: {} in {} s",
                            limit.max,
                            limit.window_ms / 1000
                        ),
                    ),
                    vec![],
                );
            }
        }
        actions.push(PlannedAction::CordonNode {
            node: facts.node.clone(),
            reason: format!("{condition} on node {}", facts.node),
        });
    }
    let mut skipped = Vec::new();
    if policy.evict {
        let limits = node_budgets(&policy.budgets);
        let evict_limit = limits
            .iter()
            .find(|l| l.action == ActionKind::EvictPod && l.scope == BudgetScope::Policy)
            .copied();
        let mut left = evict_limit.map_or(u32::MAX, |l| {
            l.max
                .saturating_sub(history.used(&l, &target, &policy.name, now_ms))
        });
        for p in pods {
            let evict = evictable(p);
            if evict.is_ok()
                && let Err(refusal) = allowed.permit(ActionKind::EvictPod)
            {
                return (Decision::Refuse(refusal), vec![]);
            }
            match evict {
                Ok(()) if left > 0 => {
                    left -= 1;
                    actions.push(PlannedAction::EvictPod {
                        pod: PodTarget {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            uid: p.uid.clone(),
                        },
                        reason: format!("{condition} on node {}", facts.node),
                    });
                }
                Ok(()) => skipped.push((
                    format!("{}/{}", p.namespace, p.name),
                    RefusalReason::BudgetExhausted,
                )),
                Err(RefusalReason::ConditionCleared) => {}
                Err(reason) => skipped.push((format!("{}/{}", p.namespace, p.name), reason)),
            }
        }
    }
    if actions.is_empty() {
        return (
            refuse(
                RefusalReason::NotSupported,
                "nothing to do: already cordoned and nothing evictable",
            ),
            skipped,
        );
    }
    (
        Decision::Act(Plan {
            incident: incident.clone(),
            policy: policy.name.clone(),
            dry_run: policy.dry_run,
            actions,
        }),
        skipped,
    )
}

/// Whether a node the agent cordoned may be uncordoned: every watched condition has been clear for
/// the policy's period (`cleared_since_ms` is the latest transition to clear).
pub fn should_uncordon(
    policy: &NodePolicyView,
    pressure_now: bool,
    cleared_since_ms: Option<i64>,
    now_ms: i64,
) -> bool {
    policy.uncordon_after_ms > 0
        && !pressure_now
        && cleared_since_ms.is_some_and(|t| now_ms - t >= policy.uncordon_after_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NodePolicyView {
        NodePolicyView {
            name: "workers".into(),
            conditions: vec!["MemoryPressure".into()],
            cordon: true,
            evict: true,
            max_unavailable: MaxUnavailable::Count(1),
            unhealthy_threshold_percent: 55,
            uncordon_after_ms: 60_000,
            drain_timeout_ms: 600_000,
            dry_run: false,
            budgets: vec![],
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            node: "n1".into(),
            condition_holds: true,
            selected_nodes: 3,
            unhealthy_nodes: 1,
            ..NodeFacts::default()
        }
    }

    fn pod(name: &str) -> PodCandidate {
        PodCandidate {
            namespace: "prod".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            policy_allows_eviction: true,
            ..PodCandidate::default()
        }
    }

    fn key() -> IncidentKey {
        let f = crate::Finding {
            id: "i".into(),
            node: "n1".into(),
            kind: crate::FindingKind::NodeMemoryPressure,
            transition: crate::Transition::Started,
            pod: None,
            owner: None,
            container: None,
            reason: String::new(),
            message: String::new(),
            restart_count: 0,
            exit_code: None,
            image: None,
            observed_at_ms: 0,
            log_lines: vec![],
            log_truncated: false,
        };
        IncidentKey::for_finding(&f).unwrap_or_else(|_| unreachable!())
    }

    /// Decides under MemoryPressure with an empty history.
    fn run(
        policy: Option<&NodePolicyView>,
        facts: &NodeFacts,
        pods: &[PodCandidate],
        allowed: &AllowedActions,
    ) -> (Decision, Vec<(String, RefusalReason)>) {
        decide_node(&NodeInput {
            incident: &key(),
            condition: "MemoryPressure",
            policy,
            facts,
            pods,
            history: &History::default(),
            allowed,
            now_ms: 0,
        })
    }

    fn kinds(d: &Decision) -> Result<Vec<(ActionKind, String)>, RefusalReason> {
        match d {
            Decision::Act(p) => Ok(p
                .actions
                .iter()
                .map(|a| (a.kind(), a.target().to_string()))
                .collect()),
            Decision::Refuse(r) | Decision::Propose(_, r) => Err(r.reason),
        }
    }

    #[test]
    fn evictable_table() {
        let cases = [
            (pod("a"), Ok(())),
            (
                PodCandidate {
                    daemonset: true,
                    ..pod("ds")
                },
                Err(RefusalReason::DaemonSetPod),
            ),
            (
                PodCandidate {
                    mirror: true,
                    ..pod("static")
                },
                Err(RefusalReason::MirrorPod),
            ),
            (
                PodCandidate {
                    namespace: "kube-system".into(),
                    ..pod("dns")
                },
                Err(RefusalReason::SystemNamespace),
            ),
            (
                PodCandidate {
                    priority: Some(2_000_001_000),
                    ..pod("crit")
                },
                Err(RefusalReason::CriticalPriority),
            ),
            (
                PodCandidate {
                    priority: Some(1000),
                    ..pod("normal")
                },
                Ok(()),
            ),
            (
                PodCandidate {
                    annotations: BTreeMap::from([(
                        super::super::rules::SAFE_TO_EVICT.into(),
                        "false".into(),
                    )]),
                    ..pod("keep")
                },
                Err(RefusalReason::OptedOut),
            ),
            (
                PodCandidate {
                    policy_allows_eviction: false,
                    ..pod("nopolicy")
                },
                Err(RefusalReason::EvictionNotAllowed),
            ),
            (
                PodCandidate {
                    terminal: true,
                    ..pod("done")
                },
                Err(RefusalReason::ConditionCleared),
            ),
        ];
        for (p, want) in cases {
            assert_eq!(evictable(&p), want, "{}", p.name);
        }
    }

    #[test]
    fn cordon_then_evict_the_evictable() {
        let pods = [
            pod("a"),
            PodCandidate {
                daemonset: true,
                ..pod("ds")
            },
            pod("b"),
        ];
        let (d, skipped) = run(Some(&policy()), &facts(), &pods, &AllowedActions::all());
        assert_eq!(
            kinds(&d),
            Ok(vec![
                (ActionKind::CordonNode, "Node//n1".into()),
                (ActionKind::EvictPod, "Pod/prod/a".into()),
                (ActionKind::EvictPod, "Pod/prod/b".into()),
            ])
        );
        assert_eq!(
            skipped,
            vec![("prod/ds".to_owned(), RefusalReason::DaemonSetPod)]
        );
        // The eviction carries the pod's uid, so a pod recreated under the name is left alone.
        let Decision::Act(plan) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            plan.actions[1],
            PlannedAction::EvictPod {
                pod: PodTarget {
                    namespace: "prod".into(),
                    name: "a".into(),
                    uid: "uid-a".into(),
                },
                reason: "MemoryPressure on node n1".into(),
            }
        );
    }

    type Case = (
        &'static str,
        Option<NodePolicyView>,
        NodeFacts,
        &'static str,
        Result<usize, RefusalReason>,
    );

    #[test]
    fn node_decision_table() {
        let h = History::default();
        let cases: Vec<Case> = vec![
            (
                "no policy",
                None,
                facts(),
                "MemoryPressure",
                Err(RefusalReason::NoPolicy),
            ),
            (
                "condition not watched",
                Some(policy()),
                facts(),
                "DiskPressure",
                Err(RefusalReason::ActionNotEnabled),
            ),
            (
                "cleared",
                Some(policy()),
                NodeFacts {
                    condition_holds: false,
                    ..facts()
                },
                "MemoryPressure",
                Err(RefusalReason::ConditionCleared),
            ),
            (
                "breaker",
                Some(policy()),
                NodeFacts {
                    unhealthy_nodes: 2,
                    ..facts()
                },
                "MemoryPressure",
                Err(RefusalReason::DisruptionBreaker),
            ),
            (
                "max unavailable",
                Some(policy()),
                NodeFacts {
                    cordoned_by_agent: 1,
                    ..facts()
                },
                "MemoryPressure",
                Err(RefusalReason::MaxUnavailable),
            ),
            (
                "percent allows two of ten",
                Some(NodePolicyView {
                    max_unavailable: MaxUnavailable::Percent(20),
                    ..policy()
                }),
                NodeFacts {
                    selected_nodes: 10,
                    cordoned_by_agent: 1,
                    ..facts()
                },
                "MemoryPressure",
                Ok(2),
            ),
            (
                "already cordoned: only evict",
                Some(policy()),
                NodeFacts {
                    already_cordoned: true,
                    ..facts()
                },
                "MemoryPressure",
                Ok(1),
            ),
            (
                "cordon only",
                Some(NodePolicyView {
                    evict: false,
                    ..policy()
                }),
                facts(),
                "MemoryPressure",
                Ok(1),
            ),
        ];
        for (name, p, f, condition, want) in cases {
            let (d, _) = decide_node(&NodeInput {
                incident: &key(),
                condition,
                policy: p.as_ref(),
                facts: &f,
                pods: &[pod("a")],
                history: &h,
                allowed: &AllowedActions::all(),
                now_ms: 0,
            });
            assert_eq!(kinds(&d).map(|v| v.len()), want, "case: {name}");
        }
    }

    #[test]
    fn planned_node_actions_need_their_feature() {
        use ActionKind::{CordonNode, EvictPod};
        let only = AllowedActions::from_kinds;
        let ds = PodCandidate {
            daemonset: true,
            ..pod("ds")
        };
        let cordoned = NodeFacts {
            already_cordoned: true,
            ..facts()
        };
        let no_evict = NodePolicyView {
            evict: false,
            ..policy()
        };
        let cases = [
            (
                "all allowed",
                policy(),
                facts(),
                pod("a"),
                AllowedActions::all(),
                Ok(2),
            ),
            (
                "no cordon",
                policy(),
                facts(),
                pod("a"),
                only([EvictPod]),
                Err(RefusalReason::FeatureDisabled),
            ),
            (
                "no evict",
                policy(),
                facts(),
                pod("a"),
                only([CordonNode]),
                Err(RefusalReason::FeatureDisabled),
            ),
            (
                "no evict, nothing evictable",
                policy(),
                facts(),
                ds,
                only([CordonNode]),
                Ok(1),
            ),
            (
                "no cordon, already cordoned",
                policy(),
                cordoned,
                pod("a"),
                only([EvictPod]),
                Ok(1),
            ),
            (
                "no evict, policy does not evict",
                no_evict,
                facts(),
                pod("a"),
                only([CordonNode]),
                Ok(1),
            ),
        ];
        for (name, p, f, candidate, allowed, want) in cases {
            let (d, _) = run(Some(&p), &f, &[candidate], &allowed);
            assert_eq!(kinds(&d).map(|v| v.len()), want, "case: {name}");
        }
    }

    #[test]
    fn eviction_budget_limits_the_plan() {
        let p = NodePolicyView {
            budgets: vec![BudgetLimit {
                action: ActionKind::EvictPod,
                scope: BudgetScope::Policy,
                max: 2,
                window_ms: 3_600_000,
            }],
            ..policy()
        };
        let pods: Vec<_> = (0..5).map(|i| pod(&format!("p{i}"))).collect();
        let (d, skipped) = run(Some(&p), &facts(), &pods, &AllowedActions::all());
        assert_eq!(kinds(&d).map(|v| v.len()), Ok(3), "cordon + 2 evictions");
        assert_eq!(
            skipped
                .iter()
                .filter(|(_, r)| *r == RefusalReason::BudgetExhausted)
                .count(),
            3
        );
    }

    #[test]
    fn max_unavailable_arithmetic() {
        assert_eq!(MaxUnavailable::Count(2).allowed(10), 2);
        assert_eq!(MaxUnavailable::Percent(10).allowed(10), 1);
        assert_eq!(
            MaxUnavailable::Percent(10).allowed(3),
            1,
            "a non-zero percent allows at least one"
        );
        assert_eq!(MaxUnavailable::Percent(0).allowed(100), 0);
        assert_eq!(MaxUnavailable::Percent(50).allowed(9), 4);
    }

    #[test]
    fn uncordon_after_the_period() {
        let p = policy();
        assert!(
            !should_uncordon(&p, true, Some(0), 120_000),
            "still under pressure"
        );
        assert!(
            !should_uncordon(&p, false, Some(100_000), 120_000),
            "cleared 20 s ago"
        );
        assert!(should_uncordon(&p, false, Some(60_000), 120_000));
        assert!(
            !should_uncordon(
                &NodePolicyView {
                    uncordon_after_ms: 0,
                    ..p
                },
                false,
                Some(0),
                120_000
            ),
            "0 leaves it cordoned"
        );
    }
}
