//! Budgets over a sliding window of recorded actions. A budget of `max` per `window` behaves like a
//! token bucket of `max` tokens where each token returns `window` after it was spent; keeping the
//! spent tokens as records makes the state easy to persist (the controller keeps it in the cluster,
//! so a new leader sees what the old one did) and to explain ("3 of 3 restarts in the last hour").
//! The newest records are kept as they are; older ones are folded into tallies
//! (`decide::ledger`), which every query here counts as well, never fewer than the records they
//! replaced.

use serde::{Deserialize, Serialize};

use super::ActionKind;
use super::ledger::Folded;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BudgetScope {
    /// One workload (or node).
    Target,
    /// Every target in one namespace (nodes have none: all node actions share the empty one).
    Namespace,
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
    /// The target's namespace; empty for nodes, and in records written before it existed (then
    /// `target_namespace` reads it from `target`).
    #[serde(default)]
    pub namespace: String,
    /// `namespace/name` of the policy that allowed it.
    pub policy: String,
    /// The incident key.
    pub incident: String,
}

impl ActionRecord {
    /// The namespace its target lies in.
    pub fn target_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            namespace_of(&self.target)
        } else {
            &self.namespace
        }
    }
}

/// The namespace of a `Kind/namespace/name` target; empty for `Node//name` or anything else.
pub fn namespace_of(target: &str) -> &str {
    let mut parts = target.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(ns), Some(_)) => ns,
        _ => "",
    }
}

/// Recent actions: the newest as records, oldest first, and the older ones folded into tallies.
/// A ledger written before tallies existed (`{"records": [...]}`) reads as records only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub records: Vec<ActionRecord>,
    #[serde(default, skip_serializing_if = "Folded::is_empty")]
    pub folded: Folded,
}

/// What a count or a last time is taken over: the actions on one target, in one namespace, under
/// one policy, for one incident, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Target(&'a str),
    Namespace(&'a str),
    Policy(&'a str),
    Incident(&'a str),
    Cluster,
}

impl Key<'_> {
    /// The key a budget of `scope` counts for this target (`Kind/namespace/name`) and policy.
    pub fn for_budget<'a>(scope: BudgetScope, target: &'a str, policy: &'a str) -> Key<'a> {
        match scope {
            BudgetScope::Target => Key::Target(target),
            BudgetScope::Namespace => Key::Namespace(namespace_of(target)),
            BudgetScope::Policy => Key::Policy(policy),
            BudgetScope::Cluster => Key::Cluster,
        }
    }

    /// Whether the record is one of the actions this key covers.
    pub fn covers(&self, r: &ActionRecord) -> bool {
        match *self {
            Key::Target(t) => r.target == t,
            Key::Namespace(ns) => r.target_namespace() == ns,
            Key::Policy(p) => r.policy == p,
            Key::Incident(i) => r.incident == i,
            Key::Cluster => true,
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// Budgets that apply when a policy sets none for an action and scope. None is per namespace:
/// namespace budgets apply only where a policy or the cluster configuration sets them.
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

    /// Actions of one of `actions` under `key` taken in `(since_ms, now_ms]`: the records exactly,
    /// and every tally that may hold one (never fewer than were taken).
    pub fn count(&self, actions: &[ActionKind], key: Key<'_>, since_ms: i64, now_ms: i64) -> u32 {
        let exact = self
            .records
            .iter()
            .filter(|r| actions.contains(&r.action) && r.at_ms > since_ms && r.at_ms <= now_ms)
            .filter(|r| key.covers(r))
            .count();
        u32::try_from(exact)
            .unwrap_or(u32::MAX)
            .saturating_add(self.folded.count(actions, key, since_ms, now_ms))
    }

    /// When the last of `actions` under `key` was taken (a tally answers with its latest second,
    /// never earlier than the action).
    pub fn last(&self, actions: &[ActionKind], key: Key<'_>) -> Option<i64> {
        let exact = self
            .records
            .iter()
            .filter(|r| actions.contains(&r.action) && key.covers(r))
            .map(|r| r.at_ms)
            .max();
        exact.max(self.folded.last(actions, key))
    }

    /// Actions counted against `limit` for this target (`Kind/namespace/name`, which also names
    /// its namespace) and policy in the window ending at `now`.
    pub fn used(&self, limit: &BudgetLimit, target: &str, policy: &str, now_ms: i64) -> u32 {
        self.count(
            &[limit.action],
            Key::for_budget(limit.scope, target, policy),
            now_ms - limit.window_ms,
            now_ms,
        )
    }

    /// When the next action counted against `limit` leaves the window, so a token returns: the
    /// earliest `at + window` of the counted actions (a folded tally counts by its last second, so
    /// its refill is never shown early); `None` when nothing is counted.
    pub fn next_refill(
        &self,
        limit: &BudgetLimit,
        target: &str,
        policy: &str,
        now_ms: i64,
    ) -> Option<i64> {
        let key = Key::for_budget(limit.scope, target, policy);
        let since = now_ms - limit.window_ms;
        let exact = self
            .records
            .iter()
            .filter(|r| r.action == limit.action && r.at_ms > since && r.at_ms <= now_ms)
            .filter(|r| key.covers(r))
            .map(|r| r.at_ms)
            .min();
        let folded = (self.folded.count(&[limit.action], key, since, now_ms) > 0)
            .then(|| self.folded.last(&[limit.action], key))
            .flatten();
        exact
            .into_iter()
            .chain(folded)
            .min()
            .map(|at| at.saturating_add(limit.window_ms))
    }

    /// The first of `limits` for `action` that is used up for this target, its namespace and
    /// policy, or the cluster, with its use; `None` when every budget has room.
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
        self.last(&ActionKind::ALL, Key::Incident(incident))
    }

    /// How often `action` was taken for this incident since `since_ms`.
    pub fn repeats(&self, incident: &str, action: ActionKind, since_ms: i64) -> u32 {
        self.count(&[action], Key::Incident(incident), since_ms, i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::ledger::Tally;

    fn rec(
        at_ms: i64,
        action: ActionKind,
        target: &str,
        namespace: &str,
        policy: &str,
    ) -> ActionRecord {
        ActionRecord {
            at_ms,
            action,
            target: target.into(),
            namespace: namespace.into(),
            policy: policy.into(),
            incident: format!("i-{at_ms}"),
        }
    }

    fn limit(scope: BudgetScope, max: u32) -> BudgetLimit {
        BudgetLimit {
            action: ActionKind::RestartPod,
            scope,
            max,
            window_ms: HOUR_MS,
        }
    }

    #[test]
    fn namespace_of_targets() {
        let cases = [
            ("Deployment/prod/api", "prod"),
            ("Pod/dev/api-1", "dev"),
            ("Node//n1", ""),
            ("garbage", ""),
            ("", ""),
        ];
        for (target, want) in cases {
            assert_eq!(namespace_of(target), want, "{target}");
        }
        // An explicit namespace wins; an old record's comes from its target.
        let explicit = rec(
            0,
            ActionKind::RestartPod,
            "Deployment/prod/api",
            "other",
            "p",
        );
        assert_eq!(explicit.target_namespace(), "other");
        let old = rec(0, ActionKind::RestartPod, "Deployment/prod/api", "", "p");
        assert_eq!(old.target_namespace(), "prod");
    }

    #[test]
    fn old_ledgers_without_namespace_still_load() {
        let json = r#"{"at_ms":1,"action":"RestartPod","target":"Deployment/prod/api","policy":"prod/p","incident":"i"}"#;
        let r: ActionRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.namespace, "");
        assert_eq!(r.target_namespace(), "prod");
    }

    #[test]
    fn each_scope_counts_its_records() {
        use ActionKind::{BumpMemory, RestartPod};
        let now = 10 * HOUR_MS;
        let h = History {
            records: vec![
                rec(
                    now - 1,
                    RestartPod,
                    "Deployment/prod/api",
                    "prod",
                    "prod/p1",
                ),
                // Written before records named their namespace.
                rec(now - 2, RestartPod, "Deployment/prod/web", "", "prod/p2"),
                rec(now - 3, RestartPod, "Deployment/dev/api", "dev", "prod/p1"),
                rec(now - 4, RestartPod, "Node//n1", "", "nodes"),
                // Another action, and one outside the window: never counted.
                rec(
                    now - 5,
                    BumpMemory,
                    "Deployment/prod/api",
                    "prod",
                    "prod/p1",
                ),
                rec(
                    now - HOUR_MS,
                    RestartPod,
                    "Deployment/prod/api",
                    "prod",
                    "prod/p1",
                ),
            ],
            ..History::default()
        };
        // The same actions folded into tallies count the same.
        let mut folded = History::default();
        for r in &h.records {
            folded.folded.add(r.action, Tally::of(r));
        }
        // (scope, target, policy, used)
        let cases = [
            (BudgetScope::Target, "Deployment/prod/api", "prod/p1", 1),
            (BudgetScope::Namespace, "Deployment/prod/api", "prod/p1", 2),
            (BudgetScope::Namespace, "Pod/prod/api-7", "x/y", 2),
            (BudgetScope::Namespace, "Deployment/dev/other", "prod/p1", 1),
            (
                BudgetScope::Namespace,
                "Deployment/staging/api",
                "prod/p1",
                0,
            ),
            (BudgetScope::Namespace, "Node//n2", "nodes", 1),
            (BudgetScope::Policy, "Deployment/prod/api", "prod/p1", 2),
            (BudgetScope::Policy, "Deployment/prod/api", "prod/p2", 1),
            (BudgetScope::Cluster, "Deployment/staging/api", "x/y", 4),
        ];
        for ((scope, target, policy, want), h) in
            cases.into_iter().flat_map(|c| [(c, &h), (c, &folded)])
        {
            assert_eq!(
                h.used(&limit(scope, 10), target, policy, now),
                want,
                "{scope:?} {target} {policy}"
            );
            // Exhausted exactly when the use reaches the limit.
            let at_limit = h.exhausted([limit(scope, want)], RestartPod, target, policy, now);
            assert_eq!(
                at_limit.map(|(_, used)| used),
                Some(want),
                "{scope:?} {target}"
            );
            let room = h.exhausted([limit(scope, want + 1)], RestartPod, target, policy, now);
            assert_eq!(room, None, "{scope:?} {target}");
        }
    }

    #[test]
    fn the_next_refill_is_when_the_oldest_counted_action_leaves_the_window() {
        let limit = BudgetLimit {
            action: ActionKind::RestartPod,
            scope: BudgetScope::Target,
            max: 3,
            window_ms: 1_000,
        };
        let t = "Deployment/prod/api";
        type Actions<'a> = &'a [(i64, &'a str, ActionKind)];
        let cases: &[(Actions, i64, Option<i64>)] = &[
            (&[], 5_000, None),
            // Oldest in the window wins; one outside it and others' actions do not count.
            (
                &[
                    (3_900, t, ActionKind::RestartPod),
                    (4_200, t, ActionKind::RestartPod),
                    (4_600, t, ActionKind::RestartPod),
                    (4_100, "Deployment/prod/web", ActionKind::RestartPod),
                    (4_150, t, ActionKind::BumpMemory),
                ],
                5_000,
                Some(5_200),
            ),
            (&[(3_000, t, ActionKind::RestartPod)], 5_000, None),
        ];
        for (records, now, want) in cases {
            let mut h = History::default();
            for (at, target, action) in records.iter() {
                h.record(rec(*at, *action, target, "prod", "prod/p"));
            }
            assert_eq!(
                h.next_refill(&limit, t, "prod/p", *now),
                *want,
                "{records:?}"
            );
        }
    }
}
