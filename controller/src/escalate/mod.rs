//! The escalation stage: incidents that need a human reach Slack and a ticket tracker under their
//! incident key, off the action path.
//!
//! The reconcile stages report through `Escalations::signal` (never blocks: a full queue drops and
//! counts); the stage, on the leader only, applies the pure rules of the escalation crate to the
//! incident's record, persists it (store.rs: one ConfigMap per key), and delivers what the record
//! owes with retries. A new leader lists the records and carries on, so an outage or a failover
//! delays delivery and loses nothing, and a ticket is never filed twice.

pub mod channels;
pub mod health;
pub mod stage;
pub mod store;

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
}

impl Escalations {
    pub fn new(tx: mpsc::Sender<Signal>, metrics: ControllerMetrics) -> Self {
        Self {
            tx: Some(tx),
            metrics: Some(metrics),
        }
    }

    /// A handle that reports nowhere (tests of other stages).
    pub fn off() -> Self {
        Self {
            tx: None,
            metrics: None,
        }
    }

    /// Hands a signal to the stage without waiting: remediation never waits for escalation.
    pub fn signal(&self, signal: Signal) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(signal).is_err()
            && let Some(m) = &self.metrics
        {
            m.escalation_signals_dropped.inc();
        }
    }
}
