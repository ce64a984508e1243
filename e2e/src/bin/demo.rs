//! The demo behind `make demo`: a real local control plane with the agent running against it.
//!
//! 1. starts (or reuses) the control plane of `e2e/cluster` and installs the CRDs;
//! 2. runs two controller replicas and one sensor as processes, each with a token of its own
//!    least-privilege ServiceAccount (TLS between them);
//! 3. applies the seed's example policy in `prod` and a 3-replica `api` Deployment;
//! 4. makes one `api` pod crash-loop with a previous log, and prints what the agent did.
//!
//! The decision engine and actions are not built yet, so the agent reports the incident (Event,
//! metrics, policy status) and does not restart the pod. The processes stop when the demo ends; the
//! cluster stays up.

use std::time::{Duration, Instant};

use auto_agent_e2e::agents::{
    Controller, ControllerIdentity, ControllerOptions, Sensor, SensorIdentity, SensorOptions,
};
use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::pki::TestPki;
use auto_agent_e2e::process::metric_sum;
use auto_agent_e2e::proxy::ServiceProxy;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

const NAME: &str = "auto-agent-controller.auto-agent.svc";

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    step("Starting the local control plane (built from Go modules on first use)");
    let cluster = Cluster::get()?;
    cluster.install_crds().await?;
    let admin = cluster.admin().await?;

    step("Creating least-privilege identities for the controller and the sensor");
    let agents = TestNamespace::create(&cluster, "auto-agent-demo").await?;
    let controller_id = ControllerIdentity::create(&cluster, &agents.name).await?;
    let mut sensor_id = SensorIdentity::create(&cluster, &agents.name).await?;

    step("Applying the seed policy and a 3-replica Deployment prod/api");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "prod"}}))?;
    Api::<Namespace>::all(admin.clone())
        .patch(
            "prod",
            &PatchParams::apply("auto-agent-demo"),
            &Patch::Apply(ns),
        )
        .await?;
    let seed = std::fs::read_to_string(
        repo_root().join("e2e/fixtures/policies/valid/seed-api-prod.yaml"),
    )?;
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", "-"], Some(&seed))?;
    anyhow::ensure!(ok, "applying the seed policy failed: {err}");
    print!("{out}");
    let api: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "api", "image": "registry.example.com/api:1.4.2"}]}}},
    }))?;
    Api::<Deployment>::namespaced(admin.clone(), "prod")
        .patch(
            "api",
            &PatchParams::apply("auto-agent-demo").force(),
            &Patch::Apply(api),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "prod");
    let running = |pods: Api<Pod>| async move {
        let list = pods.list(&ListParams::default().labels("app=api")).await?;
        Ok::<_, anyhow::Error>(
            list.items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect::<Vec<_>>(),
        )
    };
    poll_until("3 api pods running", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move { Ok(running(pods).await?.len() >= 3) }
    })
    .await?;
    let victim = running(pods.clone()).await?.remove(0);
    let victim_name = victim.metadata.name.clone().unwrap_or_default();
    let node = victim
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();

    step(&format!(
        "Starting 2 controller replicas and the sensor for node {node}"
    ));
    sensor_id.bind_to_node(&node).await?;
    let pki = TestPki::create(&controller_id.dir.join("pki"), &[NAME])?;
    let options = |name: &str| ControllerOptions {
        name: name.into(),
        sensor_service_account: format!("{}/sensor", agents.name),
        tls: Some(pki.clone()),
        lease_seconds: 15,
        renew_seconds: 5,
        fence_margin_seconds: 5,
    };
    let c1 = Controller::start(&controller_id, &options("controller-1")).await?;
    let c2 = Controller::start(&controller_id, &options("controller-2")).await?;
    let service = ServiceProxy::start(vec![c1.grpc, c2.grpc]).await?;
    let sensor = Sensor::start(
        &cluster,
        &sensor_id,
        &SensorOptions {
            node: node.clone(),
            controller: format!("https://{}", service.addr),
            ca_file: Some(pki.ca_file.clone()),
            tls_server_name: Some(NAME.into()),
            ..SensorOptions::default()
        },
    )
    .await?;
    poll_until("a leader", Duration::from_secs(60), || {
        let (a, b) = (c1.metrics(), c2.metrics());
        async move {
            Ok(metric_sum(&a.await?, "auto_agent_leader")
                + metric_sum(&b.await?, "auto_agent_leader")
                == 1.0)
        }
    })
    .await?;

    step(&format!(
        "Making prod/{victim_name} crash-loop (restart 3, exit code 1) with a previous log"
    ));
    scenario::seed_logs(
        &cluster,
        "prod",
        &victim_name,
        "api",
        3,
        &[
            "listening on :8080",
            "connecting to postgres://db:5432",
            "FATAL: password authentication failed for user \"api\"",
        ],
        &[],
    )
    .await?;
    let t0 = Instant::now();
    scenario::crash_loop(&admin, "prod", &victim_name, None, 3, 1).await?;

    let events: Api<Event> = Api::namespaced(admin.clone(), "prod");
    poll_until("the agent's Event", Duration::from_secs(60), || {
        let events = events.clone();
        async move {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("IncidentMatched")))
        }
    })
    .await?;
    println!(
        "detected and reported {:?} after the pod's status changed",
        t0.elapsed()
    );

    step("What the agent did");
    let (_, out, _) = cluster.kubectl(
        &["get", "events", "-n", "prod", "--field-selector", "reason=IncidentMatched", "-o",
          "custom-columns=OBJECT:.involvedObject.kind,NAME:.involvedObject.name,REASON:.reason,BY:.reportingComponent,MESSAGE:.message"],
        None,
    )?;
    print!("{out}");
    let (_, out, _) = cluster.kubectl(&["get", "arp", "-n", "prod"], None)?;
    print!("{out}");
    let sensor_metrics = sensor.metrics().await?;
    println!(
        "sensor: {} finding(s) sent, previous-log reads from the node's files: {}",
        metric_sum(&sensor_metrics, "auto_agent_sensor_findings_total"),
        sensor_metrics
            .lines()
            .filter(
                |l| l.starts_with("auto_agent_sensor_log_reads_total") && l.contains("node_file")
            )
            .count()
    );
    let leader = if metric_sum(&c1.metrics().await?, "auto_agent_leader") == 1.0 {
        &c1
    } else {
        &c2
    };
    let log = leader.process.output();
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("matches AutoRemediationPolicy"))
    {
        println!("leader {} log: {}", leader.name, line.trim());
    }

    step("Not built yet");
    println!(
        "The decision engine, safety rules and actions (restart after saving the evidence bundle, memory"
    );
    println!(
        "bumps, image mirror, node actions) are the next issues: the pod {victim_name} is reported, not restarted."
    );

    step("Next commands to try (the cluster stays up; the agent processes stop with this demo)");
    println!("  eval $(e2e/cluster env)");
    println!("  kubectl get nodes; kubectl get arp -A; kubectl get events -n prod");
    println!("  kubectl logs -n prod {victim_name} --previous");
    println!("  make demo-down     # stop the local control plane");
    println!("\ndemo finished in {:?}", started.elapsed());

    drop(sensor);
    controller_id.delete().await?;
    sensor_id.delete().await?;
    Ok(())
}
