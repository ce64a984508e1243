//! The admin HTTP server: `/live`, `/ready` (true only after every watch synced, false again at
//! shutdown) and `/metrics` in the Prometheus text format.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Args;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use super::Shutdown;

#[derive(Clone, Debug, Args)]
pub struct AdminArgs {
    /// Address of the admin server (`/live`, `/ready`, `/metrics`).
    #[arg(long, env = "AUTO_AGENT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
}

/// Readiness shared between the tasks that become ready and the admin server.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    registry: Registry,
}

/// The admin server of one binary.
#[derive(Clone, Debug)]
pub struct AdminServer {
    readiness: Readiness,
    registry: Registry,
    extra: Option<Router>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.readiness.get())
            .finish()
    }
}

impl AdminServer {
    pub fn new(readiness: Readiness, registry: Registry) -> Self {
        Self {
            readiness,
            registry,
            extra: None,
        }
    }

    /// The same server with more routes of the binary's own (the controller's `/incidents`).
    pub fn with_routes(self, extra: Router) -> Self {
        Self {
            extra: Some(extra),
            ..self
        }
    }

    /// The routes, without a listener (tests drive them directly).
    pub fn router(&self) -> Router {
        let base = Router::new()
            .route("/live", get(|| async { "ok\n" }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(AdminState {
                readiness: self.readiness.clone(),
                registry: self.registry.clone(),
            });
        match &self.extra {
            Some(extra) => base.merge(extra.clone()),
            None => base,
        }
    }

    /// Serves until `shutdown` fires; readiness turns false first so load balancers stop routing.
    pub async fn serve(&self, addr: SocketAddr, shutdown: Shutdown) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "Admin server listening");
        let readiness = self.readiness.clone();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.triggered().await;
                readiness.set(false);
            })
            .await
    }
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut buf = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
