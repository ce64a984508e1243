//! A TCP forwarder standing in for a Kubernetes Service in front of several controller replicas:
//! each connection goes to the first backend that accepts it, like kube-proxy skipping dead
//! endpoints. Also a black hole: an endpoint that accepts and never answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct ServiceProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServiceProxy {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let list = backends.lock().map(|b| b.clone()).unwrap_or_default();
                tokio::spawn(async move {
                    for backend in list {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP listener that accepts and holds every connection without a byte (an endpoint whose
/// server hangs); counts the connections.
#[derive(Debug)]
pub struct BlackHole {
    pub addr: SocketAddr,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        });
        Ok(Self {
            addr,
            accepted,
            task,
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
