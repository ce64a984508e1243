//! The demo behind `make demo`: a real local control plane with the agent remediating a failure.
//!
//! 1. starts (or reuses) the control plane of `e2e/cluster` and installs the CRDs;
//! 2. applies the seed's example policy in `prod` and a 3-replica `api` Deployment;
//! 3. installs the Helm chart with its default values (ServiceAccounts, least-privilege RBAC,
//!    TLS, the sensor DaemonSet on every fake node) and runs two controller replicas and the sensor
//!    for one fake node as processes, with tokens minted for the chart's ServiceAccounts;
//! 4. makes one `api` pod crash-loop with a previous log, and prints what the agent did: the
//!    evidence bundle, the Event, the replacement pod, the policy status.
//!
//! The processes stop when the demo ends; the cluster stays up. Rerunning it reuses `prod`, the
//! policy and the Deployment (server-side apply) and makes another pod crash-loop.
//!
//! It fails (exit status 1) when the agent did not do what it shows, and ends with one
//! `demo proved: <what> <value>` line per fact, which `e2e/tests/demo.rs` checks against the
//! cluster: `victim`, `bundle`, `event`, `replacements`, `policy-status`.

use std::time::{Duration, Instant};

use auto_agent_e2e::agents::AgentStack;
use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, Workload};
use auto_agent_shared::crd::{ActionOutcome, ActionType, AutoRemediationPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

fn step(text: &str) {
    println!("\n==> {text}");
}

async fn running(pods: &Api<Pod>) -> anyhow::Result<Vec<Pod>> {
    let list = pods.list(&ListParams::default().labels("app=api")).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    step("Starting the local control plane (built from Go modules on first use)");
    let cluster = Cluster::get()?;
    cluster.install_crds().await?;
    let admin = cluster.admin().await?;

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
    let api = Workload::new("api")
        .replicas(3)
        .container_name("api")
        .image("registry.example.com/api:1.4.2")
        .build();
    Api::<Deployment>::namespaced(admin.clone(), "prod")
        .patch(
            "api",
            &PatchParams::apply("auto-agent-demo").force(),
            &Patch::Apply(api),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "prod");
    poll_until("3 api pods running", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move { Ok(running(&pods).await?.len() >= 3) }
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "prod");
    poll_until(
        "the Deployment reports 3 ready replicas",
        Duration::from_secs(60),
        || {
            let d = deployments.clone();
            async move { Ok(d.get("api").await?.status.and_then(|s| s.ready_replicas) == Some(3)) }
        },
    )
    .await?;
    let victim = running(&pods).await?.remove(0);
    let victim_name = victim.metadata.name.clone().unwrap_or_default();
    let node = victim
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();

    step(&format!(
        "helm install charts/auto-agent (default values); 2 controller replicas and the sensor for {node} run as processes with the chart's ServiceAccount tokens"
    ));
    let stack = AgentStack::start_with(&cluster, &node, 2, Vec::new(), &[]).await?;
    let helm = auto_agent_e2e::helm::Helm::for_cluster(&cluster)?;
    print!(
        "{}",
        helm.run(&["list", "-n", &stack.namespace.name])?.stdout
    );
    let (_, out, _) = cluster.kubectl(
        &[
            "get",
            "daemonset,deployment,serviceaccount",
            "-n",
            &stack.namespace.name,
        ],
        None,
    )?;
    print!("{out}");
    if let Some(i) = stack.leader().await {
        println!("leader: {}", stack.controllers[i].name);
    }

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
    poll_until(
        "the crash-looping pod replaced",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let victim = victim_name.clone();
            async move { Ok(pods.get_opt(&victim).await?.is_none()) }
        },
    )
    .await?;
    println!(
        "pod {victim_name} deleted {:?} after its status changed",
        t0.elapsed()
    );

    step("What the agent did");
    let mut proved = vec![("victim", format!("prod/{victim_name}"))];
    for bundle in stack.bundles() {
        let path = stack.bundle_dir.join(&bundle);
        println!("evidence bundle: {}", path.display());
        if let Ok(text) = std::fs::read_to_string(&path) {
            let doc: serde_json::Value = serde_json::from_str(&text)?;
            println!("  previous log in the bundle: {}", doc["log"]["lines"]);
        }
        if bundle.contains(&victim_name) {
            proved.push(("bundle", path.display().to_string()));
        }
    }
    anyhow::ensure!(
        proved.iter().any(|(what, _)| *what == "bundle"),
        "no evidence bundle for {victim_name} in {}",
        stack.bundle_dir.display()
    );
    // The Event that names the restart and its bundle.
    let events: Api<Event> = Api::namespaced(admin.clone(), "prod");
    let restarted = || {
        let (events, victim) = (events.clone(), victim_name.clone());
        async move {
            Ok::<_, anyhow::Error>(
                events
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("RestartedPod"))
                    .filter_map(|e| e.note)
                    .find(|note| note.contains(&victim)),
            )
        }
    };
    poll_until(
        &format!("a RestartedPod Event naming {victim_name}"),
        Duration::from_secs(30),
        || {
            let found = restarted();
            async move { Ok(found.await?.is_some()) }
        },
    )
    .await?;
    let note = restarted().await?.unwrap_or_default();
    proved.push(("event", format!("RestartedPod {note}")));
    let (_, out, _) = cluster.kubectl(
        &[
            "get",
            "events",
            "-n",
            "prod",
            "--field-selector",
            "reportingComponent=auto-agent",
            "-o",
            "custom-columns=OBJECT:.involvedObject.kind,NAME:.involvedObject.name,REASON:.reason,MESSAGE:.message",
        ],
        None,
    )?;
    print!("{out}");
    poll_until("3 api pods running again", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { Ok(running(&pods).await?.len() >= 3) }
    })
    .await?;
    let (_, out, _) = cluster.kubectl(
        &["get", "pods", "-n", "prod", "-l", "app=api", "-o", "wide"],
        None,
    )?;
    print!("{out}");
    let replacements = running(&pods).await?.len();
    proved.push(("replacements", format!("{replacements} api pods running")));
    // Wait for the status writer to record this restart (a rerun finds the last one there), then
    // show the policy.
    let target = format!("Pod/prod/{victim_name}");
    let policies: Api<AutoRemediationPolicy> = Api::namespaced(admin.clone(), "prod");
    poll_until(
        "the restart in the policy status",
        Duration::from_secs(60),
        || {
            let (policies, target) = (policies.clone(), target.clone());
            async move {
                Ok(policies.get("api-prod").await?.status.is_some_and(|s| {
                    s.recent_actions.iter().any(|a| {
                        a.target == target
                            && a.action == ActionType::RestartPod
                            && a.outcome == ActionOutcome::Executed
                    })
                }))
            }
        },
    )
    .await?;
    proved.push((
        "policy-status",
        format!("api-prod Executed RestartPod {target}"),
    ));
    let (_, out, _) = cluster.kubectl(&["get", "arp", "-n", "prod", "-o", "wide"], None)?;
    print!("{out}");
    println!(
        "auto_agent_actions_total = {}, incidents = {}",
        stack.metric("auto_agent_actions_total").await,
        stack.metric("auto_agent_incidents_total").await
    );

    step("Not shown here");
    println!(
        "This demo runs the agent as processes beside KWOK nodes. The chart's own images on a real"
    );
    println!(
        "kubelet, with a real crash loop, OOM kill and pull failure: cargo test -p auto-agent-e2e --test real_node -- --nocapture"
    );
    println!(
        "Escalation (Slack, tickets, LLM summaries) and GitOps pull requests: docs/ESCALATION.md, docs/GITOPS.md."
    );

    step("Next commands to try (the cluster stays up; the agent processes stop with this demo)");
    println!("  eval $(e2e/cluster env)");
    println!(
        "  kubectl get arp -n prod -o yaml     # status: conditions, matchedTargets, recentActions"
    );
    println!("  kubectl get events -n prod");
    println!("  make demo-down                      # stop the local control plane");
    println!();
    for (what, value) in &proved {
        println!("demo proved: {what} {value}");
    }
    println!("\ndemo finished in {:?}", started.elapsed());
    stack.delete().await?;
    Ok(())
}
