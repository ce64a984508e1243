//! Reconcile: what the leader does with each incident change, and the scaling loop. Every path runs
//! the same named stages, gather -> decide (pure, engine) -> reserve (ledger) -> act (fenced) ->
//! report (`outcome`), sharing `reserve::decide_and_reserve` and `outcome::Outcomes`.
//!
//! - `pod`: pod incidents (restart, memory bump, image mirror)
//! - `node`: node pressure under NodeRemediationPolicy (cordon, evict, uncordon sweep)
//! - `scale`: the scaling loop on Prometheus signals (not driven by findings)

pub mod failing;
pub mod gather;
pub mod ledger;
pub mod node;
pub mod outcome;
pub mod pod;
pub mod reserve;
pub mod scale;

use std::time::Duration;

use auto_agent_engine::decide::workload_target;
use auto_agent_engine::{Observed, Transition};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::pipeline::Change;
use crate::platform::events::EventSink;
use crate::platform::metrics::ControllerMetrics;
use crate::reconcile::failing::FailingPods;
use crate::reconcile::node::NodeReconciler;
use crate::reconcile::pod::{Next, PodReconciler};

/// Decisions waiting for their storm window, at most (more are decided at once).
const DEFERRED_CAPACITY: usize = 4096;

/// Routes incident changes to the pod and node reconciles, in arrival order.
pub struct Dispatcher {
    pub pods: PodReconciler,
    pub nodes: NodeReconciler,
    pub events: EventSink,
    pub metrics: ControllerMetrics,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

/// A change, fresh from the pipeline or handed back after a wait.
struct Work {
    change: Change,
    deferred: bool,
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    }
}

impl Dispatcher {
    pub async fn run(self, mut changes: mpsc::Receiver<Change>, stop: CancellationToken) {
        let (deferred_tx, mut deferred_rx) = mpsc::channel::<Change>(DEFERRED_CAPACITY);
        let mut failing = FailingPods::default();
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            let work = tokio::select! {
                c = changes.recv() => c.map(|change| Work { change, deferred: false }),
                Some(change) = deferred_rx.recv() => Some(Work { change, deferred: true }),
                _ = prune.tick() => {
                    failing.prune(auto_agent_shared::clock::now_ms());
                    continue;
                }
                () = stop.cancelled() => None,
            };
            let Some(work) = work else { return };
            if let Some(wait) = self.handle(&work, &mut failing).await {
                // Decide again after the wait, without holding up other changes.
                let tx = deferred_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(work.change).await;
                });
            }
        }
    }

    /// Handles one change; `Some(wait)` asks to decide it again after `wait`.
    async fn handle(&self, work: &Work, failing: &mut FailingPods) -> Option<Duration> {
        let Change {
            finding, observed, ..
        } = &work.change;
        let kind = finding.kind.as_str();
        // What the leader knows of failing pods, before any decision reads it.
        if !work.deferred
            && !finding.kind.is_node()
            && let Some(pod) = &finding.pod
        {
            failing.observe(
                &workload_target(finding),
                &pod.uid,
                finding.transition != Transition::Cleared,
                auto_agent_shared::clock::now_ms(),
            );
        }
        let key = match observed {
            Observed::Opened(key) | Observed::Reopened(key) => {
                if !work.deferred {
                    self.count_incident(finding);
                }
                key
            }
            Observed::Repeated(key) => key,
            Observed::Resolved(key) => {
                let note = format!("{kind} cleared; incident {key} resolved");
                self.events
                    .publish(
                        &node_ref(&finding.node),
                        EventType::Normal,
                        "IncidentResolved",
                        note,
                    )
                    .await;
                return None;
            }
            Observed::ClearedUnknown(_) | Observed::Duplicate => return None,
        };
        let first =
            !work.deferred && matches!(observed, Observed::Opened(_) | Observed::Reopened(_));
        if finding.kind.is_node() {
            if first {
                self.nodes.handle(finding, key).await;
            }
            return None;
        }
        match self.pods.handle(&work.change, key, first, failing).await {
            Next::Done => None,
            Next::Retry(wait) => Some(wait),
        }
    }

    fn count_incident(&self, finding: &auto_agent_engine::Finding) {
        let kind = finding.kind.as_str();
        if finding.kind.is_node() {
            self.metrics
                .node_incidents
                .with_label_values(&[kind, &finding.node])
                .inc();
            return;
        }
        let pod::ScopeLabels {
            namespace,
            workload,
        } = pod::labels_of(finding);
        self.metrics
            .incidents
            .with_label_values(&[kind, &namespace, &workload])
            .inc();
    }
}
