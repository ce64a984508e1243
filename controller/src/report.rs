//! The reconcile stage for one incident change, as named steps:
//! gather (workload, policy, fresh facts, the ledger) -> decide (pure, engine) -> act (fenced,
//! after reserving the budget in the ledger) -> report (an Event on the target for every action and
//! refusal, metrics, policy status). Dry-run runs the same steps and stops before acting.

use auto_agent_shared::clock::now_ms;
use std::sync::Arc;

use auto_agent_engine::decide::{
    self, ActionKind, ActionRecord, Decision, Input, Plan, Refusal, workload_target,
};
use auto_agent_engine::{Finding, IncidentKey, Observed};
use auto_agent_shared::crd::{ActionOutcome, ActionType};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::act::Executor;
use crate::gather;
use crate::ledger::Ledger;
use crate::metrics::ControllerMetrics;
use crate::pipeline::Change;
use crate::policies::{PolicyEntry, PolicyIndex, policy_view};
use crate::recent::RecentActions;
use crate::workloads::WorkloadCache;

pub struct Reporter {
    pub client: Client,
    pub events: crate::events::EventSink,
    pub policies: PolicyIndex,
    pub workloads: Arc<WorkloadCache>,
    pub metrics: ControllerMetrics,
    pub ledger: Ledger,
    pub executor: Executor,
    pub recent: RecentActions,
    pub cluster_budgets: Vec<decide::BudgetLimit>,
    pub nodes: crate::nodes::NodeRemediator,
    pub registry: crate::registry::RegistryClient,
    pub bundle_defaults: crate::bundle::BundleDefaults,
    pub features: crate::features::Features,
}

fn pod_ref(f: &Finding) -> Option<ObjectReference> {
    let pod = f.pod.as_ref()?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    })
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    }
}

pub fn action_type(kind: ActionKind) -> ActionType {
    match kind {
        ActionKind::RestartPod => ActionType::RestartPod,
        ActionKind::BumpMemory => ActionType::BumpMemory,
        ActionKind::MirrorImage => ActionType::MirrorImage,
        ActionKind::EvictPod => ActionType::EvictPod,
        ActionKind::CordonNode => ActionType::CordonNode,
        ActionKind::UncordonNode => ActionType::UncordonNode,
        ActionKind::ScaleUp => ActionType::ScaleUp,
        ActionKind::ScaleDown => ActionType::ScaleDown,
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

impl Reporter {
    pub async fn run(self, mut changes: mpsc::Receiver<Change>, stop: CancellationToken) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = stop.cancelled() => None,
            };
            let Some(change) = change else { return };
            self.handle(change).await;
        }
    }

    async fn handle(&self, change: Change) {
        let Change {
            finding,
            observed,
            received,
        } = change;
        let kind = finding.kind.as_str();
        let (namespace, workload) = match (&finding.pod, &finding.owner) {
            (Some(p), Some(o)) => (p.namespace.clone(), o.name.clone()),
            (Some(p), None) => (p.namespace.clone(), p.name.clone()),
            (None, _) => (String::new(), finding.node.clone()),
        };
        let key = match &observed {
            Observed::Opened(key) | Observed::Reopened(key) => {
                self.metrics
                    .incidents
                    .with_label_values(&[kind, &namespace, &workload])
                    .inc();
                key.clone()
            }
            Observed::Repeated(key) => key.clone(),
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
                return;
            }
            Observed::ClearedUnknown(_) | Observed::Duplicate => return,
        };
        let first = matches!(observed, Observed::Opened(_) | Observed::Reopened(_));
        if finding.kind.is_node() {
            if first {
                self.nodes.handle(&finding, &key).await;
            }
            return;
        }
        let (target, policy) = self.gather_policy(&finding).await;
        let Some(target) = target else { return };
        let Some(entry) = policy else {
            if first {
                self.metrics
                    .decisions
                    .with_label_values(&["refused", "NoPolicy"])
                    .inc();
                let note = format!(
                    "{kind} incident {key}: no AutoRemediationPolicy selects this workload; reported only"
                );
                self.events
                    .publish(&target, EventType::Normal, "NoPolicy", note)
                    .await;
            }
            return;
        };
        self.decide_and_act(&finding, &key, &entry, &target, received)
            .await;
    }

    /// The object to report on (workload, else pod) and the first usable policy selecting it.
    async fn gather_policy(&self, f: &Finding) -> (Option<ObjectReference>, Option<PolicyEntry>) {
        let Some(pod) = &f.pod else {
            return (None, None);
        };
        let (kind, name) = f.owner.as_ref().map_or(("Pod", pod.name.as_str()), |o| {
            (o.kind.as_str(), o.name.as_str())
        });
        let workload = match self.workloads.get(&pod.namespace, kind, name).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, kind, name, "Reading the workload failed");
                None
            }
        };
        let Some(workload) = workload else {
            return (pod_ref(f), None);
        };
        let policy = self
            .policies
            .in_namespace(&pod.namespace)
            .into_iter()
            .find(|p| p.selects(&workload.pod_labels));
        (Some(workload.reference), policy)
    }

    async fn decide_and_act(
        &self,
        f: &Finding,
        key: &IncidentKey,
        entry: &PolicyEntry,
        target: &ObjectReference,
        received: std::time::Instant,
    ) {
        let Some(view) = policy_view(entry) else {
            return;
        };
        let policy_id = format!("{}/{}", entry.namespace, entry.name);
        let workload = workload_target(f);
        let (namespace, workload_name) = (
            f.pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            f.owner.as_ref().map_or_else(
                || f.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                |o| o.name.clone(),
            ),
        );
        for _attempt in 0..3 {
            let mirror = view.image_mirror.as_deref().map(|m| (m, &self.registry));
            let (facts, _) = match gather::facts(&self.client, f, mirror).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Gathering facts failed; no decision");
                    return;
                }
            };
            let (history, version) = match self.ledger.load().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the action ledger failed; no decision");
                    return;
                }
            };
            let now = now_ms();
            let decision = decide::decide(&Input {
                incident: key,
                finding: f,
                policy: Some(&view),
                facts: &facts,
                history: &history,
                cluster_budgets: &self.cluster_budgets,
                now_ms: now,
            });
            self.metrics
                .decision_latency
                .with_label_values(&[f.kind.as_str()])
                .observe(received.elapsed().as_secs_f64());
            let plan = match decision {
                Decision::Refuse(refusal) => {
                    return self
                        .refused(f, key, entry, target, &workload, refusal)
                        .await;
                }
                Decision::Act(plan) => plan,
            };
            if plan.dry_run {
                return self.dry_run(entry, target, &workload, &plan).await;
            }
            let Some(action) = plan.actions.first() else {
                return;
            };
            if !self.features.allows(action.kind) {
                let feature = crate::features::Features::of(action.kind);
                return self
                    .refused(
                        f,
                        key,
                        entry,
                        target,
                        &workload,
                        Refusal {
                            reason: decide::RefusalReason::FeatureDisabled,
                            message: format!(
                                "{} is planned, but this installation has features.{feature} off (no RBAC for it)",
                                action.kind.as_str()
                            ),
                        },
                    )
                    .await;
            }
            let record = ActionRecord {
                at_ms: now,
                action: action.kind,
                target: workload.clone(),
                policy: policy_id.clone(),
                incident: key.as_str().to_owned(),
            };
            let bundle = self.bundle_context(f, entry, &facts, &history, &workload);
            match self.ledger.reserve(history, version, record, now).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Reserving the action in the ledger failed; not acting");
                    self.metrics
                        .action_errors
                        .with_label_values(&["ledger"])
                        .inc();
                    return;
                }
            }
            match self.executor.execute(&plan, action, f, &bundle).await {
                Ok(done) => {
                    self.metrics
                        .actions
                        .with_label_values(&[action.kind.as_str(), &namespace, &workload_name])
                        .inc();
                    self.metrics
                        .decisions
                        .with_label_values(&["executed", action.kind.as_str()])
                        .inc();
                    let note = format!("{} (policy {})", done.note, entry.name);
                    tracing::info!(incident = %key, action = action.kind.as_str(), policy = %entry.name, "{note}");
                    self.recent.record(
                        entry,
                        action.kind,
                        ActionOutcome::Executed,
                        &action.target,
                        done_reason(action.kind),
                        &note,
                    );
                    self.events
                        .publish(target, EventType::Normal, done_reason(action.kind), note)
                        .await;
                }
                Err(e) => {
                    self.metrics
                        .action_errors
                        .with_label_values(&[e.category()])
                        .inc();
                    self.metrics
                        .decisions
                        .with_label_values(&["failed", e.category()])
                        .inc();
                    let note = format!(
                        "{} failed: {e} (policy {})",
                        action.kind.as_str(),
                        entry.name
                    );
                    tracing::warn!(incident = %key, "{note}");
                    self.recent.record(
                        entry,
                        action.kind,
                        ActionOutcome::Failed,
                        &action.target,
                        "ActionFailed",
                        &note,
                    );
                    self.events
                        .publish(target, EventType::Warning, "ActionFailed", note)
                        .await;
                }
            }
            return;
        }
        tracing::warn!(incident = %key, "The ledger kept changing; giving up on this finding");
    }

    fn bundle_context(
        &self,
        f: &Finding,
        entry: &PolicyEntry,
        facts: &decide::Facts,
        history: &decide::History,
        workload: &str,
    ) -> crate::bundle::BundleContext {
        let log_bundle = entry.spec.as_ref().and_then(|s| s.log_bundle.as_ref());
        crate::bundle::BundleContext {
            destination: crate::bundle::destination_for(log_bundle, &self.bundle_defaults),
            caps: crate::bundle::caps_for(log_bundle),
            policy: auto_agent_evidence::document::PolicyRef {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
            },
            owner: f
                .owner
                .as_ref()
                .map(|o| auto_agent_evidence::document::OwnerSummary {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    desired_replicas: Some(facts.desired_replicas),
                    ready_replicas: Some(facts.ready_replicas),
                }),
            taken: crate::bundle::taken_on(&history.records, workload),
        }
    }

    async fn refused(
        &self,
        f: &Finding,
        key: &IncidentKey,
        entry: &PolicyEntry,
        target: &ObjectReference,
        workload: &str,
        refusal: Refusal,
    ) {
        let reason = refusal.reason.as_str();
        self.metrics
            .decisions
            .with_label_values(&["refused", reason])
            .inc();
        let escalates = refusal.reason.escalates();
        let note = format!(
            "{} incident {key}: not acting ({reason}): {}; policy {}{}",
            f.kind.as_str(),
            refusal.message,
            entry.name,
            if escalates {
                "; escalating for a human"
            } else {
                ""
            }
        );
        tracing::info!(incident = %key, reason, policy = %entry.name, "{note}");
        let kind = match f.kind {
            auto_agent_engine::FindingKind::OomKilled => ActionKind::BumpMemory,
            auto_agent_engine::FindingKind::ImagePullBackOff => ActionKind::MirrorImage,
            _ => ActionKind::RestartPod,
        };
        self.recent
            .record(entry, kind, ActionOutcome::Refused, workload, reason, &note);
        self.events
            .publish(
                target,
                if escalates {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason,
                note,
            )
            .await;
    }

    async fn dry_run(
        &self,
        entry: &PolicyEntry,
        target: &ObjectReference,
        workload: &str,
        plan: &Plan,
    ) {
        for action in &plan.actions {
            self.metrics
                .decisions
                .with_label_values(&["dry_run", action.kind.as_str()])
                .inc();
            let note = format!(
                "dry-run: would {} {} because {} (incident {}, policy {}); nothing changed",
                action.kind.as_str(),
                action.target,
                action.reason,
                plan.incident,
                entry.name
            );
            tracing::info!(policy = %entry.name, "{note}");
            self.recent.record(
                entry,
                action.kind,
                ActionOutcome::DryRun,
                workload,
                "DryRun",
                &note,
            );
            self.events
                .publish(target, EventType::Normal, "DryRun", note)
                .await;
        }
    }
}
