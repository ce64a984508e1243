//! Changes to a workload's pod template or replicas: a memory bump and an image swap read the
//! workload, then JSON-patch one existing container at its index, guarded by tests (resourceVersion,
//! name, and for a swap the image being replaced), so a change can never add a container or land on
//! another one; scaling patches the scale subresource.

use auto_agent_engine::decide::{BytesChange, WorkloadTarget};
use auto_agent_engine::quantity::format_bytes;
use auto_agent_shared::keys::{ORIGINAL_IMAGE_PREFIX, ORIGINAL_MEMORY_PREFIX};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{ActError, Done, Executor};

/// A container of a workload's template as read right before a change.
#[derive(Debug)]
struct TemplateContainer {
    resource_version: String,
    /// The workload's annotations (`None`: the object has none, not even an empty map).
    annotations: Option<serde_json::Map<String, Value>>,
    /// JSON pointer to the container.
    path: String,
    name: String,
    json: Value,
}

/// `~` and `/` escaped for a JSON pointer segment.
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The operation setting `resources.<section>.memory` of the container, adding the maps that
/// are missing (a JSON-patch `add` on an existing key replaces it; on a missing map it fails).
fn set_resource(at: &TemplateContainer, section: &str, memory: &str) -> Value {
    let resources = at.json.get("resources");
    match resources {
        None => json!({"op": "add", "path": format!("{}/resources", at.path),
                       "value": {section: {"memory": memory}}}),
        Some(r) if r.get(section).is_none() => {
            json!({"op": "add", "path": format!("{}/resources/{section}", at.path),
                   "value": {"memory": memory}})
        }
        Some(_) => json!({"op": "add", "path": format!("{}/resources/{section}/memory", at.path),
                          "value": memory}),
    }
}

/// The operation setting annotation `key` on the workload (adding the map when it has none).
fn set_annotation(at: &TemplateContainer, key: &str, value: &str) -> Value {
    if at.annotations.is_some() {
        json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(key)), "value": value})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {key: value}})
    }
}

/// The container's memory limit and request as the template has them (`null` where unset), the
/// value of the original-memory annotation.
fn memory_of(container: &Value) -> String {
    let at = |section: &str| {
        container
            .pointer(&format!("/resources/{section}/memory"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({"limit": at("limits"), "request": at("requests")}).to_string()
}

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

    /// The workload as it is now: its resourceVersion, whether it has annotations, and the index
    /// and JSON of `container` among the template's `containers`. A container the template does
    /// not have is refused here: the agent never adds one.
    async fn read_container(
        &self,
        w: &WorkloadTarget,
        container: &str,
    ) -> Result<TemplateContainer, ActError> {
        let api = self.workload_api(w)?;
        let obj = api.get(&w.name).await?;
        let containers = obj
            .data
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array);
        let Some((index, found)) = containers
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, c)| c.get("name").and_then(Value::as_str) == Some(container))
        else {
            return Err(ActError::TemplateMismatch(format!(
                "{} {} has no container {container} in its pod template; the agent never adds one",
                w.kind, w.name
            )));
        };
        Ok(TemplateContainer {
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            annotations: obj.metadata.annotations.as_ref().map(|a| {
                a.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect()
            }),
            path: format!("/spec/template/spec/containers/{index}"),
            name: container.to_owned(),
            json: found.clone(),
        })
    }

    /// Applies JSON-patch operations after tests that the object is still the one read (its
    /// resourceVersion) and the container still sits at that index: a change in between fails
    /// the patch instead of landing on another container.
    async fn patch_container(
        &self,
        w: &WorkloadTarget,
        at: &TemplateContainer,
        ops: Vec<Value>,
    ) -> Result<(), ActError> {
        let api = self.workload_api(w)?;
        let mut all = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": at.resource_version}),
            json!({"op": "test", "path": format!("{}/name", at.path), "value": at.name}),
        ];
        all.extend(ops);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(all))
            .map_err(|e| ActError::Unsupported(format!("building the patch: {e}")))?;
        self.fence("patch_workload")?;
        api.patch(&w.name, &PatchParams::default(), &Patch::Json::<()>(patch))
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
        let at = self.read_container(w, container).await?;
        let mut ops = vec![set_resource(&at, "limits", &format_bytes(limit.to))];
        if let Some(request) = request {
            ops.push(set_resource(&at, "requests", &format_bytes(request.to)));
        }
        // The values from before the agent's first bump, kept for a revert; later bumps keep them.
        let key = format!("{ORIGINAL_MEMORY_PREFIX}{container}");
        if !at
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(&key))
        {
            ops.push(set_annotation(&at, &key, &memory_of(&at.json)));
        }
        self.patch_container(w, &at, ops).await?;
        Ok(Done {
            note: format!("{} {}: {reason}", w.kind, w.name),
            evidence: None,
        })
    }

    /// Points the container at the mirror, keeping the original in an annotation on the workload
    /// (`autoagent.io/original-image-<container>`) so the swap can be reverted. Only the image the
    /// template runs is replaced (a JSON-patch test), never another one.
    pub async fn mirror_image(
        &self,
        w: &WorkloadTarget,
        container: &str,
        from: &str,
        to: &str,
    ) -> Result<Done, ActError> {
        // Checked before any request: a kind the agent does not patch is refused as such.
        self.workload_api(w)?;
        let at = self.read_container(w, container).await?;
        let key = format!("{ORIGINAL_IMAGE_PREFIX}{container}");
        let annotation = set_annotation(&at, &key, from);
        let ops = vec![
            json!({"op": "test", "path": format!("{}/image", at.path), "value": from}),
            json!({"op": "replace", "path": format!("{}/image", at.path), "value": to}),
            annotation,
        ];
        self.patch_container(w, &at, ops).await?;
        Ok(Done {
            note: format!(
                "{} {}: image {from} -> {to} (original kept in an annotation)",
                w.kind, w.name
            ),
            evidence: None,
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
            evidence: None,
        })
    }
}
