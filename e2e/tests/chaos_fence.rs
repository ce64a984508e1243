//! Chaos: the lease fence. The leader is paused with SIGSTOP in the middle of a restart (its
//! ledger reservation written, its evidence write held by an S3 endpoint that never answers), stays
//! paused well past its lease while the other replica takes over, and is resumed. Its next step
//! would be the pod's deletion. Proved from the apiserver's audit log, which attributes every write
//! to the process that made it (each replica's User-Agent names it): the resumed replica has no
//! write accepted after it resumed, while its writes before the pause are there (so the attribution
//! is real); the pod is deleted once, by the new leader; the resumed replica counted the write it
//! dropped (`auto_agent_fenced_writes_total{what="delete_pod"}`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use auto_agent_e2e::audit::AuditEvent;
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::proxy::BlackHole;
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn by(events: &[AuditEvent], replica: &str) -> Vec<AuditEvent> {
    let suffix = format!("({replica})");
    events
        .iter()
        .filter(|e| {
            e.user_agent.starts_with("auto-agent-controller/") && e.user_agent.ends_with(&suffix)
        })
        .filter(|e| WRITES.contains(&e.verb.as_str()))
        .cloned()
        .collect()
}

fn deletes_of(events: &[AuditEvent], pod: &str) -> Vec<AuditEvent> {
    events
        .iter()
        .filter(|e| e.verb == "delete" && e.accepted())
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "pods" && o.name == pod && o.subresource.is_empty())
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes() {
    let mut t = Setup::new("fence", NODE).await;
    // Evidence goes to an S3 endpoint that accepts and never answers: every restart holds there
    // for the write timeout before it spools the bundle and deletes the pod.
    let hole = BlackHole::start().await.unwrap();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "fence".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "fence-secret".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        (
            "AUTO_AGENT_S3_ENDPOINT_URL".into(),
            format!("http://{}", hole.addr),
        ),
        ("AUTO_AGENT_S3_FORCE_PATH_STYLE".into(), "true".into()),
        (
            "AUTO_AGENT_BUNDLE_ALLOWED_BUCKETS".into(),
            "evidence".into(),
        ),
        (
            "AUTO_AGENT_BUNDLE_WRITE_TIMEOUT_SECONDS".into(),
            "15".into(),
        ),
    ];
    t.start_agents(2, env).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    t.policy(
        "acts",
        json!({"targetSelector": {"matchLabels": {"tier": "fence"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0, "maxUnhealthyPercent": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 100, "windowSeconds": 3600}],
               "logBundle": {"s3": {"bucket": "evidence"}}}),
    );
    for n in ["w-0", "w-1"] {
        t.rollout(Workload::new(n).label("tier", "fence")).await;
    }
    let first = t.ready_pod_names("w-0").await.remove(0);
    let second = t.ready_pod_names("w-1").await.remove(0);

    // The leader restarts one pod the usual way: its writes are in the audit log under its name.
    let a = t.stack().leader().await.expect("a leader");
    let other = 1 - a;
    let paused_name = t.stack().controllers[a].name.clone();
    let leader_name = t.stack().controllers[other].name.clone();
    scenario::crash_loop(&admin, &ns, &first, None, 3, 1)
        .await
        .unwrap();
    steps::wait_event(&admin, &ns, "w-0", "RestartedPod").await;

    // The second restart: paused right after its reservation, inside the evidence write.
    scenario::crash_loop(&admin, &ns, &second, None, 3, 1)
        .await
        .unwrap();
    let target = format!("Deployment/{ns}/w-1");
    poll_until("the leader's reservation for w-1", TIMEOUT, || {
        let (stack, admin, target) = (t.stack(), admin.clone(), target.clone());
        async move {
            let history = stack.ledger(&admin).await?;
            Ok(history.records.iter().any(|r| r.target == target))
        }
    })
    .await
    .unwrap();
    t.stack().controllers[a].process.pause().unwrap();
    let paused_at = Timestamp::now();
    let paused = Instant::now();
    assert!(
        hole.accepted() > 0,
        "the evidence write reached the unanswering endpoint"
    );

    // The other replica takes the lease once it runs out; the paused one stays paused past that.
    poll_until("the other replica leads", TIMEOUT, || {
        let c = &t.stack().controllers[other];
        async move { Ok(metric_sum(&c.metrics().await?, "auto_agent_leader") == 1.0) }
    })
    .await
    .unwrap();
    let takeover = paused.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed_at = Timestamp::now();
    t.stack().controllers[a].process.resume().unwrap();
    println!(
        "{paused_name} paused for {:?}; {leader_name} led after {takeover:?}",
        paused.elapsed()
    );

    // The resumed replica finishes its evidence write and reaches the deletion; the new leader
    // gets the finding again (the sensor follows the redirect) and restarts the pod.
    steps::wait_event(&admin, &ns, "w-1", "RestartedPod").await;
    poll_until("the resumed replica follows", TIMEOUT, || {
        let c = &t.stack().controllers[a];
        async move { Ok(metric_sum(&c.metrics().await?, "auto_agent_leader") == 0.0) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let audit = t.cluster.audit_events().unwrap();
    let mine = by(&audit, &paused_name);
    // Earlier tests' replicas had the same names: before the pause, only this test's namespaces
    // count. After it resumed, every write counts (no other replica of that name runs then).
    let ours = [ns.clone(), t.stack().namespace.name.clone()];
    let before: Vec<AuditEvent> = mine
        .iter()
        .filter(|e| e.accepted() && e.received().is_some_and(|r| r < paused_at))
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| ours.contains(&o.namespace))
        })
        .cloned()
        .collect();
    assert!(
        !deletes_of(&before, &first).is_empty(),
        "the audit log attributes the first restart to {paused_name}: {:#?}",
        before.iter().map(|e| e.describe()).collect::<Vec<_>>()
    );
    let after: Vec<_> = mine
        .iter()
        .filter(|e| e.received().is_none_or(|r| r >= resumed_at))
        .collect();
    let accepted: Vec<String> = after
        .iter()
        .filter(|e| e.accepted())
        .map(|e| e.describe())
        .collect();
    assert!(
        accepted.is_empty(),
        "{paused_name} wrote after it resumed without the lease: {accepted:#?}"
    );
    let deletes = deletes_of(&audit, &second);
    assert_eq!(
        deletes.len(),
        1,
        "w-1's pod deleted once: {:#?}",
        deletes.iter().map(AuditEvent::describe).collect::<Vec<_>>()
    );
    assert!(
        deletes[0].user_agent.ends_with(&format!("({leader_name})")),
        "by the new leader: {}",
        deletes[0].describe()
    );
    // It did reach the deletion, and dropped it there.
    let m = t.stack().controllers[a].metrics().await.unwrap();
    let dropped = m
        .lines()
        .find(|l| l.starts_with("auto_agent_fenced_writes_total{what=\"delete_pod\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        dropped >= 1.0,
        "{paused_name} counted the deletion it dropped: {dropped}"
    );
    let restarts = steps::event_counts(&admin, &ns, "RestartedPod").await;
    assert_eq!(
        restarts.get("w-1"),
        Some(&1),
        "one RestartedPod Event for w-1"
    );
    assert!(t.stack().controllers[a].process_alive());
    println!(
        "{paused_name}: {} writes accepted before the pause; after it resumed {} write attempts, none accepted ({:?}), {dropped} dropped by the fence; w-1's pod deleted once, by {leader_name}",
        before.len(),
        after.len(),
        after.iter().map(|e| e.describe()).collect::<Vec<_>>()
    );
    t.finish().await;
}
