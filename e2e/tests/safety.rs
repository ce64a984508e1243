//! Safety rules on the real cluster with the real sensor and controller processes: the disruption
//! breaker, the cooldown and loop detection stop repeated restarts; GitOps-managed workloads and
//! mirror (static) pods are reported, not changed; a feature the installation left out is refused
//! before any budget is reserved. The agents watch node kwok-node-0; the tests take turns on it
//! (see `Setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::FutureExt;

use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::{memory_limit, ready_pods, template_container};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_cooldown_and_loop_detection_stop_repeated_restarts() {
    let t = Setup::with_agents("rules", NODE).await;
    let (admin, apps) = (t.admin.clone(), &t.apps);
    // cooldown: default 300 s; loops: 2 repeats with no cooldown; breaker: at most 50% unhealthy.
    t.policy(
        "cool",
        json!({"targetSelector": {"matchLabels": {"rule": "cooldown"}}, "actions": {"restartStuckPods": true}}),
    );
    t.policy(
        "loop",
        json!({"targetSelector": {"matchLabels": {"rule": "loop"}}, "actions": {"restartStuckPods": true},
               "safety": {"cooldownSeconds": 0, "maxRepeats": 2}}),
    );
    t.policy(
        "brk",
        json!({"targetSelector": {"matchLabels": {"rule": "breaker"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0}}),
    );
    t.rollout(
        Workload::new("cooldown")
            .replicas(4)
            .label("rule", "cooldown"),
    )
    .await;
    t.rollout(Workload::new("looping").replicas(4).label("rule", "loop"))
        .await;
    t.rollout(
        Workload::new("breaker")
            .replicas(4)
            .label("rule", "breaker"),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    let names = |app: &'static str| {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move {
            ready_pods(&a, &ns, app)
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    let gone = |name: String| {
        let pods = pods.clone();
        async move {
            pods.get_opt(&name)
                .await
                .unwrap()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        }
    };

    // Breaker: three of four pods are already unready (a failing readiness probe, no finding) when
    // they start crash-looping: 75% unhealthy is above the policy's 50%, so nothing is restarted.
    let breaker = names("breaker").await;
    for p in &breaker[..3] {
        pods.patch_status(
            p,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "ReadinessProbeFailed"},
                {"type": "ContainersReady", "status": "False"}]}})),
        )
        .await
        .unwrap();
    }
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("the breaker workload reports 1 ready", TIMEOUT, || {
        let d = deployments.clone();
        async move {
            Ok(d.get("breaker")
                .await?
                .status
                .and_then(|s| s.ready_replicas)
                == Some(1))
        }
    })
    .await
    .unwrap();
    for p in &breaker[..3] {
        scenario::crash_loop(&admin, &apps.name, p, None, 2, 1)
            .await
            .unwrap();
    }
    // Cooldown: the second failure of the same workload within 300 s is not acted on.
    let cooldown = names("cooldown").await;
    scenario::crash_loop(&admin, &apps.name, &cooldown[0], None, 2, 1)
        .await
        .unwrap();
    t.wait_event("cooldown", "RestartedPod").await;
    scenario::crash_loop(&admin, &apps.name, &cooldown[1], None, 2, 1)
        .await
        .unwrap();
    let note = t.wait_event("cooldown", "Cooldown").await;
    assert!(note.contains("cooldown 300 s"), "{note}");
    assert!(
        !gone(cooldown[1].clone()).await,
        "the second pod stays during the cooldown"
    );

    // Loops: two restarts did not cure the workload; the third stops and escalates.
    let looping = names("looping").await;
    for (i, p) in looping[..2].iter().enumerate() {
        scenario::crash_loop(&admin, &apps.name, p, None, 2, 1)
            .await
            .unwrap();
        poll_until("restart", TIMEOUT, || {
            gone(p.clone()).then(|g| async move { Ok(g) })
        })
        .await
        .unwrap_or_else(|e| panic!("restart {i}: {e}"));
    }
    poll_until("looping back to 4 ready", TIMEOUT, || {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move { Ok(ready_pods(&a, &ns, "looping").await.len() == 4) }
    })
    .await
    .unwrap();
    scenario::crash_loop(&admin, &apps.name, &looping[2], None, 2, 1)
        .await
        .unwrap();
    let note = t.wait_event("looping", "LoopDetected").await;
    assert!(note.contains("escalating"), "{note}");
    assert!(!gone(looping[2].clone()).await, "the third pod stays");

    let brk = t.wait_event("breaker", "DisruptionBreaker").await;
    assert!(brk.contains("suspecting the signal"), "{brk}");
    for p in &breaker[..3] {
        assert!(!gone(p.clone()).await, "{p}: the breaker stops restarts");
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_managed_workloads_and_mirror_pods_are_reported_not_changed() {
    let t = Setup::with_agents("gitops", NODE).await;
    let (admin, apps) = (t.admin.clone(), &t.apps);
    t.policy(
        "managed",
        json!({"targetSelector": {"matchLabels": {"tier": "managed"}},
               "actions": {"restartStuckPods": true, "bumpMemoryPercent": 20},
               "safety": {"minReadyReplicas": 0}}),
    );
    // An Argo CD-managed Deployment: a live memory patch would be reverted by self-heal.
    t.rollout(
        Workload::new("argo")
            .replicas(2)
            .label("tier", "managed")
            .memory("256Mi", "128Mi")
            .deployment_annotation(
                "argocd.argoproj.io/tracking-id",
                "shop:apps/Deployment:x/argo",
            ),
    )
    .await;
    let pod = t.ready_pod_names("argo").await.remove(0);
    scenario::oom_killed(&admin, &apps.name, &pod, None, 1)
        .await
        .unwrap();
    let note = t.wait_event("argo", "GitOpsManaged").await;
    assert!(
        note.contains("proposed change"),
        "the Event carries the proposed change: {note}"
    );
    let argo = template_container(&admin, &apps.name, "argo").await;
    let limit = memory_limit(&argo).unwrap_or_default();
    assert_eq!(limit, "256Mi", "no live patch on a GitOps-managed workload");

    // A mirror (static) pod is never touched, even when a policy selects it.
    let mirror: Pod = serde_json::from_value(json!({
        "metadata": {"name": "static-web", "labels": {"tier": "managed"},
                     "annotations": {"kubernetes.io/config.mirror": "abc123"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "registry.example.com/static:1"}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    pods.create(&PostParams::default(), &mirror).await.unwrap();
    poll_until("mirror pod running", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            Ok(pods
                .get("static-web")
                .await?
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Running"))
        }
    })
    .await
    .unwrap();
    scenario::crash_loop(&admin, &apps.name, "static-web", None, 4, 1)
        .await
        .unwrap();
    t.wait_event("static-web", "MirrorPod").await;
    assert!(
        pods.get_opt("static-web")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_the_installation_left_out_is_refused_before_any_reservation() {
    let mut t = Setup::new("nofeature", NODE).await;
    // As the chart renders it with features.restart=false.
    let env = vec![(
        "AUTO_AGENT_FEATURES".to_owned(),
        "memoryBump,mirrorImage,nodeRemediation,scaling".to_owned(),
    )];
    t.start_agents(1, env).await;
    let (admin, apps, stack) = (t.admin.clone(), &t.apps, t.stack());
    t.policy(
        "live",
        json!({"targetSelector": {"matchLabels": {"mode": "live"}}, "actions": {"restartStuckPods": true}}),
    );
    t.rollout(Workload::new("api").replicas(3).label("mode", "live"))
        .await;
    let pod = t.ready_pod_names("api").await.remove(0);
    scenario::crash_loop(&admin, &apps.name, &pod, None, 2, 1)
        .await
        .unwrap();
    let note = t.wait_event("api", "FeatureDisabled").await;
    assert!(note.contains("features.restart off"), "{note}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    assert!(pods.get_opt(&pod).await.unwrap().is_some(), "the pod stays");
    let ledger: Api<ConfigMap> = Api::namespaced(admin.clone(), &stack.namespace.name);
    let spent = ledger
        .get_opt(&stack.controller_id.ledger_name)
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .is_some_and(|d| d.values().any(|v| v.contains("RestartPod")));
    assert!(!spent, "no budget reserved for a refused feature");
    assert!(
        stack.bundles().is_empty(),
        "no bundle for an action not taken"
    );
    t.finish().await;
}
