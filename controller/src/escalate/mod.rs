//! The escalation stage: incidents that need a human reach Slack and a ticket tracker under their
//! incident key, off the action path.
//!
//! The reconcile stages report through `Escalations::signal` (never blocks: a full queue drops and
//! counts); the stage, on the leader only, applies the pure rules of the escalation crate to the
//! incident's record, persists it (platform/records.rs: one ConfigMap per key), and delivers what the record
//! owes with retries. A new leader lists the records and carries on, so an outage or a failover
//! delays delivery and loses nothing, and a ticket is never filed twice.

pub mod channels;
pub mod health;
pub mod stage;

use auto_agent_escalation::allow::Allowlist;
use auto_agent_escalation::record::{Facts, Routes, Signal, TicketProvider, TicketRoute};
use auto_agent_shared::crd::policy::{Escalation, TicketProvider as CrdProvider};
use tokio::sync::mpsc;

use crate::platform::metrics::ControllerMetrics;

/// What an outcome needs to escalate: the incident, what people are shown, where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalating {
    pub incident: String,
    pub facts: Facts,
    pub routes: Routes,
}

/// A policy's `escalation` as the escalation crate's routes (none when unset).
pub fn routes(escalation: Option<&Escalation>) -> Routes {
    let Some(e) = escalation else {
        return Routes::default();
    };
    Routes {
        slack_channel: e.slack_channel.clone(),
        ticket: e.ticket.as_ref().map(|t| TicketRoute {
            provider: match t.provider {
                CrdProvider::GitHub => TicketProvider::GitHub,
                CrdProvider::GitLab => TicketProvider::GitLab,
                CrdProvider::Gitea => TicketProvider::Gitea,
                CrdProvider::Jira => TicketProvider::Jira,
            },
            project: t.project.clone(),
        }),
        after_seconds: e.after_seconds.and_then(|s| u32::try_from(s).ok()),
    }
}

/// `Escalating` for an outcome, or `None` when the policy routes nowhere.
pub fn escalating(
    incident: &str,
    escalation: Option<&Escalation>,
    facts: Facts,
) -> Option<std::sync::Arc<Escalating>> {
    let routes = routes(escalation);
    (!routes.is_empty()).then(|| {
        std::sync::Arc::new(Escalating {
            incident: incident.to_owned(),
            facts,
            routes,
        })
    })
}

/// The handle reconcile stages report through.
#[derive(Clone, Debug)]
pub struct Escalations {
    tx: Option<mpsc::Sender<Signal>>,
    metrics: Option<ControllerMetrics>,
    allow: std::sync::Arc<Allowlist>,
}

impl Escalations {
    pub fn new(tx: mpsc::Sender<Signal>, metrics: ControllerMetrics, allow: Allowlist) -> Self {
        Self {
            tx: Some(tx),
            metrics: Some(metrics),
            allow: std::sync::Arc::new(allow),
        }
    }

    /// A handle that reports nowhere (tests of other stages).
    pub fn off() -> Self {
        Self {
            tx: None,
            metrics: None,
            allow: std::sync::Arc::default(),
        }
    }

    /// Hands a signal to the stage without waiting: remediation never waits for escalation.
    /// Routes the installation does not allow are dropped here, said in the log and counted.
    pub fn signal(&self, mut signal: Signal) {
        let Some(tx) = &self.tx else { return };
        if !signal.routes.is_empty() {
            let (routes, refused) = self.allow.filter(std::mem::take(&mut signal.routes));
            if !refused.is_empty() {
                tracing::warn!(
                    incident = %signal.incident,
                    refused = %refused.join(", "),
                    "Escalation route not allowed by this installation (escalation.allowedSlackChannels / allowedTicketProjects)"
                );
                if let Some(m) = &self.metrics {
                    m.escalation_routes_refused.inc_by(refused.len() as u64);
                }
            }
            if routes.is_empty() {
                return;
            }
            signal.routes = routes;
        }
        if tx.try_send(signal).is_err()
            && let Some(m) = &self.metrics
        {
            m.escalation_signals_dropped.inc();
        }
    }
}

impl crate::platform::records::Keyed for auto_agent_escalation::record::Record {
    fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use auto_agent_shared::crd::policy::Ticket;

    use super::*;

    #[test]
    fn policy_routes_map_every_provider_and_no_routes_means_no_escalation() {
        for (crd, ours) in [
            (CrdProvider::GitHub, TicketProvider::GitHub),
            (CrdProvider::GitLab, TicketProvider::GitLab),
            (CrdProvider::Gitea, TicketProvider::Gitea),
            (CrdProvider::Jira, TicketProvider::Jira),
        ] {
            let e = Escalation {
                slack_channel: Some("#ops".into()),
                ticket: Some(Ticket {
                    provider: crd,
                    project: "acme/ops".into(),
                }),
                after_seconds: Some(900),
            };
            let r = routes(Some(&e));
            assert_eq!(r.ticket.as_ref().map(|t| t.provider), Some(ours));
            assert_eq!(
                r.ticket.as_ref().map(|t| t.project.as_str()),
                Some("acme/ops")
            );
            assert_eq!(r.slack_channel.as_deref(), Some("#ops"));
            assert_eq!(r.after_seconds, Some(900));
        }
        assert!(routes(None).is_empty());
        assert!(escalating("k", None, Facts::default()).is_none());
        // afterSeconds alone routes nowhere: nobody to tell
        let only_after = Escalation {
            after_seconds: Some(60),
            ..Escalation::default()
        };
        assert!(escalating("k", Some(&only_after), Facts::default()).is_none());
        let slack_only = Escalation {
            slack_channel: Some("C0123456789".into()),
            ..Escalation::default()
        };
        let e = escalating("k", Some(&slack_only), Facts::default()).unwrap();
        assert_eq!(e.incident, "k");
        assert!(e.routes.ticket.is_none());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let registry = prometheus::Registry::new();
        let metrics = ControllerMetrics::register(&registry).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let e = Escalations::new(tx, metrics.clone(), Allowlist::default());
        let s = Signal {
            incident: "k".into(),
            at_ms: 0,
            kind: auto_agent_escalation::record::SignalKind::Seen,
            note: String::new(),
            facts: Facts::default(),
            routes: Routes::default(),
        };
        e.signal(s.clone());
        assert_eq!(metrics.escalation_signals_dropped.get(), 0);
        e.signal(s.clone());
        assert_eq!(metrics.escalation_signals_dropped.get(), 1);
        Escalations::off().signal(s);
    }

    #[test]
    fn routes_the_installation_does_not_allow_never_reach_the_stage() {
        let registry = prometheus::Registry::new();
        let metrics = ControllerMetrics::register(&registry).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let allow = Allowlist::parse(&["#ops".into()], &["gitea:acme/ops".into()]).unwrap();
        let e = Escalations::new(tx, metrics.clone(), allow);
        let signal = |channel: &str, project: &str| Signal {
            incident: "k".into(),
            at_ms: 0,
            kind: auto_agent_escalation::record::SignalKind::Refused {
                reason: "BudgetExhausted".into(),
            },
            note: String::new(),
            facts: Facts::default(),
            routes: Routes {
                slack_channel: Some(channel.into()),
                ticket: Some(TicketRoute {
                    provider: TicketProvider::Gitea,
                    project: project.into(),
                }),
                after_seconds: None,
            },
        };
        e.signal(signal("#ops", "acme/ops"));
        let got = rx.try_recv().unwrap();
        assert!(got.routes.slack_channel.is_some() && got.routes.ticket.is_some());
        e.signal(signal("#other-team", "acme/ops"));
        let got = rx.try_recv().unwrap();
        assert!(got.routes.slack_channel.is_none() && got.routes.ticket.is_some());
        e.signal(signal("#other-team", "other/repo"));
        assert!(rx.try_recv().is_err(), "nothing left to route to");
        assert_eq!(metrics.escalation_routes_refused.get(), 3);
    }
}
