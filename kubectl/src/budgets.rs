//! `budgets`: for each policy's budgets (its own and the defaults it did not set) and the cluster's,
//! what is used and what remains in the window now, and when the next action leaves the window.
//! Counted from the ledger by the engine's own `History`, as the controller counts them.

use std::collections::BTreeSet;

use auto_agent_controller::policies::index::{PolicyEntry, policy_view};
use auto_agent_engine::decide::History;
use auto_agent_engine::decide::budget::{BudgetLimit, BudgetScope, effective_budgets};
use serde::Serialize;

use crate::output::{Render, age, table, time};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRow {
    /// `namespace/name`, or `(cluster)`.
    pub policy: String,
    pub action: String,
    pub scope: String,
    /// What the budget counts: a workload, a namespace, the policy, or the cluster.
    pub subject: String,
    pub used: u32,
    pub max: u32,
    pub remaining: u32,
    pub window_seconds: i64,
    /// When the next token returns (RFC 3339), if any is spent.
    pub refills_at: Option<String>,
    /// How long until then.
    pub refills_in: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budgets {
    pub rows: Vec<BudgetRow>,
    /// Where the cluster budgets came from.
    pub cluster_budgets_from: String,
}

fn scope_name(s: BudgetScope) -> &'static str {
    match s {
        BudgetScope::Target => "Target",
        BudgetScope::Namespace => "Namespace",
        BudgetScope::Policy => "Policy",
        BudgetScope::Cluster => "Cluster",
    }
}

fn row(
    policy: &str,
    limit: &BudgetLimit,
    subject: &str,
    target: &str,
    history: &History,
    now_ms: i64,
) -> BudgetRow {
    let used = history.used(limit, target, policy, now_ms);
    let refill = history.next_refill(limit, target, policy, now_ms);
    BudgetRow {
        policy: if policy.is_empty() {
            "(cluster)".into()
        } else {
            policy.to_owned()
        },
        action: limit.action.as_str().to_owned(),
        scope: scope_name(limit.scope).to_owned(),
        subject: subject.to_owned(),
        used,
        max: limit.max,
        remaining: limit.max.saturating_sub(used),
        window_seconds: limit.window_ms / 1000,
        refills_at: refill.map(time),
        refills_in: refill.map(|t| age(t - now_ms)),
    }
}

/// The rows for these policies (each with its effective budgets) and the cluster's budgets.
/// A per-target budget gets a row for every workload the ledger shows under that policy and
/// action, else one row for "each workload" with nothing used.
pub fn rows(
    policies: &[PolicyEntry],
    cluster: &[BudgetLimit],
    history: &History,
    now_ms: i64,
) -> Vec<BudgetRow> {
    let mut out = Vec::new();
    for p in policies {
        let Some(view) = policy_view(p) else { continue };
        let id = format!("{}/{}", p.namespace, p.name);
        for limit in effective_budgets(&view.budgets) {
            // Node actions belong to NodeRemediationPolicies.
            if matches!(limit.action.as_str(), "CordonNode" | "UncordonNode") {
                continue;
            }
            match limit.scope {
                BudgetScope::Target => {
                    let targets: BTreeSet<&str> = history
                        .records
                        .iter()
                        .filter(|r| r.policy == id && r.action == limit.action)
                        .map(|r| r.target.as_str())
                        .chain(
                            history
                                .folded
                                .0
                                .get(&limit.action)
                                .into_iter()
                                .flatten()
                                .filter(|t| t.policy == id)
                                .map(|t| t.target.as_str()),
                        )
                        .collect();
                    if targets.is_empty() {
                        out.push(row(&id, &limit, "each workload", "", history, now_ms));
                    }
                    for t in targets {
                        out.push(row(&id, &limit, t, t, history, now_ms));
                    }
                }
                BudgetScope::Namespace => {
                    let target = format!("Namespace/{}/-", p.namespace);
                    out.push(row(&id, &limit, &p.namespace, &target, history, now_ms));
                }
                BudgetScope::Policy => out.push(row(&id, &limit, &id, "", history, now_ms)),
                BudgetScope::Cluster => out.push(row(&id, &limit, "cluster", "", history, now_ms)),
            }
        }
    }
    for limit in cluster {
        out.push(row("", limit, "cluster", "", history, now_ms));
    }
    out
}

impl Render for Budgets {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.policy.clone(),
                    r.action.clone(),
                    r.scope.clone(),
                    r.subject.clone(),
                    format!("{}/{}", r.used, r.max),
                    r.remaining.to_string(),
                    age(r.window_seconds * 1000),
                    r.refills_in
                        .clone()
                        .map_or("-".into(), |d| format!("in {d}")),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "POLICY",
                "ACTION",
                "SCOPE",
                "FOR",
                "USED",
                "LEFT",
                "WINDOW",
                "NEXT REFILL",
            ],
            &rows,
        );
        out.push_str(&format!(
            "\ncluster budgets from {}\n",
            self.cluster_budgets_from
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::decide::{ActionKind, ActionRecord};
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> PolicyEntry {
        let obj = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                         "metadata": {"name": "p", "namespace": "shop"}, "spec": spec});
        auto_agent_controller::policies::index::entry(serde_json::from_value(obj).unwrap())
    }

    fn restart(at_ms: i64, target: &str) -> ActionRecord {
        ActionRecord {
            at_ms,
            action: ActionKind::RestartPod,
            target: target.into(),
            namespace: "shop".into(),
            policy: "shop/p".into(),
            incident: "k".into(),
        }
    }

    #[test]
    fn used_left_and_refill_per_target_policy_and_cluster() {
        let hour = 3_600_000;
        let now = 10 * hour;
        let mut history = History::default();
        for at in [now - 50 * 60_000, now - 20 * 60_000, now - 2 * hour] {
            history.record(restart(at, "Deployment/shop/api"));
        }
        let p = policy(
            json!({"targetSelector": {}, "actions": {"restartStuckPods": true},
            "budgets": [{"action": "RestartPod", "scope": "Target", "max": 2, "windowSeconds": 3600}]}),
        );
        let cluster = vec![BudgetLimit {
            action: ActionKind::RestartPod,
            scope: BudgetScope::Cluster,
            max: 50,
            window_ms: hour,
        }];
        let rows = rows(&[p], &cluster, &history, now);
        let find = |action: &str, scope: &str, subject: &str| {
            rows.iter()
                .find(|r| {
                    r.action == action
                        && r.scope == scope
                        && r.subject == subject
                        && (scope == "Cluster") == (r.policy == "(cluster)")
                })
                .unwrap_or_else(|| panic!("{action} {scope} {subject} in {rows:#?}"))
                .clone()
        };
        let target = find("RestartPod", "Target", "Deployment/shop/api");
        assert_eq!(
            (target.used, target.max, target.remaining),
            (2, 2, 0),
            "the policy's own budget, the old one out"
        );
        assert_eq!(
            target.refills_in.as_deref(),
            Some("10m"),
            "the oldest in the window leaves in 10 minutes"
        );
        let by_policy = find("RestartPod", "Policy", "shop/p");
        assert_eq!(
            (by_policy.used, by_policy.max),
            (2, 10),
            "the default per-policy budget"
        );
        let memory = find("BumpMemory", "Target", "each workload");
        assert_eq!(
            (memory.used, memory.remaining, memory.refills_at.clone()),
            (0, 2, None)
        );
        let whole = find("RestartPod", "Cluster", "cluster");
        assert_eq!((whole.used, whole.max), (2, 50));
        assert!(
            rows.iter().all(|r| r.action != "CordonNode"),
            "node budgets are not a workload policy's"
        );
    }
}
