//! Recent actions and refusals per policy, for `status.recentActions` and `status.lastAction`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use auto_agent_shared::crd::{MAX_RECENT_ACTIONS, RecentAction};
use tokio::sync::Notify;

/// (namespace, policy name) -> newest first.
type ByPolicy = HashMap<(String, String), VecDeque<RecentAction>>;

#[derive(Clone, Debug, Default)]
pub struct RecentActions {
    inner: Arc<Mutex<ByPolicy>>,
    changed: Arc<Notify>,
}

impl RecentActions {
    pub fn new(changed: Arc<Notify>) -> Self {
        Self {
            inner: Arc::default(),
            changed,
        }
    }

    /// Newest first, at most `MAX_RECENT_ACTIONS`.
    pub fn push(&self, namespace: &str, policy: &str, action: RecentAction) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let list = map
            .entry((namespace.to_owned(), policy.to_owned()))
            .or_default();
        list.push_front(action);
        list.truncate(MAX_RECENT_ACTIONS);
        drop(map);
        self.changed.notify_one();
    }

    /// Records what happened now under `policy`'s status.
    pub fn record(
        &self,
        policy: &crate::policies::PolicyEntry,
        kind: auto_agent_engine::decide::ActionKind,
        outcome: auto_agent_shared::crd::ActionOutcome,
        target: &str,
        reason: &str,
        message: &str,
    ) {
        self.push(
            &policy.namespace,
            &policy.name,
            RecentAction {
                time: auto_agent_shared::clock::now_rfc3339(),
                action: crate::report::action_type(kind),
                outcome,
                target: target.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
        );
    }

    pub fn get(&self, namespace: &str, policy: &str) -> Vec<RecentAction> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(namespace.to_owned(), policy.to_owned()))
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}
