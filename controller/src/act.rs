//! Act: execute one planned action, leader-only through the fence, idempotent, re-reading the target
//! right before writing. The evidence bundle is written before a pod is deleted.

use auto_agent_engine::Finding;
use auto_agent_engine::decide::{ActionKind, Plan, PlannedAction};
use auto_agent_engine::quantity::format_bytes;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use std::sync::Arc;

use auto_agent_evidence::{Bundle, Keeper, SaveError};

use crate::bundle::BundleContext;
use crate::gather::condition_holds;
use crate::leader::Leadership;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("not the leader any more")]
    Fenced,
    #[error("the condition cleared before acting")]
    Cleared,
    #[error("evidence bundle not saved, so the pod is kept: {0}")]
    Bundle(#[from] SaveError),
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    #[error("cannot act on {0}")]
    Unsupported(String),
}

impl ActError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            Self::Cleared => "condition_cleared",
            Self::Bundle(_) => "bundle",
            Self::Api(_) => "api",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// What an executed action did, for the Event.
#[derive(Debug)]
pub struct Done {
    pub note: String,
}

pub struct Executor {
    pub client: Client,
    pub leadership: Leadership,
    pub evidence: Arc<Keeper>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("evidence", &self.evidence.durability)
            .finish()
    }
}

fn today() -> (String, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let date = now.strftime("%Y-%m-%d").to_string();
    (date, now.to_string())
}

impl Executor {
    pub async fn execute(
        &self,
        plan: &Plan,
        action: &PlannedAction,
        finding: &Finding,
        bundle: &BundleContext,
    ) -> Result<Done, ActError> {
        match action.kind {
            ActionKind::RestartPod => self.restart(plan, action, finding, bundle).await,
            ActionKind::BumpMemory => self.bump_memory(action, finding).await,
            ActionKind::MirrorImage => self.mirror_image(action, finding).await,
            other => Err(ActError::Unsupported(other.as_str().to_owned())),
        }
    }

    async fn restart(
        &self,
        plan: &Plan,
        action: &PlannedAction,
        f: &Finding,
        ctx: &BundleContext,
    ) -> Result<Done, ActError> {
        let pod_ref = f
            .pod
            .as_ref()
            .ok_or_else(|| ActError::Unsupported("a finding without a pod".into()))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod_ref.namespace);
        // Re-read: the same pod instance, still crash-looping.
        let pod = pods
            .get_opt(&pod_ref.name)
            .await?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod_ref.uid.as_str()))
            .ok_or(ActError::Cleared)?;
        if !condition_holds(&pod, f) {
            return Err(ActError::Cleared);
        }
        let (date, now) = today();
        let key = crate::bundle::key_for(f, &ctx.destination, &date);
        let input = crate::bundle::gather(&self.client, f, &pod, ctx, plan, now).await;
        let bundle = Bundle::build(input, ctx.caps);
        let saved = self.evidence.save(&ctx.destination, &key, &bundle).await?;
        self.leadership
            .fence("delete_pod")
            .map_err(|_| ActError::Fenced)?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod_ref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod_ref.name, &params).await {
            Ok(_) => {}
            // Already gone (or replaced): the goal is met; idempotent.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Done {
            note: format!(
                "deleted pod {} ({}); evidence bundle {}",
                pod_ref.name,
                action.reason,
                saved.describe()
            ),
        })
    }

    /// Points the container at the mirror, keeping the original in an annotation on the workload
    /// (`autoagent.io/original-image-<container>`) so the swap can be reverted.
    async fn mirror_image(&self, action: &PlannedAction, f: &Finding) -> Result<Done, ActError> {
        let (Some(pod_ref), Some(owner), Some(container), Some(image), Some(original)) = (
            f.pod.as_ref(),
            f.owner.as_ref(),
            f.container.as_deref(),
            action.new_image.as_deref(),
            f.image.as_deref(),
        ) else {
            return Err(ActError::Unsupported(
                "image swap without a workload, container or image".into(),
            ));
        };
        let patch = json!({
            "metadata": {"annotations": {format!("autoagent.io/original-image-{container}"): original}},
            "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
        });
        self.patch_workload(&pod_ref.namespace, &owner.kind, &owner.name, &patch)
            .await?;
        Ok(Done {
            note: format!(
                "{} {}: image {original} -> {image} (original kept in an annotation)",
                owner.kind, owner.name
            ),
        })
    }

    /// A strategic merge patch (containers merge by name), so every other field is kept.
    async fn patch_workload(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(), ActError> {
        let params = PatchParams::default();
        self.leadership
            .fence("patch_workload")
            .map_err(|_| ActError::Fenced)?;
        match kind {
            "Deployment" => {
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Strategic(patch))
                    .await?;
            }
            "StatefulSet" => {
                Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Strategic(patch))
                    .await?;
            }
            "DaemonSet" => {
                Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Strategic(patch))
                    .await?;
            }
            other => return Err(ActError::Unsupported(format!("patching a {other}"))),
        }
        Ok(())
    }

    async fn bump_memory(&self, action: &PlannedAction, f: &Finding) -> Result<Done, ActError> {
        let (Some(pod_ref), Some(owner), Some(container), Some(limit)) = (
            f.pod.as_ref(),
            f.owner.as_ref(),
            f.container.as_deref(),
            action.new_memory_limit_bytes,
        ) else {
            return Err(ActError::Unsupported(
                "memory bump without a workload, container or limit".into(),
            ));
        };
        let mut resources = json!({"limits": {"memory": format_bytes(limit)}});
        if let Some(request) = action.new_memory_request_bytes {
            resources["requests"] = json!({"memory": format_bytes(request)});
        }
        // A strategic merge patch on the one container (merge key: name) keeps every other field.
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "resources": resources}]}}}});
        self.patch_workload(&pod_ref.namespace, &owner.kind, &owner.name, &patch)
            .await?;
        Ok(Done {
            note: format!("{} {}: {}", owner.kind, owner.name, action.reason),
        })
    }
}
