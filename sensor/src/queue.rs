//! The sensor's outbound queue: bounded, coalescing, at-least-once.
//!
//! Findings wait in `pending` until sent, then in `inflight` until the controller acknowledges them.
//! After a reconnect every in-flight finding goes back to the front, with its id and sequence, so
//! nothing is lost; the controller dedupes by id. A finding the controller refused for its rate
//! limit goes back too, to its place by sequence, and is sent again later. While a finding for the same pod container and
//! kind is still pending, a newer one replaces it (a storm of restarts of one container costs one
//! slot). When the queue is full, the new finding is dropped and counted.

use std::collections::{BTreeMap, HashMap, VecDeque};

use auto_agent_engine::Finding;

/// What happened to a pushed finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Replaced a pending finding for the same target and kind.
    Coalesced,
    /// The queue was full.
    Dropped,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CoalesceKey {
    /// pod uid, container, kind
    Container(String, String, &'static str),
    /// Node findings and pod-level findings coalesce only with exact duplicates.
    Id(String),
}

fn coalesce_key(f: &Finding) -> CoalesceKey {
    match (&f.pod, &f.container) {
        (Some(pod), Some(container)) => {
            CoalesceKey::Container(pod.uid.clone(), container.clone(), f.kind.as_str())
        }
        _ => CoalesceKey::Id(f.id.clone()),
    }
}

#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    next_sequence: u64,
    pending: VecDeque<(u64, Finding)>,
    /// Sequence of the pending finding for a key.
    pending_keys: HashMap<CoalesceKey, u64>,
    inflight: BTreeMap<u64, Finding>,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_sequence: 1,
            pending: VecDeque::new(),
            pending_keys: HashMap::new(),
            inflight: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, finding: Finding) -> Pushed {
        let key = coalesce_key(&finding);
        if let Some(seq) = self.pending_keys.get(&key).copied()
            && let Some(slot) = self.pending.iter_mut().find(|(s, _)| *s == seq)
        {
            slot.1 = finding;
            return Pushed::Coalesced;
        }
        if self.len() >= self.capacity {
            return Pushed::Dropped;
        }
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.pending_keys.insert(key, seq);
        self.pending.push_back((seq, finding));
        Pushed::Queued
    }

    /// The next finding to send; it moves to in-flight.
    pub fn next_to_send(&mut self) -> Option<(u64, Finding)> {
        let (seq, finding) = self.pending.pop_front()?;
        let key = coalesce_key(&finding);
        if self.pending_keys.get(&key) == Some(&seq) {
            self.pending_keys.remove(&key);
        }
        self.inflight.insert(seq, finding.clone());
        Some((seq, finding))
    }

    /// Everything sent with a sequence up to `up_to`, and the listed ids, were processed.
    /// Returns how many in-flight findings this released.
    pub fn ack(&mut self, up_to: u64, ids: &[String]) -> usize {
        let before = self.inflight.len();
        let rest = self.inflight.split_off(&(up_to.saturating_add(1)));
        self.inflight = rest;
        if !ids.is_empty() {
            self.inflight.retain(|_, f| !ids.contains(&f.id));
        }
        before - self.inflight.len()
    }

    /// The controller refused this finding; resending would not help.
    pub fn reject(&mut self, sequence: u64) -> bool {
        self.inflight.remove(&sequence).is_some()
    }

    /// The controller could not take this finding now (its rate limit): it goes back to pending,
    /// in sequence order, with the same id and sequence, to be sent again.
    pub fn retry(&mut self, sequence: u64) -> bool {
        let Some(finding) = self.inflight.remove(&sequence) else {
            return false;
        };
        let at = self.pending.partition_point(|(s, _)| *s < sequence);
        self.pending.insert(at, (sequence, finding));
        true
    }

    /// After the stream broke: every unacknowledged finding is sent again first, in order.
    pub fn requeue_inflight(&mut self) -> usize {
        let inflight = std::mem::take(&mut self.inflight);
        let n = inflight.len();
        for (seq, finding) in inflight.into_iter().rev() {
            self.pending.push_front((seq, finding));
        }
        n
    }

    pub fn len(&self) -> usize {
        self.pending.len() + self.inflight.len()
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use auto_agent_engine::{FindingKind, PodRef, Transition};

    /// A finding about container `container` of pod `uid` on node `n`.
    pub(crate) fn f(uid: &str, container: &str, kind: FindingKind, restarts: u32) -> Finding {
        Finding {
            id: format!("{uid}/{container}/{}/{restarts}", kind.as_str()),
            node: "n".into(),
            kind,
            transition: Transition::Started,
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: uid.into(),
            }),
            owner: None,
            container: Some(container.into()),
            reason: String::new(),
            message: String::new(),
            restart_count: restarts,
            exit_code: None,
            image: None,
            observed_at_ms: 0,
            log_lines: vec![],
            log_truncated: false,
        }
    }

    fn node(id: &str) -> Finding {
        Finding {
            pod: None,
            container: None,
            id: id.into(),
            kind: FindingKind::NodeDiskPressure,
            ..f("x", "x", FindingKind::NodeDiskPressure, 0)
        }
    }

    #[test]
    fn sends_in_order_with_rising_sequences() {
        let mut q = Queue::new(10);
        assert_eq!(
            q.push(f("a", "app", FindingKind::CrashLoopBackOff, 1)),
            Pushed::Queued
        );
        assert_eq!(
            q.push(f("b", "app", FindingKind::CrashLoopBackOff, 1)),
            Pushed::Queued
        );
        let (s1, f1) = q.next_to_send().unwrap();
        let (s2, f2) = q.next_to_send().unwrap();
        assert_eq!((s1, s2), (1, 2));
        assert_eq!(
            (f1.pod.unwrap().uid, f2.pod.unwrap().uid),
            ("a".into(), "b".into())
        );
        assert!(q.next_to_send().is_none());
        assert_eq!(q.inflight_len(), 2);
    }

    #[test]
    fn pending_findings_for_the_same_container_and_kind_coalesce() {
        let mut q = Queue::new(10);
        q.push(f("a", "app", FindingKind::CrashLoopBackOff, 1));
        assert_eq!(
            q.push(f("a", "app", FindingKind::CrashLoopBackOff, 2)),
            Pushed::Coalesced
        );
        assert_eq!(
            q.push(f("a", "app", FindingKind::OomKilled, 2)),
            Pushed::Queued,
            "other kind"
        );
        assert_eq!(
            q.push(f("a", "side", FindingKind::CrashLoopBackOff, 2)),
            Pushed::Queued,
            "other container"
        );
        assert_eq!(q.len(), 3);
        let (seq, first) = q.next_to_send().unwrap();
        assert_eq!(
            (seq, first.restart_count),
            (1, 2),
            "the newest content keeps the first slot"
        );
        // Once sent, a newer finding for the same key is queued, not merged into the in-flight one.
        assert_eq!(
            q.push(f("a", "app", FindingKind::CrashLoopBackOff, 3)),
            Pushed::Queued
        );
    }

    #[test]
    fn node_findings_coalesce_only_exact_duplicates() {
        let mut q = Queue::new(10);
        assert_eq!(q.push(node("n/DiskPressure/Started/t1")), Pushed::Queued);
        assert_eq!(q.push(node("n/DiskPressure/Cleared/t2")), Pushed::Queued);
        assert_eq!(q.push(node("n/DiskPressure/Started/t1")), Pushed::Coalesced);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn full_queue_drops_new_findings() {
        let mut q = Queue::new(2);
        q.push(f("a", "app", FindingKind::CrashLoopBackOff, 1));
        q.push(f("b", "app", FindingKind::CrashLoopBackOff, 1));
        assert_eq!(
            q.push(f("c", "app", FindingKind::CrashLoopBackOff, 1)),
            Pushed::Dropped
        );
        // In-flight findings count against the capacity too.
        q.next_to_send();
        assert_eq!(
            q.push(f("c", "app", FindingKind::CrashLoopBackOff, 1)),
            Pushed::Dropped
        );
        // Coalescing still works when full.
        assert_eq!(
            q.push(f("b", "app", FindingKind::CrashLoopBackOff, 2)),
            Pushed::Coalesced
        );
        q.ack(1, &[]);
        assert_eq!(
            q.push(f("c", "app", FindingKind::CrashLoopBackOff, 1)),
            Pushed::Queued
        );
    }

    #[test]
    fn acks_release_by_sequence_and_by_id() {
        let mut q = Queue::new(10);
        for uid in ["a", "b", "c", "d"] {
            q.push(f(uid, "app", FindingKind::CrashLoopBackOff, 1));
        }
        while q.next_to_send().is_some() {}
        assert_eq!(q.ack(2, &[]), 2);
        assert_eq!(q.ack(2, &[]), 0, "acks are idempotent");
        assert_eq!(q.ack(0, &["d/app/CrashLoopBackOff/1".into()]), 1);
        assert_eq!(q.inflight_len(), 1);
        assert!(q.reject(3));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn reconnect_resends_unacked_first_with_the_same_id_and_sequence() {
        let mut q = Queue::new(10);
        for uid in ["a", "b", "c"] {
            q.push(f(uid, "app", FindingKind::CrashLoopBackOff, 1));
        }
        let sent: Vec<_> = std::iter::from_fn(|| q.next_to_send()).collect();
        q.ack(1, &[]);
        q.push(f("d", "app", FindingKind::CrashLoopBackOff, 1));
        assert_eq!(q.requeue_inflight(), 2);
        let resent: Vec<_> = std::iter::from_fn(|| q.next_to_send()).collect();
        let ids = |v: &[(u64, Finding)]| {
            v.iter()
                .map(|(s, f)| (*s, f.id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&resent[..2]), ids(&sent[1..]));
        assert_eq!(resent[2].0, 4);
        assert_eq!(resent.len(), 3);
    }

    #[test]
    fn rate_limited_findings_go_back_in_sequence_order() {
        let mut q = Queue::new(10);
        for uid in ["a", "b", "c", "d"] {
            q.push(f(uid, "app", FindingKind::CrashLoopBackOff, 1));
        }
        let sent: Vec<_> = std::iter::from_fn(|| q.next_to_send()).take(3).collect();
        assert_eq!(sent.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
        // 3 and 1 were refused for the rate limit, 2 was acked (replies come in order).
        assert!(q.retry(1));
        q.ack(2, &[]);
        assert!(q.retry(3));
        assert!(!q.retry(3), "only what is in flight");
        assert_eq!(q.inflight_len(), 0);
        assert_eq!(q.len(), 3, "nothing dropped");
        let resent: Vec<_> = std::iter::from_fn(|| q.next_to_send())
            .map(|(s, f)| (s, f.id))
            .collect();
        assert_eq!(
            resent,
            [
                (1, sent[0].1.id.clone()),
                (3, sent[2].1.id.clone()),
                (4, "d/app/CrashLoopBackOff/1".to_owned()),
            ],
            "same ids and sequences, in order, before newer findings"
        );
    }
}
