//! `kubectl auto-agent` against a running agent on the real cluster: explain for a workload the
//! agent restarted and then refused on its budget, and for one no policy selects; budgets from the
//! ledger; incidents from the leader through the apiserver's service proxy, and from Events when
//! the leader cannot be reached; simulate for a policy that would act, one that would not and one
//! the apiserver refuses; revert restoring the original image and memory after a real memory bump
//! and mirror swap. The plugin runs as the admin user, as a cluster operator would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use auto_agent_e2e::process::binary;
use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NODE: &str = "kwok-node-2";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The host's address the apiserver can proxy to (not loopback, which Endpoints refuse).
fn host_ip() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").unwrap();
    socket.local_addr().unwrap().ip().to_string()
}

/// The entry of `doc[list]` whose `field` is `value`.
fn entry<'a>(doc: &'a Value, list: &str, field: &str, value: &str) -> &'a Value {
    doc[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[field] == value)
        .unwrap_or_else(|| panic!("no {field} {value} in {list}: {doc:#}"))
}

struct Plugin {
    args: Vec<String>,
}

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{}\n{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

impl Plugin {
    /// The same plugin with the flag value `from` replaced by `to`.
    fn with(&self, from: &str, to: &str) -> Plugin {
        let mut args = self.args.clone();
        let at = args.iter().position(|a| a == from).unwrap();
        args[at] = to.to_owned();
        Plugin { args }
    }

    fn run(&self, args: &[&str]) -> Ran {
        let out = Command::new(binary("kubectl-auto_agent", false).unwrap())
            .args(&self.args)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_explains_simulates_lists_counts_and_reverts() {
    let mut t = Setup::new("plugin", NODE).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    let mirror = t.start_agents_with_mirror(&["mirror/team/app"]).await;
    let registry = mirror.host.clone();
    let stack = t.stack();
    let agents = stack.namespace.name.clone();

    // The controllers run as processes here, so a stand-in pod takes the leader's place: named as
    // the leader's identity (the Lease's holder, as the chart's POD_NAME makes it), with the admin
    // port named as the chart names it, and the host's address as its pod IP (the apiserver's
    // proxy goes to pod IPs, and only to endpoints backed by pods). A Service selects it as the
    // chart's Service selects the controller pods.
    let port = stack.controllers[0].admin.port();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &agents);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "controller-0", "labels": {"stand-in": "leader"}},
            "spec": {"nodeName": NODE, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "controller", "image": "stand-in",
                                     "ports": [{"name": "metrics", "containerPort": port}]}]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    poll_until("the stand-in running", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("controller-0").await?;
            Ok(p.status.and_then(|s| s.pod_ip).is_some())
        }
    })
    .await
    .unwrap();
    let ip = host_ip();
    pods.patch_status(
        "controller-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await
    .unwrap();
    let services: Api<Service> = Api::namespaced(admin.clone(), &agents);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "plugin-admin"},
                "spec": {"selector": {"stand-in": "leader"},
                         "ports": [{"name": "metrics", "port": 8080, "targetPort": "metrics"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let kubeconfig = t.cluster.kubeconfig_path().display().to_string();
    let plugin = Plugin {
        args: vec![
            "--kubeconfig".into(),
            kubeconfig,
            "-n".into(),
            ns.clone(),
            "--agent-namespace".into(),
            agents.clone(),
            "--controller-service".into(),
            "plugin-admin".into(),
            "--admin-port".into(),
            "metrics".into(),
            "--lease-name".into(),
            stack.controller_id.lease_name.clone(),
            "--ledger-name".into(),
            stack.controller_id.ledger_name.clone(),
            "--plain-http-registries".into(),
            registry.clone(),
        ],
    };

    t.policy(
        "restart",
        json!({"targetSelector": {"matchLabels": {"tier": "crash"}}, "actions": {"restartStuckPods": true},
               "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0},
               "budgets": [{"action": "RestartPod", "scope": "Target", "max": 1, "windowSeconds": 3600}]}),
    );
    t.policy(
        "fix",
        json!({"targetSelector": {"matchLabels": {"tier": "fix"}},
               "actions": {"bumpMemoryPercent": 20, "memoryBump": {"minIncrease": "100Mi", "maxLimit": "1Gi"},
                           "imageMirror": {"registry": format!("{registry}/mirror")}},
               "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0}}),
    );
    let crash = t
        .running_pod(Workload::new("crash").label("tier", "crash"))
        .await;
    let lonely = t
        .running_pod(Workload::new("lonely").label("tier", "lonely"))
        .await;

    // A crash loop restarted, the next one refused: the budget of one restart is spent.
    scenario::crash_loop(&admin, &ns, &crash, None, 3, 1)
        .await
        .unwrap();
    t.wait_event("crash", "RestartedPod").await;
    let second = t.replacement_of("crash", &crash).await;
    scenario::crash_loop(&admin, &ns, &second, None, 3, 1)
        .await
        .unwrap();
    t.wait_event("crash", "BudgetExhausted").await;

    // explain: the policy, the restart in the ledger and Events, and the refusal it would repeat.
    let e = plugin
        .run(&["explain", "deploy/crash", "-o", "json"])
        .json();
    assert_eq!(e["policy"], "restart", "{e:#}");
    assert_eq!(e["target"], format!("Deployment/{ns}/crash"));
    let actions = e["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{e:#}");
    assert_eq!(actions[0]["action"], "RestartPod");
    let reasons: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"RestartedPod") && reasons.contains(&"BudgetExhausted"),
        "{reasons:?}"
    );
    let bundles = e["bundles"].as_array().unwrap();
    assert_eq!(bundles.len(), 1, "{e:#}");
    let bundle = bundles[0].as_str().unwrap();
    assert!(
        std::path::Path::new(bundle).is_file(),
        "the bundle the Event names: {bundle}"
    );
    let crash_now = entry(&e, "wouldDo", "failure", "CrashLoopBackOff");
    assert_eq!(crash_now["basis"], "now", "{crash_now}");
    assert_eq!(crash_now["decision"], "Refuse");
    assert_eq!(crash_now["reason"], "BudgetExhausted");
    assert!(
        e["decidedWith"]
            .as_str()
            .unwrap()
            .starts_with("leader controller-0"),
        "{e:#}"
    );
    // The same through the pod, and as a table for people.
    let by_pod = plugin.run(&["explain", &format!("pod/{second}")]);
    assert_eq!(by_pod.code, 0, "{}", by_pod.stderr);
    assert!(
        by_pod.stdout.contains("Policy:   restart") && by_pod.stdout.contains("BudgetExhausted"),
        "{}",
        by_pod.stdout
    );

    // explain a workload no policy selects: why each policy does not, and NoPolicy for every kind.
    let e = plugin
        .run(&["explain", "deploy/lonely", "-o", "json"])
        .json();
    assert!(e["policy"].is_null(), "{e:#}");
    assert!(
        e["policies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["selects"] == false)
    );
    let decisions: Vec<(&str, &str)> = e["wouldDo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["decision"].as_str().unwrap(),
                j["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(decisions, [("Refuse", "NoPolicy"); 3], "{e:#}");
    assert_eq!(
        plugin.run(&["explain", "deploy/nowhere"]).code,
        3,
        "not found"
    );
    assert_eq!(plugin.run(&["explain", "nowhere"]).code, 1, "not KIND/NAME");

    // budgets: the target's restart budget spent, with its refill.
    let b = plugin.run(&["budgets", "-o", "json"]).json();
    let row = b["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["action"] == "RestartPod"
                && r["scope"] == "Target"
                && r["subject"] == format!("Deployment/{ns}/crash")
        })
        .unwrap_or_else(|| panic!("{b:#}"))
        .clone();
    assert_eq!(
        (
            row["used"].clone(),
            row["max"].clone(),
            row["remaining"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "{row}"
    );
    assert!(row["refillsIn"].as_str().unwrap().ends_with('m'), "{row}");

    // incidents: from the leader through the service proxy, with the last outcome.
    let i = plugin.run(&["incidents", "-o", "json"]).json();
    assert_eq!(i["source"], "leader controller-0", "{i:#}");
    let inc = entry(&i, "incidents", "subject", "Deployment/crash");
    assert_eq!(inc["kind"], "CrashLoopBackOff");
    assert_eq!(inc["lastOutcome"], "Refused BudgetExhausted", "{inc}");
    assert_eq!(inc["state"], "Open");
    // Through the Service when the Lease names no pod.
    let via_service = plugin
        .with(&stack.controller_id.lease_name, "no-such-lease")
        .run(&["incidents", "-o", "json"])
        .json();
    assert_eq!(
        via_service["source"], "leader controller-0",
        "{via_service:#}"
    );
    let keys = |v: &Value| -> Vec<String> {
        v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&via_service), keys(&i));
    // Without a reachable leader: the agent's Events stand in.
    let fallback = plugin
        .with(&stack.controller_id.lease_name, "no-such-lease")
        .with("plugin-admin", "no-such-service")
        .run(&["incidents", "-o", "json"])
        .json();
    assert!(
        fallback["source"]
            .as_str()
            .unwrap()
            .starts_with("the agent's Events"),
        "{fallback:#}"
    );
    let row = entry(&fallback, "incidents", "subject", "Deployment/crash");
    assert!(
        row["lastOutcome"]
            .as_str()
            .unwrap()
            .ends_with("BudgetExhausted"),
        "{row}"
    );

    // simulate: the lonely workload crash-loops with no policy; a policy that would restart it,
    // one that would not, and one the apiserver refuses.
    scenario::crash_loop(&admin, &ns, &lonely, None, 3, 1)
        .await
        .unwrap();
    t.wait_event("lonely", "NoPolicy").await;
    let file = |spec: Value| {
        let path = std::env::temp_dir().join(format!("e2e-simulate-{ns}.yaml"));
        let policy = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                            "metadata": {"name": "try"}, "spec": spec});
        std::fs::write(&path, serde_norway::to_string(&policy).unwrap()).unwrap();
        path.display().to_string()
    };
    let acts = file(
        json!({"targetSelector": {"matchLabels": {"tier": "lonely"}}, "actions": {"restartStuckPods": true},
                           "safety": {"minReadyReplicas": 0}}),
    );
    let s = plugin.run(&["simulate", "-f", &acts, "-o", "json"]).json();
    assert_eq!(s["validation"], "accepted", "{s:#}");
    assert_eq!(s["targets"], json!(["Deployment/lonely"]));
    assert_eq!(s["plans"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(s["plans"][0]["decision"], "Act");
    assert_eq!(s["plans"][0]["reason"], format!("restart pod {lonely}"));
    let idle = file(json!({"targetSelector": {"matchLabels": {"tier": "lonely"}}, "actions": {}}));
    let s = plugin.run(&["simulate", "-f", &idle, "-o", "json"]).json();
    assert_eq!(s["plans"][0]["decision"], "Refuse", "{s:#}");
    assert_eq!(s["plans"][0]["reason"], "ActionNotEnabled");
    let bad = file(json!({"targetSelector": {}, "actions": {"bumpMemoryPercent": 5000}}));
    let refused = plugin.run(&["simulate", "-f", &bad]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("bumpMemoryPercent"),
        "{}",
        refused.stderr
    );
    let policies: Api<auto_agent_shared::crd::AutoRemediationPolicy> =
        Api::namespaced(admin.clone(), &ns);
    assert!(
        policies.get_opt("try").await.unwrap().is_none(),
        "simulate stores nothing"
    );

    // revert: a real memory bump and mirror swap, undone as the user.
    t.rollout(
        Workload::new("fix")
            .label("tier", "fix")
            .image("registry.example.com/team/app:1")
            .memory("256Mi", "128Mi"),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let container = || {
        let d = deployments.clone();
        async move {
            let d = d.get("fix").await.unwrap();
            let annotations = d.metadata.annotations.clone().unwrap_or_default();
            let c = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
            let r = c.resources.clone().unwrap();
            (
                c.image.unwrap(),
                r.limits.unwrap()["memory"].0.clone(),
                r.requests.unwrap()["memory"].0.clone(),
                annotations,
            )
        }
    };
    let pod = t.ready_pod_names("fix").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 1)
        .await
        .unwrap();
    poll_until("the memory bump", TIMEOUT, || {
        let c = container();
        async move { Ok(c.await.1 == "356Mi") }
    })
    .await
    .unwrap();
    let bumped = t.replacement_of("fix", &pod).await;
    scenario::start_failure(&admin, &ns, &bumped, None, StartFailure::ErrImagePull)
        .await
        .unwrap();
    let mirrored = format!("{registry}/mirror/team/app:1");
    poll_until("the mirror swap", TIMEOUT, || {
        let c = container();
        let want = mirrored.clone();
        async move { Ok(c.await.0 == want) }
    })
    .await
    .unwrap();
    let (_, limit, request, annotations) = container().await;
    assert_eq!((limit.as_str(), request.as_str()), ("356Mi", "228Mi"));
    assert_eq!(
        annotations["autoagent.io/original-image-app"],
        "registry.example.com/team/app:1"
    );
    assert_eq!(
        annotations["autoagent.io/original-memory-app"],
        r#"{"limit":"256Mi","request":"128Mi"}"#
    );

    // Not confirmed (no terminal, no --yes): nothing changes.
    let declined = plugin.run(&["revert", "deploy/fix"]);
    assert_eq!(declined.code, 4, "{}{}", declined.stdout, declined.stderr);
    assert_eq!(container().await.0, mirrored);
    let r = plugin
        .run(&["revert", "deploy/fix", "--yes", "-o", "json"])
        .json();
    assert_eq!(r["applied"], true, "{r:#}");
    assert_eq!(r["changes"].as_array().unwrap().len(), 3, "{r:#}");
    let (image, limit, request, annotations) = container().await;
    assert_eq!(image, "registry.example.com/team/app:1");
    assert_eq!((limit.as_str(), request.as_str()), ("256Mi", "128Mi"));
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("autoagent.io/original-")),
        "{annotations:?}"
    );
    assert_eq!(
        plugin.run(&["revert", "deploy/fix", "--yes"]).code,
        3,
        "nothing left to revert"
    );

    t.finish().await;
    drop(mirror);
}
