//! The HTTP layer the three clients share: one reqwest client (rustls on ring, the platform's
//! roots), each forge's auth headers, capped bodies, and the mapping of answers to [`ForgeError`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use rustls_platform_verifier::BuilderVerifierExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ForgeError;
use crate::issues::ForgeKind;
use crate::secret::Secret;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A page of 100 issues with long bodies stays well below this; anything larger is not an answer
/// we asked for.
pub(crate) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// The longest wait a rate limit may impose before the caller tries again.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// GitHub's advice for a secondary rate limit that names no wait: at least a minute.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
const REASON_CHARS: usize = 200;
const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("auto-agent/", env!("CARGO_PKG_VERSION"));

/// A configured connection to one forge's API.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    kind: ForgeKind,
    /// The API root (`https://api.github.com`, `https://gitlab.example/api/v4`, ...).
    base: Url,
    /// Kept only to scrub it from error text a server might echo.
    token: Secret,
    timeout: Duration,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("kind", &self.kind)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A successful answer: its headers and body.
pub(crate) struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Http {
    pub(crate) fn new(
        kind: ForgeKind,
        api_url: &str,
        token: &Secret,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, ForgeError> {
        let config = |reason: String| ForgeError::Config {
            provider: kind.name(),
            reason,
        };
        let base = Url::parse(api_url)
            .map_err(|e| config(format!("the API URL is not a valid URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config(format!(
                "the API URL must be http or https, not `{}`",
                base.scheme()
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(config(
                "the API URL must not carry credentials; the token goes in its own field".into(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config(
                "the API URL must not have a query or fragment".into(),
            ));
        }
        if token.is_empty() {
            return Err(config("the token is empty".into()));
        }
        let headers = auth_headers(kind, token)?;

        // ring explicitly, so the client never depends on which provider the process installed.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| config(format!("setting up TLS: {e}")))?
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::custom(same_origin_only))
            .build()
            .map_err(|e| config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            kind,
            base,
            token: token.clone(),
            timeout,
        })
    }

    pub(crate) fn kind(&self) -> ForgeKind {
        self.kind
    }

    /// The API root with `segments` appended, each percent-encoded as one segment (a `/` inside
    /// one becomes `%2F`, as GitLab wants project paths), and `query` added.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        // Only URLs without a host cannot take segments; `new` admits http(s) URLs only.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request; a non-2xx answer becomes the matching [`ForgeError`]. `what` names
    /// the resource for a 404 (`repository o/r`, `issue #4 in o/r`).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer, ForgeError> {
        tracing::debug!(forge = self.kind.name(), %method, path = url.path(), "forge request");
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.scrub(transport_error(self.kind, &e, self.timeout)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, MAX_BODY_BYTES).await;
        if status.is_success() {
            let body = match body {
                Ok(body) => body,
                Err(Capped::TooLarge) => {
                    return Err(self.protocol(format!(
                        "the answer is larger than {} MiB",
                        MAX_BODY_BYTES / (1024 * 1024)
                    )));
                }
                Err(Capped::Transport(e)) => {
                    return Err(self.scrub(transport_error(self.kind, &e, self.timeout)));
                }
            };
            return Ok(Answer { headers, body });
        }
        // An error's body only supplies the reason; without it the status still decides.
        let body = body.unwrap_or_default();
        let err = classify(
            self.kind,
            status.as_u16(),
            &headers,
            &body,
            what,
            SystemTime::now(),
        );
        tracing::debug!(
            forge = self.kind.name(),
            status = status.as_u16(),
            category = err.category(),
            "forge request failed"
        );
        Err(self.scrub(err))
    }

    /// [`send`](Self::send), then the body decoded as `T`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, ForgeError> {
        let answer = self.send(method, url, body, what).await?;
        self.decode(&answer.body, what)
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        body: &[u8],
        what: &str,
    ) -> Result<T, ForgeError> {
        serde_json::from_slice(body).map_err(|e| {
            self.protocol(format!(
                "{what}: the answer is not the documented JSON ({e})"
            ))
        })
    }

    pub(crate) fn protocol(&self, reason: String) -> ForgeError {
        self.scrub(ForgeError::Protocol {
            provider: self.kind.name(),
            reason,
        })
    }

    /// Removes the token from any text that came from elsewhere, in case a server or proxy
    /// echoed a request header.
    fn scrub(&self, err: ForgeError) -> ForgeError {
        let secret = self.token.expose();
        let clean = |s: String| {
            if secret.is_empty() {
                s
            } else {
                s.replace(secret, "<redacted>")
            }
        };
        match err {
            ForgeError::Unreachable { provider, reason } => ForgeError::Unreachable {
                provider,
                reason: clean(reason),
            },
            ForgeError::NotFound { provider, what } => ForgeError::NotFound {
                provider,
                what: clean(what),
            },
            ForgeError::Rejected {
                provider,
                status,
                reason,
            } => ForgeError::Rejected {
                provider,
                status,
                reason: clean(reason),
            },
            ForgeError::Protocol { provider, reason } => ForgeError::Protocol {
                provider,
                reason: clean(reason),
            },
            ForgeError::Config { provider, reason } => ForgeError::Config {
                provider,
                reason: clean(reason),
            },
            other @ (ForgeError::Retry { .. } | ForgeError::Unauthorized { .. }) => other,
        }
    }
}

/// The headers every request to `kind` carries; the credential one is marked sensitive so
/// reqwest and hyper never print it.
fn auth_headers(kind: ForgeKind, token: &Secret) -> Result<HeaderMap, ForgeError> {
    let (name, value) = match kind {
        ForgeKind::GitHub => (AUTHORIZATION, format!("Bearer {}", token.expose())),
        ForgeKind::GitLab => (
            HeaderName::from_static("private-token"),
            token.expose().to_owned(),
        ),
        ForgeKind::Gitea => (AUTHORIZATION, format!("token {}", token.expose())),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| ForgeError::Config {
        provider: kind.name(),
        reason: "the token has characters a header cannot carry".into(),
    })?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    match kind {
        ForgeKind::GitHub => {
            headers.insert(
                ACCEPT,
                HeaderValue::from_static("application/vnd.github+json"),
            );
            headers.insert(
                HeaderName::from_static("x-github-api-version"),
                HeaderValue::from_static("2022-11-28"),
            );
        }
        ForgeKind::GitLab | ForgeKind::Gitea => {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
    }
    Ok(headers)
}

/// Redirects are followed within the API's origin only: the token headers (GitLab's
/// `PRIVATE-TOKEN` included) must never reach another host.
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let same = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    if same && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// What an answer that is not 2xx means, by the rules each forge documents.
pub(crate) fn classify(
    kind: ForgeKind,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    now: SystemTime,
) -> ForgeError {
    let provider = kind.name();
    match status {
        403 | 429 => match rate_limit(kind, status, headers, body, now) {
            Some(after) => ForgeError::Retry {
                provider,
                status,
                after,
            },
            None => ForgeError::Unauthorized { provider, status },
        },
        401 => ForgeError::Unauthorized { provider, status },
        404 => ForgeError::NotFound {
            provider,
            what: what.to_owned(),
        },
        500..=599 => ForgeError::Retry {
            provider,
            status,
            after: seconds_header(headers, "retry-after"),
        },
        400..=499 => ForgeError::Rejected {
            provider,
            status,
            reason: reason(body),
        },
        300..=399 => ForgeError::Protocol {
            provider,
            reason: format!("redirected ({status}) to another origin, which is not followed"),
        },
        _ => ForgeError::Protocol {
            provider,
            reason: format!("unexpected status {status}"),
        },
    }
}

/// For a 403 or 429: `Some(wait)` when it is a rate limit (`Some(None)`: no stated end), `None`
/// when a 403 is a plain refusal.
fn rate_limit(
    kind: ForgeKind,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Option<Option<Duration>> {
    // GitHub's secondary limits and every forge's 429 may say how long to wait.
    if let Some(after) = seconds_header(headers, "retry-after") {
        return Some(Some(after));
    }
    match kind {
        ForgeKind::GitHub => {
            if header(headers, "x-ratelimit-remaining") == Some("0") {
                return Some(epoch_header(headers, "x-ratelimit-reset", now));
            }
            let secondary = message(body)
                .is_some_and(|m| m.to_ascii_lowercase().contains("secondary rate limit"));
            if status == 403 && secondary {
                return Some(Some(SECONDARY_LIMIT_WAIT));
            }
        }
        // GitLab.com sends RateLimit-* on ordinary answers too; only a 429 is a limit.
        ForgeKind::GitLab if status == 429 => {
            return Some(epoch_header(headers, "ratelimit-reset", now));
        }
        ForgeKind::GitLab | ForgeKind::Gitea => {}
    }
    (status == 429).then_some(None)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// A header holding a number of seconds to wait, capped at [`MAX_WAIT`].
fn seconds_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let secs: u64 = header(headers, name)?.parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_WAIT))
}

/// A header holding the Unix time a limit resets: the wait until then, at least a second (a
/// reset already past must not become a busy loop), at most [`MAX_WAIT`].
fn epoch_header(headers: &HeaderMap, name: &str, now: SystemTime) -> Option<Duration> {
    let reset = UNIX_EPOCH + Duration::from_secs(header(headers, name)?.parse().ok()?);
    let wait = reset.duration_since(now).unwrap_or_default();
    Some(wait.clamp(Duration::from_secs(1), MAX_WAIT))
}

fn message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("message")?.as_str().map(str::to_owned)
}

/// A short reason from an error body: `message` (GitHub, Gitea, GitLab; GitLab's may be an
/// object of field errors), GitHub's `errors` details, GitLab's `error`; else the text itself.
fn reason(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => json_reason(&value).unwrap_or_else(|| value.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate(&text, REASON_CHARS)
}

fn json_reason(value: &Value) -> Option<String> {
    let mut out = match value.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => value.get("error")?.as_str()?.to_owned(),
    };
    let details: Vec<String> = value
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) => e
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    let field = e.get("field")?.as_str()?;
                    let code = e.get("code")?.as_str()?;
                    Some(format!("{field} {code}"))
                }),
            _ => None,
        })
        .collect();
    if !details.is_empty() {
        out = format!("{out} ({})", details.join("; "));
    }
    Some(out)
}

fn truncate(text: &str, chars: usize) -> String {
    let mut cut: String = text.chars().take(chars).collect();
    if cut.len() < text.len() {
        cut.push_str("...");
    }
    cut
}

/// A failure before a complete answer: refused or reset connection, DNS, timeout. The text
/// walks the error's causes (reqwest's own only says "error sending request") and leaves out
/// the URL, whose query could carry more than the caller wants in a log.
fn transport_error(kind: ForgeKind, err: &reqwest::Error, timeout: Duration) -> ForgeError {
    let reason = if err.is_timeout() && err.is_connect() {
        format!("no connection within {}s", CONNECT_TIMEOUT.as_secs())
    } else if err.is_timeout() {
        format!("no answer within {}s", timeout.as_secs_f32())
    } else {
        let head = if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_decode() {
            "the answer broke off"
        } else {
            "the request failed"
        };
        let mut parts = vec![head.to_owned()];
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            let text = without_urls(&e.to_string());
            if !text.is_empty() && parts.last() != Some(&text) {
                parts.push(text);
            }
            source = e.source();
        }
        parts.join(": ")
    };
    ForgeError::Unreachable {
        provider: kind.name(),
        reason,
    }
}

/// `text` with every URL cut down to its scheme and host.
fn without_urls(text: &str) -> String {
    let text = text.split_once(" for url (").map_or(text, |(head, _)| head);
    text.split(' ')
        .map(
            |word| match Url::parse(word.trim_matches(|c| c == '(' || c == ')')) {
                Ok(url) if url.has_host() => url.origin().ascii_serialization(),
                _ => word.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        map
    }

    const NOW_SECS: u64 = 1_750_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    /// What a test row expects, reduced to what the mapping decides.
    #[derive(Debug, PartialEq)]
    enum Want {
        Retry(Option<u64>),
        Unauthorized,
        NotFound,
        Rejected(String),
        Protocol,
    }

    fn reduce(err: &ForgeError) -> Want {
        match err {
            ForgeError::Retry { after, .. } => Want::Retry(after.map(|d| d.as_secs())),
            ForgeError::Unauthorized { .. } => Want::Unauthorized,
            ForgeError::NotFound { .. } => Want::NotFound,
            ForgeError::Rejected { reason, .. } => Want::Rejected(reason.clone()),
            ForgeError::Protocol { .. } => Want::Protocol,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn rejected(reason: &str) -> Want {
        Want::Rejected(reason.to_owned())
    }

    #[test]
    fn statuses_map_to_errors_by_each_forges_rules() {
        use ForgeKind::{GitHub, GitLab, Gitea};
        let reset_in_90 = (NOW_SECS + 90).to_string();
        let reset_in_2h = (NOW_SECS + 7200).to_string();
        let reset_past = (NOW_SECS - 30).to_string();
        #[rustfmt::skip]
        let rows: Vec<(&str, ForgeKind, u16, HeaderMap, &str, Want)> = vec![
            ("429 with Retry-After", GitHub, 429, headers(&[("retry-after", "7")]), "", Want::Retry(Some(7))),
            ("GitHub primary limit on 403", GitHub, 403, headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset_in_90)]), r#"{"message":"API rate limit exceeded"}"#, Want::Retry(Some(90))),
            ("GitHub primary limit on 429", GitHub, 429, headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset_in_90)]), "", Want::Retry(Some(90))),
            ("GitHub reset capped at 1 h", GitHub, 403, headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset_in_2h)]), "", Want::Retry(Some(3600))),
            ("GitHub reset already past", GitHub, 403, headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset_past)]), "", Want::Retry(Some(1))),
            ("GitHub secondary with retry-after", GitHub, 403, headers(&[("retry-after", "60"), ("x-ratelimit-remaining", "4000")]), r#"{"message":"You have exceeded a secondary rate limit"}"#, Want::Retry(Some(60))),
            ("GitHub secondary without retry-after", GitHub, 403, headers(&[("x-ratelimit-remaining", "4000")]), r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#, Want::Retry(Some(60))),
            ("GitHub 403 with quota left", GitHub, 403, headers(&[("x-ratelimit-remaining", "4999"), ("x-ratelimit-reset", &reset_in_90)]), r#"{"message":"Resource not accessible by personal access token"}"#, Want::Unauthorized),
            ("Retry-After capped at 1 h", GitHub, 429, headers(&[("retry-after", "86400")]), "", Want::Retry(Some(3600))),
            ("GitLab 429 with Retry-After", GitLab, 429, headers(&[("retry-after", "30"), ("ratelimit-reset", &reset_in_90)]), "Retry later", Want::Retry(Some(30))),
            ("GitLab 429 with RateLimit-Reset", GitLab, 429, headers(&[("ratelimit-reset", &reset_in_90)]), "Retry later", Want::Retry(Some(90))),
            ("GitLab 429 with neither", GitLab, 429, HeaderMap::new(), "Retry later", Want::Retry(None)),
            ("GitLab 403 with RateLimit headers", GitLab, 403, headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", &reset_in_90)]), r#"{"message":"403 Forbidden"}"#, Want::Unauthorized),
            ("Gitea 429 without headers", Gitea, 429, HeaderMap::new(), "", Want::Retry(None)),
            ("Gitea 403", Gitea, 403, HeaderMap::new(), r#"{"message":"token does not have required scope"}"#, Want::Unauthorized),
            ("Gitea 403 with x-ratelimit-remaining 0 (GitHub only)", Gitea, 403, headers(&[("x-ratelimit-remaining", "0")]), "", Want::Unauthorized),
            ("401", GitHub, 401, HeaderMap::new(), r#"{"message":"Bad credentials"}"#, Want::Unauthorized),
            ("401 Gitea", Gitea, 401, HeaderMap::new(), r#"{"message":"invalid username, password or token"}"#, Want::Unauthorized),
            ("404", GitLab, 404, HeaderMap::new(), r#"{"message":"404 Project Not Found"}"#, Want::NotFound),
            ("500", GitHub, 500, HeaderMap::new(), "", Want::Retry(None)),
            ("502 from a proxy", GitLab, 502, HeaderMap::new(), "<html>Bad Gateway</html>", Want::Retry(None)),
            ("503 with Retry-After", Gitea, 503, headers(&[("retry-after", "5")]), "", Want::Retry(Some(5))),
            ("400 GitLab error key", GitLab, 400, HeaderMap::new(), r#"{"error":"title is missing"}"#, rejected("title is missing")),
            ("400 GitLab field errors", GitLab, 400, HeaderMap::new(), r#"{"message":{"title":["is too long (maximum is 255 characters)"]}}"#, rejected(r#"{"title":["is too long (maximum is 255 characters)"]}"#)),
            ("409", GitLab, 409, HeaderMap::new(), r#"{"message":["Another open merge request already exists for this source branch: !4"]}"#, rejected(r#"["Another open merge request already exists for this source branch: !4"]"#)),
            ("410", GitHub, 410, HeaderMap::new(), r#"{"message":"Issues are disabled for this repo"}"#, rejected("Issues are disabled for this repo")),
            ("422 with GitHub errors", GitHub, 422, HeaderMap::new(), r#"{"message":"Validation Failed","errors":[{"resource":"Issue","code":"missing_field","field":"title"}]}"#, rejected("Validation Failed (title missing_field)")),
            ("422 with error messages", GitHub, 422, HeaderMap::new(), r#"{"message":"Validation Failed","errors":[{"resource":"Label","code":"custom","message":"name is too long"}]}"#, rejected("Validation Failed (name is too long)")),
            ("422 Gitea", Gitea, 422, HeaderMap::new(), r#"{"message":"[Title]: Required","url":"http://gitea/api/swagger"}"#, rejected("[Title]: Required")),
            ("400 plain text", Gitea, 400, HeaderMap::new(), "  bad request  ", rejected("bad request")),
            ("400 empty body", GitHub, 400, HeaderMap::new(), "", rejected("(empty body)")),
            ("other 4xx", GitHub, 415, HeaderMap::new(), r#"{"message":"Unsupported Media Type"}"#, rejected("Unsupported Media Type")),
            ("redirect not followed", GitHub, 302, HeaderMap::new(), "", Want::Protocol),
        ];
        for (name, kind, status, headers, body, want) in rows {
            let got = classify(
                kind,
                status,
                &headers,
                body.as_bytes(),
                "issue #1 in o/r",
                now(),
            );
            assert_eq!(reduce(&got), want, "{name}: got {got:?}");
            if let ForgeError::Retry { status: s, .. }
            | ForgeError::Unauthorized { status: s, .. }
            | ForgeError::Rejected { status: s, .. } = got
            {
                assert_eq!(s, status, "{name}: keeps the status");
            }
            assert_eq!(
                got.retryable(),
                matches!(want, Want::Retry(_)),
                "{name}: retryable"
            );
        }
    }

    #[test]
    fn rate_limits_and_server_errors_have_their_own_categories() {
        let limited = classify(ForgeKind::GitHub, 429, &HeaderMap::new(), b"", "x", now());
        assert_eq!(limited.category(), "rate_limited");
        let github_403 = classify(
            ForgeKind::GitHub,
            403,
            &headers(&[("x-ratelimit-remaining", "0")]),
            b"",
            "x",
            now(),
        );
        assert_eq!(github_403.category(), "rate_limited");
        assert_eq!(
            github_403.retry_after(),
            None,
            "no reset header: no stated end"
        );
        let failing = classify(ForgeKind::Gitea, 500, &HeaderMap::new(), b"", "x", now());
        assert_eq!(failing.category(), "server_error");
        let missing = classify(
            ForgeKind::GitLab,
            404,
            &HeaderMap::new(),
            b"",
            "project 7",
            now(),
        );
        assert_eq!(missing.to_string(), "GitLab: project 7 not found");
    }

    #[test]
    fn reasons_are_cut_to_200_characters() {
        let body = serde_json::json!({ "message": "x".repeat(500) }).to_string();
        let err = classify(
            ForgeKind::GitHub,
            422,
            &HeaderMap::new(),
            body.as_bytes(),
            "x",
            now(),
        );
        let ForgeError::Rejected { reason, .. } = err else {
            panic!("not rejected: {err:?}")
        };
        assert_eq!(reason, format!("{}...", "x".repeat(200)));
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use crate::{Forge, ForgeConfig};

    const TOKEN: &str = "glpat-never-in-errors";

    fn forge_at(kind: ForgeKind, api_url: &str, request_timeout: Duration) -> Forge {
        Forge::with_timeouts(
            ForgeConfig {
                kind,
                api_url: api_url.into(),
                token: Secret::new(TOKEN),
            },
            CONNECT_TIMEOUT,
            request_timeout,
        )
        .expect("client")
    }

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("address")
            .port();
        let forge = forge_at(
            ForgeKind::GitLab,
            &format!("http://127.0.0.1:{port}/api/v4"),
            REQUEST_TIMEOUT,
        );
        let err = forge
            .find_issue("acme/api", "auto-agent:1")
            .await
            .expect_err("nothing listens");
        let ForgeError::Unreachable { ref reason, .. } = err else {
            panic!("not unreachable: {err:?}")
        };
        assert!(reason.starts_with("connection failed"), "{reason}");
        assert!(
            !reason.contains("labels") && !reason.contains(TOKEN),
            "{reason}"
        );
        assert!(err.retryable());
        assert_eq!(err.category(), "unreachable");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let app = Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        });
        let base = serve(app).await;
        let forge = forge_at(
            ForgeKind::Gitea,
            &format!("{base}/api/v1"),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let err = forge
            .comment("acme/api", 1, "x")
            .await
            .expect_err("no answer");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(err, ForgeError::Unreachable { ref reason, .. } if reason.starts_with("no answer within")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let app = Router::new().fallback(|| async {
            let item = serde_json::json!({"number": 1, "html_url": "u", "state": "open", "body": "x".repeat(1024)});
            let list = vec![item; 3 * 1024];
            (StatusCode::OK, serde_json::to_string(&list).unwrap_or_default())
        });
        let base = serve(app).await;
        let forge = forge_at(ForgeKind::GitHub, &base, REQUEST_TIMEOUT);
        let err = forge
            .find_issue("acme/api", "auto-agent:1")
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ForgeError::Protocol { ref reason, .. } if reason.contains("larger than 2 MiB")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn redirects_to_another_origin_are_not_followed() {
        // The token headers must never reach another host.
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let elsewhere = serve(Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::OK }
        }))
        .await;
        let target = format!("{elsewhere}/repos/acme/api/issues");
        let redirecting = serve(Router::new().fallback(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [("location", target)]).into_response() }
        }))
        .await;
        let forge = forge_at(ForgeKind::GitLab, &redirecting, REQUEST_TIMEOUT);
        let err = forge
            .find_issue("acme/api", "auto-agent:1")
            .await
            .expect_err("redirect");
        assert!(matches!(err, ForgeError::Protocol { .. }), "{err:?}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the other origin was contacted"
        );
    }

    #[test]
    fn urls_in_transport_text_lose_path_and_query() {
        assert_eq!(
            without_urls("error sending request for url (http://h:1/x?private_token=abc)"),
            "error sending request"
        );
        assert_eq!(
            without_urls("dns error for http://gitlab.example/api/v4/x?private_token=abc: failed"),
            "dns error for http://gitlab.example failed"
        );
    }
}
