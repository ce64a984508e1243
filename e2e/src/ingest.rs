//! A gRPC ingest server for tests: speaks the controller's side of `proto/autoagent/v1` (Welcome,
//! acks) and records what sensors send. It runs on its own thread and runtime so a test can kill it
//! outright (every connection dropped) and start it again on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use auto_agent_engine::Finding;
use auto_agent_shared::convert::finding_from_proto;
use auto_agent_shared::proto::v1::sensor_ingest_server::{SensorIngest, SensorIngestServer};
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// One finding as received, with the sequence it came with.
#[derive(Clone, Debug)]
pub struct Received {
    pub sequence: u64,
    pub finding: Finding,
}

/// What the server saw; shared across restarts.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub findings: Arc<Mutex<Vec<Received>>>,
    pub hellos: Arc<Mutex<Vec<pb::Hello>>>,
    /// Streams refused for lack of a bearer token.
    pub unauthenticated: Arc<Mutex<u32>>,
    /// A digest of the bearer token of each accepted stream (to see rotation; never the token).
    pub token_digests: Arc<Mutex<Vec<u64>>>,
    /// When false the server records findings but never acknowledges them.
    pub ack: Arc<AtomicBool>,
}

impl Recorder {
    pub fn new() -> Self {
        let r = Self::default();
        r.ack.store(true, Ordering::SeqCst);
        r
    }
    pub fn snapshot(&self) -> Vec<Received> {
        self.findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Clone, Debug)]
struct Service(Recorder);

#[tonic::async_trait]
impl SensorIngest for Service {
    type StreamStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::SensorMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty());
        let Some(token) = bearer else {
            *self
                .0
                .unauthenticated
                .lock()
                .unwrap_or_else(|e| e.into_inner()) += 1;
            return Err(Status::unauthenticated("a bearer token is required"));
        };
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            token.hash(&mut h);
            h.finish()
        };
        self.0
            .token_digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(digest);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let welcome = pb::ControllerMessage {
            message: Some(controller_message::Message::Welcome(pb::Welcome {
                leader_identity: "e2e-ingest".into(),
                max_message_bytes: 1 << 20,
                // One term for the recorder's life: reconnects re-send only what is unacked.
                leader_term: "e2e-ingest-1".into(),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::internal("closed"))?;
        let recorder = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                match msg.message {
                    Some(sensor_message::Message::Hello(h)) => {
                        recorder
                            .hellos
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(h);
                    }
                    Some(sensor_message::Message::Finding(f)) => {
                        let sequence = f.sequence;
                        if let Ok(finding) = finding_from_proto(f) {
                            recorder
                                .findings
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Received { sequence, finding });
                        }
                        if recorder.ack.load(Ordering::SeqCst) {
                            let ack = pb::ControllerMessage {
                                message: Some(controller_message::Message::Ack(pb::Ack {
                                    sequence,
                                    ids: vec![],
                                })),
                            };
                            if tx.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                    }
                    None => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running ingest server.
#[derive(Debug)]
pub struct IngestServer {
    pub addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IngestServer {
    /// Serves plaintext on `addr` (port 0 picks one) until killed.
    pub fn start(addr: SocketAddr, recorder: Recorder) -> anyhow::Result<Self> {
        Self::start_with(addr, recorder, None)
    }

    /// Serves TLS with the given PEM certificate and key.
    pub fn start_tls(
        addr: SocketAddr,
        recorder: Recorder,
        pki: &crate::pki::TestPki,
    ) -> anyhow::Result<Self> {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&pki.cert_file)?,
            std::fs::read(&pki.key_file)?,
        );
        Self::start_with(addr, recorder, Some(identity))
    }

    fn start_with(
        addr: SocketAddr,
        recorder: Recorder,
        tls: Option<tonic::transport::Identity>,
    ) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let mut builder = tonic::transport::Server::builder();
                if let Some(identity) = tls {
                    match builder
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    {
                        Ok(b) => builder = b,
                        Err(_) => return,
                    }
                }
                let server = builder
                    .add_service(SensorIngestServer::new(Service(recorder)))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every connection task: the peer sees the stream break.
            drop(runtime);
        });
        Ok(Self {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        })
    }

    /// Stops the server at once, breaking every open stream.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
