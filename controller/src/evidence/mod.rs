//! Evidence around a restart: the bundle gathered before a pod is deleted, and the hand-off of
//! still-spooled bundles between replicas.

pub mod bundle;
pub mod handoff;
