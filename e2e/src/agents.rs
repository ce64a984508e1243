//! Agent processes under test, with the identities a real install gives them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::Cluster;
use crate::process::{Process, binary, free_port, http_get};
use crate::wait::poll_until;

/// A read-only sensor identity: ServiceAccount, ClusterRole (pods, pods/log, nodes: read verbs
/// only) and binding, a kubeconfig with its API token, and a token file with the agent audience.
#[derive(Debug)]
pub struct SensorIdentity {
    pub namespace: String,
    pub role: String,
    pub dir: PathBuf,
    /// The pod the agent token is bound to, once bound.
    pub bound_pod: Option<(String, String)>,
    cluster: Cluster,
}

impl SensorIdentity {
    pub async fn create(cluster: &Cluster, namespace: &str) -> anyhow::Result<Self> {
        let client = cluster.admin().await?;
        let role = format!("e2e-sensor-{namespace}");
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "sensor"}}))?,
            )
            .await?;
        let cluster_role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            ],
        }))?;
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &cluster_role)
            .await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "sensor", "namespace": namespace}],
        }))?;
        Api::<ClusterRoleBinding>::all(client)
            .create(&PostParams::default(), &binding)
            .await?;

        let dir = std::env::temp_dir().join(format!("e2e-sensor-{namespace}"));
        std::fs::create_dir_all(&dir)?;
        let api_token = cluster
            .service_account_token(namespace, "sensor", &[], 3600)
            .await?;
        cluster.write_token_kubeconfig(&dir.join("kubeconfig"), &api_token)?;
        let identity = Self {
            namespace: namespace.to_owned(),
            role,
            dir,
            bound_pod: None,
            cluster: cluster.clone(),
        };
        identity.refresh_agent_token().await?;
        Ok(identity)
    }

    /// Binds the agent token to a pod of the sensor ServiceAccount on `node` (as the DaemonSet's
    /// projected token is), and writes it. Returns the pod name.
    pub async fn bind_to_node(&mut self, node: &str) -> anyhow::Result<String> {
        let client = self.cluster.admin().await?;
        let name = format!("sensor-{node}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "auto-agent-sensor"}},
            "spec": {"serviceAccountName": "sensor", "nodeName": node, "automountServiceAccountToken": false,
                     "containers": [{"name": "sensor", "image": "auto-agent-sensor:e2e"}]},
        }))?;
        let created = Api::<Pod>::namespaced(client, &self.namespace)
            .create(&PostParams::default(), &pod)
            .await?;
        let uid = created.metadata.uid.context("pod has no uid")?;
        self.bound_pod = Some((name.clone(), uid));
        self.refresh_agent_token().await?;
        Ok(name)
    }

    /// Writes a new token with the agent audience, as the kubelet does when it rotates one.
    pub async fn refresh_agent_token(&self) -> anyhow::Result<()> {
        let token = match &self.bound_pod {
            Some((name, uid)) => {
                self.cluster
                    .bound_token(&self.namespace, "sensor", &["auto-agent"], (name, uid))
                    .await?
            }
            None => {
                self.cluster
                    .service_account_token(&self.namespace, "sensor", &["auto-agent"], 3600)
                    .await?
            }
        };
        let tmp = self.dir.join("token.tmp");
        std::fs::write(&tmp, token)?;
        std::fs::rename(tmp, self.dir.join("token"))?;
        Ok(())
    }

    pub async fn delete(&self) -> anyhow::Result<()> {
        let client = self.cluster.admin().await?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&self.role, &DeleteParams::default())
            .await?;
        Api::<ClusterRole>::all(client)
            .delete(&self.role, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// How to run a sensor.
#[derive(Clone, Debug, Default)]
pub struct SensorOptions {
    pub node: String,
    /// `http://` (plaintext) or `https://` controller URL.
    pub controller: String,
    pub ca_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub release: bool,
    pub token_check_seconds: Option<u64>,
}

/// A running sensor process and its admin address.
#[derive(Debug)]
pub struct Sensor {
    pub process: Process,
    pub admin: SocketAddr,
}

impl Sensor {
    pub async fn start(
        cluster: &Cluster,
        identity: &SensorIdentity,
        options: &SensorOptions,
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(binary("auto-agent-sensor", options.release)?);
        cmd.env("NODE_NAME", &options.node)
            .env("KUBECONFIG", identity.dir.join("kubeconfig"))
            .env("AUTO_AGENT_CONTROLLER", &options.controller)
            .env("AUTO_AGENT_TOKEN_FILE", identity.dir.join("token"))
            .env(
                "AUTO_AGENT_POD_LOG_DIR",
                cluster.state_dir().join("pod-logs"),
            )
            .env("AUTO_AGENT_ADMIN_ADDR", admin.to_string())
            .env("AUTO_AGENT_LOG", "info");
        match &options.ca_file {
            Some(ca) => {
                cmd.env("AUTO_AGENT_CA_FILE", ca);
            }
            None => {
                cmd.env("AUTO_AGENT_INSECURE_PLAINTEXT", "true");
            }
        }
        if let Some(name) = &options.tls_server_name {
            cmd.env("AUTO_AGENT_TLS_SERVER_NAME", name);
        }
        if let Some(s) = options.token_check_seconds {
            cmd.env("AUTO_AGENT_TOKEN_CHECK_SECONDS", s.to_string());
        }
        let log = identity.dir.join(format!("sensor-{}.log", options.node));
        let process = Process::spawn(cmd, log)?;
        let sensor = Self { process, admin };
        poll_until("sensor ready", Duration::from_secs(60), || async move {
            Ok(http_get(admin, "/ready").await?.0 == 200)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", sensor.process.output()))?;
        Ok(sensor)
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.admin, "/metrics").await?.1)
    }
}

/// The controller's identity: ServiceAccount, a ClusterRole with exactly what the controller uses
/// today (TokenReview, reading pods and workloads, policies and their status, Events) and a Role for
/// its Lease in its own namespace.
#[derive(Debug)]
pub struct ControllerIdentity {
    pub namespace: String,
    pub role: String,
    pub dir: PathBuf,
    cluster: Cluster,
}

impl ControllerIdentity {
    pub async fn create(cluster: &Cluster, namespace: &str) -> anyhow::Result<Self> {
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let client = cluster.admin().await?;
        let role = format!("e2e-controller-{namespace}");
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "controller"}}))?,
            )
            .await?;
        let cluster_role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]},
                {"apiGroups": ["autoagent.io"], "resources": ["noderemediationpolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
                 "verbs": ["get", "list", "patch"]},
                {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["get", "patch"]},
                {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
                {"apiGroups": ["autoagent.io"], "resources": ["autoremediationpolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["autoagent.io"], "resources": ["autoremediationpolicies/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        }))?;
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &cluster_role)
            .await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": namespace}],
        }))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await?;
        let lease_role: Role = serde_json::from_value(json!({
            "metadata": {"name": "controller-lease"},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
            ],
        }))?;
        Api::<Role>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &lease_role)
            .await?;
        let lease_binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "controller-lease"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "controller-lease"},
            "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": namespace}],
        }))?;
        Api::<RoleBinding>::namespaced(client, namespace)
            .create(&PostParams::default(), &lease_binding)
            .await?;

        let dir = std::env::temp_dir().join(format!("e2e-controller-{namespace}"));
        std::fs::create_dir_all(&dir)?;
        let token = cluster
            .service_account_token(namespace, "controller", &[], 3600)
            .await?;
        cluster.write_token_kubeconfig(&dir.join("kubeconfig"), &token)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            role,
            dir,
            cluster: cluster.clone(),
        })
    }

    pub async fn delete(&self) -> anyhow::Result<()> {
        let client = self.cluster.admin().await?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&self.role, &DeleteParams::default())
            .await?;
        Api::<ClusterRole>::all(client)
            .delete(&self.role, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// How to run one controller replica.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    pub name: String,
    /// `namespace/name` of the sensor ServiceAccount.
    pub sensor_service_account: String,
    pub tls: Option<crate::pki::TestPki>,
    pub lease_seconds: u64,
    pub renew_seconds: u64,
    pub fence_margin_seconds: u64,
    /// The filesystem evidence store.
    pub bundle_dir: PathBuf,
    /// Extra environment (flags) for the controller.
    pub env: Vec<(String, String)>,
}

/// A running controller replica.
#[derive(Debug)]
pub struct Controller {
    pub name: String,
    pub process: Process,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
}

impl Controller {
    pub async fn start(
        identity: &ControllerIdentity,
        options: &ControllerOptions,
    ) -> anyhow::Result<Self> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = Command::new(binary("auto-agent-controller", false)?);
        cmd.env("POD_NAME", &options.name)
            .env("POD_NAMESPACE", &identity.namespace)
            .env("KUBECONFIG", identity.dir.join("kubeconfig"))
            .env("AUTO_AGENT_GRPC_ADDR", grpc.to_string())
            .env("AUTO_AGENT_GRPC_ADVERTISE", grpc.to_string())
            .env(
                "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT",
                &options.sensor_service_account,
            )
            .env(
                "AUTO_AGENT_LEASE_SECONDS",
                options.lease_seconds.to_string(),
            )
            .env(
                "AUTO_AGENT_RENEW_SECONDS",
                options.renew_seconds.to_string(),
            )
            .env(
                "AUTO_AGENT_FENCE_MARGIN_SECONDS",
                options.fence_margin_seconds.to_string(),
            )
            .env("AUTO_AGENT_ADMIN_ADDR", admin.to_string())
            .env("AUTO_AGENT_BUNDLE_DIR", &options.bundle_dir)
            .env(
                "AUTO_AGENT_SPOOL_DIR",
                identity.dir.join(format!("{}-spool", options.name)),
            )
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AUTO_AGENT_LOG", "info");
        match &options.tls {
            Some(pki) => {
                cmd.env("AUTO_AGENT_TLS_CERT_FILE", &pki.cert_file)
                    .env("AUTO_AGENT_TLS_KEY_FILE", &pki.key_file);
            }
            None => {
                cmd.env("AUTO_AGENT_INSECURE_PLAINTEXT", "true");
            }
        }
        let process = Process::spawn(cmd, identity.dir.join(format!("{}.log", options.name)))?;
        let controller = Self {
            name: options.name.clone(),
            process,
            admin,
            grpc,
        };
        poll_until("controller ready", Duration::from_secs(60), || async move {
            Ok(http_get(admin, "/ready").await?.0 == 200)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", controller.process.output()))?;
        Ok(controller)
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.admin, "/metrics").await?.1)
    }

    /// SIGKILL: no drain, no lease release (the harshest failover).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn process_alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.process.pid())).exists()
            && !self.process.exited()
    }
}

/// The TLS server name the test certificates carry (the chart's Service name).
pub const CONTROLLER_TLS_NAME: &str = "auto-agent-controller.auto-agent.svc";

/// A whole agent: controller replicas behind a Service stand-in and one sensor, each with its own
/// least-privilege identity, TLS between them.
#[derive(Debug)]
pub struct AgentStack {
    pub namespace: crate::TestNamespace,
    pub controller_id: ControllerIdentity,
    pub sensor_id: SensorIdentity,
    pub controllers: Vec<Controller>,
    pub sensor: Sensor,
    pub service: crate::proxy::ServiceProxy,
    pub pki: crate::pki::TestPki,
    pub bundle_dir: PathBuf,
}

impl AgentStack {
    /// Starts `replicas` controllers (lease 6 s, renew 2 s) and a sensor for `node`, and waits for a
    /// leader.
    pub async fn start(cluster: &Cluster, node: &str, replicas: usize) -> anyhow::Result<Self> {
        Self::start_with_env(cluster, node, replicas, Vec::new()).await
    }

    /// Like `start`, with extra controller environment (flags).
    pub async fn start_with_env(
        cluster: &Cluster,
        node: &str,
        replicas: usize,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let namespace = crate::TestNamespace::create(cluster, "agents").await?;
        let controller_id = ControllerIdentity::create(cluster, &namespace.name).await?;
        let mut sensor_id = SensorIdentity::create(cluster, &namespace.name).await?;
        sensor_id.bind_to_node(node).await?;
        let pki =
            crate::pki::TestPki::create(&controller_id.dir.join("pki"), &[CONTROLLER_TLS_NAME])?;
        let bundle_dir = controller_id.dir.join("bundles");
        let mut controllers = Vec::new();
        for i in 0..replicas {
            let options = ControllerOptions {
                name: format!("controller-{i}"),
                sensor_service_account: format!("{}/sensor", namespace.name),
                tls: Some(pki.clone()),
                lease_seconds: 6,
                renew_seconds: 2,
                fence_margin_seconds: 2,
                bundle_dir: bundle_dir.clone(),
                env: env.clone(),
            };
            controllers.push(Controller::start(&controller_id, &options).await?);
        }
        let service =
            crate::proxy::ServiceProxy::start(controllers.iter().map(|c| c.grpc).collect()).await?;
        let sensor = Sensor::start(
            cluster,
            &sensor_id,
            &SensorOptions {
                node: node.to_owned(),
                controller: format!("https://{}", service.addr),
                ca_file: Some(pki.ca_file.clone()),
                tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
                ..SensorOptions::default()
            },
        )
        .await?;
        let stack = Self {
            namespace,
            controller_id,
            sensor_id,
            controllers,
            sensor,
            service,
            pki,
            bundle_dir,
        };
        poll_until("a leader", Duration::from_secs(60), || {
            let leader = stack.leader();
            async move { Ok(leader.await.is_some()) }
        })
        .await?;
        Ok(stack)
    }

    /// The index of the replica that leads, if exactly one does.
    pub async fn leader(&self) -> Option<usize> {
        let mut leaders = Vec::new();
        for (i, c) in self.controllers.iter().enumerate() {
            if c.process_alive()
                && c.metrics()
                    .await
                    .is_ok_and(|m| crate::process::metric_sum(&m, "auto_agent_leader") == 1.0)
            {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// A metric summed over every live replica.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for c in self.controllers.iter().filter(|c| c.process_alive()) {
            if let Ok(m) = c.metrics().await {
                sum += crate::process::metric_sum(&m, name);
            }
        }
        sum
    }

    /// A labelled metric summed over every live replica, counting only series whose labels contain
    /// `label` (e.g. `namespace="apps-1"`), so other tests' workloads do not count.
    pub async fn metric_with(&self, name: &str, label: &str) -> f64 {
        let mut sum = 0.0;
        for c in self.controllers.iter().filter(|c| c.process_alive()) {
            if let Ok(m) = c.metrics().await {
                sum += m
                    .lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>();
            }
        }
        sum
    }

    /// Bundles written so far, as paths relative to the store's root.
    pub fn bundles(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.bundle_dir, &self.bundle_dir, &mut out);
        out.sort();
        out
    }

    pub async fn delete(self) -> anyhow::Result<()> {
        drop(self.sensor);
        self.controller_id.delete().await?;
        self.sensor_id.delete().await?;
        Ok(())
    }
}
