//! Evidence bundles on the real cluster with a real S3 server (s3s-fs): a crash-loop restart leaves
//! its bundle at the seed's key layout in S3 (SDK configured like a user's S3-compatible store)
//! and, with the other setting, on a filesystem; seeded secrets in env, annotations and log lines
//! appear in no bundle; and with S3 down, 20 incidents are remediated anyway and all 20 bundles
//! arrive, once each, when it comes back. With remote durability the pod waits for its bundle to be
//! in S3; a controller pod deleted during an outage hands its spooled bundles to the next replica.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::agents::AgentStack;
use auto_agent_e2e::s3::{S3Server, SECRET_KEY};
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::{events, ready_pods};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

// Its own node: these tests share no node's pods or budgets with the remediation tests
// (kwok-node-0); they take turns on it (see `Setup`).
const NODE: &str = "kwok-node-2";
const TIMEOUT: Duration = Duration::from_secs(120);

/// What the "secretive" workload carries and no bundle may contain.
const SECRETS: &[&str] = &[
    "hunter2-env",
    "hunter2-annotation",
    "tok-annotation-123",
    "hunter2-args",
    "eyJzdWIiOiJ0ZXN0In0",
    "AKIAABCDEFGHIJKLMNOP",
    "MIIEsecretkeymaterial",
    "hunter2-log",
    SECRET_KEY,
];

fn workload(name: &str, replicas: i32, store: &str, secretive: bool) -> Workload {
    let w = Workload::new(name).replicas(replicas).label("store", store);
    if !secretive {
        return w;
    }
    w.env(json!([
        {"name": "DB_PASSWORD", "value": "hunter2-env"},
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
    ]))
    .args(&["--db-password", "hunter2-args", "--port", "8080"])
    .annotation(
        "kubectl.kubernetes.io/last-applied-configuration",
        "{\"spec\":{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2-annotation\"}]}}",
    )
    .annotation("example.com/api-token", "tok-annotation-123")
    .annotation("example.com/team", "payments")
}

/// Waits until every live replica's spool is empty (its bundles reached their store).
async fn spool_drained(stack: &AgentStack, what: &str) {
    poll_until(what, TIMEOUT, || async {
        Ok(stack.metric("auto_agent_bundle_spool_entries").await == 0.0)
    })
    .await
    .unwrap();
}

fn today() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d")
        .to_string()
}

fn assert_redacted(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} leaked into {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_bundles_land_in_s3_and_on_a_filesystem_with_secrets_redacted() {
    let mut t = Setup::new("evidence", NODE).await;
    let (cluster, admin) = (t.cluster.clone(), t.admin.clone());
    let work = cluster.state_dir().join(format!("evidence-{}", t.ns()));
    let s3 = S3Server::start(&work.join("s3"), &["evidence"])
        .await
        .unwrap();
    let efs = work.join("efs");
    let mut env = s3.controller_env();
    env.push((
        "AUTO_AGENT_BUNDLE_ALLOWED_ROOTS".into(),
        efs.display().to_string(),
    ));
    t.start_agents(1, env).await;
    let (apps, stack) = (&t.apps, t.stack());

    let safety = json!({"minReadyReplicas": 0, "maxUnhealthyPercent": 100});
    t.policy(
        "to-s3",
        json!({"targetSelector": {"matchLabels": {"store": "s3"}}, "actions": {"restartStuckPods": true},
               "safety": safety, "logBundle": {"s3": {"bucket": "evidence", "prefix": "bundles"}, "tailLines": 20}}),
    );
    t.policy(
        "to-fs",
        json!({"targetSelector": {"matchLabels": {"store": "fs"}}, "actions": {"restartStuckPods": true},
               "safety": safety, "logBundle": {"filesystem": {"path": efs.join("team-a")}}}),
    );
    t.rollout(workload("secretive", 3, "s3", true)).await;
    t.rollout(workload("plain", 3, "fs", false)).await;
    let secretive = t.ready_pod_names("secretive").await.remove(0);
    let plain = t.ready_pod_names("plain").await.remove(0);
    scenario::seed_logs(
        &cluster,
        &apps.name,
        &secretive,
        "app",
        2,
        &[
            "boom: cannot reach the database",
            "retrying with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl",
            "loaded credentials AKIAABCDEFGHIJKLMNOP",
            "-----BEGIN RSA PRIVATE KEY-----",
            "MIIEsecretkeymaterial",
            "-----END RSA PRIVATE KEY-----",
            "config: password=hunter2-log user=app",
        ],
        &[],
    )
    .await
    .unwrap();
    scenario::seed_logs(
        &cluster,
        &apps.name,
        &plain,
        "app",
        2,
        &["panic: plain failure"],
        &[],
    )
    .await
    .unwrap();
    for pod in [&secretive, &plain] {
        scenario::crash_loop(&admin, &apps.name, pod, None, 2, 1)
            .await
            .unwrap();
    }

    // S3: the seed's key layout under the policy's prefix, named in the Event.
    let note = t.wait_event("secretive", "RestartedPod").await;
    let key = format!(
        "bundles/{}/secretive/CrashLoopBackOff/{}/{secretive}-2.json",
        apps.name,
        today()
    );
    assert!(
        note.contains(&format!("s3://evidence/{key}")),
        "the Event names the S3 object: {note}"
    );
    assert_eq!(s3.keys("evidence"), vec![key.clone()]);
    let text = s3.read("evidence", &key).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["log"]["lines"][0], "boom: cannot reach the database");
    assert_eq!(doc["policy"]["name"], "to-s3");
    assert_eq!(doc["owner"]["name"], "secretive");
    assert_eq!(doc["node"]["name"], NODE);
    assert!(doc["pod"]["spec"]["containers"][0]["env"].is_array());
    // The pod's own Events (the scheduler's at least) and the node's conditions come along.
    assert!(
        !doc["events"].as_array().unwrap().is_empty(),
        "{}",
        doc["events"]
    );
    assert!(!doc["node"]["conditions"].as_array().unwrap().is_empty());
    assert!(
        doc["redactions"].as_u64().unwrap() >= 7,
        "{}",
        doc["redactions"]
    );
    assert!(text.contains("[REDACTED PRIVATE KEY]"));
    assert!(text.contains("payments"), "non-secret annotations are kept");
    assert_redacted("the S3 bundle", &text);

    // Filesystem: the other setting, below the policy's path.
    let note = t.wait_event("plain", "RestartedPod").await;
    let path = efs.join(format!(
        "team-a/{}/plain/CrashLoopBackOff/{}/{plain}-2.json",
        apps.name,
        today()
    ));
    assert!(
        note.contains(&path.display().to_string()),
        "the Event names the file: {note}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["log"]["lines"][0], "panic: plain failure");
    assert_eq!(doc["policy"]["name"], "to-fs");

    // Nothing secret in the Events or the controller's log either.
    for notes in events(&admin, &apps.name).await.values() {
        for (_, n) in notes {
            assert_redacted("an Event", n);
        }
    }
    assert_redacted("the controller log", &stack.controllers[0].process.output());
    assert_eq!(
        stack
            .metric("auto_agent_bundles_written_total{store=\"s3\"}")
            .await,
        1.0
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_spools_twenty_bundles_and_delivers_each_exactly_once() {
    let mut t = Setup::new("outage", NODE).await;
    let (cluster, admin) = (t.cluster.clone(), t.admin.clone());
    let work = cluster.state_dir().join(format!("evidence-{}", t.ns()));
    let mut s3 = S3Server::start(&work.join("s3"), &["evidence"])
        .await
        .unwrap();
    t.start_agents(1, s3.controller_env()).await;
    let (apps, stack) = (&t.apps, t.stack());
    t.policy(
        "outage",
        json!({"targetSelector": {"matchLabels": {"store": "s3"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 40, "windowSeconds": 3600}],
               "logBundle": {"s3": {"bucket": "evidence"}}}),
    );
    // Twenty workloads, so twenty incidents.
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
    let creates = names.iter().map(|n| t.rollout(workload(n, 1, "s3", false)));
    futures::future::join_all(creates).await;

    s3.stop();
    let mut pods = Vec::new();
    for n in &names {
        let pod = t.ready_pod_names(n).await.remove(0);
        scenario::crash_loop(&admin, &apps.name, &pod, None, 2, 1)
            .await
            .unwrap();
        pods.push(pod);
    }
    // Remediated while S3 is down: every pod restarted, every bundle spooled.
    poll_until("20 restarts during the outage", TIMEOUT, || {
        let s = &stack;
        async move {
            Ok(s.metric("auto_agent_bundles_spooled_total{store=\"s3\"}")
                .await
                >= 20.0)
        }
    })
    .await
    .unwrap();
    let restarted = |e: &std::collections::BTreeMap<String, Vec<(String, String)>>| {
        names
            .iter()
            .filter(|n| {
                e.get(n.as_str())
                    .is_some_and(|v| v.iter().any(|(r, _)| r == "RestartedPod"))
            })
            .count()
    };
    poll_until("20 RestartedPod Events", TIMEOUT, || {
        let admin = admin.clone();
        let ns = apps.name.clone();
        let restarted = &restarted;
        async move { Ok(restarted(&events(&admin, &ns).await) == 20) }
    })
    .await
    .unwrap();
    let all = events(&admin, &apps.name).await;
    let note = &all["svc-0"]
        .iter()
        .find(|(r, _)| r == "RestartedPod")
        .unwrap()
        .1;
    assert!(note.contains("spooled"), "{note}");
    assert!(s3.keys("evidence").is_empty());
    assert_eq!(stack.metric("auto_agent_bundle_spool_entries").await, 20.0);

    s3.start_again().await.unwrap();
    spool_drained(stack, "the spool drains").await;
    let keys = s3.keys("evidence");
    assert_eq!(keys.len(), 20, "{keys:?}");
    let mut ids = std::collections::BTreeSet::new();
    let mut bundled_pods = std::collections::BTreeSet::new();
    for key in &keys {
        let doc: serde_json::Value =
            serde_json::from_str(&s3.read("evidence", key).unwrap()).unwrap();
        ids.insert(doc["bundleId"].as_str().unwrap().to_owned());
        let file = key.rsplit('/').next().unwrap();
        bundled_pods.insert(file.trim_end_matches("-2.json").to_owned());
    }
    let pods: std::collections::BTreeSet<String> = pods.into_iter().collect();
    assert_eq!(bundled_pods, pods, "one bundle per remediated pod");
    assert_eq!(ids.len(), 20, "20 distinct bundles, none twice");
    assert_eq!(
        stack
            .metric("auto_agent_bundles_delivered_from_spool_total")
            .await,
        20.0
    );
    t.finish().await;
}

/// `--bundle-durability remote`: with S3 down the restart is refused and the pod kept (its
/// evidence is still on the node); the spooled bundle arrives when S3 is back, and the next
/// restart of the crash loop goes ahead with its bundle stored first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_durability_keeps_the_pod_until_its_bundle_is_in_s3() {
    let mut t = Setup::new("remote", NODE).await;
    let (cluster, admin) = (t.cluster.clone(), t.admin.clone());
    let work = cluster.state_dir().join(format!("evidence-{}", t.ns()));
    let mut s3 = S3Server::start(&work.join("s3"), &["evidence"])
        .await
        .unwrap();
    let mut env = s3.controller_env();
    env.push(("AUTO_AGENT_BUNDLE_DURABILITY".into(), "remote".into()));
    t.start_agents(1, env).await;
    let (apps, stack) = (&t.apps, t.stack());
    t.policy(
        "remote",
        json!({"targetSelector": {"matchLabels": {"store": "s3"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0},
               "logBundle": {"s3": {"bucket": "evidence", "prefix": "bundles"}}}),
    );
    t.rollout(workload("keeper", 1, "s3", false)).await;
    let pod = ready_pods(&admin, &apps.name, "keeper").await[0].clone();
    let name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(admin.clone(), &apps.name);

    s3.stop();
    scenario::crash_loop(&admin, &apps.name, &name, None, 2, 1)
        .await
        .unwrap();
    let refused = t.wait_event("keeper", "ActionFailed").await;
    assert!(refused.contains("waits for the remote copy"), "{refused}");
    assert!(refused.contains("pod is kept"), "{refused}");
    let kept = pods.get(&name).await.unwrap();
    assert_eq!(kept.metadata.uid.as_deref(), Some(uid.as_str()));
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the pod was not deleted"
    );
    assert!(
        !events(&admin, &apps.name)
            .await
            .get("keeper")
            .is_some_and(|v| v.iter().any(|(r, _)| r == "RestartedPod")),
        "no restart without the remote copy"
    );
    assert_eq!(stack.metric("auto_agent_bundle_spool_entries").await, 1.0);

    s3.start_again().await.unwrap();
    spool_drained(stack, "the refused restart's bundle arrives").await;
    let keys = s3.keys("evidence");
    assert!(
        keys.iter().any(|k| k.ends_with(&format!("/{name}-2.json"))),
        "{keys:?}"
    );

    // The crash loop goes on; now the bundle is stored first and the restart proceeds.
    scenario::crash_loop(&admin, &apps.name, &name, None, 3, 1)
        .await
        .unwrap();
    let note = t.wait_event("keeper", "RestartedPod").await;
    assert!(!note.contains("spooled"), "{note}");
    let key = format!(
        "bundles/{}/keeper/CrashLoopBackOff/{}/{name}-3.json",
        apps.name,
        today()
    );
    assert!(s3.keys("evidence").contains(&key), "{key} missing");
    assert!(note.contains(&key), "the Event names the bundle: {note}");
    poll_until("the pod is replaced", TIMEOUT, || {
        let pods = pods.clone();
        let name = name.clone();
        let uid = uid.clone();
        async move {
            Ok(match pods.get_opt(&name).await? {
                None => true,
                Some(p) => p.metadata.uid.as_deref() != Some(uid.as_str()),
            })
        }
    })
    .await
    .unwrap();
    t.finish().await;
}

/// A controller pod deleted while S3 is down (its spool is an emptyDir): on SIGTERM it hands the
/// spooled bundle to a labelled ConfigMap; its replacement takes it back into its own spool, and
/// delivers it when S3 returns. The bundle in S3 is the one the restart's Event named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_controller_pod_hands_its_spooled_bundles_to_the_next() {
    let mut t = Setup::new("handoff", NODE).await;
    let (cluster, admin) = (t.cluster.clone(), t.admin.clone());
    let work = cluster.state_dir().join(format!("evidence-{}", t.ns()));
    let mut s3 = S3Server::start(&work.join("s3"), &["evidence"])
        .await
        .unwrap();
    t.start_agents(1, s3.controller_env()).await;
    // The controller is replaced below (a mutable borrow of the setup): own the namespace's name.
    let ns = t.ns().to_owned();
    t.policy(
        "handoff",
        json!({"targetSelector": {"matchLabels": {"store": "s3"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0},
               "logBundle": {"s3": {"bucket": "evidence", "prefix": "bundles"}}}),
    );
    t.rollout(workload("orphan", 1, "s3", false)).await;
    let pod = t.ready_pod_names("orphan").await.remove(0);

    s3.stop();
    scenario::crash_loop(&admin, &ns, &pod, None, 2, 1)
        .await
        .unwrap();
    let note = t.wait_event("orphan", "RestartedPod").await;
    assert!(note.contains("spooled"), "{note}");
    assert_eq!(
        t.stack().metric("auto_agent_bundle_spool_entries").await,
        1.0
    );

    // The pod is deleted: SIGTERM, then its emptyDir is gone.
    let agents = t.stack().namespace.name.clone();
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(admin.clone(), &agents);
    let handed_off = || async {
        configmaps
            .list(&kube::api::ListParams::default().labels("autoagent.io/spooled-bundle"))
            .await
            .unwrap()
            .items
    };
    assert!(handed_off().await.is_empty());
    let old = t.stack().controllers[0].process.log.clone();
    t.stack_mut()
        .replace_controller(0, s3.controller_env())
        .await
        .unwrap();
    let old_log = std::fs::read_to_string(&old).unwrap();
    assert!(
        old_log.contains("Handed spooled bundles to ConfigMaps"),
        "{old_log}"
    );
    // The replacement took it over: the ConfigMap is gone, the bundle waits in its spool.
    poll_until("the ConfigMap taken over", TIMEOUT, || async {
        Ok(handed_off().await.is_empty())
    })
    .await
    .unwrap();
    assert_eq!(
        t.stack()
            .metric("auto_agent_bundle_handoffs_total{outcome=\"taken_over\"}")
            .await,
        1.0
    );
    assert_eq!(
        t.stack().metric("auto_agent_bundle_spool_entries").await,
        1.0
    );
    assert!(s3.keys("evidence").is_empty());

    s3.start_again().await.unwrap();
    spool_drained(t.stack(), "the handed-off bundle delivered").await;
    let key = format!(
        "bundles/{}/orphan/CrashLoopBackOff/{}/{pod}-2.json",
        ns,
        today()
    );
    assert_eq!(s3.keys("evidence"), vec![key.clone()]);
    let doc: serde_json::Value = serde_json::from_str(&s3.read("evidence", &key).unwrap()).unwrap();
    assert_eq!(
        doc["incidentKey"].as_str().map(|k| k.contains("orphan")),
        Some(true)
    );
    t.finish().await;
}
