//! Mirror (static) pods belong to the kubelet: deleting them does nothing useful. Never touched.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, _: &PolicyView, _: &PlannedAction) -> Result<(), Refusal> {
    if input.facts.is_mirror_pod {
        return Err(Refusal {
            reason: RefusalReason::MirrorPod,
            message: "mirror (static) pods are never touched".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{Facts, History, RefusalReason};

    #[test]
    fn mirror_pods_are_never_touched() {
        let mirror = Facts {
            is_mirror_pod: true,
            ..facts()
        };
        assert_eq!(
            run(
                super::check,
                &mirror,
                &History::default(),
                &policy(),
                &restart(),
                0
            ),
            Err(RefusalReason::MirrorPod)
        );
        assert_eq!(
            run(
                super::check,
                &facts(),
                &History::default(),
                &policy(),
                &restart(),
                0
            ),
            Ok(())
        );
    }
}
