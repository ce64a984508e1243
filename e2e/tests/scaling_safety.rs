//! Scaling goes through the same safety chain as every other action, and keeps the seed's rule
//! (CPU above its threshold AND a gate), with Debian's Prometheus scraping an exporter the test
//! sets:
//! - a dry-run scaling policy under the same signals reports its plan in a `DryRun` Event and
//!   writes nothing;
//! - a workload annotated `autoagent.io/ignore` is never scaled, while its unannotated twin under
//!   the same policy and the same signals is (so the signal did arrive);
//! - a policy with scaling enabled and no gate never scales up: it holds with `NoGateConfigured`
//!   in an Event, and its status shows `Degraded` with that reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::exporter::Exporter;
use auto_agent_e2e::prometheus::{Prometheus, ScrapeTarget};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use auto_agent_shared::crd::AutoRemediationPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);

async fn replicas(api: &Api<Deployment>, name: &str) -> i32 {
    api.get_scale(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
        .unwrap()
}

fn held(reason: &str) -> String {
    format!("auto_agent_scale_decisions_total{{outcome=\"held\",reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_workloads_are_never_scaled_and_a_policy_without_a_gate_never_scales_up() {
    let mut t = Setup::new("scalesafe", NODE).await;
    // The controller confines policy queries to their namespace: the series carry one.
    let ns = t.ns().to_owned();
    let admin = t.admin.clone();
    let exporter = Exporter::start().await.unwrap();
    let prometheus = Prometheus::start(&[ScrapeTarget::http("app", exporter.addr())])
        .await
        .unwrap();
    for w in ["twin", "ignored", "nogate", "dryrun"] {
        exporter.set(
            "test_cpu_ratio",
            &[("namespace", ns.as_str()), ("workload", w)],
            0.5,
        );
        exporter.set(
            "test_queue_depth",
            &[("namespace", ns.as_str()), ("workload", w)],
            0.0,
        );
    }
    let env = vec![
        ("AUTO_AGENT_PROMETHEUS_URL".to_owned(), prometheus.url()),
        (
            "AUTO_AGENT_SCALE_INTERVAL_SECONDS".to_owned(),
            "1".to_owned(),
        ),
    ];
    t.start_agents(1, env).await;
    let stack = t.stack();
    let scale = |gates: serde_json::Value| {
        json!({"enabled": true, "minReplicas": 2, "maxReplicas": 4,
               "cpuThreshold": 0.8, "scaleDownCpuThreshold": 0.3,
               "cpuQuery": "max(test_cpu_ratio{workload=\"$workload\"})",
               "gates": gates, "stepReplicas": 1, "stepPercent": 0, "cooldownUpSeconds": 1})
    };
    t.policy(
        "gated",
        json!({"targetSelector": {"matchLabels": {"scale": "gated"}},
               "actions": {"scale": scale(json!({"queueDepth": {"query": "max(test_queue_depth{workload=\"$workload\"})", "threshold": 100}}))}}),
    );
    t.policy(
        "nogate",
        json!({"targetSelector": {"matchLabels": {"scale": "nogate"}},
               "actions": {"scale": scale(json!({}))}}),
    );
    t.policy(
        "dry",
        json!({"targetSelector": {"matchLabels": {"scale": "dry"}}, "dryRun": true,
               "actions": {"scale": scale(json!({"queueDepth": {"query": "max(test_queue_depth{workload=\"$workload\"})", "threshold": 100}}))}}),
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), t.ns());
    // The Deployments carry the labels too: scaling policies select workloads.
    let workload = |name: &str, scale: &str| {
        Workload::new(name)
            .replicas(2)
            .label("scale", scale)
            .deployment_label("scale", scale)
    };
    t.rollout(workload("twin", "gated")).await;
    t.rollout(workload("ignored", "gated").deployment_annotation("autoagent.io/ignore", "true"))
        .await;
    t.rollout(workload("nogate", "nogate")).await;
    t.rollout(workload("dryrun", "dry")).await;

    // CPU and the gate high for the twins; CPU high for the policy without a gate.
    for w in ["twin", "ignored", "dryrun"] {
        exporter.set(
            "test_cpu_ratio",
            &[("namespace", ns.as_str()), ("workload", w)],
            0.95,
        );
        exporter.set(
            "test_queue_depth",
            &[("namespace", ns.as_str()), ("workload", w)],
            500.0,
        );
    }
    exporter.set(
        "test_cpu_ratio",
        &[("namespace", ns.as_str()), ("workload", "nogate")],
        0.95,
    );
    poll_until("the twin scales to max", TIMEOUT, || {
        let d = deployments.clone();
        async move { Ok(replicas(&d, "twin").await == 4) }
    })
    .await
    .unwrap();
    let before = stack.metric(&held("OptedOut")).await;
    poll_until("three more opt-out refusals", TIMEOUT, || {
        let s = stack;
        async move { Ok(s.metric(&held("OptedOut")).await >= before + 3.0) }
    })
    .await
    .unwrap();
    assert_eq!(
        replicas(&deployments, "ignored").await,
        2,
        "the opted-out workload was scaled"
    );
    let opted = t.wait_event("ignored", "OptedOut").await;
    assert!(
        opted.contains("not scaling") && opted.contains("policy gated"),
        "{opted}"
    );

    // Dry-run: the same signals, the plan reported, nothing written.
    let dry = t.wait_event("dryrun", "DryRun").await;
    assert!(
        dry.contains("would scale Deployment dryrun from 2 to 3")
            && dry.contains("nothing changed"),
        "{dry}"
    );
    assert_eq!(
        replicas(&deployments, "dryrun").await,
        2,
        "a dry-run policy scaled"
    );

    let no_gate = t.wait_event("nogate", "NoGateConfigured").await;
    assert!(no_gate.contains("no gate"), "{no_gate}");
    let holds = stack.metric(&held("NoGateConfigured")).await;
    poll_until("three more no-gate holds", TIMEOUT, || {
        let s = stack;
        async move { Ok(s.metric(&held("NoGateConfigured")).await >= holds + 3.0) }
    })
    .await
    .unwrap();
    assert_eq!(
        replicas(&deployments, "nogate").await,
        2,
        "scaled up on CPU alone"
    );
    let policies: Api<AutoRemediationPolicy> = Api::namespaced(admin.clone(), t.ns());
    poll_until(
        "the no-gate policy shows why in its status",
        TIMEOUT,
        || {
            let p = policies.clone();
            async move {
                let status = p.get("nogate").await?.status.unwrap_or_default();
                Ok(status.conditions.iter().any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.reason == "NoGateConfigured"
                }) && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"))
            }
        },
    )
    .await
    .unwrap();
    t.finish().await;
}
