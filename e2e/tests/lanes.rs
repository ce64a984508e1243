//! One namespace cannot stall another: a tenant's policy names a mirror that accepts connections
//! and never answers (a black hole); while the controller's check of it hangs, a crash loop in
//! another namespace is still restarted. The ordering is the proof: the other namespace's restart
//! lands while the black hole still holds the check's connection open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use auto_agent_e2e::namespace::TestNamespace;
use auto_agent_e2e::proxy::BlackHole;
use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::steps;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_mirror_in_one_namespace_does_not_stall_another() {
    let mut t = Setup::new("lanes", NODE).await;
    let admin = t.admin.clone();
    let black_hole = BlackHole::start().await.unwrap();
    let hole = black_hole.addr.to_string();
    t.start_agents(
        1,
        vec![
            ("AUTO_AGENT_PLAIN_HTTP_REGISTRIES".into(), hole.clone()),
            ("AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES".into(), hole.clone()),
        ],
    )
    .await;
    // The tenant with the black-hole mirror.
    t.policy(
        "mirror",
        json!({"targetSelector": {"matchLabels": {"tier": "pull"}},
               "actions": {"imageMirror": {"registry": format!("{hole}/mirror")}}}),
    );
    let stuck = t
        .running_pod(
            Workload::new("stuck")
                .label("tier", "pull")
                .image("registry.example.com/team/app:1"),
        )
        .await;
    // Another tenant with a crash loop.
    let other = TestNamespace::create(&t.cluster, "lanes-other")
        .await
        .unwrap();
    steps::apply_policy(
        &t.cluster,
        &other.name,
        "restart",
        json!({"targetSelector": {"matchLabels": {"app": "api"}}, "actions": {"restartStuckPods": true}}),
    );
    // Three replicas, so restarting one keeps the default minimum of ready replicas.
    let api = Workload::new("api").replicas(3).on_node(NODE);
    api.rollout(&admin, &other.name).await.unwrap();
    let crashing = steps::ready_pods(&admin, &other.name, "api")
        .await
        .remove(0)
        .metadata
        .name
        .unwrap();

    scenario::start_failure(&admin, t.ns(), &stuck, None, StartFailure::ImagePullBackOff)
        .await
        .unwrap();
    poll_until(
        "the mirror check reaches the black hole",
        Duration::from_secs(60),
        || {
            let n = black_hole.accepted();
            async move { Ok(n > 0) }
        },
    )
    .await
    .unwrap();
    let hung_at = Instant::now();
    scenario::crash_loop(&admin, &other.name, &crashing, None, 2, 1)
        .await
        .unwrap();
    let note = steps::wait_event(&admin, &other.name, "api", "RestartedPod").await;
    let took = hung_at.elapsed();
    let stuck_events = steps::events(&admin, t.ns()).await;
    let refused = stuck_events
        .get("stuck")
        .is_some_and(|e| e.iter().any(|(reason, _)| reason == "MirrorMissing"));
    assert!(
        !refused,
        "the other namespace was served while the black hole still held its check ({took:?}): {stuck_events:?}"
    );
    println!("restart in the other namespace {took:?} after the black hole took the check: {note}");
    other.delete(admin.clone()).await.unwrap();
    t.finish().await;
}
