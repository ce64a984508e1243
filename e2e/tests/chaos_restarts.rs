//! Chaos: the control plane and the sensor restarted mid-run.
//!
//! - kube-apiserver stopped for 20 s (past the lease) right after the sensor detected a failure,
//!   then started again; and the same with etcd (the apiserver stays up, without its store): both
//!   agent binaries ride it out without a crash, leadership comes back, the failure detected before
//!   the outage is remediated after it, once, and a failure after it is remediated too (the
//!   watches recovered).
//! - the sensor SIGKILLed in the middle of a burst of failures and replaced (as its DaemonSet
//!   would): every failure remediated exactly once, those it had queued or sent without an ack
//!   and those that happened while it was dead.
//!
//! Every test here holds `kwok-node-0`, so they run one at a time (an apiserver restart would
//! disturb a test running beside it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-0";
const OUTAGE: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(120);

fn policy() -> serde_json::Value {
    json!({"targetSelector": {"matchLabels": {"tier": "chaos"}}, "actions": {"restartStuckPods": true},
           "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0, "maxUnhealthyPercent": 100},
           "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 100, "windowSeconds": 3600}]})
}

/// `RestartedPod` Events per workload (series counted).
async fn restarts(t: &Setup) -> BTreeMap<String, i32> {
    steps::event_counts(&t.admin, t.ns(), "RestartedPod").await
}

async fn sensor_findings(t: &Setup) -> f64 {
    t.stack()
        .sensor
        .metrics()
        .await
        .map_or(0.0, |m| metric_sum(&m, "auto_agent_sensor_findings_total"))
}

/// Crash-loops `pod` and waits until the sensor has detected it (its findings counter moved).
async fn crash_and_detect(t: &Setup, pod: &str) {
    let seen = sensor_findings(t).await;
    scenario::crash_loop(&t.admin, t.ns(), pod, None, 3, 1)
        .await
        .unwrap();
    poll_until(
        "the sensor detects the crash loop",
        TIMEOUT,
        || async move { Ok(sensor_findings(t).await > seen) },
    )
    .await
    .unwrap();
}

fn assert_all_alive(t: &Setup, when: &str) {
    for c in &t.stack().controllers {
        assert!(
            c.process_alive(),
            "{} crashed {when}:\n{}",
            c.name,
            c.process.output()
        );
    }
    assert!(
        !t.stack().sensor.process.exited()
            && std::path::Path::new(&format!("/proc/{}", t.stack().sensor.process.pid())).exists(),
        "the sensor crashed {when}:\n{}",
        t.stack().sensor.process.output()
    );
}

/// A failure detected right before `component` goes down for 20 s is remediated after it comes
/// back, once; one after it is remediated too; nothing crashed.
async fn outage_of(component: &str, prefix: &str) {
    let mut t = Setup::new(prefix, NODE).await;
    t.start_agents(2, Vec::new()).await;
    t.policy("acts", policy());
    let names = ["before", "during", "after"];
    for n in names {
        t.rollout(Workload::new(n).label("tier", "chaos")).await;
    }
    let mut pods = BTreeMap::new();
    for n in names {
        pods.insert(n, t.ready_pod_names(n).await.remove(0));
    }
    crash_and_detect(&t, &pods["before"]).await;
    steps::wait_event(&t.admin, t.ns(), "before", "RestartedPod").await;

    crash_and_detect(&t, &pods["during"]).await;
    let stopped = Instant::now();
    t.cluster.stop_component(component).unwrap();
    tokio::time::sleep(OUTAGE).await;
    t.cluster.start_component(component).unwrap();
    let back = Instant::now();
    println!("{component} down for {:?}", back - stopped);
    poll_until("a leader after the outage", TIMEOUT, || {
        let s = t.stack();
        async move { Ok(s.leader().await.is_some()) }
    })
    .await
    .unwrap();
    let led = back.elapsed();
    steps::wait_event(&t.admin, t.ns(), "during", "RestartedPod").await;
    let delivered = back.elapsed();
    assert_all_alive(&t, &format!("across the {component} restart"));

    crash_and_detect(&t, &pods["after"]).await;
    steps::wait_event(&t.admin, t.ns(), "after", "RestartedPod").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = restarts(&t).await;
    let want: BTreeMap<String, i32> = names.iter().map(|n| ((*n).to_owned(), 1)).collect();
    assert_eq!(counts, want, "each failure remediated once");
    assert_all_alive(&t, &format!("after the {component} restart"));
    let watch_restarts = metric_sum(
        &t.stack().sensor.metrics().await.unwrap(),
        "auto_agent_sensor_watch_restarts_total",
    );
    println!(
        "{component} restarted: a leader {led:?} after it was back, the queued failure remediated after {delivered:?}; sensor watch restarts {watch_restarts}; 3 failures, 3 restarts, no process crashed"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_restarted_mid_run_loses_nothing() {
    outage_of("kube-apiserver", "chaos-apiserver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_mid_run_loses_nothing() {
    outage_of("etcd", "chaos-etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_killed_mid_stream_loses_nothing_and_repeats_nothing() {
    const BURST: usize = 12;
    let mut t = Setup::new("chaos-sensor", NODE).await;
    t.start_agents(1, Vec::new()).await;
    t.policy("acts", policy());
    let names: Vec<String> = (0..BURST).map(|i| format!("w-{i}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|n| t.rollout(Workload::new(n).label("tier", "chaos"))),
    )
    .await;
    let mut pods = Vec::new();
    for n in &names {
        pods.push(t.ready_pod_names(n).await.remove(0));
    }
    // Half the burst, then the sensor dies with findings detected and not yet all acknowledged;
    // the other half happens while no sensor runs; then its replacement starts.
    let acked_before = metric_sum(
        &t.stack().sensor.metrics().await.unwrap(),
        "auto_agent_sensor_acked_total",
    );
    for pod in &pods[..BURST / 2] {
        scenario::crash_loop(&t.admin, t.ns(), pod, None, 3, 1)
            .await
            .unwrap();
    }
    let m = t.stack().sensor.metrics().await.unwrap();
    let (detected, acked) = (
        metric_sum(&m, "auto_agent_sensor_findings_total"),
        metric_sum(&m, "auto_agent_sensor_acked_total") - acked_before,
    );
    let cluster = t.cluster.clone();
    t.stack_mut().sensor.process.kill();
    for pod in &pods[BURST / 2..] {
        scenario::crash_loop(&t.admin, t.ns(), pod, None, 3, 1)
            .await
            .unwrap();
    }
    let killed = Instant::now();
    t.stack_mut()
        .kill_and_replace_sensor(&cluster)
        .await
        .unwrap();
    poll_until("every failure remediated", TIMEOUT, || {
        let t = &t;
        async move { Ok(restarts(t).await.len() == BURST) }
    })
    .await
    .unwrap();
    let took = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = restarts(&t).await;
    let want: BTreeMap<String, i32> = names.iter().map(|n| (n.clone(), 1)).collect();
    assert_eq!(counts, want, "each failure remediated once");
    println!(
        "sensor killed with {detected} findings detected, {acked} acknowledged; {BURST} failures, {BURST} restarts, the last {took:?} after the replacement was started"
    );
    t.finish().await;
}
