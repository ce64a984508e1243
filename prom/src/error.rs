//! What can go wrong asking Prometheus, split by what the caller should do about it: a query the
//! server rejects will fail the same way next time (fix the policy), an unreachable or overloaded
//! server may answer on the next tick (hold, retry), and an answer we cannot read points at a
//! wrong URL or a proxy in the way. Messages never carry the bearer token.

/// An error from [`PromClient`](crate::PromClient).
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The client cannot be built: bad base URL, zero timeout, unusable token.
    #[error("invalid Prometheus client configuration: {0}")]
    Config(String),
    /// Prometheus refused the query (HTTP 400 `bad_data`: PromQL syntax or parameters; HTTP 422
    /// `execution`: the query cannot be evaluated, e.g. many-to-many matching or too many samples).
    #[error("Prometheus rejected the query `{query}` ({error_type}): {error}")]
    BadQuery {
        query: String,
        /// Prometheus's `errorType`, e.g. `bad_data`, `execution`.
        error_type: String,
        error: String,
    },
    /// No answer: connection refused or reset, client timeout, HTTP 5xx or 429 (including
    /// Prometheus's own 503 `timeout`/`canceled`).
    #[error("Prometheus is unavailable: {0}")]
    Unavailable(String),
    /// An answer that is not a Prometheus API response we understand: not JSON, an unknown
    /// `resultType`, an unparseable value, or an unexpected HTTP status such as 401, 403 or 404.
    #[error("unexpected answer from Prometheus: {0}")]
    BadResponse(String),
    /// The answer is longer than the client reads ([`PromClient::with_max_response_bytes`]):
    /// the query matches far more than one workload's series.
    ///
    /// [`PromClient::with_max_response_bytes`]: crate::PromClient::with_max_response_bytes
    #[error("the answer from Prometheus exceeds {limit} bytes; the query selects too much")]
    TooLarge { limit: usize },
}

impl PromError {
    /// A short, stable label for metrics (`bad_query`, `unavailable`, `bad_response`, `config`,
    /// `too_large`).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::BadQuery { .. } => "bad_query",
            Self::Unavailable(_) => "unavailable",
            Self::BadResponse(_) => "bad_response",
            Self::TooLarge { .. } => "too_large",
        }
    }
}
