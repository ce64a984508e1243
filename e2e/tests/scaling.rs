//! Scaling on the real cluster with Debian's Prometheus scraping an exporter whose values the test
//! sets: a workload scales up when CPU and a gate are high, not on CPU alone; scales down one
//! replica at a time only after the stabilization window and the down cooldown; holds while
//! Prometheus is down (and the policy shows Degraded), resuming when it is back; never leaves
//! [min, max]; leaves an HPA's workload alone and only proposes changes for a GitOps-managed one:
//! a pull request in a real Gitea changing its manifest's replicas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use auto_agent_e2e::agents::AgentStack;
use auto_agent_e2e::exporter::Exporter;
use auto_agent_e2e::prometheus::{Prometheus, ScrapeTarget};
use auto_agent_e2e::steps::events;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use auto_agent_shared::crd::AutoRemediationPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);
const WINDOW_SECONDS: u64 = 8;
const COOLDOWN_DOWN_SECONDS: u64 = 6;
const MANIFESTS: &str = "apps/managed.yaml";
const MANAGED_MANIFEST: &str = "# Synced by Argo CD.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: managed
spec:
  replicas: 2 # raised by auto-agent's pull requests when load says so
  selector:
    matchLabels: {app: managed}
";

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn base64_decode(b64: &str) -> String {
    use base64::Engine as _;
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap(),
    )
    .unwrap()
}
// Each stack's controllers read every policy in the cluster: one scaling test at a time, which
// `Setup` ensures (one test per node at a time).

/// The Deployment carries the labels too (what scaling policies select, and a GitOps tool's).
fn workload(name: &str, replicas: i32, gitops: bool) -> Workload {
    let w = Workload::new(name)
        .replicas(replicas)
        .label("scale", "on")
        .deployment_label("app", name)
        .deployment_label("scale", "on");
    if gitops {
        w.deployment_label("argocd.argoproj.io/instance", "shop")
    } else {
        w
    }
}

async fn replicas(api: &Api<Deployment>, name: &str) -> i32 {
    api.get_scale(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
        .unwrap()
}

async fn wait_replicas(api: &Api<Deployment>, name: &str, want: i32) -> Instant {
    poll_until(
        &format!("{name} at {want} replicas"),
        TIMEOUT,
        || async move { Ok(replicas(api, name).await == want) },
    )
    .await
    .unwrap();
    Instant::now()
}

async fn wait_metric(stack: &AgentStack, name: &str, at_least: f64) {
    poll_until(&format!("{name} >= {at_least}"), TIMEOUT, || async move {
        Ok(stack.metric(name).await >= at_least)
    })
    .await
    .unwrap();
}

fn held(reason: &str) -> String {
    format!("auto_agent_scale_decisions_total{{outcome=\"held\",reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_on_cpu_and_a_gate_slowly_down_holds_without_prometheus_and_respects_bounds() {
    let mut t = Setup::new("scale", NODE).await;
    // The controller confines policy queries to their namespace: the series carry one.
    let ns = t.ns().to_owned();
    let admin = t.admin.clone();
    let exporter = Exporter::start().await.unwrap();
    let mut prometheus = Prometheus::start(&[ScrapeTarget::http("app", exporter.addr())])
        .await
        .unwrap();
    let set = |workload: &str, cpu: f64, queue: f64| {
        exporter.set(
            "test_cpu_ratio",
            &[("namespace", ns.as_str()), ("workload", workload)],
            cpu,
        );
        exporter.set(
            "test_queue_depth",
            &[("namespace", ns.as_str()), ("workload", workload)],
            queue,
        );
    };
    for w in ["web", "batch", "managed"] {
        set(w, 0.5, 0.0);
    }
    // The repository the GitOps-managed workload comes from: its manifests in a real Gitea.
    let gitea_dir = std::env::temp_dir().join(format!("e2e-scaling-gitea-{}", std::process::id()));
    let gitea = auto_agent_e2e::gitea::Gitea::start(&gitea_dir)
        .await
        .unwrap();
    gitea.create_repo("deploy").await.unwrap();
    let project = format!("{}/deploy", gitea.owner);
    gitea
        .api_post(
            &format!("/repos/{project}/contents/{MANIFESTS}"),
            &json!({"content": base64_encode(MANAGED_MANIFEST), "message": "managed"}),
        )
        .await
        .unwrap();
    let env = vec![
        ("AUTO_AGENT_GITEA_API_URL".to_owned(), gitea.api_url.clone()),
        ("AUTO_AGENT_GITEA_TOKEN".to_owned(), gitea.token.clone()),
        ("AUTO_AGENT_GITOPS_PROVIDER".to_owned(), "gitea".to_owned()),
        ("AUTO_AGENT_GITOPS_REPO".to_owned(), project.clone()),
        (
            "AUTO_AGENT_GITOPS_VALUES_FILE".to_owned(),
            MANIFESTS.to_owned(),
        ),
        ("AUTO_AGENT_PROMETHEUS_URL".to_owned(), prometheus.url()),
        (
            "AUTO_AGENT_SCALE_INTERVAL_SECONDS".to_owned(),
            "1".to_owned(),
        ),
        (
            "AUTO_AGENT_SCALE_FAILURES_BEFORE_DEGRADED".to_owned(),
            "3".to_owned(),
        ),
    ];
    t.start_agents(1, env).await;
    let (apps, stack) = (&t.apps, t.stack());
    t.policy(
        "scaler",
        json!({"targetSelector": {"matchLabels": {"scale": "on"}},
               "actions": {"scale": {
                   "enabled": true, "minReplicas": 2, "maxReplicas": 4,
                   "cpuThreshold": 0.8, "scaleDownCpuThreshold": 0.3,
                   "cpuQuery": "max(test_cpu_ratio{workload=\"$workload\"})",
                   "gates": {"queueDepth": {"query": "max(test_queue_depth{workload=\"$workload\"})", "threshold": 100}},
                   "stepReplicas": 1, "stepPercent": 0,
                   "cooldownUpSeconds": 3, "cooldownDownSeconds": COOLDOWN_DOWN_SECONDS,
                   "stabilizationWindowSeconds": WINDOW_SECONDS}}}),
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    t.rollout(workload("web", 2, false)).await;
    t.rollout(workload("batch", 2, false)).await;
    t.rollout(workload("managed", 2, true)).await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "batch"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "batch"},
                 "minReplicas": 2, "maxReplicas": 10,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
    }))
    .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), &apps.name)
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
    wait_metric(stack, &held("WithinBand"), 3.0).await;

    // CPU alone is not enough.
    set("web", 0.95, 0.0);
    let before = stack.metric(&held("NoGateAgrees")).await;
    wait_metric(stack, &held("NoGateAgrees"), before + 3.0).await;
    assert_eq!(replicas(&deployments, "web").await, 2, "CPU alone scaled");
    let note = t.wait_event("web", "NoGateAgrees").await;
    assert!(note.contains("policy scaler"), "{note}");

    // CPU and the queue gate: up one step per cooldown, to max and no further. The HPA's workload
    // and the GitOps-managed one see the same signals.
    for w in ["web", "batch", "managed"] {
        set(w, 0.95, 500.0);
    }
    wait_replicas(&deployments, "web", 3).await;
    wait_replicas(&deployments, "web", 4).await;
    let at_max = stack.metric(&held("AtMaxReplicas")).await;
    wait_metric(stack, &held("AtMaxReplicas"), at_max + 3.0).await;
    assert_eq!(replicas(&deployments, "web").await, 4, "never above max");
    let up = t.wait_event("web", "ScaledUp").await;
    assert!(
        up.contains("from 2 to 3") || up.contains("from 3 to 4"),
        "{up}"
    );
    let hpa_note = t.wait_event("batch", "HpaPresent").await;
    assert!(hpa_note.contains("batch"), "{hpa_note}");
    let proposal = t.wait_event("managed", "GitOpsManaged").await;
    assert!(proposal.contains("proposing replicas 2 -> 3"), "{proposal}");
    assert!(
        proposal.contains("a pull request goes to gitea:"),
        "{proposal}"
    );
    // Its own pull request: the Deployment's replicas in its manifest, and nothing else.
    let opened = t.wait_event("managed", "ProposalOpened").await;
    let pulls = gitea
        .api_get(&format!("/repos/{project}/pulls?state=all"))
        .await
        .unwrap();
    let pulls = pulls.as_array().unwrap();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    assert!(
        opened.contains(pulls[0]["html_url"].as_str().unwrap()),
        "{opened}"
    );
    let number = pulls[0]["number"].as_u64().unwrap();
    let files = gitea
        .api_get(&format!("/repos/{project}/pulls/{number}/files"))
        .await
        .unwrap();
    assert_eq!(
        (
            files[0]["additions"].as_u64(),
            files[0]["deletions"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let branch = pulls[0]["head"]["ref"].as_str().unwrap();
    let on_branch = gitea
        .api_get(&format!(
            "/repos/{project}/contents/{MANIFESTS}?ref={branch}"
        ))
        .await
        .unwrap();
    let text = base64_decode(on_branch["content"].as_str().unwrap());
    assert_eq!(text, MANAGED_MANIFEST.replace("replicas: 2", "replicas: 3"));
    assert_eq!(
        replicas(&deployments, "batch").await,
        2,
        "the HPA owns batch"
    );
    assert_eq!(
        replicas(&deployments, "managed").await,
        2,
        "GitOps-managed: proposed, not patched"
    );

    // Quiet: down only after the window, one replica per cooldown, never below min.
    let quiet_at = Instant::now();
    set("web", 0.1, 0.0);
    let first_down = wait_replicas(&deployments, "web", 3).await;
    let second_down = wait_replicas(&deployments, "web", 2).await;
    let waited = first_down - quiet_at;
    let gap = second_down - first_down;
    println!("first scale-down {waited:?} after quiet, second {gap:?} later");
    assert!(
        waited >= Duration::from_secs(WINDOW_SECONDS),
        "scaled down {waited:?} after the signals went quiet (window {WINDOW_SECONDS} s)"
    );
    assert!(
        gap >= Duration::from_secs(COOLDOWN_DOWN_SECONDS),
        "second scale-down {gap:?} after the first (cooldown {COOLDOWN_DOWN_SECONDS} s)"
    );
    let at_min = stack.metric(&held("AtMinReplicas")).await;
    wait_metric(stack, &held("AtMinReplicas"), at_min + 3.0).await;
    assert_eq!(replicas(&deployments, "web").await, 2, "never below min");

    // Prometheus down: hold either way, Degraded after 3 failed passes; back: scaling resumes.
    prometheus.stop();
    set("web", 0.95, 500.0);
    let failed = stack.metric(&held("CpuQueryFailed")).await;
    wait_metric(stack, &held("CpuQueryFailed"), failed + 3.0).await;
    let policies: Api<AutoRemediationPolicy> = Api::namespaced(admin.clone(), &apps.name);
    let degraded = || async {
        policies
            .get("scaler")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| {
                s.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded" && c.status == "True")
            })
            .map(|c| c.reason)
    };
    poll_until("policy Degraded", TIMEOUT, || async {
        Ok(degraded().await.as_deref() == Some("PrometheusUnavailable"))
    })
    .await
    .unwrap();
    assert_eq!(replicas(&deployments, "web").await, 2, "held while blind");
    prometheus.start_again().await.unwrap();
    wait_replicas(&deployments, "web", 3).await;
    poll_until("Degraded clears", TIMEOUT, || async {
        Ok(degraded().await.is_none())
    })
    .await
    .unwrap();
    let all = events(&admin, &apps.name).await;
    assert!(
        all["web"].iter().any(|(r, _)| r == "CpuQueryFailed"),
        "the hold is an Event: {:?}",
        all["web"]
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_anomaly_is_reported_and_vetoes_scale_down_until_it_passes() {
    let mut t = Setup::new("anomaly", NODE).await;
    // The controller confines policy queries to their namespace: the series carry one.
    let ns = t.ns().to_owned();
    let admin = t.admin.clone();
    let exporter = Exporter::start().await.unwrap();
    exporter.set(
        "test_cpu_ratio",
        &[("namespace", ns.as_str()), ("workload", "shop")],
        0.5,
    );
    exporter.set(
        "test_requests",
        &[("namespace", ns.as_str()), ("workload", "shop")],
        100.0,
    );
    let prometheus = Prometheus::start(&[ScrapeTarget::http("app", exporter.addr())])
        .await
        .unwrap();
    let env = vec![
        ("AUTO_AGENT_PROMETHEUS_URL".to_owned(), prometheus.url()),
        (
            "AUTO_AGENT_SCALE_INTERVAL_SECONDS".to_owned(),
            "1".to_owned(),
        ),
    ];
    t.start_agents(1, env).await;
    let (apps, stack) = (&t.apps, t.stack());
    t.policy(
        "anomaly",
        json!({"targetSelector": {"matchLabels": {"scale": "on"}},
               "actions": {"scale": {
                   "enabled": true, "minReplicas": 1, "maxReplicas": 3,
                   "cpuQuery": "max(test_cpu_ratio{workload=\"$workload\"})",
                   "cooldownDownSeconds": 0, "stabilizationWindowSeconds": 0,
                   "anomaly": {"query": "max(test_requests{workload=\"$workload\"})",
                               "windowSeconds": 60, "stepSeconds": 1, "zThreshold": 3}}}}),
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    t.rollout(workload("shop", 2, false)).await;
    // A steady baseline of requests first (20 points; the engine needs five).
    prometheus
        .wait_for_value("count_over_time(test_requests[1m])", |n| n >= 20.0, TIMEOUT)
        .await
        .unwrap();

    // A spike in requests while CPU is low: reported, and the scale-down waits.
    exporter.set(
        "test_requests",
        &[("namespace", ns.as_str()), ("workload", "shop")],
        5000.0,
    );
    exporter.set(
        "test_cpu_ratio",
        &[("namespace", ns.as_str()), ("workload", "shop")],
        0.1,
    );
    let note = t.wait_event("shop", "AnomalyDetected").await;
    assert!(note.contains("z = "), "{note}");
    let incident = format!(
        "incident workload/{}/Deployment/shop/MetricAnomaly",
        apps.name
    );
    assert!(note.contains(&incident), "{note}");
    // While the anomaly lasts, no scale-down (replicas are read first: the loop clears the
    // anomaly before it scales, so 1 replica with the anomaly still active would be a violation).
    // A level shift stops being anomalous once the window has absorbed it; then the down goes on.
    let vetoed_while_active = std::sync::atomic::AtomicU32::new(0);
    poll_until("the anomaly to pass", TIMEOUT, || {
        let (stack, deployments, seen) = (&stack, &deployments, &vetoed_while_active);
        async move {
            let r = replicas(deployments, "shop").await;
            let active = stack.metric("auto_agent_anomalies_active").await;
            if active >= 1.0 {
                assert_eq!(r, 2, "scaled down during the anomaly");
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(active == 0.0)
        }
    })
    .await
    .unwrap();
    println!(
        "anomaly seen active in {} polls, replicas 2 throughout",
        vetoed_while_active.into_inner()
    );
    assert!(
        stack.metric(&held("AnomalyActive")).await >= 1.0,
        "a veto was counted"
    );
    let resolved = t.wait_event("shop", "AnomalyResolved").await;
    assert!(
        resolved.contains(&incident),
        "the same incident: {resolved}"
    );
    wait_replicas(&deployments, "shop", 1).await;
    t.finish().await;
}
