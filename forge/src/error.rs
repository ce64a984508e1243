//! What a forge call can end in, and whether trying again can help.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// Rate limited (429, or 403 with `x-ratelimit-remaining: 0`) or the server failed (5xx): try
    /// again, after `after` when the server said.
    #[error("{provider} is busy or failing ({status}); retry{}", after.map(|a| format!(" after {}s", a.as_secs())).unwrap_or_default())]
    Retry {
        provider: &'static str,
        status: u16,
        after: Option<Duration>,
    },
    /// The server could not be reached or the connection broke: try again with backoff.
    #[error("{provider} unreachable: {reason}")]
    Unreachable {
        provider: &'static str,
        reason: String,
    },
    /// The token is missing, wrong or lacks a scope (401/403): a human must fix the Secret.
    #[error("{provider} refused the credentials ({status})")]
    Unauthorized { provider: &'static str, status: u16 },
    /// The project or issue does not exist (404).
    #[error("{provider}: {what} not found")]
    NotFound {
        provider: &'static str,
        what: String,
    },
    /// The request was refused for a reason a retry cannot change (400, 409, 410, 422).
    #[error("{provider} rejected the request ({status}): {reason}")]
    Rejected {
        provider: &'static str,
        status: u16,
        reason: String,
    },
    /// The answer was not what the API documents.
    #[error("{provider} answered unexpectedly: {reason}")]
    Protocol {
        provider: &'static str,
        reason: String,
    },
    /// The configuration or an argument cannot make a valid request (bad API URL, empty token,
    /// malformed project or label): nothing was sent, the caller must fix it.
    #[error("{provider} client misconfigured: {reason}")]
    Config {
        provider: &'static str,
        reason: String,
    },
}

impl ForgeError {
    /// Whether trying the same call again later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Unreachable { .. })
    }

    /// How long the server asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retry { after, .. } => *after,
            _ => None,
        }
    }

    /// A short label for metrics: `rate_limited`, `server_error`, `unreachable`, `unauthorized`,
    /// `not_found`, `rejected`, `protocol`, `config`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Retry { status: 429, .. } | Self::Retry { status: 403, .. } => "rate_limited",
            Self::Retry { .. } => "server_error",
            Self::Unreachable { .. } => "unreachable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::Rejected { .. } => "rejected",
            Self::Protocol { .. } => "protocol",
            Self::Config { .. } => "config",
        }
    }
}
