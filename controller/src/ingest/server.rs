//! The gRPC ingest every replica serves. Each stream: a handshake slot of its peer IP while its
//! token is authenticated (checked locally, then TokenReview, bound to a node), then either
//! `NotLeader{endpoint}` (this replica does not lead) or a slot among `max_streams` and among its
//! node's streams, `Welcome` and findings. A finding is acknowledged only after it entered the
//! incident pipeline; one about another node, a malformed one, or one over the rate limit is
//! rejected and counted. Losing the lease mid-stream sends `NotLeader` and ends the stream. The
//! stream's token is reviewed again every `recheck_every` and the stream is closed when the review
//! refuses it, when the token expires, or when a newer stream of the same node replaces it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use auto_agent_shared::convert::finding_from_proto;
use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngest;
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::auth::{AuthError, Authenticator, Refusal, SensorIdentity};
use crate::ingest::limits::{NodeStream, NodeStreams, PeerHandshakes};
use crate::ingest::pipeline::Pipeline;
use crate::ingest::verify::{Refused, Verifier};
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;

#[derive(Clone, Debug)]
pub struct IngestLimits {
    pub max_message_bytes: usize,
    /// Findings per second per stream, sustained.
    pub rate_per_second: f64,
    /// Findings a stream may send in a burst.
    pub burst: f64,
    /// How often an open stream's token is reviewed again (revocation is noticed within this).
    pub recheck_every: Duration,
}

pub struct Ingest {
    pub auth: Arc<Authenticator>,
    pub leadership: Leadership,
    pub pipeline: Pipeline,
    /// Authenticated streams, at most (`--max-streams`).
    pub streams: Arc<Semaphore>,
    /// Handshakes in progress per peer IP (`--handshakes-per-peer`).
    pub handshakes: PeerHandshakes,
    /// Streams per node (`--streams-per-node`).
    pub nodes: NodeStreams,
    pub limits: IngestLimits,
    pub metrics: ControllerMetrics,
    pub identity: String,
    pub verifier: Verifier,
    /// When a refusal was last logged at warn level: a flood is counted, not logged line by line.
    pub last_refusal_log: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ingest")
    }
}

/// A token bucket for one stream.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn message(m: controller_message::Message) -> Result<pb::ControllerMessage, Status> {
    Ok(pb::ControllerMessage { message: Some(m) })
}

fn not_leader(leadership: &Leadership) -> controller_message::Message {
    let view = leadership.view();
    controller_message::Message::NotLeader(pb::NotLeader {
        leader_endpoint: view.endpoint.unwrap_or_default(),
        leader_identity: view.holder.unwrap_or_default(),
    })
}

fn rejected(
    id: String,
    sequence: u64,
    reason: pb::RejectReason,
    text: String,
) -> controller_message::Message {
    controller_message::Message::Rejected(pb::Rejected {
        id,
        sequence,
        reason: reason as i32,
        message: text,
    })
}

/// A stream's bearer token, kept for its re-reviews; never printed.
struct Bearer(String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// How long after a failed re-review (apiserver unreachable, no review slot) it is tried again.
const RECHECK_RETRY: Duration = Duration::from_secs(10);

/// The moment `at` falls on, on the monotonic clock.
fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

fn refusal_status(e: &AuthError) -> Status {
    match e {
        AuthError::Refused(Refusal::WrongServiceAccount(_)) => {
            Status::permission_denied(e.to_string())
        }
        AuthError::Refused(_) => Status::unauthenticated(e.to_string()),
        AuthError::Busy | AuthError::Api(_) => Status::unavailable("cannot authenticate right now"),
    }
}

impl Ingest {
    fn refuse(&self, cause: &str, status: Status) -> Status {
        self.metrics
            .streams_refused
            .with_label_values(&[cause])
            .inc();
        // At most one warning a second: under a flood the metric counts, the log does not grow.
        let now = Instant::now();
        let mut last = self
            .last_refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(
                cause,
                "Sensor stream refused (further refusals within a second are only counted)"
            );
        } else {
            tracing::debug!(cause, "Sensor stream refused");
        }
        status
    }
}

#[tonic::async_trait]
impl SensorIngest for Ingest {
    type StreamStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::SensorMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let Some(handshake) = self.handshakes.enter(peer) else {
            return Err(self.refuse(
                "too_many_handshakes",
                Status::resource_exhausted("too many handshakes in progress from this address"),
            ));
        };
        let token = Bearer(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_owned(),
        );
        let authenticated = match self.auth.authenticate(&token.0).await {
            Ok(a) => a,
            Err(e) => {
                if let AuthError::Api(api) = &e {
                    tracing::warn!(error = %api, "TokenReview failed");
                }
                return Err(self.refuse(e.category(), refusal_status(&e)));
            }
        };
        drop(handshake);
        let identity = authenticated.identity;
        let (tx, rx) = mpsc::channel(256);
        if !self.leadership.is_leader() {
            let _ = tx.send(message(not_leader(&self.leadership))).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return Err(self.refuse(
                "too_many_streams",
                Status::resource_exhausted("too many sensor streams"),
            ));
        };
        let (registration, replaced) = self.nodes.register(&identity.node);
        if replaced > 0 {
            self.metrics
                .streams_closed
                .with_label_values(&["replaced"])
                .inc_by(replaced as u64);
            tracing::info!(node = %identity.node, "A newer stream of this node replaces its oldest");
        }
        let mut inbound = request.into_inner();
        let first = tokio::select! {
            m = tokio::time::timeout(Duration::from_secs(10), inbound.message()) => m,
            () = registration.replaced() => return Err(Status::aborted("replaced by a newer stream of this node")),
        };
        let hello = match first {
            Ok(Ok(Some(pb::SensorMessage {
                message: Some(sensor_message::Message::Hello(h)),
            }))) => h,
            _ => {
                return Err(self.refuse(
                    "no_hello",
                    Status::invalid_argument("the first message must be Hello"),
                ));
            }
        };
        if hello.node_name != identity.node {
            return Err(self.refuse(
                "wrong_node",
                Status::permission_denied(format!(
                    "the token is bound to node {}, the stream claims {}",
                    identity.node, hello.node_name
                )),
            ));
        }
        tx.send(message(controller_message::Message::Welcome(pb::Welcome {
            leader_identity: self.identity.clone(),
            max_message_bytes: self.limits.max_message_bytes as u32,
            leader_term: self.leadership.view().term.unwrap_or_default(),
        })))
        .await
        .map_err(|_| Status::cancelled("closed"))?;
        tracing::info!(node = %identity.node, sensor = %hello.instance_id, version = %hello.version, "Sensor stream open");

        let session = Session {
            identity,
            token,
            expires: instant_of(authenticated.expires),
            registration,
            auth: self.auth.clone(),
            leadership: self.leadership.clone(),
            pipeline: self.pipeline.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            verifier: self.verifier.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            session.metrics.streams_open.inc();
            session.serve(inbound, tx).await;
            session.metrics.streams_open.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    identity: SensorIdentity,
    token: Bearer,
    /// When the stream's token expires.
    expires: Instant,
    registration: NodeStream,
    auth: Arc<Authenticator>,
    leadership: Leadership,
    pipeline: Pipeline,
    metrics: ControllerMetrics,
    limits: IngestLimits,
    verifier: Verifier,
}

/// Why a session closes its stream: the metric cause and what the sensor is told.
type Close = (&'static str, Status);

impl Session {
    /// Reviews the stream's token again; `Ok(when)` is the next review, `Err` closes the stream.
    /// An apiserver that cannot answer keeps the stream open (retried soon), until the token's
    /// expiry closes it regardless.
    async fn recheck(&self) -> Result<Instant, Close> {
        let now = Instant::now();
        if now >= self.expires {
            return Err((
                "token_expired",
                Status::unauthenticated("the stream's token expired; reconnect with a fresh one"),
            ));
        }
        match self.auth.recheck(&self.token.0).await {
            Ok(a) if a.identity == self.identity => {
                Ok((now + self.limits.recheck_every).min(self.expires))
            }
            Ok(_) => Err((
                "token_refused",
                Status::permission_denied("the token no longer names this stream's identity"),
            )),
            Err(AuthError::Refused(r)) => {
                tracing::warn!(node = %self.identity.node, cause = r.category(), "Stream closed: its token was refused on re-review");
                Err(("token_refused", Status::unauthenticated(r.to_string())))
            }
            Err(e) => {
                tracing::warn!(node = %self.identity.node, error = %e, "Re-review of a stream's token failed; retrying");
                Ok((now + RECHECK_RETRY).min(self.expires))
            }
        }
    }

    async fn serve(
        &self,
        mut inbound: Streaming<pb::SensorMessage>,
        tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    ) {
        let mut leadership = self.leadership.clone();
        let mut bucket = Bucket {
            tokens: self.limits.burst,
            last: Instant::now(),
        };
        let mut next_check = (Instant::now() + self.limits.recheck_every).min(self.expires);
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                () = leadership.changed() => {
                    if !leadership.is_leader() {
                        let _ = tx.send(message(not_leader(&leadership))).await;
                        return;
                    }
                    continue;
                }
                () = self.registration.replaced() => {
                    let _ = tx.send(Err(Status::aborted("replaced by a newer stream of this node"))).await;
                    return;
                }
                () = tokio::time::sleep_until(next_check.into()) => {
                    match self.recheck().await {
                        Ok(next) => next_check = next,
                        Err((cause, status)) => {
                            self.metrics.streams_closed.with_label_values(&[cause]).inc();
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                    continue;
                }
            };
            let finding = match msg {
                Ok(Some(pb::SensorMessage {
                    message: Some(sensor_message::Message::Finding(f)),
                })) => f,
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(status) => {
                    // Oversized or undecodable messages end up here.
                    self.metrics
                        .findings
                        .with_label_values(&["malformed"])
                        .inc();
                    tracing::warn!(node = %self.identity.node, error = %status, "Sensor stream broke");
                    return;
                }
            };
            let (id, sequence) = (finding.id.clone(), finding.sequence);
            let reply = if !bucket.take(self.limits.rate_per_second, self.limits.burst) {
                self.metrics
                    .findings
                    .with_label_values(&["rate_limited"])
                    .inc();
                rejected(
                    id,
                    sequence,
                    pb::RejectReason::RateLimited,
                    "over the per-stream rate limit".into(),
                )
            } else {
                match finding_from_proto(finding) {
                    Err(e) => {
                        self.metrics
                            .findings
                            .with_label_values(&["malformed"])
                            .inc();
                        rejected(id, sequence, pb::RejectReason::Malformed, e.to_string())
                    }
                    Ok(f) if f.node != self.identity.node => {
                        self.metrics
                            .findings
                            .with_label_values(&["wrong_node"])
                            .inc();
                        tracing::warn!(stream_node = %self.identity.node, finding_node = %f.node, "Finding about another node rejected");
                        rejected(
                            id,
                            sequence,
                            pb::RejectReason::WrongNode,
                            format!("this stream may only report node {}", self.identity.node),
                        )
                    }
                    Ok(f)
                        if self
                            .pipeline
                            .is_duplicate(&f.id, &f.node)
                            .await
                            .unwrap_or(false) =>
                    {
                        // A resend of what this node's stream already put in the book: acknowledged
                        // without asking the API server again (counted as a duplicate).
                        controller_message::Message::Ack(pb::Ack {
                            sequence,
                            ids: vec![],
                        })
                    }
                    Ok(f) => match self.verifier.verify(f, &self.identity.node).await {
                        Err(e) => {
                            // Not acknowledged: the sensor sends it again on its next stream.
                            tracing::warn!(error = %e, "Verifying a finding failed; closing the stream");
                            let _ = tx
                                .send(Err(Status::unavailable(
                                    "verifying the finding failed; send it again",
                                )))
                                .await;
                            return;
                        }
                        Ok(Err(Refused::Stale(text))) => {
                            rejected(id, sequence, pb::RejectReason::Stale, text)
                        }
                        Ok(Err(Refused::Forged { message: text, .. })) => {
                            rejected(id, sequence, pb::RejectReason::Forged, text)
                        }
                        Ok(Ok(f)) => match self.pipeline.submit(f).await {
                            Ok(_) => controller_message::Message::Ack(pb::Ack {
                                sequence,
                                ids: vec![],
                            }),
                            Err(crate::ingest::pipeline::PipelineError::Key(e)) => {
                                rejected(id, sequence, pb::RejectReason::Malformed, e.to_string())
                            }
                            Err(crate::ingest::pipeline::PipelineError::Closed) => return,
                        },
                    },
                }
            };
            if tx.send(message(reply)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::auth::AuthLimits;
    use crate::ingest::auth::testing::{REVIEWS, accepted, refused, token};
    use crate::testing::{FakeApi, FakeLeader, crash_finding};
    use auto_agent_shared::convert::finding_to_proto;
    use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
    use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngestServer;
    use tokio_util::sync::CancellationToken;

    const AUD: &str = "auto-agent";
    const USER: &str = "system:serviceaccount:auto-agent:sensor";

    /// An ingest server on a loopback port, authenticating against a fake API.
    struct Harness {
        addr: std::net::SocketAddr,
        metrics: ControllerMetrics,
        stop: CancellationToken,
        _leader: FakeLeader,
        _changes: mpsc::Receiver<crate::ingest::pipeline::Change>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn limits(recheck_every: Duration) -> IngestLimits {
        IngestLimits {
            max_message_bytes: 64 * 1024,
            rate_per_second: 100.0,
            burst: 100.0,
            recheck_every,
        }
    }

    async fn serve(
        client: kube::Client,
        limits: IngestLimits,
        handshakes_per_peer: usize,
    ) -> Harness {
        let metrics = crate::testing::metrics();
        let leader = FakeLeader::new(&metrics, true);
        let (changes_tx, changes) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let (pipeline, _) = crate::ingest::pipeline::start(
            metrics.clone(),
            crate::platform::incidents::Incidents::new(),
            leader.leadership.clone(),
            changes_tx,
            stop.clone(),
        );
        let ingest = Ingest {
            auth: Arc::new(Authenticator::new(
                client.clone(),
                AUD.into(),
                USER.into(),
                AuthLimits::default(),
                metrics.token_reviews.clone(),
            )),
            leadership: leader.leadership.clone(),
            pipeline,
            streams: Arc::new(Semaphore::new(100)),
            handshakes: PeerHandshakes::new(handshakes_per_peer),
            nodes: NodeStreams::new(2),
            limits,
            metrics: metrics.clone(),
            identity: "test".into(),
            verifier: Verifier {
                events: crate::testing::event_sink(&client, &leader.leadership, &metrics),
                client: client.clone(),
                metrics: metrics.clone(),
            },
            last_refusal_log: Mutex::new(None),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SensorIngestServer::new(ingest))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        Harness {
            addr,
            metrics,
            stop,
            _leader: leader,
            _changes: changes,
        }
    }

    /// A sensor's stream: what it sends and what it receives.
    struct Stream {
        tx: mpsc::Sender<pb::SensorMessage>,
        inbound: Streaming<pb::ControllerMessage>,
        sequence: u64,
    }

    impl Stream {
        /// Opens a stream for `node-a` and reads the first answer, which must be `Welcome`.
        async fn open(addr: std::net::SocketAddr, token: &str) -> Result<Self, Status> {
            let mut client = SensorIngestClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let (tx, rx) = mpsc::channel(8);
            tx.send(pb::SensorMessage {
                message: Some(sensor_message::Message::Hello(pb::Hello {
                    node_name: "node-a".into(),
                    instance_id: "i".into(),
                    version: "test".into(),
                })),
            })
            .await
            .unwrap();
            let mut request = Request::new(ReceiverStream::new(rx));
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut inbound = client.stream(request).await?.into_inner();
            match inbound.message().await?.and_then(|m| m.message) {
                Some(controller_message::Message::Welcome(_)) => Ok(Self {
                    tx,
                    inbound,
                    sequence: 0,
                }),
                other => panic!("expected Welcome, got {other:?}"),
            }
        }

        /// Sends a finding and waits for its Ack.
        async fn acked(&mut self) {
            let id = format!("f-{}", self.sequence + 1);
            self.acked_as(&id).await;
        }

        /// Sends a finding with this id and waits for its Ack.
        async fn acked_as(&mut self, id: &str) {
            self.sequence += 1;
            let finding = auto_agent_engine::Finding {
                id: id.into(),
                ..crash_finding()
            };
            self.tx
                .send(pb::SensorMessage {
                    message: Some(sensor_message::Message::Finding(finding_to_proto(
                        &finding,
                        self.sequence,
                    ))),
                })
                .await
                .unwrap();
            match self
                .inbound
                .message()
                .await
                .unwrap()
                .and_then(|m| m.message)
            {
                Some(controller_message::Message::Ack(a)) => assert_eq!(a.sequence, self.sequence),
                other => panic!("expected Ack, got {other:?}"),
            }
        }

        /// Waits (at most 10 s) for the controller to end the stream; returns its status.
        async fn closed(&mut self) -> Status {
            match tokio::time::timeout(Duration::from_secs(10), self.inbound.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected the stream to be closed with a status, got {other:?}"),
            }
        }
    }

    fn closed_by(metrics: &ControllerMetrics, cause: &str) -> u64 {
        metrics.streams_closed.with_label_values(&[cause]).get()
    }

    /// A fake API whose TokenReviews accept every token for `node-a`.
    fn accepting() -> FakeApi {
        let api = FakeApi::default();
        crate::testing::verifiable_pod(&api);
        api.on("POST", REVIEWS, vec![accepted(USER, AUD, "node-a")]);
        api
    }

    fn reviews(api: &FakeApi) -> usize {
        api.seen_with("POST", "tokenreviews").len()
    }

    /// A resend of a finding already in the book, on the same stream or after a reconnect, is
    /// acknowledged and counted as a duplicate without reading the API server again; a new one is
    /// verified.
    #[tokio::test]
    async fn resends_are_acknowledged_without_verifying_again() {
        let api = accepting();
        let h = serve(api.client(), limits(Duration::from_secs(300)), 32).await;
        let reads = || api.seen().iter().filter(|s| s.method == "GET").count();
        let mut stream = Stream::open(h.addr, &token(AUD, 3600, "t1")).await.unwrap();
        stream.acked_as("f-1").await;
        let first = reads();
        assert!(first >= 1, "the first is verified against the API");
        stream.acked_as("f-1").await;
        drop(stream);
        let mut again = Stream::open(h.addr, &token(AUD, 3600, "t2")).await.unwrap();
        again.acked_as("f-1").await;
        assert_eq!(reads(), first, "resends read nothing");
        assert_eq!(
            h.metrics.findings.with_label_values(&["duplicate"]).get(),
            2
        );
        again.acked_as("f-2").await;
        assert!(reads() > first, "a new finding is verified");
        assert_eq!(h.metrics.findings.with_label_values(&["accepted"]).get(), 2);
    }

    /// A token revoked while its stream is open (the sensor's pod deleted, its ServiceAccount
    /// removed) closes the stream at the next re-review.
    #[tokio::test]
    async fn a_revoked_token_closes_its_stream() {
        let api = FakeApi::default();
        crate::testing::verifiable_pod(&api);
        api.on(
            "POST",
            REVIEWS,
            vec![accepted(USER, AUD, "node-a"), refused()],
        );
        let h = serve(api.client(), limits(Duration::from_millis(500)), 32).await;
        let mut stream = Stream::open(h.addr, &token(AUD, 3600, "t")).await.unwrap();
        stream.acked().await;
        let status = stream.closed().await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(!status.message().contains(&token(AUD, 3600, "t")));
        assert_eq!(
            reviews(&api),
            2,
            "opened with one review, closed by the second"
        );
        assert_eq!(closed_by(&h.metrics, "token_refused"), 1);
    }

    /// A stream does not outlive its token, however long the re-review interval.
    #[tokio::test]
    async fn an_expired_token_closes_its_stream() {
        let api = accepting();
        let h = serve(api.client(), limits(Duration::from_secs(3600)), 32).await;
        let mut stream = Stream::open(h.addr, &token(AUD, 2, "short")).await.unwrap();
        let status = stream.closed().await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert_eq!(closed_by(&h.metrics, "token_expired"), 1);
        assert_eq!(reviews(&api), 1, "no re-review was due");
    }

    /// A node holds two streams at most: a third (a restarted sensor while its old stream still
    /// looks open) gets in and the oldest is closed.
    #[tokio::test]
    async fn a_third_stream_of_a_node_replaces_the_oldest() {
        let api = accepting();
        let h = serve(api.client(), limits(Duration::from_secs(3600)), 32).await;
        let t = token(AUD, 3600, "t");
        let mut first = Stream::open(h.addr, &t).await.unwrap();
        let mut second = Stream::open(h.addr, &t).await.unwrap();
        let mut third = Stream::open(h.addr, &t).await.unwrap();
        assert_eq!(first.closed().await.code(), tonic::Code::Aborted);
        second.acked().await;
        third.acked().await;
        assert_eq!(closed_by(&h.metrics, "replaced"), 1);
        assert_eq!(reviews(&api), 1, "the same token is reviewed once");
    }

    /// While a peer has `handshakes_per_peer` handshakes waiting for their TokenReview, its next
    /// stream is refused at once, before any review.
    #[tokio::test]
    async fn handshakes_in_progress_are_bounded_per_peer() {
        let api = accepting();
        // An apiserver that takes a second per request.
        let inner = api.client();
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = started.clone();
        let slow = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let inner = inner.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                inner.send(req).await
            }
        });
        let h = serve(
            kube::Client::new(slow, "default"),
            limits(Duration::from_secs(3600)),
            2,
        )
        .await;
        let opening: Vec<_> = (0..2)
            .map(|i| {
                let (addr, t) = (h.addr, token(AUD, 3600, &format!("t{i}")));
                tokio::spawn(async move { Stream::open(addr, &t).await.map(|_| ()) })
            })
            .collect();
        // Both are waiting for their review now.
        tokio::time::timeout(Duration::from_secs(5), async {
            while started.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let refused = Stream::open(h.addr, &token(AUD, 3600, "t3"))
            .await
            .err()
            .unwrap();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert_eq!(
            h.metrics
                .streams_refused
                .with_label_values(&["too_many_handshakes"])
                .get(),
            1
        );
        for o in opening {
            assert!(o.await.unwrap().is_ok(), "the first two get in");
        }
    }
}
