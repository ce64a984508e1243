//! Populating the local control plane for the scale benchmark: KWOK nodes, pods bound to them,
//! background churn, and the naive baseline (every node's agent watching every pod).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Requests in flight while populating.
const CONCURRENCY: usize = 32;

pub fn node_name(i: usize) -> String {
    format!("kwok-scale-{i}")
}

/// Makes sure nodes `0..n` exist (KWOK-managed, with the allocatable a real node reports) and
/// labels the first `real_sensors` of them `bench.autoagent.io/sensor=real`.
pub async fn ensure_nodes(client: &Client, n: usize, real_sensors: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let existing: std::collections::HashSet<String> = api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| n.name_any())
        .collect();
    stream::iter((0..n).filter(|i| !existing.contains(&node_name(*i))))
        .map(|i| {
            let api = api.clone();
            async move {
                let name = node_name(i);
                let role = if i < real_sensors { "real" } else { "loadgen" };
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                   "kubernetes.io/arch": "amd64", "type": "kwok",
                                   "bench.autoagent.io/sensor": role}},
                }))?;
                api.create(&PostParams::default(), &node).await?;
                let capacity = json!({"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"});
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"allocatable": capacity, "capacity": capacity}})),
                )
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Nodes whose Ready condition is True.
pub async fn ready_nodes(client: &Client) -> anyhow::Result<usize> {
    let api: Api<Node> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().labels("type=kwok"))
        .await?
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count())
}

/// A background pod bound to `node` (no scheduler round trip; KWOK runs it).
pub fn background_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "background"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example.com/background:1",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
            "tolerations": [{"operator": "Exists"}]
        }
    }))
    .unwrap_or_default()
}

/// Makes sure `ns` holds `m` background pods `bg-<i>`, pod i on node `i % nodes`.
pub async fn ensure_pods(client: &Client, ns: &str, m: usize, nodes: usize) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let existing: std::collections::HashSet<String> = api
        .list_metadata(&ListParams::default().labels("app=background"))
        .await?
        .items
        .into_iter()
        .map(|p| p.name_any())
        .collect();
    stream::iter((0..m).filter(|i| !existing.contains(&format!("bg-{i}"))))
        .map(|i| {
            let api = api.clone();
            async move {
                let pod = background_pod(&format!("bg-{i}"), &node_name(i % nodes.max(1)));
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Pods of `ns` with `selector` in phase Running.
pub async fn running_pods(client: &Client, ns: &str, selector: &str) -> anyhow::Result<usize> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut running = 0;
    let mut params = ListParams::default().labels(selector).limit(5000);
    loop {
        let page = api.list(&params).await?;
        running += page
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok(running),
        }
    }
}

/// Background churn until `stop`: every tick one background pod is deleted and created again
/// (same name, same node), so watches see deletions, additions and KWOK's status updates.
pub async fn churn(
    client: Client,
    ns: String,
    m: usize,
    nodes: usize,
    per_second: u32,
    stop: CancellationToken,
) -> u64 {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    let mut done = 0u64;
    let mut i = 0usize;
    while !stop.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let name = format!("bg-{}", i % m.max(1));
        let node = node_name(i % m.max(1) % nodes.max(1));
        i += 7919; // a prime stride: the churned pods spread over the nodes
        let params = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        if api.delete(&name, &params).await.is_ok() {
            // Recreate once the name is free (KWOK finalizes the deletion within milliseconds).
            for _ in 0..50 {
                match api
                    .create(&PostParams::default(), &background_pod(&name, &node))
                    .await
                {
                    Ok(_) => {
                        done += 1;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }
    done
}

/// The naive design, written for the benchmark and not product code: each node's agent lists
/// and watches every pod of the cluster (no field selector) and keeps nothing it does not need
/// (so this process's memory does not limit how many it runs). Returns the events they saw and
/// how many finished their first list.
pub fn naive_watchers(
    client: Client,
    watchers: usize,
    stop: CancellationToken,
) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let events = Arc::new(AtomicU64::new(0));
    let listed = Arc::new(AtomicU64::new(0));
    for _ in 0..watchers {
        let api: Api<Pod> = Api::all(client.clone());
        let (events, listed, stop) = (events.clone(), listed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            let mut first = true;
            loop {
                tokio::select! {
                    e = stream.next() => match e {
                        Some(Ok(event)) => {
                            events.fetch_add(1, Ordering::Relaxed);
                            if first && matches!(event, watcher::Event::InitDone) {
                                first = false;
                                listed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Err(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                        None => break,
                    },
                    () = stop.cancelled() => break,
                }
            }
        });
    }
    (events, listed)
}
