//! The real node `e2e/node` runs beside the KWOK nodes (kubelet, containerd, runc, CNI bridge,
//! kube-proxy, CoreDNS, two registries), and the agent's images `scripts/images.sh` assembles.
//!
//! [`RealNode::up`] starts it (the cluster must be up) and stops it when dropped, so the node and
//! its taint never outlive the test that asked for it; other tests keep to the KWOK nodes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::Cluster;
use crate::cluster::repo_root;

fn node_script() -> PathBuf {
    repo_root().join("e2e/node")
}

fn images_script() -> PathBuf {
    repo_root().join("scripts/images.sh")
}

/// The taint `e2e/node` registers the node with; pods meant for it tolerate it.
pub const REAL_NODE_TAINT: &str = "autoagent.io/real-node";

fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{what} failed ({}):\n{stderr}", out.status);
    }
    Ok(String::from_utf8(out.stdout)? + &stderr)
}

#[derive(Debug)]
pub struct RealNode {
    /// The Node's name (`real-node-0`).
    pub name: String,
    /// `localhost:<port>`: the registry containerd pulls the agent's images from.
    pub registry: String,
    /// `<host address>:<port>`: a second registry, reachable from pods too (the mirror).
    pub mirror: String,
    /// This machine's address, where pods reach servers on the host.
    pub host_ip: String,
    /// The kubelet's podLogsDir (the chart's `sensor.podLogDir`).
    pub pod_logs: PathBuf,
    /// The kubelet's root directory (volumes of the node's pods).
    pub kubelet_root: PathBuf,
    /// The node's process logs (kubelet, containerd, ...).
    pub logs: PathBuf,
}

impl RealNode {
    /// Why this machine cannot run the node (`e2e/node probe`), or `None` when it can.
    pub fn unavailable() -> Option<String> {
        match Command::new(node_script()).arg("probe").output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Err(e) => Some(format!("running e2e/node probe: {e}")),
        }
    }

    /// `e2e/node up` (building the node on a cache miss), then its environment.
    pub fn up(cluster: &Cluster) -> anyhow::Result<Self> {
        let mut cmd = Command::new(node_script());
        cmd.arg("up");
        run(cmd, "e2e/node up")?;
        let mut cmd = Command::new(node_script());
        cmd.arg("env");
        let env = run(cmd, "e2e/node env")?;
        let var = |key: &str| -> anyhow::Result<String> {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .map(str::to_owned)
                .with_context(|| format!("e2e/node env prints {key}"))
        };
        let state = cluster.state_dir().join("node");
        Ok(Self {
            name: var("NODE_NAME")?,
            registry: var("REGISTRY")?,
            mirror: var("MIRROR")?,
            host_ip: var("HOST_IP")?,
            pod_logs: PathBuf::from(var("POD_LOGS")?),
            kubelet_root: state.join("kubelet"),
            logs: state.join("logs"),
        })
    }

    /// The last lines of one of the node's process logs, for a failure message.
    pub fn log_tail(&self, process: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("{process}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `scripts/images.sh build` then `push` to this node's registry under `tag`.
    pub fn push_agent_images(&self, tag: &str) -> anyhow::Result<Vec<AgentImage>> {
        let mut cmd = Command::new(images_script());
        cmd.arg("build");
        run(cmd, "scripts/images.sh build")?;
        let mut cmd = Command::new(images_script());
        cmd.args(["push", &self.registry, tag]);
        run(cmd, "scripts/images.sh push")?;
        ["auto-agent-sensor", "auto-agent-controller"]
            .into_iter()
            .map(|name| AgentImage::read(name, &self.registry, tag))
            .collect()
    }

    /// Debian's busybox-static as `<registry>/busybox:1.35` (`scripts/images.sh busybox`).
    pub fn push_busybox(&self, registry: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(images_script());
        cmd.args(["busybox", registry]);
        run(cmd, "scripts/images.sh busybox")?;
        Ok(format!("{registry}/busybox:1.35"))
    }

    /// Copies the image `from` to `to` (`scripts/images.sh copy`, plain HTTP allowed).
    pub fn copy_image(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(images_script());
        cmd.args(["copy", from, to]);
        run(cmd, "scripts/images.sh copy")?;
        Ok(())
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let _ = Command::new(node_script()).arg("down").status();
    }
}

/// One of the agent's images as pushed: its reference and the compressed size of its layers.
#[derive(Clone, Debug)]
pub struct AgentImage {
    pub name: String,
    pub reference: String,
    /// Sum of the compressed layers and the config, as a registry stores them.
    pub compressed_bytes: u64,
    /// The binary's size in the image.
    pub binary_bytes: u64,
}

impl AgentImage {
    fn read(name: &str, registry: &str, tag: &str) -> anyhow::Result<Self> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        let blobs = target.join("images").join(name).join("blobs/sha256");
        let compressed_bytes = dir_size(&blobs)?;
        let binary_bytes = std::fs::metadata(target.join("release").join(name))?.len();
        Ok(Self {
            name: name.to_owned(),
            reference: format!("{registry}/{name}:{tag}"),
            compressed_bytes,
            binary_bytes,
        })
    }
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}
