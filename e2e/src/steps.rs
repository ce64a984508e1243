//! Steps the remediation tests share: ready pods, policies applied with kubectl, and the Events
//! the agent writes (workloads: [`crate::workloads::Workload`]). They panic on failure (test code).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

use crate::Cluster;
use crate::wait::poll_until;

/// How long a step waits.
pub const TIMEOUT: Duration = Duration::from_secs(90);

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

/// The first container of a Deployment's pod template, as the API server holds it now.
pub async fn template_container(client: &Client, ns: &str, deployment: &str) -> Container {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(deployment)
        .await
        .expect("test step")
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .unwrap_or_else(|| panic!("{ns}/{deployment} has no container"))
}

/// A container's memory limit as written (`132Mi`), if it has one.
pub fn memory_limit(container: &Container) -> Option<&str> {
    container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| q.0.as_str())
}

pub fn apply_policy(cluster: &Cluster, ns: &str, name: &str, spec: serde_json::Value) {
    let doc = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                     "metadata": {"name": name, "namespace": ns}, "spec": spec});
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))
        .expect("test step");
    assert!(ok, "{err}");
}

/// How many times Events with `reason` were recorded per regarded object name, an Event series
/// counted as its count (a repeated Event is one object with a rising count).
pub async fn event_counts(client: &Client, ns: &str, reason: &str) -> BTreeMap<String, i32> {
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("test step");
    let mut out = BTreeMap::new();
    for e in list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
    {
        let name = e
            .regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default();
        *out.entry(name).or_default() += e
            .series
            .as_ref()
            .map(|s| s.count)
            .or(e.deprecated_count)
            .unwrap_or(1);
    }
    out
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
