//! Node actions. Cordon marks the node with the policy's name (`autoagent.io/cordoned-by`) and the
//! label `autoagent.io/cordoned` (what the sweep lists by), so the uncordon sweep and the policy's status work the same after a leader change. Evictions go through
//! the Eviction API only: one attempt per call, a 429 (a PodDisruptionBudget forbids it now) is
//! returned as `Blocked` and never turned into a DELETE.

use auto_agent_engine::decide::PodTarget;
use auto_agent_shared::keys::{CORDONED_BY_ANNOTATION as CORDONED_BY, CORDONED_LABEL};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{EvictParams, Patch, PatchParams};
use serde_json::json;

use super::{ActError, Done, Executor};

/// What one eviction attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    Evicted,
    /// The pod is gone already.
    Gone,
    /// A PodDisruptionBudget forbids it now (429); try again later.
    Blocked,
}

impl Executor {
    pub async fn cordon(&self, node: &str, policy: &str, reason: &str) -> Result<Done, ActError> {
        self.fence("cordon")?;
        let patch = json!({"metadata": {"annotations": {CORDONED_BY: policy}, "labels": {CORDONED_LABEL: "true"}},
                           "spec": {"unschedulable": true}});
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(Done {
            note: format!("cordoned node {node}: {reason}"),
            evidence: None,
        })
    }

    pub async fn evict_once(&self, pod: &PodTarget) -> Result<Eviction, ActError> {
        self.fence("evict")?;
        let pods: Api<Pod> = Api::namespaced(self.eviction_client.clone(), &pod.namespace);
        match pods.evict(&pod.name, &EvictParams::default()).await {
            Ok(_) => Ok(Eviction::Evicted),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Eviction::Gone),
            Err(kube::Error::Api(e)) if e.code == 429 => Ok(Eviction::Blocked),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn uncordon(&self, node: &str, reason: &str) -> Result<Done, ActError> {
        self.fence("uncordon")?;
        let patch = json!({"metadata": {"annotations": {CORDONED_BY: null}, "labels": {CORDONED_LABEL: null}},
                           "spec": {"unschedulable": false}});
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(Done {
            note: format!("uncordoned node {node}: {reason}"),
            evidence: None,
        })
    }
}
