//! The policies: guarded watches feeding synchronous indexes that decisions read, and the writers of
//! their status (what the reconcile stage records in `recent` and `health` shows there).

pub mod health;
pub mod index;
pub mod node_index;
pub mod node_status;
pub mod recent;
pub mod status;
