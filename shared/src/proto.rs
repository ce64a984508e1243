//! Generated code for `proto/autoagent/v1` (sensor -> controller contract).

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

pub mod v1 {
    tonic::include_proto!("autoagent.v1");
}
