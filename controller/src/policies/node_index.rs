//! The NodeRemediationPolicy index (cluster-scoped), with the same guarded decoding as the
//! AutoRemediationPolicy index: a policy that cannot be used is kept with its problem (its status
//! shows it as Degraded) and never acts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use auto_agent_engine::Selector;
use auto_agent_engine::decide::node::{MaxUnavailable, NodePolicyView};
use auto_agent_shared::crd::{NodeConditionType, NodeRemediationPolicy, NodeRemediationPolicySpec};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::policies::index::{Problem, selector_of};

/// A policy that can be used: its node selector and the engine's view of it.
#[derive(Clone, Debug)]
pub struct UsableNodePolicy {
    pub selector: Selector,
    pub view: NodePolicyView,
    /// Where its node incidents escalate.
    pub escalation: Option<auto_agent_shared::crd::policy::Escalation>,
}

/// A NodeRemediationPolicy as the index holds it: usable, or the problem that keeps it from use
/// (shown as `Degraded` in its status).
#[derive(Clone, Debug)]
pub struct NodePolicyEntry {
    pub name: String,
    pub generation: Option<i64>,
    pub usable: Result<UsableNodePolicy, Problem>,
}

#[derive(Clone, Debug, Default)]
pub struct NodePolicyIndex(Arc<RwLock<HashMap<String, NodePolicyEntry>>>);

impl NodePolicyIndex {
    /// Every policy, usable or not, by name.
    pub fn all(&self) -> Vec<NodePolicyEntry> {
        let mut v: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The usable policies, by name.
    pub fn usable(&self) -> Vec<UsableNodePolicy> {
        self.all()
            .into_iter()
            .filter_map(|e| e.usable.ok())
            .collect()
    }

    /// Adds a policy object as the watch would (tests build indexes this way).
    #[cfg(test)]
    pub fn insert(&self, policy: serde_json::Value) {
        let guarded: DeserializeGuard<NodeRemediationPolicy> =
            serde_json::from_value(policy).unwrap_or_else(|e| panic!("{e}"));
        let e = entry(guarded);
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(e.name.clone(), e);
    }

    pub fn get(&self, name: &str) -> Option<UsableNodePolicy> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .and_then(|e| e.usable.clone().ok())
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

fn entry(guarded: DeserializeGuard<NodeRemediationPolicy>) -> NodePolicyEntry {
    match guarded.0 {
        Ok(policy) => {
            let name = policy.metadata.name.clone().unwrap_or_default();
            NodePolicyEntry {
                generation: policy.metadata.generation,
                usable: usable(&name, policy.spec),
                name,
            }
        }
        Err(e) => NodePolicyEntry {
            name: e.metadata.name.clone().unwrap_or_default(),
            generation: e.metadata.generation,
            usable: Err(Problem {
                reason: "Malformed",
                message: e.error,
            }),
        },
    }
}

fn usable(name: &str, spec: NodeRemediationPolicySpec) -> Result<UsableNodePolicy, Problem> {
    let name = name.to_owned();
    let selector = selector_of(&spec.node_selector).map_err(|e| Problem {
        reason: "InvalidSelector",
        message: e.to_string(),
    })?;
    let max_unavailable = match &spec.max_unavailable_nodes {
        IntOrString::Int(n) => MaxUnavailable::Count((*n).max(0) as u32),
        IntOrString::String(s) => {
            let p = s
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|e| Problem {
                    reason: "InvalidMaxUnavailable",
                    message: format!("maxUnavailableNodes: {e}"),
                })?;
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
    Ok(UsableNodePolicy {
        selector,
        escalation: spec.escalation.clone(),
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

pub async fn watch(
    client: Client,
    index: NodePolicyIndex,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
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
        let apply = |map: &mut HashMap<String, NodePolicyEntry>, obj| {
            let e = entry(obj);
            if let Err(problem) = &e.usable {
                tracing::warn!(policy = %e.name, reason = problem.reason, error = %problem.message, "NodeRemediationPolicy cannot be used");
            }
            map.insert(e.name.clone(), e);
            changed.notify_one();
        };
        match event {
            Some(Ok(Event::Init)) => relist.clear(),
            Some(Ok(Event::InitApply(obj))) => apply(&mut relist, obj),
            Some(Ok(Event::InitDone)) => {
                *index.0.write().unwrap_or_else(|e| e.into_inner()) = std::mem::take(&mut relist);
                changed.notify_one();
            }
            Some(Ok(Event::Apply(obj))) => {
                apply(&mut index.0.write().unwrap_or_else(|e| e.into_inner()), obj)
            }
            Some(Ok(Event::Delete(obj))) => {
                let name = match &obj.0 {
                    Ok(p) => p.metadata.name.clone(),
                    Err(e) => e.metadata.name.clone(),
                };
                index
                    .0
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name.unwrap_or_default());
                changed.notify_one();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "NodeRemediationPolicy watch failed; restarting with backoff")
            }
            None => return,
        }
    }
}
