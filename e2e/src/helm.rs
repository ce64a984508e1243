//! The Helm CLI `e2e/cluster build` builds, and the project's chart (`charts/auto-agent`).
//!
//! - [`helm_binary`], [`Helm`]: lint, template, install, upgrade, uninstall.
//! - [`ChartRelease`]: the chart installed into a namespace, with the names of what it created
//!   (ServiceAccounts, Lease, ledger, TLS Secret), so a test can run the agent with the chart's
//!   own identities; uninstalled when dropped.
//! - [`fullname`]: the chart's naming rule (`templates/_helpers.tpl`), which a chart test keeps in
//!   step with the templates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::Cluster;
use crate::cluster::repo_root;

/// The Helm version `e2e/cluster` builds (its `HELM_VERSION`).
pub const HELM_VERSION: &str = "v3.22.0";

/// The chart's name (`Chart.yaml`).
pub const CHART_NAME: &str = "auto-agent";

/// Where `e2e/cluster` caches what it builds: `$AUTO_AGENT_CACHE`, else `~/.cache/auto-agent`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AUTO_AGENT_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/auto-agent"))
}

/// The helm binary `e2e/cluster build` put in its cache (`helm-$HELM_VERSION/helm`).
pub fn helm_binary() -> anyhow::Result<PathBuf> {
    let version = std::env::var("HELM_VERSION").unwrap_or_else(|_| HELM_VERSION.to_owned());
    let path = cache_dir()?.join(format!("helm-{version}")).join("helm");
    if !path.is_file() {
        bail!(
            "{} does not exist; run `e2e/cluster build` (or `e2e/cluster up`)",
            path.display()
        );
    }
    Ok(path)
}

/// `charts/auto-agent` in this checkout.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join(CHART_NAME)
}

/// The chart's base name of every resource for a release (`auto-agent.fullname`): the release name
/// when it contains "auto-agent", else `<release>-auto-agent`, cut to 63 characters.
pub fn fullname(release: &str) -> String {
    let name = if release.contains(CHART_NAME) {
        release.to_owned()
    } else {
        format!("{release}-{CHART_NAME}")
    };
    trunc63(&name)
}

fn trunc63(name: &str) -> String {
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// What one helm run printed.
#[derive(Clone, Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl HelmOutput {
    /// stdout, or an error with both streams when helm failed.
    pub fn ok(self, what: &str) -> anyhow::Result<String> {
        if !self.success {
            bail!("{what} failed:\n{}\n{}", self.stdout, self.stderr);
        }
        Ok(self.stdout)
    }
}

/// The helm CLI, optionally pointed at the local cluster. Its config, cache and data live in a
/// directory of their own, so the user's helm repositories and plugins play no part.
#[derive(Clone, Debug)]
pub struct Helm {
    binary: PathBuf,
    kubeconfig: Option<PathBuf>,
    home: PathBuf,
}

impl Helm {
    /// Helm for commands that need no cluster (lint, template).
    pub fn new() -> anyhow::Result<Self> {
        let home = std::env::temp_dir().join("auto-agent-e2e-helm");
        std::fs::create_dir_all(&home)?;
        Ok(Self {
            binary: helm_binary()?,
            kubeconfig: None,
            home,
        })
    }

    /// Helm talking to the local cluster as its admin.
    pub fn for_cluster(cluster: &Cluster) -> anyhow::Result<Self> {
        Ok(Self {
            kubeconfig: Some(cluster.kubeconfig_path().to_owned()),
            ..Self::new()?
        })
    }

    /// Runs helm with `args`.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<HelmOutput> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .current_dir(repo_root())
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"));
        match &self.kubeconfig {
            Some(path) => {
                cmd.env("KUBECONFIG", path);
            }
            None => {
                cmd.env_remove("KUBECONFIG");
            }
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {} {args:?}", self.binary.display()))?;
        Ok(HelmOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `helm lint charts/auto-agent <extra>`; the caller judges the output.
    pub fn lint(&self, extra: &[&str]) -> anyhow::Result<HelmOutput> {
        let chart = chart_dir();
        let mut args = vec!["lint", path_str(&chart)?];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `helm <verb> <release> charts/auto-agent -n <namespace> <flags> <extra>`.
    fn with_chart(
        &self,
        verb: &str,
        release: &str,
        namespace: &str,
        flags: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<String> {
        let chart = chart_dir();
        let mut args = vec![verb, release, path_str(&chart)?, "-n", namespace];
        args.extend_from_slice(flags);
        args.extend_from_slice(extra);
        self.run(&args)?.ok(&format!("helm {verb}"))
    }

    /// `helm template <release> charts/auto-agent -n <namespace> <extra>`: the rendered manifests.
    pub fn template(
        &self,
        release: &str,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        self.with_chart("template", release, namespace, &[], extra)
    }

    /// `helm install <release> charts/auto-agent -n <namespace> --create-namespace --wait=false
    /// <extra>`.
    pub fn install(
        &self,
        release: &str,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        let flags = ["--create-namespace", "--wait=false"];
        self.with_chart("install", release, namespace, &flags, extra)
    }

    /// `helm upgrade <release> charts/auto-agent -n <namespace> --wait=false <extra>`.
    pub fn upgrade(
        &self,
        release: &str,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        self.with_chart("upgrade", release, namespace, &["--wait=false"], extra)
    }

    /// `helm uninstall <release> -n <namespace> --wait` (also removes the cluster-scoped RBAC).
    pub fn uninstall(&self, release: &str, namespace: &str) -> anyhow::Result<()> {
        self.run(&[
            "uninstall",
            release,
            "-n",
            namespace,
            "--wait",
            "--timeout",
            "60s",
        ])?
        .ok("helm uninstall")?;
        Ok(())
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The chart installed into a namespace. Its ServiceAccounts are the agent's real identities:
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use auto_agent_e2e::{Cluster, TestNamespace, helm::ChartRelease};
/// let cluster = Cluster::get()?;
/// let ns = TestNamespace::create(&cluster, "agents").await?;
/// let chart = ChartRelease::install(&cluster, &ChartRelease::release_name("e2e"), &ns.name, &[])?;
/// // An API token of the controller's ServiceAccount, and the sensor's agent token bound to the
/// // DaemonSet pod on kwok-node-0 (so TokenReview names that node):
/// let api = cluster.service_account_token(&ns.name, &chart.controller_service_account(), &[], 3600).await?;
/// let (pod, uid) = chart.sensor_pod_on(&cluster, "kwok-node-0").await?;
/// let agent = cluster
///     .bound_token(&ns.name, &chart.sensor_service_account(), &["auto-agent"], (pod.as_str(), uid.as_str()))
///     .await?;
/// # let _ = (api, agent);
/// chart.uninstall()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChartRelease {
    pub release: String,
    pub namespace: String,
    /// The base name of every resource (`<fullname>-sensor`, `<fullname>-controller`, ...).
    pub fullname: String,
    helm: Helm,
    installed: bool,
}

impl ChartRelease {
    /// A release name unique to this test process that contains "auto-agent", so the chart's
    /// fullname is the release name itself: `auto-agent-<tag>-<pid>`.
    pub fn release_name(tag: &str) -> String {
        trunc63(&format!("{CHART_NAME}-{tag}-{}", std::process::id()))
    }

    /// `helm install` into `namespace` (created if missing) without waiting for the pods; `extra`
    /// are more helm arguments (`--set`, `--values`).
    pub fn install(
        cluster: &Cluster,
        release: &str,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let helm = Helm::for_cluster(cluster)?;
        helm.install(release, namespace, extra)?;
        Ok(Self {
            release: release.to_owned(),
            namespace: namespace.to_owned(),
            fullname: fullname(release),
            helm,
            installed: true,
        })
    }

    /// `helm upgrade` of this release with `extra` arguments.
    pub fn upgrade(&self, extra: &[&str]) -> anyhow::Result<String> {
        self.helm.upgrade(&self.release, &self.namespace, extra)
    }

    /// The sensor's ServiceAccount (and DaemonSet, ClusterRole) name.
    pub fn sensor_service_account(&self) -> String {
        trunc63(&format!("{}-sensor", self.fullname))
    }

    /// The controller's ServiceAccount (and Deployment, Service, ClusterRole, Role) name.
    pub fn controller_service_account(&self) -> String {
        trunc63(&format!("{}-controller", self.fullname))
    }

    /// `namespace/name` of the sensor ServiceAccount (AUTO_AGENT_SENSOR_SERVICE_ACCOUNT).
    pub fn sensor_service_account_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.sensor_service_account())
    }

    /// The Lease the chart lets the controller use (AUTO_AGENT_LEASE_NAME).
    pub fn lease_name(&self) -> String {
        self.controller_service_account()
    }

    /// The ledger ConfigMap the chart lets the controller use (AUTO_AGENT_LEDGER_NAME).
    pub fn ledger_name(&self) -> String {
        trunc63(&format!("{}-ledger", self.fullname))
    }

    /// The generated TLS Secret (tls.crt, tls.key, ca.crt) with the default values.
    pub fn tls_secret_name(&self) -> String {
        trunc63(&format!("{}-controller-tls", self.fullname))
    }

    /// The name the controller's certificate carries and sensors verify
    /// (`<fullname>-controller.<namespace>.svc`).
    pub fn controller_tls_name(&self) -> String {
        format!(
            "{}.{}.svc",
            self.controller_service_account(),
            self.namespace
        )
    }

    /// The label selector of one component's pods ("sensor" or "controller").
    pub fn selector(&self, component: &str) -> String {
        format!(
            "app.kubernetes.io/name={CHART_NAME},app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.release
        )
    }

    /// The chart's sensor pod on `node`: (name, uid), for a token bound to it.
    pub async fn sensor_pod_on(
        &self,
        cluster: &Cluster,
        node: &str,
    ) -> anyhow::Result<(String, String)> {
        let pods: Api<Pod> = Api::namespaced(cluster.admin().await?, &self.namespace);
        let list = pods
            .list(
                &ListParams::default()
                    .labels(&self.selector("sensor"))
                    .fields(&format!("spec.nodeName={node}")),
            )
            .await?;
        let pod = list
            .items
            .into_iter()
            .next()
            .with_context(|| format!("no sensor pod of {} on {node} yet", self.release))?;
        Ok((
            pod.metadata.name.context("pod without a name")?,
            pod.metadata.uid.context("pod without a uid")?,
        ))
    }

    /// `helm uninstall --wait`.
    pub fn uninstall(mut self) -> anyhow::Result<()> {
        self.installed = false;
        self.helm.uninstall(&self.release, &self.namespace)
    }
}

impl Drop for ChartRelease {
    fn drop(&mut self) {
        if self.installed {
            let _ = self.helm.uninstall(&self.release, &self.namespace);
        }
    }
}
