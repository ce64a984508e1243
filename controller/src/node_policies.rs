//! The NodeRemediationPolicy index (cluster-scoped), with the same guarded decoding as the
//! AutoRemediationPolicy index: a policy that cannot be used is skipped and logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use auto_agent_engine::Selector;
use auto_agent_engine::decide::node::{MaxUnavailable, NodePolicyView};
use auto_agent_shared::crd::{NodeConditionType, NodeRemediationPolicy};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::policies::selector_of;

#[derive(Clone, Debug)]
pub struct NodePolicyEntry {
    pub selector: Selector,
    pub view: NodePolicyView,
}

#[derive(Clone, Debug, Default)]
pub struct NodePolicyIndex(Arc<RwLock<HashMap<String, NodePolicyEntry>>>);

impl NodePolicyIndex {
    pub fn all(&self) -> Vec<NodePolicyEntry> {
        let mut v: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.view.name.cmp(&b.view.name));
        v
    }

    pub fn get(&self, name: &str) -> Option<NodePolicyEntry> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

fn condition_name(c: NodeConditionType) -> &'static str {
    match c {
        NodeConditionType::MemoryPressure => "MemoryPressure",
        NodeConditionType::DiskPressure => "DiskPressure",
        NodeConditionType::PidPressure => "PIDPressure",
        NodeConditionType::NotReady => "NotReady",
    }
}

fn entry(
    guarded: DeserializeGuard<NodeRemediationPolicy>,
) -> Result<NodePolicyEntry, (String, String)> {
    let policy = guarded
        .0
        .map_err(|e| (e.metadata.name.clone().unwrap_or_default(), e.error))?;
    let name = policy.metadata.name.clone().unwrap_or_default();
    let spec = policy.spec;
    let selector = selector_of(&spec.node_selector).map_err(|e| (name.clone(), e.to_string()))?;
    let max_unavailable = match &spec.max_unavailable_nodes {
        IntOrString::Int(n) => MaxUnavailable::Count((*n).max(0) as u32),
        IntOrString::String(s) => {
            let p = s
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|e| (name.clone(), format!("maxUnavailableNodes: {e}")))?;
            MaxUnavailable::Percent(p.min(100))
        }
    };
    let budgets = spec
        .budgets
        .iter()
        .filter_map(|b| {
            use auto_agent_engine::decide::ActionKind;
            use auto_agent_engine::decide::budget::{BudgetLimit, BudgetScope};
            use auto_agent_shared::crd::{ActionType, BudgetScope as S};
            let action = match b.action {
                ActionType::CordonNode => ActionKind::CordonNode,
                ActionType::UncordonNode => ActionKind::UncordonNode,
                ActionType::EvictPod => ActionKind::EvictPod,
                _ => return None,
            };
            let scope = if b.scope == S::Target {
                BudgetScope::Target
            } else {
                BudgetScope::Policy
            };
            Some(BudgetLimit {
                action,
                scope,
                max: b.max.max(0) as u32,
                window_ms: i64::from(b.window_seconds) * 1000,
            })
        })
        .collect();
    Ok(NodePolicyEntry {
        selector,
        view: NodePolicyView {
            name,
            conditions: spec
                .conditions
                .iter()
                .map(|c| condition_name(*c).to_owned())
                .collect(),
            cordon: spec.cordon,
            evict: spec.evict,
            max_unavailable,
            unhealthy_threshold_percent: spec.unhealthy_threshold_percent.clamp(1, 100) as u32,
            uncordon_after_ms: i64::from(spec.uncordon_after_seconds) * 1000,
            drain_timeout_ms: i64::from(spec.drain_timeout_seconds) * 1000,
            dry_run: spec.dry_run,
            budgets,
        },
    })
}

pub async fn watch(client: Client, index: NodePolicyIndex, stop: CancellationToken) {
    let api: Api<DeserializeGuard<NodeRemediationPolicy>> = Api::all(client);
    let mut events = watch_stream(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    let mut relist = HashMap::new();
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = stop.cancelled() => return,
        };
        let apply = |map: &mut HashMap<String, NodePolicyEntry>, obj| match entry(obj) {
            Ok(e) => {
                map.insert(e.view.name.clone(), e);
            }
            Err((name, error)) => {
                map.remove(&name);
                tracing::warn!(policy = %name, error = %error, "NodeRemediationPolicy cannot be used");
            }
        };
        match event {
            Some(Ok(Event::Init)) => relist.clear(),
            Some(Ok(Event::InitApply(obj))) => apply(&mut relist, obj),
            Some(Ok(Event::InitDone)) => {
                *index.0.write().unwrap_or_else(|e| e.into_inner()) = std::mem::take(&mut relist)
            }
            Some(Ok(Event::Apply(obj))) => {
                apply(&mut index.0.write().unwrap_or_else(|e| e.into_inner()), obj)
            }
            Some(Ok(Event::Delete(obj))) => {
                if let Ok(p) = obj.0 {
                    index
                        .0
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&p.metadata.name.unwrap_or_default());
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "NodeRemediationPolicy watch failed; restarting with backoff")
            }
            None => return,
        }
    }
}
