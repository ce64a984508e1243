//! Changes to a workload's pod template or replicas: a memory bump and an image swap are strategic
//! merge patches on one container (merge key: name, so every other field is kept); scaling patches
//! the scale subresource.

use auto_agent_engine::decide::{BytesChange, WorkloadTarget};
use auto_agent_engine::quantity::format_bytes;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::{ActError, Done, Executor};

/// The kinds whose pod template the agent patches.
fn resource(kind: &str) -> Option<ApiResource> {
    match kind {
        "Deployment" => Some(ApiResource::erase::<Deployment>(&())),
        "StatefulSet" => Some(ApiResource::erase::<StatefulSet>(&())),
        "DaemonSet" => Some(ApiResource::erase::<DaemonSet>(&())),
        _ => None,
    }
}

impl Executor {
    fn workload_api(&self, w: &WorkloadTarget) -> Result<Api<DynamicObject>, ActError> {
        let resource = resource(&w.kind)
            .ok_or_else(|| ActError::Unsupported(format!("patching a {}", w.kind)))?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            &w.namespace,
            &resource,
        ))
    }

    async fn patch_workload(
        &self,
        w: &WorkloadTarget,
        patch: &serde_json::Value,
    ) -> Result<(), ActError> {
        let api = self.workload_api(w)?;
        self.fence("patch_workload")?;
        api.patch(&w.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }

    pub async fn bump_memory(
        &self,
        w: &WorkloadTarget,
        container: &str,
        limit: BytesChange,
        request: Option<BytesChange>,
        reason: &str,
    ) -> Result<Done, ActError> {
        let mut resources = json!({"limits": {"memory": format_bytes(limit.to)}});
        if let Some(request) = request {
            resources["requests"] = json!({"memory": format_bytes(request.to)});
        }
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "resources": resources}]}}}});
        self.patch_workload(w, &patch).await?;
        Ok(Done {
            note: format!("{} {}: {reason}", w.kind, w.name),
        })
    }

    /// Points the container at the mirror, keeping the original in an annotation on the workload
    /// (`autoagent.io/original-image-<container>`) so the swap can be reverted.
    pub async fn mirror_image(
        &self,
        w: &WorkloadTarget,
        container: &str,
        from: &str,
        to: &str,
    ) -> Result<Done, ActError> {
        let patch = json!({
            "metadata": {"annotations": {format!("autoagent.io/original-image-{container}"): from}},
            "spec": {"template": {"spec": {"containers": [{"name": container, "image": to}]}}},
        });
        self.patch_workload(w, &patch).await?;
        Ok(Done {
            note: format!(
                "{} {}: image {from} -> {to} (original kept in an annotation)",
                w.kind, w.name
            ),
        })
    }

    /// Sets replicas through the scale subresource (Deployments and StatefulSets).
    pub async fn scale(
        &self,
        w: &WorkloadTarget,
        from: i32,
        to: i32,
        reason: &str,
    ) -> Result<Done, ActError> {
        if !matches!(w.kind.as_str(), "Deployment" | "StatefulSet") {
            return Err(ActError::Unsupported(format!("scaling a {}", w.kind)));
        }
        let api = self.workload_api(w)?;
        self.fence("scale")?;
        let patch = json!({"spec": {"replicas": to}});
        api.patch_scale(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(Done {
            note: format!(
                "scaled {} {} from {from} to {to} replicas: {reason}",
                w.kind, w.name
            ),
        })
    }
}
