//! Bundle size caps end to end: a crash loop whose previous log is big (5,000 lines, about 1 MiB,
//! the last one 9 KiB) is still restarted after its bundle is written; the sensor sends a bounded
//! tail (lines cut to 2 KiB, 16 KiB in all) and the bundle keeps only the policy's `tailLines`
//! newest lines, with the cut listed in `truncation`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_e2e::scenario;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

const NODE: &str = "kwok-node-2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_previous_log_is_capped_and_the_bundle_still_written() {
    let t = Setup::with_agents("caps", NODE).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    // The controller's own bundle directory, with the policy's tail.
    let dir = t.stack().bundle_dir.display().to_string();
    t.policy(
        "caps",
        json!({"targetSelector": {"matchLabels": {"tier": "caps"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0},
               "logBundle": {"filesystem": {"path": dir}, "tailLines": 20}}),
    );
    let pod = t
        .running_pod(Workload::new("big").label("tier", "caps"))
        .await;
    let lines: Vec<String> = (0..5_000)
        .map(|i| {
            let width = if i == 4_999 { 9 * 1024 } else { 200 };
            format!("line {i:05} {}", "x".repeat(width))
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    scenario::seed_logs(&t.cluster, &ns, &pod, "app", 2, &refs, &[])
        .await
        .unwrap();
    scenario::crash_loop(&admin, &ns, &pod, None, 2, 1)
        .await
        .unwrap();

    let note = t.wait_event("big", "RestartedPod").await;
    let pods: Api<Pod> = t.pods();
    assert!(pods.get_opt(&pod).await.unwrap().is_none(), "restarted");
    let stack = t.stack();
    let bundle = stack
        .bundles()
        .into_iter()
        .find(|b| b.ends_with(&format!("{pod}-2.json")))
        .unwrap_or_else(|| panic!("no bundle for {pod}: {:?}", stack.bundles()));
    assert!(note.contains(&bundle), "{note}");
    let text = std::fs::read_to_string(stack.bundle_dir.join(&bundle)).unwrap();
    assert!(
        text.len() < 256 * 1024,
        "the bundle is {} bytes",
        text.len()
    );
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kept = doc["log"]["lines"].as_array().unwrap();
    assert_eq!(kept.len(), 20, "the policy's tailLines");
    assert!(
        kept.last()
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("line 04999 "),
        "the newest lines are kept"
    );
    assert!(
        kept.iter()
            .all(|l| l.as_str().unwrap().len() <= 4 * 1024 + 64),
        "each line cut to about 4 KiB"
    );
    assert_eq!(doc["log"]["truncated"], true);
    assert!(
        !doc["truncation"].as_array().unwrap().is_empty(),
        "the cut is listed: {}",
        doc["truncation"]
    );
    t.finish().await;
}
