//! Sensor footprint benchmark on the real local control plane.
//!
//!     cargo run --release -p auto-agent-e2e --bin bench-sensor
//!
//! One fake node with 110 pods and a release-built sensor for it: RSS and CPU while idle, then
//! while all 110 pods crash-loop at once for several rounds (one restart per pod per round), and
//! after the storm. Prints a Markdown table.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use auto_agent_e2e::agents::{Install, Sensor, SensorIdentity, SensorOptions};
use auto_agent_e2e::bench::sample_while;
use auto_agent_e2e::ingest::{IngestServer, Recorder};
use auto_agent_e2e::process::{free_port, metric_sum};
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace, Workload};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

const NODE: &str = "kwok-bench-0";
const PODS: i32 = 110;
const ROUNDS: i32 = 5;

async fn running(pods: &Api<Pod>) -> anyhow::Result<Vec<String>> {
    let list = pods.list(&ListParams::default().labels("app=load")).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cluster = Cluster::get()?;
    let client = cluster.admin().await?;
    cluster.ensure_kwok_node(NODE).await?;
    let ns = TestNamespace::create(&cluster, "bench-sensor").await?;
    let install = Install::create(&cluster, &ns.name).await?;
    let identity = SensorIdentity::create(&cluster, &install).await?;
    let recorder = Recorder::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let _server = IngestServer::start(addr, recorder.clone())?;

    Workload::new("load")
        .replicas(PODS)
        .on_node(NODE)
        .image("registry.example.com/load:1")
        .create(&client, &ns.name)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    poll_until("110 pods running", Duration::from_secs(180), || {
        let pods = pods.clone();
        async move { Ok(running(&pods).await?.len() == PODS as usize) }
    })
    .await?;
    let names = running(&pods).await?;

    let sensor = Sensor::start(
        &cluster,
        &identity,
        &SensorOptions {
            node: NODE.into(),
            controller: format!("http://{addr}"),
            release: true,
            ..Default::default()
        },
    )
    .await?;
    let pid = sensor.process.pid();
    let watched = metric_sum(&sensor.metrics().await?, "auto_agent_sensor_watched_pods");

    let idle = sample_while(
        pid,
        Duration::from_secs(20),
        Duration::from_millis(500),
        async {},
    )
    .await;

    let storm = sample_while(
        pid,
        Duration::from_secs(40),
        Duration::from_millis(250),
        async {
            for round in 1..=ROUNDS {
                futures::stream::iter(names.iter())
                    .for_each_concurrent(16, |name| {
                        let client = client.clone();
                        let ns = ns.name.clone();
                        async move {
                            let _ = scenario::crash_loop(&client, &ns, name, None, round, 1).await;
                        }
                    })
                    .await;
            }
        },
    )
    .await;
    let expected = (PODS * ROUNDS) as usize;
    let _ = poll_until("storm findings delivered", Duration::from_secs(60), || {
        let n = recorder.snapshot().len();
        async move { Ok(n >= expected) }
    })
    .await;
    let after = sample_while(
        pid,
        Duration::from_secs(15),
        Duration::from_millis(500),
        async {},
    )
    .await;
    let metrics = sensor.metrics().await?;
    let received = recorder.snapshot().len();
    let distinct: std::collections::BTreeSet<_> = recorder
        .snapshot()
        .into_iter()
        .map(|r| r.finding.id)
        .collect();

    println!("## Sensor footprint: {PODS} pods on one node (release build)\n");
    println!("| phase | max RSS (MiB) | last RSS (MiB) | CPU (% of one core) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| idle, 20 s | {:.1} | {:.1} | {:.2} |",
        idle.max_rss_mib(),
        idle.last_rss_mib(),
        idle.cpu_percent
    );
    println!(
        "| storm: {PODS} pods crash-loop, {ROUNDS} rounds, 40 s | {:.1} | {:.1} | {:.2} |",
        storm.max_rss_mib(),
        storm.last_rss_mib(),
        storm.cpu_percent
    );
    println!(
        "| after the storm, 15 s | {:.1} | {:.1} | {:.2} |",
        after.max_rss_mib(),
        after.last_rss_mib(),
        after.cpu_percent
    );
    println!();
    println!(
        "watched pods: {watched}; findings: {} distinct ids of {expected} restarts, {received} received (incl. resends); \
         coalesced {}, dropped {}",
        distinct.len(),
        metric_sum(&metrics, "auto_agent_sensor_coalesced_total"),
        metric_sum(&metrics, "auto_agent_sensor_dropped_total"),
    );

    drop(sensor);
    install.chart.uninstall()?;
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .delete("load", &DeleteParams::default())
        .await?;
    let ns_client = client.clone();
    ns.delete(ns_client)
        .await
        .context("deleting the namespace")?;
    Api::<Node>::all(client)
        .delete(NODE, &DeleteParams::default())
        .await?;
    Ok(())
}
