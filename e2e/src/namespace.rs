//! A fresh namespace per test, deleted when the test is done.

use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::Cluster;
use crate::wait::poll_until;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace that exists for one test. Dropping it starts its deletion (not waited for).
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    cluster: Cluster,
}

impl TestNamespace {
    /// Creates `<prefix>-<pid>-<n>` and waits until its `default` ServiceAccount exists, so pods
    /// can be created right away.
    pub async fn create(cluster: &Cluster, prefix: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let client = cluster.admin().await?;
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"e2e.autoagent.io/test": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        let sa: Api<ServiceAccount> = Api::namespaced(client, &name);
        poll_until(
            "default ServiceAccount",
            std::time::Duration::from_secs(60),
            || {
                let sa = sa.clone();
                async move { Ok(sa.get_opt("default").await?.is_some()) }
            },
        )
        .await?;
        Ok(Self {
            name,
            cluster: cluster.clone(),
        })
    }

    /// Deletes the namespace and waits until it is gone.
    pub async fn delete(self, client: Client) -> anyhow::Result<()> {
        let api = Api::<Namespace>::all(client);
        api.delete(&self.name, &DeleteParams::default()).await?;
        let name = self.name.clone();
        poll_until(
            "namespace deletion",
            std::time::Duration::from_secs(120),
            || {
                let api = api.clone();
                let name = name.clone();
                async move { Ok(api.get_opt(&name).await?.is_none()) }
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; start the deletion and let the namespace controller finish it.
        let _ = self.cluster.kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}
