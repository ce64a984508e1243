//! Put pods and nodes into the failure states the agent remediates, exactly as a kubelet would
//! report them, by writing their status subresource. kwok's default stages are kept away from a
//! held object (label `scenario.autoagent.io/hold`), so the status stays as set.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::Cluster;

/// Keeps kwok's default stages (pod-ready, node heartbeat) from resetting a scenario's status.
pub const HOLD_LABEL: &str = "scenario.autoagent.io/hold";

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// Pod conditions of a scheduled pod whose containers are not ready.
fn not_ready_conditions() -> Value {
    let t = now();
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t},
        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": t},
    ])
}

async fn hold(api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {HOLD_LABEL: "true"}}})),
    )
    .await?;
    Ok(())
}

/// Container statuses: `target` (the first container when `None`) gets `status`, the others run.
fn container_statuses(
    pod: &Pod,
    target: Option<&str>,
    status: impl Fn(&str, &str) -> Value,
) -> anyhow::Result<Value> {
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let target = target.unwrap_or(
        spec.containers
            .first()
            .map(|c| c.name.as_str())
            .unwrap_or_default(),
    );
    if !spec.containers.iter().any(|c| c.name == target) {
        bail!("pod has no container {target}");
    }
    let t = now();
    Ok(Value::Array(
        spec.containers
            .iter()
            .map(|c| {
                let image = c.image.clone().unwrap_or_default();
                if c.name == target {
                    status(&c.name, &image)
                } else {
                    json!({"name": c.name, "image": image, "imageID": "", "ready": true, "started": true,
                           "restartCount": 0, "state": {"running": {"startedAt": t}}})
                }
            })
            .collect(),
    ))
}

async fn patch_pod_status(api: &Api<Pod>, name: &str, status: Value) -> anyhow::Result<Pod> {
    Ok(api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?)
}

/// CrashLoopBackOff: waiting with reason CrashLoopBackOff, last state terminated with `exit_code` and
/// reason Error, `restart_count` restarts. Call again with a higher count to make it rise.
pub async fn crash_loop(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    restart_count: i32,
    exit_code: i32,
) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let current = api.get(pod).await?;
    let uid = current.metadata.uid.clone().unwrap_or_default();
    let t = now();
    let statuses = container_statuses(&current, container, |name, image| {
        json!({
            "name": name, "image": image, "imageID": "", "ready": false, "started": false,
            "restartCount": restart_count,
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off 40s restarting failed container={name} pod={pod}_{namespace}({uid})")}},
            "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error", "startedAt": t, "finishedAt": t,
                "containerID": format!("kwok://{uid}-{name}-{restart_count}")}},
        })
    })?;
    patch_pod_status(
        &api,
        pod,
        json!({"phase": "Running", "conditions": not_ready_conditions(), "containerStatuses": statuses}),
    )
    .await
}

/// OOMKilled: the container was killed for memory (exit code 137, reason OOMKilled) and restarted.
pub async fn oom_killed(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    restart_count: i32,
) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let current = api.get(pod).await?;
    let uid = current.metadata.uid.clone().unwrap_or_default();
    let t = now();
    let statuses = container_statuses(&current, container, |name, image| {
        json!({
            "name": name, "image": image, "imageID": "", "ready": true, "started": true,
            "restartCount": restart_count,
            "state": {"running": {"startedAt": t}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": t, "finishedAt": t,
                "containerID": format!("kwok://{uid}-{name}-{restart_count}")}},
        })
    })?;
    patch_pod_status(
        &api,
        pod,
        json!({"phase": "Running", "containerStatuses": statuses}),
    )
    .await
}

/// The ways a container can fail to start while its pod stays Pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFailure {
    ImagePullBackOff,
    ErrImagePull,
    CreateContainerConfigError,
}

impl StartFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::ErrImagePull => "ErrImagePull",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
        }
    }
}

/// The pod stays Pending with its container waiting for `failure`.
pub async fn start_failure(
    client: &Client,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    failure: StartFailure,
) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    hold(&api, pod).await?;
    let current = api.get(pod).await?;
    let statuses = container_statuses(&current, container, |name, image| {
        let message = match failure {
            StartFailure::ImagePullBackOff => format!("Back-off pulling image \"{image}\""),
            StartFailure::ErrImagePull => {
                format!("failed to pull and unpack image \"{image}\": not found")
            }
            StartFailure::CreateContainerConfigError => {
                "secret \"app-credentials\" not found".to_owned()
            }
        };
        json!({"name": name, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 0,
               "state": {"waiting": {"reason": failure.reason(), "message": message}}})
    })?;
    patch_pod_status(
        &api,
        pod,
        json!({"phase": "Pending", "conditions": not_ready_conditions(), "containerStatuses": statuses}),
    )
    .await
}

/// Node conditions a scenario can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePressure {
    Memory,
    Disk,
    Pid,
}

impl NodePressure {
    pub fn condition_type(self) -> &'static str {
        match self {
            Self::Memory => "MemoryPressure",
            Self::Disk => "DiskPressure",
            Self::Pid => "PIDPressure",
        }
    }
    fn reason(self, active: bool) -> &'static str {
        match (self, active) {
            (Self::Memory, true) => "KubeletHasInsufficientMemory",
            (Self::Memory, false) => "KubeletHasSufficientMemory",
            (Self::Disk, true) => "KubeletHasDiskPressure",
            (Self::Disk, false) => "KubeletHasNoDiskPressure",
            (Self::Pid, true) => "KubeletHasInsufficientPID",
            (Self::Pid, false) => "KubeletHasSufficientPID",
        }
    }
}

/// Sets (`active`) or clears a pressure condition on a node. While any pressure is set the node is
/// held, so kwok's heartbeat does not reset it; clearing releases the hold.
pub async fn node_pressure(
    client: &Client,
    node: &str,
    pressure: NodePressure,
    active: bool,
) -> anyhow::Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    if active {
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {HOLD_LABEL: "true"}}})),
        )
        .await?;
    }
    let t = now();
    let condition = json!({
        "type": pressure.condition_type(),
        "status": if active { "True" } else { "False" },
        "reason": pressure.reason(active),
        "message": format!("scenario set {} to {active}", pressure.condition_type()),
        "lastHeartbeatTime": t,
        "lastTransitionTime": t,
    });
    let node_obj = api
        .patch_status(
            node,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [condition]}})),
        )
        .await?;
    if !active {
        let still_held = node_obj
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_.ends_with("Pressure") && c.status == "True")
            });
        if !still_held {
            api.patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {HOLD_LABEL: null}}})),
            )
            .await?;
        }
    }
    Ok(node_obj)
}

/// Seeds the logs of a crash-looping container as a real kubelet keeps them (seen on the real
/// node, e2e/tests/real_node.rs): while the container waits in back-off after `restart_count`
/// restarts, its failed run is the newest attempt, `<dir>/<ns>_<pod>_<uid>/<container>/
/// <restart_count>.log` in CRI format, and older attempts' files are gone. A kwok `Logs` object
/// makes the apiserver's `pods/log --previous` (and `kubectl logs --previous`) serve that run and
/// `pods/log` serve `current`, from a file outside the node's directory. Returns the pod-log root.
pub async fn seed_logs(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    container: &str,
    restart_count: u32,
    previous: &[&str],
    current: &[&str],
) -> anyhow::Result<PathBuf> {
    let client = cluster.admin().await?;
    let uid = pod_uid(&client, namespace, pod).await?;
    let root = cluster.state_dir().join("pod-logs");
    let pod_dir = format!("{namespace}_{pod}_{uid}");
    let dir = root.join(&pod_dir).join(container);
    let current_dir = cluster
        .state_dir()
        .join("current-logs")
        .join(&pod_dir)
        .join(container);
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&current_dir)?;
    let cri = |lines: &[&str]| -> String {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("2026-01-01T00:00:{:02}.000000000Z stdout F {l}\n", i % 60))
            .collect()
    };
    let previous_file = dir.join(format!("{restart_count}.log"));
    let current_file = current_dir.join(format!("{restart_count}.log"));
    std::fs::write(&previous_file, cri(previous))?;
    std::fs::write(&current_file, cri(current))?;

    serve_logs(
        client,
        namespace,
        pod,
        container,
        &current_file,
        &previous_file,
    )
    .await?;
    Ok(root)
}

async fn pod_uid(client: &Client, namespace: &str, pod: &str) -> anyhow::Result<String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await?
        .metadata
        .uid
        .context("pod has no uid")
}

/// Points the apiserver's `pods/log` of the container (through kwok's `Logs` object) at these files.
async fn serve_logs(
    client: Client,
    namespace: &str,
    pod: &str,
    container: &str,
    current_file: &Path,
    previous_file: &Path,
) -> anyhow::Result<()> {
    let gvk = GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "logs"),
    );
    let logs = json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"logs": [{
            "containers": [container],
            "logsFile": current_file,
            "previousLogsFile": previous_file,
        }]},
    });
    api.patch(
        pod,
        &PatchParams::apply("auto-agent-e2e").force(),
        &Patch::Apply(logs),
    )
    .await?;
    Ok(())
}

/// After [`seed_logs`]: the apiserver's `pods/log --previous` serves `api_previous` from a file
/// outside the node's pod-log directory, and the node's previous-log file is kept (`keep_file`)
/// or removed. A test can then tell which path a previous log was read from.
pub async fn split_previous_log(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    container: &str,
    restart_count: u32,
    api_previous: &[&str],
    keep_file: bool,
) -> anyhow::Result<()> {
    let client = cluster.admin().await?;
    let uid = pod_uid(&client, namespace, pod).await?;
    let name = format!("{restart_count}.log");
    let node_file = cluster
        .state_dir()
        .join("pod-logs")
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
        .join(&name);
    let api_dir = cluster
        .state_dir()
        .join("api-logs")
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(container);
    std::fs::create_dir_all(&api_dir)?;
    let api_file = api_dir.join(name);
    let text: String = api_previous
        .iter()
        .map(|l| format!("2026-01-01T00:00:00.000000000Z stdout F {l}\n"))
        .collect();
    std::fs::write(&api_file, text)?;
    if !keep_file {
        std::fs::remove_file(&node_file)?;
    }
    serve_logs(client, namespace, pod, container, &api_file, &api_file).await
}

/// The merge patch that undoes a cordon by the agent (unschedulable, its annotation and label).
pub fn uncordon_patch() -> serde_json::Value {
    json!({"metadata": {"annotations": {"autoagent.io/cordoned-by": null},
                        "labels": {"autoagent.io/cordoned": null}},
           "spec": {"unschedulable": false}})
}

/// Evicted by the kubelet: phase Failed, reason Evicted.
pub async fn evicted(client: &Client, namespace: &str, pod: &str) -> anyhow::Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    hold(&api, pod).await?;
    patch_pod_status(
        &api,
        pod,
        json!({"phase": "Failed", "reason": "Evicted",
               "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi."}),
    )
    .await
}
