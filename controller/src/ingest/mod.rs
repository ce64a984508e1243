//! From sensors to incidents: stream authentication (TokenReview bound to a node), the gRPC server
//! with its limits, and the incident pipeline whose changes the reconcile stage consumes.

pub mod auth;
pub mod pipeline;
pub mod server;
pub mod verify;
