//! The decision table: each finding kind with and without each rule firing, the chain's order, and
//! dry-run producing the same plan as live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use auto_agent_engine::decide::budget::{BudgetLimit, BudgetScope};
use auto_agent_engine::decide::{
    ActionKind, ActionRecord, AllowedActions, BytesChange, Decision, Facts, History, Input,
    PlannedAction, PodTarget, PolicyView, RefusalReason, WorkloadTarget, bumped, decide, rules,
    workload_target,
};
use auto_agent_engine::{Finding, FindingKind, IncidentKey, PodRef, Transition, WorkloadRef};

const MI: u64 = 1 << 20;

fn finding(kind: FindingKind) -> Finding {
    Finding {
        id: "id".into(),
        node: "node-a".into(),
        kind,
        transition: Transition::Started,
        pod: Some(PodRef {
            namespace: "prod".into(),
            name: "api-1".into(),
            uid: "u1".into(),
        }),
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: "api".into(),
        }),
        container: Some("app".into()),
        reason: kind.as_str().into(),
        message: String::new(),
        restart_count: 3,
        exit_code: Some(1),
        image: Some("registry.example.com/api:1".into()),
        observed_at_ms: 0,
        log_lines: vec![],
        log_truncated: false,
    }
}

fn policy() -> PolicyView {
    PolicyView {
        namespace: "prod".into(),
        name: "api-prod".into(),
        dry_run: false,
        restart_stuck_pods: true,
        bump_memory_percent: Some(20),
        memory_min_increase_bytes: 100 * MI,
        memory_max_limit_bytes: Some(1024 * MI),
        image_mirror: None,
        min_ready_replicas: 2,
        cooldown_ms: 300_000,
        max_repeats: 3,
        max_unhealthy_percent: 50,
        storm_window_ms: 30_000,
        budgets: vec![],
    }
}

fn facts() -> Facts {
    Facts {
        condition_holds: true,
        desired_replicas: 3,
        ready_replicas: 2,
        memory_limit_bytes: Some(256 * MI),
        container_in_template: true,
        template_image: Some("registry.example.com/api:1".into()),
        // Known for longer than the storm window.
        incident_age_ms: 60_000,
        ..Facts::default()
    }
}

fn run(
    f: &Finding,
    p: Option<&PolicyView>,
    facts: &Facts,
    history: &History,
    cluster: &[BudgetLimit],
    now: i64,
) -> Decision {
    run_allowed(f, p, facts, history, cluster, &AllowedActions::all(), now)
}

fn run_allowed(
    f: &Finding,
    p: Option<&PolicyView>,
    facts: &Facts,
    history: &History,
    cluster: &[BudgetLimit],
    allowed: &AllowedActions,
    now: i64,
) -> Decision {
    let key = IncidentKey::for_finding(f).unwrap();
    decide(&Input {
        incident: &key,
        finding: f,
        policy: p,
        facts,
        history,
        cluster_budgets: cluster,
        allowed,
        now_ms: now,
    })
}

fn mirror_policy() -> PolicyView {
    PolicyView {
        image_mirror: Some("mirror.local/cache".into()),
        ..policy()
    }
}

/// The mirror serves the failing image.
fn mirror_has_image() -> Facts {
    Facts {
        mirror_image: Some(("mirror.local/cache/api:1".into(), true)),
        ..facts()
    }
}

fn deployment() -> WorkloadTarget {
    WorkloadTarget {
        kind: "Deployment".into(),
        namespace: "prod".into(),
        name: "api".into(),
    }
}

fn outcome(d: &Decision) -> Result<Vec<ActionKind>, RefusalReason> {
    match d {
        Decision::Act(plan) => Ok(plan.actions.iter().map(|a| a.kind()).collect()),
        Decision::Refuse(r) | Decision::Propose(_, r) => Err(r.reason),
    }
}

fn restarts(n: usize, incident: &str) -> History {
    let mut h = History::default();
    for i in 0..n {
        h.record(ActionRecord {
            at_ms: i as i64 * 1000,
            action: ActionKind::RestartPod,
            target: "Deployment/prod/api".into(),
            namespace: "prod".into(),
            policy: "prod/api-prod".into(),
            incident: incident.into(),
        });
    }
    h
}

#[test]
fn decision_table() {
    let crash = finding(FindingKind::CrashLoopBackOff);
    let oom = finding(FindingKind::OomKilled);
    let pull = finding(FindingKind::ImagePullBackOff);
    let evicted = finding(FindingKind::PodEvicted);
    let crash_key = IncidentKey::for_finding(&crash)
        .unwrap()
        .as_str()
        .to_owned();
    let p = policy();
    let annotated = |k: &str, v: &str| Facts {
        pod_annotations: BTreeMap::from([(k.to_owned(), v.to_owned())]),
        ..facts()
    };
    let far = 10_000_000;
    type Case<'a> = (
        &'a str,
        &'a Finding,
        Option<PolicyView>,
        Facts,
        History,
        i64,
        Result<Vec<ActionKind>, RefusalReason>,
    );
    let cases: Vec<Case> = vec![
        (
            "crash loop, all clear",
            &crash,
            Some(p.clone()),
            facts(),
            History::default(),
            far,
            Ok(vec![ActionKind::RestartPod]),
        ),
        (
            "no policy",
            &crash,
            None,
            facts(),
            History::default(),
            far,
            Err(RefusalReason::NoPolicy),
        ),
        (
            "restart not enabled",
            &crash,
            Some(PolicyView {
                restart_stuck_pods: false,
                ..p.clone()
            }),
            facts(),
            History::default(),
            far,
            Err(RefusalReason::ActionNotEnabled),
        ),
        (
            "condition cleared",
            &crash,
            Some(p.clone()),
            Facts {
                condition_holds: false,
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::ConditionCleared),
        ),
        (
            "opted out",
            &crash,
            Some(p.clone()),
            annotated("autoagent.io/ignore", "true"),
            History::default(),
            far,
            Err(RefusalReason::OptedOut),
        ),
        (
            "safe-to-evict false",
            &crash,
            Some(p.clone()),
            annotated("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
            History::default(),
            far,
            Err(RefusalReason::OptedOut),
        ),
        (
            "mirror pod",
            &crash,
            Some(p.clone()),
            Facts {
                is_mirror_pod: true,
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::MirrorPod),
        ),
        (
            "one ready replica",
            &crash,
            Some(p.clone()),
            Facts {
                ready_replicas: 1,
                desired_replicas: 2,
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::TooFewReadyReplicas),
        ),
        (
            "breaker",
            &crash,
            Some(p.clone()),
            Facts {
                ready_replicas: 2,
                desired_replicas: 10,
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::DisruptionBreaker),
        ),
        (
            "cooldown",
            &crash,
            Some(p.clone()),
            facts(),
            restarts(1, &crash_key),
            60_000,
            Err(RefusalReason::Cooldown),
        ),
        (
            "loop",
            &crash,
            Some(PolicyView {
                cooldown_ms: 0,
                ..p.clone()
            }),
            facts(),
            restarts(3, &crash_key),
            600_000,
            Err(RefusalReason::LoopDetected),
        ),
        (
            "budget",
            &crash,
            Some(PolicyView {
                cooldown_ms: 0,
                ..p.clone()
            }),
            facts(),
            restarts(3, "other-incidents"),
            600_000,
            Err(RefusalReason::BudgetExhausted),
        ),
        (
            "oom bump",
            &oom,
            Some(p.clone()),
            facts(),
            History::default(),
            far,
            Ok(vec![ActionKind::BumpMemory]),
        ),
        (
            "oom without bump",
            &oom,
            Some(PolicyView {
                bump_memory_percent: None,
                ..p.clone()
            }),
            facts(),
            History::default(),
            far,
            Err(RefusalReason::ActionNotEnabled),
        ),
        (
            "oom at the cap",
            &oom,
            Some(p.clone()),
            Facts {
                memory_limit_bytes: Some(1024 * MI),
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::AtMemoryCap),
        ),
        (
            "oom gitops",
            &oom,
            Some(p.clone()),
            Facts {
                gitops_managed: true,
                ..facts()
            },
            History::default(),
            far,
            Err(RefusalReason::GitOpsManaged),
        ),
        // Memory bumps do not take pods away: neither min-ready nor the breaker apply.
        (
            "oom single replica",
            &oom,
            Some(p.clone()),
            Facts {
                ready_replicas: 0,
                desired_replicas: 1,
                ..facts()
            },
            History::default(),
            far,
            Ok(vec![ActionKind::BumpMemory]),
        ),
        (
            "image pull without mirror",
            &pull,
            Some(p.clone()),
            facts(),
            History::default(),
            far,
            Err(RefusalReason::ActionNotEnabled),
        ),
        (
            "evicted pods are reported",
            &evicted,
            Some(p.clone()),
            facts(),
            History::default(),
            far,
            Err(RefusalReason::NotSupported),
        ),
    ];
    for (name, f, policy, facts, history, now, want) in cases {
        let d = run(f, policy.as_ref(), &facts, &history, &[], now);
        assert_eq!(outcome(&d), want, "case: {name}");
    }
}

#[test]
fn image_mirror_only_when_the_mirror_has_the_image() {
    let pull = finding(FindingKind::ImagePullBackOff);
    let p = mirror_policy();
    let has = mirror_has_image();
    match run(&pull, Some(&p), &has, &History::default(), &[], 0) {
        Decision::Act(plan) => assert_eq!(
            plan.actions,
            [PlannedAction::MirrorImage {
                workload: deployment(),
                container: "app".into(),
                from: "registry.example.com/api:1".into(),
                to: "mirror.local/cache/api:1".into(),
                reason: "app cannot pull registry.example.com/api:1; the mirror has \
                         mirror.local/cache/api:1"
                    .into(),
            }]
        ),
        other => panic!("{other:?}"),
    }
    let missing = Facts {
        mirror_image: Some(("mirror.local/cache/api:1".into(), false)),
        ..facts()
    };
    assert_eq!(
        outcome(&run(&pull, Some(&p), &missing, &History::default(), &[], 0)),
        Err(RefusalReason::MirrorMissing)
    );
    assert_eq!(
        outcome(&run(&pull, Some(&p), &facts(), &History::default(), &[], 0)),
        Err(RefusalReason::MirrorMissing)
    );
    // A failed check is refused with its cause, so the Event says what to fix.
    let unchecked = Facts {
        mirror_check_error: Some(
            "mirror.local/cache/api:1: mirror.local requires credentials".into(),
        ),
        ..facts()
    };
    match run(&pull, Some(&p), &unchecked, &History::default(), &[], 0) {
        Decision::Refuse(r) => {
            assert_eq!(r.reason, RefusalReason::MirrorMissing);
            assert!(r.message.contains("requires credentials"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    // GitOps-managed workloads get a proposal, not a live swap.
    let managed = Facts {
        gitops_managed: true,
        ..has
    };
    assert_eq!(
        outcome(&run(&pull, Some(&p), &managed, &History::default(), &[], 0)),
        Err(RefusalReason::GitOpsManaged)
    );
}

#[test]
fn cluster_budgets_apply_across_policies() {
    let crash = finding(FindingKind::CrashLoopBackOff);
    let mut h = History::default();
    for i in 0..5 {
        h.record(ActionRecord {
            at_ms: i,
            action: ActionKind::RestartPod,
            target: format!("Deployment/ns{i}/w"),
            namespace: format!("ns{i}"),
            policy: format!("ns{i}/p"),
            incident: format!("i{i}"),
        });
    }
    let cluster = [BudgetLimit {
        action: ActionKind::RestartPod,
        scope: BudgetScope::Cluster,
        max: 5,
        window_ms: 3_600_000,
    }];
    assert_eq!(
        outcome(&run(&crash, Some(&policy()), &facts(), &h, &cluster, 1_000)),
        Err(RefusalReason::BudgetExhausted)
    );
    assert_eq!(
        outcome(&run(&crash, Some(&policy()), &facts(), &h, &[], 1_000)),
        Ok(vec![ActionKind::RestartPod])
    );
}

#[test]
fn dry_run_produces_the_same_plan() {
    let crash = finding(FindingKind::CrashLoopBackOff);
    let live = run(
        &crash,
        Some(&policy()),
        &facts(),
        &History::default(),
        &[],
        0,
    );
    let dry = run(
        &crash,
        Some(&PolicyView {
            dry_run: true,
            ..policy()
        }),
        &facts(),
        &History::default(),
        &[],
        0,
    );
    match (live, dry) {
        (Decision::Act(l), Decision::Act(d)) => {
            assert!(!l.dry_run && d.dry_run);
            assert_eq!(l.actions, d.actions);
            assert_eq!(l.incident, d.incident);
        }
        other => panic!("{other:?}"),
    }
    // Safety rules refuse in dry-run exactly as live.
    let one_ready = Facts {
        desired_replicas: 1,
        ready_replicas: 1,
        ..facts()
    };
    let dry = run(
        &crash,
        Some(&PolicyView {
            dry_run: true,
            ..policy()
        }),
        &one_ready,
        &History::default(),
        &[],
        0,
    );
    assert_eq!(outcome(&dry), Err(RefusalReason::TooFewReadyReplicas));
}

#[test]
fn the_chain_runs_in_the_documented_order() {
    let names: Vec<&str> = rules::CHAIN.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "feature",
            "condition",
            "system_namespace",
            "mirror_pod",
            "daemonset",
            "opt_out",
            "breaker",
            "storm_window",
            "min_ready",
            "cooldown",
            "loops",
            "budget",
            "gitops"
        ]
    );
    // With every rule firing, the first one in the chain decides the reason.
    let crash = finding(FindingKind::CrashLoopBackOff);
    let everything = Facts {
        condition_holds: false,
        is_mirror_pod: true,
        ready_replicas: 0,
        pod_annotations: BTreeMap::from([("autoagent.io/ignore".to_owned(), "true".to_owned())]),
        ..facts()
    };
    assert_eq!(
        outcome(&run(
            &crash,
            Some(&policy()),
            &everything,
            &History::default(),
            &[],
            0
        )),
        Err(RefusalReason::ConditionCleared)
    );
    let next = Facts {
        condition_holds: true,
        ..everything
    };
    assert_eq!(
        outcome(&run(
            &crash,
            Some(&policy()),
            &next,
            &History::default(),
            &[],
            0
        )),
        Err(RefusalReason::MirrorPod)
    );
}

#[test]
fn memory_bump_arithmetic() {
    // 20% of 256Mi is 51.2Mi, below the 100Mi floor.
    assert_eq!(bumped(256 * MI, 20, 100 * MI, None), 356 * MI);
    // 20% of 1Gi is above the floor.
    assert_eq!(
        bumped(1024 * MI, 20, 100 * MI, None),
        1024 * MI + 1024 * MI / 5
    );
    // Never above the cap; already at the cap stays.
    assert_eq!(bumped(900 * MI, 20, 100 * MI, Some(1024 * MI)), 1024 * MI);
    assert_eq!(bumped(1024 * MI, 20, 100 * MI, Some(1024 * MI)), 1024 * MI);
    // Above the cap the result is not higher than the limit, so the decision refuses (AtMemoryCap)
    // instead of lowering anything.
    assert!(bumped(2048 * MI, 20, 100 * MI, Some(1024 * MI)) <= 2048 * MI);
}

/// The plan carries what the controller needs, typed: no strings to parse back.
#[test]
fn plans_carry_typed_payloads() {
    let request = Facts {
        memory_request_bytes: Some(128 * MI),
        ..facts()
    };
    let cases = [
        (
            FindingKind::CrashLoopBackOff,
            facts(),
            PlannedAction::RestartPod {
                pod: PodTarget {
                    namespace: "prod".into(),
                    name: "api-1".into(),
                    uid: "u1".into(),
                },
                reason: "container app is in CrashLoopBackOff after 3 restarts".into(),
            },
        ),
        (
            FindingKind::OomKilled,
            facts(),
            PlannedAction::BumpMemory {
                workload: deployment(),
                container: "app".into(),
                limit: BytesChange {
                    from: Some(256 * MI),
                    to: 356 * MI,
                },
                request: None,
                reason: "container app was OOMKilled; limit 256Mi -> 356Mi".into(),
            },
        ),
        (
            FindingKind::OomKilled,
            request,
            PlannedAction::BumpMemory {
                workload: deployment(),
                container: "app".into(),
                limit: BytesChange {
                    from: Some(256 * MI),
                    to: 356 * MI,
                },
                request: Some(BytesChange {
                    from: Some(128 * MI),
                    to: 228 * MI,
                }),
                reason: "container app was OOMKilled; limit 256Mi -> 356Mi".into(),
            },
        ),
    ];
    for (kind, facts, want) in cases {
        match run(
            &finding(kind),
            Some(&policy()),
            &facts,
            &History::default(),
            &[],
            0,
        ) {
            Decision::Act(plan) => assert_eq!(plan.actions, [want]),
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

#[test]
fn findings_without_what_the_action_needs_are_not_supported() {
    let mut no_container = finding(FindingKind::OomKilled);
    no_container.container = None;
    let mut no_image = finding(FindingKind::ImagePullBackOff);
    no_image.image = None;
    let p = mirror_policy();
    let mirrored = mirror_has_image();
    for f in [no_container, no_image] {
        assert_eq!(
            outcome(&run(&f, Some(&p), &mirrored, &History::default(), &[], 0)),
            Err(RefusalReason::NotSupported),
            "{f:?}"
        );
    }
}

#[test]
fn workload_targets_of_findings() {
    let owned = finding(FindingKind::CrashLoopBackOff);
    let mut bare = owned.clone();
    bare.owner = None;
    let mut node = owned.clone();
    node.pod = None;
    node.owner = None;
    let bare_pod = WorkloadTarget {
        kind: "Pod".into(),
        namespace: "prod".into(),
        name: "api-1".into(),
    };
    let cases = [
        (&owned, Some(deployment()), "Deployment/prod/api"),
        (&bare, Some(bare_pod), "Pod/prod/api-1"),
        (&node, None, "Node//node-a"),
    ];
    for (f, want, ledger) in cases {
        assert_eq!(WorkloadTarget::of_finding(f), want);
        assert_eq!(workload_target(f), ledger);
    }
}

/// A planned action the installation does not allow is refused first, whatever else holds; other
/// actions are not affected.
#[test]
fn features_gate_planned_actions() {
    let crash = finding(FindingKind::CrashLoopBackOff);
    let oom = finding(FindingKind::OomKilled);
    let cleared = Facts {
        condition_holds: false,
        ..facts()
    };
    let no_restart = AllowedActions::from_kinds([ActionKind::BumpMemory, ActionKind::MirrorImage]);
    let cases = [
        (
            "restart allowed",
            &crash,
            facts(),
            AllowedActions::all(),
            Ok(vec![ActionKind::RestartPod]),
        ),
        (
            "restart off",
            &crash,
            facts(),
            no_restart.clone(),
            Err(RefusalReason::FeatureDisabled),
        ),
        (
            "restart off, cleared too",
            &crash,
            cleared,
            no_restart.clone(),
            Err(RefusalReason::FeatureDisabled),
        ),
        (
            "bump still allowed",
            &oom,
            facts(),
            no_restart,
            Ok(vec![ActionKind::BumpMemory]),
        ),
        (
            "nothing allowed",
            &oom,
            facts(),
            AllowedActions::default(),
            Err(RefusalReason::FeatureDisabled),
        ),
    ];
    for (name, f, facts, allowed, want) in cases {
        let d = run_allowed(
            f,
            Some(&policy()),
            &facts,
            &History::default(),
            &[],
            &allowed,
            0,
        );
        assert_eq!(outcome(&d), want, "case: {name}");
    }
}

/// A storm seen from its first decision: the breaker counts the pods known to be failing (readiness
/// lags), and a disruptive action on a replicated workload waits out the storm window first.
#[test]
fn storms_are_seen_from_the_first_decision() {
    let crash = finding(FindingKind::CrashLoopBackOff);
    let storm = |ready: u32, failing: u32, age: i64| Facts {
        desired_replicas: 40,
        ready_replicas: ready,
        failing_pods: failing,
        incident_age_ms: age,
        ..facts()
    };
    let no_window = PolicyView {
        storm_window_ms: 0,
        ..policy()
    };
    let single = PolicyView {
        min_ready_replicas: 0,
        max_unhealthy_percent: 100,
        ..policy()
    };
    let one_replica = Facts {
        desired_replicas: 1,
        ready_replicas: 0,
        failing_pods: 1,
        incident_age_ms: 0,
        ..facts()
    };
    let restart = Ok(vec![ActionKind::RestartPod]);
    let cases = [
        (
            "40 failing, 40 still ready",
            policy(),
            storm(40, 40, 0),
            Err(RefusalReason::DisruptionBreaker),
        ),
        (
            "40 failing, later",
            policy(),
            storm(40, 40, 60_000),
            Err(RefusalReason::DisruptionBreaker),
        ),
        (
            "first failure, just known",
            policy(),
            storm(40, 1, 0),
            Err(RefusalReason::Settling),
        ),
        (
            "first failure, window over",
            policy(),
            storm(40, 1, 30_000),
            restart.clone(),
        ),
        ("no window", no_window, storm(40, 1, 0), restart.clone()),
        (
            "one replica: no storm to wait for",
            single,
            one_replica,
            restart,
        ),
    ];
    for (name, p, facts, want) in cases {
        let d = run(&crash, Some(&p), &facts, &History::default(), &[], 0);
        assert_eq!(outcome(&d), want, "case: {name}");
    }
    // Bumps take no pods away: they do not wait.
    let oom = finding(FindingKind::OomKilled);
    assert_eq!(
        outcome(&run(
            &oom,
            Some(&policy()),
            &storm(40, 1, 0),
            &History::default(),
            &[],
            0
        )),
        Ok(vec![ActionKind::BumpMemory])
    );
}

/// Memory bumps and image swaps change only a container the workload's template has, and a swap
/// replaces only the image the template runs: a pod that claims another container or image (a
/// forged pod, or one left behind by a rollout) never makes the agent add or rewrite one.
#[test]
fn template_changes_only_touch_what_the_template_has() {
    let oom = finding(FindingKind::OomKilled);
    let pull = finding(FindingKind::ImagePullBackOff);
    let (bump, mirror) = (policy(), mirror_policy());
    type Case<'a> = (
        &'a str,
        &'a Finding,
        &'a PolicyView,
        Facts,
        Result<Vec<ActionKind>, RefusalReason>,
    );
    let cases: Vec<Case> = vec![
        (
            "bump: container in template",
            &oom,
            &bump,
            facts(),
            Ok(vec![ActionKind::BumpMemory]),
        ),
        (
            "bump: container not in template",
            &oom,
            &bump,
            Facts {
                container_in_template: false,
                ..facts()
            },
            Err(RefusalReason::TemplateMismatch),
        ),
        (
            "mirror: template runs the failing image",
            &pull,
            &mirror,
            mirror_has_image(),
            Ok(vec![ActionKind::MirrorImage]),
        ),
        (
            "mirror: container not in template",
            &pull,
            &mirror,
            Facts {
                container_in_template: false,
                ..mirror_has_image()
            },
            Err(RefusalReason::TemplateMismatch),
        ),
        (
            "mirror: template runs another image",
            &pull,
            &mirror,
            Facts {
                template_image: Some("registry.example.com/api:2".into()),
                ..mirror_has_image()
            },
            Err(RefusalReason::TemplateMismatch),
        ),
        (
            "mirror: template image unknown",
            &pull,
            &mirror,
            Facts {
                template_image: None,
                ..mirror_has_image()
            },
            Err(RefusalReason::TemplateMismatch),
        ),
    ];
    for (name, f, p, facts, want) in cases {
        let got = outcome(&run(f, Some(p), &facts, &History::default(), &[], 0));
        assert_eq!(got, want, "{name}");
    }
    assert!(!RefusalReason::TemplateMismatch.escalates());
    assert_eq!(RefusalReason::TemplateMismatch.as_str(), "TemplateMismatch");
}

#[test]
fn gitops_workloads_get_the_live_plan_as_a_proposal_only_where_every_rule_allows_it() {
    let oom = finding(FindingKind::OomKilled);
    let key = IncidentKey::for_finding(&oom).unwrap();
    let managed = Facts {
        gitops_managed: true,
        ..facts()
    };
    let far = 10_000_000;
    let live = run(
        &oom,
        Some(&policy()),
        &facts(),
        &History::default(),
        &[],
        far,
    );
    let proposed = run(
        &oom,
        Some(&policy()),
        &managed,
        &History::default(),
        &[],
        far,
    );
    let (Decision::Act(live), Decision::Propose(plan, why)) = (&live, &proposed) else {
        panic!("{live:?} / {proposed:?}");
    };
    // The same plan as live: the same bump, to the same value.
    assert_eq!(plan, live);
    assert_eq!(why.reason, RefusalReason::GitOpsManaged);
    assert!(matches!(
        plan.actions[..],
        [PlannedAction::BumpMemory { .. }]
    ));

    // Another rule refusing comes first: a cooldown after a bump holds the proposal too.
    let mut bumped = History::default();
    bumped.record(ActionRecord {
        at_ms: far - 1000,
        action: ActionKind::BumpMemory,
        target: "Deployment/prod/api".into(),
        namespace: "prod".into(),
        policy: "prod/api-prod".into(),
        incident: key.as_str().to_owned(),
    });
    assert_eq!(
        outcome(&run(&oom, Some(&policy()), &managed, &bumped, &[], far)),
        Err(RefusalReason::Cooldown)
    );
    // A restart is not a spec change: acted on live even when GitOps manages the workload.
    let crash = finding(FindingKind::CrashLoopBackOff);
    assert!(matches!(
        run(
            &crash,
            Some(&policy()),
            &managed,
            &History::default(),
            &[],
            far
        ),
        Decision::Act(_)
    ));
}
