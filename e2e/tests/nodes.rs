//! Node remediation on the real cluster with the real sensor and controller processes: a node
//! under memory pressure is cordoned and only its evictable pods leave (a PodDisruptionBudget, a
//! safe-to-evict annotation, a pod no policy selects and a DaemonSet's pod stay), then the node is
//! uncordoned once the pressure clears. The agents watch node kwok-node-0 (see `Setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::ready_pods;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressured_node_is_cordoned_and_only_evictable_pods_leave_then_uncordoned() {
    use auto_agent_e2e::scenario::NodePressure;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{DeleteParams, Patch, PatchParams};

    let mut t = Setup::new("nodes", NODE).await;
    let (cluster, admin) = (t.cluster.clone(), t.admin.clone());
    let nodes: Api<Node> = Api::all(admin.clone());
    // A failed earlier run may have left pressure or a cordon behind.
    scenario::node_pressure(&admin, NODE, NodePressure::Memory, false)
        .await
        .unwrap();
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"autoagent.io/cordoned-by": null}}, "spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    // Node policies are cluster-scoped: remove any a failed earlier run left behind.
    let (_, stale, _) = cluster
        .kubectl(&["get", "nrp", "-o", "name"], None)
        .unwrap();
    for name in stale.lines().filter(|n| n.contains("/e2e-")) {
        cluster.kubectl(&["delete", name], None).unwrap();
    }
    t.start_agents(1, Vec::new()).await;
    let apps = &t.apps;

    for (name, tier) in [("batch-policy", "batch"), ("web-policy", "web")] {
        t.policy(
            name,
            json!({"targetSelector": {"matchLabels": {"tier": tier}}, "actions": {"evictOnNodePressure": true}}),
        );
    }
    let nrp_name = format!("e2e-{}", apps.name);
    let nrp = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "NodeRemediationPolicy",
                     "metadata": {"name": nrp_name},
                     "spec": {"nodeSelector": {"matchLabels": {"type": "kwok"}}, "conditions": ["MemoryPressure"],
                              "cordon": true, "evict": true, "maxUnavailableNodes": 1, "uncordonAfterSeconds": 5,
                              "drainTimeoutSeconds": 60}});
    t.apply(&nrp.to_string());

    t.rollout(Workload::new("batch").replicas(2).label("tier", "batch"))
        .await;
    t.rollout(Workload::new("web").replicas(2).label("tier", "web"))
        .await;
    t.rollout(
        Workload::new("keep")
            .label("tier", "batch")
            .annotation("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    )
    .await;
    t.rollout(Workload::new("plain").label("tier", "none"))
        .await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), &apps.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent", "tier": "batch"}},
                              "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE},
                                       "containers": [{"name": "a", "image": "registry.example.com/agent:1"}]}}},
    }))
    .unwrap();
    Api::<DaemonSet>::namespaced(admin.clone(), &apps.name)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    poll_until("daemonset pod", TIMEOUT, || {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move { Ok(ready_pods(&a, &ns, "agent").await.len() == 1) }
    })
    .await
    .unwrap();
    // The PDB controller must have computed that no disruption is allowed.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("pdb status", TIMEOUT, || {
        let p = pdbs.clone();
        async move {
            Ok(p.get("web")
                .await?
                .status
                .is_some_and(|s| s.current_healthy == Some(2)))
        }
    })
    .await
    .unwrap();

    let names = |app: &'static str| {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move {
            ready_pods(&a, &ns, app)
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    let (batch, web, keep, plain, agent) = (
        names("batch").await,
        names("web").await,
        names("keep").await,
        names("plain").await,
        names("agent").await,
    );

    scenario::node_pressure(&admin, NODE, NodePressure::Memory, true)
        .await
        .unwrap();
    poll_until("node cordoned by the agent", TIMEOUT, || {
        let n = nodes.clone();
        let nrp_name = nrp_name.clone();
        async move {
            let node = n.get(NODE).await?;
            Ok(node.spec.and_then(|s| s.unschedulable) == Some(true)
                && node
                    .metadata
                    .annotations
                    .is_some_and(|a| a.get("autoagent.io/cordoned-by") == Some(&nrp_name)))
        }
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("evictable pods gone", TIMEOUT, || {
        let pods = pods.clone();
        let batch = batch.clone();
        async move {
            for n in &batch {
                if pods
                    .get_opt(n)
                    .await?
                    .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await
    .unwrap();
    let blocked = t.wait_event(&web[0], "EvictionBlocked").await;
    assert!(blocked.contains("never deleting"), "{blocked}");

    // `kubectl get nrp` shows the policy's state in its columns, none left empty.
    let last_table = std::sync::Mutex::new(String::new());
    poll_until("kubectl get nrp shows every column", TIMEOUT, || {
        let last_table = &last_table;
        let cluster = &cluster;
        let nrp_name = &nrp_name;
        async move {
            let (ok, out, err) = cluster.kubectl(&["get", "nrp", nrp_name], None)?;
            anyhow::ensure!(ok, "{err}");
            let row = out.lines().nth(1).unwrap_or_default().to_owned();
            *last_table.lock().unwrap() = out;
            // NAME, NODES, MAX UNAVAILABLE, CORDONED, DRYRUN, READY, LAST ACTION, LAST OUTCOME, AGE:
            // an empty cell would leave fewer than nine.
            let cells: Vec<&str> = row.split_whitespace().collect();
            Ok(cells.len() == 9 && !row.contains("<none>"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", last_table.lock().unwrap()));
    let table = last_table.into_inner().unwrap();
    println!("{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    for column in ["NODES", "CORDONED", "READY", "LAST", "OUTCOME"] {
        assert!(header.contains(&column), "{column} missing from {header:?}");
    }
    let (_, status, _) = cluster
        .kubectl(
            &[
                "get",
                "nrp",
                &nrp_name,
                "-o",
                "jsonpath={.status.cordonedNodes} {.status.matchedTargets} {.status.lastAction.outcome}",
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        status.split_whitespace().next(),
        Some("1"),
        "cordonedNodes: {status}"
    );
    assert!(status.trim_end().ends_with("Executed"), "{status}");

    // After the eviction pass, no label value in the controller's /metrics is a pod name: evictions
    // count under the owning workload, the cordon under the node's own metric.
    let all_pods: Vec<String> = batch
        .iter()
        .chain(&web)
        .chain(&keep)
        .chain(&plain)
        .chain(&agent)
        .cloned()
        .collect();
    let evicted = format!(
        "auto_agent_actions_total{{namespace=\"{}\",type=\"EvictPod\",workload=\"batch\"}}",
        apps.name
    );
    let mut scraped = String::new();
    for c in &t.stack().controllers {
        if let Ok(m) = c.metrics().await {
            scraped.push_str(&m);
        }
    }
    assert!(
        scraped.lines().any(|l| l.starts_with(&evicted)),
        "no {evicted} series"
    );
    assert!(
        scraped.lines().any(|l| l.starts_with(&format!(
            "auto_agent_node_actions_total{{node=\"{NODE}\",type=\"CordonNode\"}}"
        ))),
        "the cordon is not counted under its node"
    );
    for line in scraped.lines().filter(|l| !l.starts_with('#')) {
        for value in line
            .split("=\"")
            .skip(1)
            .filter_map(|v| v.split('"').next())
        {
            assert!(
                !all_pods.iter().any(|p| p == value),
                "a pod name is a label value: {line}"
            );
        }
    }
    for n in web.iter().chain(&keep).chain(&plain).chain(&agent) {
        let p = pods.get_opt(n).await.unwrap();
        assert!(
            p.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
            "{n} must stay on the node"
        );
    }

    scenario::node_pressure(&admin, NODE, NodePressure::Memory, false)
        .await
        .unwrap();
    poll_until("uncordoned after the pressure cleared", TIMEOUT, || {
        let n = nodes.clone();
        async move {
            let node = n.get(NODE).await?;
            Ok(node.spec.and_then(|s| s.unschedulable) != Some(true)
                && !node
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("autoagent.io/cordoned-by"))
        }
    })
    .await
    .unwrap();
    // The Event follows the uncordon itself: wait for it rather than read once.
    let reasons = || async {
        let node_events = Api::<Event>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        node_events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NODE))
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(&nrp_name)))
            .filter_map(|e| e.reason.clone())
            .collect::<Vec<String>>()
    };
    poll_until(
        "CordonedNode and UncordonedNode Events",
        TIMEOUT,
        || async {
            let r = reasons().await;
            Ok(r.contains(&"CordonedNode".to_owned()) && r.contains(&"UncordonedNode".to_owned()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", futures::executor::block_on(reasons())));

    cluster
        .kubectl(&["delete", "noderemediationpolicy", &nrp_name], None)
        .unwrap();
    let _ = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &apps.name)
        .delete("web", &DeleteParams::default())
        .await;
    t.finish().await;
}
