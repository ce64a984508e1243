#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The chart installed into the real control plane with its default values: a sensor on every
//! node, both controllers Running, a PDB, the generated certificate kept across an upgrade, RBAC
//! proved through tokens of the chart's own ServiceAccounts (what each may do, and the 403s for what
//! it may not), and an uninstall that removes the cluster-scoped RBAC.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use auto_agent_e2e::helm::ChartRelease;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client};
use serde_json::json;

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
