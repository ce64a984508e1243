//! The setup of an agent test, as one guard: the cluster with its CRDs, a fresh namespace for the
//! test's workloads, the chart installed with the agents running as processes ([`AgentStack`]),
//! policies applied, workloads rolled out on the agents' node.
//!
//! `finish()` tears it down and waits (agents stopped, chart uninstalled, namespace gone). A test
//! that panics before drops the guard instead, which stops the processes, uninstalls the chart and
//! starts the namespaces' deletion (best effort, not waited for).
//!
//! The guard also holds the node: two agents for one node would be two installations acting on
//! the same pods, each with its own budget, so tests of one binary that use the same node run one
//! after the other (cargo runs test binaries one at a time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::sync::OwnedMutexGuard;

use crate::agents::{AgentStack, Install};
use crate::registry::{Registry, RegistryAuth};
use crate::steps;
use crate::workloads::Workload;
use crate::{Cluster, TestNamespace};

/// One lock per node, for the tests of this process.
static NODES: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> = Mutex::new(BTreeMap::new());

async fn hold_node(node: &str) -> OwnedMutexGuard<()> {
    let lock = NODES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(node.to_owned())
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// A test's namespace and agents; see the module documentation. Its methods panic on failure
/// (test code).
pub struct Setup {
    pub cluster: Cluster,
    pub admin: Client,
    /// The namespace of the test's workloads and policies.
    pub apps: TestNamespace,
    /// The node the agents' sensor watches, where workloads run unless pinned elsewhere.
    pub node: String,
    // Dropped in this order: the agents, then the namespace, then the node.
    stack: Option<AgentStack>,
    _node: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("namespace", &self.apps.name)
            .field("node", &self.node)
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// Waits for `node`, starts (or reuses) the cluster, installs the CRDs and creates the
    /// namespace `<prefix>-<pid>-<n>`. No agents yet: see [`Setup::start_agents`].
    pub async fn new(prefix: &str, node: &str) -> Self {
        let held = hold_node(node).await;
        let cluster = Cluster::get().expect("the local cluster");
        cluster.install_crds().await.expect("installing the CRDs");
        let admin = cluster.admin().await.expect("the admin client");
        let apps = TestNamespace::create(&cluster, prefix)
            .await
            .expect("the test namespace");
        Self {
            cluster,
            admin,
            apps,
            node: node.to_owned(),
            stack: None,
            _node: held,
        }
    }

    /// [`Setup::new`] with one controller replica and the sensor for `node` running.
    pub async fn with_agents(prefix: &str, node: &str) -> Self {
        let mut setup = Self::new(prefix, node).await;
        setup.start_agents(1, Vec::new()).await;
        setup
    }

    /// Installs the chart in a namespace of its own and starts `replicas` controllers with the
    /// extra environment `env` (flags) and the sensor for the node; waits for a leader.
    pub async fn start_agents(&mut self, replicas: usize, env: Vec<(String, String)>) {
        self.start_agents_with_chart(replicas, env, Install::PROCESS_VALUES)
            .await;
    }

    /// Like [`Setup::start_agents`], installing the chart with `chart_args` (`&[]`: its defaults).
    pub async fn start_agents_with_chart(
        &mut self,
        replicas: usize,
        env: Vec<(String, String)>,
        chart_args: &[&str],
    ) {
        assert!(self.stack.is_none(), "the agents run already");
        let stack = AgentStack::start_with(&self.cluster, &self.node, replicas, env, chart_args)
            .await
            .expect("starting the agents");
        self.stack = Some(stack);
    }

    /// Starts an open registry (Debian's docker-registry) serving `repositories` at tag `1`, and
    /// the agents (one controller) allowed to use it as a mirror over plain HTTP; returns the
    /// registry (its `host` is the mirror's address).
    pub async fn start_agents_with_mirror(&mut self, repositories: &[&str]) -> Registry {
        let dir = std::env::temp_dir().join(format!("e2e-registry-{}", self.ns()));
        let mirror = Registry::start(&dir, &RegistryAuth::Open)
            .await
            .expect("the registry");
        for repository in repositories {
            mirror
                .push(repository, "1", None)
                .await
                .expect("pushing to the registry");
        }
        let host = mirror.host.clone();
        self.start_agents(
            1,
            vec![
                ("AUTO_AGENT_PLAIN_HTTP_REGISTRIES".into(), host.clone()),
                ("AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES".into(), host),
            ],
        )
        .await;
        mirror
    }

    /// The name of a ready pod of `app` other than `old` (its replacement), once there is one.
    pub async fn replacement_of(&self, app: &str, old: &str) -> String {
        let found = Mutex::new(None);
        crate::wait::poll_until(
            &format!("a replacement of {old}"),
            std::time::Duration::from_secs(90),
            || async {
                let other = self
                    .ready_pod_names(app)
                    .await
                    .into_iter()
                    .find(|p| p != old);
                let done = other.is_some();
                *found.lock().unwrap_or_else(|e| e.into_inner()) = other;
                Ok(done)
            },
        )
        .await
        .expect("the replacement pod");
        let pod = found.lock().unwrap_or_else(|e| e.into_inner()).take();
        pod.expect("a replacement pod")
    }

    /// The running agents.
    pub fn stack(&self) -> &AgentStack {
        self.stack.as_ref().expect("start_agents first")
    }

    pub fn stack_mut(&mut self) -> &mut AgentStack {
        self.stack.as_mut().expect("start_agents first")
    }

    /// The test namespace's name.
    pub fn ns(&self) -> &str {
        &self.apps.name
    }

    /// Pods in the test namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), self.ns())
    }

    /// Applies the AutoRemediationPolicy `name` with `spec` in the test namespace.
    pub fn policy(&self, name: &str, spec: serde_json::Value) {
        steps::apply_policy(&self.cluster, self.ns(), name, spec);
    }

    /// `kubectl apply` of a manifest (YAML or JSON) in the test namespace: a namespaced object names
    /// it or none; a cluster-scoped one (a NodeRemediationPolicy) is applied as it is.
    pub fn apply(&self, manifest: &str) {
        let (ok, _, err) = self
            .cluster
            .kubectl(&["apply", "-n", self.ns(), "-f", "-"], Some(manifest))
            .expect("kubectl apply");
        assert!(ok, "{err}");
    }

    /// The workload pinned to the agents' node unless it names another.
    fn here(&self, workload: Workload) -> Workload {
        match workload.node() {
            Some(_) => workload,
            None => workload.on_node(&self.node),
        }
    }

    /// Creates the workload in the test namespace and waits until all its replicas are ready.
    pub async fn rollout(&self, workload: Workload) {
        self.here(workload)
            .rollout(&self.admin, self.ns())
            .await
            .expect("rollout");
    }

    /// Creates the workload and returns the name of its pod once it runs.
    pub async fn running_pod(&self, workload: Workload) -> String {
        self.here(workload)
            .running_pod(&self.admin, self.ns())
            .await
            .expect("a running pod")
    }

    /// The names of `app`'s ready pods that are not being deleted.
    pub async fn ready_pod_names(&self, app: &str) -> Vec<String> {
        steps::ready_pods(&self.admin, self.ns(), app)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// Waits for an Event `reason` about `object` in the test namespace; returns its note.
    pub async fn wait_event(&self, object: &str, reason: &str) -> String {
        steps::wait_event(&self.admin, self.ns(), object, reason).await
    }

    /// Stops the agents, uninstalls the chart and deletes the test namespace, waiting for each.
    pub async fn finish(self) {
        let Self {
            admin, apps, stack, ..
        } = self;
        if let Some(stack) = stack {
            stack.delete().await.expect("stopping the agents");
        }
        apps.delete(admin)
            .await
            .expect("deleting the test namespace");
    }
}
