//! The incident pipeline: findings accepted from sensors enter the incident book (one per leadership
//! term) in arrival order; the ingest acknowledges a finding only after this step. New and changed
//! incidents go on to the reconcile stage (`reconcile::Dispatcher`: gather -> decide -> reserve ->
//! act -> report).

use auto_agent_shared::clock::now_ms;
use std::time::Instant;

use auto_agent_engine::{BookLimits, Finding, IncidentBook, IncidentKeyError, Observed};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::platform::incidents::Incidents;
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;

/// What the ingest asks of the book.
#[derive(Debug)]
enum Request {
    /// A finding to record, with the reply the ingest waits for before acknowledging.
    Submit {
        finding: Box<Finding>,
        reply: oneshot::Sender<Result<Observed, IncidentKeyError>>,
    },
    /// Whether a finding id from a node is a duplicate in the current term's book (asked before
    /// the finding is verified against the API server, so a resend costs no request).
    Known {
        id: String,
        node: String,
        reply: oneshot::Sender<bool>,
    },
}

/// A change worth reporting.
#[derive(Debug)]
pub struct Change {
    pub finding: Finding,
    pub observed: Observed,
    pub received: Instant,
}

/// The ingest side of the pipeline. The queue to the book is bounded by count (1024) and by
/// bytes: a submission holds its finding's approximate size (`Finding::approx_bytes`, mostly the
/// log tail) from the queue until it is recorded, so large findings wait instead of piling up.
#[derive(Clone, Debug)]
pub struct Pipeline {
    tx: mpsc::Sender<Request>,
    bytes: Arc<Semaphore>,
    queue_bytes: usize,
}

/// Bytes of findings queued for the book or being recorded, at most.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the incident pipeline is shut down")]
    Closed,
    #[error(transparent)]
    Key(#[from] IncidentKeyError),
}

impl Pipeline {
    /// The same pipeline with another byte bound on its queue (before first use).
    pub fn with_queue_bytes(self, queue_bytes: usize) -> Self {
        let queue_bytes = queue_bytes.clamp(1, u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(queue_bytes)),
            queue_bytes,
            ..self
        }
    }

    pub async fn submit(&self, finding: Finding) -> Result<Observed, PipelineError> {
        let size = finding.approx_bytes().min(self.queue_bytes);
        let _bytes = self
            .bytes
            .acquire_many(u32::try_from(size).unwrap_or(u32::MAX))
            .await
            .map_err(|_| PipelineError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Submit {
                finding: Box::new(finding),
                reply,
            })
            .await
            .map_err(|_| PipelineError::Closed)?;
        Ok(rx.await.map_err(|_| PipelineError::Closed)??)
    }

    /// Whether the finding `id` from `node` is already in this term's book (then it is counted as
    /// a duplicate and needs neither verification nor recording). Exactly what submitting it
    /// would answer, but for ids first recorded from another node, which go the whole way.
    pub async fn is_duplicate(&self, id: &str, node: &str) -> Result<bool, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Known {
                id: id.to_owned(),
                node: node.to_owned(),
                reply,
            })
            .await
            .map_err(|_| PipelineError::Closed)?;
        rx.await.map_err(|_| PipelineError::Closed)
    }
}

/// What the book remembers (ids 30 min, resolved incidents 1 h, idle pod incidents 6 h), bounded
/// in count.
fn new_book() -> IncidentBook {
    IncidentBook::with_limits(BookLimits::default())
}

pub fn start(
    metrics: ControllerMetrics,
    incidents: Incidents,
    mut leadership: Leadership,
    changes: mpsc::Sender<Change>,
    stop: CancellationToken,
) -> (Pipeline, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Request>(1024);
    let task = tokio::spawn(async move {
        let mut book = new_book();
        let mut term: Option<String> = leadership.view().term;
        let mut prune = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            let request = tokio::select! {
                s = rx.recv() => s,
                _ = prune.tick() => {
                    book.prune(now_ms());
                    let known: std::collections::HashSet<&str> =
                        book.keys().map(|k| k.as_str()).collect();
                    incidents.retain(|key| known.contains(key));
                    continue;
                }
                () = stop.cancelled() => None,
            };
            let Some(request) = request else {
                return;
            };
            let received = Instant::now();
            // One book per leadership term: after leading, losing and leading again, the sensors'
            // re-sent findings must be decided anew, not dropped as already seen.
            if let Some(current) = leadership.term_if_changed()
                && current.is_some()
                && current != term
            {
                if term.is_some() {
                    book = new_book();
                    incidents.clear();
                }
                term = current;
            }
            let (finding, reply) = match request {
                Request::Submit { finding, reply } => (*finding, reply),
                Request::Known { id, node, reply } => {
                    let known = book.is_duplicate(&id, &node, now_ms());
                    if known {
                        metrics.findings.with_label_values(&["duplicate"]).inc();
                    }
                    let _ = reply.send(known);
                    continue;
                }
            };
            let result = book.observe(&finding, now_ms());
            let outcome = match &result {
                Ok(Observed::Duplicate) => "duplicate",
                Ok(_) => "accepted",
                Err(_) => "malformed",
            };
            metrics.findings.with_label_values(&[outcome]).inc();
            metrics.open_incidents.set(book.open_count() as i64);
            if let Ok(observed) = &result
                && *observed != Observed::Duplicate
            {
                if let Some(incident) = observed.key().and_then(|k| book.get(k)) {
                    incidents.observed(incident);
                }
                let _ = changes
                    .send(Change {
                        finding,
                        observed: observed.clone(),
                        received,
                    })
                    .await;
            }
            let _ = reply.send(result);
        }
    });
    let pipeline = Pipeline {
        tx,
        bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
        queue_bytes: QUEUE_BYTES,
    };
    (pipeline, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::leader::{LeaderConfig, LeaderView};
    use auto_agent_engine::{FindingKind, Transition};
    use std::time::Duration;

    fn node_finding(id: &str) -> Finding {
        Finding {
            id: id.into(),
            node: "node-a".into(),
            kind: FindingKind::NodeMemoryPressure,
            transition: Transition::Started,
            pod: None,
            owner: None,
            container: None,
            reason: "MemoryPressure".into(),
            message: String::new(),
            restart_count: 0,
            exit_code: None,
            image: None,
            observed_at_ms: 1_700_000_000_000,
            log_lines: vec![],
            log_truncated: false,
        }
    }

    fn leading(term: &str) -> LeaderView {
        LeaderView {
            is_leader: true,
            term: Some(term.into()),
            ..LeaderView::default()
        }
    }

    /// A re-sent finding is a duplicate within a term and new in the next one, also when the same
    /// process leads again (its book from the earlier term must not swallow the re-sends).
    #[tokio::test]
    async fn each_leadership_term_has_its_own_book() {
        let metrics = ControllerMetrics::register(&prometheus::Registry::new()).unwrap();
        let config = LeaderConfig {
            namespace: "ns".into(),
            lease_name: "lease".into(),
            identity: "me".into(),
            advertise: "127.0.0.1:1".into(),
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            margin: Duration::from_secs(5),
        };
        let (tx, leadership) = crate::platform::leader::channel(&config, metrics.clone());
        let (changes, mut changed) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let (pipeline, task) = start(metrics, Incidents::new(), leadership, changes, stop.clone());

        let table: &[(Option<&str>, &str, bool)] = &[
            // (term now, finding id, reaches the reconcile stage)
            (Some("a-1"), "f-1", true),
            (Some("a-1"), "f-1", false), // a resend in the same term
            (Some("a-1"), "f-2", true),
            (None, "f-2", false), // demoted: the book stays until a new term
            (Some("b-1"), "f-1", true), // another replica's term: decided anew
            (Some("b-1"), "f-1", false),
            (Some("a-2"), "f-1", true), // the first process leads again: a new book too
            (Some("a-2"), "f-2", true),
        ];
        for (term, id, reported) in table {
            match term {
                Some(t) => tx.send_replace(leading(t)),
                None => tx.send_replace(LeaderView::default()),
            };
            let observed = pipeline.submit(node_finding(id)).await.unwrap();
            assert_eq!(
                observed != Observed::Duplicate,
                *reported,
                "{term:?} {id}: {observed:?}"
            );
            if *reported {
                let change = changed.recv().await.unwrap();
                assert_eq!(change.finding.id, *id);
            }
        }
        assert!(changed.try_recv().is_err(), "nothing else reported");
        stop.cancel();
        task.await.unwrap();
    }

    /// The queue is bounded by bytes: while the book is busy, a finding that does not fit waits
    /// outside the queue (with only a count bound it would be queued: 1024 slots are free).
    #[tokio::test]
    async fn the_queue_is_bounded_by_bytes() {
        let metrics = crate::testing::metrics();
        let leader = crate::testing::FakeLeader::new(&metrics, true);
        // Nobody reads the changes yet: the second change blocks the book.
        let (changes, mut changed) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let (pipeline, task) = start(
            metrics,
            Incidents::new(),
            leader.leadership.clone(),
            changes,
            stop.clone(),
        );
        let big = |id: &str| Finding {
            log_lines: vec!["x".repeat(1_000); 8],
            ..node_finding(id)
        };
        let size = big("f-0").approx_bytes();
        // One big finding fits, two do not.
        let budget = size + size / 2;
        let pipeline = pipeline.with_queue_bytes(budget);
        let submit = |id: &str| {
            let (p, f) = (pipeline.clone(), big(id));
            tokio::spawn(async move { p.submit(f).await })
        };
        pipeline.submit(big("f-1")).await.unwrap(); // its change waits in the channel
        let second = submit("f-2");
        // The book took the second and blocks on its change, holding its bytes.
        tokio::time::timeout(Duration::from_secs(5), async {
            while pipeline.bytes.available_permits() != budget - size {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let third = submit("f-3");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            pipeline.tx.capacity(),
            pipeline.tx.max_capacity(),
            "the third does not fit in what is left and stays out of the queue"
        );
        assert!(!third.is_finished());
        for id in ["f-1", "f-2", "f-3"] {
            assert_eq!(changed.recv().await.unwrap().finding.id, id);
        }
        second.await.unwrap().unwrap();
        third.await.unwrap().unwrap();
        assert_eq!(pipeline.bytes.available_permits(), budget, "all released");
        stop.cancel();
        task.await.unwrap();
    }
}
