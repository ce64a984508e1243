//! Incident summaries from an OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp's server).
//!
//! The summary is prose for people and never decides anything. The caller hands over evidence that
//! is already redacted; this client cuts it to a size budget, asks for a short answer, and caps
//! what comes back, since it lands in Slack threads and tickets. Errors say whether a retry can
//! help and never carry the API key or the evidence: a server's error body may echo either, so
//! only its error code is kept.

use std::fmt;
use std::time::Duration;

use auto_agent_forge::Secret;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

/// What the model is asked to do with the evidence.
pub const SYSTEM_PROMPT: &str = "You summarize a Kubernetes incident for the on-call engineer. \
The user message is evidence collected by an auto-remediation agent, with secrets redacted. \
Say in at most 5 sentences what failed, where, what the agent did about it and what a human \
should look at next. Use only facts stated in the evidence; when something is unknown, say so \
instead of guessing. Answer in plain text, without Markdown headings.";

pub const DEFAULT_MAX_TOKENS: u32 = 256;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_MAX_INPUT_CHARS: usize = 12_000;
/// The longest summary handed back, in characters: enough for five sentences, short enough for a
/// Slack message and a ticket description.
pub const MAX_SUMMARY_CHARS: usize = 2_000;
/// The largest answer read. A completion of a few hundred tokens is a few kilobytes; anything
/// near this is not an answer to our request.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A temperature low enough for the same evidence to give much the same summary, with a little
/// room so small models do not loop on one phrase.
const TEMPERATURE: f64 = 0.2;

/// The request field that carries the output token budget. OpenAI's current models take
/// `max_completion_tokens` (and refuse `max_tokens` on some); Ollama, vLLM and llama.cpp take
/// `max_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

impl std::str::FromStr for MaxTokensField {
    type Err = LlmError;

    /// The JSON field name, as flags and Helm values spell it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "max_tokens" => Ok(Self::MaxTokens),
            "max_completion_tokens" => Ok(Self::MaxCompletionTokens),
            other => Err(LlmError::Config(format!(
                "the max-tokens field must be `max_tokens` or `max_completion_tokens`, not `{other}`"
            ))),
        }
    }
}

impl fmt::Display for MaxTokensField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// `http://host:11434`, or a base that already ends in `/v1`; requests go to
    /// `{base}/v1/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer <key>`; local servers often need none.
    pub api_key: Option<Secret>,
    pub max_tokens: u32,
    pub max_tokens_field: MaxTokensField,
    /// Bounds the whole request: connecting, the model's thinking and reading the answer.
    pub timeout: Duration,
    /// The evidence is cut to this many characters before it is sent.
    pub max_input_chars: usize,
}

impl LlmConfig {
    /// A configuration with the defaults: 256 tokens in `max_tokens`, 20 s, 12,000 characters.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            max_tokens: DEFAULT_MAX_TOKENS,
            max_tokens_field: MaxTokensField::default(),
            timeout: DEFAULT_TIMEOUT,
            max_input_chars: DEFAULT_MAX_INPUT_CHARS,
        }
    }
}

/// A model's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Trimmed and at most [`MAX_SUMMARY_CHARS`] characters.
    pub text: String,
    /// The model that answered, as the server names it (the configured one if it does not say).
    pub model: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// What a summary request can end in. No message carries the API key or the input.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The configuration cannot work (bad URL, empty model, zero budget).
    #[error("invalid LLM configuration: {0}")]
    Config(String),
    /// No complete answer within the configured time.
    #[error("the model server did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused or reset, DNS, TLS.
    #[error("the model server is unreachable: {0}")]
    Unreachable(String),
    /// 429 for requests or tokens per minute: try again, after `after` when the server said.
    #[error("the model server is rate limiting (429){}", after.map(|a| format!("; retry after {a:?}")).unwrap_or_default())]
    RateLimited { after: Option<Duration> },
    /// 429 with `insufficient_quota`: the account is out of credit, retrying only burns requests.
    #[error("the model account's quota is exhausted (429 insufficient_quota)")]
    QuotaExceeded,
    /// 401 or 403: the key is missing, wrong or lacks access to the model.
    #[error("the model server refused the API key ({0})")]
    Unauthorized(u16),
    /// 5xx.
    #[error("the model server failed ({0})")]
    Server(u16),
    /// An answer that is not what the API documents, or a request the server refused (4xx).
    #[error("the model server answered unexpectedly: {0}")]
    Protocol(String),
    /// The answer had no text (`content` null or blank, for instance a refusal).
    #[error("the model answered with no text")]
    Empty,
}

impl LlmError {
    /// Whether the same request can succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unreachable(_) | Self::RateLimited { .. } | Self::Server(_)
        )
    }

    /// How long the server asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { after } => *after,
            _ => None,
        }
    }

    /// A short label for metrics: `config`, `timeout`, `unreachable`, `rate_limited`,
    /// `quota_exceeded`, `unauthorized`, `server_error`, `protocol`, `empty`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Unauthorized(_) => "unauthorized",
            Self::Server(_) => "server_error",
            Self::Protocol(_) => "protocol",
            Self::Empty => "empty",
        }
    }
}

/// A client for one chat-completions endpoint and model.
#[derive(Clone)]
pub struct Llm {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    /// `Bearer <key>`, marked sensitive.
    auth: Option<HeaderValue>,
    max_tokens: u32,
    max_tokens_field: MaxTokensField,
    timeout: Duration,
    max_input_chars: usize,
}

impl fmt::Debug for Llm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Llm")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("max_tokens", &self.max_tokens)
            .field("max_tokens_field", &self.max_tokens_field)
            .field("timeout", &self.timeout)
            .field("max_input_chars", &self.max_input_chars)
            .finish()
    }
}

impl Llm {
    pub fn new(cfg: LlmConfig) -> Result<Self, LlmError> {
        let endpoint = chat_endpoint(&cfg.base_url)?;
        let model = cfg.model.trim().to_owned();
        if model.is_empty() {
            return Err(LlmError::Config("the model name is empty".to_owned()));
        }
        if cfg.max_tokens == 0 {
            return Err(LlmError::Config("max tokens must be above zero".to_owned()));
        }
        if cfg.timeout.is_zero() {
            return Err(LlmError::Config(
                "the timeout must be above zero".to_owned(),
            ));
        }
        if cfg.max_input_chars == 0 {
            return Err(LlmError::Config(
                "max input characters must be above zero".to_owned(),
            ));
        }
        let auth = match &cfg.api_key {
            None => None,
            Some(key) => {
                // A key read from a file or Secret often ends in a newline.
                let key = key.expose().trim();
                if key.is_empty() {
                    return Err(LlmError::Config("the API key is empty".to_owned()));
                }
                let mut header = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    LlmError::Config(
                        "the API key has characters not allowed in an HTTP header".to_owned(),
                    )
                })?;
                header.set_sensitive(true);
                Some(header)
            }
        };
        // reqwest built with `rustls-no-provider` panics in `build()` when the process has no
        // default provider; install ring's unless the binary already chose one. Losing a race to
        // another installer is fine.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| LlmError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint,
            model,
            auth,
            max_tokens: cfg.max_tokens,
            max_tokens_field: cfg.max_tokens_field,
            timeout: cfg.timeout,
            max_input_chars: cfg.max_input_chars,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Asks the model to summarize `input` (redacted evidence) following `system`
    /// ([`SYSTEM_PROMPT`] for incidents). Input beyond the configured size is cut, and the model
    /// is told so.
    pub async fn summarize(&self, system: &str, input: &str) -> Result<Summary, LlmError> {
        let body = self.request_body(system, input);
        let mut request = self.http.post(&self.endpoint).json(&body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        // reqwest's own timeout covers the same span; this one also guarantees the error is
        // `Timeout` whichever stage was slow.
        let (status, headers, body) =
            match tokio::time::timeout(self.timeout, exchange(request)).await {
                Ok(result) => result.map_err(|e| self.transport_error(&e))?,
                Err(_) => return Err(LlmError::Timeout(self.timeout)),
            };
        classify(status, &headers, &body, &self.model, input).map_err(|e| self.scrub(e))
    }

    fn request_body(&self, system: &str, input: &str) -> Value {
        let user = match input.char_indices().nth(self.max_input_chars) {
            None => input.to_owned(),
            Some((cut, _)) => format!(
                "{}\n\n[The evidence was cut here: only its first {} of {} characters are shown.]",
                &input[..cut],
                self.max_input_chars,
                input.chars().count()
            ),
        };
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": TEMPERATURE,
        });
        if let Some(map) = body.as_object_mut() {
            map.insert(
                self.max_tokens_field.as_str().to_owned(),
                Value::from(self.max_tokens),
            );
        }
        body
    }

    fn transport_error(&self, err: &Transport) -> LlmError {
        match err {
            Transport::TooLarge => LlmError::Protocol(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )),
            Transport::Http(e) if e.is_timeout() => LlmError::Timeout(self.timeout),
            Transport::Http(e) => self.scrub(LlmError::Unreachable(describe(e))),
        }
    }

    /// Removes the key from a message, in case a proxy or library echoed request headers.
    fn scrub(&self, err: LlmError) -> LlmError {
        let Some(key) = self
            .auth
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return err;
        };
        let clean = |s: String| s.replace(key, "<redacted>");
        match err {
            LlmError::Config(m) => LlmError::Config(clean(m)),
            LlmError::Unreachable(m) => LlmError::Unreachable(clean(m)),
            LlmError::Protocol(m) => LlmError::Protocol(clean(m)),
            other => other,
        }
    }
}

/// `{base}/v1/chat/completions`, accepting a base that already ends in `/v1`.
fn chat_endpoint(base_url: &str) -> Result<String, LlmError> {
    let url = reqwest::Url::parse(base_url.trim())
        .map_err(|e| LlmError::Config(format!("the base URL is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(LlmError::Config(format!(
            "the base URL must be http or https, not `{}`",
            url.scheme()
        )));
    }
    // Credentials in the URL would end up in error messages; the key goes in a header.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(LlmError::Config(
            "credentials in the base URL are not supported; use the API key".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(LlmError::Config(
            "the base URL must not have a query or fragment".to_owned(),
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    Ok(if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    })
}

enum Transport {
    Http(reqwest::Error),
    TooLarge,
}

/// Sends the request and reads the answer, giving up as soon as it passes
/// [`MAX_RESPONSE_BYTES`] (a declared Content-Length above it is refused before reading).
async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), Transport> {
    let mut response = request.send().await.map_err(Transport::Http)?;
    let status = response.status();
    let headers = response.headers().clone();
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |n| n > MAX_RESPONSE_BYTES) {
        return Err(Transport::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(Transport::Http)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Transport::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, body))
}

/// A transport failure's causes, without the URL reqwest repeats in its own text.
fn describe(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        let text = text
            .split_once(" for url (")
            .map_or(text.as_str(), |(head, _)| head)
            .to_owned();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The answer, by status: a summary or the error a caller can act on.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    configured_model: &str,
    input: &str,
) -> Result<Summary, LlmError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // A code that is a word of the input may be the server echoing it.
    let code = json
        .as_ref()
        .and_then(error_code)
        .filter(|c| !input.contains(c.as_str()));
    match status.as_u16() {
        200..=299 => {}
        401 | 403 => return Err(LlmError::Unauthorized(status.as_u16())),
        429 if code.as_deref() == Some("insufficient_quota") => {
            return Err(LlmError::QuotaExceeded);
        }
        429 => {
            return Err(LlmError::RateLimited {
                after: retry_after(headers),
            });
        }
        500..=599 => return Err(LlmError::Server(status.as_u16())),
        other => {
            return Err(LlmError::Protocol(match code {
                Some(code) => format!("status {other} ({code})"),
                None => format!("status {other}"),
            }));
        }
    }
    let json = json.ok_or_else(|| LlmError::Protocol("the answer is not JSON".to_owned()))?;
    let message = json
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .ok_or_else(|| LlmError::Protocol("the answer has no choices[0].message".to_owned()))?;
    let text = match message.get("content") {
        None | Some(Value::Null) => return Err(LlmError::Empty),
        Some(Value::String(s)) => s.trim(),
        Some(_) => {
            return Err(LlmError::Protocol(
                "choices[0].message.content is not a string".to_owned(),
            ));
        }
    };
    if text.is_empty() {
        return Err(LlmError::Empty);
    }
    let usage = json.get("usage");
    let tokens = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64);
    Ok(Summary {
        text: cap(text, MAX_SUMMARY_CHARS),
        model: json
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(configured_model)
            .to_owned(),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

/// `error.code`, else `error.type`, of an OpenAI error body, kept only when it looks like an
/// identifier (`insufficient_quota`, `context_length_exceeded`): a free-text message could echo
/// the input.
fn error_code(json: &Value) -> Option<String> {
    let error = json.get("error")?;
    ["code", "type"]
        .iter()
        .filter_map(|f| error.get(*f).and_then(Value::as_str))
        .find(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
        .map(str::to_owned)
}

/// `Retry-After` in seconds, else the later of OpenAI's `x-ratelimit-reset-requests` and
/// `x-ratelimit-reset-tokens` (`1s`, `6m0s`, `20ms`).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header(RETRY_AFTER.as_str())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|name| header(name).and_then(go_duration))
        .max()
}

/// A Go-style duration (`1h2m3.5s`, `250ms`), as OpenAI writes its reset headers.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total.is_finite() && total <= 86_400.0).then(|| Duration::from_secs_f64(total))
}

/// At most `max` characters, the last one an ellipsis when cut.
fn cap(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let kept: String = text.chars().take(max.saturating_sub(1)).collect();
            format!("{}…", kept.trim_end())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use axum::routing::any;

    use super::*;

    const KEY: &str = "sk-test-key-0123456789";
    const INPUT_MARKER: &str = "evidence-marker-7f3a";

    /// One request as the server saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        path: String,
        headers: AxumHeaders,
        body: Value,
    }

    type Answer = Arc<dyn Fn(&Value) -> Response + Send + Sync>;

    /// A local chat-completions server that records each request and answers with `answer`.
    async fn server(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let app =
            Router::new().fallback(any(move |uri: Uri, headers: AxumHeaders, body: Bytes| {
                let recorded = recorded.clone();
                let answer = answer.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let response = answer(&body);
                    recorded.lock().unwrap().push(Seen {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    response
                }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    fn json_response(status: u16, headers: &[(&str, &str)], body: Value) -> Response {
        let mut response = (
            AxumStatus::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response();
        for (k, v) in headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
        }
        response
    }

    fn completion(content: Value) -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "served-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
        })
    }

    fn answering(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: Value,
    ) -> Answer {
        Arc::new(move |_| json_response(status, headers, body.clone()))
    }

    fn config(addr: SocketAddr) -> LlmConfig {
        LlmConfig::new(format!("http://{addr}"), "test-model")
    }

    fn client(cfg: LlmConfig) -> Llm {
        Llm::new(cfg).unwrap()
    }

    #[tokio::test]
    async fn sends_the_documented_request_and_reads_the_answer() {
        let (addr, seen) = server(answering(
            200,
            &[],
            completion(json!("  Pod api crashed.\n")),
        ))
        .await;
        let mut cfg = config(addr);
        cfg.api_key = Some(Secret::new(KEY));
        let summary = client(cfg)
            .summarize(SYSTEM_PROMPT, "the evidence")
            .await
            .unwrap();
        assert_eq!(
            summary,
            Summary {
                text: "Pod api crashed.".to_owned(),
                model: "served-model".to_owned(),
                prompt_tokens: Some(42),
                completion_tokens: Some(7),
            }
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.path, "/v1/chat/completions");
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            &format!("Bearer {KEY}")
        );
        assert_eq!(req.headers.get("content-type").unwrap(), "application/json");
        assert_eq!(
            req.body,
            json!({
                "model": "test-model",
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": "the evidence"},
                ],
                "temperature": 0.2,
                "max_tokens": 256,
            })
        );
    }

    #[tokio::test]
    async fn no_key_no_authorization_header_and_the_other_token_field() {
        let (addr, seen) = server(answering(200, &[], completion(json!("ok")))).await;
        let mut cfg = LlmConfig::new(format!("http://{addr}/v1/"), "m");
        cfg.max_tokens = 64;
        cfg.max_tokens_field = MaxTokensField::MaxCompletionTokens;
        client(cfg).summarize("sys", "in").await.unwrap();
        let seen = seen.lock().unwrap();
        let req = &seen[0];
        // A base ending in /v1 is not doubled.
        assert_eq!(req.path, "/v1/chat/completions");
        assert!(req.headers.get("authorization").is_none());
        assert_eq!(req.body["max_completion_tokens"], json!(64));
        assert!(req.body.get("max_tokens").is_none(), "{}", req.body);
    }

    #[tokio::test]
    async fn input_is_cut_at_a_char_boundary_and_the_model_is_told() {
        let (addr, seen) = server(answering(200, &[], completion(json!("ok")))).await;
        // Multi-byte characters: a cut by bytes would split one (and panic).
        let input = "ééééééééééTAIL-NOT-SENT";
        for max_input_chars in [10, 23] {
            let mut cfg = config(addr);
            cfg.max_input_chars = max_input_chars;
            client(cfg).summarize("sys", input).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        let user = |i: usize| {
            seen[i].body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let cut = user(0);
        assert!(cut.starts_with("éééééééééé\n"), "{cut}");
        assert!(!cut.contains("TAIL"), "{cut}");
        assert!(cut.contains("first 10 of 23 characters"), "{cut}");
        // Input within the budget goes as it is.
        assert_eq!(user(1), input);
    }

    #[tokio::test]
    async fn null_or_blank_content_is_empty() {
        for content in [Value::Null, json!("  \n ")] {
            let (addr, _) = server(answering(200, &[], completion(content))).await;
            let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
            assert!(matches!(err, LlmError::Empty), "{err:?}");
            assert_eq!(err.category(), "empty");
            assert!(!err.retryable());
        }
    }

    #[tokio::test]
    async fn long_answers_are_capped() {
        let long = "word ".repeat(1_000);
        let (addr, _) = server(answering(200, &[], completion(json!(long)))).await;
        let summary = client(config(addr)).summarize("s", "i").await.unwrap();
        assert_eq!(summary.text.chars().count(), MAX_SUMMARY_CHARS);
        assert!(summary.text.ends_with('…'));
    }

    #[tokio::test]
    async fn rate_limit_is_retryable_with_the_servers_wait() {
        let (addr, _) = server(answering(
            429,
            &[("retry-after", "7")],
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}),
        ))
        .await;
        let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
        assert!(matches!(err, LlmError::RateLimited { .. }), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(err.retryable());
        assert_eq!(err.category(), "rate_limited");

        // Without Retry-After, OpenAI's reset headers; the later one wins.
        let (addr, _) = server(answering(
            429,
            &[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
            json!({"error": {"message": "Rate limit reached for tokens", "type": "tokens"}}),
        ))
        .await;
        let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(360)));
    }

    #[tokio::test]
    async fn insufficient_quota_is_not_retried() {
        // OpenAI puts it in `code`; some compatible servers only in `type`.
        for error in [
            json!({"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}),
            json!({"message": "quota", "type": "insufficient_quota", "code": null}),
        ] {
            let (addr, _) = server(answering(
                429,
                &[("retry-after", "1")],
                json!({"error": error}),
            ))
            .await;
            let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
            assert!(matches!(err, LlmError::QuotaExceeded), "{err:?}");
            assert!(!err.retryable());
            assert_eq!(err.category(), "quota_exceeded");
        }
    }

    #[tokio::test]
    async fn statuses_map_to_errors() {
        let cases: [(u16, &str, bool); 5] = [
            (401, "unauthorized", false),
            (403, "unauthorized", false),
            (500, "server_error", true),
            (503, "server_error", true),
            (400, "protocol", false),
        ];
        for (status, category, retryable) in cases {
            let (addr, _) = server(answering(
                status,
                &[],
                json!({"error": {"message": "no", "type": "invalid_request_error"}}),
            ))
            .await;
            let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
            assert_eq!(err.category(), category, "{status}: {err:?}");
            assert_eq!(err.retryable(), retryable, "{status}");
        }
    }

    #[tokio::test]
    async fn errors_never_carry_the_key_or_the_input() {
        // A server that echoes the whole request (headers and body) in every error it gives.
        let echo: Answer = Arc::new(|body| {
            let echoed = format!("{KEY} {body}");
            json_response(
                400,
                &[],
                json!({"error": {"message": echoed, "type": echoed, "code": echoed}}),
            )
        });
        let statuses: [Answer; 6] = [
            echo,
            // Echoed values that look like error codes.
            Arc::new(|_| json_response(404, &[], json!({"error": {"code": KEY}}))),
            Arc::new(|_| json_response(404, &[], json!({"error": {"code": INPUT_MARKER}}))),
            Arc::new(|body| json_response(500, &[], json!({"error": format!("{KEY} {body}")}))),
            Arc::new(|body| (AxumStatus::OK, format!("not json {KEY} {body}")).into_response()),
            Arc::new(|body| json_response(200, &[], json!({"echo": format!("{KEY} {body}")}))),
        ];
        for answer in statuses {
            let (addr, _) = server(answer).await;
            let mut cfg = config(addr);
            cfg.api_key = Some(Secret::new(KEY));
            let llm = client(cfg);
            let err = llm
                .summarize("s", &format!("pod log: {INPUT_MARKER}"))
                .await
                .unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(KEY), "{text}");
            assert!(!text.contains(INPUT_MARKER), "{text}");
            assert!(!format!("{llm:?}").contains(KEY));
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let app = Router::new().fallback(any(|| async {
            std::future::pending::<()>().await;
            "never"
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut cfg = config(addr);
        cfg.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = client(cfg).summarize("s", "i").await.unwrap_err();
        assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
        assert!(err.retryable());
        // Loose: the point is that it does not hang.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
        assert!(matches!(err, LlmError::Unreachable(_)), "{err:?}");
        assert!(err.retryable());
        assert!(!err.to_string().contains("for url"), "{err}");
    }

    #[tokio::test]
    async fn oversized_answers_are_refused() {
        let big = "x".repeat(MAX_RESPONSE_BYTES + 1);
        let (addr, _) = server(Arc::new(move |_| {
            (AxumStatus::OK, big.clone()).into_response()
        }))
        .await;
        let err = client(config(addr)).summarize("s", "i").await.unwrap_err();
        assert!(matches!(err, LlmError::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn endpoints_and_configuration() {
        let endpoint = |base: &str| chat_endpoint(base);
        assert_eq!(
            endpoint("http://h:11434").unwrap(),
            "http://h:11434/v1/chat/completions"
        );
        assert_eq!(
            endpoint("https://api.openai.com/v1").unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://gw/llm/").unwrap(),
            "http://gw/llm/v1/chat/completions"
        );
        for bad in ["ftp://h", "http://user:pw@h", "http://h?x=1", "not a url"] {
            assert!(matches!(endpoint(bad), Err(LlmError::Config(_))), "{bad}");
        }
        let base = LlmConfig::new("http://h", "m");
        assert_eq!(base.max_tokens, 256);
        assert_eq!(base.max_tokens_field, MaxTokensField::MaxTokens);
        assert_eq!(base.timeout, Duration::from_secs(20));
        assert_eq!(base.max_input_chars, 12_000);
        for broken in [
            LlmConfig {
                model: " ".into(),
                ..base.clone()
            },
            LlmConfig {
                max_tokens: 0,
                ..base.clone()
            },
            LlmConfig {
                timeout: Duration::ZERO,
                ..base.clone()
            },
            LlmConfig {
                max_input_chars: 0,
                ..base.clone()
            },
            LlmConfig {
                api_key: Some(Secret::new("\n")),
                ..base.clone()
            },
        ] {
            assert!(matches!(Llm::new(broken), Err(LlmError::Config(_))));
        }
        let err = Llm::new(LlmConfig {
            api_key: Some(Secret::new(format!("{KEY}\u{7}"))),
            ..base.clone()
        })
        .unwrap_err();
        assert!(!err.to_string().contains(KEY), "{err}");
        assert_eq!(
            "max_completion_tokens".parse::<MaxTokensField>().unwrap(),
            MaxTokensField::MaxCompletionTokens
        );
        assert!("maxTokens".parse::<MaxTokensField>().is_err());
    }

    #[test]
    fn reset_header_durations() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("soon"), None);
        assert_eq!(go_duration("5"), None);
    }
}
