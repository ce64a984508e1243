//! Scaling through the safety rules that apply to it: feature gating, opt-out and budgets of every
//! scope, in that order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use auto_agent_engine::decide::scale_admission::{ScaleAdmission, admit};
use auto_agent_engine::decide::{
    ActionKind, ActionRecord, AllowedActions, BudgetLimit, BudgetScope, History, PlannedAction,
    RefusalReason, WorkloadTarget,
};

const HOUR: i64 = 3_600_000;
const NOW: i64 = 100 * HOUR;

fn scale(namespace: &str, name: &str, from: i32, to: i32) -> PlannedAction {
    PlannedAction::Scale {
        workload: WorkloadTarget {
            kind: "Deployment".into(),
            namespace: namespace.into(),
            name: name.into(),
        },
        from,
        to,
        reason: "CPU 0.95 is above 0.80".into(),
    }
}

fn up() -> PlannedAction {
    scale("prod", "api", 3, 4)
}

fn down() -> PlannedAction {
    scale("prod", "api", 3, 2)
}

/// `action` taken `ago` ms before now on `target` under `policy`.
fn scaled(ago: i64, action: ActionKind, target: &str, policy: &str) -> ActionRecord {
    ActionRecord {
        at_ms: NOW - ago,
        action,
        target: target.into(),
        namespace: String::new(),
        policy: policy.into(),
        incident: format!("{target}/Scale"),
    }
}

fn budget(action: ActionKind, scope: BudgetScope, max: u32) -> BudgetLimit {
    BudgetLimit {
        action,
        scope,
        max,
        window_ms: HOUR,
    }
}

struct Case {
    name: &'static str,
    action: PlannedAction,
    annotations: &'static [(&'static str, &'static str)],
    allowed: AllowedActions,
    policy_budgets: Vec<BudgetLimit>,
    cluster_budgets: Vec<BudgetLimit>,
    history: Vec<ActionRecord>,
    want: Result<(), RefusalReason>,
}

fn case(name: &'static str, want: Result<(), RefusalReason>) -> Case {
    Case {
        name,
        action: up(),
        annotations: &[],
        allowed: AllowedActions::all(),
        policy_budgets: vec![],
        cluster_budgets: vec![],
        history: vec![],
        want,
    }
}

#[test]
fn admission_table() {
    use ActionKind::{RestartPod, ScaleDown, ScaleUp};
    use BudgetScope::{Cluster, Namespace, Policy, Target};
    let refused = Err::<(), _>;
    let cases = vec![
        case("all clear", Ok(())),
        Case {
            action: down(),
            ..case("all clear, down", Ok(()))
        },
        // Feature gating.
        Case {
            allowed: AllowedActions::from_kinds([ScaleDown]),
            ..case("scale-up off", refused(RefusalReason::FeatureDisabled))
        },
        Case {
            action: down(),
            allowed: AllowedActions::from_kinds([ScaleUp]),
            ..case("scale-down off", refused(RefusalReason::FeatureDisabled))
        },
        Case {
            allowed: AllowedActions::from_kinds([ScaleDown]),
            annotations: &[("autoagent.io/ignore", "true")],
            ..case(
                "off and opted out: off first",
                refused(RefusalReason::FeatureDisabled),
            )
        },
        // Opt-out.
        Case {
            annotations: &[("autoagent.io/ignore", "true")],
            ..case("ignored", refused(RefusalReason::OptedOut))
        },
        Case {
            action: down(),
            annotations: &[("autoagent.io/ignore", "TRUE")],
            ..case("ignored, any case", refused(RefusalReason::OptedOut))
        },
        Case {
            annotations: &[("autoagent.io/ignore", "false")],
            ..case("not ignored", Ok(()))
        },
        Case {
            action: down(),
            annotations: &[("cluster-autoscaler.kubernetes.io/safe-to-evict", "false")],
            ..case("safe-to-evict is about evictions, not scaling", Ok(()))
        },
        Case {
            annotations: &[("autoagent.io/ignore", "true")],
            policy_budgets: vec![budget(ScaleUp, Target, 0)],
            ..case(
                "opted out and no budget: opt-out first",
                refused(RefusalReason::OptedOut),
            )
        },
        // Budgets, every scope.
        Case {
            policy_budgets: vec![budget(ScaleUp, Target, 1)],
            history: vec![scaled(1, ScaleUp, "Deployment/prod/api", "prod/p")],
            ..case(
                "target budget used",
                refused(RefusalReason::BudgetExhausted),
            )
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Target, 1)],
            history: vec![scaled(1, ScaleUp, "Deployment/prod/web", "prod/p")],
            ..case("target budget, another workload", Ok(()))
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Target, 1)],
            history: vec![scaled(HOUR, ScaleUp, "Deployment/prod/api", "prod/p")],
            ..case("target budget, outside the window", Ok(()))
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Target, 1)],
            history: vec![scaled(1, ScaleDown, "Deployment/prod/api", "prod/p")],
            ..case("target budget, another action", Ok(()))
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Namespace, 1)],
            history: vec![scaled(1, ScaleUp, "StatefulSet/prod/db", "prod/other")],
            ..case(
                "namespace budget used",
                refused(RefusalReason::BudgetExhausted),
            )
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Namespace, 1)],
            history: vec![scaled(1, ScaleUp, "Deployment/dev/api", "prod/p")],
            ..case("namespace budget, another namespace", Ok(()))
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Policy, 1)],
            history: vec![scaled(1, ScaleUp, "Deployment/dev/api", "prod/p")],
            ..case(
                "policy budget used",
                refused(RefusalReason::BudgetExhausted),
            )
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Policy, 1)],
            history: vec![scaled(1, ScaleUp, "Deployment/prod/web", "prod/other")],
            ..case("policy budget, another policy", Ok(()))
        },
        Case {
            action: down(),
            cluster_budgets: vec![budget(ScaleDown, Cluster, 2)],
            history: vec![
                scaled(1, ScaleDown, "Deployment/a/x", "a/p"),
                scaled(2, ScaleDown, "Deployment/b/y", "b/p"),
            ],
            ..case(
                "cluster budget used",
                refused(RefusalReason::BudgetExhausted),
            )
        },
        Case {
            cluster_budgets: vec![budget(ScaleDown, Cluster, 2)],
            history: vec![
                scaled(1, ScaleDown, "Deployment/a/x", "a/p"),
                scaled(2, ScaleDown, "Deployment/b/y", "b/p"),
            ],
            ..case("cluster budget for the other direction", Ok(()))
        },
        Case {
            policy_budgets: vec![budget(ScaleUp, Policy, 0)],
            ..case("zero budget", refused(RefusalReason::BudgetExhausted))
        },
        // Defaults for other actions do not limit scaling.
        Case {
            history: (0..20)
                .map(|i| scaled(i, RestartPod, "Deployment/prod/api", "prod/p"))
                .collect(),
            ..case("restarts do not count", Ok(()))
        },
    ];
    for c in cases {
        let annotations: BTreeMap<String, String> = c
            .annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let history = History {
            records: c.history,
            ..History::default()
        };
        let got = admit(&ScaleAdmission {
            action: &c.action,
            workload_annotations: &annotations,
            policy: "prod/p",
            policy_budgets: &c.policy_budgets,
            cluster_budgets: &c.cluster_budgets,
            allowed: &c.allowed,
            history: &history,
            now_ms: NOW,
        });
        assert_eq!(got.map_err(|r| r.reason), c.want, "case: {}", c.name);
    }
}

#[test]
fn refusals_say_why() {
    let history = History {
        records: vec![scaled(
            1,
            ActionKind::ScaleUp,
            "StatefulSet/prod/db",
            "prod/other",
        )],
        ..History::default()
    };
    let none = BTreeMap::new();
    let a = ScaleAdmission {
        action: &up(),
        workload_annotations: &none,
        policy: "prod/p",
        policy_budgets: &[budget(ActionKind::ScaleUp, BudgetScope::Namespace, 1)],
        cluster_budgets: &[],
        allowed: &AllowedActions::all(),
        history: &history,
        now_ms: NOW,
    };
    assert_eq!(
        admit(&a).unwrap_err().message,
        "ScaleUp budget for this namespace used up: 1 of 1 in 3600 s"
    );
    let off = AllowedActions::default();
    assert_eq!(
        admit(&ScaleAdmission {
            allowed: &off,
            ..a.clone()
        })
        .unwrap_err()
        .message,
        "ScaleUp is planned, but this installation has features.scaling off (no RBAC for it)"
    );
}
