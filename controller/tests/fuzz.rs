//! Fuzzing policy decoding through the guarded watch, on stable Rust (proptest): any object the
//! apiserver could hand over (a schema changed, edited or older than the controller) becomes a
//! usable policy whose numbers stay inside the CRD's ranges, or a Degraded one with a reason;
//! never a panic, never a stopped watch. Budget: `PROPTEST_CASES` (256 in `make test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_controller::policies::index::{entry, policy_view};
use auto_agent_shared::crd::AutoRemediationPolicy;
use kube::core::DeserializeGuard;
use proptest::prelude::*;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
        "metadata": {"name": "p", "namespace": "prod", "generation": 1},
        "spec": {
            "targetSelector": {"matchLabels": {"app": "api"},
                               "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
            "actions": {"restartStuckPods": true, "bumpMemoryPercent": 50,
                        "memoryBump": {"minIncrease": "64Mi", "maxLimit": "2Gi"},
                        "imageMirror": {"registry": "mirror.example.com/cache"}},
            "safety": {"minReadyReplicas": 2, "cooldownSeconds": 300, "maxRepeats": 3,
                       "maxUnhealthyPercent": 30, "stormWindowSeconds": 5},
            "budgets": [{"action": "RestartPod", "scope": "Policy", "max": 5, "windowSeconds": 3600}],
            "dryRun": false
        }
    })
}

/// Where a field can be replaced: JSON pointers into the base policy.
const FIELDS: &[&str] = &[
    "/spec",
    "/spec/targetSelector",
    "/spec/targetSelector/matchLabels",
    "/spec/targetSelector/matchLabels/app",
    "/spec/targetSelector/matchExpressions",
    "/spec/targetSelector/matchExpressions/0/operator",
    "/spec/targetSelector/matchExpressions/0/values",
    "/spec/actions",
    "/spec/actions/restartStuckPods",
    "/spec/actions/bumpMemoryPercent",
    "/spec/actions/memoryBump/minIncrease",
    "/spec/actions/memoryBump/maxLimit",
    "/spec/actions/imageMirror/registry",
    "/spec/safety",
    "/spec/safety/minReadyReplicas",
    "/spec/safety/cooldownSeconds",
    "/spec/safety/maxRepeats",
    "/spec/safety/maxUnhealthyPercent",
    "/spec/safety/stormWindowSeconds",
    "/spec/budgets",
    "/spec/budgets/0/action",
    "/spec/budgets/0/scope",
    "/spec/budgets/0/max",
    "/spec/budgets/0/windowSeconds",
    "/spec/dryRun",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whole numbers the schema's ranges sit between, most often, and any JSON otherwise.
fn value() -> impl Strategy<Value = Value> {
    let edge = prop_oneof![
        proptest::sample::select(vec![
            i32::MIN,
            -86_400,
            -1,
            0,
            1,
            59,
            60,
            100,
            101,
            1000,
            1001,
            10_001,
            86_401,
            604_801,
            i32::MAX
        ]),
        any::<i32>(),
    ];
    prop_oneof![3 => edge.prop_map(Value::from), 1 => any_json()]
}

proptest! {
    #[test]
    fn fuzz_any_policy_object_is_usable_within_its_ranges_or_degraded(
        edits in proptest::collection::vec((0..FIELDS.len(), value()), 1..4),
    ) {
        let mut object = base();
        for (field, value) in edits {
            if let Some(slot) = object.pointer_mut(FIELDS[field]) {
                *slot = value;
            }
        }
        // The guard takes any object with readable metadata; a bad spec is a problem, not an error.
        let guarded: DeserializeGuard<AutoRemediationPolicy> = serde_json::from_value(object).unwrap();
        let e = entry(guarded);
        prop_assert_eq!((e.namespace.as_str(), e.name.as_str()), ("prod", "p"));
        match policy_view(&e) {
            None => {
                let problem = e.problem.as_ref().expect("an unusable policy says why");
                prop_assert!(!problem.reason.is_empty() && !problem.message.is_empty());
            }
            Some(v) => {
                prop_assert!(e.problem.is_none());
                prop_assert!(v.min_ready_replicas <= 1000);
                prop_assert!((0..=86_400_000).contains(&v.cooldown_ms), "{}", v.cooldown_ms);
                prop_assert!((1..=100).contains(&v.max_repeats));
                prop_assert!((1..=100).contains(&v.max_unhealthy_percent));
                prop_assert!((0..=60_000).contains(&v.storm_window_ms));
                prop_assert!(v.bump_memory_percent.is_none_or(|p| (1..=1000).contains(&p)));
                for b in &v.budgets {
                    prop_assert!(b.max <= 10_000);
                    prop_assert!((60_000..=604_800_000).contains(&b.window_ms), "{}", b.window_ms);
                }
            }
        }
    }
}

#[test]
fn the_base_policy_is_usable() {
    let e = entry(serde_json::from_value(base()).unwrap());
    assert!(e.problem.is_none(), "{:?}", e.problem);
    let v = policy_view(&e).unwrap();
    assert_eq!(v.budgets.len(), 1);
    assert_eq!(v.cooldown_ms, 300_000);
}
