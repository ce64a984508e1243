//! The controller of auto-agent as a library, in stages whose dependencies point one way
//! (`tests/layering.rs` enforces the order):
//!
//! ```text
//! platform   leader election and fencing, metrics, Events, installed features
//! cluster    reads of workloads (GET with a short cache; namespace lists for status and scaling)
//! policies   the AutoRemediationPolicy and NodeRemediationPolicy indexes and their status writers
//! ingest     sensor authentication, gRPC streams, the incident pipeline
//! evidence   evidence bundles for restarts and the spool hand-off between replicas
//! act        the executor: fenced writes for every planned action
//! escalate   Slack threads and tickets per incident key (leader-only stage)
//! gitops     pull requests instead of live patches for GitOps-managed workloads (leader-only stage)
//! reconcile  gather -> decide (engine) -> reserve (ledger) -> act -> report, for pods, nodes, scaling
//! app        the wiring
//! ```

#![forbid(unsafe_code)]

pub mod act;
pub mod app;
pub mod args;
pub mod cluster;
pub mod escalate;
pub mod evidence;
pub mod gitops;
pub mod ingest;
pub mod platform;
pub mod policies;
pub mod reconcile;
#[cfg(test)]
pub(crate) mod testing;
