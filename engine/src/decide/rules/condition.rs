//! Findings are hints: act only if the condition still holds when re-read from the API.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, _: &PolicyView, _: &PlannedAction) -> Result<(), Refusal> {
    if input.facts.condition_holds {
        Ok(())
    } else {
        Err(Refusal {
            reason: RefusalReason::ConditionCleared,
            message: "the condition no longer holds".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{Facts, History, RefusalReason};

    #[test]
    fn acts_only_while_the_condition_holds() {
        let p = policy();
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
        let cleared = Facts {
            condition_holds: false,
            ..facts()
        };
        assert_eq!(
            run(
                super::check,
                &cleared,
                &History::default(),
                &p,
                &restart(),
                0
            ),
            Err(RefusalReason::ConditionCleared)
        );
    }
}
