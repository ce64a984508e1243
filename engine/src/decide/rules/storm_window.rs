//! The storm window: the first pod of a storm fails a little before the others, and before the
//! leader knows about them the breaker sees one failing pod and would let the action through. A
//! disruptive action on a replicated workload therefore waits until its failure has been known for
//! the policy's storm window; by then every pod failing in the storm is counted (`Settling`).

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    let f = input.facts;
    // A single replica has no storm to wait for: its one pod is all there is.
    if !action.kind().is_disruptive() || f.desired_replicas <= 1 {
        return Ok(());
    }
    if f.incident_age_ms < policy.storm_window_ms {
        let remaining = policy.storm_window_ms - f.incident_age_ms;
        return Err(Refusal {
            reason: RefusalReason::Settling,
            message: format!(
                "waiting {remaining} ms so that the disruption breaker sees every pod failing in \
                 this storm"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, AllowedActions, Facts, History, PolicyView, RefusalReason};

    #[test]
    fn storm_window_table() {
        use ActionKind::*;
        // (desired, age, window, action, want)
        let cases = [
            (3, 0, 30_000, RestartPod, Err(RefusalReason::Settling)),
            (3, 29_999, 30_000, RestartPod, Err(RefusalReason::Settling)),
            (3, 30_000, 30_000, RestartPod, Ok(())),
            (3, 90_000, 30_000, RestartPod, Ok(())),
            (3, 0, 0, RestartPod, Ok(())),
            (1, 0, 30_000, RestartPod, Ok(())),
            (0, 0, 30_000, RestartPod, Ok(())),
            (2, 0, 30_000, EvictPod, Err(RefusalReason::Settling)),
            (3, 0, 30_000, BumpMemory, Ok(())),
            (3, 0, 30_000, MirrorImage, Ok(())),
        ];
        for (desired, age, window, kind, want) in cases {
            let f = Facts {
                desired_replicas: desired,
                incident_age_ms: age,
                ..facts()
            };
            let p = PolicyView {
                storm_window_ms: window,
                ..policy()
            };
            assert_eq!(
                run(super::check, &f, &History::default(), &p, &action(kind), 0),
                want,
                "{kind:?}: {desired} desired, known {age} ms, window {window} ms"
            );
        }
    }

    #[test]
    fn says_how_long_it_waits_and_never_escalates() {
        let f = Facts {
            incident_age_ms: 10_000,
            ..facts()
        };
        let p = PolicyView {
            storm_window_ms: 30_000,
            ..policy()
        };
        let all = AllowedActions::all();
        let refusal = refusal(
            super::check,
            &f,
            &History::default(),
            &p,
            &restart(),
            &all,
            0,
        )
        .unwrap_err();
        assert_eq!(
            refusal.message,
            "waiting 20000 ms so that the disruption breaker sees every pod failing in this storm"
        );
        assert!(!refusal.reason.escalates());
        assert_eq!(refusal.reason.as_str(), "Settling");
    }
}
