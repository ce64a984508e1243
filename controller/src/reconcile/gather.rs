//! Gather: re-read the pod and its workload from the API right before deciding, so a decision is
//! made on current facts, not on the finding (findings are hints).

use auto_agent_engine::decide::Facts;
use auto_agent_engine::quantity::parse_bytes;
use auto_agent_engine::{Finding, FindingKind};
use auto_agent_shared::keys::MIRROR_POD_ANNOTATION;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::{Api, Client};

use crate::cluster::facts::condition_holds;

/// The current pod (if it still exists with the same uid) and the facts for the decision. With a
/// mirror, an image-pull finding also gets the mirror check.
pub async fn facts(
    client: &Client,
    f: &Finding,
    mirror: Option<(&str, &auto_agent_registry::RegistryClient)>,
) -> Result<(Facts, Option<Pod>), kube::Error> {
    let mut facts = Facts::default();
    if let (FindingKind::ImagePullBackOff, Some((mirror, registry)), Some(image)) =
        (f.kind, mirror, f.image.as_deref())
        && let Some((mirrored, text)) =
            auto_agent_engine::decide::image::mirror_image(image, mirror)
    {
        match registry.has_manifest(&mirrored).await {
            Ok(found) => facts.mirror_image = Some((text, found)),
            Err(e) => {
                tracing::warn!(image = %text, error = %e, "Checking the mirror failed");
                facts.mirror_check_error = Some(format!("{text}: {e}"));
            }
        }
    }
    let Some(pod_ref) = &f.pod else {
        return Ok((facts, None));
    };
    let pod = Api::<Pod>::namespaced(client.clone(), &pod_ref.namespace)
        .get_opt(&pod_ref.name)
        .await?;
    let pod = pod.filter(|p| p.metadata.uid.as_deref() == Some(pod_ref.uid.as_str()));
    if let Some(p) = &pod {
        facts.condition_holds = condition_holds(p, f);
        facts.pod_annotations = p.metadata.annotations.clone().unwrap_or_default();
        facts.is_mirror_pod = facts.pod_annotations.contains_key(MIRROR_POD_ANNOTATION);
        facts.daemonset_pod = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    }
    let container = f.container.as_deref().unwrap_or_default();
    let ns = pod_ref.namespace.as_str();
    let (kind, name) = f
        .owner
        .as_ref()
        .map_or(("Pod", pod_ref.name.as_str()), |o| {
            (o.kind.as_str(), o.name.as_str())
        });
    // The workloads whose replicas and template the agent reads; anything else is treated as a
    // bare pod.
    let workload = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => {
            crate::cluster::workloads::fetch(client, ns, kind, name)
                .await?
                .map(|w| (w.meta, w.desired, w.ready, w.template))
        }
        _ => None,
    };
    match workload {
        Some((meta, desired, ready, template)) => {
            facts.gitops_managed = crate::cluster::facts::is_gitops_managed(&meta);
            let annotations = meta.annotations.unwrap_or_default();
            facts.workload_annotations = annotations;
            facts.desired_replicas = desired.max(0) as u32;
            facts.ready_replicas = ready.max(0) as u32;
            // Only `containers`: the agent changes nothing else of a template, and adds nothing.
            let in_template = template
                .as_ref()
                .and_then(|t: &PodTemplateSpec| t.spec.as_ref())
                .and_then(|s| s.containers.iter().find(|c| c.name == container));
            facts.template_containers = template
                .as_ref()
                .and_then(|t: &PodTemplateSpec| t.spec.as_ref())
                .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            facts.container_in_template = in_template.is_some();
            facts.template_image = in_template.and_then(|c| c.image.clone());
            let resources = in_template.and_then(|c| c.resources.as_ref());
            facts.memory_limit_bytes = resources
                .and_then(|r| r.limits.as_ref()?.get("memory"))
                .and_then(|q| parse_bytes(&q.0));
            facts.memory_request_bytes = resources
                .and_then(|r| r.requests.as_ref()?.get("memory"))
                .and_then(|q| parse_bytes(&q.0));
        }
        None => {
            // A bare pod (or an owner kind we do not patch): one replica, ready or not.
            let ready = pod
                .as_ref()
                .and_then(|p| p.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            facts.desired_replicas = 1;
            facts.ready_replicas = u32::from(ready);
        }
    }
    Ok((facts, pod))
}
