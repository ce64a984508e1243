//! `kube-system` is touched only by a policy that lives there (its owners opted in).

use crate::decide::{Input, PlannedAction, PolicyView, Refusal, RefusalReason};

pub fn check(input: &Input<'_>, policy: &PolicyView, _: &PlannedAction) -> Result<(), Refusal> {
    let ns = input.finding.pod.as_ref().map(|p| p.namespace.as_str());
    if ns == Some("kube-system") && policy.namespace != "kube-system" {
        return Err(Refusal {
            reason: RefusalReason::SystemNamespace,
            message: "kube-system is only remediated by a policy in kube-system".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::decide::{History, Input, RefusalReason};
    use crate::finding::{FindingKind, PodRef};

    #[test]
    fn kube_system_needs_its_own_policy() {
        let mut f = finding(FindingKind::CrashLoopBackOff);
        f.pod = Some(PodRef {
            namespace: "kube-system".into(),
            name: "coredns-1".into(),
            uid: "u".into(),
        });
        let k = key();
        let facts = facts();
        let history = History::default();
        let outside = policy();
        let inside = crate::decide::PolicyView {
            namespace: "kube-system".into(),
            ..policy()
        };
        for (p, want) in [
            (&outside, Err(RefusalReason::SystemNamespace)),
            (&inside, Ok(())),
        ] {
            let i = Input {
                incident: &k,
                finding: &f,
                policy: Some(p),
                facts: &facts,
                history: &history,
                cluster_budgets: &[],
                allowed: &crate::decide::AllowedActions::all(),
                now_ms: 0,
            };
            assert_eq!(super::check(&i, p, &restart()).map_err(|r| r.reason), want);
        }
        // Other namespaces are not this rule's business.
        assert_eq!(
            run(super::check, &facts, &history, &outside, &restart(), 0),
            Ok(())
        );
    }
}
