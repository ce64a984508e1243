//! Node pressure remediation, governed by NodeRemediationPolicy, in the shared stages: gather (the
//! node, the policy's nodes, the pods on this one node) -> decide (engine) -> reserve (ledger) ->
//! act (cordon, then evictions through the Eviction API only) -> report (one outcome writer, on the
//! policy's status too). A 429 (a PodDisruptionBudget forbids it now) is retried every 5 s until the
//! policy's drain timeout and never replaced by a DELETE. A sweep uncordons nodes the agent
//! cordoned once their pressure has been clear for the policy's period; the cordon is marked on
//! the Node itself, so the sweep works the same after a leader change.
//!
//! Listing pods happens only here, for one node under pressure (`spec.nodeName=<node>`), like a
//! drain does; the controller never lists all pods.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auto_agent_engine::decide::node::{
    NodeFacts, NodeInput, NodePolicyView, PodCandidate, decide_node, should_uncordon,
};
use auto_agent_engine::decide::{
    ActionKind, ActionRecord, AllowedActions, Decision, Plan, PlannedAction, PodTarget,
};
use auto_agent_engine::{Finding, IncidentKey};
use auto_agent_shared::keys::CORDONED_BY_ANNOTATION as CORDONED_BY;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::ListParams;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::act::Executor;
use crate::act::node::Eviction;
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;
use crate::policies::index::PolicyIndex;
use crate::policies::node_index::{NodePolicyIndex, UsableNodePolicy};
use crate::policies::recent::PolicyRef;
use crate::reconcile::Next;
use crate::reconcile::ledger::Ledger;
use crate::reconcile::outcome::{Outcomes, Scope, Subject};
use crate::reconcile::reserve::{Settled, Verdict, decide_and_reserve};

/// How often a blocked eviction is tried again.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct NodeReconciler {
    pub client: Client,
    pub outcomes: Outcomes,
    pub policies: PolicyIndex,
    pub node_policies: NodePolicyIndex,
    pub ledger: Ledger,
    pub executor: Arc<Executor>,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
    pub allowed: AllowedActions,
    /// The sweep has listed every Node once (later passes list only the labelled ones).
    pub swept_all: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for NodeReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeReconciler")
    }
}

/// Whether a node shows a watched condition (`NotReady`: its Ready condition is not True).
fn bad(node: &Node, condition: &str) -> bool {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let find = |t: &str| {
        conds
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map(|c| c.status.as_str())
    };
    match condition {
        "NotReady" => find("Ready") != Some("True"),
        other => find(other) == Some("True"),
    }
}

fn node_subject(node_ref: &ObjectReference, node: &str) -> Subject {
    Subject {
        event_on: node_ref.clone(),
        scope: Scope::Node(node.to_owned()),
        target: format!("Node//{node}"),
        escalation: None,
        incident: None,
    }
}

/// A node incident's subject, escalating along its policy's routes.
fn escalating_node_subject(
    node_ref: &ObjectReference,
    f: &Finding,
    key: &IncidentKey,
    policy: &UsableNodePolicy,
) -> Subject {
    Subject {
        escalation: crate::escalate::escalating(
            key.as_str(),
            policy.escalation.as_ref(),
            auto_agent_escalation::record::Facts {
                target: format!("Node/{}", f.node),
                namespace: None,
                policy: policy.view.name.clone(),
                failure: f.kind.as_str().to_owned(),
                evidence: None,
                log_tail: Vec::new(),
                subject: None,
            },
        ),
        incident: Some(key.as_str().to_owned()),
        ..node_subject(node_ref, &f.node)
    }
}

/// What the decision on the ledger came to.
enum Step {
    Refused(auto_agent_engine::decide::Refusal),
    DryRun(Plan),
    Act(Plan),
}

impl NodeReconciler {
    /// Handles a node incident that opened or reopened.
    /// Decides and acts on a node incident; `Next::Failed` when the API or the ledger failed, so
    /// the dispatcher tries again instead of waiting for the next finding.
    pub async fn handle(&self, f: &Finding, key: &IncidentKey) -> Next {
        match self.try_handle(f, key).await {
            Ok(next) => next,
            Err(e) => {
                self.metrics
                    .action_errors
                    .with_label_values(&["node"])
                    .inc();
                tracing::warn!(node = %f.node, error = %e, "Node remediation failed; trying again");
                Next::Failed
            }
        }
    }

    async fn try_handle(&self, f: &Finding, key: &IncidentKey) -> Result<Next, kube::Error> {
        let condition = f.kind.as_str();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Some(node) = nodes.get_opt(&f.node).await? else {
            return Ok(Next::Done);
        };
        let node_ref = node.object_ref(&());
        let policy = self.node_policies.usable().into_iter().find(|p| {
            p.selector.matches(node.labels()) && p.view.conditions.iter().any(|c| c == condition)
        });
        let Some(policy) = policy else {
            let note = format!(
                "{condition} on node {}: no NodeRemediationPolicy acts on it; reported only",
                f.node
            );
            self.outcomes
                .unowned(&node_ref, EventType::Warning, "NoPolicy", note)
                .await;
            return Ok(Next::Done);
        };
        // Gather once; a ledger conflict only re-decides.
        let all = nodes.list(&ListParams::default()).await?;
        let selected: Vec<&Node> = all
            .items
            .iter()
            .filter(|n| policy.selector.matches(n.labels()))
            .collect();
        let facts = NodeFacts {
            node: f.node.clone(),
            condition_holds: bad(&node, condition),
            selected_nodes: selected.len() as u32,
            unhealthy_nodes: selected
                .iter()
                .filter(|n| policy.view.conditions.iter().any(|c| bad(n, c)))
                .count() as u32,
            cordoned_by_agent: selected
                .iter()
                .filter(|n| n.name_any() != f.node && n.annotations().contains_key(CORDONED_BY))
                .count() as u32,
            already_cordoned: node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true),
        };
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", f.node)))
            .await?;
        let candidates: Vec<PodCandidate> = pods.items.iter().map(|p| self.candidate(p)).collect();
        // Metric labels of evicted pods: their owning workload, never the pod.
        let owners: HashMap<String, String> = pods
            .items
            .iter()
            .map(|p| {
                let owner = crate::cluster::facts::owning_workload(p)
                    .map(|(_, name)| name)
                    .unwrap_or_default();
                (p.metadata.uid.clone().unwrap_or_default(), owner)
            })
            .collect();
        let policy_ref = PolicyRef::Cluster {
            name: policy.view.name.clone(),
        };
        let mut skipped = Vec::new();
        let settled = decide_and_reserve(&self.ledger, |history, now| {
            let (decision, left_out) = decide_node(&NodeInput {
                incident: key,
                condition,
                policy: Some(&policy.view),
                facts: &facts,
                pods: &candidates,
                history,
                allowed: &self.allowed,
                now_ms: now,
            });
            skipped = left_out;
            match decision {
                // Node actions change no workload spec: nothing is proposed for them.
                Decision::Refuse(r) | Decision::Propose(_, r) => Verdict::Stop(Step::Refused(r)),
                Decision::Act(plan) if plan.dry_run => Verdict::Stop(Step::DryRun(plan)),
                Decision::Act(plan) => {
                    let records = plan
                        .actions
                        .iter()
                        .map(|a| ActionRecord {
                            at_ms: now,
                            action: a.kind(),
                            target: format!("Node//{}", f.node),
                            namespace: String::new(),
                            policy: policy.view.name.clone(),
                            incident: key.as_str().to_owned(),
                        })
                        .collect();
                    Verdict::Reserve(records, Step::Act(plan))
                }
            }
        })
        .await;
        for (pod, reason) in &skipped {
            tracing::info!(pod = %pod, reason = reason.as_str(), "Not evicting");
        }
        let skipped_note = if skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; kept: {}",
                skipped
                    .iter()
                    .map(|(p, r)| format!("{p} ({})", r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let subject = escalating_node_subject(&node_ref, f, key, &policy);
        let step = match settled {
            Ok(Settled::Stopped(step) | Settled::Reserved(step)) => step,
            Err(e) => {
                tracing::warn!(error = %e, "No node decision: the action ledger could not be used; trying again");
                self.metrics
                    .action_errors
                    .with_label_values(&[e.category()])
                    .inc();
                return Ok(Next::Failed);
            }
        };
        match step {
            Step::Refused(r) => {
                let note = format!(
                    "{condition} on node {}: not acting ({}): {}",
                    f.node,
                    r.reason.as_str(),
                    r.message
                );
                self.outcomes
                    .refused(
                        &policy_ref,
                        &subject,
                        ActionKind::CordonNode,
                        r.reason.as_str(),
                        r.reason.escalates(),
                        note,
                    )
                    .await;
            }
            Step::DryRun(plan) => {
                let list = plan
                    .actions
                    .iter()
                    .map(|a| format!("{} {}", a.kind().as_str(), a.target()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let kind = plan
                    .actions
                    .first()
                    .map_or(ActionKind::CordonNode, PlannedAction::kind);
                self.outcomes
                    .dry_run(&policy_ref, &subject, kind, format!("{list}{skipped_note}"))
                    .await;
            }
            Step::Act(plan) => {
                tracing::info!(node = %f.node, actions = plan.actions.len(), "Executing the node plan");
                for action in &plan.actions {
                    match action {
                        PlannedAction::CordonNode { node, reason } => {
                            let reason = format!("{reason}{skipped_note}");
                            match self.executor.cordon(node, &policy.view.name, &reason).await {
                                Ok(done) => {
                                    self.outcomes
                                        .executed(
                                            &policy_ref,
                                            &subject,
                                            ActionKind::CordonNode,
                                            done.note,
                                        )
                                        .await;
                                }
                                Err(e) => {
                                    self.outcomes
                                        .failed(
                                            &policy_ref,
                                            &subject,
                                            ActionKind::CordonNode,
                                            e.category(),
                                            e.to_string(),
                                        )
                                        .await;
                                    // Evicting from a node that stays schedulable would only
                                    // reschedule there.
                                    return Ok(Next::Done);
                                }
                            }
                        }
                        PlannedAction::EvictPod { pod, .. } => {
                            let workload = owners.get(&pod.uid).cloned().unwrap_or_default();
                            self.spawn_eviction(
                                pod.clone(),
                                workload,
                                policy.clone(),
                                policy_ref.clone(),
                                condition.to_owned(),
                            );
                        }
                        other => {
                            tracing::warn!(
                                action = other.kind().as_str(),
                                "Not a node action; skipped"
                            );
                        }
                    }
                }
            }
        }
        Ok(Next::Done)
    }

    fn candidate(&self, p: &Pod) -> PodCandidate {
        let labels = p.labels().clone();
        let ns = p.namespace().unwrap_or_default();
        let allows = self.policies.in_namespace(&ns).into_iter().any(|e| {
            e.selects(&labels)
                && e.spec
                    .as_ref()
                    .is_some_and(|s| s.actions.evict_on_node_pressure)
        });
        PodCandidate {
            namespace: ns,
            name: p.name_any(),
            uid: p.metadata.uid.clone().unwrap_or_default(),
            daemonset: p
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "DaemonSet"),
            mirror: p
                .annotations()
                .contains_key(auto_agent_shared::keys::MIRROR_POD_ANNOTATION),
            priority: p.spec.as_ref().and_then(|s| s.priority),
            annotations: p.annotations().clone(),
            policy_allows_eviction: allows,
            terminal: matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
        }
    }

    /// Evicts in the background: a PodDisruptionBudget refusal (429) is retried every 5 s until the
    /// policy's drain timeout, and never turned into a DELETE.
    fn spawn_eviction(
        &self,
        pod: PodTarget,
        workload: String,
        policy: UsableNodePolicy,
        policy_ref: PolicyRef,
        condition: String,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let view: &NodePolicyView = &policy.view;
            let deadline = std::time::Instant::now()
                + Duration::from_millis(view.drain_timeout_ms.max(0) as u64);
            let subject = Subject {
                event_on: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(pod.namespace.clone()),
                    name: Some(pod.name.clone()),
                    uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
                    ..Default::default()
                },
                scope: Scope::Workload {
                    namespace: pod.namespace.clone(),
                    workload,
                },
                target: pod.to_string(),
                escalation: None,
                incident: None,
            };
            let mut reported_block = false;
            loop {
                match this.executor.evict_once(&pod).await {
                    Ok(Eviction::Evicted) => {
                        let note = format!(
                            "evicted {}/{}: {condition} on its node",
                            pod.namespace, pod.name
                        );
                        this.outcomes
                            .executed(&policy_ref, &subject, ActionKind::EvictPod, note)
                            .await;
                        return;
                    }
                    Ok(Eviction::Gone) => return,
                    Ok(Eviction::Blocked) => {
                        tracing::info!(pod = %pod, "Eviction blocked by a PodDisruptionBudget; retrying later");
                        this.metrics
                            .decisions
                            .with_label_values(&["blocked", "PodDisruptionBudget"])
                            .inc();
                        if !reported_block {
                            reported_block = true;
                            let note = format!(
                                "a PodDisruptionBudget forbids evicting {}/{} now; retrying, never deleting (policy {})",
                                pod.namespace, pod.name, view.name
                            );
                            this.outcomes
                                .events
                                .publish(
                                    &subject.event_on,
                                    EventType::Warning,
                                    "EvictionBlocked",
                                    note,
                                )
                                .await;
                        }
                    }
                    Err(crate::act::ActError::Fenced) => {
                        tracing::warn!(pod = %pod, "Not the leader any more; eviction dropped");
                        return;
                    }
                    Err(e) => {
                        this.metrics
                            .action_errors
                            .with_label_values(&["evict"])
                            .inc();
                        tracing::warn!(pod = %pod, error = %e, "Eviction failed; retrying");
                    }
                }
                if std::time::Instant::now() >= deadline {
                    let note = format!(
                        "{}/{} could not be evicted within the drain timeout",
                        pod.namespace, pod.name
                    );
                    this.outcomes
                        .refused(
                            &policy_ref,
                            &subject,
                            ActionKind::EvictPod,
                            "DrainTimeout",
                            true,
                            note,
                        )
                        .await;
                    return;
                }
                tokio::time::sleep(EVICTION_RETRY).await;
            }
        });
    }

    /// Uncordons the nodes this agent cordoned whose pressure has been clear long enough. Lists
    /// only the Nodes labelled as cordoned by the agent, except on its first pass (Nodes cordoned
    /// by a version that only annotated them).
    pub async fn sweep(&self) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let all_once = !self.swept_all.load(std::sync::atomic::Ordering::Relaxed);
        let params = if all_once {
            ListParams::default()
        } else {
            ListParams::default().labels(auto_agent_shared::keys::CORDONED_LABEL)
        };
        let listed = nodes.list(&params).await?;
        self.swept_all
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for node in listed {
            let Some(policy_name) = node.annotations().get(CORDONED_BY).cloned() else {
                continue;
            };
            let Some(policy) = self.node_policies.get(&policy_name) else {
                continue;
            };
            let watched = &policy.view.conditions;
            let pressure_now = watched.iter().any(|c| bad(&node, c));
            let cleared_since = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| {
                    watched
                        .iter()
                        .any(|w| w == &c.type_ || (w == "NotReady" && c.type_ == "Ready"))
                })
                .filter_map(|c| {
                    c.last_transition_time
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                })
                .max();
            let now = auto_agent_shared::clock::now_ms();
            if !should_uncordon(&policy.view, pressure_now, cleared_since, now) {
                continue;
            }
            let name = node.name_any();
            let subject = node_subject(&node.object_ref(&()), &name);
            let policy_ref = PolicyRef::Cluster {
                name: policy_name.clone(),
            };
            let reason = format!(
                "pressure clear for {} s",
                policy.view.uncordon_after_ms / 1000
            );
            match self.executor.uncordon(&name, &reason).await {
                Ok(done) => {
                    self.outcomes
                        .executed(&policy_ref, &subject, ActionKind::UncordonNode, done.note)
                        .await;
                }
                Err(crate::act::ActError::Fenced) => return Ok(()),
                Err(e) => {
                    self.outcomes
                        .failed(
                            &policy_ref,
                            &subject,
                            ActionKind::UncordonNode,
                            e.category(),
                            e.to_string(),
                        )
                        .await;
                }
            }
        }
        Ok(())
    }

    pub async fn run_sweeper(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = stop.cancelled() => return,
            }
            if self.leadership.is_leader()
                && let Err(e) = self.sweep().await
            {
                tracing::warn!(error = %e, "Uncordon sweep failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::recent::RecentActions;
    use crate::testing::{FakeApi, FakeLeader, keeper, metrics};
    use auto_agent_engine::{FindingKind, Transition};
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    const NODE_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
    const POD_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";
    const LEDGER: &str = "/api/v1/namespaces/auto-agent/configmaps";
    const EVICTION: &str = "/api/v1/namespaces/prod/pods/batch-7c9-x1/eviction";

    fn node(name: &str, pressure: bool, cordoned_by: Option<&str>, cleared_at: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"pool": "a"},
                            "annotations": cordoned_by.map_or(json!({}), |p| json!({"autoagent.io/cordoned-by": p}))},
               "spec": {"unschedulable": cordoned_by.is_some()},
               "status": {"conditions": [
                   {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                   {"type": "MemoryPressure", "status": if pressure {"True"} else {"False"},
                    "lastTransitionTime": cleared_at}]}})
    }

    struct Fixture {
        api: FakeApi,
        reconciler: NodeReconciler,
        recent: RecentActions,
        _leader: FakeLeader,
    }

    /// node-a is under memory pressure; node-b is cordoned by the agent when `b_cordoned`. One pod
    /// of Deployment `batch` on node-a, whose policy allows eviction.
    fn fixture(policy: Option<Value>, b_cordoned: bool) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = FakeApi::default();
        let b = node(
            "node-b",
            false,
            b_cordoned.then_some("pressure"),
            "2026-01-01T00:00:00Z",
        );
        let a = node("node-a", true, None, "2026-01-01T00:00:00Z");
        api.on("GET", "/api/v1/nodes/node-a", vec![(200, a.clone())])
            .on(
                "GET",
                "/api/v1/nodes",
                vec![(200, json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {},
                                  "items": [a, b, node("node-c", false, None, "2026-01-01T00:00:00Z")]}))],
            )
            .on(
                "GET",
                "/api/v1/pods",
                vec![(200, json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                    {"metadata": {"name": "batch-7c9-x1", "namespace": "prod", "uid": "p1",
                                  "labels": {"app": "batch", "pod-template-hash": "7c9"},
                                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                      "name": "batch-7c9", "uid": "rs", "controller": true}]},
                     "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
                     "status": {"phase": "Running"}}]}))],
            )
            .on("GET", &format!("{LEDGER}/ledger"), vec![FakeApi::not_found(404)])
            .on(
                "POST",
                LEDGER,
                vec![crate::testing::ledger_created()],
            )
            .on("PATCH", "/api/v1/nodes/*", vec![(200, node("node-a", true, Some("pressure"), "2026-01-01T00:00:00Z"))])
            .on("POST", EVICTION, vec![(201, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}))])
            .on("POST", NODE_EVENTS, vec![crate::testing::event_created()])
            .on("POST", POD_EVENTS, vec![crate::testing::event_created()]);
        let metrics = metrics();
        let leader = FakeLeader::new(&metrics, true);
        let client = api.client();
        let node_policies = NodePolicyIndex::default();
        if let Some(p) = policy {
            node_policies.insert(p);
        }
        let policies = PolicyIndex::default();
        policies.insert(
            json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                               "metadata": {"name": "batch", "namespace": "prod"},
                               "spec": {"targetSelector": {"matchLabels": {"app": "batch"}},
                                        "actions": {"evictOnNodePressure": true}}}),
        );
        let recent = RecentActions::new(Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (evidence, _dir) = keeper("node-reconcile");
        let events = crate::testing::event_sink(&client, &leader.leadership, &metrics);
        let reconciler = NodeReconciler {
            swept_all: Arc::default(),
            client: client.clone(),
            outcomes: Outcomes {
                events,
                metrics: metrics.clone(),
                recent: recent.clone(),
                escalations: crate::escalate::Escalations::off(),
                proposals: crate::gitops::Proposals::off(),
                incidents: Default::default(),
            },
            policies,
            node_policies,
            ledger: Ledger::fake(&client, &leader.leadership, &metrics),
            executor: Arc::new(Executor {
                client: client.clone(),
                eviction_client: client,
                leadership: leader.leadership.clone(),
                evidence,
            }),
            leadership: leader.leadership.clone(),
            metrics,
            allowed: AllowedActions::all(),
        };
        Fixture {
            api,
            reconciler,
            recent,
            _leader: leader,
        }
    }

    fn nrp(extra: Value) -> Value {
        let mut spec = json!({"nodeSelector": {"matchLabels": {"pool": "a"}},
                              "conditions": ["MemoryPressure"], "cordon": true, "evict": true,
                              "uncordonAfterSeconds": 60});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "NodeRemediationPolicy",
               "metadata": {"name": "pressure", "generation": 1}, "spec": spec})
    }

    fn pressure_finding() -> Finding {
        let mut f = crate::testing::crash_finding();
        f.kind = FindingKind::NodeMemoryPressure;
        f.transition = Transition::Started;
        f.pod = None;
        f.owner = None;
        f.container = None;
        f
    }

    impl Fixture {
        async fn handle(&self) {
            let f = pressure_finding();
            let key = IncidentKey::for_finding(&f).unwrap();
            self.reconciler.handle(&f, &key).await;
        }

        fn reasons(&self, path: &str) -> Vec<String> {
            self.api
                .seen_with("POST", path)
                .iter()
                .map(|s| s.body["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        }

        fn cluster_policy_outcomes(&self) -> Vec<(String, auto_agent_shared::crd::ActionOutcome)> {
            self.recent
                .get(&PolicyRef::Cluster {
                    name: "pressure".into(),
                })
                .into_iter()
                .map(|r| (r.reason, r.outcome))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_pressured_node_is_cordoned_then_its_evictable_pod_evicted_with_bounded_labels() {
        let fx = fixture(Some(nrp(json!({}))), false);
        fx.handle().await;
        let patch = &fx.api.seen_with("PATCH", "/api/v1/nodes/node-a")[0].body;
        assert_eq!(
            patch["metadata"]["annotations"]["autoagent.io/cordoned-by"],
            "pressure"
        );
        assert_eq!(fx.reasons(NODE_EVENTS), ["CordonedNode"]);
        // The eviction runs in the background, with its own retry schedule.
        for _ in 0..100 {
            if !fx.reasons(POD_EVENTS).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fx.api.seen_with("POST", EVICTION).len(), 1);
        assert_eq!(fx.reasons(POD_EVENTS), ["EvictedPod"]);
        assert!(fx.api.seen_with("DELETE", "").is_empty(), "never a DELETE");
        let m = &fx.reconciler.metrics;
        assert_eq!(
            m.node_actions
                .with_label_values(&["CordonNode", "node-a"])
                .get(),
            1
        );
        assert_eq!(
            m.actions
                .with_label_values(&["EvictPod", "prod", "batch"])
                .get(),
            1
        );
        assert_eq!(
            m.actions
                .with_label_values(&["EvictPod", "prod", "batch-7c9-x1"])
                .get(),
            0
        );
        let outcomes = fx.cluster_policy_outcomes();
        assert!(
            outcomes.contains(&(
                "CordonedNode".into(),
                auto_agent_shared::crd::ActionOutcome::Executed
            )),
            "{outcomes:?}"
        );
        assert_eq!(
            fx.api.seen_with("POST", LEDGER).len(),
            1,
            "both actions reserved in one write"
        );
    }

    #[tokio::test]
    async fn no_policy_reports_and_changes_nothing() {
        let fx = fixture(None, false);
        fx.handle().await;
        assert_eq!(fx.reasons(NODE_EVENTS), ["NoPolicy"]);
        assert!(fx.api.seen_with("PATCH", "").is_empty());
        assert!(fx.api.seen_with("POST", LEDGER).is_empty());
    }

    #[tokio::test]
    async fn max_unavailable_refuses_a_second_cordon_and_escalates() {
        let fx = fixture(Some(nrp(json!({"maxUnavailableNodes": 1}))), true);
        fx.handle().await;
        assert_eq!(fx.reasons(NODE_EVENTS), ["MaxUnavailable"]);
        let event = &fx.api.seen_with("POST", NODE_EVENTS)[0].body;
        assert_eq!(event["type"], "Warning");
        assert!(fx.api.seen_with("PATCH", "").is_empty());
        assert!(fx.api.seen_with("POST", LEDGER).is_empty());
        assert_eq!(
            fx.cluster_policy_outcomes(),
            [(
                "MaxUnavailable".to_owned(),
                auto_agent_shared::crd::ActionOutcome::Refused
            )]
        );
    }

    #[tokio::test]
    async fn dry_run_names_the_plan_and_writes_nothing() {
        let fx = fixture(Some(nrp(json!({"dryRun": true}))), false);
        fx.handle().await;
        assert_eq!(fx.reasons(NODE_EVENTS), ["DryRun"]);
        let note = fx.api.seen_with("POST", NODE_EVENTS)[0].body["note"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            note.contains("CordonNode Node//node-a")
                && note.contains("EvictPod Pod/prod/batch-7c9-x1"),
            "{note}"
        );
        assert!(fx.api.seen_with("PATCH", "").is_empty());
        assert!(fx.api.seen_with("POST", EVICTION).is_empty());
        assert!(fx.api.seen_with("POST", LEDGER).is_empty());
    }

    #[tokio::test]
    async fn the_sweep_uncordons_only_what_it_cordoned_once_pressure_stayed_clear() {
        // node-b: cordoned by the agent, pressure clear since long ago. node-a: pressure now.
        let fx = fixture(Some(nrp(json!({}))), true);
        fx.reconciler.sweep().await.unwrap();
        let patches = fx.api.seen_with("PATCH", "/api/v1/nodes/");
        assert_eq!(patches.len(), 1, "{patches:?}");
        assert!(patches[0].uri.starts_with("/api/v1/nodes/node-b"));
        assert_eq!(patches[0].body["spec"]["unschedulable"], false);
        assert_eq!(
            patches[0].body["metadata"]["labels"][auto_agent_shared::keys::CORDONED_LABEL],
            serde_json::Value::Null,
            "the cordon label goes with the cordon"
        );
        assert_eq!(fx.reasons(NODE_EVENTS), ["UncordonedNode"]);
        // After its first pass the sweep lists only the Nodes labelled as cordoned by the agent.
        fx.reconciler.sweep().await.unwrap();
        let lists: Vec<String> = fx
            .api
            .seen_with("GET", "/api/v1/nodes")
            .into_iter()
            .map(|s| s.uri)
            .collect();
        assert_eq!(lists.len(), 2, "{lists:?}");
        assert!(!lists[0].contains("labelSelector"), "{lists:?}");
        assert!(
            lists[1].contains("labelSelector=autoagent.io%2Fcordoned"),
            "{lists:?}"
        );
    }
}
