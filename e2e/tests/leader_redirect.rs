//! A sensor that reaches a replica which does not lead is redirected to the leader: with two
//! controllers, the sensor is pointed straight at the non-leader's gRPC address (no Service in
//! between to land it on the leader by luck). Its redirect counter rises, and its crash-loop
//! finding reaches the leader, which restarts the pod; the non-leader accepts no finding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::agents::{CONTROLLER_TLS_NAME, Sensor, SensorOptions};
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_at_a_non_leader_is_redirected_and_its_finding_acted_on() {
    let mut t = Setup::new("redirect", NODE).await;
    t.start_agents(2, Vec::new()).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    t.policy(
        "acts",
        json!({"targetSelector": {"matchLabels": {"tier": "acts"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0}}),
    );
    let pod = t
        .running_pod(Workload::new("api").label("tier", "acts"))
        .await;

    // The stack's own sensor goes through the Service stand-in; replace it with one that talks to
    // the replica that does not lead.
    let leader = t.stack().leader().await.unwrap();
    let follower = 1 - leader;
    t.stack_mut().sensor.process.kill();
    let stack = t.stack();
    let sensor = Sensor::start(
        &t.cluster,
        &stack.sensor_id,
        &SensorOptions {
            node: NODE.to_owned(),
            controller: format!("https://{}", stack.controllers[follower].grpc),
            ca_file: Some(stack.pki.ca_file.clone()),
            tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
            ..SensorOptions::default()
        },
    )
    .await
    .unwrap();
    poll_until("the redirect", TIMEOUT, || {
        let sensor = &sensor;
        async move {
            let m = sensor.metrics().await?;
            Ok(metric_sum(&m, "auto_agent_sensor_leader_redirects_total") >= 1.0)
        }
    })
    .await
    .unwrap();

    scenario::crash_loop(&admin, &ns, &pod, None, 3, 1)
        .await
        .unwrap();
    t.wait_event("api", "RestartedPod").await;
    let accepted = |i: usize| {
        let c = &t.stack().controllers[i];
        async move {
            let m = c.metrics().await.unwrap();
            m.lines()
                .filter(|l| l.starts_with("auto_agent_findings_received_total{"))
                .filter(|l| l.contains("outcome=\"accepted\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    assert!(accepted(leader).await >= 1.0, "the leader got the finding");
    assert_eq!(accepted(follower).await, 0.0, "the follower accepted none");
    drop(sensor);
    t.finish().await;
}
