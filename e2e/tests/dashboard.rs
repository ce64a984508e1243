//! The Grafana dashboard against real data: Debian's Prometheus scrapes two controllers and the
//! sensor through a scenario that gives every panel something to show (a crash-loop restart whose
//! bundle is spooled while S3 is down and delivered when it returns, an opted-out refusal, a budget
//! refusal escalated to a Slack webhook, a restart the apiserver denies, an unauthenticated stream,
//! a scaling policy fed by a second Prometheus, the leader killed while failures keep coming).
//! Every metric starts at 0 and exists from the start, so "the query returns data" would prove
//! nothing: each panel must show a series that moved from what it showed before the scenario
//! (or, for the two state panels, the one value a working agent shows).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::agents::raw_stream;
use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::contract::ContractServer;
use auto_agent_e2e::exporter::Exporter;
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::prometheus::{Prometheus, ScrapeTarget};
use auto_agent_e2e::s3::S3Server;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);

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

/// What a panel must show for the scenario to count as seen on it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Some series of one of its queries rose above what the panel showed before the scenario
    /// (counters' rates and increases, latencies, gauges an incident or a failover moves).
    Moves,
    /// The panel's one value at the end, as only a working agent shows it (one leader, one open
    /// sensor stream).
    Equals(f64),
    /// Above zero at its peak: process footprints, which exist as soon as the process does and
    /// need not grow.
    Positive,
}

fn expectation(panel: &str) -> Expect {
    match panel {
        "Leaders" | "Sensor streams open" => Expect::Equals(1.0),
        "Memory (RSS)" | "CPU" => Expect::Positive,
        _ => Expect::Moves,
    }
}

/// Sum of the series' values, NaN (a quantile of no observation) and absence counted as 0.
fn total(result: &auto_agent_prom::QueryResult) -> f64 {
    match result {
        auto_agent_prom::QueryResult::Vector(v) => {
            v.iter().map(|s| s.value).filter(|v| v.is_finite()).sum()
        }
        auto_agent_prom::QueryResult::Scalar { value, .. } if value.is_finite() => *value,
        _ => 0.0,
    }
}

/// Waits until the monitoring Prometheus has scraped what `expr` selects (a positive total), so the
/// scenario moves on only after the dashboard could have seen its last step.
async fn scraped(client: &auto_agent_prom::PromClient, expr: &str) {
    poll_until(&format!("Prometheus sees {expr}"), TIMEOUT, || async move {
        Ok(total(&client.instant(expr, None).await?) > 0.0)
    })
    .await
    .unwrap();
}

/// The panels, each with its queries, in dashboard order.
fn panels() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (title, expr) in dashboard_queries() {
        match out.last_mut() {
            Some((t, exprs)) if *t == title => exprs.push(expr),
            _ => out.push((title, vec![expr])),
        }
    }
    out
}

/// Denies deleting the namespace's pods labelled `guard: no-delete`, so a restart of one fails
/// at the apiserver (the "Failed writes" panel).
fn delete_guard(ns: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: dash-guard-{ns}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: ["v1"], operations: ["DELETE"], resources: ["pods"]}}
  validations:
  - expression: "!has(oldObject.metadata.labels) || !('guard' in oldObject.metadata.labels)"
    message: "guarded pods are not deleted"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: dash-guard-{ns}}}
spec:
  policyName: dash-guard-{ns}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_moves_during_a_scenario() {
    let panels = panels();
    assert!(
        panels.len() >= 30,
        "the dashboard has its panels: {panels:?}"
    );
    let mut t = Setup::new("dash", NODE).await;
    // The controller confines policy queries to their namespace: the series carry one.
    let ns = t.ns().to_owned();
    let admin = t.admin.clone();
    let cluster = t.cluster.clone();

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
    // Bundles go to S3, stopped during the failures so the spool fills and drains.
    let mut s3 = S3Server::start(
        &cluster.state_dir().join(format!("dash-s3-{ns}")),
        &["evidence"],
    )
    .await
    .unwrap();
    let mut env = vec![
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
    env.extend(s3.controller_env());
    t.start_agents(2, env).await;
    let apps = t.apps.name.clone();
    // The Prometheus a user's Grafana would read: it scrapes every binary.
    let stack = t.stack();
    let mut targets: Vec<ScrapeTarget> = stack
        .controllers
        .iter()
        .map(|c| ScrapeTarget::http("auto-agent-controller", c.admin))
        .collect();
    targets.push(ScrapeTarget::http("auto-agent-sensor", stack.sensor.admin));
    let monitoring = Prometheus::start(&targets).await.unwrap();
    let client = monitoring.client().unwrap();

    // What every panel shows before the scenario: all three targets scraped a few times.
    poll_until("three targets scraped", Duration::from_secs(60), || {
        let client = &client;
        async move { Ok(total(&client.instant("count(up == 1) >= 3", None).await?) >= 3.0) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = std::time::SystemTime::now();
    let mut before = std::collections::BTreeMap::new();
    for (_, exprs) in &panels {
        for expr in exprs {
            before.insert(
                expr.clone(),
                total(&client.instant(expr, Some(started)).await.unwrap()),
            );
        }
    }

    // A stream without a token, refused and counted.
    let refused = raw_stream(t.stack().controllers[0].grpc, &t.stack().pki, None, NODE)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&delete_guard(&ns)))
        .unwrap();
    assert!(ok, "{err}");
    scraped(&client, "sum(auto_agent_streams_refused_total)").await;
    let safety = json!({"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0});
    t.policy(
        "api",
        json!({"targetSelector": {"matchLabels": {"tier": "api"}},
               "actions": {"restartStuckPods": true,
                           "scale": {"enabled": true, "minReplicas": 3, "maxReplicas": 4,
                                     "cpuQuery": "max(test_cpu_ratio{workload=\"$workload\"})",
                                     "anomaly": {"query": "max(test_cpu_ratio{workload=\"$workload\"})",
                                                 "windowSeconds": 60, "stepSeconds": 1}}},
               "safety": safety,
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 1, "windowSeconds": 3600}],
               "logBundle": {"s3": {"bucket": "evidence"}},
               "escalation": {"slackChannel": "#alerts"}}),
    );
    t.policy(
        "guarded",
        json!({"targetSelector": {"matchLabels": {"tier": "guarded"}},
               "actions": {"restartStuckPods": true}, "safety": safety}),
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
    t.rollout(
        Workload::new("guarded")
            .label("tier", "guarded")
            .label("guard", "no-delete"),
    )
    .await;

    // Two api pods against a budget of one restart: one restart (its bundle spooled, S3 being
    // down), one BudgetExhausted refusal; an opted-out pod; a pod the apiserver will not delete.
    s3.stop();
    let api_pods = t.ready_pod_names("api").await;
    let quiet_pod = t.ready_pod_names("quiet").await.remove(0);
    let guarded_pod = t.ready_pod_names("guarded").await.remove(0);
    // The admission policy takes effect a moment after it is stored.
    poll_until(
        "the apiserver refuses to delete the guarded pod",
        TIMEOUT,
        || {
            let cluster = &cluster;
            let (ns, pod) = (&ns, &guarded_pod);
            async move {
                let (ok, _, err) =
                    cluster.kubectl(&["delete", "pod", "-n", ns, pod, "--dry-run=server"], None)?;
                Ok(!ok && err.contains("guarded pods are not deleted"))
            }
        },
    )
    .await
    .unwrap();
    for pod in api_pods.iter().take(2).chain([&quiet_pod, &guarded_pod]) {
        scenario::crash_loop(&admin, &apps, pod, None, 2, 1)
            .await
            .unwrap();
    }
    let note = t.wait_event("api", "RestartedPod").await;
    assert!(note.contains("spooled"), "S3 is down: {note}");
    t.wait_event("api", "BudgetExhausted").await;
    t.wait_event("quiet", "OptedOut").await;
    let stack = t.stack();
    poll_until("the guarded restart fails", TIMEOUT, || async move {
        Ok(stack.metric("auto_agent_action_errors_total").await >= 1.0)
    })
    .await
    .unwrap();
    for seen in [
        "sum(auto_agent_decisions_total{outcome=\"executed\"})",
        "sum(auto_agent_action_errors_total)",
        "sum(auto_agent_bundle_spool_entries)",
    ] {
        scraped(&client, seen).await;
    }
    s3.start_again().await.unwrap();
    poll_until("the spool drains", TIMEOUT, || async move {
        Ok(stack
            .metric("auto_agent_bundles_delivered_from_spool_total")
            .await
            >= 1.0
            && stack.metric("auto_agent_bundle_spool_entries").await == 0.0)
    })
    .await
    .unwrap();
    assert_eq!(
        s3.keys("evidence").len(),
        1,
        "the spooled bundle reached S3"
    );

    // The leader killed; the last api pod fails twice while nobody leads (queued, the second
    // merged into the first), and the sensor's stream follows the new leader.
    let leader = t.stack().leader().await.unwrap();
    t.stack_mut().controllers[leader].kill();
    for restarts in [2, 3] {
        scenario::crash_loop(&admin, &apps, &api_pods[2], None, restarts, 1)
            .await
            .unwrap();
    }
    let sensor = &t.stack().sensor;
    poll_until(
        "the sensor re-sends to the new leader",
        TIMEOUT,
        || async move {
            Ok(metric_sum(&sensor.metrics().await?, "auto_agent_sensor_resyncs_total") >= 1.0)
        },
    )
    .await
    .unwrap();
    let stack = t.stack();
    poll_until(
        "the new leader decides on the last api pod",
        TIMEOUT,
        || async move { Ok(stack.metric("auto_agent_decisions_total").await >= 1.0) },
    )
    .await
    .unwrap();
    scraped(&client, "sum(auto_agent_sensor_resyncs_total)").await;
    // A few scrapes after the last event.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let window = started.elapsed().unwrap().as_secs() + 5;
    let mut failures = Vec::new();
    for (panel, exprs) in &panels {
        let expect = expectation(panel);
        let mut seen = Vec::new();
        for expr in exprs {
            let base = before[expr];
            // The sum over series of each series' peak since the scenario began (NaN dropped).
            let peak_query = format!("max_over_time((({expr}) >= -Inf)[{window}s:1s])");
            let peak = total(&client.instant(&peak_query, None).await.unwrap());
            let now = total(&client.instant(expr, None).await.unwrap());
            seen.push(format!("{expr}: before {base}, peak {peak}, now {now}"));
            let ok = match expect {
                Expect::Moves => peak > base,
                Expect::Equals(v) => now == v,
                Expect::Positive => peak > 0.0,
            };
            if ok {
                seen.push("  -> shown".into());
            }
        }
        let shown = seen.iter().any(|l| l.ends_with("shown"));
        println!(
            "{} {panel} ({expect:?})",
            if shown { "ok  " } else { "FAIL" }
        );
        for l in &seen {
            println!("       {l}");
        }
        if !shown {
            failures.push(format!("{panel} ({expect:?}):\n  {}", seen.join("\n  ")));
        }
    }
    let _ = cluster.kubectl(
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &format!("dash-guard-{ns}"),
            "--ignore-not-found",
        ],
        None,
    );
    if !failures.is_empty() {
        for raw in [
            "min_over_time(up[WINs])",
            "max_over_time(auto_agent_leader[WINs])",
            "max_over_time(auto_agent_bundle_spool_entries[WINs])",
            "max_over_time(auto_agent_decisions_total{outcome=\"executed\"}[WINs]) > 0",
            "max_over_time(auto_agent_bundles_spooled_total[WINs]) > 0",
        ] {
            let q = raw.replace("WIN", &window.to_string());
            println!("debug {q}: {:?}", client.instant(&q, None).await);
        }
    }
    assert!(
        failures.is_empty(),
        "panels the scenario did not move:\n{}",
        failures.join("\n")
    );
    assert!(
        slack.rejected().await.unwrap().is_empty(),
        "the webhook posts kept the contract"
    );
    t.finish().await;
}
