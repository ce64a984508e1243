//! Opt-out annotations on the pod or its workload: `autoagent.io/ignore: "true"` stops every action;
//! cluster-autoscaler's `safe-to-evict: "false"` stops disruptive ones.

use std::collections::BTreeMap;

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub const IGNORE: &str = "autoagent.io/ignore";
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

pub fn check(input: &Input<'_>, _: &PolicyView, action: &PlannedAction) -> Result<(), Refusal> {
    let f = input.facts;
    opted_out(
        &[&f.pod_annotations, &f.workload_annotations],
        action.kind().is_disruptive(),
    )
}

/// Whether any of `annotations` opts out of an action (`disruptive`: one that takes capacity away).
pub(crate) fn opted_out(
    annotations: &[&BTreeMap<String, String>],
    disruptive: bool,
) -> Result<(), Refusal> {
    let has = |key: &str, value: &str| {
        annotations
            .iter()
            .any(|a| a.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value)))
    };
    if has(IGNORE, "true") {
        return Err(Refusal {
            reason: RefusalReason::OptedOut,
            message: format!("annotated {IGNORE}=true"),
        });
    }
    if disruptive && has(SAFE_TO_EVICT, "false") {
        return Err(Refusal {
            reason: RefusalReason::OptedOut,
            message: format!("annotated {SAFE_TO_EVICT}=false"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::{IGNORE, SAFE_TO_EVICT};
    use crate::decide::{ActionKind, Facts, History, RefusalReason};

    #[test]
    fn opt_out_table() {
        let bump = action(ActionKind::BumpMemory);
        let cases = [
            (annotations(&[]), annotations(&[]), restart(), Ok(())),
            (
                annotations(&[(IGNORE, "true")]),
                annotations(&[]),
                restart(),
                Err(RefusalReason::OptedOut),
            ),
            (
                annotations(&[]),
                annotations(&[(IGNORE, "TRUE")]),
                bump.clone(),
                Err(RefusalReason::OptedOut),
            ),
            (
                annotations(&[(IGNORE, "false")]),
                annotations(&[]),
                restart(),
                Ok(()),
            ),
            (
                annotations(&[(SAFE_TO_EVICT, "false")]),
                annotations(&[]),
                restart(),
                Err(RefusalReason::OptedOut),
            ),
            (
                annotations(&[(SAFE_TO_EVICT, "false")]),
                annotations(&[]),
                bump,
                Ok(()),
            ),
            (
                annotations(&[]),
                annotations(&[(SAFE_TO_EVICT, "true")]),
                restart(),
                Ok(()),
            ),
        ];
        for (pod, workload, action, want) in cases {
            let f = Facts {
                pod_annotations: pod.clone(),
                workload_annotations: workload.clone(),
                ..facts()
            };
            assert_eq!(
                run(super::check, &f, &History::default(), &policy(), &action, 0),
                want,
                "{pod:?} {workload:?} {:?}",
                action.kind()
            );
        }
    }
}
