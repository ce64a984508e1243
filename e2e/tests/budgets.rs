//! Budgets on the real cluster with the real sensor and controller processes: 50 crash-looping
//! pods of one Deployment restart exactly as many times as the policy's budget allows, and a new
//! leader after a leader kill respects the budget the old one spent. The agents watch node
//! kwok-node-0 (see `Setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::ready_pods;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_for_fifty_crash_loops_and_survive_a_leader_kill() {
    let mut t = Setup::new("budget", NODE).await;
    t.start_agents(2, Vec::new()).await;
    // The leader is killed below (a mutable borrow of the setup): own what the test uses.
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    t.policy(
        "storm",
        json!({"targetSelector": {"matchLabels": {"tier": "storm"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 5, "windowSeconds": 3600},
                           {"action": "RestartPod", "scope": "Target", "max": 50, "windowSeconds": 3600}]}),
    );
    t.rollout(Workload::new("storm").replicas(50).label("tier", "storm"))
        .await;
    let pods = ready_pods(&admin, &ns, "storm").await;
    assert_eq!(pods.len(), 50);
    // One Deployment, 50 pods: one incident whose findings keep coming; the budget, not the count
    // of findings, decides how many pods go. The cooldown is per incident, so set it to zero here.
    t.policy(
        "storm",
        json!({"targetSelector": {"matchLabels": {"tier": "storm"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0, "maxRepeats": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 5, "windowSeconds": 3600},
                           {"action": "RestartPod", "scope": "Target", "max": 50, "windowSeconds": 3600}]}),
    );
    let api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    for p in &pods {
        scenario::crash_loop(&admin, &ns, p.metadata.name.as_deref().unwrap(), None, 2, 1)
            .await
            .unwrap();
    }
    let deleted = |names: Vec<String>| {
        let api = api.clone();
        async move {
            let mut n = 0;
            for name in names {
                if api.get_opt(&name).await.unwrap().is_none() {
                    n += 1;
                }
            }
            n
        }
    };
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    poll_until("budget refusals", TIMEOUT, || {
        let s = t.stack();
        async move { Ok(s.metric("auto_agent_decisions_total").await >= 50.0) }
    })
    .await
    .unwrap();
    assert_eq!(
        deleted(names.clone()).await,
        5,
        "exactly the budget of 5 pods restarted"
    );
    let ns_label = format!("namespace=\"{}\"", ns);
    assert_eq!(
        t.stack()
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        5.0
    );
    let ledger: Api<ConfigMap> = Api::namespaced(admin.clone(), &t.stack().namespace.name);
    let history = ledger
        .get(&t.stack().controller_id.ledger_name)
        .await
        .unwrap();
    assert!(
        history.data.unwrap()["actions.json"]
            .matches("RestartPod")
            .count()
            == 5
    );

    // Kill the leader; the new one must respect the old budget.
    let leader = t.stack().leader().await.unwrap();
    t.stack_mut().controllers[leader].kill();
    poll_until("a new leader", TIMEOUT, || {
        let s = t.stack();
        async move { Ok(s.leader().await.is_some()) }
    })
    .await
    .unwrap();
    let survivors: Vec<String> = {
        let mut v = Vec::new();
        for n in &names {
            if api.get_opt(n).await.unwrap().is_some() {
                v.push(n.clone());
            }
        }
        v
    };
    for n in survivors.iter().take(10) {
        scenario::crash_loop(&admin, &ns, n, None, 3, 1)
            .await
            .unwrap();
    }
    poll_until("the new leader refuses on budget", TIMEOUT, || {
        let s = t.stack();
        async move {
            Ok(s.metric(
                "auto_agent_decisions_total{outcome=\"refused\",reason=\"BudgetExhausted\"}",
            )
            .await
                >= 1.0
                || s.metric("auto_agent_decisions_total").await >= 10.0)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        deleted(names.clone()).await,
        5,
        "the new leader restarted nothing over the budget"
    );
    let refused = t.wait_event("storm", "BudgetExhausted").await;
    assert!(refused.contains("5 of 5"), "{refused}");
    t.finish().await;
}
