//! The gRPC ingest's TLS identity, re-read when its files change. The certificate and key are
//! mounted from a Secret that cert-manager (or a person) renews; the kubelet swaps the mounted
//! files in place. tonic's own TLS setting is fixed at start, so the server terminates TLS itself:
//! a rustls resolver hands every new handshake the identity current at that moment
//! ([`ReloadingIdentity`]), and [`incoming`] gives tonic the accepted TLS streams. Streams already
//! open keep the identity they started with; new ones get the new certificate, without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; further connections wait in the listen backlog.
const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the certificate and key are unusable together: {0}")]
    Key(#[from] rustls::Error),
}

/// The process's one crypto provider (ring), for keys and the server configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key in two PEM files, checked to belong together.
fn certified_key(
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .ok()
        .filter(|c: &Vec<_>| !c.is_empty())
        .ok_or_else(|| TlsError::Pem {
            path: cert_file.to_owned(),
            what: "certificate",
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Pem {
        path: key_file.to_owned(),
        what: "private key",
    })?;
    Ok(CertifiedKey::from_der(chain, key, &provider())?)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The server's identity, swapped whole when the files change.
#[derive(Debug)]
pub struct ReloadingIdentity {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents `current` was built from.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingIdentity {
    /// Reads the identity; a start without a usable one fails.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let key = certified_key(cert_file, &cert_pem, key_file, &key_pem)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Re-reads both files: true when they changed and the new identity is in use. A pair that
    /// does not load (half written, a key that does not match) leaves the current identity in
    /// place and is tried again next time.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_file)?, read(&self.key_file)?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let key = certified_key(&self.cert_file, &cert_pem, &self.key_file, &key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// Reloads every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            match self.reload() {
                Ok(true) => {
                    failing = false;
                    tracing::info!(cert = %self.cert_file.display(), "Reloaded the gRPC TLS certificate; new streams use it");
                }
                Ok(false) => failing = false,
                // Once per failing spell, not every poll.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "The changed gRPC TLS files do not load; serving the previous certificate");
                }
                Err(_) => {}
            }
        }
    }

    /// The server configuration: this identity, no client certificates, HTTP/2 by ALPN (what
    /// tonic's own TLS offers).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// TLS connections accepted on `listener`, for tonic's `serve_with_incoming_shutdown`. Each
/// handshake runs on its own task, bounded in time and in number, so a slow client never holds
/// up the next one; a failed handshake is logged and dropped. Accepting stops with `stop` or when
/// the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = tx.closed() => return,
                () = stop.cancelled() => return,
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "Accepting a gRPC connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
                () = stop.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
                drop(permit);
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::TlsConnector;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    struct Pki {
        ca: CertificateDer<'static>,
        ca_pem: String,
        /// (certificate PEM, key PEM, certificate DER) of two server identities.
        servers: Vec<(String, String, CertificateDer<'static>)>,
    }

    fn pki() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let servers = (0..2)
            .map(|_| {
                let key = KeyPair::generate().unwrap();
                let cert = CertificateParams::new(vec!["localhost".to_owned()])
                    .unwrap()
                    .signed_by(&key, &ca)
                    .unwrap();
                (cert.pem(), key.serialize_pem(), cert.der().clone())
            })
            .collect();
        Pki {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            servers,
        }
    }

    /// The certificate a new client handshake is shown, and the protocol agreed.
    async fn handshake(
        addr: std::net::SocketAddr,
        ca: &CertificateDer<'static>,
    ) -> (CertificateDer<'static>, Option<Vec<u8>>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        (
            session.peer_certificates().unwrap()[0].clone(),
            session.alpn_protocol().map(<[u8]>::to_vec),
        )
    }

    #[tokio::test]
    async fn new_handshakes_get_the_renewed_certificate() {
        let pki = pki();
        let dir = temp_dir("reload");
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        let write = |i: usize| {
            std::fs::write(&cert_file, &pki.servers[i].0).unwrap();
            std::fs::write(&key_file, &pki.servers[i].1).unwrap();
        };
        write(0);
        let identity = ReloadingIdentity::load(&cert_file, &key_file).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let mut streams = incoming(listener, identity.server_config().unwrap(), stop.clone());
        // Accepted streams are taken off the channel as a server would.
        let drain = tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut open = Vec::new();
            while let Some(s) = streams.next().await {
                open.push(s);
            }
        });
        tokio::spawn(
            identity
                .clone()
                .watch(Duration::from_millis(20), stop.clone()),
        );

        let (first, alpn) = handshake(addr, &pki.ca).await;
        assert_eq!(first, pki.servers[0].2, "cert A at start");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "HTTP/2 for tonic");

        // A key that does not match the certificate: the current identity stays.
        std::fs::write(&cert_file, &pki.servers[1].0).unwrap();
        assert!(matches!(identity.reload(), Err(TlsError::Key(_))));
        assert_eq!(handshake(addr, &pki.ca).await.0, pki.servers[0].2);

        // The renewal lands (both files): the poll picks it up, new handshakes see cert B.
        write(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (seen, _) = handshake(addr, &pki.ca).await;
            if seen == pki.servers[1].2 {
                break;
            }
            assert_eq!(seen, pki.servers[0].2);
            assert!(
                tokio::time::Instant::now() < deadline,
                "cert B never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !identity.reload().unwrap(),
            "unchanged files: nothing to do"
        );

        // Garbage in the files never replaces a working identity.
        std::fs::write(&cert_file, b"not a certificate").unwrap();
        assert!(matches!(identity.reload(), Err(TlsError::Pem { .. })));
        assert_eq!(handshake(addr, &pki.ca).await.0, pki.servers[1].2);

        stop.cancel();
        drain.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Answers every stream with one recognisable status, so the client can tell it reached the
    /// service through the reloading acceptor.
    struct Refuser;

    #[tonic::async_trait]
    impl auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngest for Refuser {
        type StreamStream =
            ReceiverStream<Result<auto_agent_shared::proto::v1::ControllerMessage, tonic::Status>>;

        async fn stream(
            &self,
            _request: tonic::Request<tonic::Streaming<auto_agent_shared::proto::v1::SensorMessage>>,
        ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
            Err(tonic::Status::unavailable("refused over reloading TLS"))
        }
    }

    #[tokio::test]
    async fn tonic_serves_grpc_over_the_accepted_streams() {
        use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
        use auto_agent_shared::proto::v1::sensor_ingest_server::SensorIngestServer;
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

        let pki = pki();
        let dir = temp_dir("grpc");
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_file, &pki.servers[0].0).unwrap();
        std::fs::write(&key_file, &pki.servers[0].1).unwrap();
        let identity = ReloadingIdentity::load(&cert_file, &key_file).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let incoming = incoming(listener, identity.server_config().unwrap(), stop.clone());
        let server_stop = stop.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SensorIngestServer::new(Refuser))
                .serve_with_incoming_shutdown(
                    incoming,
                    async move { server_stop.cancelled().await },
                ),
        );
        // The sensor's client configuration: the CA only, the Service's name.
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = SensorIngestClient::new(channel)
            .stream(tokio_stream::empty())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "refused over reloading TLS");
        stop.cancel();
        server.await.unwrap().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_start_without_a_usable_identity_fails() {
        let pki = pki();
        let dir = temp_dir("load");
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        assert!(matches!(
            ReloadingIdentity::load(&cert_file, &key_file),
            Err(TlsError::Read { .. })
        ));
        std::fs::write(&cert_file, &pki.servers[0].0).unwrap();
        std::fs::write(&key_file, &pki.servers[1].1).unwrap();
        assert!(matches!(
            ReloadingIdentity::load(&cert_file, &key_file),
            Err(TlsError::Key(_))
        ));
        std::fs::write(&key_file, b"").unwrap();
        assert!(matches!(
            ReloadingIdentity::load(&cert_file, &key_file),
            Err(TlsError::Pem { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
