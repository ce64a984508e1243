//! Scaling problems per policy, which the status writer shows as `Degraded=True` while scaling holds
//! for them (Prometheus not configured or failing, the feature off, no gate configured).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `(namespace, name)` of a policy.
type PolicyKey = (String, String);
/// A condition reason and message.
type Problem = (&'static str, String);

/// Scaling problems per policy (`namespace/name` -> (reason, message)), shown by the status
/// writer as `Degraded=True` while scaling holds for them.
#[derive(Clone, Debug)]
pub struct ScaleHealth {
    problems: Arc<Mutex<HashMap<PolicyKey, Problem>>>,
    /// Wakes the status writer when a problem appears or clears.
    changed: Arc<tokio::sync::Notify>,
}

impl ScaleHealth {
    pub fn new(changed: Arc<tokio::sync::Notify>) -> Self {
        Self {
            problems: Arc::default(),
            changed,
        }
    }

    pub fn set(&self, ns: &str, name: &str, problem: Option<(&'static str, String)>) {
        let mut map = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ns.to_owned(), name.to_owned());
        let before = match problem {
            Some(p) => map.insert(key.clone(), p),
            None => map.remove(&key),
        };
        if before.as_ref().map(|p| p.0) != map.get(&key).map(|p| p.0) {
            self.changed.notify_one();
        }
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<(&'static str, String)> {
        let map = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(ns.to_owned(), name.to_owned())).cloned()
    }
}
