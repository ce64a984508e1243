//! Start or reuse the local control plane and build clients for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The repository root (this crate lives in `e2e/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cluster_script() -> PathBuf {
    repo_root().join("e2e/cluster")
}

static UP: Mutex<Option<Paths>> = Mutex::new(None);

/// A handle on the running cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

type Paths = (PathBuf, PathBuf);

impl Cluster {
    /// Brings the cluster up once per test process (`e2e/cluster up` is idempotent and builds the
    /// binaries on a cache miss) and returns a handle.
    pub fn get() -> anyhow::Result<Self> {
        let mut up = UP.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kubeconfig, kubectl)) = up.as_ref() {
            return Ok(Self {
                kubeconfig: kubeconfig.clone(),
                kubectl: kubectl.clone(),
            });
        }
        let status = Command::new(cluster_script())
            .arg("up")
            .status()
            .context("running e2e/cluster up")?;
        if !status.success() {
            bail!("e2e/cluster up failed ({status})");
        }
        let out = Command::new(cluster_script()).arg("kubeconfig").output()?;
        let kubeconfig = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let env = String::from_utf8(Command::new(cluster_script()).arg("env").output()?.stdout)?;
        let bin_dir = env
            .lines()
            .find_map(|l| l.strip_prefix("export PATH="))
            .and_then(|p| p.split(':').next())
            .context("e2e/cluster env prints PATH")?;
        let kubectl = Path::new(bin_dir).join("kubectl");
        *up = Some((kubeconfig.clone(), kubectl.clone()));
        Ok(Self {
            kubeconfig,
            kubectl,
        })
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's state directory (holds the kubeconfig, PKI, logs and seeded pod logs).
    pub fn state_dir(&self) -> &Path {
        self.kubeconfig.parent().unwrap_or(Path::new("."))
    }

    /// Client configuration for the admin (system:masters).
    pub async fn admin_config(&self) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    pub async fn admin(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }

    /// A token for a ServiceAccount through the TokenRequest API, as a projected volume would get.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        expiration_seconds: i64,
    ) -> anyhow::Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| (*a).to_owned()).collect()),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: None,
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        response
            .status
            .and_then(|s| s.token)
            .context("TokenRequest returned no token")
    }

    /// Applies `crds/` with kubectl and waits until both CRDs are established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds_dir = repo_root().join("crds");
        let (ok, _, err) = self.kubectl(&["apply", "-f", &crds_dir.to_string_lossy()], None)?;
        if !ok {
            bail!("applying crds/ failed: {err}");
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.admin().await?);
        for name in [
            "autoremediationpolicies.autoagent.io",
            "noderemediationpolicies.autoagent.io",
        ] {
            crate::wait::until(
                api.clone(),
                name,
                std::time::Duration::from_secs(60),
                kube::runtime::wait::conditions::is_crd_established(),
            )
            .await?;
        }
        Ok(())
    }

    /// A token bound to a pod (as a projected volume in that pod gets): its TokenReview names the
    /// pod and, on Kubernetes 1.30+, the pod's node.
    pub async fn bound_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        pod: (&str, &str),
    ) -> anyhow::Result<String> {
        use k8s_openapi::api::authentication::v1::BoundObjectReference;
        let api: Api<ServiceAccount> = Api::namespaced(self.admin().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.0.to_owned()),
                    uid: Some(pod.1.to_owned()),
                }),
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        response
            .status
            .and_then(|s| s.token)
            .context("TokenRequest returned no token")
    }

    /// Writes a kubeconfig that authenticates with `token` (for agent processes under test).
    pub fn write_token_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        let admin = Kubeconfig::read_from(&self.kubeconfig)?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .context("admin kubeconfig has no cluster")?;
        let server = cluster.server.context("no server")?;
        let ca = cluster.certificate_authority.context("no CA file")?;
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}\n\
                 users:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: sa}}\n\
                 current-context: e2e\n"
            ),
        )?;
        Ok(())
    }

    /// A client that authenticates as a ServiceAccount: what proves RBAC.
    pub async fn client_as(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<Client> {
        let token = self
            .service_account_token(namespace, service_account, &[], 3600)
            .await?;
        let mut config = self.admin_config().await?;
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(Client::try_from(config)?)
    }

    /// Creates the KWOK node `name` unless it exists (roomy: 64 CPUs, 250 pods) and waits until it
    /// is Ready. For tests and benchmarks that want a node of their own, beside the 3 `up` makes.
    pub async fn ensure_kwok_node(&self, name: &str) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Node;
        let nodes: Api<Node> = Api::all(self.admin().await?);
        // The labels `e2e/cluster up` gives its nodes (the chart's DaemonSet selects linux nodes).
        let labels = serde_json::json!({"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                                        "kubernetes.io/hostname": name, "type": "kwok"});
        if nodes.get_opt(name).await?.is_none() {
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": labels},
            }))?;
            nodes.create(&PostParams::default(), &node).await?;
        } else {
            nodes
                .patch(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
                )
                .await?;
        }
        // Through the status subresource, for a node kept from an earlier run too. Real nodes
        // report ephemeral storage; the chart's pods request it.
        let room = serde_json::json!({"cpu": "64", "memory": "256Gi", "pods": "250",
                                      "ephemeral-storage": "100Gi"});
        nodes
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"status": {"allocatable": room, "capacity": room}}),
                ),
            )
            .await?;
        crate::wait::poll_until(
            &format!("node {name} Ready"),
            std::time::Duration::from_secs(60),
            || {
                let nodes = nodes.clone();
                async move {
                    let node = nodes.get(name).await?;
                    Ok(node
                        .status
                        .and_then(|s| s.conditions)
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True"))
                }
            },
        )
        .await
    }

    /// Stops `etcd` or `kube-apiserver` alone (SIGTERM, SIGKILL after 5 s), the rest left running.
    pub fn stop_component(&self, component: &str) -> anyhow::Result<()> {
        self.component("stop", component)
    }

    /// Starts `etcd` or `kube-apiserver` again on its ports and waits until it serves.
    pub fn start_component(&self, component: &str) -> anyhow::Result<()> {
        self.component("start", component)
    }

    fn component(&self, verb: &str, component: &str) -> anyhow::Result<()> {
        let status = Command::new(cluster_script())
            .args([verb, component])
            .status()
            .with_context(|| format!("running e2e/cluster {verb} {component}"))?;
        if !status.success() {
            bail!("e2e/cluster {verb} {component} failed ({status})");
        }
        Ok(())
    }

    /// The apiserver's audit log (every write by a ServiceAccount, see `e2e/cluster`), older
    /// rotated files first.
    pub fn audit_events(&self) -> anyhow::Result<Vec<crate::audit::AuditEvent>> {
        crate::audit::read_dir(&self.state_dir().join("logs"))
    }

    /// Runs the cached kubectl against the cluster, returning (success, stdout, stderr).
    pub fn kubectl(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(bool, String, String)> {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
