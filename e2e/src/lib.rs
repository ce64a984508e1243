//! Support library for tests on the real local control plane started by `e2e/cluster`.
//!
//! - [`Cluster`]: start or reuse the cluster, admin client, ServiceAccount clients (TokenRequest).
//! - [`TestNamespace`]: a fresh namespace per test, deleted when dropped.
//! - [`wait`]: waits on watches or polls with deadlines, never bare sleeps.
//! - [`scenario`]: put pods and nodes into the failure states the agent remediates.
//! - [`Workload`]: the one Deployment builder every test uses.
//! - [`Setup`]: a test's namespace, chart and agents, policies and workloads, torn down as one.
//! - [`helm`]: the Helm CLI and the project's chart (lint, template, install with its identities).
//! - [`manifests`]: the chart rendered by `helm template` as JSON, with accessors for the tests.
//! - The scale benchmark (`make bench`): [`scale`] populates the cluster, [`loadgen`] speaks the
//!   sensor protocol for many nodes, [`apiserver`] reads the apiserver's load, [`plot`] writes
//!   the CSV and SVG files.

#![allow(clippy::expect_used)]

pub mod agents;
pub mod apiserver;
pub mod audit;
pub mod bench;
pub mod cluster;
pub mod contract;
pub mod exporter;
pub mod gitea;
pub mod helm;
pub mod ingest;
pub mod llm;
pub mod loadgen;
pub mod manifests;
pub mod namespace;
pub mod pki;
pub mod plot;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod real_node;
pub mod registry;
pub mod s3;
pub mod scale;
pub mod scenario;
pub mod setup;
pub mod steps;
pub mod wait;
pub mod workloads;

pub use cluster::Cluster;
pub use namespace::TestNamespace;
pub use setup::Setup;
pub use workloads::Workload;
