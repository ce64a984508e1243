//! One incident is acted on at most once per cooldown.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, policy: &PolicyView, _: &PlannedAction) -> Result<(), Refusal> {
    if let Some(last) = input.history.last_for_incident(input.incident.as_str())
        && input.now_ms < last + policy.cooldown_ms
    {
        return Err(Refusal {
            reason: RefusalReason::Cooldown,
            message: format!(
                "last action on this incident {} s ago; cooldown {} s",
                (input.now_ms - last) / 1000,
                policy.cooldown_ms / 1000
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
    fn cooldown_over_time() {
        let mut h = History::default();
        h.record(ActionRecord {
            at_ms: 1_000_000,
            action: ActionKind::RestartPod,
            target: "Deployment/prod/api".into(),
            namespace: "prod".into(),
            policy: "prod/api-prod".into(),
            incident: key().as_str().into(),
        });
        let p = policy();
        assert_eq!(
            run(
                super::check,
                &facts(),
                &h,
                &p,
                &restart(),
                1_000_000 + 299_999
            ),
            Err(RefusalReason::Cooldown)
        );
        assert_eq!(
            run(
                super::check,
                &facts(),
                &h,
                &p,
                &restart(),
                1_000_000 + 300_000
            ),
            Ok(())
        );
        assert_eq!(
            run(
                super::check,
                &facts(),
                &History::default(),
                &p,
                &restart(),
                0
            ),
            Ok(())
        );
    }
}
