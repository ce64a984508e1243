//! What every stage runs on: leader election with its fence, metrics, Events, the features this
//! installation allows, and the gRPC server's reloading TLS identity.

pub mod events;
pub mod features;
pub mod leader;
pub mod metrics;
pub mod records;
pub mod tls;
