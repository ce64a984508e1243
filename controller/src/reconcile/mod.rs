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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auto_agent_engine::decide::workload_target;
use auto_agent_engine::{Observed, Transition};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ingest::pipeline::Change;
use crate::platform::events::EventSink;
use crate::platform::metrics::ControllerMetrics;
use crate::reconcile::failing::FailingPods;
use crate::reconcile::node::NodeReconciler;
use crate::reconcile::pod::PodReconciler;

/// Changes queued in all lanes together (each namespace, and the nodes), at most; beyond it the
/// dispatcher waits (back-pressure to the pipeline) rather than dropping. Below it a lane's
/// backlog never holds up another lane: with a bound per lane, a storm of one namespace that filled
/// its lane blocked the dispatcher, and every other namespace's changes waited behind it (the scale
/// benchmark: 100 crash loops in one namespace restarted 3.4 to 9 s late after 2,500 findings in
/// another, docs/BENCHMARKS.md).
const QUEUED_MAX: usize = 16_384;
/// Tries after an API or ledger failure before the change waits for the next finding.
const MAX_ATTEMPTS: u32 = 8;
/// The lane of node incidents (namespaces are never empty).
const NODE_LANE: &str = "";

/// What a reconcile asks of its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Done,
    /// Decide again after this long (the storm window is still open).
    Retry(Duration),
    /// The API or the ledger failed before a decision: try again with backoff.
    Failed,
}

/// Why a change is handled again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// Fresh from the pipeline.
    No,
    /// Handed back after its storm window.
    StormWindow,
    /// Handed back after this many failed tries.
    AfterFailure(u32),
}

/// The wait before try `attempt + 1` after a failure (1 s doubling, at most a minute), or `None`
/// when the tries are used up.
pub fn backoff(attempt: u32) -> Option<Duration> {
    (attempt < MAX_ATTEMPTS)
        .then(|| Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60)))
}

/// The lane a change goes through: its namespace, or the nodes'.
fn lane_of(change: &Change) -> String {
    match &change.finding.pod {
        Some(pod) if !change.finding.kind.is_node() => pod.namespace.clone(),
        _ => NODE_LANE.to_owned(),
    }
}

/// Routes incident changes to the pod and node reconciles: in arrival order within a namespace
/// (one change at a time each, so a namespace whose mirror or API calls hang stalls only itself),
/// at most `workers` namespaces at once.
pub struct Dispatcher {
    pub pods: PodReconciler,
    pub nodes: NodeReconciler,
    pub events: EventSink,
    pub metrics: ControllerMetrics,
    /// Namespaces (lanes) reconciled at once.
    pub workers: usize,
    /// Repeats and resolutions reach escalated incidents' threads and tickets.
    pub escalations: crate::escalate::Escalations,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

/// A change, fresh from the pipeline or handed back after a wait, holding its place among the
/// queued changes until it is done.
struct Work {
    change: Change,
    again: Again,
    _slot: OwnedSemaphorePermit,
}

/// The lanes' queues, sharing one bound on what they hold together.
struct Queues<T> {
    lanes: HashMap<String, mpsc::UnboundedSender<T>>,
    slots: Arc<Semaphore>,
}

impl<T> Queues<T> {
    fn new(max: usize) -> Self {
        Self {
            lanes: HashMap::new(),
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// A slot for one more queued item: waits only while all lanes together hold the maximum.
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Queues `item` (which holds its slot) on lane `name`, starting the lane with `start` the
    /// first time. Never waits: the slot was the wait. False when the lane is gone.
    fn push(
        &mut self,
        name: String,
        item: T,
        start: impl FnOnce(mpsc::UnboundedReceiver<T>, mpsc::UnboundedSender<T>),
    ) -> bool {
        let lane = self.lanes.entry(name).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            start(rx, tx.clone());
            tx
        });
        lane.send(item).is_ok()
    }
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
    pub async fn run(
        self: Arc<Self>,
        mut changes: mpsc::Receiver<Change>,
        stop: CancellationToken,
    ) {
        let workers = Arc::new(Semaphore::new(self.workers.max(1)));
        let mut queues = Queues::new(QUEUED_MAX);
        let lane_stop = stop.child_token();
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = stop.cancelled() => None,
            };
            let Some(change) = change else { break };
            let slot = tokio::select! {
                s = queues.slot() => s,
                () = stop.cancelled() => None,
            };
            let Some(slot) = slot else { break };
            let work = Work {
                change,
                again: Again::No,
                _slot: slot,
            };
            let started = queues.push(lane_of(&work.change), work, |rx, tx| {
                tokio::spawn(
                    self.clone()
                        .lane(rx, tx, workers.clone(), lane_stop.clone()),
                );
            });
            if !started {
                break;
            }
        }
        lane_stop.cancel();
    }

    /// One lane: its changes in order, each holding one of the shared workers while handled.
    async fn lane(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Work>,
        tx: mpsc::UnboundedSender<Work>,
        workers: Arc<Semaphore>,
        stop: CancellationToken,
    ) {
        let mut failing = FailingPods::default();
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            let work = tokio::select! {
                w = rx.recv() => w,
                _ = prune.tick() => {
                    failing.prune(auto_agent_shared::clock::now_ms());
                    continue;
                }
                () = stop.cancelled() => None,
            };
            let Some(work) = work else { return };
            let next = {
                let Ok(_worker) = workers.acquire().await else {
                    return;
                };
                self.handle(&work, &mut failing).await
            };
            let (wait, again) = match (next, work.again) {
                (Next::Done, _) => continue,
                (Next::Retry(wait), _) => (wait, Again::StormWindow),
                (Next::Failed, Again::AfterFailure(n)) => match backoff(n) {
                    Some(wait) => (wait, Again::AfterFailure(n + 1)),
                    None => {
                        self.metrics
                            .action_errors
                            .with_label_values(&["retries_exhausted"])
                            .inc();
                        tracing::warn!(incident = ?work.change.observed, "Giving up after {MAX_ATTEMPTS} failed tries; the next finding brings it back");
                        continue;
                    }
                },
                (Next::Failed, _) => match backoff(0) {
                    Some(wait) => (wait, Again::AfterFailure(1)),
                    None => continue,
                },
            };
            // Decide again after the wait, without holding up the lane.
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(Work { again, ..work });
            });
        }
    }

    /// Handles one change.
    async fn handle(&self, work: &Work, failing: &mut FailingPods) -> Next {
        let Change {
            finding, observed, ..
        } = &work.change;
        let fresh = work.again == Again::No;
        let kind = finding.kind.as_str();
        // What the leader knows of failing pods, before any decision reads it.
        if fresh
            && !finding.kind.is_node()
            && let Some(pod) = &finding.pod
        {
            failing.observe(
                &workload_target(finding),
                (&pod.uid, &pod.name),
                finding.transition != Transition::Cleared,
                auto_agent_shared::clock::now_ms(),
            );
        }
        if fresh {
            self.tell_escalation(observed);
        }
        let key = match observed {
            Observed::Opened(key) | Observed::Reopened(key) => {
                if fresh {
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
                return Next::Done;
            }
            Observed::ClearedUnknown(_) | Observed::Duplicate => return Next::Done,
        };
        let opened = matches!(observed, Observed::Opened(_) | Observed::Reopened(_));
        // The first look at an incident, or a retry of one that failed before deciding.
        let first = opened && fresh;
        let retrying = matches!(work.again, Again::AfterFailure(_));
        if finding.kind.is_node() {
            if first || (opened && retrying) {
                return self.nodes.handle(finding, key).await;
            }
            return Next::Done;
        }
        self.pods
            .handle(&work.change, key, first || (opened && retrying), failing)
            .await
    }

    /// A failure seen again or a condition cleared: the escalation stage updates a record it has
    /// (and ignores incidents it never escalated or watched).
    fn tell_escalation(&self, observed: &Observed) {
        use auto_agent_escalation::record::{Facts, Routes, Signal, SignalKind};
        let (key, kind) = match observed {
            Observed::Opened(k) | Observed::Reopened(k) | Observed::Repeated(k) => {
                (k, SignalKind::Seen)
            }
            Observed::Resolved(k) => (k, SignalKind::Resolved),
            Observed::ClearedUnknown(_) | Observed::Duplicate => return,
        };
        self.escalations.signal(Signal {
            incident: key.as_str().to_owned(),
            at_ms: auto_agent_shared::clock::now_ms(),
            kind,
            note: String::new(),
            facts: Facts::default(),
            routes: Routes::default(),
        });
    }

    fn count_incident(&self, finding: &auto_agent_engine::Finding) {
        let kind = finding.kind.as_str();
        self.metrics
            .incidents_by_reason
            .with_label_values(&[kind])
            .inc();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane whose consumer is stuck does not hold up another lane; only when all lanes together
    /// hold the maximum does the next item wait for a slot, and a finished item frees one.
    #[tokio::test]
    async fn a_full_lane_does_not_hold_up_another() {
        let mut queues: Queues<(u32, OwnedSemaphorePermit)> = Queues::new(3);
        let mut receivers = HashMap::new();
        let mut push = |queues: &mut Queues<_>, lane: &str, item, slot| {
            let lane = lane.to_owned();
            queues.push(lane.clone(), (item, slot), |rx, _tx| {
                receivers.insert(lane, rx);
            })
        };
        // Lane "a" is never read: a namespace whose changes hang.
        for i in 0..2 {
            let slot = queues.slot().await.unwrap();
            assert!(push(&mut queues, "a", i, slot));
        }
        let slot = tokio::time::timeout(Duration::from_secs(1), queues.slot())
            .await
            .expect("a slot while fewer than 3 are queued")
            .unwrap();
        assert!(
            push(&mut queues, "b", 10, slot),
            "lane b gets its change at once"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), queues.slot())
                .await
                .is_err(),
            "all lanes together hold 3: the next waits"
        );
        let (item, slot) = receivers.get_mut("b").unwrap().recv().await.unwrap();
        assert_eq!(item, 10);
        drop(slot);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), queues.slot())
                .await
                .is_ok(),
            "a handled change frees its slot"
        );
        assert_eq!(receivers.len(), 2, "one lane each");
    }

    #[test]
    fn failures_are_tried_again_with_doubling_waits_then_left_to_the_next_finding() {
        let waits: Vec<Option<u64>> = (0..=MAX_ATTEMPTS)
            .map(|n| backoff(n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            waits,
            [
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60),
                Some(60),
                None
            ]
        );
    }
}
