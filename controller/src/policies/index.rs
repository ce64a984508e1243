//! The AutoRemediationPolicy index: a guarded watch (one malformed object is recorded as a problem
//! and the others keep working) feeding a synchronous per-namespace index that decisions read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use auto_agent_engine::Selector;
use auto_agent_shared::crd::{AutoRemediationPolicy, AutoRemediationPolicySpec};
use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::platform::metrics::ControllerMetrics;

/// Why a policy cannot be used; becomes its Degraded condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase reason.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct PolicyEntry {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub spec: Option<AutoRemediationPolicySpec>,
    pub target: Option<Selector>,
    pub exclude: Option<Selector>,
    pub problem: Option<Problem>,
}

impl PolicyEntry {
    /// This policy, for status and the ledger.
    pub fn policy_ref(&self) -> crate::policies::recent::PolicyRef {
        crate::policies::recent::PolicyRef::Namespaced {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether this usable policy selects pods with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.problem.is_none()
            && self.target.as_ref().is_some_and(|t| t.matches(labels))
            && !self.exclude.as_ref().is_some_and(|e| e.matches(labels))
    }
}

pub use crate::cluster::facts::selector_of;

/// A policy object as the index keeps it: its selectors compiled, or the problem that makes it
/// unusable (the kubectl plugin reads policies this way too).
pub fn entry(guarded: DeserializeGuard<AutoRemediationPolicy>) -> PolicyEntry {
    match guarded.0 {
        Ok(policy) => {
            let meta = &policy.metadata;
            let mut entry = PolicyEntry {
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                generation: meta.generation,
                target: None,
                exclude: None,
                problem: None,
                spec: None,
            };
            let target = selector_of(&policy.spec.target_selector);
            let exclude = policy
                .spec
                .exclude_selector
                .as_ref()
                .map(selector_of)
                .transpose();
            match (target, exclude) {
                (Ok(t), Ok(e)) => {
                    entry.target = Some(t);
                    entry.exclude = e;
                }
                (Err(e), _) | (_, Err(e)) => {
                    entry.problem = Some(Problem {
                        reason: "InvalidSelector",
                        message: e.to_string(),
                    });
                }
            }
            entry.spec = Some(policy.spec);
            entry
        }
        Err(invalid) => PolicyEntry {
            namespace: invalid.metadata.namespace.clone().unwrap_or_default(),
            name: invalid.metadata.name.clone().unwrap_or_default(),
            generation: invalid.metadata.generation,
            spec: None,
            target: None,
            exclude: None,
            problem: Some(Problem {
                reason: "Malformed",
                message: format!("the policy cannot be read: {}", invalid.error),
            }),
        },
    }
}

type Key = (String, String);

/// Shared, synchronously readable index of policies.
#[derive(Clone, Debug, Default)]
pub struct PolicyIndex(Arc<RwLock<HashMap<Key, PolicyEntry>>>);

impl PolicyIndex {
    pub fn in_namespace(&self, namespace: &str) -> Vec<PolicyEntry> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .values()
            .filter(|p| p.namespace == namespace)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn all(&self) -> Vec<PolicyEntry> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Adds a policy object as the watch would (tests build indexes this way).
    #[cfg(test)]
    pub fn insert(&self, policy: serde_json::Value) {
        let guarded: DeserializeGuard<AutoRemediationPolicy> =
            serde_json::from_value(policy).unwrap_or_else(|e| panic!("{e}"));
        self.apply(entry(guarded));
    }

    fn apply(&self, e: PolicyEntry) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((e.namespace.clone(), e.name.clone()), e);
    }

    fn remove(&self, key: &Key) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn replace(&self, entries: HashMap<Key, PolicyEntry>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }
}

/// Keeps `index` in sync with the cluster until `stop`. `synced` fires once after the first list;
/// `changed` after every change (the status writer listens).
pub async fn watch(
    client: Client,
    index: PolicyIndex,
    metrics: ControllerMetrics,
    synced: Arc<Notify>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let api: Api<DeserializeGuard<AutoRemediationPolicy>> = Api::all(client);
    let mut events = watch_stream(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    let mut relist: HashMap<Key, PolicyEntry> = HashMap::new();
    let mut first = true;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = stop.cancelled() => return,
        };
        match event {
            Some(Ok(Event::Init)) => relist.clear(),
            Some(Ok(Event::InitApply(obj))) => {
                let e = entry(obj);
                relist.insert((e.namespace.clone(), e.name.clone()), e);
            }
            Some(Ok(Event::InitDone)) => {
                index.replace(std::mem::take(&mut relist));
                if std::mem::take(&mut first) {
                    synced.notify_one();
                }
            }
            Some(Ok(Event::Apply(obj))) => {
                let e = entry(obj);
                if let Some(p) = &e.problem {
                    tracing::warn!(policy = %format!("{}/{}", e.namespace, e.name), reason = p.reason, message = %p.message, "Policy cannot be used");
                }
                index.apply(e);
            }
            Some(Ok(Event::Delete(obj))) => {
                let e = entry(obj);
                index.remove(&(e.namespace, e.name));
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Policy watch failed; restarting with backoff")
            }
            None => return,
        }
        let all = index.all();
        metrics.policies.set(all.len() as i64);
        metrics
            .policies_invalid
            .set(all.iter().filter(|p| p.problem.is_some()).count() as i64);
        changed.notify_one();
    }
}

/// The decision engine's view of a usable policy. Numbers are held to the CRD's ranges again: the
/// apiserver enforces them on write, but an object stored under an older or edited schema must not
/// make a budget window negative (never exhausted) or a cooldown negative.
pub fn policy_view(entry: &PolicyEntry) -> Option<auto_agent_engine::decide::PolicyView> {
    use auto_agent_engine::decide::budget::{BudgetLimit, BudgetScope};
    use auto_agent_engine::decide::{ActionKind, PolicyView};
    use auto_agent_engine::quantity::parse_bytes;
    use auto_agent_shared::crd::{ActionType, BudgetScope as CrdScope};
    if entry.problem.is_some() {
        return None;
    }
    let spec = entry.spec.as_ref()?;
    let safety = spec.safety.clone().unwrap_or_default();
    let bump = spec.actions.memory_bump.as_ref();
    let budgets = spec
        .budgets
        .iter()
        .map(|b| {
            let action = match b.action {
                ActionType::RestartPod => ActionKind::RestartPod,
                ActionType::BumpMemory => ActionKind::BumpMemory,
                ActionType::MirrorImage => ActionKind::MirrorImage,
                ActionType::EvictPod => ActionKind::EvictPod,
                ActionType::CordonNode => ActionKind::CordonNode,
                ActionType::UncordonNode => ActionKind::UncordonNode,
                ActionType::ScaleUp => ActionKind::ScaleUp,
                ActionType::ScaleDown => ActionKind::ScaleDown,
            };
            let scope = match b.scope {
                CrdScope::Target => BudgetScope::Target,
                CrdScope::Policy => BudgetScope::Policy,
                CrdScope::Namespace => BudgetScope::Namespace,
            };
            BudgetLimit {
                action,
                scope,
                max: b.max.clamp(0, 10_000) as u32,
                window_ms: i64::from(b.window_seconds.clamp(60, 604_800)) * 1000,
            }
        })
        .collect();
    Some(PolicyView {
        namespace: entry.namespace.clone(),
        name: entry.name.clone(),
        dry_run: spec.dry_run,
        restart_stuck_pods: spec.actions.restart_stuck_pods,
        bump_memory_percent: spec
            .actions
            .bump_memory_percent
            .map(|p| p.clamp(1, 1000) as u32),
        memory_min_increase_bytes: bump
            .and_then(|b| parse_bytes(&b.min_increase))
            .unwrap_or(100 << 20),
        memory_max_limit_bytes: bump.and_then(|b| parse_bytes(&b.max_limit)),
        image_mirror: spec
            .actions
            .image_mirror
            .as_ref()
            .map(|m| m.registry.clone()),
        min_ready_replicas: safety.min_ready_replicas.clamp(0, 1000) as u32,
        cooldown_ms: i64::from(safety.cooldown_seconds.clamp(0, 86_400)) * 1000,
        max_repeats: safety.max_repeats.clamp(1, 100) as u32,
        max_unhealthy_percent: safety.max_unhealthy_percent.clamp(1, 100) as u32,
        storm_window_ms: i64::from(safety.storm_window_seconds.clamp(0, 60)) * 1000,
        budgets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guarded(v: serde_json::Value) -> DeserializeGuard<AutoRemediationPolicy> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_good_policy_selects_and_excludes() {
        let e = entry(guarded(json!({
            "apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
            "metadata": {"name": "p", "namespace": "prod", "generation": 2},
            "spec": {"targetSelector": {"matchLabels": {"app": "api"}},
                     "excludeSelector": {"matchLabels": {"canary": "true"}}},
        })));
        assert!(e.problem.is_none());
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(e.selects(&labels(&[("app", "api")])));
        assert!(!e.selects(&labels(&[("app", "api"), ("canary", "true")])));
        assert!(!e.selects(&labels(&[("app", "web")])));
        assert_eq!(e.generation, Some(2));
    }

    #[test]
    fn malformed_and_invalid_policies_become_problems() {
        let malformed = entry(guarded(json!({
            "apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
            "metadata": {"name": "bad", "namespace": "prod"},
            "spec": {"targetSelector": "not-a-selector"},
        })));
        assert_eq!(malformed.problem.as_ref().unwrap().reason, "Malformed");
        assert_eq!(
            (malformed.namespace.as_str(), malformed.name.as_str()),
            ("prod", "bad")
        );
        assert!(!malformed.selects(&BTreeMap::new()));

        let invalid = entry(guarded(json!({
            "apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
            "metadata": {"name": "op", "namespace": "prod"},
            "spec": {"targetSelector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]}},
        })));
        assert_eq!(invalid.problem.as_ref().unwrap().reason, "InvalidSelector");
        assert!(invalid.problem.unwrap().message.contains("Like"));
    }
}
