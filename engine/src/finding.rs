//! The finding model: what a sensor observed on its node, independent of the wire format.

use serde::{Deserialize, Serialize};

/// The failure modes the agent knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FindingKind {
    CrashLoopBackOff,
    OomKilled,
    ImagePullBackOff,
    CreateContainerConfigError,
    PodEvicted,
    NodeMemoryPressure,
    NodeDiskPressure,
    NodePidPressure,
    NodeNotReady,
}

impl FindingKind {
    /// Every kind, for exhaustive tests and metric pre-registration.
    pub const ALL: [FindingKind; 9] = [
        Self::CrashLoopBackOff,
        Self::OomKilled,
        Self::ImagePullBackOff,
        Self::CreateContainerConfigError,
        Self::PodEvicted,
        Self::NodeMemoryPressure,
        Self::NodeDiskPressure,
        Self::NodePidPressure,
        Self::NodeNotReady,
    ];

    /// The stable name used in incident keys, metric labels and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::OomKilled => "OOMKilled",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::PodEvicted => "Evicted",
            Self::NodeMemoryPressure => "MemoryPressure",
            Self::NodeDiskPressure => "DiskPressure",
            Self::NodePidPressure => "PIDPressure",
            Self::NodeNotReady => "NotReady",
        }
    }

    /// Node findings concern the Node object; the others concern a pod.
    pub fn is_node(self) -> bool {
        matches!(
            self,
            Self::NodeMemoryPressure
                | Self::NodeDiskPressure
                | Self::NodePidPressure
                | Self::NodeNotReady
        )
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a condition began or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transition {
    Started,
    Cleared,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The controlling owner of a pod, resolved to the Deployment where a ReplicaSet sits between.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// One observation from one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Unique and stable across resends.
    pub id: String,
    pub node: String,
    pub kind: FindingKind,
    pub transition: Transition,
    /// `None` for node findings.
    pub pod: Option<PodRef>,
    /// `None` for node findings and bare pods.
    pub owner: Option<WorkloadRef>,
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
    pub restart_count: u32,
    pub exit_code: Option<i32>,
    pub image: Option<String>,
    /// Milliseconds since the Unix epoch, as observed by the sensor.
    pub observed_at_ms: i64,
    pub log_lines: Vec<String>,
    pub log_truncated: bool,
}

impl Finding {
    /// About how many bytes this finding holds in memory: its strings (the log tail dominates) and
    /// a fixed overhead for the struct and each line. For budgets, not for accounting.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 256;
        const PER_LINE: usize = 24;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let pod = self
            .pod
            .as_ref()
            .map_or(0, |p| p.namespace.len() + p.name.len() + p.uid.len());
        let owner = self
            .owner
            .as_ref()
            .map_or(0, |o| o.kind.len() + o.name.len());
        let logs: usize = self.log_lines.iter().map(|l| l.len() + PER_LINE).sum();
        FIXED
            + self.id.len()
            + self.node.len()
            + pod
            + owner
            + opt(&self.container)
            + self.reason.len()
            + self.message.len()
            + opt(&self.image)
            + logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_bytes_grows_with_the_log_tail() {
        let bare = crate::decide::rules::testing::finding(FindingKind::CrashLoopBackOff);
        let logged = Finding {
            log_lines: vec!["x".repeat(1_000); 10],
            ..bare.clone()
        };
        assert!(bare.approx_bytes() < 400, "{}", bare.approx_bytes());
        assert!(logged.approx_bytes() >= bare.approx_bytes() + 10_000);
    }
}
