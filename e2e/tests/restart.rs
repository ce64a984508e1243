//! Restarts on the real cluster with the real sensor and controller processes: a crash-looping pod
//! is restarted after its evidence bundle is written; opted-out, policy-less and dry-run workloads
//! are reported without a change. The agents watch node kwok-node-0 (see `Setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_bundle_and_opt_out_no_policy_dry_run_change_nothing() {
    let t = Setup::with_agents("remedy", NODE).await;
    let (cluster, admin, apps, stack) = (&t.cluster, &t.admin, &t.apps, t.stack());

    t.policy(
        "live",
        json!({"targetSelector": {"matchLabels": {"mode": "live"}}, "actions": {"restartStuckPods": true}}),
    );
    t.policy(
        "dry",
        json!({"targetSelector": {"matchLabels": {"mode": "dry"}}, "actions": {"restartStuckPods": true}, "dryRun": true}),
    );
    t.rollout(Workload::new("api").replicas(3).label("mode", "live"))
        .await;
    t.rollout(
        Workload::new("quiet")
            .replicas(3)
            .label("mode", "live")
            .annotation("autoagent.io/ignore", "true"),
    )
    .await;
    t.rollout(Workload::new("orphan").replicas(3).label("mode", "none"))
        .await;
    t.rollout(Workload::new("trial").replicas(3).label("mode", "dry"))
        .await;

    let victim = |app: &'static str| {
        let t = &t;
        async move { t.ready_pod_names(app).await.remove(0) }
    };
    let (api_pod, quiet_pod, orphan_pod, trial_pod) = (
        victim("api").await,
        victim("quiet").await,
        victim("orphan").await,
        victim("trial").await,
    );
    scenario::seed_logs(
        cluster,
        &apps.name,
        &api_pod,
        "app",
        2,
        &["boom: index out of range"],
        &[],
    )
    .await
    .unwrap();
    for pod in [&api_pod, &quiet_pod, &orphan_pod, &trial_pod] {
        scenario::crash_loop(admin, &apps.name, pod, None, 2, 1)
            .await
            .unwrap();
    }

    // Live: the pod goes, after its bundle exists.
    let note = t.wait_event("api", "RestartedPod").await;
    let pods: Api<Pod> = t.pods();
    assert!(
        pods.get_opt(&api_pod).await.unwrap().is_none(),
        "the crash-looping pod was deleted"
    );
    let bundles = stack.bundles();
    let key = format!("{}/api/CrashLoopBackOff/", apps.name);
    let bundle = bundles
        .iter()
        .find(|b| b.starts_with(&key) && b.ends_with(&format!("{api_pod}-2.json")))
        .unwrap_or_else(|| panic!("{bundles:?}"));
    assert!(
        note.contains(bundle.as_str()),
        "the Event names the bundle: {note}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stack.bundle_dir.join(bundle)).unwrap())
            .unwrap();
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["log"]["lines"][0], "boom: index out of range");
    assert_eq!(doc["log"]["source"], "Sensor");
    assert!(doc["pod"]["status"]["containerStatuses"].is_array());
    assert_eq!(doc["policy"]["name"], "live");
    assert_eq!(doc["node"]["name"], NODE);

    // Opted out, no policy, dry-run: reported, nothing changed, no bundle.
    let opted = t.wait_event("quiet", "OptedOut").await;
    assert!(opted.contains("autoagent.io/ignore"), "{opted}");
    t.wait_event("orphan", "NoPolicy").await;
    let dry = t.wait_event("trial", "DryRun").await;
    assert!(
        dry.contains(&format!("would RestartPod Pod/{}/{trial_pod}", apps.name)),
        "the dry-run plan names the action: {dry}"
    );
    for pod in [&quiet_pod, &orphan_pod, &trial_pod] {
        assert!(
            pods.get_opt(pod).await.unwrap().is_some(),
            "{pod} must not be touched"
        );
    }
    // Policy status records what happened: the restart, the opt-out refusal, the dry-run plan.
    let arp: Api<auto_agent_shared::crd::AutoRemediationPolicy> =
        Api::namespaced(admin.clone(), &apps.name);
    poll_until("policy status shows the actions", TIMEOUT, || {
        let arp = arp.clone();
        async move {
            let recent =
                |p: auto_agent_shared::crd::AutoRemediationPolicy| -> Vec<(String, String)> {
                    p.status
                        .map(|s| s.recent_actions)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|a| (format!("{:?}", a.outcome), a.reason))
                        .collect()
                };
            let live = recent(arp.get("live").await?);
            let dry = recent(arp.get("dry").await?);
            Ok(live.contains(&("Executed".into(), "RestartedPod".into()))
                && live.contains(&("Refused".into(), "OptedOut".into()))
                && dry.contains(&("DryRun".into(), "DryRun".into())))
        }
    })
    .await
    .unwrap();
    let ours: Vec<_> = stack
        .bundles()
        .into_iter()
        .filter(|b| b.starts_with(&format!("{}/", apps.name)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "only the live restart wrote a bundle: {ours:?}"
    );
    let ns_label = format!("namespace=\"{}\"", apps.name);
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        1.0
    );
    t.finish().await;
}
