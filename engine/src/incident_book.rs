//! The incident book: groups findings into incidents by key, recognises resends and repeats, and
//! tracks each incident's lifecycle. Pure: the caller passes the time in.
//!
//! - A finding id seen within `id_ttl_ms` is a duplicate (an at-least-once resend, or a restarted
//!   sensor re-reporting a known failure) and changes nothing.
//! - A new finding for an open incident is a repeat; for a resolved one it reopens the incident.
//! - A `Cleared` node finding resolves the node incident.

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

#[derive(Debug)]
pub struct IncidentBook {
    id_ttl_ms: i64,
    seen: HashMap<String, i64>,
    incidents: HashMap<IncidentKey, Incident>,
}

impl IncidentBook {
    pub fn new(id_ttl_ms: i64) -> Self {
        Self {
            id_ttl_ms,
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
            .is_some_and(|until| *until > now_ms)
        {
            return Ok(Observed::Duplicate);
        }
        self.seen
            .insert(finding.id.clone(), now_ms + self.id_ttl_ms);

        if finding.transition == Transition::Cleared {
            return Ok(match self.incidents.get_mut(&key) {
                Some(incident) => {
                    incident.state = IncidentState::Resolved;
                    incident.last_seen_ms = now_ms;
                    incident.last_finding = finding.clone();
                    Observed::Resolved(key)
                }
                None => Observed::ClearedUnknown(key),
            });
        }
        Ok(match self.incidents.get_mut(&key) {
            Some(incident) => {
                incident.findings += 1;
                incident.last_seen_ms = now_ms;
                incident.last_finding = finding.clone();
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
                        last_finding: finding.clone(),
                        last_action_ms: None,
                    },
                );
                Observed::Opened(key)
            }
        })
    }

    pub fn get(&self, key: &IncidentKey) -> Option<&Incident> {
        self.incidents.get(key)
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

    /// Forgets expired ids and incidents resolved longer than `keep_ms` ago. Bounds memory.
    pub fn prune(&mut self, now_ms: i64, keep_ms: i64) {
        self.seen.retain(|_, until| *until > now_ms);
        self.incidents.retain(|_, i| {
            !(matches!(i.state, IncidentState::Resolved) && i.last_seen_ms + keep_ms < now_ms)
        });
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
