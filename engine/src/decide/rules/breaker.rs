//! The disruption breaker: when too large a share of a workload's pods is unhealthy at once, the
//! signal is suspect (a bad rollout, a dependency down): report instead of taking pods away.
//! Unhealthy is the larger of not-ready replicas and pods known to be failing: readiness lags at
//! the start of a storm, the leader's open failures do not. One unhealthy pod is no storm (a
//! single-replica workload is 100% unhealthy whenever its pod fails); the minimum of ready replicas
//! speaks for it.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    let f = input.facts;
    if !action.kind().is_disruptive() || f.desired_replicas == 0 {
        return Ok(());
    }
    let unhealthy = f
        .desired_replicas
        .saturating_sub(f.ready_replicas)
        .max(f.failing_pods);
    let percent = unhealthy * 100 / f.desired_replicas;
    if unhealthy >= 2 && percent > policy.max_unhealthy_percent {
        return Err(Refusal {
            reason: RefusalReason::DisruptionBreaker,
            message: format!(
                "{unhealthy} of {} pods unhealthy ({percent}% > {}%): suspecting the signal, not disrupting",
                f.desired_replicas, policy.max_unhealthy_percent
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
    fn breaker_table() {
        let bump = action(ActionKind::BumpMemory);
        // (desired, ready, failing, max %, action, want)
        let cases = [
            (10, 9, 0, 50, restart(), Ok(())),
            (10, 5, 0, 50, restart(), Ok(())),
            (
                10,
                4,
                0,
                50,
                restart(),
                Err(RefusalReason::DisruptionBreaker),
            ),
            (50, 0, 0, 100, restart(), Ok(())),
            (10, 0, 0, 50, bump.clone(), Ok(())),
            (0, 0, 0, 50, restart(), Ok(())),
            // Readiness lags: every pod still ready, but the leader knows they are all failing.
            (
                40,
                40,
                40,
                50,
                restart(),
                Err(RefusalReason::DisruptionBreaker),
            ),
            (40, 40, 20, 50, restart(), Ok(())),
            (
                40,
                40,
                21,
                50,
                restart(),
                Err(RefusalReason::DisruptionBreaker),
            ),
            (40, 40, 1, 50, restart(), Ok(())),
            // One failing pod is no storm, whatever its share.
            (1, 0, 1, 50, restart(), Ok(())),
            (1, 1, 1, 50, restart(), Ok(())),
            (
                2,
                0,
                2,
                50,
                restart(),
                Err(RefusalReason::DisruptionBreaker),
            ),
            // The larger count decides.
            (
                10,
                4,
                2,
                50,
                restart(),
                Err(RefusalReason::DisruptionBreaker),
            ),
            (40, 40, 40, 50, bump, Ok(())),
            (
                40,
                40,
                40,
                50,
                action(ActionKind::EvictPod),
                Err(RefusalReason::DisruptionBreaker),
            ),
        ];
        for (desired, ready, failing, max, action, want) in cases {
            let f = Facts {
                desired_replicas: desired,
                ready_replicas: ready,
                failing_pods: failing,
                ..facts()
            };
            let p = PolicyView {
                max_unhealthy_percent: max,
                ..policy()
            };
            assert_eq!(
                run(super::check, &f, &History::default(), &p, &action, 0),
                want,
                "{ready}/{desired} ready, {failing} failing, max {max}"
            );
        }
    }
}
