//! Kubernetes objects -> the engine's compact views. The sensor keeps only these, so its memory does
//! not grow with the size of pod specs, managedFields or annotations.

use auto_agent_engine::detect::resolve_owner;
use auto_agent_engine::{
    ContainerState, ContainerView, NodeConditionView, NodeView, PodView, Terminated,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};

fn time(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<String> {
    t.map(|t| t.0.to_string())
}

fn terminated(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Terminated {
    Terminated {
        reason: t.reason.clone().unwrap_or_default(),
        exit_code: t.exit_code,
        message: t.message.clone().unwrap_or_default(),
        finished_at: time(t.finished_at.as_ref()),
    }
}

fn container(s: &ContainerStatus) -> ContainerView {
    let state = match &s.state {
        Some(st) if st.waiting.is_some() => {
            let w = st.waiting.as_ref();
            ContainerState::Waiting {
                reason: w.and_then(|w| w.reason.clone()).unwrap_or_default(),
                message: w.and_then(|w| w.message.clone()).unwrap_or_default(),
            }
        }
        Some(st) if st.running.is_some() => ContainerState::Running,
        Some(st) => st.terminated.as_ref().map_or(ContainerState::Unknown, |t| {
            ContainerState::Terminated(terminated(t))
        }),
        None => ContainerState::Unknown,
    };
    ContainerView {
        name: s.name.clone(),
        image: s.image.clone(),
        restart_count: u32::try_from(s.restart_count).unwrap_or_default(),
        ready: s.ready,
        state,
        last_terminated: s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .map(terminated),
    }
}

pub fn pod_view(pod: &Pod) -> PodView {
    let meta = &pod.metadata;
    let controller = meta
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)));
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .map(String::as_str);
    let status = pod.status.as_ref();
    let statuses = status.into_iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    PodView {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        owner: resolve_owner(
            controller.map(|c| c.kind.as_str()),
            controller.map(|c| c.name.as_str()),
            hash,
        ),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        reason: status.and_then(|s| s.reason.clone()),
        message: status.and_then(|s| s.message.clone()),
        containers: statuses.map(container).collect(),
    }
}

pub fn node_view(node: &Node) -> NodeView {
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        conditions: node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| NodeConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
                last_transition: time(c.last_transition_time.as_ref()).unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_view_resolves_the_deployment_and_reads_container_states() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "api-7d9c5b-x1", "namespace": "prod", "uid": "u1",
                "labels": {"pod-template-hash": "7d9c5b"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9c5b",
                                     "uid": "rs", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager"}],
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "img:1"}]},
            "status": {
                "phase": "Running",
                "initContainerStatuses": [{"name": "init", "image": "i", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "app", "image": "img:1", "imageID": "", "ready": false,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                 "finishedAt": "2026-01-01T00:00:00Z"}}}],
            },
        }))
        .unwrap();
        let v = pod_view(&pod);
        assert_eq!(
            v.owner.as_ref().map(|o| (o.kind.as_str(), o.name.as_str())),
            Some(("Deployment", "api"))
        );
        assert_eq!(v.node, "node-a");
        assert_eq!(v.containers.len(), 2);
        assert_eq!(v.containers[0].name, "init");
        let app = &v.containers[1];
        assert_eq!(app.restart_count, 4);
        assert_eq!(
            app.state,
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off".into()
            }
        );
        let last = app.last_terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_str()), (1, "Error"));
        assert_eq!(last.finished_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn node_view_keeps_conditions() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure",
                 "lastTransitionTime": "2026-01-01T00:01:00Z"},
            ]},
        }))
        .unwrap();
        let v = node_view(&node);
        let disk = v.condition("DiskPressure").unwrap();
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_str()),
            ("True", "KubeletHasDiskPressure")
        );
        assert_eq!(disk.last_transition, "2026-01-01T00:01:00Z");
    }
}
