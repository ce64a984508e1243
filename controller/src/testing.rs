//! Test support without a cluster: a fake API server behind kube's `Client` (a tower service that
//! answers from routes and records every request), a leader that can step down, metrics, and an
//! evidence keeper on a temporary directory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::client::Body;
use serde_json::Value;
use tokio::sync::watch;

use crate::platform::leader::{self, LeaderConfig, LeaderView, Leadership};
use crate::platform::metrics::ControllerMetrics;

/// One request as the fake API saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Debug)]
struct Route {
    method: &'static str,
    /// Matches the path (without query) exactly, or as a prefix when it ends with `*`.
    path: String,
    /// Answered in order; the last one is repeated.
    answers: VecDeque<(u16, Value)>,
}

#[derive(Clone, Debug, Default)]
pub struct FakeApi {
    routes: Arc<Mutex<Vec<Route>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": reason, "reason": reason, "code": code})
}

impl FakeApi {
    /// Answers `method path` with these responses in order (the last repeats).
    pub fn on(&self, method: &'static str, path: &str, answers: Vec<(u16, Value)>) -> &Self {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Route {
                method,
                path: path.to_owned(),
                answers: answers.into(),
            });
        self
    }

    /// Like [`FakeApi::on`], but ahead of every route already set (to override a fixture's).
    pub fn first(&self, method: &'static str, path: &str, answers: Vec<(u16, Value)>) -> &Self {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                0,
                Route {
                    method,
                    path: path.to_owned(),
                    answers: answers.into(),
                },
            );
        self
    }

    pub fn not_found(code: u16) -> (u16, Value) {
        (code, status(code, "NotFound"))
    }

    pub fn conflict() -> (u16, Value) {
        (409, status(409, "Conflict"))
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests with this method whose path contains `part`.
    pub fn seen_with(&self, method: &str, part: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.uri.contains(part))
            .collect()
    }

    fn answer(&self, method: &str, path: &str) -> (u16, Value) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let route = routes.iter_mut().find(|r| {
            r.method == method
                && match r.path.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => r.path == path,
                }
        });
        match route {
            Some(r) if r.answers.len() > 1 => r.answers.pop_front().unwrap_or_default(),
            Some(r) => r.answers.front().cloned().unwrap_or_default(),
            None => (404, status(404, "NotFound")),
        }
    }

    /// A kube client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let this = self.clone();
        let service = tower::service_fn(move |req: http::Request<Body>| {
            let this = this.clone();
            async move {
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let path = req.uri().path().to_owned();
                let content_type = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                this.seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Seen {
                        method: method.clone(),
                        uri,
                        content_type,
                        body,
                    });
                let (code, value) = this.answer(&method, &path);
                let mut response =
                    http::Response::new(Body::from(serde_json::to_vec(&value).unwrap_or_default()));
                *response.status_mut() =
                    http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            }
        });
        Client::new(service, "default")
    }
}

pub fn metrics() -> ControllerMetrics {
    ControllerMetrics::register(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// A leadership handle and the switch that sets it.
pub struct FakeLeader {
    pub tx: watch::Sender<LeaderView>,
    pub leadership: Leadership,
}

impl FakeLeader {
    pub fn new(metrics: &ControllerMetrics, leading: bool) -> Self {
        let config = LeaderConfig {
            namespace: "auto-agent".into(),
            lease_name: "lease".into(),
            identity: "test".into(),
            advertise: "127.0.0.1:1".into(),
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            margin: Duration::from_secs(5),
        };
        let (tx, leadership) = leader::channel(&config, metrics.clone());
        let this = Self { tx, leadership };
        this.set(leading);
        this
    }

    pub fn set(&self, leading: bool) {
        let _ = self.tx.send(LeaderView {
            is_leader: leading,
            valid_until: leading.then(|| Instant::now() + Duration::from_secs(60)),
            holder: Some("test".into()),
            endpoint: None,
            term: leading.then(|| "term-1".into()),
        });
    }
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "controller-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A crash-looping finding about pod `prod/api-1` (uid `u1`) of Deployment `api` on `node-a`.
pub fn crash_finding() -> auto_agent_engine::Finding {
    use auto_agent_engine::{FindingKind, PodRef, Transition, WorkloadRef};
    auto_agent_engine::Finding {
        id: "f1".into(),
        node: "node-a".into(),
        kind: FindingKind::CrashLoopBackOff,
        transition: Transition::Started,
        pod: Some(PodRef {
            namespace: "prod".into(),
            name: "api-1".into(),
            uid: "u1".into(),
        }),
        owner: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: "api".into(),
        }),
        container: Some("app".into()),
        reason: "CrashLoopBackOff".into(),
        message: String::new(),
        restart_count: 3,
        exit_code: Some(1),
        image: Some("registry.example.com/app:1".into()),
        observed_at_ms: 0,
        log_lines: vec!["boom".into()],
        log_truncated: false,
    }
}

/// Pod `prod/api-1` with this uid and its `app` container waiting in CrashLoopBackOff.
pub fn crashing_pod(uid: &str, annotations: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "prod", "uid": uid, "annotations": annotations,
                     "labels": {"app": "api"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5d8f7",
                                          "uid": "rs1", "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
        "status": {"containerStatuses": [{"name": "app", "image": "registry.example.com/app:1", "imageID": "",
                    "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    })
}

/// ReplicaSet `prod/api-5d8f7` (uid `rs1`) of Deployment `prod/api` (uid `d1`), selecting `app=api`.
pub fn replica_set() -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "api-5d8f7", "namespace": "prod", "uid": "rs1",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                                          "uid": "d1", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}}}
    })
}

/// Answers what the ingest's verify step reads for [`crash_finding`]: pod `prod/api-1` (uid
/// `u1`, on `node-a`), its ReplicaSet and its Deployment.
pub fn verifiable_pod(api: &FakeApi) {
    api.on(
        "GET",
        "/api/v1/namespaces/prod/pods/api-1",
        vec![(200, crashing_pod("u1", serde_json::json!({})))],
    )
    .on(
        "GET",
        "/apis/apps/v1/namespaces/prod/replicasets/api-5d8f7",
        vec![(200, replica_set())],
    )
    .on(
        "GET",
        "/apis/apps/v1/namespaces/prod/deployments/api",
        vec![(200, deployment(1, 1, serde_json::json!({})))],
    );
}

/// Deployment `prod/api` with `replicas` wanted and `ready` ready, labels `app=api`.
pub fn deployment(replicas: i32, ready: i32, annotations: Value) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod", "uid": "d1", "annotations": annotations},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1",
                                       "resources": {"limits": {"memory": "256Mi"}}}]}}},
        "status": {"replicas": replicas, "readyReplicas": ready}
    })
}

/// An evidence keeper writing to a fresh directory, and the directory.
pub fn keeper(name: &str) -> (Arc<auto_agent_evidence::Keeper>, std::path::PathBuf) {
    use auto_agent_evidence::{Durability, EvidenceMetrics, Keeper, Spool, Stores};
    let dir = temp_dir(name);
    let keeper = Keeper::new(
        Stores {
            s3: None,
            allowed_roots: vec![dir.clone()],
            allowed_buckets: vec![],
        },
        Spool::new(dir.join("spool"), 10, 1 << 20),
        EvidenceMetrics::register(&prometheus::Registry::new()).unwrap_or_else(|e| panic!("{e}")),
        Durability::Local,
        Duration::from_secs(5),
    );
    (Arc::new(keeper), dir)
}

/// Every file below `dir`, as paths relative to it.
pub fn files_below(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// An Event sink on the fake API, fenced by `leadership`.
pub fn event_sink(
    client: &Client,
    leadership: &Leadership,
    metrics: &ControllerMetrics,
) -> crate::platform::events::EventSink {
    crate::platform::events::EventSink {
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "auto-agent".into(),
                instance: None,
            },
        ),
        leadership: leadership.clone(),
        metrics: metrics.clone(),
    }
}

/// The API's answer to creating an Event (events.k8s.io/v1).
pub fn event_created() -> (u16, Value) {
    (
        201,
        serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                           "metadata": {"name": "e"}, "eventTime": "2026-01-01T00:00:00.000000Z"}),
    )
}

/// The API's answer to creating the ledger ConfigMap.
pub fn ledger_created() -> (u16, Value) {
    (
        201,
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "ledger", "resourceVersion": "1"}}),
    )
}
