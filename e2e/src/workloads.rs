//! Workloads for tests.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::wait::poll_until;

/// Creates a one-replica Deployment `name` pinned to `node` (pod labels `app=<name>` plus `labels`)
/// and returns its pod's name once the pod runs.
pub async fn single_pod_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    labels: serde_json::Value,
    image: &str,
) -> anyhow::Result<String> {
    let mut pod_labels = if labels.is_object() {
        labels
    } else {
        json!({})
    };
    pod_labels["app"] = json!(name);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": pod_labels},
                              "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                       "containers": [{"name": "app", "image": image}]}}},
    }))?;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &d)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("app={name}"));
    let running = |pods: Api<Pod>, lp: ListParams| async move {
        let list = pods.list(&lp).await?;
        Ok::<_, anyhow::Error>(
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .and_then(|p| p.metadata.name),
        )
    };
    poll_until("pod running", Duration::from_secs(90), || {
        let (pods, lp) = (pods.clone(), lp.clone());
        async move { Ok(running(pods, lp).await?.is_some()) }
    })
    .await?;
    running(pods, lp).await?.context("the pod went away")
}
