//! Budgets over a sliding window of recorded actions. A budget of `max` per `window` behaves like a
//! token bucket of `max` tokens where each token returns `window` after it was spent; keeping the
//! spent tokens as records makes the state easy to persist (the controller keeps it in the cluster,
//! so a new leader sees what the old one did) and to explain ("3 of 3 restarts in the last hour").

use serde::{Deserialize, Serialize};

use super::ActionKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BudgetScope {
    /// One workload (or node).
    Target,
    /// Everything one policy governs.
    Policy,
    /// The whole cluster.
    Cluster,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimit {
    pub action: ActionKind,
    pub scope: BudgetScope,
    pub max: u32,
    pub window_ms: i64,
}

/// One action taken (or reserved right before it is taken).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub at_ms: i64,
    pub action: ActionKind,
    /// The workload or node, `Kind/namespace/name`.
    pub target: String,
    /// `namespace/name` of the policy that allowed it.
    pub policy: String,
    /// The incident key.
    pub incident: String,
}

/// Recent actions, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub records: Vec<ActionRecord>,
}

const HOUR_MS: i64 = 3_600_000;

/// Budgets that apply when a policy sets none for an action and scope.
pub fn default_budgets() -> Vec<BudgetLimit> {
    use ActionKind::*;
    use BudgetScope::*;
    vec![
        BudgetLimit {
            action: RestartPod,
            scope: Target,
            max: 3,
            window_ms: HOUR_MS,
        },
        BudgetLimit {
            action: RestartPod,
            scope: Policy,
            max: 10,
            window_ms: HOUR_MS,
        },
        BudgetLimit {
            action: BumpMemory,
            scope: Target,
            max: 2,
            window_ms: 24 * HOUR_MS,
        },
        BudgetLimit {
            action: MirrorImage,
            scope: Target,
            max: 1,
            window_ms: 24 * HOUR_MS,
        },
        BudgetLimit {
            action: EvictPod,
            scope: Policy,
            max: 10,
            window_ms: HOUR_MS,
        },
        BudgetLimit {
            action: CordonNode,
            scope: Policy,
            max: 2,
            window_ms: HOUR_MS,
        },
    ]
}

/// The policy's budgets, with defaults for every (action, scope) it does not set.
pub fn effective_budgets(policy_budgets: &[BudgetLimit]) -> Vec<BudgetLimit> {
    let mut out: Vec<BudgetLimit> = policy_budgets.to_vec();
    for d in default_budgets() {
        if !out
            .iter()
            .any(|b| b.action == d.action && b.scope == d.scope)
        {
            out.push(d);
        }
    }
    out
}

impl History {
    pub fn record(&mut self, r: ActionRecord) {
        self.records.push(r);
    }

    /// Actions counted against `limit` for this target and policy in the window ending at `now`.
    pub fn used(&self, limit: &BudgetLimit, target: &str, policy: &str, now_ms: i64) -> u32 {
        let since = now_ms - limit.window_ms;
        self.records
            .iter()
            .filter(|r| r.action == limit.action && r.at_ms > since && r.at_ms <= now_ms)
            .filter(|r| match limit.scope {
                BudgetScope::Target => r.target == target,
                BudgetScope::Policy => r.policy == policy,
                BudgetScope::Cluster => true,
            })
            .count() as u32
    }

    /// The first of `limits` for `action` that is used up for this target and policy, with its
    /// use; `None` when every budget has room.
    pub fn exhausted(
        &self,
        limits: impl IntoIterator<Item = BudgetLimit>,
        action: ActionKind,
        target: &str,
        policy: &str,
        now_ms: i64,
    ) -> Option<(BudgetLimit, u32)> {
        limits
            .into_iter()
            .filter(|l| l.action == action)
            .map(|l| (l, self.used(&l, target, policy, now_ms)))
            .find(|(l, used)| *used >= l.max)
    }

    /// When the last action for this incident was taken.
    pub fn last_for_incident(&self, incident: &str) -> Option<i64> {
        self.records
            .iter()
            .filter(|r| r.incident == incident)
            .map(|r| r.at_ms)
            .max()
    }

    /// How often `action` was taken for this incident since `since_ms`.
    pub fn repeats(&self, incident: &str, action: ActionKind, since_ms: i64) -> u32 {
        self.records
            .iter()
            .filter(|r| r.incident == incident && r.action == action && r.at_ms > since_ms)
            .count() as u32
    }

    /// Drops records older than `keep_ms` (longer than any budget window).
    pub fn prune(&mut self, now_ms: i64, keep_ms: i64) {
        self.records.retain(|r| r.at_ms > now_ms - keep_ms);
    }
}
