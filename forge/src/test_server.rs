//! A local HTTP server for the client tests. A test scripts the exchanges it expects, in order;
//! the server checks each request against the next one (method, raw path, query, headers, JSON
//! body) and answers as the forge's documentation shows. Anything unexpected is answered with
//! 418 and recorded, and [`TestServer::finish`] fails the test on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::{Forge, ForgeConfig, ForgeKind, Secret};

pub(crate) const TOKEN: &str = "t0k3n-for-tests";

/// One expected request and the answer to it.
#[derive(Debug)]
pub(crate) struct Expect {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    status: u16,
    headers: Vec<(String, String)>,
    answer: String,
}

impl Expect {
    fn new(method: Method, path: &str, body: Option<Value>) -> Self {
        Self {
            method,
            path: path.to_owned(),
            query: Vec::new(),
            body,
            status: 200,
            headers: Vec::new(),
            answer: String::new(),
        }
    }

    /// `path` as it must appear on the wire (percent-encoding included).
    pub(crate) fn get(path: &str) -> Self {
        Self::new(Method::GET, path, None)
    }

    pub(crate) fn post(path: &str, body: Value) -> Self {
        Self::new(Method::POST, path, Some(body))
    }

    pub(crate) fn patch(path: &str, body: Value) -> Self {
        Self::new(Method::PATCH, path, Some(body))
    }

    pub(crate) fn put(path: &str, body: Value) -> Self {
        Self::new(Method::PUT, path, Some(body))
    }

    /// The exact query parameters (decoded, in any order).
    pub(crate) fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        self.query = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    pub(crate) fn answer(mut self, status: u16, body: Value) -> Self {
        self.status = status;
        self.answer = body.to_string();
        self
    }

    pub(crate) fn answer_text(mut self, status: u16, body: &str) -> Self {
        self.status = status;
        self.answer = body.to_owned();
        self
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Debug, Default)]
struct Script {
    expected: VecDeque<Expect>,
    /// Headers every request must carry, with their exact values.
    required: Vec<(String, String)>,
    /// Headers no request may carry (another forge's credential header).
    absent: Vec<String>,
    failures: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct TestServer {
    /// The API root the client is given: the server's address and the API prefix.
    pub api_url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

/// The headers each forge's documentation requires, and the ones it must not get.
fn headers_of(kind: ForgeKind) -> (Vec<(String, String)>, Vec<String>) {
    let pairs: Vec<(&str, String)> = match kind {
        ForgeKind::GitHub => vec![
            ("authorization", format!("Bearer {TOKEN}")),
            ("accept", "application/vnd.github+json".into()),
            ("x-github-api-version", "2022-11-28".into()),
        ],
        ForgeKind::GitLab => vec![
            ("private-token", TOKEN.into()),
            ("accept", "application/json".into()),
        ],
        ForgeKind::Gitea => vec![
            ("authorization", format!("token {TOKEN}")),
            ("accept", "application/json".into()),
        ],
    };
    let absent = match kind {
        ForgeKind::GitLab => vec!["authorization".to_owned()],
        ForgeKind::GitHub | ForgeKind::Gitea => vec!["private-token".to_owned()],
    };
    (
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        absent,
    )
}

impl TestServer {
    /// Serves `script` under `prefix` (`/api/v3`, `/api/v4`, `/api/v1`) for a `kind` client.
    pub(crate) async fn start(kind: ForgeKind, prefix: &str, script: Vec<Expect>) -> Self {
        let (required, absent) = headers_of(kind);
        let script = Arc::new(Mutex::new(Script {
            expected: script.into(),
            required,
            absent,
            failures: Vec::new(),
        }));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            api_url: format!("http://{addr}{prefix}"),
            script,
            task,
        }
    }

    /// A client of `kind` pointed at this server with the test token.
    pub(crate) fn forge(&self, kind: ForgeKind) -> Forge {
        Forge::new(ForgeConfig {
            kind,
            api_url: self.api_url.clone(),
            token: Secret::new(TOKEN),
        })
        .expect("client")
    }

    /// Fails the test if a request did not match or an expected one never came.
    pub(crate) fn finish(self) {
        let script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            script.failures.is_empty(),
            "unexpected requests:\n{}",
            script.failures.join("\n")
        );
        assert!(
            script.expected.is_empty(),
            "requests never made: {:?}",
            script.expected
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(script): State<Arc<Mutex<Script>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 8 * 1024 * 1024).await.unwrap_or_default();
    let mut script = script.lock().unwrap_or_else(|e| e.into_inner());
    let seen = format!("{} {}", parts.method, parts.uri);
    let Some(expect) = script.expected.pop_front() else {
        script.failures.push(format!("{seen}: no request expected"));
        return teapot();
    };
    let mut problems = Vec::new();
    if parts.method != expect.method || parts.uri.path() != expect.path {
        problems.push(format!("expected {} {}", expect.method, expect.path));
    }
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| url_query(q).into_iter().collect::<Vec<(String, String)>>())
        .unwrap_or_default();
    let mut want_query = expect.query.clone();
    query.sort();
    want_query.sort();
    if query != want_query {
        problems.push(format!("query {query:?}, expected {want_query:?}"));
    }
    for (name, value) in &script.required {
        let got = parts
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok());
        if got != Some(value.as_str()) {
            problems.push(format!("header {name} is {got:?}"));
        }
    }
    for name in &script.absent {
        if parts.headers.contains_key(name.as_str()) {
            problems.push(format!("header {name} must not be sent"));
        }
    }
    let agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !agent.starts_with("auto-agent/") {
        problems.push(format!("user-agent {agent:?}"));
    }
    match &expect.body {
        Some(want) => {
            let json_type = parts
                .headers
                .get("content-type")
                .is_some_and(|v| v.as_bytes() == b"application/json");
            let got: Option<Value> = serde_json::from_slice(&body).ok();
            if !json_type || got.as_ref() != Some(want) {
                problems.push(format!(
                    "body {} (JSON content type: {json_type}), expected {want}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        None if !body.is_empty() => problems.push("a body on a request without one".into()),
        None => {}
    }
    if !problems.is_empty() {
        script
            .failures
            .push(format!("{seen}: {}", problems.join("; ")));
        return teapot();
    }
    let mut response = Response::new(Body::from(expect.answer.clone()));
    *response.status_mut() = StatusCode::from_u16(expect.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &expect.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

fn url_query(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn teapot() -> Response {
    let mut response = Response::new(Body::from(r#"{"message":"unexpected request"}"#));
    *response.status_mut() = StatusCode::IM_A_TEAPOT;
    response
}
