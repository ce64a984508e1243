//! The Grafana dashboard against real data: Debian's Prometheus scrapes the controller and the
//! sensor during a scenario run (a crash-loop restart with its bundle, an opted-out refusal, a
//! budget refusal escalated to a Slack webhook, and a scaling policy fed by a second Prometheus),
//! and every PromQL expression in the dashboard JSON returns data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::contract::ContractServer;
use auto_agent_e2e::exporter::Exporter;
use auto_agent_e2e::prometheus::{Prometheus, ScrapeTarget};
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::ready_pods;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-1";

/// Every `expr` in the dashboard, with Grafana's `$__rate_interval` made concrete.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("charts/auto-agent/dashboards/auto-agent.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                let title = map.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.to_owned(), expr.replace("$__rate_interval", "1m")));
                }
                for v in map.values() {
                    walk(v, title, out);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    walk(v, title, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&doc, "", &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_during_a_scenario() {
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "the dashboard has its panels: {queries:?}"
    );
    let mut t = Setup::new("dash", NODE).await;
    // The controller confines policy queries to their namespace: the series carry one.
    let ns = t.ns().to_owned();
    let admin = t.admin.clone();

    // Signals for the scaling loop come from their own Prometheus.
    let exporter = Exporter::start().await.unwrap();
    exporter.set(
        "test_cpu_ratio",
        &[("namespace", ns.as_str()), ("workload", "api")],
        0.5,
    );
    let signals = Prometheus::start(&[ScrapeTarget::http("app", exporter.addr())])
        .await
        .unwrap();
    // Escalations go to a Slack webhook (the contract server), so the Escalation row has data.
    let slack_dir = std::env::temp_dir().join(format!("e2e-dash-contract-{}", std::process::id()));
    let slack = ContractServer::start(&slack_dir).await.unwrap();
    let env = vec![
        (
            "AUTO_AGENT_SLACK_WEBHOOK_URL".to_owned(),
            slack.slack_webhook_url(),
        ),
        (
            "AUTO_AGENT_ESCALATION_ALLOWED_SLACK_CHANNELS".to_owned(),
            "#alerts".to_owned(),
        ),
        ("AUTO_AGENT_PROMETHEUS_URL".to_owned(), signals.url()),
        (
            "AUTO_AGENT_SCALE_INTERVAL_SECONDS".to_owned(),
            "2".to_owned(),
        ),
    ];
    t.start_agents(1, env).await;
    let (apps, stack) = (&t.apps, t.stack());
    // The Prometheus a user's Grafana would read: it scrapes both binaries.
    let monitoring = Prometheus::start(&[
        ScrapeTarget::http("auto-agent-controller", stack.controllers[0].admin),
        ScrapeTarget::http("auto-agent-sensor", stack.sensor.admin),
    ])
    .await
    .unwrap();

    t.policy(
        "api",
        json!({"targetSelector": {"matchLabels": {"tier": "api"}},
               "actions": {"restartStuckPods": true,
                           "scale": {"enabled": true, "minReplicas": 3, "maxReplicas": 4,
                                     "cpuQuery": "max(test_cpu_ratio{workload=\"$workload\"})",
                                     "anomaly": {"query": "max(test_cpu_ratio{workload=\"$workload\"})",
                                                 "windowSeconds": 60, "stepSeconds": 1}}},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 1, "windowSeconds": 3600}],
               "escalation": {"slackChannel": "#alerts"}}),
    );
    t.rollout(Workload::new("api").replicas(3).label("tier", "api"))
        .await;
    t.rollout(
        Workload::new("quiet")
            .replicas(3)
            .label("tier", "api")
            .annotation("autoagent.io/ignore", "true"),
    )
    .await;
    // Two api pods against a budget of one restart: one restart, one BudgetExhausted refusal.
    let api_pods = ready_pods(&admin, &apps.name, "api").await;
    let quiet_pod = ready_pods(&admin, &apps.name, "quiet").await.remove(0);
    for pod in api_pods.iter().take(2).chain([&quiet_pod]) {
        let name = pod.metadata.name.clone().unwrap();
        scenario::crash_loop(&admin, &apps.name, &name, None, 2, 1)
            .await
            .unwrap();
    }
    t.wait_event("api", "RestartedPod").await;
    t.wait_event("api", "BudgetExhausted").await;
    t.wait_event("quiet", "OptedOut").await;

    let client = monitoring.client().unwrap();
    let mut missing = Vec::new();
    for (title, expr) in &queries {
        let found = poll_until(
            &format!("data for {title}"),
            Duration::from_secs(60),
            || async {
                Ok(match client.instant(expr, None).await? {
                    auto_agent_prom::QueryResult::Vector(v) => !v.is_empty(),
                    auto_agent_prom::QueryResult::Scalar { .. } => true,
                    _ => false,
                })
            },
        )
        .await;
        match found {
            Ok(()) => println!("ok    {title}: {expr}"),
            Err(e) => {
                println!("EMPTY {title}: {expr} ({e})");
                missing.push(format!("{title}: {expr}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data:\n{}",
        missing.join("\n")
    );
    assert!(
        slack.rejected().await.unwrap().is_empty(),
        "the webhook posts kept the contract"
    );
    t.finish().await;
}
