//! `simulate -f policy.yaml`: before a policy is applied, whether the apiserver accepts it (a
//! server-side dry run, so the CRD's validation names any bad field), the workloads it would
//! select, and the plan the controller would make for each failure the namespace's pods show now,
//! decided by the engine on live facts and the ledger, with this policy as the one that selects.

use anyhow::Context as _;
use auto_agent_controller::policies::index::{PolicyEntry, entry};
use auto_agent_shared::crd::AutoRemediationPolicy;
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use serde::Serialize;

use crate::context::Ctx;
use crate::judge::{self, Judge, Judgement};
use crate::output::Render;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    pub policy: String,
    /// `accepted`, or why the apiserver would refuse it, or why it could not be asked.
    pub validation: String,
    /// The workloads (and bare pods) it selects, `Kind/name`.
    pub targets: Vec<String>,
    /// A plan (or refusal) for each failure it would govern.
    pub plans: Vec<Judgement>,
    /// Failures in the namespace it would not govern (`Kind/name: kind`).
    pub not_selected: Vec<String>,
    pub decided_with: String,
}

/// The policy in the file, as the controller would index it, and its JSON.
pub fn read(text: &str, namespace: &str) -> anyhow::Result<(PolicyEntry, serde_json::Value)> {
    let mut value: serde_json::Value =
        serde_norway::from_str(text).context("the file is not YAML")?;
    if value.pointer("/metadata/namespace").is_none()
        && let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut())
    {
        meta.insert("namespace".into(), namespace.into());
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    anyhow::ensure!(
        kind == "AutoRemediationPolicy",
        "the file holds a {kind:?}, not an AutoRemediationPolicy"
    );
    let policy: AutoRemediationPolicy =
        serde_json::from_value(value.clone()).context("the policy does not match the CRD")?;
    let e = entry(DeserializeGuard(Ok(policy)));
    if let Some(p) = &e.problem {
        anyhow::bail!(
            "the controller could not use this policy ({}): {}",
            p.reason,
            p.message
        );
    }
    Ok((e, value))
}

/// `Kind/name` of each workload of kind `K` in `ns` whose pod template labels the policy selects.
async fn selected<K>(
    ctx: &Ctx,
    ns: &str,
    policy: &PolicyEntry,
    template: impl Fn(&K) -> Option<&PodTemplateSpec>,
) -> anyhow::Result<Vec<String>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|w| {
            let labels = template(w)
                .and_then(|t| t.metadata.as_ref()?.labels.clone())
                .unwrap_or_default();
            policy.selects(&labels)
        })
        .map(|w| format!("{}/{}", K::KIND, w.meta().name.clone().unwrap_or_default()))
        .collect())
}

pub async fn simulate(ctx: &Ctx, text: &str) -> anyhow::Result<Simulation> {
    let (policy, value) = read(text, &ctx.namespace)?;
    let ns = policy.namespace.clone();
    // Server-side apply in dry-run: the CRD's schema and CEL rules run, nothing is stored.
    let api: Api<AutoRemediationPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let validation = match api
        .patch(
            &policy.name,
            &PatchParams::apply("kubectl-auto-agent").dry_run().force(),
            &Patch::Apply(&value),
        )
        .await
    {
        Ok(_) => "accepted".to_owned(),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            anyhow::bail!("the apiserver refuses this policy: {}", s.message)
        }
        Err(e) => format!("not checked by the apiserver: {e}"),
    };

    let mut targets =
        selected::<Deployment>(ctx, &ns, &policy, |d| d.spec.as_ref().map(|s| &s.template)).await?;
    targets.extend(
        selected::<StatefulSet>(ctx, &ns, &policy, |s| s.spec.as_ref().map(|s| &s.template))
            .await?,
    );
    targets.extend(
        selected::<DaemonSet>(ctx, &ns, &policy, |d| d.spec.as_ref().map(|s| &s.template)).await?,
    );
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    for p in &pods {
        let bare = !p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true));
        if bare && policy.selects(&p.metadata.labels.clone().unwrap_or_default()) {
            targets.push(format!(
                "Pod/{}",
                p.metadata.name.clone().unwrap_or_default()
            ));
        }
    }

    let history = ctx.history().await.unwrap_or_default();
    let config = ctx.decision_config().await;
    let registry = judge::registry_for(
        std::slice::from_ref(&policy),
        &ctx.agent.plain_http_registries,
    )?;
    let judge = Judge {
        client: &ctx.client,
        registry: &registry,
        history: &history,
        config: &config,
        now_ms: ctx.now_ms,
    };
    let mut plans = Vec::new();
    let mut not_selected = Vec::new();
    let findings: Vec<(&Pod, auto_agent_engine::Finding)> = pods
        .iter()
        .flat_map(|p| {
            judge::current_findings(p, ctx.now_ms)
                .into_iter()
                .map(move |f| (p, f))
        })
        .filter(|(_, f)| judge::KINDS.contains(&f.kind))
        .collect();
    for (pod, f) in &findings {
        // The workload's template labels are what the controller selects on; the pod carries them.
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let subject = f.owner.as_ref().map_or_else(
            || format!("Pod/{}", pod.metadata.name.clone().unwrap_or_default()),
            |o| format!("{}/{}", o.kind, o.name),
        );
        if !policy.selects(&labels) {
            not_selected.push(format!("{subject}: {}", f.kind.as_str()));
            continue;
        }
        let failing = findings
            .iter()
            .filter(|(_, g)| g.owner == f.owner && g.owner.is_some())
            .count() as u32;
        plans.push(judge.decide(f, Some(&policy), false, failing).await?);
    }
    Ok(Simulation {
        policy: format!("{}/{}", ns, policy.name),
        validation,
        targets,
        plans,
        not_selected,
        decided_with: config.source,
    })
}

impl Render for Simulation {
    fn table(&self) -> String {
        let mut out = format!(
            "Policy:     {}\nApiserver:  {}\nSelects:    {}\n\n",
            self.policy,
            self.validation,
            if self.targets.is_empty() {
                "nothing in the namespace".to_owned()
            } else {
                self.targets.join(", ")
            }
        );
        if self.plans.is_empty() {
            out.push_str("No failure it would govern right now.\n");
        } else {
            out.push_str(&format!(
                "What it would do about the failures now (decided with {}):\n",
                self.decided_with
            ));
            out.push_str(&judge::table(&self.plans));
        }
        if !self.not_selected.is_empty() {
            out.push_str(&format!(
                "\nFailures it would not govern: {}\n",
                self.not_selected.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_is_read_as_the_controller_indexes_it_or_refused_with_why() {
        let good = "apiVersion: autoagent.io/v1alpha1\nkind: AutoRemediationPolicy\nmetadata:\n  name: p\nspec:\n  targetSelector:\n    matchLabels: {app: api}\n  actions:\n    restartStuckPods: true\n";
        let (e, v) = read(good, "shop").unwrap();
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("shop", "p"));
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert!(e.selects(&[("app".to_owned(), "api".to_owned())].into()));
        let cases = [
            (
                "kind: ConfigMap\nmetadata: {name: x}\n",
                "not an AutoRemediationPolicy",
            ),
            (
                "apiVersion: autoagent.io/v1alpha1\nkind: AutoRemediationPolicy\nmetadata: {name: p}\nspec: {actions: {}}\n",
                "does not match the CRD",
            ),
            (
                "apiVersion: autoagent.io/v1alpha1\nkind: AutoRemediationPolicy\nmetadata: {name: p}\nspec:\n  targetSelector:\n    matchExpressions: [{key: a, operator: Near}]\n  actions: {}\n",
                "could not use",
            ),
            (": : :", "not YAML"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", read(text, "shop").unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
