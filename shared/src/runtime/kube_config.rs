//! The Kubernetes client configuration both binaries use: a kubeconfig file when given (out of
//! cluster: the demo and the e2e tests), else the usual inference (in-cluster in a pod). Every
//! request carries a User-Agent naming the binary, its version and this instance (the pod or the
//! node), so the apiserver's audit log attributes each write to the replica that made it.

use std::path::Path;

use anyhow::Context;

pub async fn kube_config(
    kubeconfig: Option<&Path>,
    binary: &str,
    instance: &str,
) -> anyhow::Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    config
        .headers
        .push((axum::http::header::USER_AGENT, user_agent(binary, instance)));
    Ok(config)
}

/// `binary/version (instance)`, the shape kube's own components use; an instance name that is not
/// a valid header value (it comes from the environment) is left out rather than failing startup.
pub fn user_agent(binary: &str, instance: &str) -> axum::http::HeaderValue {
    let version = crate::VERSION;
    axum::http::HeaderValue::from_str(&format!("{binary}/{version} ({instance})"))
        .or_else(|_| axum::http::HeaderValue::from_str(&format!("{binary}/{version}")))
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("auto-agent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_the_binary_version_and_instance() {
        let version = crate::VERSION;
        let table = [
            (
                "auto-agent-controller",
                "auto-agent-controller-7d9f-x2",
                format!("auto-agent-controller/{version} (auto-agent-controller-7d9f-x2)"),
            ),
            (
                "auto-agent-sensor",
                "node-1",
                format!("auto-agent-sensor/{version} (node-1)"),
            ),
            // A newline would split the header: the instance is dropped, never the request.
            (
                "auto-agent-sensor",
                "node\nX-Injected: 1",
                format!("auto-agent-sensor/{version}"),
            ),
        ];
        for (binary, instance, want) in table {
            assert_eq!(user_agent(binary, instance).to_str().unwrap(), want);
        }
    }
}
