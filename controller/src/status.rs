//! Writes AutoRemediationPolicy status (leader only, fenced): `Ready` and `Degraded` conditions with
//! reasons, `observedGeneration`, and `matchedTargets` (workloads in the namespace whose pod template
//! the policy selects; Deployments, StatefulSets and DaemonSets are listed, never pods), and the
//! recent actions and refusals (`lastAction`, `recentActions`). A status is
//! written only when it changes; a new leader rewrites them all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use auto_agent_shared::crd::{AutoRemediationPolicy, CONDITION_DEGRADED, CONDITION_READY};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::leader::Leadership;
use crate::metrics::ControllerMetrics;
use crate::policies::PolicyIndex;

/// The parts of a status that decide whether it must be written again.
#[derive(Clone, Debug, PartialEq)]
struct Desired {
    generation: Option<i64>,
    matched: Option<i32>,
    problem: Option<(&'static str, String)>,
    /// In force, but a feature cannot work (e.g. scaling without Prometheus).
    degraded: Option<(&'static str, String)>,
    recent: Vec<auto_agent_shared::crd::RecentAction>,
}

/// The pod-template labels of every Deployment, StatefulSet and DaemonSet in a namespace
/// (three lists; workloads, never pods).
async fn template_labels(
    client: &Client,
    namespace: &str,
) -> Result<Vec<BTreeMap<String, String>>, kube::Error> {
    Ok(crate::workloads::list(client, namespace)
        .await?
        .into_iter()
        .map(|w| w.pod_labels)
        .collect())
}

fn conditions(d: &Desired, now: &serde_json::Value) -> serde_json::Value {
    match (&d.problem, &d.degraded) {
        (None, Some((reason, message))) => json!([
            {"type": CONDITION_READY, "status": "True", "reason": "Active",
             "message": "The policy is valid and in force", "lastTransitionTime": now, "observedGeneration": d.generation},
            {"type": CONDITION_DEGRADED, "status": "True", "reason": reason,
             "message": message, "lastTransitionTime": now, "observedGeneration": d.generation},
        ]),
        (None, None) => json!([
            {"type": CONDITION_READY, "status": "True", "reason": "Active",
             "message": "The policy is valid and in force", "lastTransitionTime": now, "observedGeneration": d.generation},
            {"type": CONDITION_DEGRADED, "status": "False", "reason": "AsExpected",
             "message": "", "lastTransitionTime": now, "observedGeneration": d.generation},
        ]),
        (Some((reason, message)), _) => json!([
            {"type": CONDITION_READY, "status": "False", "reason": reason,
             "message": message, "lastTransitionTime": now, "observedGeneration": d.generation},
            {"type": CONDITION_DEGRADED, "status": "True", "reason": reason,
             "message": message, "lastTransitionTime": now, "observedGeneration": d.generation},
        ]),
    }
}

/// What the status shows besides the policy itself.
#[derive(Clone, Debug)]
pub struct StatusSources {
    pub recent: crate::recent::RecentActions,
    pub scale_health: crate::scale::ScaleHealth,
}

pub async fn run(
    client: Client,
    index: PolicyIndex,
    mut leadership: Leadership,
    metrics: ControllerMetrics,
    sources: StatusSources,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut written: HashMap<(String, String), Desired> = HashMap::new();
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = leadership.changed() => {}
            () = stop.cancelled() => return,
        }
        if !leadership.is_leader() {
            written.clear();
            continue;
        }
        // Listed once per namespace per pass, however many policies live there.
        let mut templates: HashMap<String, Option<Vec<BTreeMap<String, String>>>> = HashMap::new();
        for p in index.all() {
            let matched = if p.problem.is_none() {
                if !templates.contains_key(&p.namespace) {
                    let listed = match template_labels(&client, &p.namespace).await {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, namespace = %p.namespace, "Listing workloads failed");
                            None
                        }
                    };
                    templates.insert(p.namespace.clone(), listed);
                }
                templates[&p.namespace]
                    .as_ref()
                    .map(|ts| ts.iter().filter(|l| p.selects(l)).count() as i32)
            } else {
                Some(0)
            };
            let desired = Desired {
                generation: p.generation,
                matched,
                problem: p.problem.as_ref().map(|pr| (pr.reason, pr.message.clone())),
                degraded: sources.scale_health.get(&p.namespace, &p.name),
                recent: sources.recent.get(&p.namespace, &p.name),
            };
            let key = (p.namespace.clone(), p.name.clone());
            if written.get(&key) == Some(&desired) {
                continue;
            }
            if leadership.fence("policy_status").is_err() {
                break;
            }
            let now = serde_json::to_value(Time(Timestamp::now())).unwrap_or_default();
            let mut status = json!({"conditions": conditions(&desired, &now), "observedGeneration": desired.generation});
            if let Some(m) = desired.matched {
                status["matchedTargets"] = json!(m);
            }
            if let Some(last) = desired.recent.first() {
                status["lastAction"] = serde_json::to_value(last).unwrap_or_default();
                status["recentActions"] = serde_json::to_value(&desired.recent).unwrap_or_default();
            }
            let api: Api<DeserializeGuard<AutoRemediationPolicy>> =
                Api::namespaced(client.clone(), &p.namespace);
            match api
                .patch_status(
                    &p.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                Ok(_) => {
                    written.insert(key, desired);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    metrics
                        .action_errors
                        .with_label_values(&["policy_status"])
                        .inc();
                    tracing::warn!(error = %e, policy = %p.name, "Writing policy status failed");
                }
            }
        }
    }
}
