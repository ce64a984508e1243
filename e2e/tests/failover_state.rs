//! What the agent did survives a leader kill, and nothing is done twice: with two controllers, three
//! crash loops are restarted by the first leader; it is SIGKILLed; the new leader restarts a fourth
//! workload, refuses a relapse inside the cooldown (`Cooldown`) and a relapse past `maxRepeats`
//! (`LoopDetected`), both known only from the ledger the old leader wrote. Counted from the ledger
//! and the Events: four restarts, one per workload, none repeated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_cooldowns_and_loops_survive_a_leader_kill() {
    let mut t = Setup::new("failstate", NODE).await;
    t.start_agents(2, Vec::new()).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    let restart = |safety: serde_json::Value, tier: &str| {
        json!({"targetSelector": {"matchLabels": {"tier": tier}}, "actions": {"restartStuckPods": true},
               "safety": safety})
    };
    t.policy(
        "acts",
        restart(json!({"minReadyReplicas": 0, "cooldownSeconds": 0}), "acts"),
    );
    t.policy(
        "cool",
        restart(
            json!({"minReadyReplicas": 0, "cooldownSeconds": 3600}),
            "cool",
        ),
    );
    t.policy(
        "loop",
        restart(
            json!({"minReadyReplicas": 0, "cooldownSeconds": 0, "maxRepeats": 1}),
            "loop",
        ),
    );
    let mut pods = std::collections::BTreeMap::new();
    for (name, tier) in [
        ("before", "acts"),
        ("after", "acts"),
        ("cool", "cool"),
        ("loop", "loop"),
    ] {
        pods.insert(
            name,
            t.running_pod(Workload::new(name).label("tier", tier)).await,
        );
    }

    // The first leader acts on three.
    for name in ["before", "cool", "loop"] {
        scenario::crash_loop(&admin, &ns, &pods[name], None, 3, 1)
            .await
            .unwrap();
    }
    for name in ["before", "cool", "loop"] {
        t.wait_event(name, "RestartedPod").await;
    }
    let first = t.stack().leader().await.unwrap();
    t.stack_mut().controllers[first].kill();
    poll_until("a new leader", TIMEOUT, || {
        let s = t.stack();
        async move { Ok(s.leader().await.is_some_and(|l| l != first)) }
    })
    .await
    .unwrap();

    // The new leader: a new restart, and two relapses refused from the old leader's ledger.
    for name in ["cool", "loop"] {
        let again = t.replacement_of(name, &pods[name]).await;
        scenario::crash_loop(&admin, &ns, &again, None, 4, 1)
            .await
            .unwrap();
    }
    scenario::crash_loop(&admin, &ns, &pods["after"], None, 3, 1)
        .await
        .unwrap();
    let cooldown = t.wait_event("cool", "Cooldown").await;
    let looped = t.wait_event("loop", "LoopDetected").await;
    t.wait_event("after", "RestartedPod").await;
    println!("cool: {cooldown}\nloop: {looped}");

    // Four restarts in the ledger, one per workload; one RestartedPod Event per workload.
    let history = t.stack().ledger(&admin).await.unwrap();
    let mut targets: Vec<String> = history.records.iter().map(|r| r.target.clone()).collect();
    targets.sort();
    let want: Vec<String> = ["after", "before", "cool", "loop"]
        .iter()
        .map(|n| format!("Deployment/{ns}/{n}"))
        .collect();
    assert_eq!(targets, want, "each restart once, none repeated");
    let events = Api::<Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let restarted: Vec<(String, i32)> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RestartedPod"))
        .map(|e| {
            (
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default(),
                e.series.as_ref().map_or(1, |s| s.count),
            )
        })
        .collect();
    assert_eq!(restarted.len(), 4, "{restarted:?}");
    assert!(restarted.iter().all(|(_, n)| *n == 1), "{restarted:?}");
    t.finish().await;
}
