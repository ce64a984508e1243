//! Reading the workload a finding names, by GET with a short cache: the controller never lists
//! pods. What policies match against is the labels of the workload's pods (its pod template).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
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

/// A workload as read from the API: what matching, facts and reporting need from it.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub meta: ObjectMeta,
    /// Replicas wanted and ready (for a DaemonSet: scheduled and ready).
    pub desired: i32,
    pub ready: i32,
    pub template: Option<PodTemplateSpec>,
    /// Which pods it owns (`None`: no selector, as a ReplicaSet without one).
    pub selector: Option<LabelSelector>,
    pub reference: ObjectReference,
}

fn fetched<K: Resource<DynamicType = ()>>(
    obj: &K,
    desired: i32,
    ready: i32,
    template: Option<PodTemplateSpec>,
    selector: Option<LabelSelector>,
) -> Fetched {
    Fetched {
        meta: obj.meta().clone(),
        desired,
        ready,
        template,
        selector,
        reference: obj.object_ref(&()),
    }
}

/// A workload listed in a namespace, with what policy selection needs.
#[derive(Clone, Debug)]
pub struct Listed {
    pub kind: &'static str,
    pub meta: ObjectMeta,
    /// Labels of its pod template.
    pub pod_labels: BTreeMap<String, String>,
}

fn listed<K: Resource>(kind: &'static str, obj: K, template: Option<&PodTemplateSpec>) -> Listed {
    Listed {
        kind,
        pod_labels: template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        meta: obj.meta().clone(),
    }
}

/// The Deployments, StatefulSets and DaemonSets of a namespace (a policy can select any of them).
pub async fn list(client: &Client, namespace: &str) -> Result<Vec<Listed>, kube::Error> {
    let lp = kube::api::ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let t = d.spec.as_ref().map(|s| s.template.clone());
        out.push(listed("Deployment", d, t.as_ref()));
    }
    for d in Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let t = d.spec.as_ref().map(|s| s.template.clone());
        out.push(listed("StatefulSet", d, t.as_ref()));
    }
    for d in Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let t = d.spec.as_ref().map(|s| s.template.clone());
        out.push(listed("DaemonSet", d, t.as_ref()));
    }
    Ok(out)
}

/// One GET of the workload `kind/name` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job);
/// `None` when it does not exist or the kind is not one of these.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<Fetched>, kube::Error> {
    let c = client.clone();
    Ok(match kind {
        "Deployment" => Api::<Deployment>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(|d| {
                let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                fetched(
                    &d,
                    desired,
                    ready,
                    d.spec.clone().map(|s| s.template),
                    d.spec.as_ref().map(|s| s.selector.clone()),
                )
            }),
        "StatefulSet" => Api::<StatefulSet>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(|d| {
                let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                fetched(
                    &d,
                    desired,
                    ready,
                    d.spec.clone().map(|s| s.template),
                    d.spec.as_ref().map(|s| s.selector.clone()),
                )
            }),
        "DaemonSet" => Api::<DaemonSet>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(|d| {
                let desired = d.status.as_ref().map_or(0, |s| s.desired_number_scheduled);
                let ready = d.status.as_ref().map_or(0, |s| s.number_ready);
                fetched(
                    &d,
                    desired,
                    ready,
                    d.spec.clone().map(|s| s.template),
                    d.spec.as_ref().map(|s| s.selector.clone()),
                )
            }),
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(|d| {
                let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let ready = d
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                fetched(
                    &d,
                    desired,
                    ready,
                    d.spec.clone().and_then(|s| s.template),
                    d.spec.as_ref().map(|s| s.selector.clone()),
                )
            }),
        "Job" => Api::<Job>::namespaced(c, namespace)
            .get_opt(name)
            .await?
            .map(|d| {
                let desired = d.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1);
                let ready = d.status.as_ref().and_then(|s| s.ready).unwrap_or(0);
                fetched(
                    &d,
                    desired,
                    ready,
                    d.spec.clone().map(|s| s.template),
                    d.spec.as_ref().and_then(|s| s.selector.clone()),
                )
            }),
        _ => None,
    })
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
        let found = if kind == "Pod" {
            Api::<Pod>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|p| Workload {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    pod_labels: p.labels().clone(),
                    reference: p.object_ref(&()),
                })
        } else {
            fetch(&self.client, namespace, kind, name)
                .await?
                .map(|w| Workload {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    pod_labels: w
                        .template
                        .and_then(|t| t.metadata)
                        .and_then(|m| m.labels)
                        .unwrap_or_default(),
                    reference: w.reference,
                })
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (_, at)| at.elapsed() < self.ttl);
        cache.insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }
}
