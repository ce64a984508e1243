//! What the controller would decide now: for each kind of pod failure, the finding the sensor
//! sends (the pod's real one when it is failing that way, else the finding it would send if it
//! did), the facts gathered from the API as the controller gathers them, the ledger, and the
//! engine's `decide`: the same rules, in the same order, with the same refusal reasons.

use auto_agent_controller::policies::index::{PolicyEntry, policy_view};
use auto_agent_controller::reconcile::gather;
use auto_agent_controller::reconcile::pod::policy_puts_under_gitops;
use auto_agent_engine::decide::{self, Decision, History, Input, PlannedAction};
use auto_agent_engine::{Finding, FindingKind, IncidentKey, PodRef, Transition};
use auto_agent_shared::views::pod_view;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde::Serialize;

use crate::context::DecisionConfig;

/// The pod failures the agent remediates.
pub const KINDS: [FindingKind; 3] = [
    FindingKind::CrashLoopBackOff,
    FindingKind::OomKilled,
    FindingKind::ImagePullBackOff,
];

/// One decision, as people and scripts read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    pub failure: String,
    pub pod: String,
    pub container: String,
    /// `now`: the pod is failing this way; `if it happened`: it is not, and this is what a
    /// finding of this kind would get.
    pub basis: String,
    /// Act, DryRun, Propose (a pull request, GitOps owns the spec) or Refuse.
    pub decision: String,
    /// The refusal reason, or the actions planned.
    pub reason: String,
    pub detail: String,
}

/// The findings the sensor would send for this pod now (first sight, as after a restart).
pub fn current_findings(pod: &Pod, now_ms: i64) -> Vec<Finding> {
    auto_agent_engine::detect::detect_pod(None, &pod_view(pod), now_ms)
}

/// The finding the sensor would send if `pod`'s `container` failed with `kind`.
pub fn supposed_finding(pod: &Pod, container: &str, kind: FindingKind, now_ms: i64) -> Finding {
    let view = pod_view(pod);
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.image.clone());
    let restarts = view
        .containers
        .iter()
        .find(|c| c.name == container)
        .map_or(0, |c| c.restart_count);
    Finding {
        id: format!("{}/{container}/{}/supposed", view.uid, kind.as_str()),
        node: view.node.clone(),
        kind,
        transition: Transition::Started,
        pod: Some(PodRef {
            namespace: view.namespace.clone(),
            name: view.name.clone(),
            uid: view.uid.clone(),
        }),
        owner: view.owner.clone(),
        container: Some(container.to_owned()),
        reason: kind.as_str().to_owned(),
        message: String::new(),
        restart_count: restarts.max(1),
        exit_code: match kind {
            FindingKind::OomKilled => Some(137),
            FindingKind::CrashLoopBackOff => Some(1),
            _ => None,
        },
        image,
        observed_at_ms: now_ms,
        log_lines: Vec::new(),
        log_truncated: false,
    }
}

/// A plan's actions in words.
pub fn describe(action: &PlannedAction) -> String {
    match action {
        PlannedAction::RestartPod { pod, .. } => format!("restart pod {}", pod.name),
        PlannedAction::BumpMemory {
            container, limit, ..
        } => format!(
            "raise {container}'s memory limit {} -> {}",
            limit.from.map_or(
                "(none)".to_owned(),
                auto_agent_engine::quantity::format_bytes
            ),
            auto_agent_engine::quantity::format_bytes(limit.to)
        ),
        PlannedAction::MirrorImage {
            container,
            from,
            to,
            ..
        } => format!("swap {container}'s image {from} -> {to}"),
        other => format!("{} {}", other.kind().as_str(), other.target()),
    }
}

/// Judgements as a table for people (explain and simulate print the same columns).
pub fn table(judgements: &[Judgement]) -> String {
    let rows: Vec<Vec<String>> = judgements
        .iter()
        .map(|j| {
            vec![
                j.pod.clone(),
                j.failure.clone(),
                j.basis.clone(),
                j.decision.clone(),
                j.reason.clone(),
                j.detail.clone(),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "POD",
            "FAILURE",
            "BASIS",
            "DECISION",
            "REASON / PLAN",
            "DETAIL",
        ],
        &rows,
    )
}

/// The judgement of one decision.
pub fn judgement(f: &Finding, basis: &str, decision: &Decision) -> Judgement {
    let (decision, reason, detail) = match decision {
        Decision::Refuse(r) => ("Refuse", r.reason.as_str().to_owned(), r.message.clone()),
        Decision::Propose(plan, why) => (
            "Propose",
            plan.actions
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; "),
            format!("as a pull request: {}", why.message),
        ),
        Decision::Act(plan) => (
            if plan.dry_run { "DryRun" } else { "Act" },
            plan.actions
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; "),
            plan.actions
                .iter()
                .map(|a| a.reason().to_owned())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Judgement {
        failure: f.kind.as_str().to_owned(),
        pod: f.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        container: f.container.clone().unwrap_or_default(),
        basis: basis.to_owned(),
        decision: decision.to_owned(),
        reason,
        detail,
    }
}

/// Everything a decision needs besides the finding.
pub struct Judge<'a> {
    pub client: &'a Client,
    pub registry: &'a auto_agent_registry::RegistryClient,
    pub history: &'a History,
    pub config: &'a DecisionConfig,
    pub now_ms: i64,
}

impl std::fmt::Debug for Judge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge")
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl Judge<'_> {
    /// The controller's decision on `f` under `policy` (`None`: no policy selects it). `supposed`
    /// marks a finding the pod does not have now: its condition is taken to hold. `failing` is how
    /// many pods of the workload fail now (the controller counts those it knows of).
    pub async fn decide(
        &self,
        f: &Finding,
        policy: Option<&PolicyEntry>,
        supposed: bool,
        failing: u32,
    ) -> anyhow::Result<Judgement> {
        let basis = if supposed { "if it happened" } else { "now" };
        let key = IncidentKey::for_finding(f)?;
        let view = policy.and_then(policy_view);
        let mirror = view
            .as_ref()
            .and_then(|v| v.image_mirror.as_deref())
            .map(|m| (m, self.registry));
        let (mut facts, _) = gather::facts(self.client, f, mirror).await?;
        if supposed {
            facts.condition_holds = true;
        }
        facts.gitops_managed |= policy.is_some_and(policy_puts_under_gitops);
        facts.failing_pods = failing.max(1);
        // Taken as settled: the storm window is a wait, not a verdict.
        facts.incident_age_ms = view.as_ref().map_or(0, |v| v.storm_window_ms);
        let decision = decide::decide(&Input {
            incident: &key,
            finding: f,
            policy: view.as_ref(),
            facts: &facts,
            history: self.history,
            cluster_budgets: &self.config.cluster_budgets,
            allowed: &self.config.allowed_actions,
            now_ms: self.now_ms,
        });
        Ok(judgement(f, basis, &decision))
    }
}

/// The registry client for mirror checks: anonymous, allowed to ask only the policies' mirrors (the controller asks with its own credentials; a private mirror shows as not
/// checked here).
pub fn registry_for(
    policies: &[PolicyEntry],
    plain_http: &[String],
) -> anyhow::Result<auto_agent_registry::RegistryClient> {
    let hosts: Vec<String> = policies
        .iter()
        .filter_map(policy_view)
        .filter_map(|v| v.image_mirror)
        .collect();
    let allowed = auto_agent_registry::MirrorAllowlist::parse(&hosts)
        .map_err(|e| anyhow::anyhow!("the policies' mirrors: {e}"))?;
    Ok(auto_agent_registry::RegistryClient::new(plain_http.to_vec(), None)?.allowing(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "api-1", "namespace": "shop", "uid": "u1",
                         "labels": {"pod-template-hash": "5d8f7"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "api-5d8f7", "uid": "r", "controller": true}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
            "status": status
        }))
        .unwrap()
    }

    /// A pod failing now yields the sensor's own finding; a healthy one none, and the supposed
    /// finding names its workload, container and image as the sensor would.
    #[test]
    fn findings_are_the_sensors_own_or_supposed_from_the_pod() {
        let crashing = pod(
            json!({"containerStatuses": [{"name": "app", "image": "registry.example.com/app:1",
            "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        let found = current_findings(&crashing, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, FindingKind::CrashLoopBackOff);
        let healthy = pod(
            json!({"containerStatuses": [{"name": "app", "image": "registry.example.com/app:1",
            "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        assert!(current_findings(&healthy, 1).is_empty());
        let f = supposed_finding(&healthy, "app", FindingKind::OomKilled, 7);
        assert_eq!(
            f.owner.as_ref().map(|o| (o.kind.as_str(), o.name.as_str())),
            Some(("Deployment", "api"))
        );
        assert_eq!(f.image.as_deref(), Some("registry.example.com/app:1"));
        assert_eq!(f.exit_code, Some(137));
        assert_eq!(
            IncidentKey::for_finding(&f).unwrap(),
            IncidentKey::for_finding(&supposed_finding(
                &crashing,
                "app",
                FindingKind::OomKilled,
                9
            ))
            .unwrap(),
            "the same incident for every pod of the workload"
        );
    }

    #[test]
    fn judgements_say_what_and_why() {
        use auto_agent_engine::decide::{Plan, Refusal, RefusalReason};
        let f = supposed_finding(&pod(json!({})), "app", FindingKind::CrashLoopBackOff, 1);
        let key = IncidentKey::for_finding(&f).unwrap();
        let refused = judgement(
            &f,
            "now",
            &Decision::Refuse(Refusal {
                reason: RefusalReason::BudgetExhausted,
                message: "3 of 3 restarts in the last hour".into(),
            }),
        );
        assert_eq!(
            (refused.decision.as_str(), refused.reason.as_str()),
            ("Refuse", "BudgetExhausted")
        );
        let plan = Plan {
            incident: key,
            policy: "p".into(),
            dry_run: true,
            actions: vec![PlannedAction::RestartPod {
                pod: auto_agent_engine::decide::PodTarget {
                    namespace: "shop".into(),
                    name: "api-1".into(),
                    uid: "u1".into(),
                },
                reason: "crash loop".into(),
            }],
        };
        let j = judgement(&f, "if it happened", &Decision::Act(plan));
        assert_eq!(j.decision, "DryRun");
        assert_eq!(j.reason, "restart pod api-1");
        assert_eq!(j.detail, "crash loop");
    }
}
