//! Evidence bundles: what auto-agent saves before any destructive action, so the failure can be
//! studied after the pod is gone. The document schema ([`document`]), the seed's key layout
//! ([`key`]), redaction ([`redact`]), the S3 and filesystem stores ([`store`]), and the local
//! spool with its delivery loop ([`spool`], [`keeper`]) that make sure no bundle is lost when a
//! store is unreachable.

#![forbid(unsafe_code)]

pub mod document;
pub mod keeper;
pub mod key;
pub mod redact;
pub mod spool;
pub mod store;

pub use document::{Bundle, BundleInput, Caps};
pub use keeper::{Durability, EvidenceMetrics, Keeper, SaveError, Saved};
pub use key::{KeyError, KeyParts, bundle_key, validate_key};
pub use spool::Spool;
pub use store::{Destination, S3Settings, Sse, Stores};
