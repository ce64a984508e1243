//! The sensor on the real cluster: a process for one fake node, authenticated with the token of a
//! read-only ServiceAccount, detects every scenario on its node and none on other nodes, attaches
//! the seeded previous log lines, and loses nothing when the ingest server is killed and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use auto_agent_e2e::agents::{Install, Sensor, SensorIdentity, SensorOptions};
use auto_agent_e2e::ingest::{IngestServer, Received, Recorder};
use auto_agent_e2e::pki::TestPki;
use auto_agent_e2e::process::{free_port, metric_sum};
use auto_agent_e2e::scenario::{self, NodePressure, StartFailure};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace, Workload};
use auto_agent_engine::{FindingKind, Transition};
use kube::Client;

const TARGET: &str = "kwok-node-1";
const OTHER: &str = "kwok-node-2";
const TIMEOUT: Duration = Duration::from_secs(60);

async fn pod_on(client: &Client, ns: &str, name: &str, node: &str) -> String {
    Workload::new(name)
        .on_node(node)
        .image(&format!("registry.example.com/{name}:1"))
        .running_pod(client, ns)
        .await
        .unwrap()
}

/// A recording ingest server and the sensor of `TARGET` streaming to it in plain text.
async fn sensor_on_target(
    cluster: &Cluster,
    identity: &SensorIdentity,
) -> (Recorder, SocketAddr, IngestServer, Sensor) {
    let recorder = Recorder::new();
    let ingest_addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let server = IngestServer::start(ingest_addr, recorder.clone()).unwrap();
    let options = SensorOptions {
        node: TARGET.into(),
        controller: format!("http://{ingest_addr}"),
        ..SensorOptions::default()
    };
    let sensor = Sensor::start(cluster, identity, &options).await.unwrap();
    (recorder, ingest_addr, server, sensor)
}

/// (kind, pod name or node, transition) -> ids seen
fn by_target(recorder: &Recorder) -> BTreeMap<(FindingKind, String, Transition), BTreeSet<String>> {
    let mut out: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for r in recorder.snapshot() {
        let target = r
            .finding
            .pod
            .as_ref()
            .map_or(r.finding.node.clone(), |p| p.name.clone());
        out.entry((r.finding.kind, target, r.finding.transition))
            .or_default()
            .insert(r.finding.id.clone());
    }
    out
}

async fn wait_for(recorder: &Recorder, what: &str, pred: impl Fn(&Recorder) -> bool) {
    let recorder = recorder.clone();
    let pred = &pred;
    poll_until(what, TIMEOUT, || {
        let ok = pred(&recorder);
        async move { Ok(ok) }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; received: {:#?}",
            recorder
                .snapshot()
                .iter()
                .map(|r| &r.finding.id)
                .collect::<Vec<_>>()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_detects_its_node_and_loses_nothing_across_ingest_restarts() {
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "sensor").await.unwrap();
    let install = Install::create(&cluster, &ns.name).await.unwrap();
    let identity = SensorIdentity::create(&cluster, &install).await.unwrap();
    // A failed earlier run may have left pressure (and its NoSchedule taint) behind.
    for node in [TARGET, OTHER] {
        scenario::node_pressure(&admin, node, NodePressure::Memory, false)
            .await
            .unwrap();
    }

    let (recorder, ingest_addr, server, sensor) = sensor_on_target(&cluster, &identity).await;

    // The same workloads on the sensor's node and on another node.
    let mut pods = BTreeMap::new();
    for (prefix, node) in [("t", TARGET), ("o", OTHER)] {
        for what in ["crash", "oom", "pull", "cfg", "evict"] {
            let name = format!("{prefix}-{what}");
            pods.insert(name.clone(), pod_on(&admin, &ns.name, &name, node).await);
        }
    }
    let previous = [
        "connecting to db",
        "FATAL: password authentication failed",
        "\x1b[31mexit\x1b[0m",
    ];
    scenario::seed_logs(
        &cluster,
        &ns.name,
        &pods["t-crash"],
        "app",
        3,
        &previous,
        &["now"],
    )
    .await
    .unwrap();

    let started = Instant::now();
    for prefix in ["t", "o"] {
        let p = |w: &str| pods[&format!("{prefix}-{w}")].clone();
        scenario::crash_loop(&admin, &ns.name, &p("crash"), None, 3, 1)
            .await
            .unwrap();
        scenario::oom_killed(&admin, &ns.name, &p("oom"), None, 1)
            .await
            .unwrap();
        scenario::start_failure(
            &admin,
            &ns.name,
            &p("pull"),
            None,
            StartFailure::ErrImagePull,
        )
        .await
        .unwrap();
        scenario::start_failure(
            &admin,
            &ns.name,
            &p("cfg"),
            None,
            StartFailure::CreateContainerConfigError,
        )
        .await
        .unwrap();
        scenario::evicted(&admin, &ns.name, &p("evict"))
            .await
            .unwrap();
    }
    scenario::node_pressure(&admin, TARGET, NodePressure::Memory, true)
        .await
        .unwrap();
    scenario::node_pressure(&admin, OTHER, NodePressure::Memory, true)
        .await
        .unwrap();

    let expected = [
        (FindingKind::CrashLoopBackOff, pods["t-crash"].clone()),
        (FindingKind::OomKilled, pods["t-oom"].clone()),
        (FindingKind::ImagePullBackOff, pods["t-pull"].clone()),
        (
            FindingKind::CreateContainerConfigError,
            pods["t-cfg"].clone(),
        ),
        (FindingKind::PodEvicted, pods["t-evict"].clone()),
        (FindingKind::NodeMemoryPressure, TARGET.to_owned()),
    ];
    let exp = expected.clone();
    wait_for(&recorder, "every scenario on the sensor's node", move |r| {
        let seen = by_target(r);
        exp.iter()
            .all(|(k, t)| seen.contains_key(&(*k, t.clone(), Transition::Started)))
    })
    .await;
    println!(
        "all six findings received {:?} after the scenarios were set",
        started.elapsed()
    );

    let received = recorder.snapshot();
    for r in &received {
        assert_eq!(
            r.finding.node, TARGET,
            "a finding about another node: {:?}",
            r.finding
        );
        // Pods of other tests may fail on this node too; ours on the other node must not appear.
        if let Some(pod) = r.finding.pod.as_ref().filter(|p| p.namespace == ns.name) {
            assert!(
                pod.name.starts_with("t-"),
                "a finding about a pod on another node: {pod:?}"
            );
        }
    }
    let ours = |r: &&Received| {
        r.finding
            .pod
            .as_ref()
            .is_some_and(|p| p.namespace == ns.name)
    };
    let crash = received
        .iter()
        .filter(ours)
        .find(|r| r.finding.kind == FindingKind::CrashLoopBackOff)
        .unwrap();
    assert_eq!(
        crash.finding.log_lines,
        vec![
            "connecting to db",
            "FATAL: password authentication failed",
            "\\u{1b}[31mexit\\u{1b}[0m"
        ],
        "the seeded previous log, control characters escaped"
    );
    assert_eq!(
        (crash.finding.restart_count, crash.finding.exit_code),
        (3, Some(1))
    );
    assert_eq!(
        crash.finding.owner.as_ref().map(|o| o.name.as_str()),
        Some("t-crash")
    );
    let oom = received
        .iter()
        .filter(ours)
        .find(|r| r.finding.kind == FindingKind::OomKilled)
        .unwrap();
    assert_eq!(oom.finding.exit_code, Some(137));
    let hellos = recorder.hellos.lock().unwrap().clone();
    assert_eq!(hellos[0].node_name, TARGET);

    // Kill the ingest server with a finding sent but not acknowledged, fail more while it is down.
    recorder.ack.store(false, Ordering::SeqCst);
    scenario::crash_loop(&admin, &ns.name, &pods["t-crash"], None, 4, 1)
        .await
        .unwrap();
    let crash_uid = crash.finding.pod.as_ref().unwrap().uid.clone();
    let oom_uid = oom.finding.pod.as_ref().unwrap().uid.clone();
    let crash_id = |n: u32| format!("{crash_uid}/app/CrashLoopBackOff/{n}");
    wait_for(&recorder, "restart 4 received (unacked)", |r| {
        r.snapshot().iter().any(|x| x.finding.id == crash_id(4))
    })
    .await;
    server.kill();
    scenario::crash_loop(&admin, &ns.name, &pods["t-crash"], None, 5, 2)
        .await
        .unwrap();
    scenario::oom_killed(&admin, &ns.name, &pods["t-oom"], None, 2)
        .await
        .unwrap();
    scenario::node_pressure(&admin, TARGET, NodePressure::Memory, false)
        .await
        .unwrap();
    recorder.ack.store(true, Ordering::SeqCst);
    let _server = IngestServer::start(ingest_addr, recorder.clone()).unwrap();

    wait_for(&recorder, "findings made while the server was down", |r| {
        let ids: Vec<String> = r.snapshot().iter().map(|x| x.finding.id.clone()).collect();
        let crash4 = ids.iter().filter(|id| **id == crash_id(4)).count();
        ids.contains(&crash_id(5))
            && ids.contains(&format!("{oom_uid}/app/OOMKilled/2"))
            && ids
                .iter()
                .any(|id| id.starts_with(&format!("{TARGET}/MemoryPressure/Cleared/")))
            && crash4 >= 2
    })
    .await;

    // Resends carry the same id and sequence; nothing else is duplicated under another id.
    let all = recorder.snapshot();
    let mut seq_of: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for r in &all {
        seq_of
            .entry(r.finding.id.clone())
            .or_default()
            .insert(r.sequence);
    }
    for (id, seqs) in &seq_of {
        assert_eq!(
            seqs.len(),
            1,
            "{id} was sent with different sequences {seqs:?}"
        );
    }
    let targets = by_target(&recorder);
    let crash_ids = &targets[&(
        FindingKind::CrashLoopBackOff,
        pods["t-crash"].clone(),
        Transition::Started,
    )];
    assert_eq!(crash_ids.len(), 3, "one id per restart: {crash_ids:?}");

    let metrics = sensor.metrics().await.unwrap();
    assert!(
        metric_sum(&metrics, "auto_agent_sensor_stream_reconnects_total") >= 1.0,
        "{metrics}"
    );
    assert!(metric_sum(&metrics, "auto_agent_sensor_findings_total") >= 9.0);
    assert!(metric_sum(&metrics, "auto_agent_sensor_log_reads_total") >= 1.0);
    assert_eq!(metric_sum(&metrics, "auto_agent_sensor_dropped_total"), 0.0);
    // Pods of other tests may share the node; ours are five.
    assert!(
        metric_sum(&metrics, "auto_agent_sensor_watched_pods") >= 5.0,
        "{metrics}"
    );

    scenario::node_pressure(&admin, OTHER, NodePressure::Memory, false)
        .await
        .unwrap();
    drop(sensor);
    install.chart.uninstall().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_verifies_tls_and_reopens_the_stream_with_a_rotated_token() {
    let cluster = Cluster::get().unwrap();
    let ns = TestNamespace::create(&cluster, "sensor-tls").await.unwrap();
    let install = Install::create(&cluster, &ns.name).await.unwrap();
    let identity = SensorIdentity::create(&cluster, &install).await.unwrap();
    const NAME: &str = "auto-agent-controller.auto-agent.svc";
    let pki = TestPki::create(&identity.dir.join("pki"), &[NAME]).unwrap();
    let other_pki = TestPki::create(&identity.dir.join("other-pki"), &[NAME]).unwrap();

    let recorder = Recorder::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let _server = IngestServer::start_tls(addr, recorder.clone(), &pki).unwrap();

    // A sensor that trusts another CA never gets a stream.
    let untrusting = Sensor::start(
        &cluster,
        &identity,
        &SensorOptions {
            node: "kwok-node-0".into(),
            controller: format!("https://{addr}"),
            ca_file: Some(other_pki.ca_file.clone()),
            tls_server_name: Some(NAME.into()),
            ..SensorOptions::default()
        },
    )
    .await
    .unwrap();
    poll_until("failed TLS handshakes", TIMEOUT, || {
        let metrics = untrusting.metrics();
        async move {
            Ok(metric_sum(&metrics.await?, "auto_agent_sensor_stream_reconnects_total") >= 2.0)
        }
    })
    .await
    .unwrap();
    assert!(
        recorder.hellos.lock().unwrap().is_empty(),
        "a sensor with the wrong CA reached the server"
    );
    drop(untrusting);

    let sensor = Sensor::start(
        &cluster,
        &identity,
        &SensorOptions {
            node: "kwok-node-0".into(),
            controller: format!("https://{addr}"),
            ca_file: Some(pki.ca_file.clone()),
            tls_server_name: Some(NAME.into()),
            token_check_seconds: Some(1),
            ..SensorOptions::default()
        },
    )
    .await
    .unwrap();
    wait_for(&recorder, "a stream over TLS", |r| {
        !r.hellos.lock().unwrap().is_empty()
    })
    .await;
    identity.refresh_agent_token().await.unwrap();
    wait_for(&recorder, "a stream with the rotated token", |r| {
        let digests: BTreeSet<u64> = r.token_digests.lock().unwrap().iter().copied().collect();
        digests.len() >= 2
    })
    .await;
    let output = sensor.process.output();
    assert!(output.contains("Token rotated"), "{output}");
    drop(sensor);
    install.chart.uninstall().unwrap();
}

/// Each previous-log path on its own: with the kubelet's file on the node, the bundle's log is the
/// file's (not what the API would serve) and `node_file` reads rise; without it, the API's, and
/// `api` reads rise. The API serves different lines than the file, so a finding cannot pass with
/// the wrong path's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_logs_come_from_the_node_file_else_from_the_api() {
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "logsrc").await.unwrap();
    let install = Install::create(&cluster, &ns.name).await.unwrap();
    let identity = SensorIdentity::create(&cluster, &install).await.unwrap();
    let (recorder, _, _server, sensor) = sensor_on_target(&cluster, &identity).await;
    let reads = |source: &'static str| {
        let sensor = &sensor;
        async move {
            let m = sensor.metrics().await.unwrap();
            m.lines()
                .filter(|l| l.starts_with("auto_agent_sensor_log_reads_total{"))
                .filter(|l| {
                    l.contains(&format!("source=\"{source}\"")) && l.contains("outcome=\"ok\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let (file_before, api_before) = (reads("node_file").await, reads("api").await);

    let mut pods = BTreeMap::new();
    for (name, keep_file) in [("from-file", true), ("from-api", false)] {
        let pod = pod_on(&admin, &ns.name, name, TARGET).await;
        scenario::seed_logs(
            &cluster,
            &ns.name,
            &pod,
            "app",
            3,
            &["the node's file"],
            &["now"],
        )
        .await
        .unwrap();
        scenario::split_previous_log(&cluster, &ns.name, &pod, "app", 3, &["the api"], keep_file)
            .await
            .unwrap();
        scenario::crash_loop(&admin, &ns.name, &pod, None, 3, 1)
            .await
            .unwrap();
        pods.insert(name, pod);
    }
    let want = pods.clone();
    wait_for(&recorder, "both crash loops", move |r| {
        let seen = by_target(r);
        want.values().all(|p| {
            seen.contains_key(&(
                FindingKind::CrashLoopBackOff,
                p.clone(),
                Transition::Started,
            ))
        })
    })
    .await;
    let received = recorder.snapshot();
    let log_of = |pod: &str| {
        received
            .iter()
            .find(|r| {
                r.finding
                    .pod
                    .as_ref()
                    .is_some_and(|p| p.name == pod && p.namespace == ns.name)
            })
            .map(|r| r.finding.log_lines.clone())
            .unwrap()
    };
    assert_eq!(log_of(&pods["from-file"]), ["the node's file"]);
    assert_eq!(log_of(&pods["from-api"]), ["the api"]);
    assert_eq!(
        reads("node_file").await - file_before,
        1.0,
        "one read from the node's file"
    );
    assert_eq!(
        reads("api").await - api_before,
        1.0,
        "one read through the API"
    );
    drop(sensor);
    ns.delete(admin).await.unwrap();
}
