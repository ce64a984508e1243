//! The policy types accept the seed example as written, carry the validation the apiserver
//! enforces, and every invalid fixture names the field its error must mention.
//! (The apiserver itself checks the fixtures in the e2e smoke tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use auto_agent_shared::crd::{
    ActionType, AutoRemediationPolicy, BudgetScope, NodeConditionType, NodeRemediationPolicy,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResourceExt;

const SEED: &str = r##"
apiVersion: autoagent.io/v1alpha1
kind: AutoRemediationPolicy
metadata: {name: api-prod, namespace: prod}
spec:
  targetSelector: {matchLabels: {app: api}}
  actions:
    restartStuckPods: true
    bumpMemoryPercent: 20
    scale: {enabled: true, minReplicas: 3, maxReplicas: 30}
  escalation: {slackChannel: "#prod-incidents"}
"##;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/fixtures/policies")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn seed_example_deserializes_with_defaults() {
    let policy: AutoRemediationPolicy = serde_norway::from_str(SEED).unwrap();
    assert_eq!(policy.metadata.name.as_deref(), Some("api-prod"));
    assert_eq!(policy.metadata.namespace.as_deref(), Some("prod"));
    let spec = &policy.spec;
    let labels = spec.target_selector.match_labels.as_ref().unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("api"));
    assert!(spec.actions.restart_stuck_pods);
    assert_eq!(spec.actions.bump_memory_percent, Some(20));
    let scale = spec.actions.scale.as_ref().unwrap();
    assert!(scale.enabled);
    assert_eq!((scale.min_replicas, scale.max_replicas), (3, 30));
    // Defaults the seed leaves out.
    assert_eq!(scale.scale_down_cpu_threshold, 0.30);
    assert!(scale.cooldown_down_seconds > scale.cooldown_up_seconds);
    assert!(!spec.dry_run);
    assert!(!spec.actions.evict_on_node_pressure);
    assert_eq!(
        spec.escalation.as_ref().unwrap().slack_channel.as_deref(),
        Some("#prod-incidents")
    );
}

#[test]
fn the_seed_fixture_is_the_seed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/fixtures/policies/valid/seed-api-prod.yaml");
    let file: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let seed: serde_json::Value = serde_norway::from_str(SEED).unwrap();
    assert_eq!(file, seed);
}

#[test]
fn valid_fixtures_deserialize() {
    let files = fixtures("valid");
    assert!(files.len() >= 3);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_norway::from_str(&text).unwrap();
        match value["kind"].as_str() {
            Some("AutoRemediationPolicy") => {
                serde_json::from_value::<AutoRemediationPolicy>(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some("NodeRemediationPolicy") => {
                serde_json::from_value::<NodeRemediationPolicy>(value)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
}

#[test]
fn full_fixture_sets_every_section() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures/policies/valid/full.yaml");
    let policy: AutoRemediationPolicy =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let s = &policy.spec;
    assert!(s.exclude_selector.is_some() && s.escalation.is_some() && s.log_bundle.is_some());
    assert!(s.git_ops.is_some() && s.safety.is_some() && s.dry_run);
    let gates = s.actions.scale.as_ref().unwrap().gates.as_ref().unwrap();
    assert!(
        gates.queue_depth.is_some() && gates.error_rate.is_some() && gates.p95_latency.is_some()
    );
    assert_eq!(s.budgets.len(), 4);
    assert_eq!(s.budgets[3].scope, BudgetScope::Namespace);
    assert_eq!(s.safety.as_ref().unwrap().storm_window_seconds, 2);
    assert_eq!(s.budgets[1].scope, BudgetScope::Policy);
    assert_eq!(
        s.budgets[2].scope,
        BudgetScope::Target,
        "scope defaults to Target"
    );
    assert_eq!(s.budgets[2].action, ActionType::BumpMemory);
}

#[test]
fn node_policy_defaults() {
    let p: NodeRemediationPolicy = serde_norway::from_str(
        "apiVersion: autoagent.io/v1alpha1\nkind: NodeRemediationPolicy\nmetadata: {name: n}\n\
         spec: {nodeSelector: {}, conditions: [PIDPressure, NotReady]}\n",
    )
    .unwrap();
    assert_eq!(
        p.spec.conditions,
        vec![NodeConditionType::PidPressure, NodeConditionType::NotReady]
    );
    assert!(p.spec.cordon && !p.spec.evict && !p.spec.dry_run);
    assert_eq!(p.spec.max_unavailable_nodes, IntOrString::Int(1));
    assert_eq!(p.spec.unhealthy_threshold_percent, 55);
}

/// Every invalid fixture says which field the apiserver's error must name.
#[test]
fn invalid_fixtures_name_the_field_they_break() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 6,
        "the smoke tests need at least 6 invalid policies"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect: <field>' line", path.display()));
        assert!(expect.starts_with("spec."), "{}: {expect}", path.display());
    }
}

/// The rules that only the apiserver evaluates are present in the generated schema.
#[test]
fn schema_carries_bounds_and_cel_rules() {
    let arp = serde_json::to_string(&AutoRemediationPolicy::crd()).unwrap();
    for needle in [
        "self.minReplicas <= self.maxReplicas",
        "self.scaleDownCpuThreshold < self.cpuThreshold",
        "has(self.s3) != has(self.filesystem)",
        "isQuantity(self)",
        r#""maximum":1000.0"#,
        r#""shortNames":["arp"]"#,
        r#""scope":"Namespaced""#,
        r#""subresources":{"status":{}}"#,
    ] {
        assert!(
            arp.contains(needle),
            "AutoRemediationPolicy CRD lacks {needle}"
        );
    }
    let nrp = serde_json::to_string(&NodeRemediationPolicy::crd()).unwrap();
    for needle in [
        r#""shortNames":["nrp"]"#,
        r#""scope":"Cluster""#,
        "x-kubernetes-int-or-string",
        "self.cordon || !self.evict",
    ] {
        assert!(
            nrp.contains(needle),
            "NodeRemediationPolicy CRD lacks {needle}"
        );
    }
}
