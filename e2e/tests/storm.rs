//! A storm under default safety: all 40 pods of one Deployment start crash-looping within a second.
//! The workload's `readyReplicas` still says 40 when the first finding arrives, so a breaker that
//! read only that would restart the first pods; the controller counts the failing pods it knows of
//! and waits out the policy's storm window before a disruptive action, so the breaker holds from
//! the first decision: no pod is removed, and every refusal is reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::ready_pods;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-2";
const PODS: usize = 40;
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_pods_crash_looping_at_once_remove_none_and_the_breaker_reports() {
    let t = Setup::with_agents("storm", NODE).await;
    let (admin, stack) = (t.admin.clone(), t.stack());
    // Default safety: nothing but the opt-in.
    t.policy(
        "api",
        json!({"targetSelector": {"matchLabels": {"app": "api"}}, "actions": {"restartStuckPods": true}}),
    );
    t.rollout(Workload::new("api").replicas(PODS as i32)).await;
    let pods = ready_pods(&admin, t.ns(), "api").await;
    assert_eq!(pods.len(), PODS);
    let uids: BTreeMap<String, String> = pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                p.metadata.uid.clone().unwrap(),
            )
        })
        .collect();

    // Every pod fails at once (concurrent status patches; all land well within a second).
    let started = std::time::Instant::now();
    let patches = uids.keys().map(|name| {
        let admin = admin.clone();
        let ns = t.ns().to_owned();
        let name = name.clone();
        async move { scenario::crash_loop(&admin, &ns, &name, None, 3, 1).await }
    });
    for result in futures::future::join_all(patches).await {
        result.unwrap();
    }
    println!("{PODS} pods crash-looping within {:?}", started.elapsed());

    let breaker =
        "auto_agent_decisions_total{outcome=\"refused\",reason=\"DisruptionBreaker\"}".to_owned();
    poll_until("a breaker refusal for every failing pod", TIMEOUT, || {
        let s = stack;
        let b = breaker.clone();
        async move { Ok(s.metric(&b).await >= PODS as f64) }
    })
    .await
    .unwrap_or_else(|e| {
        let decisions = futures::executor::block_on(async {
            let mut text = String::new();
            for c in &stack.controllers {
                text.push_str(&c.metrics().await.unwrap_or_default());
            }
            text
        });
        let lines: Vec<&str> = decisions
            .lines()
            .filter(|l| l.starts_with("auto_agent_decisions_total"))
            .collect();
        panic!("{e}\n{}", lines.join("\n"))
    });
    let note = t.wait_event("api", "DisruptionBreaker").await;
    assert!(
        note.contains("escalating") && note.contains("policy api"),
        "{note}"
    );

    // None removed: every pod is the same instance, and nothing was executed.
    let api = t.pods();
    for (name, uid) in &uids {
        let pod = api.get_opt(name).await.unwrap();
        assert!(
            pod.as_ref()
                .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str())
                    && p.metadata.deletion_timestamp.is_none()),
            "{name} was removed"
        );
    }
    assert_eq!(
        stack
            .metric("auto_agent_decisions_total{outcome=\"executed\",reason=\"RestartPod\"}")
            .await,
        0.0
    );
    let ns_label = format!("namespace=\"{}\"", t.ns());
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        0.0
    );
    let restarts = stack.bundles();
    assert!(
        restarts.is_empty(),
        "no bundle, since nothing restarted: {restarts:?}"
    );
    t.finish().await;
}
