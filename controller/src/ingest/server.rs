//! The gRPC ingest every replica serves. Each stream: a slot among `max_streams`, TokenReview
//! authentication bound to a node, then either `NotLeader{endpoint}` (this replica does not lead)
//! or `Welcome` and findings. A finding is acknowledged only after it entered the incident
//! pipeline; one about another node, a malformed one, or one over the rate limit is rejected and
//! counted. Losing the lease mid-stream sends `NotLeader` and ends the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auto_agent_shared::convert::finding_from_proto;
use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngest;
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::auth::{AuthError, Authenticator, SensorIdentity};
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
}

pub struct Ingest {
    pub auth: Arc<Authenticator>,
    pub leadership: Leadership,
    pub pipeline: Pipeline,
    pub streams: Arc<Semaphore>,
    pub limits: IngestLimits,
    pub metrics: ControllerMetrics,
    pub identity: String,
    pub verifier: Verifier,
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

impl Ingest {
    fn refuse(&self, cause: &str, status: Status) -> Status {
        self.metrics
            .streams_refused
            .with_label_values(&[cause])
            .inc();
        tracing::warn!(cause, "Sensor stream refused");
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
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return Err(self.refuse(
                "too_many_streams",
                Status::resource_exhausted("too many sensor streams"),
            ));
        };
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        let identity = match self.auth.authenticate(&token).await {
            Ok(identity) => identity,
            Err(AuthError::Api(e)) => {
                tracing::warn!(error = %e, "TokenReview failed");
                return Err(self.refuse(
                    "tokenreview_error",
                    Status::unavailable("cannot authenticate right now"),
                ));
            }
            Err(e) => {
                let status = match e {
                    AuthError::WrongServiceAccount(_) => Status::permission_denied(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                };
                return Err(self.refuse(e.category(), status));
            }
        };
        let (tx, rx) = mpsc::channel(256);
        if !self.leadership.is_leader() {
            let _ = tx.send(message(not_leader(&self.leadership))).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
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
    leadership: Leadership,
    pipeline: Pipeline,
    metrics: ControllerMetrics,
    limits: IngestLimits,
    verifier: Verifier,
}

impl Session {
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
