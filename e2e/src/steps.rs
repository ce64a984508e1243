//! Steps the remediation tests share: workloads pinned to one fake node, policies applied with
//! kubectl, rollouts, and the Events the agent writes. They panic on failure (test code).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::Cluster;
use crate::wait::poll_until;

/// How long a step waits.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// A Deployment of `replicas` pods pinned to `node`, labelled `app=<name>` plus `labels`.
pub fn deployment_on(
    node: &str,
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    memory: Option<&str>,
) -> Deployment {
    let mut container = json!({"name": "app", "image": "registry.example.com/app:1"});
    if let Some(m) = memory {
        container["resources"] = json!({"limits": {"memory": m}, "requests": {"memory": "128Mi"}});
    }
    let mut pod_labels = labels.clone();
    pod_labels["app"] = json!(name);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": pod_labels, "annotations": annotations},
                              "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [container]}}},
    }))
    .expect("test step")
}

pub async fn ready_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("test step")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .collect()
}

/// Creates the Deployment and waits until it reports `replicas` ready.
pub async fn rollout(client: &Client, ns: &str, d: Deployment) {
    let name = d.metadata.name.clone().expect("test step");
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &d)
        .await
        .expect("test step");
    poll_until("deployment ready", TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move { Ok(api.get(&name).await?.status.and_then(|s| s.ready_replicas) == Some(want)) }
    })
    .await
    .expect("test step");
}

pub fn apply_policy(cluster: &Cluster, ns: &str, name: &str, spec: serde_json::Value) {
    let doc = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                     "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))
        .expect("test step");
    assert!(ok, "{err}");
}

/// Event reasons per regarded object name.
pub async fn events(client: &Client, ns: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("test step");
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in list.items {
        let name = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        out.entry(name)
            .or_default()
            .push((e.reason.unwrap_or_default(), e.note.unwrap_or_default()));
    }
    out
}

pub async fn wait_event(client: &Client, ns: &str, object: &str, reason: &str) -> String {
    let mut note = String::new();
    poll_until(&format!("{reason} event on {object}"), TIMEOUT, || {
        let client = client.clone();
        async move {
            Ok(events(&client, ns)
                .await
                .get(object)
                .is_some_and(|v| v.iter().any(|(r, _)| r == reason)))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    if let Some(v) = events(client, ns).await.get(object) {
        note = v
            .iter()
            .find(|(r, _)| r == reason)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
    }
    note
}
