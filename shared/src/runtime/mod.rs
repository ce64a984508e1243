//! The runtime frame both binaries share: logging, the admin HTTP server, shutdown signals.

pub mod admin;
pub mod kube_config;
pub mod logging;
pub mod metrics;
pub mod shutdown;

pub use admin::{AdminArgs, AdminServer, Readiness};
pub use logging::{LogArgs, LogFormat};
pub use shutdown::Shutdown;
