//! Reads of the cluster that several stages share: workloads by GET (cached briefly) or by namespace
//! list, and what a pod's or workload's state says (pure functions of the objects).

pub mod facts;
pub mod owner;
pub mod workloads;
