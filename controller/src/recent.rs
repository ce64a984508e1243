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

    pub fn get(&self, namespace: &str, policy: &str) -> Vec<RecentAction> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(namespace.to_owned(), policy.to_owned()))
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}
