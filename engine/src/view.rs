//! Compact views of pods and nodes: what detection needs and nothing else. Adapters build them from
//! Kubernetes objects; the sensor keeps only these in memory, never whole objects.

use serde::{Deserialize, Serialize};

use crate::finding::WorkloadRef;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// The controlling workload (see [`crate::detect::resolve_owner`]); `None` for a bare pod.
    pub owner: Option<WorkloadRef>,
    pub phase: String,
    /// `status.reason`, e.g. `Evicted`.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Init containers first, then app containers.
    pub containers: Vec<ContainerView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub restart_count: u32,
    pub ready: bool,
    pub state: ContainerState,
    /// `lastState.terminated`.
    pub last_terminated: Option<Terminated>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running,
    Terminated(Terminated),
    /// No state reported yet.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub reason: String,
    pub exit_code: i32,
    pub message: String,
    /// RFC 3339, as reported; distinguishes two terminations with the same restart count.
    pub finished_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub conditions: Vec<NodeConditionView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConditionView {
    /// `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`, ...
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339 `lastTransitionTime`; makes node finding ids stable across sensor restarts.
    pub last_transition: String,
}

impl NodeView {
    pub fn condition(&self, type_: &str) -> Option<&NodeConditionView> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
