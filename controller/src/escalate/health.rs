//! Whether an escalated pod incident is over: pod failures have no "cleared" edge, so the stage
//! asks the API server whether the workload is whole again (ready replicas >= desired; a bare pod
//! ready or gone) once no failure was seen for the quiet period.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::cluster::workloads;

/// `Kind/namespace/name` -> whether the workload is healthy now. Nodes are not judged here (their
/// cleared findings resolve them): `None`.
pub async fn healthy(client: &Client, target: &str) -> Result<Option<bool>, kube::Error> {
    let mut parts = target.splitn(3, '/');
    let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if kind == "Node" || namespace.is_empty() {
        return Ok(None);
    }
    if kind == "Pod" {
        let pod = Api::<Pod>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?;
        return Ok(Some(pod.is_none_or(|p| pod_ready(&p))));
    }
    Ok(workloads::fetch(client, namespace, kind, name)
        .await?
        .map(|w| w.ready >= w.desired))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
