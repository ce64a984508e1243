//! Memory bumps on the real cluster with the real sensor and controller processes: an OOM-killed
//! workload's memory limit (and request) rises by the policy's percent, at least its minimum
//! increase, and stops at the cap, where the refusal escalates. The agents watch node kwok-node-0
//! (see `Setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::ready_pods;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rises_by_the_policy_percent_and_stops_at_the_cap() {
    let t = Setup::with_agents("oom", NODE).await;
    let (admin, apps, stack) = (t.admin.clone(), &t.apps, t.stack());
    t.policy(
        "mem",
        json!({"targetSelector": {"matchLabels": {"tier": "mem"}},
               "actions": {"bumpMemoryPercent": 20, "memoryBump": {"minIncrease": "100Mi", "maxLimit": "400Mi"}},
               "safety": {"cooldownSeconds": 0}}),
    );
    t.rollout(
        Workload::new("mem")
            .replicas(2)
            .label("tier", "mem")
            .memory("256Mi", "128Mi"),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    let limit = || {
        let d = deployments.clone();
        async move {
            let d = d.get("mem").await.unwrap();
            let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
            let r = c.resources.clone().unwrap();
            (
                r.limits.unwrap()["memory"].0.clone(),
                r.requests.unwrap()["memory"].0.clone(),
                c.image.clone().unwrap(),
            )
        }
    };
    let mut expected = vec![("356Mi", "228Mi"), ("400Mi", "328Mi")];
    expected.reverse();
    for restart in [1, 2] {
        let (want_limit, want_request) = expected.pop().unwrap();
        let pod = t.ready_pod_names("mem").await.remove(0);
        scenario::oom_killed(&admin, &apps.name, &pod, None, restart)
            .await
            .unwrap();
        poll_until(&format!("limit {want_limit}"), TIMEOUT, || {
            let l = limit();
            async move { Ok(l.await.0 == want_limit) }
        })
        .await
        .unwrap();
        let (_, request, image) = limit().await;
        assert_eq!(
            request, want_request,
            "the request rises too, never above the new limit"
        );
        assert_eq!(
            image, "registry.example.com/app:1",
            "every other field is kept"
        );
        // The rollout is done when both ready pods run the new limit: an OOM set on an old pod
        // about to be replaced would be refused as cleared, not decided.
        poll_until("rollout", TIMEOUT, || {
            let a = admin.clone();
            let ns = apps.name.clone();
            async move {
                let pods = ready_pods(&a, &ns, "mem").await;
                Ok(pods.len() == 2
                    && pods.iter().all(|p| {
                        p.spec.as_ref().is_some_and(|s| {
                            s.containers[0]
                                .resources
                                .as_ref()
                                .and_then(|r| r.limits.as_ref())
                                .is_some_and(|l| l["memory"].0 == want_limit)
                        })
                    }))
            }
        })
        .await
        .unwrap();
    }
    // At the cap: no further change, and the refusal escalates.
    let pod = t.ready_pod_names("mem").await.remove(0);
    scenario::oom_killed(&admin, &apps.name, &pod, None, 3)
        .await
        .unwrap();
    let note = t.wait_event("mem", "AtMemoryCap").await;
    assert!(note.contains("escalating"), "{note}");
    assert_eq!(limit().await.0, "400Mi");
    let ns_label = format!("namespace=\"{}\"", apps.name);
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        2.0
    );
    t.finish().await;
}
