//! Edge-triggered detection: compare what was seen before with what is seen now and emit one finding
//! per transition or per container restart, never one per watch event.
//!
//! Finding ids are derived from the transition itself (pod uid, container, kind, restart count or
//! image; node, condition, edge, transition time). A sensor that restarts sees every object for the
//! first time again and re-emits the same ids, which the controller recognises as resends, so old
//! failures are never reported as new.

mod node;
mod owner;
mod pod;

pub use node::detect_node;
pub use owner::resolve_owner;
pub use pod::detect_pod;
