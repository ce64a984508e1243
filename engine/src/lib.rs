//! The decision core of auto-agent. No Kubernetes client, no async runtime, no network, no clock:
//! callers pass facts and the current time in, and get data (findings, incident keys, plans) out.
//! This keeps every decision reproducible in plain table-driven tests.

#![forbid(unsafe_code)]

pub mod decide;
pub mod detect;
pub mod finding;
pub mod incident;
pub mod incident_book;
pub mod quantity;
pub mod scale;
pub mod selector;
pub mod view;

pub use finding::{Finding, FindingKind, PodRef, Transition, WorkloadRef};
pub use incident::{IncidentKey, IncidentKeyError};
pub use incident_book::{BookLimits, Incident, IncidentBook, IncidentState, Observed};
pub use selector::{Selector, SelectorError};
pub use view::{ContainerState, ContainerView, NodeConditionView, NodeView, PodView, Terminated};
