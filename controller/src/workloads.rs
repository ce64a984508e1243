//! Reading the workload a finding names, by GET with a short cache: the controller never lists
//! pods. What policies match against is the labels of the workload's pods (its pod template).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use kube::{Api, Client, Resource, ResourceExt};

/// What the controller needs to know about a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Labels of its pods.
    pub pod_labels: BTreeMap<String, String>,
    pub reference: ObjectReference,
}

/// (namespace, kind, name)
type CacheKey = (String, String, String);

pub struct WorkloadCache {
    client: Client,
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Option<Workload>, Instant)>>,
}

impl std::fmt::Debug for WorkloadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCache")
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn template_labels(t: Option<&PodTemplateSpec>) -> BTreeMap<String, String> {
    t.and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn of<K: Resource<DynamicType = ()>>(
    obj: &K,
    kind: &str,
    labels: BTreeMap<String, String>,
) -> Workload {
    Workload {
        kind: kind.to_owned(),
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        pod_labels: labels,
        reference: obj.object_ref(&()),
    }
}

impl WorkloadCache {
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The workload, or `None` when it does not exist (any more) or is of an unknown kind.
    pub async fn get(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Workload>, kube::Error> {
        let key = (namespace.to_owned(), kind.to_owned(), name.to_owned());
        if let Some((w, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(w.clone());
        }
        let c = self.client.clone();
        let found = match kind {
            "Deployment" => Api::<Deployment>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    of(
                        &d,
                        kind,
                        template_labels(d.spec.as_ref().map(|s| &s.template)),
                    )
                }),
            "StatefulSet" => Api::<StatefulSet>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    of(
                        &d,
                        kind,
                        template_labels(d.spec.as_ref().map(|s| &s.template)),
                    )
                }),
            "DaemonSet" => Api::<DaemonSet>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    of(
                        &d,
                        kind,
                        template_labels(d.spec.as_ref().map(|s| &s.template)),
                    )
                }),
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    of(
                        &d,
                        kind,
                        template_labels(d.spec.as_ref().and_then(|s| s.template.as_ref())),
                    )
                }),
            "Job" => Api::<Job>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|d| {
                    of(
                        &d,
                        kind,
                        template_labels(d.spec.as_ref().map(|s| &s.template)),
                    )
                }),
            "Pod" => Api::<Pod>::namespaced(c, namespace)
                .get_opt(name)
                .await?
                .map(|p| {
                    let labels = p.labels().clone();
                    of(&p, kind, labels)
                }),
            _ => None,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
        cache.insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }
}
