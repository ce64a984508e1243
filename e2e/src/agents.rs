//! Agent processes under test, with the identities a real install gives them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
use auto_agent_shared::proto::v1::{self as pb, sensor_message};

use crate::Cluster;
use crate::helm::ChartRelease;
use crate::process::{Process, binary, free_port, http_get};
use crate::wait::poll_until;

/// The chart installed into a namespace: the ServiceAccounts and RBAC a real install gives the
/// agent, which the processes under test run with (tokens minted by TokenRequest). The chart's own
/// controller Deployment is scaled to 0: the controllers run as processes.
#[derive(Debug)]
pub struct Install {
    pub chart: ChartRelease,
}

impl Install {
    /// Chart values for agents that run as processes: no controller pods of the chart's own.
    pub const PROCESS_VALUES: &'static [&'static str] = &["--set", "controller.replicas=0"];

    pub async fn create(cluster: &Cluster, namespace: &str) -> anyhow::Result<Self> {
        Self::create_with(cluster, namespace, Self::PROCESS_VALUES).await
    }

    /// Installs with `chart_args` (more helm arguments; `&[]` for the default values).
    pub async fn create_with(
        cluster: &Cluster,
        namespace: &str,
        chart_args: &[&str],
    ) -> anyhow::Result<Self> {
        let release = format!("auto-agent-{namespace}");
        let chart = ChartRelease::install(cluster, &release, namespace, chart_args)?;
        Ok(Self { chart })
    }

    /// The chart's sensor pod on `node` (the DaemonSet's), once it exists: (name, uid).
    pub async fn sensor_pod_on(
        &self,
        cluster: &Cluster,
        node: &str,
    ) -> anyhow::Result<(String, String)> {
        let found = std::sync::Mutex::new(None);
        poll_until(
            &format!("the chart's sensor pod on {node}"),
            Duration::from_secs(60),
            || async {
                let pod = self.chart.sensor_pod_on(cluster, node).await?;
                *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(pod);
                Ok(true)
            },
        )
        .await?;
        let pod = found.lock().unwrap_or_else(|e| e.into_inner()).take();
        pod.context("no sensor pod")
    }
}

/// The sensor's identity from the chart: a kubeconfig with a token of its ServiceAccount, and a
/// token file with the agent audience (bound to the DaemonSet's pod once bound to a node).
#[derive(Debug)]
pub struct SensorIdentity {
    pub namespace: String,
    pub service_account: String,
    pub dir: PathBuf,
    /// The pod the agent token is bound to, once bound.
    pub bound_pod: Option<(String, String)>,
    cluster: Cluster,
}

impl SensorIdentity {
    pub async fn create(cluster: &Cluster, install: &Install) -> anyhow::Result<Self> {
        Self::create_in(cluster, install, "").await
    }

    /// Another sensor identity, in a directory of its own (its own token), bound to the chart's
    /// sensor pod on `node`: for a second sensor process on another node.
    pub async fn for_node(
        cluster: &Cluster,
        install: &Install,
        node: &str,
    ) -> anyhow::Result<Self> {
        let mut identity = Self::create_in(cluster, install, &format!("-{node}")).await?;
        identity.bind_to_node(install, node).await?;
        Ok(identity)
    }

    async fn create_in(cluster: &Cluster, install: &Install, suffix: &str) -> anyhow::Result<Self> {
        let namespace = install.chart.namespace.clone();
        let service_account = install.chart.sensor_service_account();
        let dir = std::env::temp_dir().join(format!("e2e-sensor-{namespace}{suffix}"));
        std::fs::create_dir_all(&dir)?;
        let api_token = cluster
            .service_account_token(&namespace, &service_account, &[], 3600)
            .await?;
        cluster.write_token_kubeconfig(&dir.join("kubeconfig"), &api_token)?;
        let identity = Self {
            namespace,
            service_account,
            dir,
            bound_pod: None,
            cluster: cluster.clone(),
        };
        identity.refresh_agent_token().await?;
        Ok(identity)
    }

    /// Binds the agent token to the chart's sensor pod on `node` (as the DaemonSet's projected
    /// token is), and writes it. Returns the pod name.
    pub async fn bind_to_node(&mut self, install: &Install, node: &str) -> anyhow::Result<String> {
        let (name, uid) = install.sensor_pod_on(&self.cluster, node).await?;
        self.bound_pod = Some((name.clone(), uid));
        self.refresh_agent_token().await?;
        Ok(name)
    }

    /// Writes a new token with the agent audience, as the kubelet does when it rotates one.
    pub async fn refresh_agent_token(&self) -> anyhow::Result<()> {
        let audience = [auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE];
        let token = match &self.bound_pod {
            Some((name, uid)) => {
                self.cluster
                    .bound_token(
                        &self.namespace,
                        &self.service_account,
                        &audience,
                        (name, uid),
                    )
                    .await?
            }
            None => {
                self.cluster
                    .service_account_token(&self.namespace, &self.service_account, &audience, 3600)
                    .await?
            }
        };
        let tmp = self.dir.join("token.tmp");
        std::fs::write(&tmp, token)?;
        std::fs::rename(tmp, self.dir.join("token"))?;
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

/// The controller's identity from the chart: a kubeconfig with a token of its ServiceAccount, and
/// the Lease and ledger names its Role allows.
#[derive(Debug)]
pub struct ControllerIdentity {
    pub namespace: String,
    pub service_account: String,
    pub lease_name: String,
    pub ledger_name: String,
    /// `namespace/name` of the sensor ServiceAccount the controller accepts.
    pub sensor_service_account: String,
    pub dir: PathBuf,
}

impl ControllerIdentity {
    pub async fn create(cluster: &Cluster, install: &Install) -> anyhow::Result<Self> {
        let chart = &install.chart;
        let namespace = chart.namespace.clone();
        let service_account = chart.controller_service_account();
        let dir = std::env::temp_dir().join(format!("e2e-controller-{namespace}"));
        std::fs::create_dir_all(&dir)?;
        let token = cluster
            .service_account_token(&namespace, &service_account, &[], 3600)
            .await?;
        cluster.write_token_kubeconfig(&dir.join("kubeconfig"), &token)?;
        Ok(Self {
            namespace,
            service_account,
            lease_name: chart.lease_name(),
            ledger_name: chart.ledger_name(),
            sensor_service_account: chart.sensor_service_account_ref(),
            dir,
        })
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
    /// The release build (benchmarks) instead of the debug one.
    pub release: bool,
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
        Self::start_on(identity, options, admin, grpc).await
    }

    /// Like `start`, on given admin and gRPC addresses (a replacement behind the same Service
    /// endpoint).
    pub async fn start_on(
        identity: &ControllerIdentity,
        options: &ControllerOptions,
        admin: SocketAddr,
        grpc: SocketAddr,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary("auto-agent-controller", options.release)?);
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
            // On every interface: the apiserver's service proxy reaches it at the host's address
            // (the kubectl plugin's `incidents`); tests use loopback.
            .env("AUTO_AGENT_ADMIN_ADDR", format!("0.0.0.0:{}", admin.port()))
            .env("AUTO_AGENT_LEASE_NAME", &identity.lease_name)
            .env("AUTO_AGENT_LEDGER_NAME", &identity.ledger_name)
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
    pub install: Install,
    pub controller_id: ControllerIdentity,
    pub sensor_id: SensorIdentity,
    pub controllers: Vec<Controller>,
    pub sensor: Sensor,
    pub service: crate::proxy::ServiceProxy,
    pub pki: crate::pki::TestPki,
    pub bundle_dir: PathBuf,
    /// The controllers' extra environment, for replacements.
    controller_env: Vec<(String, String)>,
    /// Replacements started so far (each gets a new name, as a Deployment's new pod does).
    replacements: usize,
    /// How the sensor was started, for its replacement.
    sensor_options: SensorOptions,
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
        Self::start_with(cluster, node, replicas, env, Install::PROCESS_VALUES).await
    }

    /// Like `start_with_env`, installing the chart with `chart_args` (`&[]`: default values).
    pub async fn start_with(
        cluster: &Cluster,
        node: &str,
        replicas: usize,
        env: Vec<(String, String)>,
        chart_args: &[&str],
    ) -> anyhow::Result<Self> {
        let namespace = crate::TestNamespace::create(cluster, "agents").await?;
        let install = Install::create_with(cluster, &namespace.name, chart_args).await?;
        let controller_id = ControllerIdentity::create(cluster, &install).await?;
        let mut sensor_id = SensorIdentity::create(cluster, &install).await?;
        sensor_id.bind_to_node(&install, node).await?;
        let pki =
            crate::pki::TestPki::create(&controller_id.dir.join("pki"), &[CONTROLLER_TLS_NAME])?;
        let bundle_dir = controller_id.dir.join("bundles");
        let mut controllers = Vec::new();
        for i in 0..replicas {
            let options = ControllerOptions {
                name: format!("controller-{i}"),
                sensor_service_account: controller_id.sensor_service_account.clone(),
                tls: Some(pki.clone()),
                lease_seconds: 6,
                renew_seconds: 2,
                fence_margin_seconds: 2,
                bundle_dir: bundle_dir.clone(),
                env: env.clone(),
                release: false,
            };
            controllers.push(Controller::start(&controller_id, &options).await?);
        }
        let service =
            crate::proxy::ServiceProxy::start(controllers.iter().map(|c| c.grpc).collect()).await?;
        let sensor_options = SensorOptions {
            node: node.to_owned(),
            controller: format!("https://{}", service.addr),
            ca_file: Some(pki.ca_file.clone()),
            tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
            ..SensorOptions::default()
        };
        let sensor = Sensor::start(cluster, &sensor_id, &sensor_options).await?;
        let stack = Self {
            namespace,
            install,
            controller_id,
            sensor_id,
            controllers,
            sensor,
            service,
            pki,
            bundle_dir,
            controller_env: env,
            replacements: 0,
            sensor_options,
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

    /// Replica `i` stops as on pod deletion (SIGTERM, 30 s grace) and loses its volumes (the
    /// spool's emptyDir); a new replica with `env` starts in its place, as the Deployment would.
    pub async fn replace_controller(
        &mut self,
        i: usize,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let old = &mut self.controllers[i];
        old.process.terminate(Duration::from_secs(30)).await?;
        let spool = self.controller_id.dir.join(format!("{}-spool", old.name));
        if spool.exists() {
            std::fs::remove_dir_all(&spool)?;
        }
        let options = self.replica_options(format!("controller-{}", self.controllers.len()), env);
        let replacement = Controller::start(&self.controller_id, &options).await?;
        self.controllers.push(replacement);
        Ok(())
    }

    /// A replica's options as `start` gives them (lease 6 s, renew 2 s), under a new name.
    fn replica_options(&self, name: String, env: Vec<(String, String)>) -> ControllerOptions {
        ControllerOptions {
            name,
            sensor_service_account: self.controller_id.sensor_service_account.clone(),
            tls: Some(self.pki.clone()),
            lease_seconds: 6,
            renew_seconds: 2,
            fence_margin_seconds: 2,
            bundle_dir: self.bundle_dir.clone(),
            env,
            release: false,
        }
    }

    /// The action ledger the controllers share (the ConfigMap's `actions.json`).
    pub async fn ledger(
        &self,
        admin: &kube::Client,
    ) -> anyhow::Result<auto_agent_engine::decide::History> {
        let cm = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
            admin.clone(),
            &self.namespace.name,
        )
        .get(&self.controller_id.ledger_name)
        .await?;
        let data = cm.data.unwrap_or_default();
        let json = data
            .get("actions.json")
            .context("the ledger has no actions.json")?;
        Ok(serde_json::from_str(json)?)
    }

    /// SIGKILLs replica `i` (no drain, no lease release) and starts a new replica, with a new
    /// name, on its addresses, as a Deployment replaces a pod behind the same Service.
    pub async fn kill_and_replace(&mut self, i: usize) -> anyhow::Result<()> {
        let old = &mut self.controllers[i];
        old.kill();
        let (admin, grpc) = (old.admin, old.grpc);
        self.replacements += 1;
        let name = format!("controller-r{}", self.replacements);
        let options = self.replica_options(name, self.controller_env.clone());
        self.controllers[i] =
            Controller::start_on(&self.controller_id, &options, admin, grpc).await?;
        Ok(())
    }

    /// SIGKILLs the sensor (no drain, its queue lost) and starts a new one for the same node with
    /// the same identity, as the DaemonSet would.
    pub async fn kill_and_replace_sensor(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        self.sensor.process.kill();
        self.sensor = Sensor::start(cluster, &self.sensor_id, &self.sensor_options).await?;
        Ok(())
    }

    pub async fn delete(self) -> anyhow::Result<()> {
        drop(self.sensor);
        drop(self.controllers);
        self.install.chart.uninstall()?;
        Ok(())
    }
}

/// Opens a raw sensor stream against one replica (a Hello for `node`, with `token` as its bearer
/// token if any) and returns the first answer: for tests of what the controller refuses.
pub async fn raw_stream(
    addr: SocketAddr,
    pki: &crate::pki::TestPki,
    token: Option<&str>,
    node: &str,
) -> Result<pb::ControllerMessage, tonic::Status> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let setup = |e: &dyn std::fmt::Display| tonic::Status::unknown(format!("test client: {e}"));
    let ca = std::fs::read(&pki.ca_file).map_err(|e| setup(&e))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(CONTROLLER_TLS_NAME);
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| setup(&e))?
        .tls_config(tls)
        .map_err(|e| setup(&e))?
        .connect()
        .await
        .map_err(|e| setup(&e))?;
    let mut client = SensorIngestClient::new(channel);
    let hello = pb::SensorMessage {
        message: Some(sensor_message::Message::Hello(pb::Hello {
            node_name: node.into(),
            instance_id: "raw".into(),
            version: "test".into(),
        })),
    };
    let mut request = tonic::Request::new(tokio_stream::iter(vec![hello]));
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().map_err(|e| setup(&e))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut inbound = client.stream(request).await?.into_inner();
    inbound
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("stream ended without a message"))
}
