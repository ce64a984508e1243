//! Remediation on the real cluster with the real sensor and controller processes: restart after the
//! evidence bundle, opt-out and no-policy reported without change, dry-run reporting the same plan,
//! budgets holding across 50 crash-looping pods and a leader kill, and memory bumps stopping at the
//! cap. The tests share node kwok-node-0 and run one at a time: two agents acting on one node
//! would be two installations, each with its own budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::FutureExt;

use auto_agent_e2e::agents::AgentStack;
use auto_agent_e2e::scenario;
use auto_agent_e2e::steps::{self, apply_policy, ready_pods, rollout, wait_event};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(90);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn deployment(
    name: &str,
    replicas: i32,
    labels: serde_json::Value,
    annotations: serde_json::Value,
    memory: Option<&str>,
) -> Deployment {
    steps::deployment_on(NODE, name, replicas, labels, annotations, memory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_bundle_and_opt_out_no_policy_dry_run_change_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "remedy").await.unwrap();
    let stack = AgentStack::start(&cluster, NODE, 1).await.unwrap();

    apply_policy(
        &cluster,
        &apps.name,
        "live",
        json!({"targetSelector": {"matchLabels": {"mode": "live"}}, "actions": {"restartStuckPods": true}}),
    );
    apply_policy(
        &cluster,
        &apps.name,
        "dry",
        json!({"targetSelector": {"matchLabels": {"mode": "dry"}}, "actions": {"restartStuckPods": true}, "dryRun": true}),
    );
    rollout(
        &admin,
        &apps.name,
        deployment("api", 3, json!({"mode": "live"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment(
            "quiet",
            3,
            json!({"mode": "live"}),
            json!({"autoagent.io/ignore": "true"}),
            None,
        ),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("orphan", 3, json!({"mode": "none"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("trial", 3, json!({"mode": "dry"}), json!({}), None),
    )
    .await;

    let victim = |app: &str| {
        let admin = admin.clone();
        let ns = apps.name.clone();
        let app = app.to_owned();
        async move {
            ready_pods(&admin, &ns, &app)
                .await
                .remove(0)
                .metadata
                .name
                .unwrap()
        }
    };
    let (api_pod, quiet_pod, orphan_pod, trial_pod) = (
        victim("api").await,
        victim("quiet").await,
        victim("orphan").await,
        victim("trial").await,
    );
    scenario::seed_logs(
        &cluster,
        &apps.name,
        &api_pod,
        "app",
        2,
        &["boom: index out of range"],
        &[],
    )
    .await
    .unwrap();
    for pod in [&api_pod, &quiet_pod, &orphan_pod, &trial_pod] {
        scenario::crash_loop(&admin, &apps.name, pod, None, 2, 1)
            .await
            .unwrap();
    }

    // Live: the pod goes, after its bundle exists.
    let note = wait_event(&admin, &apps.name, "api", "RestartedPod").await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    assert!(
        pods.get_opt(&api_pod).await.unwrap().is_none(),
        "the crash-looping pod was deleted"
    );
    let bundles = stack.bundles();
    let key = format!("{}/api/CrashLoopBackOff/", apps.name);
    let bundle = bundles
        .iter()
        .find(|b| b.starts_with(&key) && b.ends_with(&format!("{api_pod}-2.json")))
        .unwrap_or_else(|| panic!("{bundles:?}"));
    assert!(
        note.contains(bundle.as_str()),
        "the Event names the bundle: {note}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stack.bundle_dir.join(bundle)).unwrap())
            .unwrap();
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["log"]["lines"][0], "boom: index out of range");
    assert_eq!(doc["log"]["source"], "Sensor");
    assert!(doc["pod"]["status"]["containerStatuses"].is_array());
    assert_eq!(doc["policy"]["name"], "live");
    assert_eq!(doc["node"]["name"], NODE);

    // Opted out, no policy, dry-run: reported, nothing changed, no bundle.
    let opted = wait_event(&admin, &apps.name, "quiet", "OptedOut").await;
    assert!(opted.contains("autoagent.io/ignore"), "{opted}");
    wait_event(&admin, &apps.name, "orphan", "NoPolicy").await;
    let dry = wait_event(&admin, &apps.name, "trial", "DryRun").await;
    assert!(
        dry.contains(&format!("would RestartPod Pod/{}/{trial_pod}", apps.name)),
        "the dry-run plan names the action: {dry}"
    );
    for pod in [&quiet_pod, &orphan_pod, &trial_pod] {
        assert!(
            pods.get_opt(pod).await.unwrap().is_some(),
            "{pod} must not be touched"
        );
    }
    // Policy status records what happened: the restart, the opt-out refusal, the dry-run plan.
    let arp: Api<auto_agent_shared::crd::AutoRemediationPolicy> =
        Api::namespaced(admin.clone(), &apps.name);
    poll_until("policy status shows the actions", TIMEOUT, || {
        let arp = arp.clone();
        async move {
            let recent =
                |p: auto_agent_shared::crd::AutoRemediationPolicy| -> Vec<(String, String)> {
                    p.status
                        .map(|s| s.recent_actions)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|a| (format!("{:?}", a.outcome), a.reason))
                        .collect()
                };
            let live = recent(arp.get("live").await?);
            let dry = recent(arp.get("dry").await?);
            Ok(live.contains(&("Executed".into(), "RestartedPod".into()))
                && live.contains(&("Refused".into(), "OptedOut".into()))
                && dry.contains(&("DryRun".into(), "DryRun".into())))
        }
    })
    .await
    .unwrap();
    let ours: Vec<_> = stack
        .bundles()
        .into_iter()
        .filter(|b| b.starts_with(&format!("{}/", apps.name)))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "only the live restart wrote a bundle: {ours:?}"
    );
    let ns_label = format!("namespace=\"{}\"", apps.name);
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        1.0
    );
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_for_fifty_crash_loops_and_survive_a_leader_kill() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "budget").await.unwrap();
    let mut stack = AgentStack::start(&cluster, NODE, 2).await.unwrap();
    apply_policy(
        &cluster,
        &apps.name,
        "storm",
        json!({"targetSelector": {"matchLabels": {"tier": "storm"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 5, "windowSeconds": 3600},
                           {"action": "RestartPod", "scope": "Target", "max": 50, "windowSeconds": 3600}]}),
    );
    let d = deployment("storm", 50, json!({"tier": "storm"}), json!({}), None);
    rollout(&admin, &apps.name, d).await;
    let pods = ready_pods(&admin, &apps.name, "storm").await;
    assert_eq!(pods.len(), 50);
    // One Deployment, 50 pods: one incident whose findings keep coming; the budget, not the count
    // of findings, decides how many pods go. The cooldown is per incident, so set it to zero here.
    apply_policy(
        &cluster,
        &apps.name,
        "storm",
        json!({"targetSelector": {"matchLabels": {"tier": "storm"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0, "maxRepeats": 100},
               "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 5, "windowSeconds": 3600},
                           {"action": "RestartPod", "scope": "Target", "max": 50, "windowSeconds": 3600}]}),
    );
    let api: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    for p in &pods {
        scenario::crash_loop(
            &admin,
            &apps.name,
            p.metadata.name.as_deref().unwrap(),
            None,
            2,
            1,
        )
        .await
        .unwrap();
    }
    let deleted = |names: Vec<String>| {
        let api = api.clone();
        async move {
            let mut n = 0;
            for name in names {
                if api.get_opt(&name).await.unwrap().is_none() {
                    n += 1;
                }
            }
            n
        }
    };
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    poll_until("budget refusals", TIMEOUT, || {
        let s = &stack;
        async move { Ok(s.metric("auto_agent_decisions_total").await >= 50.0) }
    })
    .await
    .unwrap();
    assert_eq!(
        deleted(names.clone()).await,
        5,
        "exactly the budget of 5 pods restarted"
    );
    let ns_label = format!("namespace=\"{}\"", apps.name);
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        5.0
    );
    let ledger: Api<ConfigMap> = Api::namespaced(admin.clone(), &stack.namespace.name);
    let history = ledger.get(&stack.controller_id.ledger_name).await.unwrap();
    assert!(
        history.data.unwrap()["actions.json"]
            .matches("RestartPod")
            .count()
            == 5
    );

    // Kill the leader; the new one must respect the old budget.
    let leader = stack.leader().await.unwrap();
    stack.controllers[leader].kill();
    poll_until("a new leader", TIMEOUT, || {
        let s = &stack;
        async move { Ok(s.leader().await.is_some()) }
    })
    .await
    .unwrap();
    let survivors: Vec<String> = {
        let mut v = Vec::new();
        for n in &names {
            if api.get_opt(n).await.unwrap().is_some() {
                v.push(n.clone());
            }
        }
        v
    };
    for n in survivors.iter().take(10) {
        scenario::crash_loop(&admin, &apps.name, n, None, 3, 1)
            .await
            .unwrap();
    }
    poll_until("the new leader refuses on budget", TIMEOUT, || {
        let s = &stack;
        async move {
            Ok(s.metric(
                "auto_agent_decisions_total{outcome=\"refused\",reason=\"BudgetExhausted\"}",
            )
            .await
                >= 1.0
                || s.metric("auto_agent_decisions_total").await >= 10.0)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        deleted(names.clone()).await,
        5,
        "the new leader restarted nothing over the budget"
    );
    let refused = wait_event(&admin, &apps.name, "storm", "BudgetExhausted").await;
    assert!(refused.contains("5 of 5"), "{refused}");
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rises_by_the_policy_percent_and_stops_at_the_cap() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "oom").await.unwrap();
    let stack = AgentStack::start(&cluster, NODE, 1).await.unwrap();
    apply_policy(
        &cluster,
        &apps.name,
        "mem",
        json!({"targetSelector": {"matchLabels": {"tier": "mem"}},
               "actions": {"bumpMemoryPercent": 20, "memoryBump": {"minIncrease": "100Mi", "maxLimit": "400Mi"}},
               "safety": {"cooldownSeconds": 0}}),
    );
    rollout(
        &admin,
        &apps.name,
        deployment("mem", 2, json!({"tier": "mem"}), json!({}), Some("256Mi")),
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
        let pod = ready_pods(&admin, &apps.name, "mem")
            .await
            .remove(0)
            .metadata
            .name
            .unwrap();
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
    let pod = ready_pods(&admin, &apps.name, "mem")
        .await
        .remove(0)
        .metadata
        .name
        .unwrap();
    scenario::oom_killed(&admin, &apps.name, &pod, None, 3)
        .await
        .unwrap();
    let note = wait_event(&admin, &apps.name, "mem", "AtMemoryCap").await;
    assert!(note.contains("escalating"), "{note}");
    assert_eq!(limit().await.0, "400Mi");
    let ns_label = format!("namespace=\"{}\"", apps.name);
    assert_eq!(
        stack
            .metric_with("auto_agent_actions_total", &ns_label)
            .await,
        2.0
    );
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressured_node_is_cordoned_and_only_evictable_pods_leave_then_uncordoned() {
    use auto_agent_e2e::scenario::NodePressure;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::{DeleteParams, Patch, PatchParams};

    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let nodes: Api<Node> = Api::all(admin.clone());
    // A failed earlier run may have left pressure or a cordon behind.
    scenario::node_pressure(&admin, NODE, NodePressure::Memory, false)
        .await
        .unwrap();
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"autoagent.io/cordoned-by": null}}, "spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    // Node policies are cluster-scoped: remove any a failed earlier run left behind.
    let (_, stale, _) = cluster
        .kubectl(&["get", "nrp", "-o", "name"], None)
        .unwrap();
    for name in stale.lines().filter(|n| n.contains("/e2e-")) {
        cluster.kubectl(&["delete", name], None).unwrap();
    }
    let apps = TestNamespace::create(&cluster, "nodes").await.unwrap();
    let stack = AgentStack::start(&cluster, NODE, 1).await.unwrap();

    for (name, tier) in [("batch-policy", "batch"), ("web-policy", "web")] {
        apply_policy(
            &cluster,
            &apps.name,
            name,
            json!({"targetSelector": {"matchLabels": {"tier": tier}}, "actions": {"evictOnNodePressure": true}}),
        );
    }
    let nrp_name = format!("e2e-{}", apps.name);
    let nrp = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "NodeRemediationPolicy",
                     "metadata": {"name": nrp_name},
                     "spec": {"nodeSelector": {"matchLabels": {"type": "kwok"}}, "conditions": ["MemoryPressure"],
                              "cordon": true, "evict": true, "maxUnavailableNodes": 1, "uncordonAfterSeconds": 5,
                              "drainTimeoutSeconds": 60}});
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&nrp.to_string()))
        .unwrap();
    assert!(ok, "{err}");

    rollout(
        &admin,
        &apps.name,
        deployment("batch", 2, json!({"tier": "batch"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("web", 2, json!({"tier": "web"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment(
            "keep",
            1,
            json!({"tier": "batch"}),
            json!({"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}),
            None,
        ),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("plain", 1, json!({"tier": "none"}), json!({}), None),
    )
    .await;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), &apps.name)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent", "tier": "batch"}},
                              "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE},
                                       "containers": [{"name": "a", "image": "registry.example.com/agent:1"}]}}},
    }))
    .unwrap();
    Api::<DaemonSet>::namespaced(admin.clone(), &apps.name)
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    poll_until("daemonset pod", TIMEOUT, || {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move { Ok(ready_pods(&a, &ns, "agent").await.len() == 1) }
    })
    .await
    .unwrap();
    // The PDB controller must have computed that no disruption is allowed.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("pdb status", TIMEOUT, || {
        let p = pdbs.clone();
        async move {
            Ok(p.get("web")
                .await?
                .status
                .is_some_and(|s| s.current_healthy == Some(2)))
        }
    })
    .await
    .unwrap();

    let names = |app: &'static str| {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move {
            ready_pods(&a, &ns, app)
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    let (batch, web, keep, plain, agent) = (
        names("batch").await,
        names("web").await,
        names("keep").await,
        names("plain").await,
        names("agent").await,
    );

    scenario::node_pressure(&admin, NODE, NodePressure::Memory, true)
        .await
        .unwrap();
    poll_until("node cordoned by the agent", TIMEOUT, || {
        let n = nodes.clone();
        let nrp_name = nrp_name.clone();
        async move {
            let node = n.get(NODE).await?;
            Ok(node.spec.and_then(|s| s.unschedulable) == Some(true)
                && node
                    .metadata
                    .annotations
                    .is_some_and(|a| a.get("autoagent.io/cordoned-by") == Some(&nrp_name)))
        }
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("evictable pods gone", TIMEOUT, || {
        let pods = pods.clone();
        let batch = batch.clone();
        async move {
            for n in &batch {
                if pods
                    .get_opt(n)
                    .await?
                    .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await
    .unwrap();
    let blocked = wait_event(&admin, &apps.name, &web[0], "EvictionBlocked").await;
    assert!(blocked.contains("never deleting"), "{blocked}");
    for n in web.iter().chain(&keep).chain(&plain).chain(&agent) {
        let p = pods.get_opt(n).await.unwrap();
        assert!(
            p.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
            "{n} must stay on the node"
        );
    }

    scenario::node_pressure(&admin, NODE, NodePressure::Memory, false)
        .await
        .unwrap();
    poll_until("uncordoned after the pressure cleared", TIMEOUT, || {
        let n = nodes.clone();
        async move {
            let node = n.get(NODE).await?;
            Ok(node.spec.and_then(|s| s.unschedulable) != Some(true)
                && !node
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("autoagent.io/cordoned-by"))
        }
    })
    .await
    .unwrap();
    let node_events = Api::<Event>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let reasons: Vec<String> = node_events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NODE))
        .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(&nrp_name)))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(
        reasons.contains(&"CordonedNode".to_owned())
            && reasons.contains(&"UncordonedNode".to_owned()),
        "{reasons:?}"
    );

    cluster
        .kubectl(&["delete", "noderemediationpolicy", &nrp_name], None)
        .unwrap();
    let _ = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &apps.name)
        .delete("web", &DeleteParams::default())
        .await;
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_cooldown_and_loop_detection_stop_repeated_restarts() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "rules").await.unwrap();
    let stack = AgentStack::start(&cluster, NODE, 1).await.unwrap();
    // cooldown: default 300 s; loops: 2 repeats with no cooldown; breaker: at most 50% unhealthy.
    apply_policy(
        &cluster,
        &apps.name,
        "cool",
        json!({"targetSelector": {"matchLabels": {"rule": "cooldown"}}, "actions": {"restartStuckPods": true}}),
    );
    apply_policy(
        &cluster,
        &apps.name,
        "loop",
        json!({"targetSelector": {"matchLabels": {"rule": "loop"}}, "actions": {"restartStuckPods": true},
               "safety": {"cooldownSeconds": 0, "maxRepeats": 2}}),
    );
    apply_policy(
        &cluster,
        &apps.name,
        "brk",
        json!({"targetSelector": {"matchLabels": {"rule": "breaker"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0}}),
    );
    rollout(
        &admin,
        &apps.name,
        deployment("cooldown", 4, json!({"rule": "cooldown"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("looping", 4, json!({"rule": "loop"}), json!({}), None),
    )
    .await;
    rollout(
        &admin,
        &apps.name,
        deployment("breaker", 4, json!({"rule": "breaker"}), json!({}), None),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    let names = |app: &'static str| {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move {
            ready_pods(&a, &ns, app)
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>()
        }
    };
    let gone = |name: String| {
        let pods = pods.clone();
        async move {
            pods.get_opt(&name)
                .await
                .unwrap()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        }
    };

    // Breaker: three of four pods are already unready (a failing readiness probe, no finding) when
    // they start crash-looping: 75% unhealthy is above the policy's 50%, so nothing is restarted.
    let breaker = names("breaker").await;
    for p in &breaker[..3] {
        pods.patch_status(
            p,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "ReadinessProbeFailed"},
                {"type": "ContainersReady", "status": "False"}]}})),
        )
        .await
        .unwrap();
    }
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("the breaker workload reports 1 ready", TIMEOUT, || {
        let d = deployments.clone();
        async move {
            Ok(d.get("breaker")
                .await?
                .status
                .and_then(|s| s.ready_replicas)
                == Some(1))
        }
    })
    .await
    .unwrap();
    for p in &breaker[..3] {
        scenario::crash_loop(&admin, &apps.name, p, None, 2, 1)
            .await
            .unwrap();
    }
    // Cooldown: the second failure of the same workload within 300 s is not acted on.
    let cooldown = names("cooldown").await;
    scenario::crash_loop(&admin, &apps.name, &cooldown[0], None, 2, 1)
        .await
        .unwrap();
    wait_event(&admin, &apps.name, "cooldown", "RestartedPod").await;
    scenario::crash_loop(&admin, &apps.name, &cooldown[1], None, 2, 1)
        .await
        .unwrap();
    let note = wait_event(&admin, &apps.name, "cooldown", "Cooldown").await;
    assert!(note.contains("cooldown 300 s"), "{note}");
    assert!(
        !gone(cooldown[1].clone()).await,
        "the second pod stays during the cooldown"
    );

    // Loops: two restarts did not cure the workload; the third stops and escalates.
    let looping = names("looping").await;
    for (i, p) in looping[..2].iter().enumerate() {
        scenario::crash_loop(&admin, &apps.name, p, None, 2, 1)
            .await
            .unwrap();
        poll_until("restart", TIMEOUT, || {
            gone(p.clone()).then(|g| async move { Ok(g) })
        })
        .await
        .unwrap_or_else(|e| panic!("restart {i}: {e}"));
    }
    poll_until("looping back to 4 ready", TIMEOUT, || {
        let a = admin.clone();
        let ns = apps.name.clone();
        async move { Ok(ready_pods(&a, &ns, "looping").await.len() == 4) }
    })
    .await
    .unwrap();
    scenario::crash_loop(&admin, &apps.name, &looping[2], None, 2, 1)
        .await
        .unwrap();
    let note = wait_event(&admin, &apps.name, "looping", "LoopDetected").await;
    assert!(note.contains("escalating"), "{note}");
    assert!(!gone(looping[2].clone()).await, "the third pod stays");

    let brk = wait_event(&admin, &apps.name, "breaker", "DisruptionBreaker").await;
    assert!(brk.contains("suspecting the signal"), "{brk}");
    for p in &breaker[..3] {
        assert!(!gone(p.clone()).await, "{p}: the breaker stops restarts");
    }
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_managed_workloads_and_mirror_pods_are_reported_not_changed() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "gitops").await.unwrap();
    let stack = AgentStack::start(&cluster, NODE, 1).await.unwrap();
    apply_policy(
        &cluster,
        &apps.name,
        "managed",
        json!({"targetSelector": {"matchLabels": {"tier": "managed"}},
               "actions": {"restartStuckPods": true, "bumpMemoryPercent": 20},
               "safety": {"minReadyReplicas": 0}}),
    );
    // An Argo CD-managed Deployment: a live memory patch would be reverted by self-heal.
    let mut d = deployment(
        "argo",
        2,
        json!({"tier": "managed"}),
        json!({}),
        Some("256Mi"),
    );
    d.metadata.annotations = Some(
        [(
            "argocd.argoproj.io/tracking-id".to_owned(),
            "shop:apps/Deployment:x/argo".to_owned(),
        )]
        .into(),
    );
    rollout(&admin, &apps.name, d).await;
    let pod = ready_pods(&admin, &apps.name, "argo")
        .await
        .remove(0)
        .metadata
        .name
        .unwrap();
    scenario::oom_killed(&admin, &apps.name, &pod, None, 1)
        .await
        .unwrap();
    let note = wait_event(&admin, &apps.name, "argo", "GitOpsManaged").await;
    assert!(
        note.contains("proposed change"),
        "the Event carries the proposed change: {note}"
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    let limit = deployments
        .get("argo")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap()["memory"]
        .0
        .clone();
    assert_eq!(limit, "256Mi", "no live patch on a GitOps-managed workload");

    // A mirror (static) pod is never touched, even when a policy selects it.
    let mirror: Pod = serde_json::from_value(json!({
        "metadata": {"name": "static-web", "labels": {"tier": "managed"},
                     "annotations": {"kubernetes.io/config.mirror": "abc123"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "registry.example.com/static:1"}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    pods.create(&PostParams::default(), &mirror).await.unwrap();
    poll_until("mirror pod running", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            Ok(pods
                .get("static-web")
                .await?
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Running"))
        }
    })
    .await
    .unwrap();
    scenario::crash_loop(&admin, &apps.name, "static-web", None, 4, 1)
        .await
        .unwrap();
    wait_event(&admin, &apps.name, "static-web", "MirrorPod").await;
    assert!(
        pods.get_opt("static-web")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    );
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_the_installation_left_out_is_refused_before_any_reservation() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "nofeature").await.unwrap();
    // As the chart renders it with features.restart=false.
    let env = vec![(
        "AUTO_AGENT_FEATURES".to_owned(),
        "memoryBump,mirrorImage,nodeRemediation,scaling".to_owned(),
    )];
    let stack = AgentStack::start_with_env(&cluster, NODE, 1, env)
        .await
        .unwrap();
    apply_policy(
        &cluster,
        &apps.name,
        "live",
        json!({"targetSelector": {"matchLabels": {"mode": "live"}}, "actions": {"restartStuckPods": true}}),
    );
    rollout(
        &admin,
        &apps.name,
        deployment("api", 3, json!({"mode": "live"}), json!({}), None),
    )
    .await;
    let pod = ready_pods(&admin, &apps.name, "api").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    scenario::crash_loop(&admin, &apps.name, &pod, None, 2, 1)
        .await
        .unwrap();
    let note = wait_event(&admin, &apps.name, "api", "FeatureDisabled").await;
    assert!(note.contains("features.restart off"), "{note}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &apps.name);
    assert!(pods.get_opt(&pod).await.unwrap().is_some(), "the pod stays");
    let ledger: Api<ConfigMap> = Api::namespaced(admin.clone(), &stack.namespace.name);
    let spent = ledger
        .get_opt(&stack.controller_id.ledger_name)
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .is_some_and(|d| d.values().any(|v| v.contains("RestartPod")));
    assert!(!spent, "no budget reserved for a refused feature");
    assert!(
        stack.bundles().is_empty(),
        "no bundle for an action not taken"
    );
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}
