//! Node pressure remediation, governed by NodeRemediationPolicy: gather (the node, the policy's
//! nodes, the pods on this one node), decide (engine), reserve in the ledger, act: cordon, then evict
//! through the Eviction API only. A 429 (a PodDisruptionBudget forbids it now) is retried later and
//! never replaced by a DELETE. A sweep uncordons nodes the agent cordoned once their pressure has
//! been clear for the policy's period; the cordon is marked on the Node itself, so the sweep works
//! the same after a leader change.
//!
//! Listing pods happens only here, for one node under pressure (`spec.nodeName=<node>`), like a
//! drain does; the controller never lists all pods.

use auto_agent_shared::clock::now_ms;
use std::time::Duration;

use auto_agent_engine::decide::node::{
    NodeFacts, NodePolicyView, PodCandidate, decide_node, should_uncordon,
};
use auto_agent_engine::decide::{ActionKind, ActionRecord, Decision};
use auto_agent_engine::{Finding, IncidentKey};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::leader::Leadership;
use crate::ledger::Ledger;
use crate::metrics::ControllerMetrics;
use crate::node_policies::NodePolicyIndex;
use crate::policies::PolicyIndex;

/// Marks a node the agent cordoned; the value is the NodeRemediationPolicy's name.
pub const CORDONED_BY: &str = "autoagent.io/cordoned-by";

#[derive(Clone)]
pub struct NodeRemediator {
    pub client: Client,
    pub events: crate::events::EventSink,
    pub policies: PolicyIndex,
    pub node_policies: NodePolicyIndex,
    pub ledger: Ledger,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
    pub features: crate::features::Features,
}

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

impl NodeRemediator {
    /// Handles a node incident that opened or reopened.
    pub async fn handle(&self, f: &Finding, key: &IncidentKey) {
        if let Err(e) = self.try_handle(f, key).await {
            self.metrics
                .action_errors
                .with_label_values(&["node"])
                .inc();
            tracing::warn!(node = %f.node, error = %e, "Node remediation failed");
        }
    }

    async fn try_handle(&self, f: &Finding, key: &IncidentKey) -> Result<(), kube::Error> {
        let condition = f.kind.as_str();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Some(node) = nodes.get_opt(&f.node).await? else {
            return Ok(());
        };
        let node_ref = node.object_ref(&());
        let policy = self.node_policies.all().into_iter().find(|p| {
            p.selector.matches(node.labels()) && p.view.conditions.iter().any(|c| c == condition)
        });
        let Some(policy) = policy else {
            self.metrics
                .decisions
                .with_label_values(&["refused", "NoPolicy"])
                .inc();
            self.events.publish(
                &node_ref,
                EventType::Warning,
                "NoPolicy",
                format!(
                    "{condition} on node {}: no NodeRemediationPolicy acts on it; reported only",
                    f.node
                ),
            )
            .await;
            return Ok(());
        };
        if !self.features.enabled("nodeRemediation") {
            self.metrics
                .decisions
                .with_label_values(&["refused", "FeatureDisabled"])
                .inc();
            let note = format!(
                "{condition} on node {}: policy {} would act, but this installation has features.nodeRemediation off; reported only",
                f.node, policy.view.name
            );
            self.events
                .publish(&node_ref, EventType::Warning, "FeatureDisabled", note)
                .await;
            return Ok(());
        }
        for _attempt in 0..3 {
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
            let candidates: Vec<PodCandidate> =
                pods.items.iter().map(|p| self.candidate(p)).collect();
            let (history, version) = match self.ledger.load().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the ledger failed; no node decision");
                    return Ok(());
                }
            };
            let now = now_ms();
            let (decision, skipped) = decide_node(
                key,
                condition,
                Some(&policy.view),
                &facts,
                &candidates,
                &history,
                now,
            );
            for (pod, reason) in &skipped {
                tracing::info!(pod = %pod, reason = reason.as_str(), "Not evicting");
            }
            let plan = match decision {
                Decision::Refuse(r) => {
                    self.metrics
                        .decisions
                        .with_label_values(&["refused", r.reason.as_str()])
                        .inc();
                    let escalates = r.reason.escalates()
                        || r.reason == auto_agent_engine::decide::RefusalReason::MaxUnavailable;
                    let note = format!(
                        "{condition} on node {}: not acting ({}): {}; policy {}",
                        f.node,
                        r.reason.as_str(),
                        r.message,
                        policy.view.name
                    );
                    self.events
                        .publish(
                            &node_ref,
                            if escalates {
                                EventType::Warning
                            } else {
                                EventType::Normal
                            },
                            r.reason.as_str(),
                            note,
                        )
                        .await;
                    return Ok(());
                }
                Decision::Act(plan) => plan,
            };
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
            if plan.dry_run {
                for a in &plan.actions {
                    self.metrics
                        .decisions
                        .with_label_values(&["dry_run", a.kind.as_str()])
                        .inc();
                }
                let list = plan
                    .actions
                    .iter()
                    .map(|a| format!("{} {}", a.kind.as_str(), a.target))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.events
                    .publish(
                        &node_ref,
                        EventType::Normal,
                        "DryRun",
                        format!(
                            "dry-run: would {list} (policy {}){skipped_note}; nothing changed",
                            policy.view.name
                        ),
                    )
                    .await;
                return Ok(());
            }
            let records = plan
                .actions
                .iter()
                .map(|a| ActionRecord {
                    at_ms: now,
                    action: a.kind,
                    target: format!("Node//{}", f.node),
                    policy: policy.view.name.clone(),
                    incident: key.as_str().to_owned(),
                })
                .collect();
            match self
                .ledger
                .reserve_all(history, version, records, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Reserving node actions failed; not acting");
                    return Ok(());
                }
            }
            tracing::info!(node = %f.node, actions = plan.actions.len(), "Executing the node plan");
            for action in &plan.actions {
                tracing::info!(action = action.kind.as_str(), target = %action.target, "Node action");
                match action.kind {
                    ActionKind::CordonNode => {
                        self.cordon(
                            &node_ref,
                            &f.node,
                            &policy.view.name,
                            condition,
                            &skipped_note,
                        )
                        .await?
                    }
                    ActionKind::EvictPod => {
                        let (ns, name) = action
                            .target
                            .trim_start_matches("Pod/")
                            .split_once('/')
                            .unwrap_or_default();
                        self.evict(
                            ns.to_owned(),
                            name.to_owned(),
                            policy.view.clone(),
                            condition.to_owned(),
                        )
                        .await;
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        Ok(())
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

    async fn cordon(
        &self,
        node_ref: &ObjectReference,
        node: &str,
        policy: &str,
        condition: &str,
        skipped_note: &str,
    ) -> Result<(), kube::Error> {
        if self.leadership.fence("cordon").is_err() {
            tracing::warn!(node, "Not the leader any more; cordon dropped");
            return Ok(());
        }
        tracing::info!(node, policy, "Cordoning");
        let patch = json!({"metadata": {"annotations": {CORDONED_BY: policy}}, "spec": {"unschedulable": true}});
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.metrics
            .actions
            .with_label_values(&["CordonNode", "", node])
            .inc();
        self.metrics
            .decisions
            .with_label_values(&["executed", "CordonNode"])
            .inc();
        self.events
            .publish(
                node_ref,
                EventType::Normal,
                "CordonedNode",
                format!("cordoned node {node}: {condition} (policy {policy}){skipped_note}"),
            )
            .await;
        Ok(())
    }

    /// Evicts through the Eviction API; a PodDisruptionBudget refusal (429) is retried every 5 s
    /// until the policy's drain timeout, and never turned into a DELETE.
    async fn evict(
        &self,
        namespace: String,
        name: String,
        policy: NodePolicyView,
        condition: String,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(this.client.clone(), &namespace);
            let deadline = std::time::Instant::now()
                + Duration::from_millis(policy.drain_timeout_ms.max(0) as u64);
            let pod_ref = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                ..Default::default()
            };
            let mut reported_block = false;
            loop {
                if this.leadership.fence("evict").is_err() {
                    tracing::warn!(pod = %name, "Not the leader any more; eviction dropped");
                    return;
                }
                match pods.evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        tracing::info!(pod = %name, namespace = %namespace, "Evicted");
                        this.metrics
                            .actions
                            .with_label_values(&["EvictPod", &namespace, &name])
                            .inc();
                        this.metrics
                            .decisions
                            .with_label_values(&["executed", "EvictPod"])
                            .inc();
                        this.events.publish(
                            &pod_ref,
                            EventType::Normal,
                            "EvictedPod",
                            format!(
                                "evicted {namespace}/{name}: {condition} on its node (policy {})",
                                policy.name
                            ),
                        )
                        .await;
                        return;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => return,
                    Err(kube::Error::Api(e)) if e.code == 429 => {
                        tracing::info!(pod = %name, namespace = %namespace, "Eviction blocked by a PodDisruptionBudget; retrying later");
                        this.metrics
                            .decisions
                            .with_label_values(&["blocked", "PodDisruptionBudget"])
                            .inc();
                        if !reported_block {
                            reported_block = true;
                            this.events.publish(&pod_ref, EventType::Warning, "EvictionBlocked", format!("a PodDisruptionBudget forbids evicting {namespace}/{name} now; retrying, never deleting (policy {})", policy.name)).await;
                        }
                    }
                    Err(e) => {
                        this.metrics
                            .action_errors
                            .with_label_values(&["evict"])
                            .inc();
                        tracing::warn!(pod = %name, error = %e, "Eviction failed; retrying");
                    }
                }
                if std::time::Instant::now() >= deadline {
                    this.events.publish(&pod_ref, EventType::Warning, "DrainTimeout", format!("{namespace}/{name} could not be evicted within the drain timeout (policy {})", policy.name)).await;
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    /// Uncordons the nodes this agent cordoned whose pressure has been clear long enough.
    pub async fn sweep(&self) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for node in nodes.list(&ListParams::default()).await? {
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
            if !should_uncordon(&policy.view, pressure_now, cleared_since, now_ms()) {
                continue;
            }
            if self.leadership.fence("uncordon").is_err() {
                return Ok(());
            }
            let name = node.name_any();
            let patch = json!({"metadata": {"annotations": {CORDONED_BY: null}}, "spec": {"unschedulable": false}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.metrics
                .actions
                .with_label_values(&["UncordonNode", "", &name])
                .inc();
            self.events
                .publish(
                    &node.object_ref(&()),
                    EventType::Normal,
                    "UncordonedNode",
                    format!(
                        "uncordoned node {name}: pressure clear for {} s (policy {policy_name})",
                        policy.view.uncordon_after_ms / 1000
                    ),
                )
                .await;
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
