//! The evidence keeper: saves a bundle to its store, or, when the store fails, to the local spool,
//! and delivers spooled bundles with retries once the store answers again. Whether a destructive
//! action may proceed on the local copy alone is the caller's choice ([`Durability`]).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::document::Bundle;
use crate::spool::{Spool, SpoolEntry, SpoolError};
use crate::store::{Destination, StoreError, Stores};

/// What a destructive action waits for before it goes ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The bundle is in its store or in the local spool (default: an outage of the store does not
    /// stop remediation, and the spool delivers later).
    Local,
    /// The bundle is in its store; a spooled bundle is delivered later but the action is refused.
    Remote,
}

#[derive(Clone, Debug)]
pub struct EvidenceMetrics {
    pub written: IntCounterVec,
    pub failed: IntCounterVec,
    pub spooled: IntCounterVec,
    pub delivered: IntCounterVec,
    pub spool_entries: IntGauge,
    pub spool_bytes: IntGauge,
}

impl EvidenceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            written: IntCounterVec::new(
                Opts::new(
                    "auto_agent_bundles_written_total",
                    "Evidence bundles written to their store (directly or from the spool)",
                ),
                &["store"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "auto_agent_bundles_failed_total",
                    "Failed attempts to write a bundle to its store",
                ),
                &["store"],
            )?,
            spooled: IntCounterVec::new(
                Opts::new(
                    "auto_agent_bundles_spooled_total",
                    "Bundles put in the local spool because their store failed",
                ),
                &["store"],
            )?,
            delivered: IntCounterVec::new(
                Opts::new(
                    "auto_agent_bundles_delivered_from_spool_total",
                    "Spooled bundles delivered to their store",
                ),
                &["store"],
            )?,
            spool_entries: IntGauge::new(
                "auto_agent_bundle_spool_entries",
                "Bundles waiting in the local spool",
            )?,
            spool_bytes: IntGauge::new(
                "auto_agent_bundle_spool_bytes",
                "Bytes waiting in the local spool",
            )?,
        };
        // Both stores at 0 from the start, so dashboards show a series rather than no data.
        for store in ["s3", "filesystem"] {
            for c in [&m.written, &m.failed, &m.spooled, &m.delivered] {
                c.with_label_values(&[store]);
            }
        }
        registry.register(Box::new(m.written.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.spooled.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.spool_entries.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        Ok(m)
    }
}

/// Where a saved bundle is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// In its store at this location.
    Stored(String),
    /// In the local spool; on its way to `pending` (the intended store location).
    Spooled { local: String, pending: String },
}

impl Saved {
    /// For Events and logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Stored(at) => at.clone(),
            Self::Spooled { local, pending } => {
                format!("{pending} (store unreachable; spooled at {local}, delivery pending)")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("serialising the bundle: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{store}; and the local spool refused it: {spool}")]
    Lost {
        store: StoreError,
        spool: SpoolError,
    },
    #[error(
        "the bundle is spooled at {local} but not yet in its store ({store}); this policy waits for the remote copy"
    )]
    NotRemote { local: String, store: StoreError },
    /// The destination is not one this installation allows: neither written nor spooled.
    #[error("{0}")]
    NotAllowed(StoreError),
}

#[derive(Debug)]
pub struct Keeper {
    pub stores: Stores,
    pub spool: Spool,
    pub metrics: EvidenceMetrics,
    pub durability: Durability,
    /// How long one direct write may take before the bundle goes to the spool instead.
    pub put_timeout: Duration,
    wake: Notify,
}

fn location(dest: &Destination, key: &str) -> String {
    match dest {
        Destination::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
        Destination::Filesystem { root } => root.join(key).display().to_string(),
    }
}

impl Keeper {
    pub fn new(
        stores: Stores,
        spool: Spool,
        metrics: EvidenceMetrics,
        durability: Durability,
        put_timeout: Duration,
    ) -> Self {
        let keeper = Self {
            stores,
            spool,
            metrics,
            durability,
            put_timeout,
            wake: Notify::new(),
        };
        keeper.refresh_gauges();
        keeper
    }

    async fn put_once(
        &self,
        dest: &Destination,
        key: &str,
        id: &str,
        body: &[u8],
    ) -> Result<String, StoreError> {
        let result = match tokio::time::timeout(
            self.put_timeout,
            self.stores.put(dest, key, id, body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                store: dest.store_name(),
                key: key.to_owned(),
                after: self.put_timeout,
            }),
        };
        let store = dest.store_name();
        match &result {
            Ok(_) => self.metrics.written.with_label_values(&[store]).inc(),
            Err(_) => self.metrics.failed.with_label_values(&[store]).inc(),
        }
        result
    }

    /// Saves a bundle under `key` at `dest`: the store first, else the spool.
    pub async fn save(
        &self,
        dest: &Destination,
        key: &str,
        bundle: &Bundle,
    ) -> Result<Saved, SaveError> {
        // Spooling a bundle for a destination that will never take it would retry forever.
        self.stores
            .check_destination(dest)
            .map_err(SaveError::NotAllowed)?;
        let body = bundle.to_bytes()?;
        let store_err = match self.put_once(dest, key, &bundle.bundle_id, &body).await {
            Ok(at) => return Ok(Saved::Stored(at)),
            Err(e) => e,
        };
        tracing::warn!(error = %store_err, "Writing the evidence bundle failed; spooling it");
        let entry = SpoolEntry {
            destination: dest.clone(),
            key: key.to_owned(),
            bundle_id: bundle.bundle_id.clone(),
            document: serde_json::to_value(bundle)?,
        };
        let spooled = match self.spool.push(&entry) {
            Ok(s) => s,
            Err(spool) => {
                return Err(SaveError::Lost {
                    store: store_err,
                    spool,
                });
            }
        };
        self.metrics
            .spooled
            .with_label_values(&[dest.store_name()])
            .inc();
        self.refresh_gauges();
        self.wake.notify_one();
        let local = spooled.path.display().to_string();
        match self.durability {
            Durability::Local => Ok(Saved::Spooled {
                local,
                pending: location(dest, key),
            }),
            Durability::Remote => Err(SaveError::NotRemote {
                local,
                store: store_err,
            }),
        }
    }

    /// Sets the spool gauges from what is on disk.
    pub fn refresh_gauges(&self) {
        if let Ok((entries, bytes)) = self.spool.usage() {
            self.metrics.spool_entries.set(entries as i64);
            self.metrics.spool_bytes.set(bytes as i64);
        }
    }

    /// Delivers spooled bundles, oldest first, retrying each with jittered exponential backoff
    /// until its store takes it; runs until `stop`. Entries from before a restart go first.
    pub async fn deliver(self: Arc<Self>, stop: CancellationToken) {
        let retry = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times();
        loop {
            let list = match self.spool.list() {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "Reading the bundle spool failed");
                    Vec::new()
                }
            };
            for spooled in list {
                let entry = match self.spool.read(&spooled) {
                    Ok(e) => e,
                    Err(e) => {
                        // Kept on disk for a human; never deleted unread.
                        tracing::error!(error = %e, "A spooled bundle cannot be read; leaving it");
                        continue;
                    }
                };
                if let Err(e) = self.stores.check_destination(&entry.destination) {
                    // Spooled before the allowlist changed: kept on disk for a human, not retried.
                    tracing::error!(error = %e, bundle = %entry.bundle_id, "A spooled bundle's destination is not allowed; leaving it");
                    continue;
                }
                let body = match serde_json::to_vec_pretty(&entry.document) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "A spooled bundle cannot be encoded; leaving it");
                        continue;
                    }
                };
                let attempt =
                    || self.put_once(&entry.destination, &entry.key, &entry.bundle_id, &body);
                let delivered = tokio::select! {
                    r = attempt
                        .retry(retry)
                        .notify(|e, wait| tracing::info!(error = %e, ?wait, "Spooled bundle not delivered yet")) => r,
                    () = stop.cancelled() => return,
                };
                match delivered {
                    Ok(at) => {
                        tracing::info!(bundle = %entry.bundle_id, %at, "Delivered a spooled bundle");
                        self.metrics
                            .delivered
                            .with_label_values(&[entry.destination.store_name()])
                            .inc();
                        if let Err(e) = self.spool.remove(&spooled) {
                            tracing::error!(error = %e, "Removing a delivered bundle from the spool failed");
                        }
                        self.refresh_gauges();
                    }
                    Err(e) => tracing::error!(error = %e, "Delivering a spooled bundle failed"),
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{BundleInput, Caps, PolicyRef};
    use std::path::PathBuf;

    fn bundle(id: &str) -> Bundle {
        let mut b = Bundle::build(
            BundleInput {
                incident_key: "ns/Deployment/api/CrashLoopBackOff".into(),
                created_at: "2026-11-25T00:00:00Z".into(),
                policy: PolicyRef {
                    namespace: "ns".into(),
                    name: "p".into(),
                },
                findings: vec![],
                api_log_lines: None,
                pod: None,
                events: vec![],
                owner: None,
                node: None,
                planned: serde_json::json!({}),
                taken: vec![],
            },
            Caps::default(),
        );
        b.bundle_id = id.into();
        b
    }

    fn keeper(dir: &std::path::Path, durability: Durability, max: usize) -> Arc<Keeper> {
        let registry = Registry::new();
        Arc::new(Keeper::new(
            Stores {
                s3: None,
                allowed_roots: vec![dir.to_owned()],
                allowed_buckets: vec![],
            },
            Spool::new(dir.join("spool"), max, 1 << 20),
            EvidenceMetrics::register(&registry).unwrap(),
            durability,
            Duration::from_secs(5),
        ))
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keeper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn stores_spools_refuses_and_delivers() {
        let dir = tmp("all");
        // A file where the store's directory should be: writes fail until it is removed.
        let root = dir.join("store");
        std::fs::write(&root, b"not a directory").unwrap();
        let dest = Destination::Filesystem { root: root.clone() };

        let local = keeper(&dir, Durability::Local, 2);
        let saved = local.save(&dest, "a/b.json", &bundle("one")).await.unwrap();
        assert!(matches!(saved, Saved::Spooled { .. }), "{saved:?}");
        assert!(saved.describe().contains("delivery pending"));
        assert_eq!(local.metrics.spool_entries.get(), 1);

        let remote = keeper(&dir, Durability::Remote, 2);
        let err = remote
            .save(&dest, "a/c.json", &bundle("two"))
            .await
            .unwrap_err();
        assert!(matches!(err, SaveError::NotRemote { .. }), "{err}");
        // Full spool and a failing store: nowhere to keep it, so the caller must not act.
        let err = remote
            .save(&dest, "a/d.json", &bundle("three"))
            .await
            .unwrap_err();
        assert!(matches!(err, SaveError::Lost { .. }), "{err}");

        // The store recovers: the delivery loop writes both spooled bundles, once each.
        std::fs::remove_file(&root).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(local.clone().deliver(stop.clone()));
        for _ in 0..100 {
            if local.spool.usage().unwrap().0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(local.spool.usage().unwrap().0, 0);
        for (key, id) in [("a/b.json", "one"), ("a/c.json", "two")] {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(root.join(key)).unwrap()).unwrap();
            assert_eq!(doc["bundleId"], id);
        }
        assert!(!root.join("a/d.json").exists());
        assert_eq!(
            local
                .metrics
                .delivered
                .with_label_values(&["filesystem"])
                .get(),
            2
        );
        // Stored directly now.
        let saved = local
            .save(&dest, "a/e.json", &bundle("four"))
            .await
            .unwrap();
        assert_eq!(
            saved,
            Saved::Stored(root.join("a/e.json").display().to_string())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_destination_off_the_allowlists_is_neither_written_nor_spooled() {
        let dir = tmp("refused");
        let local = keeper(&dir, Durability::Local, 10);
        for dest in [
            Destination::S3 {
                bucket: "someone-elses".into(),
                prefix: String::new(),
                sse: None,
            },
            Destination::Filesystem {
                root: PathBuf::from("/etc"),
            },
        ] {
            let err = local.save(&dest, "k.json", &bundle("x")).await.unwrap_err();
            assert!(matches!(err, SaveError::NotAllowed(_)), "{err}");
            assert_eq!(local.spool.usage().unwrap().0, 0, "nothing spooled");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
