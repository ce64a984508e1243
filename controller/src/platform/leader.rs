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

/// The longest lease a replica accepts, in seconds (an hour): failover after a leader dies takes up
/// to this long, and the Lease API keeps the duration in an int32 anyway.
pub const MAX_LEASE_SECONDS: u64 = 3600;

/// Lease duration, renew period and fencing margin, checked once at startup so that no value a flag
/// accepts can overflow the `Instant` arithmetic of fencing later (a panic in the middle of work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub ttl: Duration,
    pub renew_every: Duration,
    pub margin: Duration,
}

/// Why the lease timings were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "--{flag} ({env}) is {value}; it must be between {min} and {MAX_LEASE_SECONDS} seconds"
    )]
    OutOfRange {
        flag: &'static str,
        env: &'static str,
        value: u64,
        min: u64,
    },
    #[error(
        "--lease-seconds ({lease}) must be greater than --renew-seconds ({renew}) + \
         --fence-margin-seconds ({margin}): a leader stops writing the margin before its lease runs \
         out, so it must renew before that"
    )]
    RenewsTooLate { lease: u64, renew: u64, margin: u64 },
}

impl Timings {
    /// The timings from the flags' seconds (`--lease-seconds`, `--renew-seconds`,
    /// `--fence-margin-seconds`), or an error naming the flag that is out of range.
    pub fn from_seconds(lease: u64, renew: u64, margin: u64) -> Result<Self, TimingError> {
        for (flag, env, value, min) in [
            ("lease-seconds", "AUTO_AGENT_LEASE_SECONDS", lease, 1),
            ("renew-seconds", "AUTO_AGENT_RENEW_SECONDS", renew, 1),
            (
                "fence-margin-seconds",
                "AUTO_AGENT_FENCE_MARGIN_SECONDS",
                margin,
                0,
            ),
        ] {
            if !(min..=MAX_LEASE_SECONDS).contains(&value) {
                return Err(TimingError::OutOfRange {
                    flag,
                    env,
                    value,
                    min,
                });
            }
        }
        // Both are at most MAX_LEASE_SECONDS here: no overflow.
        if lease <= renew + margin {
            return Err(TimingError::RenewsTooLate {
                lease,
                renew,
                margin,
            });
        }
        Ok(Self {
            ttl: Duration::from_secs(lease),
            renew_every: Duration::from_secs(renew),
            margin: Duration::from_secs(margin),
        })
    }
}

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
        } else if view.valid_until.is_none_or(|until| {
            Instant::now()
                .checked_add(self.margin)
                .is_none_or(|fenced_from| fenced_from >= until)
        }) {
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
                            valid_until: started.checked_add(config.ttl),
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
                tx.send_modify(|v| v.valid_until = started.checked_add(config.ttl));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_in_range_are_kept() {
        let t = Timings::from_seconds(15, 5, 5).unwrap();
        assert_eq!(
            (t.ttl, t.renew_every, t.margin),
            (
                Duration::from_secs(15),
                Duration::from_secs(5),
                Duration::from_secs(5)
            )
        );
        assert!(Timings::from_seconds(MAX_LEASE_SECONDS, 1, 0).is_ok());
        assert!(Timings::from_seconds(2, 1, 0).is_ok());
    }

    #[test]
    fn a_huge_or_zero_timing_is_an_error_naming_its_flag() {
        for (lease, renew, margin, names) in [
            (
                u64::MAX,
                5,
                5,
                "--lease-seconds (AUTO_AGENT_LEASE_SECONDS) is 18446744073709551615",
            ),
            (MAX_LEASE_SECONDS + 1, 5, 5, "--lease-seconds"),
            (0, 5, 5, "--lease-seconds"),
            (
                15,
                u64::MAX,
                5,
                "--renew-seconds (AUTO_AGENT_RENEW_SECONDS)",
            ),
            (15, 0, 5, "--renew-seconds"),
            (
                15,
                5,
                u64::MAX,
                "--fence-margin-seconds (AUTO_AGENT_FENCE_MARGIN_SECONDS)",
            ),
        ] {
            let err = Timings::from_seconds(lease, renew, margin)
                .unwrap_err()
                .to_string();
            assert!(err.contains(names), "{lease}/{renew}/{margin}: {err}");
            assert!(err.contains("between"), "{err}");
        }
    }

    #[test]
    fn a_lease_renewed_too_late_for_the_margin_is_an_error() {
        for (lease, renew, margin) in [(15, 10, 5), (15, 15, 0), (10, 5, 9)] {
            let err = Timings::from_seconds(lease, renew, margin).unwrap_err();
            assert_eq!(
                err,
                TimingError::RenewsTooLate {
                    lease,
                    renew,
                    margin
                }
            );
            assert!(err.to_string().contains("must be greater than"), "{err}");
        }
    }

    /// Before the startup check, a margin this large overflowed `Instant + Duration` in the fence
    /// every writer calls: a panic in the middle of work. Now the fence refuses the write instead.
    #[test]
    fn fencing_with_an_unrepresentable_margin_refuses_instead_of_panicking() {
        let config = LeaderConfig {
            namespace: "ns".into(),
            lease_name: "lease".into(),
            identity: "me".into(),
            advertise: "127.0.0.1:1".into(),
            ttl: Duration::MAX,
            renew_every: Duration::from_secs(1),
            margin: Duration::MAX,
        };
        let metrics = ControllerMetrics::register(&prometheus::Registry::new()).unwrap();
        let (tx, leadership) = channel(&config, metrics);
        let started = Instant::now();
        // A lease that is ours for another minute: only the margin is out of range.
        let _ = tx.send(LeaderView {
            is_leader: true,
            valid_until: Some(started + Duration::from_secs(60)),
            holder: Some("me".into()),
            endpoint: None,
            term: Some("t".into()),
        });
        assert_eq!(leadership.fence("test"), Err(Fenced::LeaseExpiring));
    }
}
