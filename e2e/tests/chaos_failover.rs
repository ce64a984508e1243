//! Chaos: the leader SIGKILLed 20 times while failures keep coming on three nodes. Two controller
//! replicas behind the Service stand-in; after each kill a new replica starts in the killed one's
//! place (a Deployment's new pod), so the next kill finds a follower ready. Three sensors, one per
//! node, stream through the Service. 40 single-replica workloads crash-loop two at a time, one pair
//! just before each kill. Proved: every workload restarted exactly once (one `RestartedPod` Event
//! each, and its ReplicaSet created exactly one replacement pod: nothing lost, nothing done twice);
//! every workload in the ledger, with at most one extra reservation per kill (a leader killed
//! between writing its reservation and acting); each failover within lease + renew + 2 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use auto_agent_e2e::agents::{CONTROLLER_TLS_NAME, Sensor, SensorIdentity, SensorOptions};
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

const NODES: [&str; 3] = ["kwok-node-0", "kwok-node-1", "kwok-node-2"];
const KILLS: usize = 20;
const PER_KILL: usize = 2;
/// Lease 6 s + renew 2 s + 2 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_leader_kills_lose_no_failure_and_repeat_no_action() {
    let mut t = Setup::new("chaos", NODES[0]).await;
    t.start_agents(2, Vec::new()).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();

    // A sensor on each of the other two nodes, with its own node-bound token, through the Service.
    let mut sensors = Vec::new();
    for node in &NODES[1..] {
        let stack = t.stack();
        let identity = SensorIdentity::for_node(&t.cluster, &stack.install, node)
            .await
            .unwrap();
        let sensor = Sensor::start(
            &t.cluster,
            &identity,
            &SensorOptions {
                node: (*node).to_owned(),
                controller: format!("https://{}", stack.service.addr),
                ca_file: Some(stack.pki.ca_file.clone()),
                tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
                ..SensorOptions::default()
            },
        )
        .await
        .unwrap();
        sensors.push((identity, sensor));
    }

    t.policy(
        "acts",
        json!({"targetSelector": {"matchLabels": {"tier": "chaos"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0, "maxUnhealthyPercent": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 100, "windowSeconds": 3600}]}),
    );
    let names: Vec<String> = (0..KILLS * PER_KILL).map(|i| format!("w-{i}")).collect();
    let rollouts = names.iter().enumerate().map(|(i, n)| {
        t.rollout(
            Workload::new(n)
                .label("tier", "chaos")
                .on_node(NODES[i % NODES.len()]),
        )
    });
    futures::future::join_all(rollouts).await;
    let mut pods = BTreeMap::new();
    for n in &names {
        pods.insert(n.clone(), t.ready_pod_names(n).await.remove(0));
    }

    let mut failovers = Vec::new();
    for round in 0..KILLS {
        // Two more failures, then the leader dies while they are being handled.
        for n in &names[round * PER_KILL..(round + 1) * PER_KILL] {
            scenario::crash_loop(&admin, &ns, &pods[n], None, 3, 1)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300 * (round as u64 % 4))).await;
        let leader = t
            .stack()
            .leader()
            .await
            .expect("one leader before the kill");
        let killed_at = Instant::now();
        t.stack_mut().kill_and_replace(leader).await.unwrap();
        poll_until("a new leader", TIMEOUT, || {
            let s = t.stack();
            async move { Ok(s.leader().await.is_some()) }
        })
        .await
        .unwrap();
        let took = killed_at.elapsed();
        println!("kill {}: a new leader after {took:?}", round + 1);
        failovers.push(took);
    }

    // Every workload restarted once: an Event each, and a ledger record each.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    poll_until("every workload restarted", TIMEOUT, || {
        let admin = admin.clone();
        let (ns, want) = (ns.clone(), names.len());
        async move { Ok(steps::event_counts(&admin, &ns, "RestartedPod").await.len() == want) }
    })
    .await
    .unwrap();
    // Room for a late duplicate to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let list = events.list(&ListParams::default()).await.unwrap().items;
    let counts = steps::event_counts(&admin, &ns, "RestartedPod").await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "restarted more than once: {twice:?}");
    assert_eq!(counts.len(), names.len());

    // Each workload's pod deleted once: its ReplicaSet created two pods, the first and the
    // replacement (a second deletion would have made a third).
    let mut created: BTreeMap<String, i32> = BTreeMap::new();
    for e in list
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
    {
        let Some(rs) = e.regarding.as_ref().and_then(|r| r.name.clone()) else {
            continue;
        };
        let workload = rs
            .rsplit_once('-')
            .map_or(rs.clone(), |(w, _)| w.to_owned());
        *created.entry(workload).or_default() += e
            .series
            .as_ref()
            .map(|s| s.count)
            .or(e.deprecated_count)
            .unwrap_or(1);
    }
    let not_once: Vec<_> = names
        .iter()
        .filter(|n| created.get(*n) != Some(&2))
        .map(|n| (n, created.get(n)))
        .collect();
    assert!(
        not_once.is_empty(),
        "pods created per workload, want 2: {not_once:?}"
    );

    // The ledger is written ahead of each action: a record for every workload, and an extra one
    // only where a leader reserved and was killed before it acted (its successor's delete is
    // the only one, by the pod's uid precondition); at most one per kill.
    let history = t.stack().ledger(&admin).await.unwrap();
    let mut per_target: BTreeMap<String, usize> = BTreeMap::new();
    for r in &history.records {
        *per_target.entry(r.target.clone()).or_default() += 1;
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !per_target.contains_key(&format!("Deployment/{ns}/{n}")))
        .collect();
    assert!(missing.is_empty(), "no ledger record for {missing:?}");
    assert_eq!(per_target.len(), names.len(), "{per_target:?}");
    let orphaned = history.records.len() - names.len();
    assert!(
        orphaned <= KILLS,
        "{orphaned} reservations beyond one per workload"
    );

    let slowest = failovers.iter().max().copied().unwrap_or_default();
    let mut sorted = failovers.clone();
    sorted.sort();
    println!(
        "{KILLS} kills, {} failures, {} restarts, {} pods deleted, {} ledger records ({orphaned} reserved by a leader killed before it acted); failover median {:?}, slowest {slowest:?}",
        names.len(),
        counts.values().sum::<i32>(),
        created.values().map(|c| c - 1).sum::<i32>(),
        history.records.len(),
        sorted[sorted.len() / 2]
    );
    assert!(
        slowest <= FAILOVER_BOUND,
        "every failover within lease + renew + 2 s: {failovers:?}"
    );
    drop(sensors);
    t.finish().await;
}
