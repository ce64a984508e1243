//! The two watches of a sensor: the pods on its node (`spec.nodeName=<node>`) and its own Node.
//! Each event becomes a compact view, is compared with the previous view of the same object, and
//! the findings go to the outbound queue (crash and OOM findings after their log tail is read).

use auto_agent_shared::clock::now_ms;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use auto_agent_engine::Finding;
use auto_agent_engine::detect::{detect_node, detect_pod};
use auto_agent_shared::runtime::Readiness;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::evidence::{EvidenceReader, FailedRun, wants_logs};
use crate::metrics::SensorMetrics;
use crate::queue::{Pushed, Queue};
use auto_agent_shared::views::{node_view, pod_view};

/// Where findings go: the queue, with a wake-up for the stream task.
#[derive(Clone, Debug)]
pub struct Sink {
    pub queue: Arc<Mutex<Queue>>,
    pub notify: Arc<Notify>,
    pub metrics: SensorMetrics,
    pub evidence: Arc<EvidenceReader>,
    /// Bounds concurrent log reads during storms.
    pub readers: Arc<Semaphore>,
}

impl Sink {
    fn push(&self, finding: Finding) {
        let outcome = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = q.push(finding);
            self.metrics.queue_depth.set(q.len() as i64);
            outcome
        };
        match outcome {
            Pushed::Queued => {}
            Pushed::Coalesced => self.metrics.coalesced.inc(),
            Pushed::Dropped => self.metrics.dropped.inc(),
        }
        self.notify.notify_one();
    }

    /// Queues a finding detected on `pod` (None for node findings), with the log of the run that
    /// failed when it wants one.
    fn submit(&self, mut finding: Finding, pod: Option<&auto_agent_engine::PodView>) {
        self.metrics
            .findings
            .with_label_values(&[finding.kind.as_str()])
            .inc();
        tracing::info!(
            kind = finding.kind.as_str(),
            id = %finding.id,
            pod = finding.pod.as_ref().map(|p| p.name.as_str()).unwrap_or_default(),
            "Finding detected"
        );
        if !wants_logs(&finding) {
            return self.push(finding);
        }
        let run = match pod {
            Some(view) => FailedRun::of(view, finding.container.as_deref()),
            None => FailedRun::Previous,
        };
        let sink = self.clone();
        tokio::spawn(async move {
            let _permit = sink.readers.acquire().await;
            sink.evidence.attach(&mut finding, run).await;
            sink.push(finding);
        });
    }
}

/// Turns readiness on once every watch has finished its initial list.
#[derive(Clone, Debug)]
pub struct SyncGate {
    remaining: Arc<AtomicUsize>,
    readiness: Readiness,
}

impl SyncGate {
    pub fn new(watches: usize, readiness: Readiness) -> Self {
        Self {
            remaining: Arc::new(AtomicUsize::new(watches)),
            readiness,
        }
    }
    fn synced(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.readiness.set(true);
            tracing::info!("Initial sync done; ready");
        }
    }
}

/// Watches the pods of `node` until `stop`.
pub async fn pods(
    client: Client,
    node: String,
    page_size: u32,
    sink: Sink,
    gate: SyncGate,
    mut resync: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) {
    // any_semantic: the initial list is served from the apiserver's watch cache.
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .any_semantic()
        .page_size(page_size);
    let mut events = watch_stream(Api::<Pod>::all(client), config)
        .default_backoff()
        .boxed();
    let mut known: HashMap<String, auto_agent_engine::PodView> = HashMap::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let mut first_sync = true;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            Ok(()) = resync.changed() => {
                // Every pod seen for the first time again: the same ids as the first findings.
                for view in known.values() {
                    for f in detect_pod(None, view, now_ms()) {
                        sink.submit(f, Some(view));
                    }
                }
                continue;
            }
            () = stop.cancelled() => return,
        };
        match event {
            Some(Ok(Event::Init)) => relisted.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                let view = pod_view(&pod);
                relisted.insert(view.uid.clone());
                observe(&mut known, view, &sink);
            }
            Some(Ok(Event::Apply(pod))) => observe(&mut known, pod_view(&pod), &sink),
            Some(Ok(Event::InitDone)) => {
                // Pods deleted while the watch was down are forgotten.
                known.retain(|uid, _| relisted.contains(uid));
                relisted = HashSet::new();
                if std::mem::take(&mut first_sync) {
                    gate.synced();
                }
            }
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    known.remove(uid);
                }
            }
            Some(Err(e)) => {
                sink.metrics
                    .watch_restarts
                    .with_label_values(&["pods"])
                    .inc();
                tracing::warn!(error = %e, "Pod watch failed; restarting with backoff");
            }
            None => return,
        }
        sink.metrics.watched_pods.set(known.len() as i64);
    }
}

fn observe(
    known: &mut HashMap<String, auto_agent_engine::PodView>,
    view: auto_agent_engine::PodView,
    sink: &Sink,
) {
    let findings = detect_pod(known.get(&view.uid), &view, now_ms());
    for f in findings {
        sink.submit(f, Some(&view));
    }
    known.insert(view.uid.clone(), view);
}

/// Watches the Node object `node` until `stop`.
pub async fn node(
    client: Client,
    node: String,
    sink: Sink,
    gate: SyncGate,
    mut resync: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={node}"))
        .any_semantic();
    let mut events = watch_stream(Api::<Node>::all(client), config)
        .default_backoff()
        .boxed();
    let mut last: Option<auto_agent_engine::NodeView> = None;
    let mut first_sync = true;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            Ok(()) = resync.changed() => {
                for f in last.iter().flat_map(|view| detect_node(None, view, now_ms())) {
                    sink.submit(f, None);
                }
                continue;
            }
            () = stop.cancelled() => return,
        };
        match event {
            Some(Ok(Event::InitApply(n) | Event::Apply(n))) => {
                let view = node_view(&n);
                for f in detect_node(last.as_ref(), &view, now_ms()) {
                    sink.submit(f, None);
                }
                last = Some(view);
            }
            Some(Ok(Event::InitDone)) => {
                if std::mem::take(&mut first_sync) {
                    gate.synced();
                }
            }
            Some(Ok(Event::Init | Event::Delete(_))) => {}
            Some(Err(e)) => {
                sink.metrics
                    .watch_restarts
                    .with_label_values(&["node"])
                    .inc();
                tracing::warn!(error = %e, "Node watch failed; restarting with backoff");
            }
            None => return,
        }
    }
}
