//! Node detectors: pressure and readiness, started and cleared, once per transition.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::detect::detect_node;
use auto_agent_engine::{FindingKind, NodeConditionView, NodeView, Transition};

fn node(conds: &[(&str, &str, &str)]) -> NodeView {
    NodeView {
        name: "node-a".into(),
        conditions: conds
            .iter()
            .map(|(t, s, at)| NodeConditionView {
                type_: (*t).into(),
                status: (*s).into(),
                reason: format!("{t}{s}"),
                message: String::new(),
                last_transition: (*at).into(),
            })
            .collect(),
    }
}

fn healthy() -> NodeView {
    node(&[
        ("Ready", "True", "t0"),
        ("MemoryPressure", "False", "t0"),
        ("DiskPressure", "False", "t0"),
        ("PIDPressure", "False", "t0"),
    ])
}

#[test]
fn node_detection_table() {
    type Want = Vec<(FindingKind, Transition, &'static str)>;
    let cases: Vec<(&str, Option<NodeView>, NodeView, Want)> = vec![
        ("healthy first sight", None, healthy(), vec![]),
        ("healthy stays", Some(healthy()), healthy(), vec![]),
        (
            "memory pressure starts",
            Some(healthy()),
            node(&[("Ready", "True", "t0"), ("MemoryPressure", "True", "t1")]),
            vec![(
                FindingKind::NodeMemoryPressure,
                Transition::Started,
                "node-a/MemoryPressure/Started/t1",
            )],
        ),
        (
            "memory pressure continues",
            Some(node(&[("MemoryPressure", "True", "t1")])),
            node(&[("MemoryPressure", "True", "t1")]),
            vec![],
        ),
        (
            "memory pressure clears",
            Some(node(&[("MemoryPressure", "True", "t1")])),
            node(&[("MemoryPressure", "False", "t2")]),
            vec![(
                FindingKind::NodeMemoryPressure,
                Transition::Cleared,
                "node-a/MemoryPressure/Cleared/t2",
            )],
        ),
        (
            "disk and pid pressure at once",
            Some(healthy()),
            node(&[
                ("DiskPressure", "True", "t3"),
                ("PIDPressure", "True", "t3"),
            ]),
            vec![
                (
                    FindingKind::NodeDiskPressure,
                    Transition::Started,
                    "node-a/DiskPressure/Started/t3",
                ),
                (
                    FindingKind::NodePidPressure,
                    Transition::Started,
                    "node-a/PIDPressure/Started/t3",
                ),
            ],
        ),
        (
            "pressure seen first at sensor start keeps its id",
            None,
            node(&[("DiskPressure", "True", "t3")]),
            vec![(
                FindingKind::NodeDiskPressure,
                Transition::Started,
                "node-a/DiskPressure/Started/t3",
            )],
        ),
        (
            "not ready",
            Some(healthy()),
            node(&[("Ready", "False", "t4")]),
            vec![(
                FindingKind::NodeNotReady,
                Transition::Started,
                "node-a/NotReady/Started/t4",
            )],
        ),
        (
            "False -> Unknown is still not ready",
            Some(node(&[("Ready", "False", "t4")])),
            node(&[("Ready", "Unknown", "t5")]),
            vec![],
        ),
        (
            "unknown readiness",
            Some(healthy()),
            node(&[("Ready", "Unknown", "t5")]),
            vec![(
                FindingKind::NodeNotReady,
                Transition::Started,
                "node-a/NotReady/Started/t5",
            )],
        ),
        (
            "ready again",
            Some(node(&[("Ready", "Unknown", "t5")])),
            node(&[("Ready", "True", "t6")]),
            vec![(
                FindingKind::NodeNotReady,
                Transition::Cleared,
                "node-a/NotReady/Cleared/t6",
            )],
        ),
        (
            "clear without a seen start is not reported",
            None,
            node(&[("MemoryPressure", "False", "t7")]),
            vec![],
        ),
        (
            "unwatched conditions are ignored",
            Some(healthy()),
            node(&[("NetworkUnavailable", "True", "t8")]),
            vec![],
        ),
    ];
    for (name, prev, cur, want) in cases {
        let got: Vec<_> = detect_node(prev.as_ref(), &cur, 7)
            .into_iter()
            .map(|f| (f.kind, f.transition, f.id))
            .collect();
        let want: Vec<_> = want
            .into_iter()
            .map(|(k, t, id)| (k, t, id.to_owned()))
            .collect();
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn node_finding_fields() {
    let f = detect_node(Some(&healthy()), &node(&[("PIDPressure", "True", "t1")]), 9).remove(0);
    assert!(f.pod.is_none() && f.owner.is_none() && f.container.is_none());
    assert_eq!(f.node, "node-a");
    assert_eq!(f.reason, "PIDPressureTrue");
    assert_eq!(f.observed_at_ms, 9);
}
