//! Scaling goes through the same safety rules as pod remediations, as far as they apply: the
//! scaling loop calls `admit` with its planned `Scale` before reserving it in the ledger. Feature
//! gating, opt-out and budgets (every scope) apply; the rest of the chain is about pods that fail.

use std::collections::BTreeMap;

use super::budget::{BudgetLimit, History, effective_budgets};
use super::rules::{opted_out, within_budgets};
use super::{AllowedActions, PlannedAction, Refusal, RefusalReason};

/// Everything one admission looks at.
#[derive(Clone, Debug)]
pub struct ScaleAdmission<'a> {
    /// The planned `PlannedAction::Scale`.
    pub action: &'a PlannedAction,
    pub workload_annotations: &'a BTreeMap<String, String>,
    /// `namespace/name` of the policy.
    pub policy: &'a str,
    /// The policy's budgets; defaults fill in what it leaves out.
    pub policy_budgets: &'a [BudgetLimit],
    pub cluster_budgets: &'a [BudgetLimit],
    pub allowed: &'a AllowedActions,
    pub history: &'a History,
    pub now_ms: i64,
}

/// `Ok` when the scale may be reserved and carried out, else why not. Rules run in the chain's
/// order: feature, opt-out, budgets.
pub fn admit(a: &ScaleAdmission<'_>) -> Result<(), Refusal> {
    if !matches!(a.action, PlannedAction::Scale { .. }) {
        return Err(Refusal {
            reason: RefusalReason::NotSupported,
            message: format!(
                "scale admission admits Scale only, not {}",
                a.action.kind().as_str()
            ),
        });
    }
    let kind = a.action.kind();
    a.allowed.permit(kind)?;
    opted_out(&[a.workload_annotations], kind.is_disruptive())?;
    let limits = effective_budgets(a.policy_budgets)
        .into_iter()
        .chain(a.cluster_budgets.iter().copied());
    within_budgets(
        a.history,
        limits,
        kind,
        &a.action.target().to_string(),
        a.policy,
        a.now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{PodTarget, RefusalReason};

    #[test]
    fn only_scale_actions_are_admitted() {
        let restart = PlannedAction::RestartPod {
            pod: PodTarget::default(),
            reason: String::new(),
        };
        let a = ScaleAdmission {
            action: &restart,
            workload_annotations: &BTreeMap::new(),
            policy: "prod/p",
            policy_budgets: &[],
            cluster_budgets: &[],
            allowed: &AllowedActions::all(),
            history: &History::default(),
            now_ms: 0,
        };
        assert_eq!(
            admit(&a).map_err(|r| r.reason),
            Err(RefusalReason::NotSupported)
        );
    }
}
