//! Types and helpers shared by the sensor and the controller: the custom resources, the gRPC
//! contract, the runtime frame (logging, admin server, shutdown) and well-known keys.

#![forbid(unsafe_code)]

pub mod clock;
pub mod convert;
pub mod crd;
pub mod keys;
pub mod proto;
pub mod runtime;
pub mod views;

/// The project version, reported by both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
