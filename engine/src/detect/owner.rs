//! The workload that owns a pod, without an API call: a ReplicaSet created by a Deployment is named
//! `<deployment>-<pod-template-hash>`, and its pods carry that hash as a label.

use crate::finding::WorkloadRef;

/// Resolves the pod's controller reference to the workload users think in.
pub fn resolve_owner(
    controller_kind: Option<&str>,
    controller_name: Option<&str>,
    pod_template_hash: Option<&str>,
) -> Option<WorkloadRef> {
    let (kind, name) = (controller_kind?, controller_name?);
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    if kind == "ReplicaSet"
        && let Some(hash) = pod_template_hash.filter(|h| !h.is_empty())
        && let Some(deployment) = name.strip_suffix(hash).and_then(|n| n.strip_suffix('-'))
        && !deployment.is_empty()
    {
        return Some(WorkloadRef {
            kind: "Deployment".into(),
            name: deployment.into(),
        });
    }
    Some(WorkloadRef {
        kind: kind.into(),
        name: name.into(),
    })
}
