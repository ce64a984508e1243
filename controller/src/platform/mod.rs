//! What every stage runs on: leader election with its fence, metrics, Events, the incidents view,
//! the features this installation allows, and the gRPC server's reloading TLS identity.

pub mod events;
pub mod features;
pub mod incidents;
pub mod leader;
pub mod metrics;
pub mod records;
pub mod tls;
