//! The report step every reconcile shares: one place that turns an outcome (executed, failed,
//! refused, dry-run) into an Event on the subject, metrics with bounded labels, the policy's
//! `status.recentActions` and a log line. Pods, nodes and scaling all report through it, so an
//! outcome looks the same whatever produced it.

use auto_agent_engine::decide::ActionKind;
use auto_agent_escalation::record::{Facts, Signal, SignalKind, SubjectRef};
use auto_agent_shared::crd::ActionOutcome;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::escalate::{Escalating, Escalations};
use crate::platform::events::EventSink;
use crate::platform::incidents::{Incidents, OutcomeView};
use crate::platform::metrics::ControllerMetrics;
use crate::policies::recent::{Entry, PolicyRef, RecentActions};

/// Whom the metrics name: a workload (namespace, owning workload; empty for a bare pod) or a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Workload { namespace: String, workload: String },
    Node(String),
}

/// What an outcome is about.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The object the Event is written on.
    pub event_on: ObjectReference,
    pub scope: Scope,
    /// `Kind/namespace/name` shown in `status.recentActions`.
    pub target: String,
    /// The incident and its policy's escalation routes, when the outcome can escalate.
    pub escalation: Option<std::sync::Arc<Escalating>>,
    /// The incident key the outcome belongs to (`None` for scaling, which has no incident), for
    /// the leader's incidents view.
    pub incident: Option<String>,
}

impl Subject {
    /// The same subject, shown in status as what `action` changes (the pod a restart deleted, the
    /// workload a bump patched); Events and metric labels stay on the workload.
    pub fn about(&self, action: &auto_agent_engine::decide::PlannedAction) -> Self {
        Self {
            target: action.target().to_string(),
            ..self.clone()
        }
    }
}

/// The Event reason of an executed action.
pub fn done_reason(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::RestartPod => "RestartedPod",
        ActionKind::BumpMemory => "BumpedMemory",
        ActionKind::MirrorImage => "MirroredImage",
        ActionKind::EvictPod => "EvictedPod",
        ActionKind::CordonNode => "CordonedNode",
        ActionKind::UncordonNode => "UncordonedNode",
        ActionKind::ScaleUp => "ScaledUp",
        ActionKind::ScaleDown => "ScaledDown",
    }
}

#[derive(Clone, Debug)]
pub struct Outcomes {
    pub events: EventSink,
    pub metrics: ControllerMetrics,
    pub recent: RecentActions,
    pub escalations: Escalations,
    pub proposals: crate::gitops::Proposals,
    pub incidents: Incidents,
}

impl Outcomes {
    /// An action was carried out.
    pub async fn executed(
        &self,
        policy: &PolicyRef,
        subject: &Subject,
        kind: ActionKind,
        note: String,
    ) {
        match &subject.scope {
            Scope::Workload {
                namespace,
                workload,
            } => self
                .metrics
                .actions
                .with_label_values(&[kind.as_str(), namespace, workload])
                .inc(),
            Scope::Node(node) => self
                .metrics
                .node_actions
                .with_label_values(&[kind.as_str(), node])
                .inc(),
        }
        self.metrics
            .decisions
            .with_label_values(&["executed", kind.as_str()])
            .inc();
        let note = format!("{note} (policy {})", policy.name());
        tracing::info!(action = kind.as_str(), policy = %policy.id(), target = %subject.target, "{note}");
        self.escalate(
            subject,
            SignalKind::Acted {
                action: kind.as_str().to_owned(),
            },
            &note,
        );
        self.show(
            policy,
            subject,
            kind,
            ActionOutcome::Executed,
            done_reason(kind),
            &note,
        );
        self.events
            .publish(
                &subject.event_on,
                EventType::Normal,
                done_reason(kind),
                note,
            )
            .await;
    }

    /// An action was tried and failed; `category` is the error's metric label.
    pub async fn failed(
        &self,
        policy: &PolicyRef,
        subject: &Subject,
        kind: ActionKind,
        category: &str,
        note: String,
    ) {
        self.metrics
            .action_errors
            .with_label_values(&[category])
            .inc();
        self.metrics
            .decisions
            .with_label_values(&["failed", category])
            .inc();
        let note = format!(
            "{} failed: {note} (policy {})",
            kind.as_str(),
            policy.name()
        );
        tracing::warn!(action = kind.as_str(), policy = %policy.id(), target = %subject.target, "{note}");
        self.escalate(
            subject,
            SignalKind::Failed {
                action: kind.as_str().to_owned(),
                category: category.to_owned(),
            },
            &note,
        );
        self.show(
            policy,
            subject,
            kind,
            ActionOutcome::Failed,
            "ActionFailed",
            &note,
        );
        self.events
            .publish(&subject.event_on, EventType::Warning, "ActionFailed", note)
            .await;
    }

    /// The agent decided not to act; `escalates` marks refusals after which a human should look
    /// (a Warning Event).
    #[allow(clippy::too_many_arguments)]
    pub async fn refused(
        &self,
        policy: &PolicyRef,
        subject: &Subject,
        kind: ActionKind,
        reason: &str,
        escalates: bool,
        note: String,
    ) {
        self.metrics
            .decisions
            .with_label_values(&["refused", reason])
            .inc();
        let note = format!(
            "{note}; policy {}{}",
            policy.name(),
            if escalates {
                "; escalating for a human"
            } else {
                ""
            }
        );
        tracing::info!(reason, policy = %policy.id(), target = %subject.target, "{note}");
        if escalates {
            self.escalate(
                subject,
                SignalKind::Refused {
                    reason: reason.to_owned(),
                },
                &note,
            );
        }
        self.show(policy, subject, kind, ActionOutcome::Refused, reason, &note);
        let type_ = if escalates {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.events
            .publish(&subject.event_on, type_, reason, note)
            .await;
    }

    /// Dry-run: what would have been done, with the same plan as live.
    pub async fn dry_run(
        &self,
        policy: &PolicyRef,
        subject: &Subject,
        kind: ActionKind,
        note: String,
    ) {
        self.metrics
            .decisions
            .with_label_values(&["dry_run", kind.as_str()])
            .inc();
        let note = format!(
            "dry-run: would {note} (policy {}); nothing changed",
            policy.name()
        );
        tracing::info!(policy = %policy.id(), "{note}");
        self.show(
            policy,
            subject,
            kind,
            ActionOutcome::DryRun,
            "DryRun",
            &note,
        );
        self.events
            .publish(&subject.event_on, EventType::Normal, "DryRun", note)
            .await;
    }

    /// Reported without a policy to show it under (no policy selects the target).
    pub async fn unowned(
        &self,
        event_on: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.metrics
            .decisions
            .with_label_values(&["refused", reason])
            .inc();
        tracing::info!(reason, "{note}");
        self.events.publish(event_on, type_, reason, note).await;
    }

    /// Tells the escalation stage, when the subject carries an incident with routes.
    fn escalate(&self, subject: &Subject, kind: SignalKind, note: &str) {
        let Some(e) = &subject.escalation else { return };
        let on = &subject.event_on;
        let facts = Facts {
            subject: Some(SubjectRef {
                api_version: on.api_version.clone().unwrap_or_default(),
                kind: on.kind.clone().unwrap_or_default(),
                namespace: on.namespace.clone().unwrap_or_default(),
                name: on.name.clone().unwrap_or_default(),
                uid: on.uid.clone().unwrap_or_default(),
            }),
            ..e.facts.clone()
        };
        self.escalations.signal(Signal {
            incident: e.incident.clone(),
            at_ms: auto_agent_shared::clock::now_ms(),
            kind,
            note: note.to_owned(),
            facts,
            routes: e.routes.clone(),
        });
    }

    fn show(
        &self,
        policy: &PolicyRef,
        subject: &Subject,
        kind: ActionKind,
        outcome: ActionOutcome,
        reason: &str,
        message: &str,
    ) {
        if let Some(key) = &subject.incident {
            self.incidents.outcome(
                key,
                OutcomeView {
                    outcome: format!("{outcome:?}"),
                    reason: reason.to_owned(),
                    action: kind.as_str().to_owned(),
                    message: message.to_owned(),
                    at_ms: auto_agent_shared::clock::now_ms(),
                },
            );
        }
        self.recent.record(
            policy,
            &Entry {
                kind,
                outcome,
                target: &subject.target,
                reason,
                message,
            },
        );
    }
}
