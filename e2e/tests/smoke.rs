//! Smoke tests on the real control plane: the CRDs and their validation, scheduling on fake
//! nodes, the pod scenario helpers, seeded previous logs, ServiceAccount clients and RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::wait::{poll_until, until};
use auto_agent_e2e::{Cluster, TestNamespace, Workload, cluster::repo_root};
use auto_agent_shared::crd::{AutoRemediationPolicy, NodeRemediationPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, LogParams};
use kube::runtime::wait::conditions;
use kube::{Api, Client};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn install_crds(cluster: &Cluster) -> Client {
    let (ok, _, err) = cluster
        .kubectl(
            &["apply", "-f", repo_root().join("crds").to_str().unwrap()],
            None,
        )
        .unwrap();
    assert!(ok, "crds/ must apply: {err}");
    let client = cluster.admin().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "autoremediationpolicies.autoagent.io",
        "noderemediationpolicies.autoagent.io",
    ] {
        until(
            crds.clone(),
            name,
            TIMEOUT,
            conditions::is_crd_established(),
        )
        .await
        .unwrap();
    }
    client
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(repo_root().join("e2e/fixtures/policies").join(path)).unwrap()
}

#[tokio::test]
async fn seed_policy_is_accepted_and_defaulted_by_the_apiserver() {
    let cluster = Cluster::get().unwrap();
    let client = install_crds(&cluster).await;
    let ns = TestNamespace::create(&cluster, "seed").await.unwrap();

    let seed = fixture("valid/seed-api-prod.yaml")
        .replace("namespace: prod", &format!("namespace: {}", ns.name));
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", "-"], Some(&seed)).unwrap();
    assert!(ok, "the seed example must be accepted as written: {err}");

    let api: Api<AutoRemediationPolicy> = Api::namespaced(client.clone(), &ns.name);
    let stored = api.get("api-prod").await.unwrap();
    let scale = stored.spec.actions.scale.as_ref().unwrap();
    assert_eq!((scale.min_replicas, scale.max_replicas), (3, 30));
    // Defaults come from the schema, applied by the apiserver itself.
    assert_eq!(scale.cooldown_down_seconds, 900);
    assert_eq!(scale.scale_down_cpu_threshold, 0.30);
    assert!(!stored.spec.dry_run);

    let full =
        fixture("valid/full.yaml").replace("namespace: prod", &format!("namespace: {}", ns.name));
    let (ok, _, err) = cluster.kubectl(&["apply", "-f", "-"], Some(&full)).unwrap();
    assert!(ok, "valid/full.yaml: {err}");
    let (ok, out, err) = cluster
        .kubectl(&["get", "arp", "-n", &ns.name], None)
        .unwrap();
    assert!(ok, "{err}");
    for column in ["TARGETS", "DRYRUN", "READY", "LAST ACTION", "AGE"] {
        assert!(
            out.contains(column),
            "kubectl get arp lacks column {column}:\n{out}"
        );
    }

    let node_policy =
        fixture("valid/node-pressure.yaml").replace("name: workers", &format!("name: {}", ns.name));
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&node_policy))
        .unwrap();
    assert!(ok, "{err}");
    let nrp: Api<NodeRemediationPolicy> = Api::all(client.clone());
    let stored = nrp.get(&ns.name).await.unwrap();
    assert!(stored.spec.evict && stored.spec.cordon);
    nrp.delete(&ns.name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn invalid_policies_are_rejected_with_the_field_named() {
    let cluster = Cluster::get().unwrap();
    let client = install_crds(&cluster).await;
    let ns = TestNamespace::create(&cluster, "invalid").await.unwrap();
    let dir = repo_root().join("e2e/fixtures/policies/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let field = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap();
        let (ok, _, err) = cluster
            .kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&text))
            .unwrap();
        assert!(!ok, "{} was accepted", path.display());
        assert!(
            err.contains(&format!("{field}:")),
            "{}: the error does not name {field}:\n{err}",
            path.display()
        );
    }
    let arp: Api<AutoRemediationPolicy> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        arp.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A Deployment whose pods spread over the fake nodes, one per node.
fn workload(name: &str, replicas: i32) -> Workload {
    Workload::new(name)
        .replicas(replicas)
        .image("registry.example.com/app:1.0")
        .spread_over_nodes()
}

/// Creates the Deployment and waits until all its pods run; returns them.
async fn running_pods(client: &Client, ns: &str, workload: Workload) -> Vec<Pod> {
    workload.running_pods(client, ns).await.unwrap()
}

#[tokio::test]
async fn deployment_gets_three_running_pods_spread_on_fake_nodes() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "spread").await.unwrap();
    let pods = running_pods(&client, &ns.name, workload("web", 3)).await;
    let nodes: BTreeSet<_> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "pods must land on three different fake nodes: {nodes:?}"
    );
    assert!(nodes.iter().all(|n| n.starts_with("kwok-node-")));
}

fn container_status(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .clone()
}

#[tokio::test]
async fn crash_loop_scenario_sets_the_kubelet_status_and_restarts_rise() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "crash").await.unwrap();
    let pod = running_pods(&client, &ns.name, workload("api", 1))
        .await
        .remove(0);
    let name = pod.metadata.name.clone().unwrap();

    for restarts in [3, 4] {
        scenario::crash_loop(&client, &ns.name, &name, None, restarts, 1)
            .await
            .unwrap();
        let got = Api::<Pod>::namespaced(client.clone(), &ns.name)
            .get(&name)
            .await
            .unwrap();
        let cs = container_status(&got);
        assert_eq!(cs.restart_count, restarts);
        assert!(!cs.ready);
        let waiting = cs.state.unwrap().waiting.unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert_eq!(got.status.unwrap().phase.as_deref(), Some("Running"));
    }
}

#[tokio::test]
async fn oom_scenario_sets_exit_137_and_reason_oomkilled() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "oom").await.unwrap();
    let mem = Workload::new("mem")
        .spread_over_nodes()
        .sidecar("sidecar", "registry.example.com/proxy:1")
        .memory_limit("128Mi");
    let pod = running_pods(&client, &ns.name, mem).await.remove(0);
    let name = pod.metadata.name.unwrap();
    let got = scenario::oom_killed(&client, &ns.name, &name, Some("app"), 2)
        .await
        .unwrap();
    let statuses = got.status.unwrap().container_statuses.unwrap();
    let app = statuses.iter().find(|c| c.name == "app").unwrap();
    let last = app.last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    assert_eq!(app.restart_count, 2);
    let sidecar = statuses.iter().find(|c| c.name == "sidecar").unwrap();
    assert_eq!(
        sidecar.restart_count, 0,
        "only the named container is affected"
    );
    assert!(sidecar.state.clone().unwrap().running.is_some());
}

#[tokio::test]
async fn start_failures_keep_the_pod_pending() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "pending").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let failures = [
        StartFailure::ImagePullBackOff,
        StartFailure::ErrImagePull,
        StartFailure::CreateContainerConfigError,
    ];
    let mut names = Vec::new();
    for (i, failure) in failures.iter().enumerate() {
        let pod = running_pods(&client, &ns.name, workload(&format!("f{i}"), 1))
            .await
            .remove(0);
        let name = pod.metadata.name.unwrap();
        scenario::start_failure(&client, &ns.name, &name, None, *failure)
            .await
            .unwrap();
        names.push((name, *failure));
    }
    // kwok handles pods in order; once a pod created afterwards is Running, kwok has had its chance
    // to move the held pods and must not have.
    running_pods(&client, &ns.name, workload("sentinel", 1)).await;
    for (name, failure) in names {
        let got = pods.get(&name).await.unwrap();
        assert_eq!(
            got.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending"),
            "{failure:?}"
        );
        let waiting = container_status(&got).state.unwrap().waiting.unwrap();
        assert_eq!(waiting.reason.as_deref(), Some(failure.reason()));
        assert!(!container_status(&got).ready);
    }
}

#[tokio::test]
async fn previous_logs_are_served_through_the_apiserver() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "logs").await.unwrap();
    let pod = running_pods(&client, &ns.name, workload("talker", 1))
        .await
        .remove(0);
    let name = pod.metadata.name.unwrap();
    let uid = pod.metadata.uid.unwrap();
    let previous = [
        "starting worker",
        "panic: runtime error: index out of range",
    ];
    let root = scenario::seed_logs(
        &cluster,
        &ns.name,
        &name,
        "app",
        3,
        &previous,
        &["restarted ok"],
    )
    .await
    .unwrap();

    // kubectl logs --previous, as a user would run it
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    poll_until("previous logs", TIMEOUT, || {
        let cluster = cluster.clone();
        let (ns, name) = (ns.name.clone(), name.clone());
        async move {
            let (ok, out, _) =
                cluster.kubectl(&["logs", "-n", &ns, &name, "-c", "app", "--previous"], None)?;
            Ok(ok && out == "starting worker\npanic: runtime error: index out of range\n")
        }
    })
    .await
    .unwrap();
    let current = pods
        .logs(
            &name,
            &LogParams {
                container: Some("app".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(current, "restarted ok\n");
    // The same lines lie where the kubelet would keep them, for the sensor's node-file reader.
    // (the newest attempt's file: a crash-looping container's failed run, as a kubelet names it)
    let file = root.join(format!("{}_{}_{}/app/3.log", ns.name, name, uid));
    assert!(
        std::fs::read_to_string(file)
            .unwrap()
            .contains("stdout F panic: runtime error")
    );
}

#[tokio::test]
async fn service_account_clients_are_bound_by_rbac() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "rbac").await.unwrap();
    let as_default = cluster.client_as(&ns.name, "default").await.unwrap();
    let err = Api::<Pod>::namespaced(as_default, &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // The admin client still can.
    Api::<Pod>::namespaced(client, &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
}
