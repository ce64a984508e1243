//! The incident book: dedupe of resends, repeats, reopening, node clearing, cooldown, pruning, and
//! the bounds on what it keeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::{
    BookLimits, Finding, FindingKind, IncidentBook, IncidentKey, IncidentState, Observed, PodRef,
    Transition, WorkloadRef,
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

fn limits() -> BookLimits {
    BookLimits {
        id_ttl_ms: 1_000,
        max_ids: 1_000,
        max_incidents: 1_000,
        resolved_keep_ms: 50_000,
        idle_ms: 200_000,
    }
}

fn key_of(f: &Finding) -> IncidentKey {
    IncidentKey::for_finding(f).unwrap()
}

#[test]
fn prune_bounds_memory() {
    let mut book = IncidentBook::with_limits(limits());
    book.observe(&disk(Transition::Started, "t1"), 0).unwrap();
    book.observe(&disk(Transition::Cleared, "t2"), 10).unwrap();
    book.observe(&crash("p", 1), 10).unwrap();
    book.prune(100_000);
    assert_eq!(
        book.len(),
        1,
        "the resolved node incident is forgotten, the open one kept"
    );
    assert_eq!(book.ids_len(), 0, "expired ids are forgotten");
    // The ids expired too: the same finding is no longer a duplicate.
    assert_eq!(
        book.observe(&crash("p", 1), 100_001).unwrap(),
        Observed::Repeated(key_of(&crash("p", 1)))
    );
}

/// Which incidents `prune(now)` keeps, by state, kind and when each was last seen (the clock is an
/// input: resolved ones for `resolved_keep_ms`, pod ones for `idle_ms`, open node ones until they
/// clear).
#[test]
fn prune_table() {
    let pod = |name: &str| Finding {
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: name.into(),
        }),
        ..crash(name, 1)
    };
    let node = |n: &str, t: Transition, at: &str| Finding {
        node: n.into(),
        id: format!("{n}/DiskPressure/{t:?}/{at}"),
        ..disk(t, at)
    };
    // (what happens, last seen at, prune at, kept)
    let table: Vec<(Vec<Finding>, i64, i64, bool)> = vec![
        (vec![pod("a")], 0, 200_000, true),  // idle exactly idle_ms: kept
        (vec![pod("b")], 0, 200_001, false), // idle longer: forgotten
        (vec![pod("c")], 150_000, 300_000, true), // seen recently
        (
            vec![node("n1", Transition::Started, "t")],
            0,
            10_000_000,
            true,
        ), // waits to clear
        (
            vec![
                node("n2", Transition::Started, "t"),
                node("n2", Transition::Cleared, "u"),
            ],
            0,
            50_000,
            true,
        ), // resolved, within resolved_keep_ms
        (
            vec![
                node("n3", Transition::Started, "t"),
                node("n3", Transition::Cleared, "u"),
            ],
            0,
            50_001,
            false,
        ), // resolved longer ago
    ];
    for (findings, seen_at, prune_at, kept) in table {
        let mut book = IncidentBook::with_limits(limits());
        for f in &findings {
            book.observe(f, seen_at).unwrap();
        }
        book.prune(prune_at);
        let key = key_of(&findings[0]);
        assert_eq!(
            book.get(&key).is_some(),
            kept,
            "{key:?} seen at {seen_at}, pruned at {prune_at}"
        );
    }
}

/// The count bound holds on insert, without waiting for `prune`: resolved incidents go first, then
/// the least recently seen; the newest incident is always kept.
#[test]
fn incidents_are_bounded_by_count() {
    let workload = |name: &str| Finding {
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: name.into(),
        }),
        id: format!("{name}/1"),
        ..crash(name, 1)
    };
    let node = |n: &str, t: Transition, at: &str| Finding {
        node: n.into(),
        id: format!("{n}/DiskPressure/{t:?}/{at}"),
        ..disk(t, at)
    };
    let mut book = IncidentBook::with_limits(BookLimits {
        max_incidents: 3,
        ..limits()
    });
    book.observe(&workload("old"), 0).unwrap();
    book.observe(&node("n", Transition::Started, "t"), 1)
        .unwrap();
    book.observe(&node("n", Transition::Cleared, "u"), 2)
        .unwrap();
    book.observe(&workload("mid"), 3).unwrap();
    assert_eq!(book.len(), 3);
    // A fourth: the resolved node incident goes although it was seen after "old".
    book.observe(&workload("new"), 4).unwrap();
    let kept = |book: &IncidentBook, f: &Finding| book.get(&key_of(f)).is_some();
    assert_eq!(book.len(), 3);
    assert!(!kept(&book, &node("n", Transition::Started, "t")));
    assert!(kept(&book, &workload("old")));
    // A fifth: now the least recently seen open one goes.
    book.observe(&workload("newer"), 5).unwrap();
    assert_eq!(book.len(), 3);
    assert!(!kept(&book, &workload("old")));
    for name in ["mid", "new", "newer"] {
        assert!(kept(&book, &workload(name)), "{name}");
    }
}

/// Ids are bounded by count too: over `max_ids`, the ones expiring first are forgotten, so their
/// resend counts again (a repeat, not a new incident).
#[test]
fn ids_are_bounded_by_count() {
    let mut book = IncidentBook::with_limits(BookLimits {
        max_ids: 10,
        id_ttl_ms: 1_000_000,
        ..limits()
    });
    for restarts in 0..11 {
        book.observe(&crash("p", restarts), i64::from(restarts))
            .unwrap();
    }
    assert_eq!(book.ids_len(), 9, "a batch of a tenth was forgotten");
    assert_eq!(
        book.observe(&crash("p", 0), 20).unwrap(),
        Observed::Repeated(key_of(&crash("p", 0))),
        "the oldest id was forgotten"
    );
    assert_eq!(
        book.observe(&crash("p", 10), 21).unwrap(),
        Observed::Duplicate,
        "the newest id is remembered"
    );
}

/// The book keeps what the incident is, not the evidence: the log tail travels on with the change
/// and is not held for the incident's lifetime.
#[test]
fn stored_findings_carry_no_log_tail() {
    let mut book = IncidentBook::with_limits(limits());
    let with_log = |restarts: u32| Finding {
        log_lines: vec!["x".repeat(1_000); 50],
        log_truncated: true,
        ..crash("p", restarts)
    };
    book.observe(&with_log(1), 0).unwrap();
    book.observe(&with_log(2), 1).unwrap();
    let incident = book.get(&key_of(&crash("p", 1))).unwrap();
    assert!(incident.last_finding.log_lines.is_empty());
    assert_eq!(incident.last_finding.restart_count, 2, "the rest is kept");
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

/// The ingest's question before verifying a finding: a duplicate only for an id recorded from
/// the same node and still remembered; asking records nothing.
#[test]
fn duplicates_are_known_per_node_within_the_ttl() {
    let mut book = IncidentBook::new(1_000);
    let f = crash("a", 1);
    assert!(!book.is_duplicate(&f.id, "n1", 0), "nothing recorded yet");
    assert!(
        !book.is_duplicate(&f.id, "n1", 0),
        "asking recorded nothing"
    );
    book.observe(&f, 100).unwrap();
    let table: &[(&str, &str, i64, bool)] = &[
        // (id, node asking, now, duplicate)
        (&f.id, "n1", 100, true),
        (&f.id, "n1", 1_099, true),
        (&f.id, "n1", 1_100, false), // the id's TTL ran out
        (&f.id, "n2", 500, false),   // recorded from another node: verified the whole way
        ("uid-a/app/CrashLoopBackOff/2", "n1", 500, false), // another restart
    ];
    for (id, node, now, duplicate) in table {
        assert_eq!(
            book.is_duplicate(id, node, *now),
            *duplicate,
            "{id} from {node} at {now}"
        );
    }
    // What the question answers is what observing would: the same id is a duplicate there too.
    assert_eq!(book.observe(&f, 500).unwrap(), Observed::Duplicate);
    book.prune(2_000);
    assert!(!book.is_duplicate(&f.id, "n1", 2_000), "pruned");
}
