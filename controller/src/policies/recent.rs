//! Recent actions and refusals per policy, for `status.recentActions` and `status.lastAction` of both
//! policy kinds. The reconcile stage records; the status writers read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use auto_agent_engine::decide::ActionKind;
use auto_agent_shared::crd::{ActionOutcome, ActionType, MAX_RECENT_ACTIONS, RecentAction};
use tokio::sync::Notify;

/// The policy an outcome belongs to: a namespaced AutoRemediationPolicy or a cluster-scoped
/// NodeRemediationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PolicyRef {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl PolicyRef {
    pub fn name(&self) -> &str {
        match self {
            Self::Namespaced { name, .. } | Self::Cluster { name } => name,
        }
    }

    /// `namespace/name` (namespaced) or `name` (cluster-scoped), as the ledger records policies.
    pub fn id(&self) -> String {
        match self {
            Self::Namespaced { namespace, name } => format!("{namespace}/{name}"),
            Self::Cluster { name } => name.clone(),
        }
    }
}

/// The CRD's spelling of an action.
pub fn action_type(kind: ActionKind) -> ActionType {
    match kind {
        ActionKind::RestartPod => ActionType::RestartPod,
        ActionKind::BumpMemory => ActionType::BumpMemory,
        ActionKind::MirrorImage => ActionType::MirrorImage,
        ActionKind::EvictPod => ActionType::EvictPod,
        ActionKind::CordonNode => ActionType::CordonNode,
        ActionKind::UncordonNode => ActionType::UncordonNode,
        ActionKind::ScaleUp => ActionType::ScaleUp,
        ActionKind::ScaleDown => ActionType::ScaleDown,
    }
}

/// One outcome to show in a policy's status.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub kind: ActionKind,
    pub outcome: ActionOutcome,
    pub target: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// Policy -> newest first.
type ByPolicy = HashMap<PolicyRef, VecDeque<RecentAction>>;

#[derive(Clone, Debug, Default)]
pub struct RecentActions {
    inner: Arc<Mutex<ByPolicy>>,
    /// Wakes the AutoRemediationPolicy status writer.
    namespaced_changed: Arc<Notify>,
    /// Wakes the NodeRemediationPolicy status writer.
    cluster_changed: Arc<Notify>,
}

impl RecentActions {
    pub fn new(namespaced_changed: Arc<Notify>, cluster_changed: Arc<Notify>) -> Self {
        Self {
            inner: Arc::default(),
            namespaced_changed,
            cluster_changed,
        }
    }

    /// Records what happened now under `policy`'s status (newest first, at most
    /// `MAX_RECENT_ACTIONS`).
    pub fn record(&self, policy: &PolicyRef, entry: &Entry<'_>) {
        let action = RecentAction {
            time: auto_agent_shared::clock::now_rfc3339(),
            action: action_type(entry.kind),
            outcome: entry.outcome,
            target: entry.target.to_owned(),
            reason: entry.reason.to_owned(),
            message: entry.message.to_owned(),
        };
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(policy.clone()).or_default();
        list.push_front(action);
        list.truncate(MAX_RECENT_ACTIONS);
        drop(map);
        match policy {
            PolicyRef::Namespaced { .. } => self.namespaced_changed.notify_one(),
            PolicyRef::Cluster { .. } => self.cluster_changed.notify_one(),
        }
    }

    pub fn get(&self, policy: &PolicyRef) -> Vec<RecentAction> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(policy)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_per_policy_and_kind_of_policy() {
        let recent = RecentActions::new(Arc::new(Notify::new()), Arc::new(Notify::new()));
        let arp = PolicyRef::Namespaced {
            namespace: "prod".into(),
            name: "api".into(),
        };
        let nrp = PolicyRef::Cluster { name: "api".into() };
        for i in 0..(MAX_RECENT_ACTIONS + 3) {
            let message = format!("restart {i}");
            recent.record(
                &arp,
                &Entry {
                    kind: ActionKind::RestartPod,
                    outcome: ActionOutcome::Executed,
                    target: "Deployment/prod/api",
                    reason: "RestartedPod",
                    message: &message,
                },
            );
        }
        recent.record(
            &nrp,
            &Entry {
                kind: ActionKind::CordonNode,
                outcome: ActionOutcome::Refused,
                target: "Node//n1",
                reason: "MaxUnavailable",
                message: "",
            },
        );
        let got = recent.get(&arp);
        assert_eq!(got.len(), MAX_RECENT_ACTIONS);
        assert_eq!(
            got[0].message,
            format!("restart {}", MAX_RECENT_ACTIONS + 2)
        );
        let node = recent.get(&nrp);
        assert_eq!(node.len(), 1);
        assert_eq!(node[0].action, ActionType::CordonNode);
        assert_eq!(arp.id(), "prod/api");
        assert_eq!(nrp.id(), "api");
    }
}
