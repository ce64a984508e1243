//! The incident book: groups findings into incidents by key, recognises resends and repeats, and
//! tracks each incident's lifecycle. Pure: the caller passes the time in.
//!
//! - A finding id seen within `id_ttl_ms` is a duplicate (an at-least-once resend, or a restarted
//!   sensor re-reporting a known failure) and changes nothing.
//! - A new finding for an open incident is a repeat; for a resolved one it reopens the incident.
//! - A `Cleared` node finding resolves the node incident.
//!
//! Memory is bounded ([`BookLimits`]): ids are remembered for `id_ttl_ms` and at most `max_ids` of
//! them; at most `max_incidents` incidents are kept (resolved ones go first, then the least recently
//! seen); `prune` forgets resolved incidents after `resolved_keep_ms` and pod incidents not seen for
//! `idle_ms` (pod failures have no cleared edge: a pod that stopped reporting is gone or healed). The
//! stored finding carries no log tail: the log goes on with the change to the reconcile stage,
//! the book only needs to know what the incident is.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Transition};
use crate::incident::{IncidentKey, IncidentKeyError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentState {
    Open,
    Acting,
    Resolved,
    Escalated,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub key: IncidentKey,
    pub state: IncidentState,
    pub opened_at_ms: i64,
    pub last_seen_ms: i64,
    /// Distinct findings (not resends) grouped into this incident.
    pub findings: u32,
    pub last_finding: Finding,
    /// When the last action on this incident was taken (for the per-key cooldown).
    pub last_action_ms: Option<i64>,
}

/// What observing one finding did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A new incident was opened.
    Opened(IncidentKey),
    /// A resolved incident came back.
    Reopened(IncidentKey),
    /// Another finding for an open incident.
    Repeated(IncidentKey),
    /// A node condition cleared: the incident is resolved.
    Resolved(IncidentKey),
    /// A cleared condition without a known incident: nothing to do.
    ClearedUnknown(IncidentKey),
    /// The same finding id again.
    Duplicate,
}

impl Observed {
    /// The incident it is about (`None` for a duplicate).
    pub fn key(&self) -> Option<&IncidentKey> {
        match self {
            Self::Opened(k)
            | Self::Reopened(k)
            | Self::Repeated(k)
            | Self::Resolved(k)
            | Self::ClearedUnknown(k) => Some(k),
            Self::Duplicate => None,
        }
    }
}

/// How much the book remembers, at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookLimits {
    /// How long a finding id is remembered: a resend within it is a duplicate.
    pub id_ttl_ms: i64,
    /// Finding ids remembered at most; the ones expiring first are forgotten first.
    pub max_ids: usize,
    /// Incidents kept at most; resolved ones are forgotten first, then the least recently seen.
    pub max_incidents: usize,
    /// How long a resolved incident is kept (so a quick relapse is a reopening).
    pub resolved_keep_ms: i64,
    /// A pod incident not seen for this long is forgotten. Node incidents wait for their cleared
    /// edge (they are few: four conditions per node).
    pub idle_ms: i64,
}

impl Default for BookLimits {
    fn default() -> Self {
        Self {
            id_ttl_ms: 30 * 60 * 1000,
            max_ids: 200_000,
            max_incidents: 20_000,
            resolved_keep_ms: 60 * 60 * 1000,
            idle_ms: 6 * 60 * 60 * 1000,
        }
    }
}

#[derive(Debug)]
pub struct IncidentBook {
    limits: BookLimits,
    seen: HashMap<String, Seen>,
    incidents: HashMap<IncidentKey, Incident>,
}

/// A remembered finding id: until when, and (a hash of) the node that reported it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    until: i64,
    node: u64,
}

fn node_hash(node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same node always hashes the same within a book.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    h.finish()
}

/// What the book keeps of a finding: everything but the log tail.
fn stored(finding: &Finding) -> Finding {
    Finding {
        log_lines: Vec::new(),
        ..finding.clone()
    }
}

/// Over `max` entries: keep the `max - max/10` that sort last by `order` (a batch, so the sort is
/// paid once per tenth of the capacity, not on every insert).
fn evict_batch<K: Clone + Eq + std::hash::Hash, V, O: Ord>(
    map: &mut HashMap<K, V>,
    max: usize,
    order: impl Fn(&V) -> O,
) {
    if map.len() <= max {
        return;
    }
    let keep = max - max / 10;
    let mut by_order: Vec<(O, K)> = map.iter().map(|(k, v)| (order(v), k.clone())).collect();
    by_order.sort_by(|a, b| a.0.cmp(&b.0));
    let drop = by_order.len() - keep;
    for (_, k) in by_order.into_iter().take(drop) {
        map.remove(&k);
    }
}

impl IncidentBook {
    /// A book with the default limits and this id TTL.
    pub fn new(id_ttl_ms: i64) -> Self {
        Self::with_limits(BookLimits {
            id_ttl_ms,
            ..BookLimits::default()
        })
    }

    pub fn with_limits(limits: BookLimits) -> Self {
        Self {
            limits,
            seen: HashMap::new(),
            incidents: HashMap::new(),
        }
    }

    pub fn observe(
        &mut self,
        finding: &Finding,
        now_ms: i64,
    ) -> Result<Observed, IncidentKeyError> {
        let key = IncidentKey::for_finding(finding)?;
        if self
            .seen
            .get(&finding.id)
            .is_some_and(|seen| seen.until > now_ms)
        {
            return Ok(Observed::Duplicate);
        }
        self.seen.insert(
            finding.id.clone(),
            Seen {
                until: now_ms + self.limits.id_ttl_ms,
                node: node_hash(&finding.node),
            },
        );
        evict_batch(&mut self.seen, self.limits.max_ids, |seen| seen.until);

        if finding.transition == Transition::Cleared {
            return Ok(match self.incidents.get_mut(&key) {
                Some(incident) => {
                    incident.state = IncidentState::Resolved;
                    incident.last_seen_ms = now_ms;
                    incident.last_finding = stored(finding);
                    Observed::Resolved(key)
                }
                None => Observed::ClearedUnknown(key),
            });
        }
        Ok(match self.incidents.get_mut(&key) {
            Some(incident) => {
                incident.findings += 1;
                incident.last_seen_ms = now_ms;
                incident.last_finding = stored(finding);
                if incident.state == IncidentState::Resolved {
                    incident.state = IncidentState::Open;
                    Observed::Reopened(key)
                } else {
                    Observed::Repeated(key)
                }
            }
            None => {
                self.incidents.insert(
                    key.clone(),
                    Incident {
                        key: key.clone(),
                        state: IncidentState::Open,
                        opened_at_ms: now_ms,
                        last_seen_ms: now_ms,
                        findings: 1,
                        last_finding: stored(finding),
                        last_action_ms: None,
                    },
                );
                evict_batch(&mut self.incidents, self.limits.max_incidents, |i| {
                    (i.state != IncidentState::Resolved, i.last_seen_ms)
                });
                Observed::Opened(key)
            }
        })
    }

    /// Whether a finding `id` from `node` would be a duplicate now, without recording anything:
    /// the id is remembered and was recorded from that same node. The ingest asks this before it
    /// verifies a finding against the API server, so a resend costs no API request; an id first
    /// recorded from another node is not answered here (it goes the whole way, where verification
    /// counts a forgery).
    pub fn is_duplicate(&self, id: &str, node: &str, now_ms: i64) -> bool {
        self.seen
            .get(id)
            .is_some_and(|seen| seen.until > now_ms && seen.node == node_hash(node))
    }

    pub fn get(&self, key: &IncidentKey) -> Option<&Incident> {
        self.incidents.get(key)
    }

    /// The keys of every incident the book keeps.
    pub fn keys(&self) -> impl Iterator<Item = &IncidentKey> {
        self.incidents.keys()
    }

    pub fn set_state(&mut self, key: &IncidentKey, state: IncidentState, now_ms: i64) {
        if let Some(i) = self.incidents.get_mut(key) {
            i.state = state;
            if state == IncidentState::Acting {
                i.last_action_ms = Some(now_ms);
            }
        }
    }

    /// Whether an action on `key` must wait: the last one was less than `cooldown_ms` ago.
    pub fn in_cooldown(&self, key: &IncidentKey, cooldown_ms: i64, now_ms: i64) -> bool {
        self.incidents
            .get(key)
            .and_then(|i| i.last_action_ms)
            .is_some_and(|t| now_ms < t + cooldown_ms)
    }

    /// Forgets expired ids, incidents resolved longer than `resolved_keep_ms` ago and pod
    /// incidents not seen for `idle_ms`. Bounds memory over time (the counts are bounded on insert).
    pub fn prune(&mut self, now_ms: i64) {
        let BookLimits {
            resolved_keep_ms,
            idle_ms,
            ..
        } = self.limits;
        self.seen.retain(|_, seen| seen.until > now_ms);
        self.incidents.retain(|_, i| {
            let idle = now_ms - i.last_seen_ms;
            match i.state {
                IncidentState::Resolved => idle <= resolved_keep_ms,
                _ => i.last_finding.kind.is_node() || idle <= idle_ms,
            }
        });
    }

    /// Finding ids remembered for dedupe.
    pub fn ids_len(&self) -> usize {
        self.seen.len()
    }

    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    pub fn open_count(&self) -> usize {
        self.incidents
            .values()
            .filter(|i| i.state != IncidentState::Resolved)
            .count()
    }
}
