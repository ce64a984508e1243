//! What an object's state says, as pure functions of the objects read from the API: whether a
//! finding's condition still holds on the re-read pod, whether GitOps manages a workload, and which
//! workload owns a pod (for bounded metric labels), and a label selector in the engine's terms.

use auto_agent_engine::selector::{Selector, SelectorError};
use auto_agent_engine::{Finding, FindingKind};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels and annotations by which Argo CD and Flux mark what they manage.
const GITOPS_ANNOTATIONS: &[&str] = &[
    "argocd.argoproj.io/tracking-id",
    "argocd.argoproj.io/managed-by",
];
const GITOPS_LABELS: &[&str] = &[
    "kustomize.toolkit.fluxcd.io/name",
    "helm.toolkit.fluxcd.io/name",
    "argocd.argoproj.io/instance",
];

/// Whether Argo CD or Flux manages the object (a live patch would be reverted).
pub fn is_gitops_managed(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| GITOPS_ANNOTATIONS.iter().any(|k| a.contains_key(*k)))
        || meta
            .labels
            .as_ref()
            .is_some_and(|l| GITOPS_LABELS.iter().any(|k| l.contains_key(*k)))
}

/// Whether the container is in the state the finding reported.
pub fn condition_holds(pod: &Pod, f: &Finding) -> bool {
    let container = f.container.as_deref().unwrap_or_default();
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    let Some(cs) = statuses.into_iter().find(|c| c.name == container) else {
        return false;
    };
    let waiting = cs
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    let terminated_oom = |t: Option<&k8s_openapi::api::core::v1::ContainerStateTerminated>| {
        t.and_then(|t| t.reason.as_deref()) == Some("OOMKilled")
    };
    match f.kind {
        FindingKind::CrashLoopBackOff => waiting == Some("CrashLoopBackOff"),
        FindingKind::OomKilled => {
            terminated_oom(cs.state.as_ref().and_then(|s| s.terminated.as_ref()))
                || terminated_oom(cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
        }
        FindingKind::ImagePullBackOff => matches!(
            waiting,
            Some("ImagePullBackOff" | "ErrImagePull" | "InvalidImageName")
        ),
        FindingKind::CreateContainerConfigError => waiting == Some("CreateContainerConfigError"),
        _ => false,
    }
}

/// The workload that owns a pod, as `(kind, name)`, from its controller reference alone: a
/// ReplicaSet named `<deployment>-<pod-template-hash>` stands for its Deployment. Used for metric
/// labels, which must name workloads (bounded), never pods.
pub fn owning_workload(pod: &Pod) -> Option<(String, String)> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    if owner.kind == "ReplicaSet"
        && let Some(deployment) = hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}")))
    {
        return Some(("Deployment".to_owned(), deployment.to_owned()));
    }
    Some((owner.kind.clone(), owner.name.clone()))
}

/// A Kubernetes label selector as the engine's pure `Selector` (unknown operators refused).
pub fn selector_of(ls: &LabelSelector) -> Result<Selector, SelectorError> {
    let labels = ls.match_labels.clone().unwrap_or_default();
    let exprs: Vec<(String, String, Vec<String>)> = ls
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            (
                e.key.clone(),
                e.operator.clone(),
                e.values.clone().unwrap_or_default(),
            )
        })
        .collect();
    Selector::new(labels, &exprs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("api-5d8f7-x2x9z".into()),
                labels: hash.map(|h| [("pod-template-hash".to_owned(), h.to_owned())].into()),
                owner_references: owner.map(|(kind, name)| {
                    vec![OwnerReference {
                        kind: kind.into(),
                        name: name.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn owning_workload_names_the_workload_never_the_pod() {
        let cases = [
            (
                Some(("ReplicaSet", "api-5d8f7")),
                Some("5d8f7"),
                Some(("Deployment", "api")),
            ),
            (
                Some(("ReplicaSet", "api-5d8f7")),
                None,
                Some(("ReplicaSet", "api-5d8f7")),
            ),
            (
                Some(("ReplicaSet", "batch")),
                Some("5d8f7"),
                Some(("ReplicaSet", "batch")),
            ),
            (
                Some(("StatefulSet", "db")),
                None,
                Some(("StatefulSet", "db")),
            ),
            (
                Some(("DaemonSet", "agent")),
                Some("abc"),
                Some(("DaemonSet", "agent")),
            ),
            (None, None, None),
        ];
        for (owner, hash, want) in cases {
            let got = owning_workload(&pod(owner, hash));
            assert_eq!(
                got,
                want.map(|(k, n)| (k.to_owned(), n.to_owned())),
                "{owner:?} {hash:?}"
            );
        }
    }
}
