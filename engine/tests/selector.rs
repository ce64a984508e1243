//! Label selector matching and validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use auto_agent_engine::{Selector, SelectorError};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn expr(key: &str, op: &str, values: &[&str]) -> (String, String, Vec<String>) {
    (
        key.into(),
        op.into(),
        values.iter().map(|v| (*v).into()).collect(),
    )
}

#[test]
fn matching_table() {
    let api = labels(&[("app", "api"), ("tier", "backend")]);
    let cases: Vec<(Selector, bool, &str)> = vec![
        (Selector::default(), true, "empty matches everything"),
        (
            Selector::new(labels(&[("app", "api")]), &[]).unwrap(),
            true,
            "matchLabels hit",
        ),
        (
            Selector::new(labels(&[("app", "web")]), &[]).unwrap(),
            false,
            "matchLabels miss",
        ),
        (
            Selector::new(labels(&[("app", "api"), ("zone", "a")]), &[]).unwrap(),
            false,
            "all labels needed",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("app", "In", &["web", "api"])]).unwrap(),
            true,
            "In",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("app", "In", &["web"])]).unwrap(),
            false,
            "In miss",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("app", "NotIn", &["web"])]).unwrap(),
            true,
            "NotIn",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("app", "NotIn", &["api"])]).unwrap(),
            false,
            "NotIn miss",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("zone", "NotIn", &["a"])]).unwrap(),
            true,
            "NotIn absent key",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("tier", "Exists", &[])]).unwrap(),
            true,
            "Exists",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("zone", "Exists", &[])]).unwrap(),
            false,
            "Exists miss",
        ),
        (
            Selector::new(BTreeMap::new(), &[expr("zone", "DoesNotExist", &[])]).unwrap(),
            true,
            "DoesNotExist",
        ),
        (
            Selector::new(
                labels(&[("app", "api")]),
                &[expr("tier", "In", &["frontend"])],
            )
            .unwrap(),
            false,
            "labels AND expressions",
        ),
    ];
    for (selector, want, name) in cases {
        assert_eq!(selector.matches(&api), want, "{name}");
    }
}

#[test]
fn invalid_selectors_are_refused() {
    assert_eq!(
        Selector::new(BTreeMap::new(), &[expr("app", "Matches", &["a.*"])]),
        Err(SelectorError::UnknownOperator {
            key: "app".into(),
            operator: "Matches".into()
        })
    );
    assert!(matches!(
        Selector::new(BTreeMap::new(), &[expr("app", "In", &[])]),
        Err(SelectorError::MissingValues { .. })
    ));
    assert!(matches!(
        Selector::new(BTreeMap::new(), &[expr("app", "Exists", &["x"])]),
        Err(SelectorError::UnexpectedValues { .. })
    ));
}
