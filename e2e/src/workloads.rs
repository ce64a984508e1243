//! Workloads for tests: one Deployment builder every test uses, and the waits that go with it.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Map, Value, json};

use crate::wait::poll_until;

/// The image a workload runs unless told otherwise (the kubelet is fake: any name runs).
pub const DEFAULT_IMAGE: &str = "registry.example.com/app:1";

/// How long a rollout may take.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(90);

/// A Deployment `name` whose pods are labelled `app=<name>` (its selector) and run one container
/// `app` with [`DEFAULT_IMAGE`], one replica, scheduled anywhere, until told otherwise.
///
/// ```ignore
/// Workload::new("api").replicas(3).on_node("kwok-node-0").label("mode", "live")
///     .annotation("autoagent.io/ignore", "true").memory("256Mi", "128Mi")
///     .rollout(&client, ns).await?;
/// ```
#[derive(Clone, Debug)]
pub struct Workload {
    name: String,
    replicas: i32,
    node: Option<String>,
    pod_labels: Map<String, Value>,
    pod_annotations: Map<String, Value>,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    container: Map<String, Value>,
    sidecars: Vec<Value>,
    spread: bool,
}

impl Workload {
    pub fn new(name: &str) -> Self {
        let mut pod_labels = Map::new();
        pod_labels.insert("app".into(), json!(name));
        let mut container = Map::new();
        container.insert("name".into(), json!("app"));
        container.insert("image".into(), json!(DEFAULT_IMAGE));
        Self {
            name: name.to_owned(),
            replicas: 1,
            node: None,
            pod_labels,
            pod_annotations: Map::new(),
            labels: Map::new(),
            annotations: Map::new(),
            container,
            sidecars: Vec::new(),
            spread: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Pins the pods to `node` (`nodeSelector kubernetes.io/hostname`).
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// Spreads the pods over the nodes, one per node (a topology spread constraint on the hostname).
    pub fn spread_over_nodes(mut self) -> Self {
        self.spread = true;
        self
    }

    /// A pod label (what policies select on).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod_labels.insert(key.into(), json!(value));
        self
    }

    /// A pod annotation (e.g. `autoagent.io/ignore`).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod_annotations.insert(key.into(), json!(value));
        self
    }

    /// A label on the Deployment itself (e.g. a GitOps tool's).
    pub fn deployment_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), json!(value));
        self
    }

    /// An annotation on the Deployment itself (e.g. Argo CD's tracking id).
    pub fn deployment_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), json!(value));
        self
    }

    /// The main container's name (default `app`).
    pub fn container_name(mut self, name: &str) -> Self {
        self.container.insert("name".into(), json!(name));
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.container.insert("image".into(), json!(image));
        self
    }

    /// The main container's memory limit and request.
    pub fn memory(self, limit: &str, request: &str) -> Self {
        self.memory_limit(limit).resource("requests", request)
    }

    /// The main container's memory limit alone (no request).
    pub fn memory_limit(self, limit: &str) -> Self {
        self.resource("limits", limit)
    }

    fn resource(mut self, kind: &str, memory: &str) -> Self {
        let resources = self
            .container
            .entry("resources")
            .or_insert_with(|| json!({}));
        resources[kind] = json!({"memory": memory});
        self
    }

    /// The main container's `env` (a list of EnvVar objects, `valueFrom` allowed).
    pub fn env(mut self, env: Value) -> Self {
        self.container.insert("env".into(), env);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.container.insert("args".into(), json!(args));
        self
    }

    /// Another container, listed before the main one.
    pub fn sidecar(mut self, name: &str, image: &str) -> Self {
        self.sidecars.push(json!({"name": name, "image": image}));
        self
    }

    pub fn build(&self) -> Deployment {
        let mut containers = self.sidecars.clone();
        containers.push(Value::Object(self.container.clone()));
        let mut pod_spec = json!({"containers": containers});
        if let Some(node) = &self.node {
            pod_spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
        if self.spread {
            pod_spec["topologySpreadConstraints"] = json!([{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": self.name}},
            }]);
        }
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "labels": self.labels, "annotations": self.annotations},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": self.name}},
                     "template": {"metadata": {"labels": self.pod_labels, "annotations": self.pod_annotations},
                                  "spec": pod_spec}},
        }))
        .expect("a Deployment from the builder")
    }

    /// Creates the Deployment in `ns` (no wait).
    pub async fn create(&self, client: &Client, ns: &str) -> anyhow::Result<()> {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &self.build())
            .await
            .with_context(|| format!("creating Deployment {ns}/{}", self.name))?;
        Ok(())
    }

    /// Creates the Deployment and waits until it reports all its replicas ready.
    pub async fn rollout(&self, client: &Client, ns: &str) -> anyhow::Result<()> {
        self.create(client, ns).await?;
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let want = self.replicas;
        poll_until(
            &format!("deployment {} ready", self.name),
            ROLLOUT_TIMEOUT,
            || {
                let api = api.clone();
                let name = self.name.clone();
                async move {
                    Ok(api.get(&name).await?.status.and_then(|s| s.ready_replicas) == Some(want))
                }
            },
        )
        .await
    }

    /// Creates the Deployment and waits until `replicas` of its pods run and are ready; returns them.
    pub async fn running_pods(&self, client: &Client, ns: &str) -> anyhow::Result<Vec<Pod>> {
        self.create(client, ns).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let selector = ListParams::default().labels(&format!("app={}", self.name));
        let want = usize::try_from(self.replicas)?;
        poll_until(
            &format!("{want} {} pods running", self.name),
            ROLLOUT_TIMEOUT,
            || {
                let (pods, selector) = (pods.clone(), selector.clone());
                async move {
                    let list = pods.list(&selector).await?;
                    Ok(list.items.iter().filter(|p| running_and_ready(p)).count() == want)
                }
            },
        )
        .await?;
        Ok(pods
            .list(&selector)
            .await?
            .items
            .into_iter()
            .filter(running_and_ready)
            .collect())
    }

    /// Creates the Deployment and returns the name of a running pod once one runs.
    pub async fn running_pod(&self, client: &Client, ns: &str) -> anyhow::Result<String> {
        self.create(client, ns).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app={}", self.name));
        let running = |pods: Api<Pod>, lp: ListParams| async move {
            let list = pods.list(&lp).await?;
            Ok::<_, anyhow::Error>(
                list.items
                    .into_iter()
                    .find(|p| phase(p) == Some("Running"))
                    .and_then(|p| p.metadata.name),
            )
        };
        poll_until("pod running", ROLLOUT_TIMEOUT, || {
            let (pods, lp) = (pods.clone(), lp.clone());
            async move { Ok(running(pods, lp).await?.is_some()) }
        })
        .await?;
        running(pods, lp).await?.context("the pod went away")
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Running, with its Ready condition true.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running")
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
