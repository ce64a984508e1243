//! Destructive actions need enough ready replicas left (VPA's updater uses 2).

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    if action.kind().is_disruptive() && input.facts.ready_replicas < policy.min_ready_replicas {
        return Err(Refusal {
            reason: RefusalReason::TooFewReadyReplicas,
            message: format!(
                "{} ready replicas, the policy needs at least {} before a destructive action",
                input.facts.ready_replicas, policy.min_ready_replicas
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, Facts, History, PolicyView, RefusalReason};

    #[test]
    fn min_ready_table() {
        let bump = action(ActionKind::BumpMemory);
        let cases = [
            (2, 2, restart(), Ok(())),
            (1, 2, restart(), Err(RefusalReason::TooFewReadyReplicas)),
            (0, 0, restart(), Ok(())),
            (1, 2, bump, Ok(())),
        ];
        for (ready, min, action, want) in cases {
            let f = Facts {
                ready_replicas: ready,
                ..facts()
            };
            let p = PolicyView {
                min_ready_replicas: min,
                ..policy()
            };
            assert_eq!(
                run(super::check, &f, &History::default(), &p, &action, 0),
                want,
                "ready {ready} min {min}"
            );
        }
    }
}
