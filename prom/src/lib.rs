//! A client for the Prometheus HTTP API, for the controller's scaling loop: it reads the metric a
//! policy scales on (`instant`) or its recent history (`range`) and needs to tell "the metric is
//! absent" (an empty result), "the query is wrong" (fix the policy) and "Prometheus is down" (hold
//! and retry) apart, so each is a distinct value or [`PromError`] category.
//!
//! ```no_run
//! # async fn example() -> Result<(), auto_agent_prom::PromError> {
//! use std::time::Duration;
//! let prom = auto_agent_prom::PromClient::new("http://prometheus:9090", Duration::from_secs(5))?;
//! let busy = prom
//!     .instant("avg(rate(http_requests_total{app=\"api\"}[1m]))", None)
//!     .await?
//!     .single_value();
//! # Ok(()) }
//! ```

mod client;
mod error;
mod result;
pub mod scope;

pub use client::{BearerToken, DEFAULT_MAX_RESPONSE_BYTES, PromClient};
pub use error::PromError;
pub use result::{QueryResult, Sample, Series};
