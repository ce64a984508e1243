//! The Kubernetes client configuration both binaries use: a kubeconfig file when given (out of
//! cluster: the demo and the e2e tests), else the usual inference (in-cluster in a pod).

use std::path::Path;

use anyhow::Context;

pub async fn kube_config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?)
        }
        None => Ok(kube::Config::infer().await?),
    }
}
