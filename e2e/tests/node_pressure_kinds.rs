//! Node pressure beyond memory, and node dry-run, end to end with the real sensor and controller:
//! DiskPressure and PIDPressure each cordon the node a NodeRemediationPolicy selects and clearing
//! them uncordons it; a dry-run NodeRemediationPolicy reports its plan in a `DryRun` Event on the
//! node and writes nothing to it. The agents watch kwok-node-1; every policy selects that node by
//! its hostname only, so no other node is touched (and lets that one node be all of its selection
//! under pressure: `unhealthyThresholdPercent: 100`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::Setup;
use auto_agent_e2e::scenario::{self, NodePressure};
use auto_agent_e2e::wait::poll_until;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster-scoped NodeRemediationPolicy for `NODE` only, named after the test namespace.
fn node_policy(t: &Setup, conditions: &[&str], dry_run: bool) -> String {
    let name = format!("e2e-{}", t.ns());
    let nrp = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "NodeRemediationPolicy",
                     "metadata": {"name": name},
                     "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": NODE}},
                              "conditions": conditions, "cordon": true, "evict": false,
                              "maxUnavailableNodes": 1, "uncordonAfterSeconds": 5, "dryRun": dry_run,
                              // One node selected: any pressure is 100% of them; the breaker's
                              // storm guard is not what these tests are about.
                              "unhealthyThresholdPercent": 100}});
    t.apply(&nrp.to_string());
    name
}

/// No pressure, no cordon and no node policy of these tests left by an earlier run.
async fn clean(t: &Setup) {
    let admin = &t.admin;
    let (_, stale, _) = t
        .cluster
        .kubectl(&["get", "nrp", "-o", "name"], None)
        .unwrap();
    for name in stale
        .lines()
        .filter(|n| n.contains("/e2e-pressure-") || n.contains("/e2e-nodedry-"))
    {
        t.cluster.kubectl(&["delete", name], None).unwrap();
    }
    for p in [NodePressure::Memory, NodePressure::Disk, NodePressure::Pid] {
        scenario::node_pressure(admin, NODE, p, false)
            .await
            .unwrap();
    }
    Api::<Node>::all(admin.clone())
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(scenario::uncordon_patch()),
        )
        .await
        .unwrap();
}

/// Whether the node is cordoned, and by which policy.
async fn cordon(nodes: &Api<Node>) -> (bool, Option<String>) {
    let node = nodes.get(NODE).await.unwrap();
    (
        node.spec.and_then(|s| s.unschedulable).unwrap_or(false),
        node.metadata
            .annotations
            .and_then(|a| a.get("autoagent.io/cordoned-by").cloned()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_pid_pressure_cordon_and_clearing_uncordons() {
    let mut t = Setup::new("pressure", NODE).await;
    let admin = t.admin.clone();
    clean(&t).await;
    t.start_agents(1, Vec::new()).await;
    let name = node_policy(&t, &["DiskPressure", "PIDPressure"], false);
    let nodes: Api<Node> = Api::all(admin.clone());
    for pressure in [NodePressure::Disk, NodePressure::Pid] {
        scenario::node_pressure(&admin, NODE, pressure, true)
            .await
            .unwrap();
        poll_until(
            &format!("{} cordons", pressure.condition_type()),
            TIMEOUT,
            || {
                let nodes = nodes.clone();
                let name = name.clone();
                async move { Ok(cordon(&nodes).await == (true, Some(name))) }
            },
        )
        .await
        .unwrap();
        scenario::node_pressure(&admin, NODE, pressure, false)
            .await
            .unwrap();
        poll_until(
            &format!("{} cleared uncordons", pressure.condition_type()),
            TIMEOUT,
            || {
                let nodes = nodes.clone();
                async move { Ok(cordon(&nodes).await == (false, None)) }
            },
        )
        .await
        .unwrap();
    }
    t.cluster.kubectl(&["delete", "nrp", &name], None).unwrap();
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_node_policy_reports_its_plan_and_writes_nothing() {
    let mut t = Setup::new("nodedry", NODE).await;
    let admin = t.admin.clone();
    clean(&t).await;
    t.start_agents(1, Vec::new()).await;
    let name = node_policy(&t, &["MemoryPressure"], true);
    let nodes: Api<Node> = Api::all(admin.clone());
    let started = k8s_openapi::jiff::Timestamp::now();
    scenario::node_pressure(&admin, NODE, NodePressure::Memory, true)
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let note = std::sync::Mutex::new(String::new());
    poll_until("the DryRun Event on the node", TIMEOUT, || {
        let events = events.clone();
        let note = &note;
        async move {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.reporting_controller.as_deref() == Some("auto-agent"))
                .filter(|e| e.reason.as_deref() == Some("DryRun"))
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NODE))
                .find(|e| e.event_time.as_ref().is_some_and(|t| t.0 >= started));
            if let Some(e) = found {
                *note.lock().unwrap() = e.note.unwrap_or_default();
            }
            Ok(!note.lock().unwrap().is_empty())
        }
    })
    .await
    .unwrap();
    let note = note.into_inner().unwrap();
    assert!(
        note.contains("CordonNode") && note.contains("nothing changed"),
        "{note}"
    );
    // Give a live policy's cordon time to land; the dry run must not write it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cordon(&nodes).await, (false, None));
    let node = nodes.get(NODE).await.unwrap();
    assert!(
        !node
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("autoagent.io/cordoned"),
        "no cordon label"
    );
    scenario::node_pressure(&admin, NODE, NodePressure::Memory, false)
        .await
        .unwrap();
    t.cluster.kubectl(&["delete", "nrp", &name], None).unwrap();
    t.finish().await;
}
