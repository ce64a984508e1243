//! A TCP forwarder standing in for a Kubernetes Service in front of several controller replicas:
//! each connection goes to the first backend that accepts it, like kube-proxy skipping dead
//! endpoints.

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
