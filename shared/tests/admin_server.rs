//! The admin server answers /live always, /ready only when ready, and serves /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_shared::runtime::{AdminServer, Readiness, metrics};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(server: &AdminServer, path: &str) -> (StatusCode, String) {
    let resp = server
        .router()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn live_ready_and_metrics() {
    let readiness = Readiness::new();
    let registry = metrics::registry().unwrap();
    let counter = prometheus::IntCounter::new("auto_agent_test_total", "test counter").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc_by(3);
    let server = AdminServer::new(readiness.clone(), registry);

    assert_eq!(get(&server, "/live").await.0, StatusCode::OK);
    assert_eq!(
        get(&server, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    readiness.set(true);
    assert_eq!(get(&server, "/ready").await.0, StatusCode::OK);

    let (status, body) = get(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("auto_agent_test_total 3"), "{body}");
    assert!(body.contains("process_resident_memory_bytes"), "{body}");

    readiness.set(false);
    assert_eq!(
        get(&server, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&server, "/nope").await.0, StatusCode::NOT_FOUND);
}
