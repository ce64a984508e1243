//! The escalation loop (leader only): signals -> records (pure rules) -> the cluster -> deliveries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use auto_agent_escalation::deliver::{Deliverer, SlackApi, Summarizer, Tickets};
use auto_agent_escalation::record::{
    self, Applied, Channel, Record, Rules, Signal, SignalKind, Status, What,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::health;
use crate::platform::records::{Store, StoreError};

type Stored = crate::platform::records::Stored<Record>;
use crate::platform::events::EventSink;
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;

/// Signals kept while the records cannot be loaded (API down at a leadership change).
const BACKLOG: usize = 4096;
/// Deliveries per record per tick, so one chatty incident does not hold up the others.
const PER_RECORD: usize = 4;

pub struct Stage<S, T, L> {
    pub client: Client,
    pub store: Store<Record>,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
    /// Events on the incident's workload or node when a thread or ticket is made or resolved.
    pub events: EventSink,
    pub deliverer: Deliverer<S, T, L>,
    pub rules: Rules,
    /// A pod incident counts as resolved after this long without a failure, its workload ready.
    pub quiet: Duration,
    /// Records kept at most; resolved ones make room first.
    pub max_records: usize,
    /// How often workloads of escalated incidents are checked.
    pub health_every: Duration,
}

impl<S, T, L> std::fmt::Debug for Stage<S, T, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("max_records", &self.max_records)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

/// Incidents whose last evidence bundle is remembered for a record made later (a restart's
/// bundle, then a refusal that escalates), at most.
const EVIDENCE_KEPT: usize = 10_000;

struct State {
    records: BTreeMap<String, Stored>,
    /// The last evidence bundle per incident (in memory; a new leader starts without).
    evidence: std::collections::HashMap<String, String>,
    /// Records whose last write failed; written again on the next tick.
    dirty: BTreeSet<String>,
}

fn now_ms() -> i64 {
    auto_agent_shared::clock::now_ms()
}

impl<S: SlackApi, T: Tickets, L: Summarizer> Stage<S, T, L> {
    pub async fn run(self, mut rx: mpsc::Receiver<Signal>, stop: CancellationToken) {
        let mut leadership = self.leadership.clone();
        let mut state: Option<State> = None;
        let mut backlog: VecDeque<Signal> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_health = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = leadership.changed() => {
                    if !leadership.is_leader() && state.is_some() {
                        tracing::info!("Not leading: escalation records are the next leader's");
                        state = None;
                    }
                }
                signal = rx.recv() => {
                    let Some(signal) = signal else { break };
                    if backlog.len() >= BACKLOG {
                        backlog.pop_front();
                        self.metrics.escalation_signals_dropped.inc();
                    }
                    backlog.push_back(signal);
                    if self.load(&mut state).await
                        && let Some(st) = state.as_mut()
                    {
                        while let Some(s) = backlog.pop_front() {
                            self.on_signal(st, s).await;
                        }
                    }
                }
                _ = tick.tick() => {
                    if !self.load(&mut state).await {
                        continue;
                    }
                    let Some(st) = state.as_mut() else { continue };
                    while let Some(s) = backlog.pop_front() {
                        self.on_signal(st, s).await;
                    }
                    if last_health.elapsed() >= self.health_every {
                        last_health = Instant::now();
                        self.check_health(st).await;
                    }
                    self.on_tick(st).await;
                }
            }
        }
    }

    /// Loads the records once per leadership term; `false` while not leading or the API fails.
    async fn load(&self, state: &mut Option<State>) -> bool {
        if !self.leadership.is_leader() {
            return false;
        }
        if state.is_some() {
            return true;
        }
        match self.store.load_all().await {
            Ok(records) => {
                let owed: usize = records.values().map(|s| s.record.pending()).sum();
                tracing::info!(
                    records = records.len(),
                    owed,
                    "Escalation records loaded; delivering what is owed"
                );
                *state = Some(State {
                    records,
                    evidence: std::collections::HashMap::new(),
                    dirty: BTreeSet::new(),
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "Escalation records cannot be listed yet; retrying");
                false
            }
        }
    }

    async fn on_signal(&self, st: &mut State, mut signal: Signal) {
        let key = signal.incident.clone();
        match &signal.facts.evidence {
            Some(bundle) => {
                if st.evidence.len() >= EVIDENCE_KEPT && !st.evidence.contains_key(&key) {
                    st.evidence.clear();
                }
                st.evidence.insert(key.clone(), bundle.clone());
            }
            None if !signal.facts.target.is_empty() => {
                signal.facts.evidence = st.evidence.get(&key).cloned();
            }
            None => {}
        }
        let prev = st.records.remove(&key);
        let version = prev.as_ref().and_then(|s| s.version.clone());
        let was_stored = prev.is_some();
        let (next, applied) = record::apply(prev.map(|s| s.record), &signal, &self.rules);
        if applied != Applied::Ignored {
            tracing::info!(incident = %key, applied = ?applied, "Escalation record updated");
        }
        match next {
            Some(r) => {
                if !was_stored && !self.make_room(st) {
                    tracing::warn!(incident = %key, "Escalation records full; this incident is not escalated");
                    self.metrics.escalation_signals_dropped.inc();
                    return;
                }
                self.keep(st, Stored { record: r, version }).await;
            }
            None if was_stored && applied == Applied::Forget => self.forget(st, &key).await,
            None => {}
        }
    }

    /// Frees a slot for a new record: the oldest resolved record that owes nothing goes.
    fn make_room(&self, st: &mut State) -> bool {
        if st.records.len() < self.max_records {
            return true;
        }
        let oldest = st
            .records
            .values()
            .filter(|s| s.record.status == Status::Resolved && s.record.outbox.is_empty())
            .min_by_key(|s| s.record.last_at_ms)
            .map(|s| s.record.key.clone());
        match oldest {
            Some(k) => {
                st.records.remove(&k);
                st.dirty.insert(format!("delete:{k}"));
                true
            }
            None => false,
        }
    }

    /// Writes a record and keeps it; a failed write is retried on the next tick. A conflict means
    /// another leader wrote it: its copy wins, and this one's change is applied again on top.
    async fn keep(&self, st: &mut State, mut stored: Stored) {
        let key = stored.record.key.clone();
        match self.store.save(&stored).await {
            Ok(v) => {
                stored.version = Some(v);
                st.dirty.remove(&key);
            }
            Err(StoreError::Conflict) => {
                tracing::info!(incident = %key, "Escalation record changed underneath; reloading it");
                if let Ok(Some(theirs)) = self.store.get(&key).await {
                    stored = theirs;
                }
                st.dirty.insert(key.clone());
            }
            Err(e) => {
                tracing::warn!(incident = %key, error = %e, "Escalation record not written yet; retrying");
                st.dirty.insert(key.clone());
            }
        }
        st.records.insert(key, stored);
    }

    async fn forget(&self, st: &mut State, key: &str) {
        st.records.remove(key);
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(incident = %key, error = %e, "Escalation record not deleted yet; retrying");
            st.dirty.insert(format!("delete:{key}"));
        }
    }

    async fn check_health(&self, st: &mut State) {
        let now = now_ms();
        let quiet_ms = i64::try_from(self.quiet.as_millis()).unwrap_or(i64::MAX);
        let candidates: Vec<(String, String, Status)> = st
            .records
            .values()
            .filter(|s| match s.record.status {
                Status::Escalated => record::quiet_since(&s.record, now, quiet_ms),
                Status::Watching => now - s.record.last_failure_ms >= quiet_ms,
                Status::Resolved => false,
            })
            .map(|s| {
                (
                    s.record.key.clone(),
                    s.record.facts.target.clone(),
                    s.record.status,
                )
            })
            .collect();
        for (key, target, _) in candidates {
            match health::healthy(&self.client, &target).await {
                Ok(Some(true)) => {
                    tracing::info!(incident = %key, target = %target, "Workload healthy and quiet: the incident is resolved");
                    let Some(r) = st.records.get(&key).map(|s| s.record.clone()) else {
                        continue;
                    };
                    self.on_signal(st, resolved(&r, now)).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(incident = %key, error = %e, "Health check failed"),
            }
        }
    }

    async fn on_tick(&self, st: &mut State) {
        let now = now_ms();
        // Writes and deletes that failed before.
        for item in std::mem::take(&mut st.dirty) {
            if let Some(key) = item.strip_prefix("delete:") {
                if let Err(e) = self.store.delete(key).await {
                    tracing::debug!(error = %e, "Escalation record delete still failing");
                    st.dirty.insert(item.clone());
                }
            } else if let Some(stored) = st.records.remove(&item) {
                self.keep(st, stored).await;
            }
        }
        let keys: Vec<String> = st.records.keys().cloned().collect();
        for key in keys {
            let Some(stored) = st.records.remove(&key) else {
                continue;
            };
            // A watched incident at its deadline: if nothing failed since the last action and
            // the workload is whole, the action worked and nobody needs to hear of it.
            if stored.record.status == Status::Watching
                && stored.record.escalate_at_ms.is_some_and(|at| at <= now)
                && !record::failed_since_acting(&stored.record)
                && matches!(
                    health::healthy(&self.client, &stored.record.facts.target).await,
                    Ok(Some(true))
                )
            {
                tracing::info!(incident = %key, "The action worked: nothing to escalate");
                self.forget(st, &key).await;
                continue;
            }
            let version = stored.version.clone();
            let before = stored.record.clone();
            let (next, applied) = record::tick(stored.record, now, &self.rules);
            let Some(mut r) = next else {
                if applied == Applied::Forget {
                    self.forget(st, &key).await;
                }
                continue;
            };
            if applied == Applied::Queued {
                tracing::info!(incident = %key, "Still open after the agent acted: escalating");
            }
            let mut delivered_any = false;
            for _ in 0..PER_RECORD {
                let Some(attempt) = self.deliverer.deliver_one(&mut r, now).await else {
                    break;
                };
                if let Some(source) = attempt.summary_source {
                    self.metrics
                        .escalation_summaries
                        .with_label_values(&[source])
                        .inc();
                }
                let channel = attempt.channel.as_str();
                match &attempt.result {
                    Ok(()) => {
                        delivered_any = true;
                        self.metrics
                            .escalation_deliveries
                            .with_label_values(&[channel, "delivered"])
                            .inc();
                        let waited = (now_ms() - attempt.queued_at_ms).max(0) as f64 / 1000.0;
                        self.metrics
                            .escalation_latency
                            .with_label_values(&[channel])
                            .observe(waited);
                        tracing::info!(incident = %key, channel, what = ?attempt.what, "Escalation delivered");
                        self.announce(&r, attempt.channel, attempt.what).await;
                    }
                    Err(e) => {
                        self.metrics
                            .escalation_deliveries
                            .with_label_values(&[channel, e.category])
                            .inc();
                        tracing::warn!(incident = %key, channel, what = ?attempt.what, category = e.category, error = %e.message, "Escalation delivery failed; kept and retried");
                        break;
                    }
                }
            }
            let stored = Stored { record: r, version };
            if stored.record != before || delivered_any {
                self.keep(st, stored).await;
            } else {
                st.records.insert(key, stored);
            }
        }
        let owed: usize = st.records.values().map(|s| s.record.pending()).sum();
        self.metrics
            .escalation_queue_depth
            .set(i64::try_from(owed).unwrap_or(i64::MAX));
        self.metrics
            .escalation_records
            .set(i64::try_from(st.records.len()).unwrap_or(i64::MAX));
    }
}

impl<S, T, L> Stage<S, T, L> {
    /// An Event on the incident's subject naming where people were told, so `kubectl describe`
    /// shows the thread and ticket next to the refusal.
    async fn announce(&self, r: &Record, channel: Channel, what: What) {
        let Some(on) = &r.facts.subject else { return };
        let place = match channel {
            Channel::Ticket => r
                .ticket
                .as_ref()
                .map_or_else(|| "a ticket".to_owned(), |t| format!("ticket {}", t.url)),
            Channel::Slack => format!(
                "Slack {}",
                r.routes.slack_channel.as_deref().unwrap_or("channel")
            ),
        };
        let (type_, reason, note) = match what {
            What::Open => (
                EventType::Warning,
                "Escalated",
                format!("incident {} escalated ({}): {place}", r.key, r.reason),
            ),
            What::Update => return,
            What::Resolve => (
                EventType::Normal,
                "EscalationResolved",
                format!("incident {} resolved: {place} updated", r.key),
            ),
        };
        let reference = ObjectReference {
            api_version: Some(on.api_version.clone()).filter(|s| !s.is_empty()),
            kind: Some(on.kind.clone()).filter(|s| !s.is_empty()),
            namespace: Some(on.namespace.clone()).filter(|s| !s.is_empty()),
            name: Some(on.name.clone()).filter(|s| !s.is_empty()),
            uid: Some(on.uid.clone()).filter(|s| !s.is_empty()),
            ..ObjectReference::default()
        };
        self.events.publish(&reference, type_, reason, note).await;
    }
}

fn resolved(r: &Record, now: i64) -> Signal {
    Signal {
        incident: r.key.clone(),
        at_ms: now,
        kind: SignalKind::Resolved,
        note: "the workload is healthy and no failure was seen for the quiet period".into(),
        facts: r.facts.clone(),
        routes: r.routes.clone(),
    }
}
