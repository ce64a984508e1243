//! Budgets: per target, per namespace, per policy and cluster-wide, per action type. Never
//! exceeded.

use crate::decide::budget::{BudgetScope, effective_budgets};
use crate::decide::{
    ActionKind, BudgetLimit, History, Input, PlannedAction, PolicyView, Refusal, RefusalReason,
    workload_target,
};

pub fn check(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    let limits = effective_budgets(&policy.budgets)
        .into_iter()
        .chain(input.cluster_budgets.iter().copied());
    within_budgets(
        input.history,
        limits,
        action.kind(),
        // The ledger records pod actions against the workload, so budgets count per workload.
        &workload_target(input.finding),
        &format!("{}/{}", policy.namespace, policy.name),
        input.now_ms,
    )
}

/// `Ok` when every one of `limits` for `action` has room for this target and policy, else the
/// `BudgetExhausted` refusal for the first that has none.
pub(crate) fn within_budgets(
    history: &History,
    limits: impl IntoIterator<Item = BudgetLimit>,
    action: ActionKind,
    target: &str,
    policy_id: &str,
    now_ms: i64,
) -> Result<(), Refusal> {
    match history.exhausted(limits, action, target, policy_id, now_ms) {
        Some((limit, used)) => Err(Refusal {
            reason: RefusalReason::BudgetExhausted,
            message: exhausted_message(action, &limit, used),
        }),
        None => Ok(()),
    }
}

/// `RestartPod budget for this policy used up: 5 of 5 in 3600 s`.
pub fn exhausted_message(action: ActionKind, limit: &BudgetLimit, used: u32) -> String {
    let scope = match limit.scope {
        BudgetScope::Target => "this workload",
        BudgetScope::Namespace => "this namespace",
        BudgetScope::Policy => "this policy",
        BudgetScope::Cluster => "the cluster",
    };
    format!(
        "{} budget for {scope} used up: {used} of {} in {} s",
        action.as_str(),
        limit.max,
        limit.window_ms / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::budget::{BudgetLimit, BudgetScope};
    use crate::decide::{ActionKind, ActionRecord, History, PolicyView, RefusalReason};

    fn rec(at: i64, target: &str, policy: &str) -> ActionRecord {
        ActionRecord {
            at_ms: at,
            action: ActionKind::RestartPod,
            target: target.into(),
            namespace: String::new(),
            policy: policy.into(),
            incident: format!("i-{at}"),
        }
    }

    #[test]
    fn default_target_budget_is_three_per_hour() {
        let mut h = History::default();
        let p = policy();
        for at in [0, 1_000, 2_000] {
            assert_eq!(run(super::check, &facts(), &h, &p, &restart(), at), Ok(()));
            h.record(rec(at, "Deployment/prod/api", "prod/api-prod"));
        }
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 3_000),
            Err(RefusalReason::BudgetExhausted)
        );
        // The first token returns an hour after it was spent.
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 3_600_000),
            Ok(())
        );
    }

    #[test]
    fn policy_budgets_override_defaults_and_scopes_count_separately() {
        let p = PolicyView {
            budgets: vec![
                BudgetLimit {
                    action: ActionKind::RestartPod,
                    scope: BudgetScope::Target,
                    max: 10,
                    window_ms: 3_600_000,
                },
                BudgetLimit {
                    action: ActionKind::RestartPod,
                    scope: BudgetScope::Policy,
                    max: 2,
                    window_ms: 60_000,
                },
            ],
            ..policy()
        };
        let mut h = History::default();
        h.record(rec(0, "Deployment/prod/other", "prod/api-prod"));
        assert_eq!(run(super::check, &facts(), &h, &p, &restart(), 10), Ok(()));
        h.record(rec(5, "Deployment/prod/third", "prod/api-prod"));
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 10),
            Err(RefusalReason::BudgetExhausted)
        );
        // Another policy's actions do not count against this one.
        let mut other = History::default();
        other.record(rec(0, "Deployment/x/y", "x/other"));
        other.record(rec(1, "Deployment/x/z", "x/other"));
        assert_eq!(
            run(super::check, &facts(), &other, &p, &restart(), 10),
            Ok(())
        );
        // The policy window is a minute.
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 60_001),
            Ok(())
        );
    }

    #[test]
    fn namespace_budgets_count_other_workloads_in_the_namespace() {
        let p = PolicyView {
            budgets: vec![BudgetLimit {
                action: ActionKind::RestartPod,
                scope: BudgetScope::Namespace,
                max: 1,
                window_ms: 3_600_000,
            }],
            ..policy()
        };
        let mut elsewhere = History::default();
        elsewhere.record(rec(0, "Deployment/dev/api", "prod/api-prod"));
        assert_eq!(
            run(super::check, &facts(), &elsewhere, &p, &restart(), 10),
            Ok(())
        );
        let mut same = History::default();
        same.record(rec(0, "StatefulSet/prod/db", "prod/other"));
        assert_eq!(
            run(super::check, &facts(), &same, &p, &restart(), 10),
            Err(RefusalReason::BudgetExhausted)
        );
        let limit = p.budgets[0];
        assert_eq!(
            super::exhausted_message(ActionKind::RestartPod, &limit, 1),
            "RestartPod budget for this namespace used up: 1 of 1 in 3600 s"
        );
    }

    #[test]
    fn a_zero_budget_forbids_the_action() {
        let p = PolicyView {
            budgets: vec![BudgetLimit {
                action: ActionKind::RestartPod,
                scope: BudgetScope::Target,
                max: 0,
                window_ms: 60_000,
            }],
            ..policy()
        };
        assert_eq!(
            run(
                super::check,
                &facts(),
                &History::default(),
                &p,
                &restart(),
                0
            ),
            Err(RefusalReason::BudgetExhausted)
        );
    }
}
