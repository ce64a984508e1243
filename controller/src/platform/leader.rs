//! Leader election on a Lease (kube-leader-election) and the fencing every writer goes through.
//!
//! Timings (defaults): lease 15 s, renew every 5 s, fencing margin 5 s. A replica acts only while
//! `now + margin < last successful renew start + lease duration`, so a leader that stops renewing
//! (partition, stall) stops writing at least 5 s before another replica can take the lease.
//! Failover after a leader dies takes at most the lease duration plus one renew period.
//!
//! The crate patches the Lease without a resourceVersion precondition, so two replicas racing for an
//! expired lease could both see "acquired". A fresh acquisition is therefore confirmed by a second
//! round after a short pause before this replica calls itself leader.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::platform::metrics::ControllerMetrics;
use auto_agent_shared::keys::LEADER_ENDPOINT_ANNOTATION;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// This replica's gRPC endpoint, published on the Lease while it leads.
    pub advertise: String,
    pub ttl: Duration,
    pub renew_every: Duration,
    pub margin: Duration,
}

/// What this replica knows about leadership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderView {
    pub is_leader: bool,
    /// The lease is ours until then (only meaningful while leading).
    pub valid_until: Option<Instant>,
    pub holder: Option<String>,
    /// The leader's gRPC endpoint from the Lease annotation.
    pub endpoint: Option<String>,
    /// While leading: unique to this term (this process, this acquisition). In-memory state such
    /// as the incident book belongs to one term; sensors re-send what still holds to a new term.
    pub term: Option<String>,
}

/// Why a write was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("the lease is about to expire")]
    LeaseExpiring,
}

/// A read-only handle on leadership, cloned into every writer.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<LeaderView>,
    margin: Duration,
    metrics: ControllerMetrics,
}

impl Leadership {
    pub fn view(&self) -> LeaderView {
        self.rx.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_leader
    }

    /// Call right before every mutating API call. A refusal is counted under `what`.
    pub fn fence(&self, what: &str) -> Result<(), Fenced> {
        let view = self.rx.borrow();
        let result = if !view.is_leader {
            Err(Fenced::NotLeader)
        } else if view
            .valid_until
            .is_none_or(|until| Instant::now() + self.margin >= until)
        {
            Err(Fenced::LeaseExpiring)
        } else {
            Ok(())
        };
        if result.is_err() {
            self.metrics.fenced_writes.with_label_values(&[what]).inc();
        }
        result
    }

    /// The term, if leadership changed since this handle last looked (a flag check otherwise:
    /// cheap enough for every finding). `Some(None)`: changed to not leading.
    pub fn term_if_changed(&mut self) -> Option<Option<String>> {
        if !self.rx.has_changed().unwrap_or(false) {
            return None;
        }
        Some(self.rx.borrow_and_update().term.clone())
    }

    /// Resolves when leadership changes.
    pub async fn changed(&mut self) {
        let _ = self.rx.changed().await;
    }
}

pub fn channel(
    config: &LeaderConfig,
    metrics: ControllerMetrics,
) -> (watch::Sender<LeaderView>, Leadership) {
    let (tx, rx) = watch::channel(LeaderView::default());
    (
        tx,
        Leadership {
            rx,
            margin: config.margin,
            metrics,
        },
    )
}

fn endpoint_of(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(LEADER_ENDPOINT_ANNOTATION)
        .cloned()
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// Runs the election until `stop`; then, if leading, marks itself non-leader first and releases
/// the lease (the caller drains in-flight work between the two via `release`).
pub async fn run(
    client: Client,
    config: LeaderConfig,
    tx: watch::Sender<LeaderView>,
    metrics: ControllerMetrics,
    stop: CancellationToken,
    release: CancellationToken,
) {
    let lock = LeaseLock::new(
        client.clone(),
        &config.namespace,
        LeaseLockParams {
            lease_name: config.lease_name.clone(),
            holder_id: config.identity.clone(),
            lease_ttl: config.ttl,
        },
    );
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let instance = auto_agent_shared::clock::process_instance_id();
    let mut acquisitions = 0u64;
    loop {
        let started = Instant::now();
        let was_leader = tx.borrow().is_leader;
        match lock.try_acquire_or_renew().await {
            Ok(LeaseLockResult::Acquired(_)) if !was_leader => {
                // Confirm a fresh acquisition before acting on it (see the module docs).
                tokio::time::sleep(Duration::from_millis(500)).await;
                match lock.try_acquire_or_renew().await {
                    Ok(LeaseLockResult::Acquired(_)) => {
                        publish_endpoint(&leases, &config).await;
                        tracing::info!(identity = %config.identity, "Acquired the lease; leading");
                        metrics.leader.set(1);
                        acquisitions += 1;
                        let _ = tx.send(LeaderView {
                            is_leader: true,
                            valid_until: Some(started + config.ttl),
                            holder: Some(config.identity.clone()),
                            endpoint: Some(config.advertise.clone()),
                            term: Some(format!("{instance}-{acquisitions}")),
                        });
                    }
                    Ok(LeaseLockResult::NotAcquired(lease)) => follow(&tx, &lease),
                    Err(e) => tracing::warn!(error = %e, "Confirming the lease failed"),
                }
            }
            Ok(LeaseLockResult::Acquired(lease)) => {
                if endpoint_of(&lease).as_deref() != Some(config.advertise.as_str()) {
                    publish_endpoint(&leases, &config).await;
                }
                tx.send_modify(|v| v.valid_until = Some(started + config.ttl));
            }
            Ok(LeaseLockResult::NotAcquired(lease)) => {
                if was_leader {
                    tracing::warn!(holder = ?holder_of(&lease), "Lost the lease");
                    metrics.leader.set(0);
                }
                follow(&tx, &lease);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Lease renewal failed");
                // Fencing already refuses writes as the lease runs out; demote once it has.
                if was_leader && tx.borrow().valid_until.is_none_or(|u| Instant::now() >= u) {
                    metrics.leader.set(0);
                    let _ = tx.send(LeaderView::default());
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(config.renew_every) => {}
            () = stop.cancelled() => break,
        }
    }
    if tx.borrow().is_leader {
        metrics.leader.set(0);
        let _ = tx.send(LeaderView::default());
        // The caller drains in-flight actions, then lets us release.
        release.cancelled().await;
        match lock.step_down().await {
            Ok(()) => tracing::info!("Released the lease"),
            Err(e) => tracing::warn!(error = %e, "Releasing the lease failed; it will expire"),
        }
    }
}

fn follow(tx: &watch::Sender<LeaderView>, lease: &Lease) {
    let view = LeaderView {
        is_leader: false,
        valid_until: None,
        holder: holder_of(lease),
        endpoint: endpoint_of(lease),
        term: None,
    };
    tx.send_if_modified(|v| {
        let changed = *v != view;
        *v = view;
        changed
    });
}

async fn publish_endpoint(leases: &Api<Lease>, config: &LeaderConfig) {
    let patch =
        json!({"metadata": {"annotations": {LEADER_ENDPOINT_ANNOTATION: config.advertise}}});
    if let Err(e) = leases
        .patch(
            &config.lease_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(error = %e, "Publishing the gRPC endpoint on the Lease failed");
    }
}
