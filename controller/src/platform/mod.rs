//! What every stage runs on: leader election with its fence, metrics, Events, and the features this
//! installation allows.

pub mod events;
pub mod features;
pub mod leader;
pub mod metrics;
