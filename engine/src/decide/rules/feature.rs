//! Actions the installation does not allow (`features.*` off, so no RBAC for them) are refused
//! before anything else: executing them would only fail with 403.

use crate::decide::{Input, PlannedAction, PolicyView, Refusal};

pub fn check(input: &Input<'_>, _: &PolicyView, action: &PlannedAction) -> Result<(), Refusal> {
    input.allowed.permit(action.kind())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, AllowedActions, History, RefusalReason};

    #[test]
    fn feature_table() {
        use ActionKind::*;
        let cases = [
            (AllowedActions::all(), RestartPod, true),
            (AllowedActions::all(), ScaleDown, true),
            (AllowedActions::default(), RestartPod, false),
            (AllowedActions::from_kinds([BumpMemory]), BumpMemory, true),
            (AllowedActions::from_kinds([BumpMemory]), MirrorImage, false),
            (AllowedActions::from_kinds([ScaleUp]), ScaleDown, false),
            (
                AllowedActions::from_kinds([CordonNode, EvictPod]),
                EvictPod,
                true,
            ),
        ];
        let (facts, history, p) = (facts(), History::default(), policy());
        for (allowed, kind, ok) in cases {
            match refusal(
                super::check,
                &facts,
                &history,
                &p,
                &action(kind),
                &allowed,
                0,
            ) {
                Ok(()) => assert!(ok, "{kind:?} passed {allowed:?}"),
                Err(r) => {
                    assert!(!ok, "{kind:?} refused by {allowed:?}");
                    assert_eq!(r.reason, RefusalReason::FeatureDisabled);
                    assert_eq!(
                        r.message,
                        format!(
                            "{} is planned, but this installation has features.{} off \
                             (no RBAC for it)",
                            kind.as_str(),
                            kind.feature()
                        )
                    );
                }
            }
        }
    }

    #[test]
    fn all_allows_every_kind() {
        for kind in ActionKind::ALL {
            assert!(AllowedActions::all().allows(kind), "{kind:?}");
        }
    }
}
