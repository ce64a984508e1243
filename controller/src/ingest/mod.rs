//! From sensors to incidents: stream authentication (local token checks, then TokenReview bound to
//! a node), the gRPC server with its limits (per peer, per node, per stream), and the incident
//! pipeline whose changes the reconcile stage consumes.

pub mod auth;
pub mod limits;
pub mod pipeline;
pub mod server;
pub mod verify;
