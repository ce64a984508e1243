//! Workloads managed by Argo CD or Flux are not live-patched (self-heal would revert the change);
//! the change is proposed instead (pull requests come with the GitOps work).

use crate::decide::{ActionKind, Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, _: &PolicyView, action: &PlannedAction) -> Result<(), Refusal> {
    let patches_spec = matches!(
        action.kind(),
        ActionKind::BumpMemory | ActionKind::MirrorImage
    );
    if patches_spec && input.facts.gitops_managed {
        return Err(Refusal {
            reason: RefusalReason::GitOpsManaged,
            message: format!(
                "the workload is managed by GitOps; proposed change: {}",
                action.reason()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{ActionKind, Facts, History, RefusalReason};

    #[test]
    fn gitops_workloads_get_proposals_not_patches() {
        let managed = Facts {
            gitops_managed: true,
            ..facts()
        };
        let bump = action(ActionKind::BumpMemory);
        assert_eq!(
            run(
                super::check,
                &managed,
                &History::default(),
                &policy(),
                &bump,
                0
            ),
            Err(RefusalReason::GitOpsManaged)
        );
        // Deleting a pod is not a spec change: GitOps does not revert it.
        assert_eq!(
            run(
                super::check,
                &managed,
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
                &bump,
                0
            ),
            Ok(())
        );
    }
}
