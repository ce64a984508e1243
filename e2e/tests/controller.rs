//! The controller runtime on the real cluster: two controller processes and one sensor, each with
//! the token of its own ServiceAccount. One leader; killing it moves leadership and the sensor's
//! stream follows without losing a finding; refused streams are counted; a policy the controller
//! cannot use is Degraded while the others work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use auto_agent_e2e::agents::{
    Controller, ControllerIdentity, ControllerOptions, Install, Sensor, SensorIdentity,
    SensorOptions, raw_stream,
};
use auto_agent_e2e::pki::TestPki;
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::proxy::ServiceProxy;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace, Workload};
use auto_agent_shared::crd::AutoRemediationPolicy;
use auto_agent_shared::proto::v1 as pb;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

const TARGET: &str = "kwok-node-1";
const OTHER: &str = "kwok-node-2";
const NAME: &str = "auto-agent-controller.auto-agent.svc";
const TIMEOUT: Duration = Duration::from_secs(90);

async fn metric(c: &Controller, name: &str) -> f64 {
    c.metrics()
        .await
        .map(|m| metric_sum(&m, name))
        .unwrap_or(-1.0)
}

async fn deployment_on(client: &Client, ns: &str, name: &str) -> String {
    Workload::new(name)
        .on_node(TARGET)
        .label("tier", "backend")
        .running_pod(client, ns)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_loses_no_finding_and_bad_streams_are_refused() {
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let agents = TestNamespace::create(&cluster, "agents").await.unwrap();
    let apps = TestNamespace::create(&cluster, "apps").await.unwrap();
    let install = Install::create(&cluster, &agents.name).await.unwrap();
    let controller_id = ControllerIdentity::create(&cluster, &install)
        .await
        .unwrap();
    let mut sensor_id = SensorIdentity::create(&cluster, &install).await.unwrap();
    sensor_id.bind_to_node(&install, TARGET).await.unwrap();
    let pki = TestPki::create(&controller_id.dir.join("pki"), &[NAME]).unwrap();

    let options = |name: &str| ControllerOptions {
        name: name.into(),
        sensor_service_account: controller_id.sensor_service_account.clone(),
        tls: Some(pki.clone()),
        lease_seconds: 6,
        renew_seconds: 2,
        fence_margin_seconds: 2,
        bundle_dir: controller_id.dir.join("bundles"),
        env: Vec::new(),
        release: false,
    };
    let mut replicas = vec![
        Controller::start(&controller_id, &options("c1"))
            .await
            .unwrap(),
        Controller::start(&controller_id, &options("c2"))
            .await
            .unwrap(),
    ];
    let leader_index = |rs: &[Controller]| {
        let rs: Vec<_> = rs.iter().map(|c| (c.admin, c.name.clone())).collect();
        async move {
            let mut leaders = Vec::new();
            for (i, (addr, _)) in rs.iter().enumerate() {
                let m = auto_agent_e2e::process::http_get(*addr, "/metrics")
                    .await
                    .map(|(_, b)| metric_sum(&b, "auto_agent_leader"));
                if m.is_ok_and(|v| v == 1.0) {
                    leaders.push(i);
                }
            }
            leaders
        }
    };
    poll_until("exactly one leader", TIMEOUT, || {
        let f = leader_index(&replicas);
        async move { Ok(f.await.len() == 1) }
    })
    .await
    .unwrap();
    let first_leader = leader_index(&replicas).await[0];
    println!("leader elected: {}", replicas[first_leader].name);

    let service = ServiceProxy::start(replicas.iter().map(|c| c.grpc).collect())
        .await
        .unwrap();
    let sensor = Sensor::start(
        &cluster,
        &sensor_id,
        &SensorOptions {
            node: TARGET.into(),
            controller: format!("https://{}", service.addr),
            ca_file: Some(pki.ca_file.clone()),
            tls_server_name: Some(NAME.into()),
            ..SensorOptions::default()
        },
    )
    .await
    .unwrap();

    // One usable policy, one the controller cannot use (the apiserver accepts any operator string).
    let policy = |name: &str, selector: serde_json::Value| {
        format!(
            "{}",
            json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                   "metadata": {"name": name, "namespace": apps.name},
                   "spec": {"targetSelector": selector, "actions": {"restartStuckPods": true}}})
        )
    };
    for (name, selector) in [
        ("backend", json!({"matchLabels": {"tier": "backend"}})),
        (
            "broken",
            json!({"matchExpressions": [{"key": "tier", "operator": "Like", "values": ["back*"]}]}),
        ),
    ] {
        let (ok, _, err) = cluster
            .kubectl(&["apply", "-f", "-"], Some(&policy(name, selector)))
            .unwrap();
        assert!(ok, "{err}");
    }

    let mut pods = Vec::new();
    for i in 0..5 {
        pods.push(deployment_on(&admin, &apps.name, &format!("w-{i}")).await);
    }
    let arp: Api<AutoRemediationPolicy> = Api::namespaced(admin.clone(), &apps.name);
    let condition = |p: &AutoRemediationPolicy, t: &str| {
        p.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    poll_until("policy statuses", TIMEOUT, || {
        let arp = arp.clone();
        async move {
            let good = arp.get("backend").await?;
            let bad = arp.get("broken").await?;
            Ok(
                condition(&good, "Ready") == Some(("True".into(), "Active".into()))
                    && good.status.as_ref().and_then(|s| s.matched_targets) == Some(5)
                    && condition(&bad, "Degraded")
                        == Some(("True".into(), "InvalidSelector".into())),
            )
        }
    })
    .await
    .unwrap();

    // Three failures with the first leader.
    for pod in &pods[..3] {
        scenario::crash_loop(&admin, &apps.name, pod, None, 2, 1)
            .await
            .unwrap();
    }
    let leader = &replicas[first_leader];
    poll_until(
        "three incidents at the first leader",
        TIMEOUT,
        || async move { Ok(metric(leader, "auto_agent_incidents_total").await == 3.0) },
    )
    .await
    .unwrap();

    // The three decisions are made (and reported) before the kill.
    poll_until(
        "three decisions at the first leader",
        TIMEOUT,
        || async move { Ok(metric(leader, "auto_agent_decisions_total").await == 3.0) },
    )
    .await
    .unwrap();

    // Kill the leader outright (no lease release) and fail twice more while nobody leads.
    let killed = replicas.remove(first_leader);
    let killed_incidents = metric(&killed, "auto_agent_incidents_total").await;
    let mut killed = killed;
    killed.kill();
    let t0 = Instant::now();
    for pod in &pods[3..] {
        scenario::crash_loop(&admin, &apps.name, pod, None, 2, 1)
            .await
            .unwrap();
    }
    let survivor = &replicas[0];
    poll_until("the survivor leads", TIMEOUT, || async move {
        Ok(metric(survivor, "auto_agent_leader").await == 1.0)
    })
    .await
    .unwrap();
    println!(
        "leadership moved after {:?} (lease 6 s, renew 2 s)",
        t0.elapsed()
    );
    // The new leader's book starts empty; the sensor, welcomed in a new term, re-sends the three
    // conditions that still hold besides the two new ones: it knows all five (a finding the old
    // leader acknowledged but never decided on would not be lost).
    poll_until("five incidents at the new leader", TIMEOUT, || async move {
        Ok(metric(survivor, "auto_agent_incidents_total").await == 5.0)
    })
    .await
    .unwrap();
    println!(
        "sensor stream followed; all five conditions known {:?} after the kill",
        t0.elapsed()
    );
    assert_eq!(
        killed_incidents, 3.0,
        "the first leader saw the first three"
    );
    assert_eq!(
        metric_sum(
            &sensor.metrics().await.unwrap(),
            "auto_agent_sensor_resyncs_total"
        ),
        1.0,
        "one re-send, for the one new term"
    );

    // One Event per workload, naming the policy: single-replica workloads are not restarted
    // (minReadyReplicas defaults to 2), and the refusal is reported.
    let events: Api<Event> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("five TooFewReadyReplicas events", TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            let targets: BTreeSet<String> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("TooFewReadyReplicas"))
                .filter(|e| {
                    e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("policy backend"))
                })
                .filter_map(|e| e.regarding.as_ref()?.name.clone())
                .collect();
            Ok(targets.len() == 5)
        }
    })
    .await
    .unwrap();

    // Streams the leader must refuse: no token, the wrong audience, a token bound to another node.
    let addr = survivor.grpc;
    let no_token = raw_stream(addr, &pki, None, TARGET).await.unwrap_err();
    assert_eq!(
        no_token.code(),
        tonic::Code::Unauthenticated,
        "{no_token:?}"
    );
    let api_audience = cluster
        .service_account_token(&agents.name, &sensor_id.service_account, &[], 600)
        .await
        .unwrap();
    let wrong_audience = raw_stream(addr, &pki, Some(&api_audience), TARGET)
        .await
        .unwrap_err();
    assert_eq!(
        wrong_audience.code(),
        tonic::Code::Unauthenticated,
        "{wrong_audience:?}"
    );
    // A token bound to the chart's sensor pod on another node.
    let other_pod = install.sensor_pod_on(&cluster, OTHER).await.unwrap();
    let other_token = cluster
        .bound_token(
            &agents.name,
            &sensor_id.service_account,
            &[auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE],
            (other_pod.0.as_str(), other_pod.1.as_str()),
        )
        .await
        .unwrap();
    let wrong_node = raw_stream(addr, &pki, Some(&other_token), TARGET)
        .await
        .unwrap_err();
    assert_eq!(
        wrong_node.code(),
        tonic::Code::PermissionDenied,
        "{wrong_node:?}"
    );
    // The same token for its own node is welcome.
    let welcome = raw_stream(addr, &pki, Some(&other_token), OTHER)
        .await
        .unwrap();
    assert!(
        matches!(
            welcome.message,
            Some(pb::controller_message::Message::Welcome(_))
        ),
        "{welcome:?}"
    );

    let metrics = survivor.metrics().await.unwrap();
    for cause in ["missing_token", "wrong_audience", "wrong_node"] {
        assert!(
            metrics.contains(&format!(
                "auto_agent_streams_refused_total{{cause=\"{cause}\"}} 1"
            )),
            "refusal {cause} not counted:\n{metrics}"
        );
    }
    install.chart.uninstall().unwrap();
}
