//! The project's custom resources and the YAML generated from them.
//!
//! The Rust types are the source of truth; `cargo xtask crdgen` writes `crds/*.yaml` and the chart's
//! copy, and `tests/crd_drift.rs` fails when either is stale.

pub mod common;
pub mod node_policy;
pub mod policy;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{
    ActionOutcome, ActionType, Budget, BudgetScope, CONDITION_DEGRADED, CONDITION_READY,
    MAX_RECENT_ACTIONS, PolicyStatus, RecentAction,
};
pub use node_policy::{NodeConditionType, NodeRemediationPolicy, NodeRemediationPolicySpec};
pub use policy::{AutoRemediationPolicy, AutoRemediationPolicySpec};

/// Every CRD with the file name it is written to.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        (
            "autoremediationpolicies.autoagent.io.yaml",
            AutoRemediationPolicy::crd(),
        ),
        (
            "noderemediationpolicies.autoagent.io.yaml",
            NodeRemediationPolicy::crd(),
        ),
    ]
}

/// The header written above each generated file.
pub const GENERATED_HEADER: &str =
    "# Generated from the Rust types in shared/src/crd by `cargo xtask crdgen`. Do not edit.\n";

/// Renders one CRD as the YAML document committed to the repository.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    Ok(format!(
        "{GENERATED_HEADER}{}",
        serde_norway::to_string(crd)?
    ))
}

/// Every generated file: (file name, contents).
pub fn rendered() -> Result<Vec<(&'static str, String)>, serde_norway::Error> {
    all()
        .into_iter()
        .map(|(name, crd)| Ok((name, render(&crd)?)))
        .collect()
}

/// Directories, relative to the repository root, that hold a copy of the generated CRDs.
pub const OUTPUT_DIRS: &[&str] = &["crds", "charts/auto-agent/crds"];
