#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The chart installed with the agent's own images on a real node (e2e/node: kubelet, containerd,
//! runc, CNI, kube-proxy, CoreDNS), and real failures remediated there: a container that exits 1
//! (a real CrashLoopBackOff, restarted after its bundle holds the previous log the sensor read from
//! the kubelet's files), one the kernel OOM-kills (memory bumped, the new pod runs with the new
//! limit), and an image the registry does not have (swapped to the mirror, the pod runs).

use std::time::{Duration, Instant};

use auto_agent_e2e::helm::ChartRelease;
use auto_agent_e2e::process::http_get;
use auto_agent_e2e::real_node::{REAL_NODE_TAINT, RealNode};
use auto_agent_e2e::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use auto_agent_e2e::steps::{apply_policy, memory_limit, template_container, wait_event};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::workloads::running_and_ready;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};

/// Real pulls, real restarts and the kubelet's back-off make this slower than the KWOK tests.
const TIMEOUT: Duration = Duration::from_secs(180);

fn apply(cluster: &Cluster, doc: &Value) {
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))
        .unwrap();
    assert!(ok, "{err}");
}

/// A Deployment of one pod on the real node running `script` in `image`.
fn deployment(ns: &str, name: &str, tier: &str, image: &str, script: &str, memory: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "labels": {"tier": tier}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name, "tier": tier}},
                                 "spec": {"nodeSelector": {"type": "real"},
                                          "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists"}],
                                          "terminationGracePeriodSeconds": 1,
                                          "containers": [{"name": "app", "image": image,
                                                          "command": ["/bin/sh", "-c", script],
                                                          "resources": {"limits": {"memory": memory}}}]}}}})
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn summary(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            let s = p.status.clone().unwrap_or_default();
            let containers: Vec<String> = s
                .container_statuses
                .iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} ready={} restarts={} state={:?}",
                        c.name, c.ready, c.restart_count, c.state
                    )
                })
                .collect();
            format!(
                "{} {:?} {:?}",
                p.metadata.name.clone().unwrap_or_default(),
                s.phase,
                containers
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_on_a_real_node_and_remediates_real_failures() {
    if let Some(why) = RealNode::unavailable() {
        // Only an explicit opt-out skips it: a machine that cannot run the node fails loudly.
        if std::env::var("AUTO_AGENT_SKIP_REAL_NODE").as_deref() == Ok("1") {
            println!("skipped (AUTO_AGENT_SKIP_REAL_NODE=1): {why}");
            return;
        }
        panic!("{why} (set AUTO_AGENT_SKIP_REAL_NODE=1 to skip the real-node test)");
    }
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let started = Instant::now();
    let node = RealNode::up(&cluster).unwrap();
    println!("real node {} up in {:?}", node.name, started.elapsed());

    // The agent's images, assembled from the release binaries, in the node's registry; the
    // workload image in both registries' namespaces the test needs.
    let t = Instant::now();
    let images = node.push_agent_images("e2e").unwrap();
    for image in &images {
        println!(
            "image {}: {} bytes compressed, binary {} bytes",
            image.reference, image.compressed_bytes, image.binary_bytes
        );
    }
    println!("images built and pushed in {:?}", t.elapsed());
    let busybox = node.push_busybox(&node.registry).unwrap();
    node.copy_image(&busybox, &format!("{}/mirror/team/app:1", node.mirror))
        .unwrap();

    // Bundles go to S3 on this machine's address, which pods reach.
    let agent_ns = TestNamespace::create(&cluster, "realnode").await.unwrap();
    let apps = TestNamespace::create(&cluster, "realapps").await.unwrap();
    let s3_dir = std::env::temp_dir().join(format!("e2e-realnode-s3-{}", agent_ns.name));
    let s3 = S3Server::start_on(&s3_dir, &["evidence"], &node.host_ip)
        .await
        .unwrap();
    apply(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s3-credentials", "namespace": agent_ns.name},
                "stringData": {"access-key": ACCESS_KEY, "secret-key": SECRET_KEY}}),
    );
    let values = json!({
        "sensor": {"image": {"repository": format!("{}/auto-agent-sensor", node.registry), "tag": "e2e"},
                   "nodeSelector": {"type": "real"},
                   "podLogDir": node.pod_logs},
        "controller": {"image": {"repository": format!("{}/auto-agent-controller", node.registry), "tag": "e2e"},
                       "nodeSelector": {"type": "real"},
                       "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                       "plainHttpRegistries": [node.mirror],
                       "extraEnv": [
                           {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "access-key"}}},
                           {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "secret-key"}}}]},
        "evidence": {"s3": {"bucket": "evidence", "region": REGION, "endpointUrl": s3.endpoint(), "forcePathStyle": true}},
        "security": {"allowedMirrorRegistries": [node.mirror]},
        "logging": {"level": "info,auto_agent_sensor=debug"},
    });
    let values_file = s3_dir.with_extension("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let release = ChartRelease::release_name("realnode");
    let installed = Instant::now();
    let chart = ChartRelease::install(
        &cluster,
        &release,
        &agent_ns.name,
        &["--values", values_file.to_str().unwrap()],
    )
    .unwrap();

    // Every agent pod Ready on the real node. That the sensor found the controllers (DNS, the
    // Service, TLS, its projected token) is shown below: its findings are remediated.
    let agent_pods = |c: Client, ns: String| async move {
        Api::<Pod>::namespaced(c, &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    };
    let result = poll_until("every agent pod Ready on the real node", TIMEOUT, || {
        let f = agent_pods(admin.clone(), agent_ns.name.clone());
        let node_name = node.name.clone();
        async move {
            let pods = f.await;
            Ok(pods.len() == 3
                && pods.iter().all(|p| {
                    running_and_ready(p)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node_name)
                }))
        }
    })
    .await;
    if let Err(e) = result {
        let pods = agent_pods(admin.clone(), agent_ns.name.clone()).await;
        panic!(
            "{e}\n{}\nkubelet:\n{}",
            summary(&pods),
            node.log_tail("kubelet", 30)
        );
    }
    let ready_after = installed.elapsed();
    println!("helm install -> every agent pod Ready: {ready_after:?}");
    let pods = agent_pods(admin.clone(), agent_ns.name.clone()).await;
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        let sc = spec.security_context.clone().unwrap_or_default();
        assert_eq!(
            sc.run_as_user,
            Some(65532),
            "non-root: {:?}",
            p.metadata.name
        );
        let c = &spec.containers[0];
        let csc = c.security_context.clone().unwrap_or_default();
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert!(c.image.as_deref().unwrap().starts_with(&node.registry));
    }

    // The failures, each under a policy that opts in to its remedy.
    let safety = json!({"minReadyReplicas": 0, "maxUnhealthyPercent": 100, "cooldownSeconds": 0});
    apply_policy(
        &cluster,
        &apps.name,
        "restart",
        json!({"targetSelector": {"matchLabels": {"tier": "crash"}}, "actions": {"restartStuckPods": true},
               "safety": safety, "logBundle": {"s3": {"bucket": "evidence"}, "tailLines": 20}}),
    );
    apply_policy(
        &cluster,
        &apps.name,
        "memory",
        json!({"targetSelector": {"matchLabels": {"tier": "mem"}},
               "actions": {"bumpMemoryPercent": 20, "memoryBump": {"minIncrease": "100Mi", "maxLimit": "400Mi"}},
               // the default cooldown: the old pod OOMs again before the new one replaces it,
               // and that must not bump twice
               "safety": {"minReadyReplicas": 0, "maxUnhealthyPercent": 100}}),
    );
    apply_policy(
        &cluster,
        &apps.name,
        "mirror",
        json!({"targetSelector": {"matchLabels": {"tier": "pull"}},
               "actions": {"imageMirror": {"registry": format!("{}/mirror", node.mirror)}},
               "safety": safety}),
    );
    let crash_script = "echo starting; echo 'fatal: cannot open /etc/app/config.yaml' >&2; exit 1";
    // Some 50 MB while the 24 MB string is built: over 32Mi, well under 32Mi + 100Mi.
    let oom_script = "a=$(head -c 24000000 /dev/zero | tr '\\000' x); echo allocated; sleep 3600";
    apply(
        &cluster,
        &deployment(
            &apps.name,
            "crasher",
            "crash",
            &busybox,
            crash_script,
            "64Mi",
        ),
    );
    apply(
        &cluster,
        &deployment(&apps.name, "hungry", "mem", &busybox, oom_script, "32Mi"),
    );
    let missing = format!("{}/team/app:1", node.registry);
    apply(
        &cluster,
        &deployment(&apps.name, "puller", "pull", &missing, "sleep 3600", "32Mi"),
    );

    // CrashLoopBackOff: restarted, the bundle holds the previous log the sensor read from the
    // kubelet's files.
    let first_crasher = first_pod_name(&admin, &apps.name, "crasher").await;
    let note = wait_event(&admin, &apps.name, "crasher", "RestartedPod").await;
    println!("crasher: {note}");
    let keys = s3.keys("evidence");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let doc: Value = serde_json::from_str(&s3.read("evidence", &keys[0]).unwrap()).unwrap();
    assert_eq!(doc["log"]["source"], "Sensor", "{}", doc["log"]);
    let lines: Vec<&str> = doc["log"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines.contains(&"fatal: cannot open /etc/app/config.yaml") && lines.contains(&"starting"),
        "{lines:?}"
    );
    assert_eq!(doc["node"]["name"], node.name);
    assert_eq!(doc["pod"]["metadata"]["name"], first_crasher);
    poll_until("the crashing pod replaced", TIMEOUT, || {
        let c = admin.clone();
        let ns = apps.name.clone();
        let first = first_crasher.clone();
        async move {
            let pods = pods_of(&c, &ns, "crasher").await;
            Ok(!pods.is_empty()
                && pods
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(&first)))
        }
    })
    .await
    .unwrap();

    // OOMKilled by the kernel: the limit bumped (32Mi + 100Mi), the new pod runs with it.
    let note = wait_event(&admin, &apps.name, "hungry", "BumpedMemory").await;
    println!("hungry: {note}");
    let template = template_container(&admin, &apps.name, "hungry").await;
    assert_eq!(memory_limit(&template), Some("132Mi"));
    wait_running(&admin, &apps.name, "hungry", |p| {
        memory_limit(&p.spec.as_ref().unwrap().containers[0]) == Some("132Mi")
    })
    .await;

    // ImagePullBackOff for an image the registry does not have: swapped to the mirror's copy,
    // the pod runs it.
    let note = wait_event(&admin, &apps.name, "puller", "MirroredImage").await;
    println!("puller: {note}");
    let want = format!("{}/mirror/team/app:1", node.mirror);
    let image = template_container(&admin, &apps.name, "puller").await.image;
    assert_eq!(image.as_deref(), Some(want.as_str()));
    wait_running(&admin, &apps.name, "puller", |p| {
        p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(want.as_str())
    })
    .await;

    // Every previous log (the crash loop's, the OOM kill's) read from the kubelet's files as UID
    // 65532, none from the API fallback: the sensor's own counts say so.
    let sensor = Api::<Pod>::namespaced(admin.clone(), &agent_ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/component=sensor"))
        .await
        .unwrap()
        .items
        .remove(0);
    let ip = sensor.status.clone().unwrap().pod_ip.unwrap();
    let (_, metrics) = http_get(format!("{ip}:8080").parse().unwrap(), "/metrics")
        .await
        .unwrap();
    let reads: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("auto_agent_sensor_log_reads_total"))
        .collect();
    println!("sensor log reads: {reads:?}");
    let count = |source: &str, outcome: &str| -> f64 {
        reads
            .iter()
            .find(|l| {
                l.contains(&format!("source=\"{source}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("node_file", "ok") >= 2.0, "{reads:?}");
    let api_reads = count("api", "ok") + count("api", "error");
    if count("node_file", "error") + api_reads > 0.0 {
        let sensor_name = sensor.metadata.name.clone().unwrap();
        let (_, logs, _) = cluster
            .kubectl(&["logs", "-n", &agent_ns.name, &sensor_name], None)
            .unwrap();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("log") || l.contains("Finding"))
            .collect();
        panic!("{reads:?}\n{}", lines.join("\n"));
    }

    println!(
        "summary: install->ready {ready_after:?}; total {:?}",
        started.elapsed()
    );
    drop(chart);
    drop(node);
}

/// The name of the deployment's first pod once it exists.
async fn first_pod_name(client: &Client, ns: &str, app: &str) -> String {
    poll_until("the pod created", TIMEOUT, || {
        let c = client.clone();
        async move { Ok(!pods_of(&c, ns, app).await.is_empty()) }
    })
    .await
    .unwrap();
    pods_of(client, ns, app).await[0]
        .metadata
        .name
        .clone()
        .unwrap()
}

/// Waits until a Running, Ready pod of `app` satisfies `want`.
async fn wait_running(client: &Client, ns: &str, app: &str, want: impl Fn(&Pod) -> bool + Copy) {
    let result = poll_until(&format!("{app} running the remedied spec"), TIMEOUT, || {
        let c = client.clone();
        async move {
            let pods = pods_of(&c, ns, app).await;
            Ok(pods.iter().any(|p| running_and_ready(p) && want(p)))
        }
    })
    .await;
    if let Err(e) = result {
        panic!("{e}\n{}", summary(&pods_of(client, ns, app).await));
    }
}
