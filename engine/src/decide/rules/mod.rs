//! The safety chain: small rules in a fixed order, each refusing with a typed reason. The first
//! refusal wins. Each rule lives in its own file with its own tests.

mod breaker;
mod budget;
mod condition;
mod cooldown;
mod daemonset;
mod feature;
mod gitops;
mod loops;
mod min_ready;
mod mirror_pod;
mod opt_out;
mod storm_window;
mod system_namespace;

use super::{Input, PlannedAction, PolicyView, Refusal};

pub use budget::exhausted_message;
pub(crate) use budget::within_budgets;
pub use loops::LOOP_WINDOW_MS;
pub(crate) use opt_out::opted_out;
pub use opt_out::{IGNORE, SAFE_TO_EVICT};

/// A rule: `Ok(())` lets the action through.
pub type Rule = fn(&Input<'_>, &PolicyView, &PlannedAction) -> Result<(), Refusal>;

/// The chain, in order: what the installation cannot do at all first, then cheap, certain
/// refusals; budgets late so a refused action never spends one; GitOps last.
pub const CHAIN: &[(&str, Rule)] = &[
    ("feature", feature::check),
    ("condition", condition::check),
    ("system_namespace", system_namespace::check),
    ("mirror_pod", mirror_pod::check),
    ("daemonset", daemonset::check),
    ("opt_out", opt_out::check),
    // A storm trips both the breaker and the minimum of ready replicas; the breaker speaks first
    // because its refusal says what is going on (the signal is suspect) and escalates.
    ("breaker", breaker::check),
    ("storm_window", storm_window::check),
    ("min_ready", min_ready::check),
    ("cooldown", cooldown::check),
    ("loops", loops::check),
    ("budget", budget::check),
    // Last: a GitOps-managed workload's change is proposed (a pull request) only where every
    // other rule would have let it be made live, so a proposal is the live plan.
    ("gitops", gitops::check),
];

pub fn chain(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    for (_, rule) in CHAIN {
        rule(input, policy, action)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared fixtures for the rule tests.
    use std::collections::BTreeMap;

    use crate::decide::{
        ActionKind, AllowedActions, BytesChange, Facts, History, PlannedAction, PodTarget,
        PolicyView, WorkloadTarget,
    };
    use crate::finding::{Finding, FindingKind, PodRef, Transition, WorkloadRef};
    use crate::incident::IncidentKey;

    pub fn finding(kind: FindingKind) -> Finding {
        Finding {
            id: "id".into(),
            node: "node-a".into(),
            kind,
            transition: Transition::Started,
            pod: Some(PodRef {
                namespace: "prod".into(),
                name: "api-1".into(),
                uid: "u1".into(),
            }),
            owner: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "api".into(),
            }),
            container: Some("app".into()),
            reason: kind.as_str().into(),
            message: String::new(),
            restart_count: 3,
            exit_code: Some(1),
            image: None,
            observed_at_ms: 0,
            log_lines: vec![],
            log_truncated: false,
        }
    }

    pub fn policy() -> PolicyView {
        PolicyView {
            namespace: "prod".into(),
            name: "api-prod".into(),
            dry_run: false,
            restart_stuck_pods: true,
            bump_memory_percent: Some(20),
            memory_min_increase_bytes: 100 << 20,
            memory_max_limit_bytes: Some(1 << 30),
            image_mirror: None,
            min_ready_replicas: 2,
            cooldown_ms: 300_000,
            max_repeats: 3,
            max_unhealthy_percent: 50,
            storm_window_ms: 30_000,
            budgets: vec![],
        }
    }

    pub fn facts() -> Facts {
        Facts {
            condition_holds: true,
            desired_replicas: 3,
            ready_replicas: 2,
            memory_limit_bytes: Some(256 << 20),
            container_in_template: true,
            // Known for longer than the storm window.
            incident_age_ms: 60_000,
            ..Facts::default()
        }
    }

    pub fn restart() -> PlannedAction {
        action(ActionKind::RestartPod)
    }

    /// A plan step of `kind` on the fixture's pod, workload or node.
    pub fn action(kind: ActionKind) -> PlannedAction {
        let pod = PodTarget {
            namespace: "prod".into(),
            name: "api-1".into(),
            uid: "u1".into(),
        };
        let workload = WorkloadTarget {
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "api".into(),
        };
        let reason = String::new();
        match kind {
            ActionKind::RestartPod => PlannedAction::RestartPod { pod, reason },
            ActionKind::EvictPod => PlannedAction::EvictPod { pod, reason },
            ActionKind::BumpMemory => PlannedAction::BumpMemory {
                workload,
                container: "app".into(),
                limit: BytesChange {
                    from: Some(256 << 20),
                    to: 356 << 20,
                },
                request: None,
                reason,
            },
            ActionKind::MirrorImage => PlannedAction::MirrorImage {
                workload,
                container: "app".into(),
                from: "registry.example.com/api:1".into(),
                to: "mirror.local/api:1".into(),
                reason,
            },
            ActionKind::CordonNode => PlannedAction::CordonNode {
                node: "node-a".into(),
                reason,
            },
            ActionKind::UncordonNode => PlannedAction::UncordonNode {
                node: "node-a".into(),
                reason,
            },
            ActionKind::ScaleUp | ActionKind::ScaleDown => PlannedAction::Scale {
                workload,
                from: 3,
                to: if kind == ActionKind::ScaleUp { 4 } else { 2 },
                reason,
            },
        }
    }

    pub fn key() -> IncidentKey {
        IncidentKey::for_finding(&finding(FindingKind::CrashLoopBackOff))
            .unwrap_or_else(|_| unreachable!())
    }

    pub fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    /// Runs `check` with the defaults overridden by `f`; every action allowed.
    pub fn run(
        check: super::Rule,
        facts: &Facts,
        history: &History,
        policy: &PolicyView,
        action: &PlannedAction,
        now_ms: i64,
    ) -> Result<(), crate::decide::RefusalReason> {
        let all = AllowedActions::all();
        refusal(check, facts, history, policy, action, &all, now_ms).map_err(|r| r.reason)
    }

    /// Runs `check` with the allowed actions given, returning the whole refusal.
    pub fn refusal(
        check: super::Rule,
        facts: &Facts,
        history: &History,
        policy: &PolicyView,
        action: &PlannedAction,
        allowed: &AllowedActions,
        now_ms: i64,
    ) -> Result<(), crate::decide::Refusal> {
        let f = finding(FindingKind::CrashLoopBackOff);
        let k = key();
        let input = crate::decide::Input {
            incident: &k,
            finding: &f,
            policy: Some(policy),
            facts,
            history,
            cluster_budgets: &[],
            allowed,
            now_ms,
        };
        check(&input, policy, action)
    }
}
