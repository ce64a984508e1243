//! What a plan changes, typed: the controller executes these payloads as they are, without parsing
//! `Kind/namespace/name` strings back.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ActionKind;
use crate::finding::Finding;

/// One pod. `uid` guards a delete against a pod recreated under the same name; empty when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTarget {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodTarget {
    /// The finding's pod; `None` for node findings.
    pub fn of_finding(f: &Finding) -> Option<Self> {
        f.pod.as_ref().map(|p| Self {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        })
    }
}

impl fmt::Display for PodTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pod/{}/{}", self.namespace, self.name)
    }
}

/// A workload (`Deployment`, `StatefulSet`, ...), or a bare pod as kind `Pod`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadTarget {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl WorkloadTarget {
    /// The pod's owner, or the pod itself when it has none; `None` for node findings.
    pub fn of_finding(f: &Finding) -> Option<Self> {
        let pod = f.pod.as_ref()?;
        let (kind, name) = match &f.owner {
            Some(o) => (o.kind.clone(), o.name.clone()),
            None => ("Pod".to_owned(), pod.name.clone()),
        };
        Some(Self {
            kind,
            namespace: pod.namespace.clone(),
            name,
        })
    }
}

impl fmt::Display for WorkloadTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// A byte quantity before and after a change; `from` is `None` when it was not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesChange {
    pub from: Option<u64>,
    pub to: u64,
}

/// What an action changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Pod(PodTarget),
    Workload(WorkloadTarget),
    Node(String),
}

impl Target {
    /// The namespace; empty for a node.
    pub fn namespace(&self) -> &str {
        match self {
            Self::Pod(p) => &p.namespace,
            Self::Workload(w) => &w.namespace,
            Self::Node(_) => "",
        }
    }
}

/// The ledger's format: `Pod/ns/name`, `Deployment/ns/name`, `Node//name`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(p) => p.fmt(f),
            Self::Workload(w) => w.fmt(f),
            Self::Node(n) => write!(f, "Node//{n}"),
        }
    }
}

/// One step of a plan, with everything needed to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action")]
pub enum PlannedAction {
    RestartPod {
        pod: PodTarget,
        reason: String,
    },
    BumpMemory {
        workload: WorkloadTarget,
        container: String,
        limit: BytesChange,
        request: Option<BytesChange>,
        reason: String,
    },
    MirrorImage {
        workload: WorkloadTarget,
        container: String,
        from: String,
        to: String,
        reason: String,
    },
    CordonNode {
        node: String,
        reason: String,
    },
    EvictPod {
        pod: PodTarget,
        reason: String,
    },
    UncordonNode {
        node: String,
        reason: String,
    },
    Scale {
        workload: WorkloadTarget,
        from: i32,
        to: i32,
        reason: String,
    },
}

impl PlannedAction {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::RestartPod { .. } => ActionKind::RestartPod,
            Self::BumpMemory { .. } => ActionKind::BumpMemory,
            Self::MirrorImage { .. } => ActionKind::MirrorImage,
            Self::CordonNode { .. } => ActionKind::CordonNode,
            Self::EvictPod { .. } => ActionKind::EvictPod,
            Self::UncordonNode { .. } => ActionKind::UncordonNode,
            Self::Scale { from, to, .. } if to > from => ActionKind::ScaleUp,
            Self::Scale { .. } => ActionKind::ScaleDown,
        }
    }

    pub fn target(&self) -> Target {
        match self {
            Self::RestartPod { pod, .. } | Self::EvictPod { pod, .. } => Target::Pod(pod.clone()),
            Self::BumpMemory { workload, .. }
            | Self::MirrorImage { workload, .. }
            | Self::Scale { workload, .. } => Target::Workload(workload.clone()),
            Self::CordonNode { node, .. } | Self::UncordonNode { node, .. } => {
                Target::Node(node.clone())
            }
        }
    }

    /// Why, for Events and logs.
    pub fn reason(&self) -> &str {
        match self {
            Self::RestartPod { reason, .. }
            | Self::BumpMemory { reason, .. }
            | Self::MirrorImage { reason, .. }
            | Self::CordonNode { reason, .. }
            | Self::EvictPod { reason, .. }
            | Self::UncordonNode { reason, .. }
            | Self::Scale { reason, .. } => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodTarget {
        PodTarget {
            namespace: "prod".into(),
            name: "api-1".into(),
            uid: "u1".into(),
        }
    }

    fn workload() -> WorkloadTarget {
        WorkloadTarget {
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "api".into(),
        }
    }

    fn scale(from: i32, to: i32, reason: &str) -> PlannedAction {
        PlannedAction::Scale {
            workload: workload(),
            from,
            to,
            reason: reason.into(),
        }
    }

    #[test]
    fn kind_target_and_reason_of_each_action() {
        let r = || "why".to_owned();
        let cases = [
            (
                PlannedAction::RestartPod {
                    pod: pod(),
                    reason: r(),
                },
                ActionKind::RestartPod,
                "Pod/prod/api-1",
            ),
            (
                PlannedAction::BumpMemory {
                    workload: workload(),
                    container: "app".into(),
                    limit: BytesChange {
                        from: Some(1),
                        to: 2,
                    },
                    request: None,
                    reason: r(),
                },
                ActionKind::BumpMemory,
                "Deployment/prod/api",
            ),
            (
                PlannedAction::MirrorImage {
                    workload: workload(),
                    container: "app".into(),
                    from: "a".into(),
                    to: "b".into(),
                    reason: r(),
                },
                ActionKind::MirrorImage,
                "Deployment/prod/api",
            ),
            (
                PlannedAction::CordonNode {
                    node: "n1".into(),
                    reason: r(),
                },
                ActionKind::CordonNode,
                "Node//n1",
            ),
            (
                PlannedAction::EvictPod {
                    pod: pod(),
                    reason: r(),
                },
                ActionKind::EvictPod,
                "Pod/prod/api-1",
            ),
            (
                PlannedAction::UncordonNode {
                    node: "n1".into(),
                    reason: r(),
                },
                ActionKind::UncordonNode,
                "Node//n1",
            ),
            (
                scale(2, 3, "why"),
                ActionKind::ScaleUp,
                "Deployment/prod/api",
            ),
            (
                scale(3, 2, "why"),
                ActionKind::ScaleDown,
                "Deployment/prod/api",
            ),
        ];
        for (action, kind, target) in cases {
            assert_eq!(action.kind(), kind, "{action:?}");
            assert_eq!(action.target().to_string(), target, "{action:?}");
            assert_eq!(action.reason(), "why", "{action:?}");
        }
    }

    #[test]
    fn target_namespaces() {
        assert_eq!(Target::Pod(pod()).namespace(), "prod");
        assert_eq!(Target::Workload(workload()).namespace(), "prod");
        assert_eq!(Target::Node("n1".into()).namespace(), "");
    }

    #[test]
    fn serialised_with_an_action_tag() {
        let json = serde_json::to_value(scale(2, 4, "cpu")).unwrap();
        assert_eq!(json["action"], "Scale");
        assert_eq!(json["workload"]["kind"], "Deployment");
        assert_eq!(json["to"], 4);
        let back: PlannedAction = serde_json::from_value(json).unwrap();
        assert_eq!(back, scale(2, 4, "cpu"));
    }
}
