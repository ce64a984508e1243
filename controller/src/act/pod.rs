//! Restart a crash-looping pod: re-read it (same uid, still failing), save the evidence bundle, then
//! delete it with a uid precondition so its controller replaces it.

use auto_agent_engine::Finding;
use auto_agent_engine::decide::{Plan, PodTarget};
use auto_agent_evidence::Bundle;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};

use super::{ActError, Done, Executor};
use crate::cluster::facts::condition_holds;
use crate::evidence::bundle::BundleContext;

fn today() -> (String, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let date = now.strftime("%Y-%m-%d").to_string();
    (date, now.to_string())
}

impl Executor {
    pub async fn restart(
        &self,
        plan: &Plan,
        pod: &PodTarget,
        reason: &str,
        f: &Finding,
        ctx: &BundleContext,
    ) -> Result<Done, ActError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        // Re-read: the same pod instance, still failing.
        let current = pods
            .get_opt(&pod.name)
            .await?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod.uid.as_str()))
            .ok_or(ActError::Cleared)?;
        if !condition_holds(&current, f) {
            return Err(ActError::Cleared);
        }
        let (date, now) = today();
        let key = crate::evidence::bundle::key_for(f, &ctx.destination, &date);
        let input =
            crate::evidence::bundle::gather(&self.client, f, &current, ctx, plan, now).await;
        let bundle = Bundle::build(input, ctx.caps);
        let saved = self.evidence.save(&ctx.destination, &key, &bundle).await?;
        self.fence("delete_pod")?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name, &params).await {
            Ok(_) => {}
            // Already gone (or replaced): the goal is met; idempotent.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Done {
            note: format!(
                "deleted pod {} ({reason}); evidence bundle {}",
                pod.name,
                saved.describe()
            ),
            evidence: Some(saved.describe()),
        })
    }
}
