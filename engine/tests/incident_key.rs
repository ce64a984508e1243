//! Incident keys are built from fields only: same target + failure mode -> same key, whatever the
//! pod, restart count, message or time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::{
    Finding, FindingKind, IncidentKey, IncidentKeyError, PodRef, Transition, WorkloadRef,
};

fn pod_finding(kind: FindingKind, ns: &str, pod: &str, owner: Option<(&str, &str)>) -> Finding {
    Finding {
        id: "id-1".into(),
        node: "node-a".into(),
        kind,
        transition: Transition::Started,
        pod: Some(PodRef {
            namespace: ns.into(),
            name: pod.into(),
            uid: "uid-1".into(),
        }),
        owner: owner.map(|(k, n)| WorkloadRef {
            kind: k.into(),
            name: n.into(),
        }),
        container: Some("app".into()),
        reason: kind.as_str().into(),
        message: "back-off 5m0s restarting failed container".into(),
        restart_count: 7,
        exit_code: Some(1),
        image: Some("registry.example.com/api:1.2.3".into()),
        observed_at_ms: 1_700_000_000_000,
        log_lines: vec![],
        log_truncated: false,
    }
}

fn node_finding(kind: FindingKind, node: &str) -> Finding {
    Finding {
        pod: None,
        owner: None,
        container: None,
        node: node.into(),
        ..pod_finding(kind, "x", "x", None)
    }
}

#[test]
fn keys_are_built_from_fields() {
    let cases: Vec<(Finding, &str)> = vec![
        (
            pod_finding(
                FindingKind::CrashLoopBackOff,
                "prod",
                "api-7d9-abc",
                Some(("Deployment", "api")),
            ),
            "pod/prod/Deployment/api/CrashLoopBackOff",
        ),
        (
            pod_finding(
                FindingKind::OomKilled,
                "prod",
                "db-0",
                Some(("StatefulSet", "db")),
            ),
            "pod/prod/StatefulSet/db/OOMKilled",
        ),
        (
            pod_finding(FindingKind::ImagePullBackOff, "team-a", "lonely", None),
            "pod/team-a/Pod/lonely/ImagePullBackOff",
        ),
        (
            pod_finding(
                FindingKind::CreateContainerConfigError,
                "a",
                "p",
                Some(("Job", "j")),
            ),
            "pod/a/Job/j/CreateContainerConfigError",
        ),
        (
            pod_finding(FindingKind::PodEvicted, "a", "p", Some(("DaemonSet", "d"))),
            "pod/a/DaemonSet/d/Evicted",
        ),
        (
            node_finding(FindingKind::NodeMemoryPressure, "node-a"),
            "node/node-a/MemoryPressure",
        ),
        (
            node_finding(FindingKind::NodeDiskPressure, "node-b"),
            "node/node-b/DiskPressure",
        ),
        (
            node_finding(FindingKind::NodePidPressure, "node-c"),
            "node/node-c/PIDPressure",
        ),
        (
            node_finding(FindingKind::NodeNotReady, "node-d"),
            "node/node-d/NotReady",
        ),
    ];
    for (finding, want) in cases {
        let key = IncidentKey::for_finding(&finding).unwrap();
        assert_eq!(key.as_str(), want, "{finding:?}");
    }
}

#[test]
fn free_text_and_pod_identity_do_not_change_the_key() {
    let base = pod_finding(
        FindingKind::CrashLoopBackOff,
        "prod",
        "api-1",
        Some(("Deployment", "api")),
    );
    let variants = [
        Finding {
            message: "something else entirely".into(),
            ..base.clone()
        },
        Finding {
            restart_count: 99,
            exit_code: Some(137),
            ..base.clone()
        },
        Finding {
            id: "other".into(),
            observed_at_ms: 1,
            ..base.clone()
        },
        Finding {
            pod: Some(PodRef {
                namespace: "prod".into(),
                name: "api-2".into(),
                uid: "uid-2".into(),
            }),
            node: "node-z".into(),
            ..base.clone()
        },
        Finding {
            log_lines: vec!["panic: boom".into()],
            ..base.clone()
        },
    ];
    let key = IncidentKey::for_finding(&base).unwrap();
    for v in variants {
        assert_eq!(IncidentKey::for_finding(&v).unwrap(), key, "{v:?}");
    }
}

#[test]
fn different_targets_or_modes_get_different_keys() {
    let a = pod_finding(
        FindingKind::CrashLoopBackOff,
        "prod",
        "p",
        Some(("Deployment", "api")),
    );
    let others = [
        pod_finding(
            FindingKind::OomKilled,
            "prod",
            "p",
            Some(("Deployment", "api")),
        ),
        pod_finding(
            FindingKind::CrashLoopBackOff,
            "staging",
            "p",
            Some(("Deployment", "api")),
        ),
        pod_finding(
            FindingKind::CrashLoopBackOff,
            "prod",
            "p",
            Some(("StatefulSet", "api")),
        ),
        pod_finding(
            FindingKind::CrashLoopBackOff,
            "prod",
            "p",
            Some(("Deployment", "web")),
        ),
    ];
    let key = IncidentKey::for_finding(&a).unwrap();
    for o in others {
        let other = IncidentKey::for_finding(&o).unwrap();
        assert_ne!(other, key);
        assert_ne!(other.digest(), key.digest());
    }
}

#[test]
fn incomplete_or_ambiguous_findings_are_refused() {
    let no_pod = Finding {
        pod: None,
        ..pod_finding(FindingKind::OomKilled, "a", "b", None)
    };
    assert_eq!(
        IncidentKey::for_finding(&no_pod),
        Err(IncidentKeyError::MissingPod(FindingKind::OomKilled))
    );

    let no_node = Finding {
        node: String::new(),
        ..node_finding(FindingKind::NodeDiskPressure, "n")
    };
    assert_eq!(
        IncidentKey::for_finding(&no_node),
        Err(IncidentKeyError::MissingNode(FindingKind::NodeDiskPressure))
    );

    let slash = pod_finding(FindingKind::OomKilled, "a/b", "p", None);
    assert_eq!(
        IncidentKey::for_finding(&slash),
        Err(IncidentKeyError::BadField { field: "namespace" })
    );

    let empty_owner = pod_finding(FindingKind::OomKilled, "a", "p", Some(("Deployment", "")));
    assert_eq!(
        IncidentKey::for_finding(&empty_owner),
        Err(IncidentKeyError::BadField {
            field: "owner.name"
        })
    );
}

#[test]
fn digest_is_stable_and_short() {
    let key =
        IncidentKey::for_finding(&node_finding(FindingKind::NodeMemoryPressure, "node-a")).unwrap();
    let digest = key.digest();
    assert_eq!(digest.len(), 12);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    // Pinned: a change here would orphan every existing ticket label and GitOps branch.
    assert_eq!(digest, "2090d3d531be");
}

#[test]
fn metric_anomaly_keys_name_the_workload_and_nothing_else() {
    let table: &[(&str, &str, &str, Result<&str, IncidentKeyError>)] = &[
        (
            "shop",
            "Deployment",
            "api",
            Ok("workload/shop/Deployment/api/MetricAnomaly"),
        ),
        (
            "shop",
            "StatefulSet",
            "api",
            Ok("workload/shop/StatefulSet/api/MetricAnomaly"),
        ),
        (
            "",
            "Deployment",
            "api",
            Err(IncidentKeyError::BadField { field: "namespace" }),
        ),
        (
            "shop",
            "apps/Deployment",
            "api",
            Err(IncidentKeyError::BadField {
                field: "workload.kind",
            }),
        ),
        (
            "shop",
            "Deployment",
            "",
            Err(IncidentKeyError::BadField {
                field: "workload.name",
            }),
        ),
    ];
    for (ns, kind, name, want) in table {
        let got = IncidentKey::for_metric_anomaly(ns, kind, name);
        assert_eq!(
            got.as_ref().map(IncidentKey::as_str).map_err(Clone::clone),
            want.clone(),
            "{ns}/{kind}/{name}"
        );
    }
    // Never the same key as the workload's pod incidents.
    let pod = IncidentKey::for_finding(&pod_finding(
        FindingKind::CrashLoopBackOff,
        "shop",
        "api-1",
        Some(("Deployment", "api")),
    ))
    .unwrap();
    assert_ne!(
        IncidentKey::for_metric_anomaly("shop", "Deployment", "api").unwrap(),
        pod
    );
}
