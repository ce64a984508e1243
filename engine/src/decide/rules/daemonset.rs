//! DaemonSet pods are never evicted: the DaemonSet would put them right back on the same node.

use crate::decide::{ActionKind, Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, _: &PolicyView, action: &PlannedAction) -> Result<(), Refusal> {
    if action.kind() == ActionKind::EvictPod && input.facts.daemonset_pod {
        return Err(Refusal {
            reason: RefusalReason::DaemonSetPod,
            message: "DaemonSet pods are not evicted".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, Facts, History, RefusalReason};

    #[test]
    fn daemonset_pods_are_not_evicted_but_may_restart() {
        let ds = Facts {
            daemonset_pod: true,
            ..facts()
        };
        let evict = action(ActionKind::EvictPod);
        assert_eq!(
            run(super::check, &ds, &History::default(), &policy(), &evict, 0),
            Err(RefusalReason::DaemonSetPod)
        );
        assert_eq!(
            run(
                super::check,
                &ds,
                &History::default(),
                &policy(),
                &restart(),
                0
            ),
            Ok(())
        );
        assert_eq!(
            run(
                super::check,
                &facts(),
                &History::default(),
                &policy(),
                &evict,
                0
            ),
            Ok(())
        );
    }
}
