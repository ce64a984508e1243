//! The gRPC stream to the controller: TLS, the ServiceAccount token on every stream, acks,
//! resends after reconnects, and following the leader.
//!
//! Reaching the leader: the sensor dials the configured address (the controller Service). Any
//! replica may answer; a non-leader replies `NotLeader{leader_endpoint}` and the sensor dials that
//! endpoint directly (same TLS server name). When the leader cannot be reached the sensor falls back
//! to the Service address. Reconnects use jittered exponential backoff, reset after a `Welcome`.
//!
//! Limits the controller announces are honoured: a finding larger than `Welcome.max_message_bytes`
//! loses the oldest lines of its log tail (then the end of its message) until it fits, so it cannot
//! break the stream on every resend; one that cannot fit even so is dropped and counted. A finding
//! refused for the rate limit goes back to the queue and the stream pauses sending (200 ms, doubling
//! to 5 s while refusals continue, reset by an ack) before it is sent again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auto_agent_shared::convert::finding_to_proto;
use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use backon::{BackoffBuilder, ExponentialBuilder};
use prost::Message as _;
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

/// tonic's default limit, assumed when a controller announces none.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// How long sending pauses after a rate-limit refusal, first and at most.
const RATE_PAUSE_MIN: Duration = Duration::from_millis(200);
const RATE_PAUSE_MAX: Duration = Duration::from_secs(5);

/// A finding made to fit the controller's message size.
#[derive(Debug, PartialEq)]
pub enum Fitted {
    Whole(pb::SensorMessage),
    /// Log lines (oldest first) or the end of the message were cut.
    Cut(pb::SensorMessage),
    /// Larger than the limit even without a log tail and a message.
    TooLarge,
}

fn wrap(finding: pb::Finding) -> pb::SensorMessage {
    pb::SensorMessage {
        message: Some(sensor_message::Message::Finding(finding)),
    }
}

fn encoded_len(finding: &pb::Finding) -> usize {
    // The oneof field's tag and length prefix around the finding.
    let len = finding.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Cuts `finding` to at most `max` encoded bytes: first the oldest log lines (the end of a log
/// says why the container died), then the end of the message.
pub fn fit(mut finding: pb::Finding, max: usize) -> Fitted {
    if encoded_len(&finding) <= max {
        return Fitted::Whole(wrap(finding));
    }
    if let Some(evidence) = finding.evidence.as_mut() {
        evidence.truncated = true;
    }
    // Each line costs its tag, its length prefix and its bytes; the evidence's own length prefix
    // only shrinks as lines go, so this count is enough.
    let mut size = encoded_len(&finding);
    let drop = finding.evidence.as_ref().map_or(0, |e| {
        let mut n = 0;
        for line in &e.log_lines {
            if size <= max {
                break;
            }
            size = size.saturating_sub(
                1 + prost::encoding::encoded_len_varint(line.len() as u64) + line.len(),
            );
            n += 1;
        }
        n
    });
    if let Some(evidence) = finding.evidence.as_mut() {
        evidence.log_lines.drain(..drop);
    }
    while encoded_len(&finding) > max && !finding.message.is_empty() {
        let excess = encoded_len(&finding) - max;
        let mut keep = finding.message.len().saturating_sub(excess);
        while !finding.message.is_char_boundary(keep) {
            keep -= 1;
        }
        finding.message.truncate(keep);
    }
    if encoded_len(&finding) <= max {
        Fitted::Cut(wrap(finding))
    } else {
        Fitted::TooLarge
    }
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

        let max_message_bytes = match inbound.message().await?.and_then(|m| m.message) {
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
                match w.max_message_bytes {
                    0 => DEFAULT_MAX_MESSAGE_BYTES,
                    n => n as usize,
                }
            }
            Some(controller_message::Message::NotLeader(n)) => {
                return Ok(End::Redirect(n.leader_endpoint));
            }
            Some(_) => return Err(StreamError::Protocol("expected Welcome or NotLeader first")),
            None => return Err(StreamError::Closed),
        };

        let mut token_check = tokio::time::interval(self.config.token_check);
        token_check.tick().await;
        // Sending pauses after a rate-limit refusal, until `paused_until`.
        let mut paused_until: Option<tokio::time::Instant> = None;
        let mut pause = RATE_PAUSE_MIN;
        loop {
            if paused_until.is_none_or(|t| tokio::time::Instant::now() >= t) {
                paused_until = None;
                self.fill_window(&tx, max_message_bytes).await?;
            }
            let resume = paused_until.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep_until(resume), if paused_until.is_some() => {}
                msg = inbound.message() => match msg?.and_then(|m| m.message) {
                    Some(controller_message::Message::Ack(ack)) => {
                        let released = self.queue.lock().unwrap_or_else(|e| e.into_inner()).ack(ack.sequence, &ack.ids);
                        self.metrics.acked.inc_by(released as u64);
                        if released > 0 {
                            pause = RATE_PAUSE_MIN;
                        }
                    }
                    Some(controller_message::Message::Rejected(r))
                        if r.reason == pb::RejectReason::RateLimited as i32 =>
                    {
                        self.metrics.rejected.with_label_values(&[pb::RejectReason::RateLimited.as_str_name()]).inc();
                        self.queue.lock().unwrap_or_else(|e| e.into_inner()).retry(r.sequence);
                        // One pause per round of refusals, longer while they continue.
                        if paused_until.is_none() {
                            tracing::debug!(pause = ?pause, "Rate limited by the controller; pausing before re-sending");
                            paused_until = Some(tokio::time::Instant::now() + pause);
                            pause = (pause * 2).min(RATE_PAUSE_MAX);
                        }
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

    /// Sends pending findings while fewer than `window` are unacknowledged, each cut to `max`
    /// encoded bytes.
    async fn fill_window(
        &self,
        tx: &mpsc::Sender<pb::SensorMessage>,
        max: usize,
    ) -> Result<(), StreamError> {
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
            let message = match fit(finding_to_proto(&finding, seq), max) {
                Fitted::Whole(m) => m,
                Fitted::Cut(m) => {
                    self.metrics.truncated.inc();
                    m
                }
                Fitted::TooLarge => {
                    self.metrics.oversized.inc();
                    tracing::warn!(id = %finding.id, max, "Finding larger than the controller accepts even without its log; dropped");
                    self.queue
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .reject(seq);
                    continue;
                }
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
    use super::*;
    use auto_agent_engine::{Finding, FindingKind};
    use auto_agent_shared::proto::v1::sensor_ingest_server::{SensorIngest, SensorIngestServer};
    use std::collections::HashSet;
    use tonic::{Request, Response, Status, Streaming};

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

    fn logged(uid: &str, lines: usize, line_bytes: usize, message: usize) -> Finding {
        Finding {
            log_lines: (0..lines)
                .map(|i| format!("{i:04} {}", "x".repeat(line_bytes.saturating_sub(5))))
                .collect(),
            message: "m".repeat(message),
            ..crate::queue::tests::f(uid, "app", FindingKind::CrashLoopBackOff, 1)
        }
    }

    fn finding_of(m: &pb::SensorMessage) -> &pb::Finding {
        match &m.message {
            Some(sensor_message::Message::Finding(f)) => f,
            other => panic!("not a finding: {other:?}"),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        Whole,
        /// Cut; whether the message had to be cut too.
        Cut {
            message: bool,
        },
        TooLarge,
    }

    /// What `fit` keeps: everything when it fits; else as many of the newest log lines as fit
    /// (one more would not), then the start of the message; nothing when even the bare finding
    /// is too large.
    #[test]
    fn fit_table() {
        // (log lines, bytes each, message bytes, limit, outcome)
        let table: &[(usize, usize, usize, usize, Want)] = &[
            (10, 100, 0, 4096, Want::Whole),
            (100, 100, 0, 4096, Want::Cut { message: false }),
            (100, 100, 3000, 4096, Want::Cut { message: false }),
            (3, 2000, 0, 4096, Want::Cut { message: false }), // one long line fits, not two
            (100, 100, 5000, 4096, Want::Cut { message: true }), // no line fits
            (0, 0, 5000, 4096, Want::Cut { message: true }),
            (10, 100, 10, 40, Want::TooLarge), // the bare finding is larger than the limit
        ];
        for &(lines, bytes, message, max, want) in table {
            let finding = finding_to_proto(&logged("p", lines, bytes, message), 7);
            let case = format!("{lines}x{bytes} + {message} in {max}");
            let original = finding.evidence.clone().unwrap_or_default().log_lines;
            let fitted = fit(finding.clone(), max);
            let got = match &fitted {
                Fitted::Whole(m) => {
                    assert_eq!(finding_of(m), &finding, "{case}");
                    Want::Whole
                }
                Fitted::Cut(m) => {
                    assert!(m.encoded_len() <= max, "{case}: {} bytes", m.encoded_len());
                    let f = finding_of(m);
                    assert_eq!((f.id.as_str(), f.sequence), (finding.id.as_str(), 7));
                    let kept = f.evidence.clone().unwrap_or_default();
                    assert!(kept.truncated || original.is_empty(), "{case}: marked");
                    assert_eq!(
                        kept.log_lines[..],
                        original[original.len() - kept.log_lines.len()..],
                        "{case}: the newest lines"
                    );
                    if kept.log_lines.len() < original.len() && f.message == finding.message {
                        // One more (older) line would not have fitted.
                        let mut more = f.clone();
                        if let Some(e) = more.evidence.as_mut() {
                            let next = original[original.len() - kept.log_lines.len() - 1].clone();
                            e.log_lines.insert(0, next);
                        }
                        assert!(wrap(more).encoded_len() > max, "{case}: not maximal");
                    }
                    if f.message != finding.message {
                        assert!(kept.log_lines.is_empty(), "{case}: lines go first");
                        assert!(finding.message.starts_with(&f.message), "{case}");
                        assert!(
                            m.encoded_len() + 8 > max,
                            "{case}: the message is cut no more than needed"
                        );
                    }
                    Want::Cut {
                        message: f.message != finding.message,
                    }
                }
                Fitted::TooLarge => Want::TooLarge,
            };
            assert_eq!(got, want, "{case}");
        }
    }

    /// A controller that announces `max` bytes (and enforces it, as tonic does), refuses the first
    /// sending of every finding whose id is in `limit` for the rate limit, and acknowledges the
    /// rest. Records what it received.
    #[derive(Clone)]
    struct FakeController {
        max: usize,
        limit: Arc<Mutex<HashSet<String>>>,
        received: Arc<Mutex<Vec<pb::Finding>>>,
    }

    #[tonic::async_trait]
    impl SensorIngest for FakeController {
        type StreamStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

        async fn stream(
            &self,
            request: Request<Streaming<pb::SensorMessage>>,
        ) -> Result<Response<Self::StreamStream>, Status> {
            let (tx, rx) = mpsc::channel(256);
            let mut inbound = request.into_inner();
            let this = self.clone();
            let reply = |m| Ok(pb::ControllerMessage { message: Some(m) });
            tx.send(reply(controller_message::Message::Welcome(pb::Welcome {
                leader_identity: "fake".into(),
                max_message_bytes: this.max as u32,
                leader_term: "t".into(),
            })))
            .await
            .map_err(|_| Status::internal("closed"))?;
            tokio::spawn(async move {
                while let Ok(Some(m)) = inbound.message().await {
                    let Some(sensor_message::Message::Finding(f)) = m.message else {
                        continue;
                    };
                    this.received.lock().unwrap().push(f.clone());
                    let answer = if this.limit.lock().unwrap().remove(&f.id) {
                        controller_message::Message::Rejected(pb::Rejected {
                            id: f.id,
                            sequence: f.sequence,
                            reason: pb::RejectReason::RateLimited as i32,
                            message: "slow down".into(),
                        })
                    } else {
                        controller_message::Message::Ack(pb::Ack {
                            sequence: f.sequence,
                            ids: vec![],
                        })
                    };
                    if tx.send(reply(answer)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    /// A streamer against a fake controller; returns what the controller received once the
    /// queue is empty (every finding acknowledged or dropped), and the sensor's metrics.
    async fn deliver(
        controller: FakeController,
        findings: Vec<Finding>,
    ) -> (Vec<pb::Finding>, SensorMetrics) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let max = controller.max;
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    SensorIngestServer::new(controller.clone()).max_decoding_message_size(max),
                )
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let dir = std::env::temp_dir().join(format!("sensor-stream-{}-{addr}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "t").unwrap();
        let metrics = SensorMetrics::register(&prometheus::Registry::new()).unwrap();
        let queue = Arc::new(Mutex::new(Queue::new(100)));
        for f in findings {
            queue.lock().unwrap().push(f);
        }
        let streamer = Streamer {
            config: StreamConfig {
                controller: format!("http://{addr}"),
                tls: None,
                token_file: dir.join("token"),
                node: "n".into(),
                instance_id: "i".into(),
                window: 128,
                token_check: Duration::from_secs(30),
            },
            queue: queue.clone(),
            notify: Arc::new(Notify::new()),
            metrics: metrics.clone(),
            resync: tokio::sync::watch::channel(0).0,
        };
        let run = tokio::spawn(streamer.run(stop.clone()));
        let emptied = tokio::time::timeout(Duration::from_secs(20), async {
            while queue.lock().unwrap().len() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        stop.cancel();
        let _ = run.await;
        let received = controller.received.lock().unwrap().clone();
        assert!(
            emptied.is_ok(),
            "the queue never emptied; the controller received {} messages",
            received.len()
        );
        (received, metrics)
    }

    /// A finding over the controller's message size is cut and delivered, and the findings after
    /// it flow; without the cut every resend would break the stream again.
    #[tokio::test]
    async fn an_oversized_finding_is_cut_to_the_announced_size() {
        let controller = FakeController {
            max: 4096,
            limit: Arc::default(),
            received: Arc::default(),
        };
        let big = logged("big", 100, 200, 0);
        let (received, metrics) =
            deliver(controller, vec![big.clone(), logged("small", 2, 10, 0)]).await;
        let ids: Vec<_> = received.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, [big.id.as_str(), "small/app/CrashLoopBackOff/1"]);
        let evidence = received[0].evidence.clone().unwrap();
        assert!(evidence.truncated);
        assert_eq!(evidence.log_lines.last(), big.log_lines.last());
        assert_eq!(metrics.truncated.get(), 1);
        assert_eq!(metrics.acked.get(), 2);
    }

    /// Findings refused for the rate limit are sent again (same id and sequence) and acknowledged,
    /// not dropped.
    #[tokio::test]
    async fn rate_limited_findings_are_sent_again() {
        let findings: Vec<Finding> = ["a", "b", "c"]
            .into_iter()
            .map(|uid| crate::queue::tests::f(uid, "app", FindingKind::OomKilled, 1))
            .collect();
        let controller = FakeController {
            max: 64 * 1024,
            limit: Arc::new(Mutex::new(findings.iter().map(|f| f.id.clone()).collect())),
            received: Arc::default(),
        };
        let (received, metrics) = deliver(controller, findings.clone()).await;
        for f in &findings {
            let sent: Vec<u64> = received
                .iter()
                .filter(|r| r.id == f.id)
                .map(|r| r.sequence)
                .collect();
            assert_eq!(sent.len(), 2, "{}: refused once, then acknowledged", f.id);
            assert_eq!(sent[0], sent[1], "the same sequence");
        }
        assert_eq!(metrics.acked.get(), 3);
        assert_eq!(
            metrics
                .rejected
                .with_label_values(&["REJECT_REASON_RATE_LIMITED"])
                .get(),
            3
        );
    }
}
