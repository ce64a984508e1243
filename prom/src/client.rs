//! The HTTP side: queries go as POST forms (Prometheus accepts both GET and POST; a form body
//! keeps long PromQL clear of URL length limits and out of proxy access logs). Every answer is
//! classified into a [`PromError`] category the scaling loop can act on, and every message is
//! scrubbed of the bearer token before it leaves this module.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::result::{ApiError, Decoded, decode};
use crate::{PromError, QueryResult};

/// How much of an unexpected body goes into an error message.
const BODY_SNIPPET_CHARS: usize = 200;

/// The largest answer read by default (4 MiB). One workload's series over an hour at a one-minute
/// step is a few kilobytes; a query that matches thousands of series is a policy to fix, not an
/// answer to hold in the controller's memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A bearer token for Prometheus behind an authenticating proxy. Its `Debug` is redacted and the
/// header carrying it is marked sensitive, so neither logs nor errors show it.
#[derive(Clone)]
pub struct BearerToken(HeaderValue);

impl BearerToken {
    /// `token` without the `Bearer ` prefix; surrounding whitespace (a trailing newline from a
    /// token file) is trimmed.
    pub fn new(token: &str) -> Result<Self, PromError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(PromError::Config("the bearer token is empty".to_owned()));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            PromError::Config(
                "the bearer token has characters not allowed in an HTTP header".to_owned(),
            )
        })?;
        header.set_sensitive(true);
        Ok(Self(header))
    }

    fn secret(&self) -> Option<&str> {
        self.0.to_str().ok()?.strip_prefix("Bearer ")
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// A client for one Prometheus server's HTTP API (`/api/v1/query`, `/api/v1/query_range`).
///
/// Built on reqwest with rustls and the process's default crypto provider: the controller installs
/// ring's at start; where nothing did, [`PromClient::new`] installs it.
#[derive(Clone, Debug)]
pub struct PromClient {
    http: reqwest::Client,
    /// Without a trailing slash; may carry a path prefix (`--web.route-prefix`).
    base_url: String,
    timeout: Duration,
    token: Option<BearerToken>,
    /// Answers longer than this are refused ([`PromError::TooLarge`]) while they stream in.
    max_response_bytes: usize,
}

impl PromClient {
    /// A client for the Prometheus at `base_url` (`http://prometheus:9090`, or with a path
    /// prefix). `timeout` bounds each request, and is also sent as the query's `timeout` so
    /// Prometheus stops evaluating once nobody waits for the answer.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, PromError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| PromError::Config(format!("the base URL is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PromError::Config(format!(
                "the base URL must be http or https, not `{}`",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(PromError::Config(
                "credentials in the base URL are not supported; use a bearer token".to_owned(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(PromError::Config(format!(
                "the base URL `{}` must not have a query or fragment",
                url.as_str()
            )));
        }
        if timeout.is_zero() {
            return Err(PromError::Config(
                "the timeout must be above zero".to_owned(),
            ));
        }
        // reqwest built with `rustls-no-provider` panics in `build()` when the process has no
        // default provider; install ring's unless the binary already chose one (kube-client
        // does the same with aws-lc-rs). Losing a race to another installer is fine.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| PromError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: url.as_str().trim_end_matches('/').to_owned(),
            timeout,
            token: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Refuses answers longer than `bytes` ([`DEFAULT_MAX_RESPONSE_BYTES`] unless set): the body
    /// is read in chunks and the read stops at the limit, so a huge answer never sits in memory.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every query.
    pub fn with_bearer_token(mut self, token: BearerToken) -> Self {
        self.token = Some(token);
        self
    }

    /// The base URL queries go to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Evaluates `query` at one instant: `at`, or the server's "now" when `None`.
    pub async fn instant(
        &self,
        query: &str,
        at: Option<SystemTime>,
    ) -> Result<QueryResult, PromError> {
        let mut form = vec![
            ("query", query.to_owned()),
            ("timeout", seconds(self.timeout)),
        ];
        if let Some(at) = at {
            form.push(("time", unix_seconds(at)));
        }
        self.post("/api/v1/query", query, &form).await
    }

    /// Evaluates `query` at every `step` from `start` to `end` (both included). Prometheus
    /// refuses `end` before `start`, a zero `step` and more than 11,000 points per series, as
    /// [`PromError::BadQuery`].
    pub async fn range(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<QueryResult, PromError> {
        let form = [
            ("query", query.to_owned()),
            ("start", unix_seconds(start)),
            ("end", unix_seconds(end)),
            ("step", seconds(step)),
            ("timeout", seconds(self.timeout)),
        ];
        self.post("/api/v1/query_range", query, &form).await
    }

    async fn post(
        &self,
        path: &str,
        query: &str,
        form: &[(&str, String)],
    ) -> Result<QueryResult, PromError> {
        let endpoint = format!("{}{path}", self.base_url);
        let mut request = self.http.post(&endpoint).form(form);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.0.clone());
        }
        self.exchange(request, &endpoint, query)
            .await
            .map_err(|e| self.scrub(e))
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: &str,
        query: &str,
    ) -> Result<QueryResult, PromError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e, self.timeout))?;
        let status = response.status();
        let body = read_capped(response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                Capped::TooLarge => PromError::TooLarge {
                    limit: self.max_response_bytes,
                },
                Capped::Transport(e) => transport_error(endpoint, &e, self.timeout),
            })?;
        let decoded = decode(&body);

        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let detail = match &decoded {
                Ok(Err(ApiError { error_type, error })) => format!("{error_type}: {error}"),
                _ => snippet(&body),
            };
            return Err(PromError::Unavailable(format!(
                "{endpoint} answered {status}: {detail}"
            )));
        }
        match decoded {
            Ok(Ok(Decoded { result, warnings })) if status.is_success() => {
                for warning in warnings {
                    tracing::warn!(query, warning, "Prometheus answered with a warning");
                }
                Ok(result)
            }
            Ok(Err(ApiError { error_type, error }))
                if status.is_success()
                    || status == StatusCode::BAD_REQUEST
                    || status == StatusCode::UNPROCESSABLE_ENTITY =>
            {
                Err(PromError::BadQuery {
                    query: query.to_owned(),
                    error_type,
                    error,
                })
            }
            Err(PromError::BadResponse(why)) if status.is_success() => {
                Err(PromError::BadResponse(format!("{endpoint}: {why}")))
            }
            _ => Err(PromError::BadResponse(format!(
                "{endpoint} answered {status}: {}",
                snippet(&body)
            ))),
        }
    }

    /// Removes the bearer token from an error's text, in case a proxy echoed request headers.
    fn scrub(&self, err: PromError) -> PromError {
        let Some(secret) = self.token.as_ref().and_then(BearerToken::secret) else {
            return err;
        };
        let clean = |s: String| s.replace(secret, "<redacted>");
        match err {
            PromError::Config(m) => PromError::Config(clean(m)),
            PromError::BadQuery {
                query,
                error_type,
                error,
            } => PromError::BadQuery {
                query: clean(query),
                error_type: clean(error_type),
                error: clean(error),
            },
            PromError::Unavailable(m) => PromError::Unavailable(clean(m)),
            PromError::BadResponse(m) => PromError::BadResponse(clean(m)),
            PromError::TooLarge { limit } => PromError::TooLarge { limit },
        }
    }
}

enum Capped {
    TooLarge,
    Transport(reqwest::Error),
}

/// The body, read chunk by chunk and given up as soon as it passes `limit` bytes (a declared
/// Content-Length above it is refused before reading anything).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Capped> {
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |n| n > limit) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(Capped::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failure before a complete answer: refused or reset connection, DNS, timeout. The message
/// walks the error's sources (reqwest's own text is only "error sending request").
fn transport_error(endpoint: &str, err: &reqwest::Error, timeout: Duration) -> PromError {
    if err.is_timeout() {
        return PromError::Unavailable(format!("no answer from {endpoint} within {timeout:?}"));
    }
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        // reqwest prints the URL in its own message; the endpoint is already in front.
        let text = text
            .split_once(" for url (")
            .map_or(text.as_str(), |(head, _)| head)
            .to_owned();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    PromError::Unavailable(format!("{endpoint}: {}", parts.join(": ")))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut cut: String = text.chars().take(BODY_SNIPPET_CHARS).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    cut
}

/// Seconds as Prometheus's API takes them for `step` and `timeout` (a float).
fn seconds(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

/// A Unix timestamp in float seconds with millisecond precision, Prometheus's resolution.
fn unix_seconds(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:03}", d.as_secs(), d.subsec_millis()),
        Err(before) => {
            let d = before.duration();
            format!("-{}.{:03}", d.as_secs(), d.subsec_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_float_seconds() {
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            "1700000000.123"
        );
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(5)), "5.000");
        assert_eq!(
            unix_seconds(UNIX_EPOCH - Duration::from_millis(5500)),
            "-5.500"
        );
        assert_eq!(seconds(Duration::from_secs(15)), "15");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(snippet(long.as_bytes()).len(), BODY_SNIPPET_CHARS + 3);
        assert_eq!(snippet(b"  "), "(empty body)");
    }

    #[test]
    fn bearer_token_is_redacted_and_validated() {
        let token = BearerToken::new(" s3cr3t-token\n").unwrap();
        assert_eq!(token.secret(), Some("s3cr3t-token"));
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(BearerToken::new("  ").is_err());
        let err = BearerToken::new("bad\u{7f}token").unwrap_err();
        assert!(!err.to_string().contains("bad"), "{err}");
    }
}
