//! Loop detection: the same action on the same incident `maxRepeats` times within the loop window
//! did not cure it; stop and escalate instead of repeating.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

/// Actions older than this no longer count as the same loop.
pub const LOOP_WINDOW_MS: i64 = 3_600_000;

pub fn check(
    input: &Input<'_>,
    policy: &PolicyView,
    action: &PlannedAction,
) -> Result<(), Refusal> {
    let repeats = input.history.repeats(
        input.incident.as_str(),
        action.kind(),
        input.now_ms - LOOP_WINDOW_MS,
    );
    if repeats >= policy.max_repeats {
        return Err(Refusal {
            reason: RefusalReason::LoopDetected,
            message: format!(
                "{} done {repeats} times in the last hour without recovery; escalating",
                action.kind().as_str()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, ActionRecord, History, RefusalReason};

    #[test]
    fn stops_after_max_repeats_within_the_window() {
        let mut h = History::default();
        for at in [0, 600_000, 1_200_000] {
            h.record(ActionRecord {
                at_ms: at,
                action: ActionKind::RestartPod,
                target: "Deployment/prod/api".into(),
                namespace: "prod".into(),
                policy: "prod/api-prod".into(),
                incident: key().as_str().into(),
            });
        }
        let p = policy(); // max_repeats 3
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 1_800_000),
            Err(RefusalReason::LoopDetected)
        );
        // Once the first one is older than the window, only two count.
        assert_eq!(
            run(super::check, &facts(), &h, &p, &restart(), 3_600_001),
            Ok(())
        );
    }
}
