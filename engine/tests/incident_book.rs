//! The incident book: dedupe of resends, repeats, reopening, node clearing, cooldown, pruning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::{
    Finding, FindingKind, IncidentBook, IncidentState, Observed, PodRef, Transition, WorkloadRef,
};

fn crash(pod: &str, restarts: u32) -> Finding {
    Finding {
        id: format!("uid-{pod}/app/CrashLoopBackOff/{restarts}"),
        node: "n1".into(),
        kind: FindingKind::CrashLoopBackOff,
        transition: Transition::Started,
        pod: Some(PodRef {
            namespace: "prod".into(),
            name: pod.into(),
            uid: format!("uid-{pod}"),
        }),
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: "api".into(),
        }),
        container: Some("app".into()),
        reason: "CrashLoopBackOff".into(),
        message: String::new(),
        restart_count: restarts,
        exit_code: Some(1),
        image: None,
        observed_at_ms: 0,
        log_lines: vec![],
        log_truncated: false,
    }
}

fn disk(transition: Transition, at: &str) -> Finding {
    let edge = if transition == Transition::Started {
        "Started"
    } else {
        "Cleared"
    };
    Finding {
        id: format!("n1/DiskPressure/{edge}/{at}"),
        kind: FindingKind::NodeDiskPressure,
        transition,
        pod: None,
        owner: None,
        container: None,
        ..crash("x", 0)
    }
}

#[test]
fn lifecycle_table() {
    let mut book = IncidentBook::new(600_000);
    let key = "pod/prod/Deployment/api/CrashLoopBackOff";
    let steps: Vec<(Finding, i64, &str)> = vec![
        (crash("api-1", 3), 0, "opened"),
        (crash("api-1", 3), 1_000, "duplicate"),
        (crash("api-1", 4), 2_000, "repeated"),
        (crash("api-2", 1), 3_000, "repeated"),
        (disk(Transition::Cleared, "t0"), 3_500, "cleared-unknown"),
        (disk(Transition::Started, "t1"), 4_000, "opened"),
        (disk(Transition::Started, "t1"), 4_100, "duplicate"),
        (disk(Transition::Cleared, "t2"), 5_000, "resolved"),
        (disk(Transition::Started, "t3"), 6_000, "reopened"),
        // After the id TTL a resend counts again (bounded memory), as a repeat of the open incident.
        (crash("api-1", 3), 700_000, "repeated"),
    ];
    for (finding, now, want) in steps {
        let got = match book.observe(&finding, now).unwrap() {
            Observed::Opened(_) => "opened",
            Observed::Reopened(_) => "reopened",
            Observed::Repeated(_) => "repeated",
            Observed::Resolved(_) => "resolved",
            Observed::ClearedUnknown(_) => "cleared-unknown",
            Observed::Duplicate => "duplicate",
        };
        assert_eq!(got, want, "{} at {now}", finding.id);
    }
    let crash_incident = book
        .get(&auto_agent_engine::IncidentKey::for_finding(&crash("a", 1)).unwrap())
        .unwrap();
    assert_eq!(crash_incident.key.as_str(), key);
    assert_eq!(
        crash_incident.findings, 4,
        "three distinct findings plus the post-TTL one"
    );
    assert_eq!(book.len(), 2);
    assert_eq!(book.open_count(), 2);
}

#[test]
fn cooldown_follows_the_last_action() {
    let mut book = IncidentBook::new(60_000);
    let Observed::Opened(key) = book.observe(&crash("p", 1), 0).unwrap() else {
        panic!()
    };
    assert!(!book.in_cooldown(&key, 300_000, 0));
    book.set_state(&key, IncidentState::Acting, 10_000);
    assert!(book.in_cooldown(&key, 300_000, 309_999));
    assert!(!book.in_cooldown(&key, 300_000, 310_000));
    assert_eq!(book.get(&key).unwrap().state, IncidentState::Acting);
}

#[test]
fn prune_bounds_memory() {
    let mut book = IncidentBook::new(1_000);
    book.observe(&disk(Transition::Started, "t1"), 0).unwrap();
    book.observe(&disk(Transition::Cleared, "t2"), 10).unwrap();
    book.observe(&crash("p", 1), 10).unwrap();
    book.prune(100_000, 50_000);
    assert_eq!(
        book.len(),
        1,
        "the resolved node incident is forgotten, the open one kept"
    );
    // The ids expired too: the same finding is no longer a duplicate.
    assert_eq!(
        book.observe(&crash("p", 1), 100_001).unwrap(),
        Observed::Repeated(auto_agent_engine::IncidentKey::for_finding(&crash("p", 1)).unwrap())
    );
}

#[test]
fn findings_that_cannot_be_keyed_are_errors() {
    let mut book = IncidentBook::new(1_000);
    let bad = Finding {
        pod: None,
        ..crash("p", 1)
    };
    assert!(book.observe(&bad, 0).is_err());
    assert!(book.is_empty());
}
