//! Writes policy status (leader only, fenced), for both kinds with one shape: `Ready` and `Degraded`
//! conditions with reasons, `observedGeneration`, how many targets the policy matches, and the
//! recent actions and refusals (`lastAction`, `recentActions`). A status is written only when it
//! changes; a new leader rewrites them all.
//!
//! AutoRemediationPolicy: `matchedTargets` counts the workloads in the namespace whose pod template
//! the policy selects (Deployments, StatefulSets and DaemonSets are listed, never pods). The
//! NodeRemediationPolicy writer is `node_status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auto_agent_shared::crd::{
    AutoRemediationPolicy, CONDITION_DEGRADED, CONDITION_READY, RecentAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;
use crate::policies::health::ScaleHealth;
use crate::policies::index::PolicyIndex;
use crate::policies::recent::{PolicyRef, RecentActions};

/// The parts of a status that decide whether it must be written again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub generation: Option<i64>,
    pub matched: Option<i32>,
    /// NodeRemediationPolicy: nodes the agent cordoned under it now.
    pub cordoned: Option<i32>,
    /// Why the policy cannot be used at all.
    pub problem: Option<(&'static str, String)>,
    /// In force, but a feature cannot work (e.g. scaling without Prometheus).
    pub degraded: Option<(&'static str, String)>,
    pub recent: Vec<RecentAction>,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &serde_json::Value,
    generation: Option<i64>,
) -> serde_json::Value {
    json!({"type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "lastTransitionTime": now, "observedGeneration": generation})
}

/// `Ready` and `Degraded` for a desired status.
pub fn conditions(d: &Desired, now: &serde_json::Value) -> serde_json::Value {
    let g = d.generation;
    let ready = || {
        condition(
            CONDITION_READY,
            true,
            "Active",
            "The policy is valid and in force",
            now,
            g,
        )
    };
    match (&d.problem, &d.degraded) {
        (Some((reason, message)), _) => json!([
            condition(CONDITION_READY, false, reason, message, now, g),
            condition(CONDITION_DEGRADED, true, reason, message, now, g),
        ]),
        (None, Some((reason, message))) => json!([
            ready(),
            condition(CONDITION_DEGRADED, true, reason, message, now, g),
        ]),
        (None, None) => json!([
            ready(),
            condition(CONDITION_DEGRADED, false, "AsExpected", "", now, g),
        ]),
    }
}

/// The status object of a desired status.
pub fn status_body(d: &Desired) -> serde_json::Value {
    let now = serde_json::to_value(Time(Timestamp::now())).unwrap_or_default();
    let mut status = json!({"conditions": conditions(d, &now), "observedGeneration": d.generation});
    if let Some(m) = d.matched {
        status["matchedTargets"] = json!(m);
    }
    if let Some(c) = d.cordoned {
        status["cordonedNodes"] = json!(c);
    }
    if let Some(last) = d.recent.first() {
        status["lastAction"] = serde_json::to_value(last).unwrap_or_default();
        status["recentActions"] = serde_json::to_value(&d.recent).unwrap_or_default();
    }
    status
}

/// Remembers what was written, so a status is patched only when it changes.
#[derive(Debug, Default)]
pub struct Written(HashMap<PolicyRef, Desired>);

/// What a status writer does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    Stop,
    /// Not the leader: nothing is written, and a new leader rewrites every status.
    NotLeading,
    Write,
}

impl Written {
    /// Waits for a reason to write (a change, 30 s, a leadership change) or for `stop`.
    pub async fn next_pass(
        &mut self,
        changed: &Notify,
        leadership: &mut Leadership,
        stop: &CancellationToken,
    ) -> Pass {
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = leadership.changed() => {}
            () = stop.cancelled() => return Pass::Stop,
        }
        if leadership.is_leader() {
            Pass::Write
        } else {
            self.0.clear();
            Pass::NotLeading
        }
    }

    pub fn unchanged(&self, policy: &PolicyRef, desired: &Desired) -> bool {
        self.0.get(policy) == Some(desired)
    }

    /// Patches the status through `api` (fenced) and remembers it; false when fenced.
    pub async fn write<K>(
        &mut self,
        api: &Api<K>,
        policy: &PolicyRef,
        desired: Desired,
        leadership: &Leadership,
        metrics: &ControllerMetrics,
    ) -> bool
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if leadership.fence("policy_status").is_err() {
            return false;
        }
        let patch = Patch::Merge(json!({"status": status_body(&desired)}));
        match api
            .patch_status(policy.name(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                self.0.insert(policy.clone(), desired);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                metrics
                    .action_errors
                    .with_label_values(&["policy_status"])
                    .inc();
                tracing::warn!(error = %e, policy = %policy.id(), "Writing policy status failed");
            }
        }
        true
    }
}

/// The pod-template labels of a namespace's workloads.
type Templates = Vec<BTreeMap<String, String>>;

/// How long a namespace's listed workloads count for `matchedTargets`.
const TEMPLATES_TTL: Duration = Duration::from_secs(60);

/// The pod-template labels of every Deployment, StatefulSet and DaemonSet in a namespace
/// (three lists; workloads, never pods).
async fn template_labels(
    client: &Client,
    namespace: &str,
) -> Result<Vec<BTreeMap<String, String>>, kube::Error> {
    Ok(crate::cluster::workloads::list(client, namespace)
        .await?
        .into_iter()
        .map(|w| w.pod_labels)
        .collect())
}

/// What the status shows besides the policy itself.
#[derive(Clone, Debug)]
pub struct StatusSources {
    pub recent: RecentActions,
    pub scale_health: ScaleHealth,
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
    let mut written = Written::default();
    // A namespace's workloads, listed at most once per TEMPLATES_TTL however often status
    // changes (an action, a refusal), and however many policies live there.
    let mut templates: HashMap<String, (Instant, Option<Templates>)> = HashMap::new();
    loop {
        match written.next_pass(&changed, &mut leadership, &stop).await {
            Pass::Stop => return,
            Pass::NotLeading => continue,
            Pass::Write => {}
        }
        let policies = index.all();
        // A failed list is tried again on the next pass.
        templates.retain(|ns, (at, listed)| {
            listed.is_some()
                && at.elapsed() < TEMPLATES_TTL
                && policies.iter().any(|p| &p.namespace == ns)
        });
        for p in policies {
            let matched = if p.problem.is_none() {
                if !templates.contains_key(&p.namespace) {
                    let listed = match template_labels(&client, &p.namespace).await {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(error = %e, namespace = %p.namespace, "Listing workloads failed");
                            None
                        }
                    };
                    templates.insert(p.namespace.clone(), (Instant::now(), listed));
                }
                templates[&p.namespace]
                    .1
                    .as_ref()
                    .map(|ts| ts.iter().filter(|l| p.selects(l)).count() as i32)
            } else {
                Some(0)
            };
            let policy = p.policy_ref();
            let desired = Desired {
                generation: p.generation,
                matched,
                cordoned: None,
                problem: p.problem.as_ref().map(|pr| (pr.reason, pr.message.clone())),
                degraded: sources.scale_health.get(&p.namespace, &p.name),
                recent: sources.recent.get(&policy),
            };
            if written.unchanged(&policy, &desired) {
                continue;
            }
            let api: Api<DeserializeGuard<AutoRemediationPolicy>> =
                Api::namespaced(client.clone(), &p.namespace);
            if !written
                .write(&api, &policy, desired, &leadership, &metrics)
                .await
            {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_problem_then_degraded() {
        let now = json!("2026-01-01T00:00:00Z");
        let cases = [
            (None, None, ("True", "Active"), ("False", "AsExpected")),
            (
                None,
                Some(("NoGateConfigured", "x".to_owned())),
                ("True", "Active"),
                ("True", "NoGateConfigured"),
            ),
            (
                Some(("InvalidSelector", "y".to_owned())),
                Some(("NoGateConfigured", "x".to_owned())),
                ("False", "InvalidSelector"),
                ("True", "InvalidSelector"),
            ),
        ];
        for (problem, degraded, ready, deg) in cases {
            let d = Desired {
                generation: Some(3),
                problem,
                degraded,
                ..Desired::default()
            };
            let c = conditions(&d, &now);
            assert_eq!(c[0]["type"], "Ready");
            assert_eq!(
                (c[0]["status"].as_str(), c[0]["reason"].as_str()),
                (Some(ready.0), Some(ready.1))
            );
            assert_eq!(c[1]["type"], "Degraded");
            assert_eq!(
                (c[1]["status"].as_str(), c[1]["reason"].as_str()),
                (Some(deg.0), Some(deg.1))
            );
            assert_eq!(c[1]["observedGeneration"], 3);
        }
    }

    #[test]
    fn status_body_carries_counts_only_when_known() {
        let body = status_body(&Desired {
            matched: Some(4),
            cordoned: Some(1),
            ..Desired::default()
        });
        assert_eq!(body["matchedTargets"], 4);
        assert_eq!(body["cordonedNodes"], 1);
        assert!(body.get("lastAction").is_none());
        let body = status_body(&Desired::default());
        assert!(body.get("matchedTargets").is_none());
        assert!(body.get("cordonedNodes").is_none());
    }
}
