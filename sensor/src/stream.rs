//! The gRPC stream to the controller: TLS, the ServiceAccount token on every stream, acks,
//! resends after reconnects, and following the leader.
//!
//! Reaching the leader: the sensor dials the configured address (the controller Service). Any
//! replica may answer; a non-leader replies `NotLeader{leader_endpoint}` and the sensor dials that
//! endpoint directly (same TLS server name). When the leader cannot be reached the sensor falls back
//! to the Service address. Reconnects use jittered exponential backoff, reset after a `Welcome`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auto_agent_shared::convert::finding_to_proto;
use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::metrics::SensorMetrics;
use crate::queue::Queue;

/// How the sensor reaches and authenticates to the controller.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// `https://host:port` (or `http://` with plaintext).
    pub controller: String,
    /// `None` only with the explicit plaintext dev flag.
    pub tls: Option<TlsConfig>,
    pub token_file: PathBuf,
    pub node: String,
    pub instance_id: String,
    /// Findings sent and not yet acknowledged, at most.
    pub window: usize,
    /// How often the token file is checked for rotation.
    pub token_check: Duration,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    /// The name the controller's certificate must carry (also used for redirected endpoints).
    pub server_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("reading the CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("stream refused: {0}")]
    Status(#[from] tonic::Status),
    #[error("the controller closed the stream")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

enum End {
    Redirect(String),
    TokenRotated,
    Shutdown,
}

/// A secret token; never printed.
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn read_token(path: &PathBuf) -> Result<Token, StreamError> {
    let raw = std::fs::read_to_string(path).map_err(|source| StreamError::Token {
        path: path.clone(),
        source,
    })?;
    let token = raw.trim().to_owned();
    if token.is_empty() {
        return Err(StreamError::EmptyToken(path.clone()));
    }
    Ok(Token(token))
}

pub struct Streamer {
    pub config: StreamConfig,
    pub queue: Arc<Mutex<Queue>>,
    pub notify: Arc<Notify>,
    pub metrics: SensorMetrics,
    /// Bumped when a new leadership term welcomes us: the watches re-send what still holds.
    pub resync: tokio::sync::watch::Sender<u64>,
}

/// Whether a Welcome starts a leadership term this sensor has not streamed to before. The first
/// term needs no re-send (the initial sync queued everything) and an empty term is a controller
/// that predates terms.
pub fn is_new_term(last: Option<&str>, welcomed: &str) -> bool {
    !welcomed.is_empty() && last.is_some_and(|l| l != welcomed)
}

impl Streamer {
    fn backoff() -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Runs until `stop`, reconnecting forever.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Self::backoff();
        let mut leader: Option<String> = None;
        let mut redirects_in_a_row = 0u32;
        let mut term: Option<String> = None;
        loop {
            let target = leader
                .clone()
                .unwrap_or_else(|| self.config.controller.clone());
            let result = self.session(&target, &stop, &mut backoff, &mut term).await;
            let requeued = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .requeue_inflight();
            self.metrics.inflight.set(0);
            match result {
                Ok(End::Shutdown) => return,
                Ok(End::TokenRotated) => {
                    tracing::info!("Token rotated; reopening the stream");
                    continue;
                }
                Ok(End::Redirect(endpoint)) if !endpoint.is_empty() && redirects_in_a_row < 3 => {
                    self.metrics.redirects.inc();
                    redirects_in_a_row += 1;
                    tracing::info!(leader = %endpoint, "Not the leader; following the redirect");
                    leader = Some(endpoint);
                    continue;
                }
                Ok(End::Redirect(_)) => {
                    tracing::warn!("No reachable leader known yet");
                    leader = None;
                }
                Err(e) => {
                    tracing::warn!(target = %target, error = %e, requeued, "Stream to the controller ended");
                    leader = None;
                }
            }
            redirects_in_a_row = 0;
            self.metrics.stream_reconnects.inc();
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn channel(&self, target: &str) -> Result<Channel, StreamError> {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let uri = if target.contains("://") {
            target.to_owned()
        } else {
            format!("{scheme}://{target}")
        };
        let connect_err = |source| StreamError::Connect {
            endpoint: uri.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(connect_err)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.config.tls {
            // Read on every connect, so a rotated CA is picked up.
            let ca = std::fs::read(&tls.ca_file).map_err(|source| StreamError::Ca {
                path: tls.ca_file.clone(),
                source,
            })?;
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(tls.server_name.clone());
            endpoint = endpoint.tls_config(config).map_err(connect_err)?;
        }
        endpoint.connect().await.map_err(connect_err)
    }

    async fn session(
        &self,
        target: &str,
        stop: &CancellationToken,
        backoff: &mut backon::ExponentialBackoff,
        term: &mut Option<String>,
    ) -> Result<End, StreamError> {
        let token = read_token(&self.config.token_file)?;
        let channel = self.channel(target).await?;
        let mut client = SensorIngestClient::new(channel);

        let (tx, rx) = mpsc::channel::<pb::SensorMessage>(64);
        let hello = pb::Hello {
            node_name: self.config.node.clone(),
            instance_id: self.config.instance_id.clone(),
            version: auto_agent_shared::VERSION.to_owned(),
        };
        tx.send(pb::SensorMessage {
            message: Some(sensor_message::Message::Hello(hello)),
        })
        .await
        .map_err(|_| StreamError::Closed)?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = MetadataValue::try_from(format!("Bearer {}", token.0))
            .map_err(|_| StreamError::Protocol("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut inbound = client.stream(request).await?.into_inner();

        match inbound.message().await?.and_then(|m| m.message) {
            Some(controller_message::Message::Welcome(w)) => {
                tracing::info!(target = %target, leader = %w.leader_identity, term = %w.leader_term, "Stream to the leader established");
                *backoff = Self::backoff();
                if is_new_term(term.as_deref(), &w.leader_term) {
                    // The new leader's incident book starts empty: tell it what still holds.
                    tracing::info!(
                        "A new leadership term; re-sending every condition that still holds"
                    );
                    self.metrics.resyncs.inc();
                    self.resync.send_modify(|generation| *generation += 1);
                }
                if !w.leader_term.is_empty() {
                    *term = Some(w.leader_term);
                }
            }
            Some(controller_message::Message::NotLeader(n)) => {
                return Ok(End::Redirect(n.leader_endpoint));
            }
            Some(_) => return Err(StreamError::Protocol("expected Welcome or NotLeader first")),
            None => return Err(StreamError::Closed),
        }

        let mut token_check = tokio::time::interval(self.config.token_check);
        token_check.tick().await;
        loop {
            self.fill_window(&tx).await?;
            tokio::select! {
                () = self.notify.notified() => {}
                msg = inbound.message() => match msg?.and_then(|m| m.message) {
                    Some(controller_message::Message::Ack(ack)) => {
                        let released = self.queue.lock().unwrap_or_else(|e| e.into_inner()).ack(ack.sequence, &ack.ids);
                        self.metrics.acked.inc_by(released as u64);
                    }
                    Some(controller_message::Message::Rejected(r)) => {
                        let reason = pb::RejectReason::try_from(r.reason).map_or("unknown", |r| r.as_str_name());
                        self.metrics.rejected.with_label_values(&[reason]).inc();
                        tracing::warn!(id = %r.id, reason, message = %r.message, "Finding rejected by the controller");
                        self.queue.lock().unwrap_or_else(|e| e.into_inner()).reject(r.sequence);
                    }
                    Some(controller_message::Message::NotLeader(n)) => return Ok(End::Redirect(n.leader_endpoint)),
                    Some(controller_message::Message::Welcome(_)) => {}
                    None => return Err(StreamError::Closed),
                },
                _ = token_check.tick() => {
                    if read_token(&self.config.token_file).is_ok_and(|t| t.0 != token.0) {
                        return Ok(End::TokenRotated);
                    }
                }
                () = stop.cancelled() => return Ok(End::Shutdown),
            }
            self.update_gauges();
        }
    }

    /// Sends pending findings while fewer than `window` are unacknowledged.
    async fn fill_window(&self, tx: &mpsc::Sender<pb::SensorMessage>) -> Result<(), StreamError> {
        loop {
            let next = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.inflight_len() >= self.config.window {
                    None
                } else {
                    q.next_to_send()
                }
            };
            let Some((seq, finding)) = next else { break };
            let message = pb::SensorMessage {
                message: Some(sensor_message::Message::Finding(finding_to_proto(
                    &finding, seq,
                ))),
            };
            tx.send(message).await.map_err(|_| StreamError::Closed)?;
        }
        self.update_gauges();
        Ok(())
    }

    fn update_gauges(&self) {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.metrics.queue_depth.set(q.len() as i64);
        self.metrics.inflight.set(q.inflight_len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::is_new_term;

    #[test]
    fn only_a_different_known_term_triggers_a_resend() {
        let table: &[(Option<&str>, &str, bool)] = &[
            (None, "a-1", false), // the first term: the initial sync already queued everything
            (Some("a-1"), "a-1", false), // a reconnect to the same term
            (Some("a-1"), "a-2", true), // the same process leads again: a new book
            (Some("a-1"), "b-1", true), // another replica took over
            (Some("a-1"), "", false), // a controller without terms
            (None, "", false),
        ];
        for (last, welcomed, want) in table {
            assert_eq!(
                is_new_term(*last, welcomed),
                *want,
                "{last:?} -> {welcomed}"
            );
        }
    }
}
