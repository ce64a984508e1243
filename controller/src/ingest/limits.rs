//! Bounds on who may hold what on the ingest, in memory of this replica:
//! - [`PeerHandshakes`]: unauthenticated handshakes in progress per peer IP, so one host cannot
//!   keep the authenticator busy for everyone;
//! - [`NodeStreams`]: open streams per node identity. A sensor token is bound to one node, so a
//!   stolen or buggy one can hold at most this many streams. Over the limit the newest stream wins
//!   and the oldest is closed: a restarted sensor must get in at once, while its previous stream
//!   may linger half-open until keepalive notices (about 40 s); during a DaemonSet rolling update
//!   the old and the new sensor overlap briefly, so the default is 2.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Unauthenticated handshakes in progress, per peer IP.
#[derive(Clone, Debug)]
pub struct PeerHandshakes {
    limit: usize,
    in_progress: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One handshake in progress; dropping it ends it.
#[derive(Debug)]
pub struct Handshake {
    ip: IpAddr,
    in_progress: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerHandshakes {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_progress: Arc::default(),
        }
    }

    /// Starts a handshake from `ip`, unless `limit` are in progress from it already.
    pub fn enter(&self, ip: IpAddr) -> Option<Handshake> {
        let mut map = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Handshake {
            ip,
            in_progress: self.in_progress.clone(),
        })
    }

    /// Peers with a handshake in progress (the map never holds more).
    pub fn peers(&self) -> usize {
        self.in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut map = self.in_progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

type Open = Arc<Mutex<HashMap<String, VecDeque<(u64, CancellationToken)>>>>;

/// Open streams per node.
#[derive(Clone, Debug)]
pub struct NodeStreams {
    limit: usize,
    next: Arc<AtomicU64>,
    open: Open,
}

/// One registered stream of a node: `closed()` fires when a newer stream replaced it; dropping it
/// unregisters it.
#[derive(Debug)]
pub struct NodeStream {
    id: u64,
    node: String,
    replaced: CancellationToken,
    open: Open,
}

impl NodeStreams {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            next: Arc::default(),
            open: Arc::default(),
        }
    }

    /// Registers a new stream for `node`; when `limit` are open already, the oldest is told to
    /// close. Returns the registration and how many it replaced.
    pub fn register(&self, node: &str) -> (NodeStream, usize) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let streams = open.entry(node.to_owned()).or_default();
        let mut closed = 0;
        while streams.len() >= self.limit {
            if let Some((_, oldest)) = streams.pop_front() {
                oldest.cancel();
                closed += 1;
            }
        }
        streams.push_back((id, replaced.clone()));
        (
            NodeStream {
                id,
                node: node.to_owned(),
                replaced,
                open: self.open.clone(),
            },
            closed,
        )
    }

    /// Streams registered for `node`.
    pub fn open_for(&self, node: &str) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .map_or(0, VecDeque::len)
    }
}

impl NodeStream {
    /// Fires when a newer stream of the same node replaced this one.
    pub async fn replaced(&self) {
        self.replaced.cancelled().await;
    }
}

impl Drop for NodeStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(streams) = open.get_mut(&self.node) {
            streams.retain(|(id, _)| *id != self.id);
            if streams.is_empty() {
                open.remove(&self.node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_bounded_per_peer() {
        let limiter = PeerHandshakes::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.enter(a).unwrap();
        let _second = limiter.enter(a).unwrap();
        assert!(limiter.enter(a).is_none(), "a third from the same peer");
        let _other = limiter.enter(b).expect("another peer is not affected");
        drop(first);
        let _again = limiter
            .enter(a)
            .expect("a slot freed by a finished handshake");
        assert_eq!(limiter.peers(), 2);
    }

    #[test]
    fn finished_handshakes_leave_no_entry() {
        let limiter = PeerHandshakes::new(1);
        for i in 0..100u8 {
            drop(limiter.enter(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert_eq!(limiter.peers(), 0);
    }

    #[test]
    fn a_new_stream_replaces_the_oldest_of_its_node() {
        let streams = NodeStreams::new(2);
        let (first, replaced) = streams.register("node-a");
        assert_eq!(replaced, 0);
        let (second, _) = streams.register("node-a");
        let (_other, replaced) = streams.register("node-b");
        assert_eq!(replaced, 0, "another node is not affected");
        assert!(!first.replaced.is_cancelled());
        let (third, replaced) = streams.register("node-a");
        assert_eq!(replaced, 1);
        assert!(first.replaced.is_cancelled(), "the oldest is told to close");
        assert!(!second.replaced.is_cancelled());
        assert!(!third.replaced.is_cancelled());
        assert_eq!(streams.open_for("node-a"), 2);
        drop(first);
        assert_eq!(streams.open_for("node-a"), 2, "already unregistered");
        drop(second);
        drop(third);
        assert_eq!(streams.open_for("node-a"), 0);
        assert_eq!(
            streams
                .open
                .lock()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec!["node-b".to_owned()]
        );
    }
}
