//! A gRPC load generator for the scale benchmark: it speaks the sensor's protocol (Hello, Welcome,
//! findings, acks) over TLS with a real node-bound token, as many nodes' sensors would, without a
//! sensor process per node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::agents::CONTROLLER_TLS_NAME;

/// Findings sent and not yet answered, at most (the sensor's own window).
pub const WINDOW: usize = 128;

/// A pod a finding is about.
#[derive(Clone, Debug)]
pub struct PodTarget {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
    pub image: String,
}

/// A CrashLoopBackOff finding about `pod` on `node`, with an id unique to (pod, round).
pub fn crash_finding(node: &str, pod: &PodTarget, round: u32) -> pb::Finding {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pb::Finding {
        id: format!("bench:{}:{}:crash:{round}", pod.uid, pod.container),
        sequence: 0,
        node_name: node.to_owned(),
        kind: pb::FindingKind::CrashLoopBackOff as i32,
        transition: pb::Transition::Started as i32,
        pod: Some(pb::PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }),
        owner: None,
        container: pod.container.clone(),
        reason: "CrashLoopBackOff".into(),
        message: "back-off 40s restarting failed container".into(),
        restart_count: round + 1,
        exit_code: Some(1),
        image: pod.image.clone(),
        observed_at: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: 0,
        }),
        evidence: Some(pb::Evidence {
            log_lines: vec!["fatal: cannot open /etc/app/config.yaml".into()],
            truncated: false,
            source: pb::LogSource::NodeFile as i32,
        }),
    }
}

/// What the controller answered to a batch of findings.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    pub acked: u64,
    /// Rejections by reason (`REJECT_REASON_*` names).
    pub rejected: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Answers {
    pub fn add(&mut self, other: &Answers) {
        self.acked += other.acked;
        for (k, v) in &other.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// One node's stream, welcomed by the leader.
#[derive(Debug)]
pub struct LoadStream {
    pub node: String,
    tx: mpsc::Sender<pb::SensorMessage>,
    inbound: Streaming<pb::ControllerMessage>,
    sequence: u64,
}

impl LoadStream {
    /// Connects over TLS (`ca_file` verifies the controller's certificate), sends the Hello with
    /// `token` and waits for the Welcome. A refusal is an error naming its status.
    pub async fn open(
        addr: std::net::SocketAddr,
        ca_file: &std::path::Path,
        node: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        let ca = std::fs::read(ca_file)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(CONTROLLER_TLS_NAME);
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect()
            .await
            .context("connecting to the controller")?;
        let mut client = SensorIngestClient::new(channel)
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(4 << 20);
        let (tx, rx) = mpsc::channel(WINDOW * 2);
        tx.send(pb::SensorMessage {
            message: Some(sensor_message::Message::Hello(pb::Hello {
                node_name: node.into(),
                instance_id: format!("loadgen-{node}"),
                version: "bench".into(),
            })),
        })
        .await?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let mut inbound = client.stream(request).await?.into_inner();
        match inbound.message().await?.and_then(|m| m.message) {
            Some(controller_message::Message::Welcome(_)) => Ok(Self {
                node: node.into(),
                tx,
                inbound,
                sequence: 0,
            }),
            other => bail!("{node}: no Welcome but {other:?}"),
        }
    }

    /// Sends `findings` in order, at most `WINDOW` unanswered, and waits for every answer.
    pub async fn send_all(&mut self, findings: Vec<pb::Finding>) -> anyhow::Result<Answers> {
        let start = Instant::now();
        let mut answers = Answers::default();
        let total = findings.len() as u64;
        let mut pending = findings.into_iter();
        let mut in_flight = 0usize;
        let mut answered = 0u64;
        while answered < total {
            while in_flight < WINDOW {
                let Some(mut f) = pending.next() else { break };
                self.sequence += 1;
                f.sequence = self.sequence;
                self.tx
                    .send(pb::SensorMessage {
                        message: Some(sensor_message::Message::Finding(f)),
                    })
                    .await
                    .context("the stream closed")?;
                in_flight += 1;
            }
            let reply = self
                .inbound
                .message()
                .await?
                .with_context(|| format!("{}: the stream ended", self.node))?;
            match reply.message {
                Some(controller_message::Message::Ack(_)) => answers.acked += 1,
                Some(controller_message::Message::Rejected(r)) => {
                    let reason = pb::RejectReason::try_from(r.reason)
                        .map(|r| r.as_str_name().to_owned())
                        .unwrap_or_else(|_| r.reason.to_string());
                    *answers.rejected.entry(reason).or_default() += 1;
                }
                other => bail!("{}: unexpected {other:?}", self.node),
            }
            in_flight -= 1;
            answered += 1;
        }
        answers.elapsed = start.elapsed();
        Ok(answers)
    }
}
