//! Slack: an incoming webhook (simple, cannot start a thread) or a bot token (`chat.postMessage`
//! returns the message's channel and `ts`, so later messages of an incident join its thread and
//! the first one can be edited with `chat.update`).
//!
//! The webhook URL and the bot token are secrets: neither reaches an error, a log line or Debug.

use std::time::Duration;

use auto_agent_forge::Secret;
use serde_json::{Value, json};

use crate::deliver::{ChannelError, SlackApi};

/// Slack's Web API base, for `SlackRoute::Bot`.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
// Slack's error texts are short codes; anything longer is cut so an odd answer cannot flood a log.

/// Where messages go.
#[derive(Clone, Debug)]
pub enum SlackRoute {
    /// An incoming webhook: the URL is the credential.
    Webhook { url: Secret },
    /// A bot token (`xoxb-...`, scope `chat:write`) against the Web API at `api_url`.
    Bot { api_url: String, token: Secret },
}

impl SlackRoute {
    /// A bot route against Slack itself.
    pub fn bot(token: Secret) -> Self {
        Self::Bot {
            api_url: DEFAULT_API_URL.to_owned(),
            token,
        }
    }
}

/// A message: `text` is the fallback Slack shows in notifications and where blocks cannot be
/// rendered; `blocks` is a Block Kit array (or `null` for text only). The renderer's type.
pub use crate::render::SlackText as SlackMessage;

/// A posted message a thread hangs off: the channel ID Slack returned (not the `#name`) and the
/// message's `ts`. The record keeps it.
pub use crate::record::SlackThread;

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Rate limited (429) or Slack failed (5xx): try again, after `after` when Slack said.
    #[error("Slack is busy or failing ({status}); retry{}", after_text(*after))]
    Retry {
        status: u16,
        after: Option<Duration>,
    },
    /// Slack could not be reached or the connection broke.
    #[error("Slack unreachable: {reason}")]
    Unreachable { reason: String },
    /// The Web API answered `{ok: false, error}` (HTTP 200, or a 4xx carrying the same body).
    #[error("Slack refused the call: {code}")]
    Api {
        code: String,
        after: Option<Duration>,
    },
    /// A webhook refused the post: its status and plain-text reason (`invalid_payload`,
    /// `channel_not_found`, `channel_is_archived`, `action_prohibited`...).
    #[error("Slack webhook refused the post ({status}): {text}")]
    Webhook { status: u16, text: String },
    /// The answer was not what Slack documents.
    #[error("Slack answered unexpectedly: {reason}")]
    Protocol { reason: String },
    /// The call cannot be made with this route or configuration.
    #[error("Slack configuration: {0}")]
    Config(String),
}

fn after_text(after: Option<Duration>) -> String {
    after
        .map(|a| format!(" after {}s", a.as_secs()))
        .unwrap_or_default()
}

// Web API codes a retry can cure (Slack's rate limit and its own failures).
const RETRYABLE_CODES: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];
const AUTH_CODES: &[&str] = &[
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "not_allowed_token_type",
];
const NOT_FOUND_CODES: &[&str] = &[
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "message_not_found",
    "thread_not_found",
];

impl SlackError {
    /// Whether sending the same message again later can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Retry { .. } | Self::Unreachable { .. } => true,
            Self::Api { code, .. } => RETRYABLE_CODES.contains(&code.as_str()),
            _ => false,
        }
    }

    /// How long Slack asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retry { after, .. } | Self::Api { after, .. } => *after,
            _ => None,
        }
    }

    /// A short label for metrics: `rate_limited`, `server_error`, `unreachable`, `unauthorized`,
    /// `not_found`, `rejected`, `protocol`, `config`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Retry { status: 429, .. } => "rate_limited",
            Self::Retry { .. } => "server_error",
            Self::Unreachable { .. } => "unreachable",
            Self::Api { code, .. } if code == "ratelimited" || code == "rate_limited" => {
                "rate_limited"
            }
            Self::Api { code, .. } if RETRYABLE_CODES.contains(&code.as_str()) => "server_error",
            Self::Api { code, .. } if AUTH_CODES.contains(&code.as_str()) => "unauthorized",
            Self::Api { code, .. } if NOT_FOUND_CODES.contains(&code.as_str()) => "not_found",
            Self::Webhook { status: 403, .. } => "unauthorized",
            Self::Webhook {
                status: 404 | 410, ..
            } => "not_found",
            Self::Api { .. } | Self::Webhook { .. } => "rejected",
            Self::Protocol { .. } => "protocol",
            Self::Config(_) => "config",
        }
    }

    /// Slack's error code for a Web API refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A Slack client for one route.
#[derive(Clone, Debug)]
pub struct Slack {
    http: reqwest::Client,
    route: SlackRoute,
}

impl Slack {
    pub fn new(route: SlackRoute) -> Result<Self, SlackError> {
        Self::with_timeout(route, DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(route: SlackRoute, timeout: Duration) -> Result<Self, SlackError> {
        match &route {
            SlackRoute::Webhook { url } => check_url(url.expose(), "the webhook URL")?,
            SlackRoute::Bot { api_url, token } => {
                check_url(api_url, "the API URL")?;
                if token.is_empty() {
                    return Err(SlackError::Config("the bot token is empty".to_owned()));
                }
            }
        }
        Ok(Self {
            http: crate::http::client(timeout).map_err(SlackError::Config)?,
            route,
        })
    }

    /// Whether this route can start threads and edit messages (a bot token can, a webhook not).
    pub fn threads(&self) -> bool {
        matches!(self.route, SlackRoute::Bot { .. })
    }

    /// Posts `msg` to `channel` (a `#name` or an ID; a webhook ignores it: its channel is fixed),
    /// as a reply in `thread` when given. A bot returns the posted message's channel ID and `ts`;
    /// a webhook returns `None` (it cannot start a thread).
    pub async fn post(
        &self,
        channel: &str,
        msg: &SlackMessage,
        thread: Option<&SlackThread>,
    ) -> Result<Option<SlackThread>, SlackError> {
        match &self.route {
            SlackRoute::Webhook { url } => {
                let mut body = message_body(msg);
                if let Some(t) = thread {
                    body["thread_ts"] = json!(t.ts);
                }
                self.webhook(url, &body).await?;
                Ok(None)
            }
            SlackRoute::Bot { api_url, token } => {
                let mut body = message_body(msg);
                // A reply goes to the channel ID of its thread, whatever name the caller has.
                body["channel"] = json!(thread.map_or(channel, |t| t.channel.as_str()));
                if let Some(t) = thread {
                    body["thread_ts"] = json!(t.ts);
                }
                let answer = self
                    .web_api(api_url, token, "chat.postMessage", &body)
                    .await?;
                let field = |name: &str| {
                    answer[name]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| SlackError::Protocol {
                            reason: format!("chat.postMessage answered ok without `{name}`"),
                        })
                };
                Ok(Some(SlackThread {
                    channel: field("channel")?,
                    ts: field("ts")?,
                }))
            }
        }
    }

    /// Replaces the text and blocks of the message `thread` names (`chat.update`; bot only).
    pub async fn update(&self, thread: &SlackThread, msg: &SlackMessage) -> Result<(), SlackError> {
        let SlackRoute::Bot { api_url, token } = &self.route else {
            return Err(SlackError::Config(
                "a webhook cannot edit messages; chat.update needs a bot token".to_owned(),
            ));
        };
        let mut body = message_body(msg);
        body["channel"] = json!(thread.channel);
        body["ts"] = json!(thread.ts);
        self.web_api(api_url, token, "chat.update", &body).await?;
        Ok(())
    }

    async fn webhook(&self, url: &Secret, body: &Value) -> Result<(), SlackError> {
        let resp = self
            .http
            .post(url.expose())
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let after = crate::http::retry_after(resp.headers());
        let text = resp.text().await.map_err(transport_error)?;
        match status {
            200 if text.trim() == "ok" => Ok(()),
            200 => Err(SlackError::Protocol {
                reason: format!(
                    "webhook answered 200 `{}`, not `ok`",
                    crate::http::cut(&text)
                ),
            }),
            429 | 500..=599 => Err(SlackError::Retry { status, after }),
            _ => Err(SlackError::Webhook {
                status,
                text: crate::http::cut(text.trim()),
            }),
        }
    }

    async fn web_api(
        &self,
        api_url: &str,
        token: &Secret,
        method: &str,
        body: &Value,
    ) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", api_url.trim_end_matches('/'));
        let resp = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            // Slack warns about JSON posts without a charset.
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let after = crate::http::retry_after(resp.headers());
        let text = resp.text().await.map_err(transport_error)?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        let code = answer
            .as_ref()
            .and_then(|a| a["error"].as_str())
            .map(str::to_owned);
        match status {
            429 | 500..=599 => Err(SlackError::Retry { status, after }),
            200 => match answer {
                Some(a) if a["ok"] == json!(true) => Ok(a),
                Some(_) => Err(SlackError::Api {
                    code: code.unwrap_or_else(|| "unknown_error".to_owned()),
                    after,
                }),
                None => Err(SlackError::Protocol {
                    reason: format!("{method} answered 200 without JSON"),
                }),
            },
            _ => match code {
                Some(code) => Err(SlackError::Api { code, after }),
                None => Err(SlackError::Protocol {
                    reason: format!("{method} answered {status}: {}", crate::http::cut(&text)),
                }),
            },
        }
    }
}

impl From<SlackError> for ChannelError {
    fn from(e: SlackError) -> Self {
        Self {
            retryable: e.retryable(),
            after: e.retry_after(),
            category: e.category(),
            message: e.to_string(),
        }
    }
}

impl SlackApi for Slack {
    fn threads(&self) -> bool {
        Slack::threads(self)
    }

    async fn post(
        &self,
        channel: &str,
        msg: &SlackMessage,
        thread: Option<&SlackThread>,
    ) -> Result<Option<SlackThread>, ChannelError> {
        Ok(Slack::post(self, channel, msg, thread).await?)
    }

    async fn update(&self, thread: &SlackThread, msg: &SlackMessage) -> Result<(), ChannelError> {
        Ok(Slack::update(self, thread, msg).await?)
    }
}

fn message_body(msg: &SlackMessage) -> Value {
    let mut body = json!({ "text": msg.text });
    let has_blocks = msg.blocks.as_array().is_some_and(|b| !b.is_empty());
    if has_blocks {
        body["blocks"] = msg.blocks.clone();
    }
    body
}

fn check_url(url: &str, what: &str) -> Result<(), SlackError> {
    // Only the scheme is named in the error: a webhook URL is a secret.
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(SlackError::Config(format!("{what} must be an http(s) URL")))
    }
}

fn transport_error(e: reqwest::Error) -> SlackError {
    SlackError::Unreachable {
        reason: crate::http::cause_chain(e),
    }
}

/// A local HTTP server answering a script, one answer per request, and recording what came (the
/// unit tests of this module and of `jira`).
#[cfg(test)]
pub(crate) mod scripted {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use serde_json::Value;

    #[derive(Clone, Debug)]
    pub struct Answer {
        status: u16,
        body: String,
        content_type: &'static str,
        retry_after: Option<String>,
    }

    impl Answer {
        pub fn json(status: u16, body: Value) -> Self {
            Self {
                status,
                body: body.to_string(),
                content_type: "application/json",
                retry_after: None,
            }
        }

        pub fn text(status: u16, body: &str) -> Self {
            Self {
                status,
                body: body.to_owned(),
                content_type: "text/plain",
                retry_after: None,
            }
        }

        pub fn empty(status: u16) -> Self {
            Self::text(status, "")
        }

        pub fn retry_after(mut self, value: &str) -> Self {
            self.retry_after = Some(value.to_owned());
            self
        }
    }

    #[derive(Clone, Debug)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub query: Option<String>,
        pub headers: HeaderMap,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        }

        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    #[derive(Debug)]
    pub struct Scripted {
        addr: std::net::SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Scripted {
        pub async fn start(answers: Vec<Answer>) -> Self {
            let script = Arc::new(Mutex::new(VecDeque::from(answers)));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (s2, seen2) = (script.clone(), seen.clone());
            let app = axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let (script, seen) = (s2.clone(), seen2.clone());
                    async move {
                        seen.lock().unwrap().push(Seen {
                            method: method.to_string(),
                            path: uri.path().to_owned(),
                            query: uri.query().map(str::to_owned),
                            headers,
                            body: body.to_vec(),
                        });
                        let answer = script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or_else(|| Answer::text(599, "script exhausted"));
                        let mut builder = axum::http::Response::builder()
                            .status(StatusCode::from_u16(answer.status).unwrap())
                            .header("content-type", answer.content_type);
                        if let Some(r) = answer.retry_after {
                            builder = builder.header("retry-after", r);
                        }
                        builder.body(axum::body::Body::from(answer.body)).unwrap()
                    }
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self { addr, seen, task }
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::{Answer, Scripted};
    use super::*;

    fn msg() -> SlackMessage {
        SlackMessage {
            text: "crash loop in shop/api".to_owned(),
            blocks: json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*crash*"}}]),
        }
    }

    fn bot(server: &Scripted) -> Slack {
        Slack::new(SlackRoute::Bot {
            api_url: format!("{}/api", server.url()),
            token: Secret::new("xoxb-unit-token"),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn bot_post_sends_token_json_and_thread_and_returns_the_channel_id() {
        let server = Scripted::start(vec![
            Answer::json(
                200,
                json!({"ok": true, "channel": "C0AAAAAAAAA", "ts": "1.000100"}),
            ),
            Answer::json(
                200,
                json!({"ok": true, "channel": "C0AAAAAAAAA", "ts": "1.000200"}),
            ),
            Answer::json(
                200,
                json!({"ok": true, "channel": "C0AAAAAAAAA", "ts": "1.000100"}),
            ),
        ])
        .await;
        let slack = bot(&server);
        let thread = slack.post("#alerts", &msg(), None).await.unwrap().unwrap();
        assert_eq!(thread.channel, "C0AAAAAAAAA");
        assert_eq!(thread.ts, "1.000100");
        slack.post("#alerts", &msg(), Some(&thread)).await.unwrap();
        slack.update(&thread, &msg()).await.unwrap();

        let seen = server.requests();
        assert_eq!(seen[0].path, "/api/chat.postMessage");
        assert_eq!(seen[0].header("authorization"), "Bearer xoxb-unit-token");
        assert_eq!(
            seen[0].header("content-type"),
            "application/json; charset=utf-8"
        );
        let first = seen[0].json();
        assert_eq!(first["channel"], "#alerts");
        assert_eq!(first["text"], "crash loop in shop/api");
        assert_eq!(first["blocks"][0]["type"], "section");
        assert!(first.get("thread_ts").is_none());
        // The reply names the thread's channel ID, whatever name the caller passed.
        let reply = seen[1].json();
        assert_eq!(reply["channel"], "C0AAAAAAAAA");
        assert_eq!(reply["thread_ts"], "1.000100");
        assert_eq!(seen[2].path, "/api/chat.update");
        assert_eq!(seen[2].json()["ts"], "1.000100");
        assert_eq!(seen[2].json()["channel"], "C0AAAAAAAAA");
    }

    #[tokio::test]
    async fn text_only_messages_send_no_blocks() {
        let server = Scripted::start(vec![Answer::text(200, "ok")]).await;
        let slack = Slack::new(SlackRoute::Webhook {
            url: Secret::new(format!("{}/services/T1/B1/secret", server.url())),
        })
        .unwrap();
        let plain = SlackMessage {
            text: "hi".to_owned(),
            blocks: Value::Null,
        };
        let thread = SlackThread {
            channel: "C0AAAAAAAAA".to_owned(),
            ts: "1.000100".to_owned(),
        };
        assert_eq!(slack.post("#x", &plain, Some(&thread)).await.unwrap(), None);
        let body = server.requests()[0].json();
        assert_eq!(body, json!({"text": "hi", "thread_ts": "1.000100"}));
    }

    #[tokio::test]
    async fn web_api_errors_are_typed() {
        let server = Scripted::start(vec![
            Answer::json(429, json!({"ok": false, "error": "ratelimited"})).retry_after("7"),
            Answer::text(503, "upstream"),
            Answer::json(200, json!({"ok": false, "error": "channel_not_found"})),
            Answer::json(200, json!({"ok": false, "error": "ratelimited"})),
            Answer::json(200, json!({"ok": false, "error": "invalid_auth"})),
            Answer::json(400, json!({"ok": false, "error": "invalid_blocks"})),
            Answer::text(200, "<html>"),
            Answer::json(200, json!({"ok": true})),
        ])
        .await;
        let slack = bot(&server);
        let mut errors = Vec::new();
        for _ in 0..8 {
            errors.push(slack.post("#alerts", &msg(), None).await.unwrap_err());
        }
        let e = &errors[0];
        assert!(e.retryable() && e.category() == "rate_limited", "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(errors[1].retryable() && errors[1].category() == "server_error");
        assert_eq!(errors[1].retry_after(), None);
        assert!(!errors[2].retryable());
        assert_eq!(errors[2].code(), Some("channel_not_found"));
        assert_eq!(errors[2].category(), "not_found");
        assert!(errors[3].retryable(), "the ratelimited code retries");
        assert_eq!(errors[4].category(), "unauthorized");
        assert!(!errors[4].retryable());
        assert_eq!(errors[5].code(), Some("invalid_blocks"));
        assert_eq!(errors[6].category(), "protocol");
        assert!(
            matches!(errors[7], SlackError::Protocol { .. }),
            "ok without ts"
        );
        // What the deliverer sees carries the same verdict.
        let channel = ChannelError::from(errors.swap_remove(0));
        assert_eq!(
            (channel.retryable, channel.after, channel.category),
            (true, Some(Duration::from_secs(7)), "rate_limited")
        );
    }

    #[tokio::test]
    async fn webhook_errors_never_show_the_url() {
        let server = Scripted::start(vec![
            Answer::text(404, "channel_not_found"),
            Answer::text(429, "rate limited").retry_after("3"),
            Answer::text(500, "oops"),
        ])
        .await;
        let url = format!("{}/services/T1/B1/topsecretpart", server.url());
        let slack = Slack::new(SlackRoute::Webhook {
            url: Secret::new(url),
        })
        .unwrap();
        let e = slack.post("#x", &msg(), None).await.unwrap_err();
        assert!(
            matches!(&e, SlackError::Webhook { status: 404, text } if text == "channel_not_found"),
            "{e}"
        );
        assert!(!e.retryable());
        assert_eq!(e.category(), "not_found");
        let e = slack.post("#x", &msg(), None).await.unwrap_err();
        assert!(e.retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(
            slack
                .post("#x", &msg(), None)
                .await
                .unwrap_err()
                .retryable()
        );
        // A server that is gone: the connection error names no part of the URL's path.
        drop(server);
        let e = slack.post("#x", &msg(), None).await.unwrap_err();
        assert!(e.retryable(), "{e}");
        let channel = ChannelError::from(SlackError::Unreachable {
            reason: match &e {
                SlackError::Unreachable { reason } => reason.clone(),
                other => panic!("{other}"),
            },
        });
        assert!(channel.retryable && channel.category == "unreachable");
        for shown in [
            e.to_string(),
            format!("{e:?}"),
            format!("{slack:?}"),
            channel.message,
        ] {
            assert!(!shown.contains("topsecretpart"), "{shown}");
        }
        // chat.update needs a bot token.
        let thread = SlackThread {
            channel: "C1".to_owned(),
            ts: "1.0".to_owned(),
        };
        assert_eq!(
            slack.update(&thread, &msg()).await.unwrap_err().category(),
            "config"
        );
        assert!(!slack.threads());
    }

    #[test]
    fn configuration_is_checked_without_echoing_secrets() {
        let e = Slack::new(SlackRoute::Webhook {
            url: Secret::new("hooks.slack.com/services/T/B/abcsecret"),
        })
        .unwrap_err();
        assert!(!e.to_string().contains("abcsecret"), "{e}");
        let e = Slack::new(SlackRoute::bot(Secret::new(""))).unwrap_err();
        assert_eq!(e.category(), "config");
    }
}
