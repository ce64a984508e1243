//! What a subcommand is asked about: `pod/NAME`, `deploy/NAME`, `sts/NAME`, `ds/NAME` (kubectl's
//! short names and full kinds), and the workload and pods behind it as the controller sees them.

use std::collections::BTreeMap;

use auto_agent_controller::cluster::facts::{owning_workload, selector_of};
use auto_agent_controller::cluster::workloads;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

/// The kind and name on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRef {
    /// Pod, Deployment, StatefulSet or DaemonSet.
    pub kind: &'static str,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0:?} is not KIND/NAME (for example pod/api-7d9f or deploy/api)")]
    Shape(String),
    #[error("unknown kind {0:?}: use pod, deploy, sts or ds (or their full names)")]
    Kind(String),
}

impl TargetRef {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let (kind, name) = text
            .split_once('/')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| TargetError::Shape(text.to_owned()))?;
        // `deployment.apps/api` and `deployments.apps/api` as kubectl prints them.
        let kind_only = kind.split('.').next().unwrap_or(kind).to_ascii_lowercase();
        let kind = match kind_only.as_str() {
            "pod" | "pods" | "po" => "Pod",
            "deploy" | "deployment" | "deployments" => "Deployment",
            "sts" | "statefulset" | "statefulsets" => "StatefulSet",
            "ds" | "daemonset" | "daemonsets" => "DaemonSet",
            _ => return Err(TargetError::Kind(kind.to_owned())),
        };
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }
}

/// A workload (or a bare pod) and its pods, read from the API.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub namespace: String,
    /// Deployment, StatefulSet, DaemonSet, or Pod for a pod no such workload owns.
    pub kind: String,
    pub name: String,
    /// The labels its pods carry (the template's), which policies select on.
    pub pod_labels: BTreeMap<String, String>,
    pub pods: Vec<Pod>,
    /// The pod the user named, when they named one.
    pub named_pod: Option<String>,
}

impl Resolved {
    /// `Kind/namespace/name`, as the ledger and the records name targets.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Reads the target; `Ok(None)` when it does not exist.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    target: &TargetRef,
) -> anyhow::Result<Option<Resolved>> {
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (kind, name, named_pod) = if target.kind == "Pod" {
        let Some(pod) = pods_api.get_opt(&target.name).await? else {
            return Ok(None);
        };
        match owning_workload(&pod) {
            Some((kind, name))
                if matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") =>
            {
                (kind, name, Some(target.name.clone()))
            }
            // A bare pod (or one whose owner the agent does not change): the pod is the target.
            _ => {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                return Ok(Some(Resolved {
                    namespace: namespace.to_owned(),
                    kind: "Pod".into(),
                    name: target.name.clone(),
                    pod_labels: labels,
                    pods: vec![pod],
                    named_pod: Some(target.name.clone()),
                }));
            }
        }
    } else {
        (target.kind.to_owned(), target.name.clone(), None)
    };
    let Some(w) = workloads::fetch(client, namespace, &kind, &name).await? else {
        return Ok(None);
    };
    let pod_labels = w
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut pods = Vec::new();
    if let Some(selector) = w.selector.as_ref().map(selector_of).transpose()? {
        for pod in pods_api.list(&ListParams::default()).await?.items {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let owned = owning_workload(&pod).is_some_and(|(k, n)| k == kind && n == name);
            if owned && selector.matches(&labels) {
                pods.push(pod);
            }
        }
    }
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(Some(Resolved {
        namespace: namespace.to_owned(),
        kind,
        name,
        pod_labels,
        pods,
        named_pod,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_spellings_parse_and_anything_else_is_refused_with_why() {
        let ok = [
            ("pod/api-1", "Pod", "api-1"),
            ("po/api-1", "Pod", "api-1"),
            ("deploy/api", "Deployment", "api"),
            ("deployment.apps/api", "Deployment", "api"),
            ("Deployments/api", "Deployment", "api"),
            ("sts/db", "StatefulSet", "db"),
            ("daemonset/agent", "DaemonSet", "agent"),
        ];
        for (text, kind, name) in ok {
            assert_eq!(
                TargetRef::parse(text),
                Ok(TargetRef {
                    kind,
                    name: name.into()
                }),
                "{text}"
            );
        }
        for text in ["api", "/api", "deploy/", "deploy/a/b"] {
            assert_eq!(TargetRef::parse(text), Err(TargetError::Shape(text.into())));
        }
        assert_eq!(
            TargetRef::parse("job/x"),
            Err(TargetError::Kind("job".into()))
        );
    }
}
