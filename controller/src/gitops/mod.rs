//! GitOps proposals: a change the engine would make live on a workload GitOps manages (a
//! memory bump, an image swap) becomes a pull request in the repository the workload comes
//! from. The reconcile stage hands a `Request` over without waiting (`Proposals::send`); the
//! stage (stage.rs, leader only) keeps one record per incident key in the cluster and delivers
//! it with retries. Where the proposal goes is the policy's `gitOps` over the installation's
//! defaults, within the repositories the installation allows (route.rs).

pub mod route;
pub mod stage;

use std::sync::Arc;

use auto_agent_engine::decide::{Facts, PlannedAction};
use auto_agent_engine::quantity::format_bytes;
use auto_agent_gitops::proposal::Proposal;
use auto_agent_gitops::target::{Change, Workload};
use auto_agent_shared::crd::policy::GitOps;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::mpsc;

use crate::platform::metrics::ControllerMetrics;
use crate::policies::recent::PolicyRef;
use route::{Defaults, Route, RouteError};

/// One proposal for the stage.
#[derive(Clone, Debug)]
pub struct Request {
    pub route: Route,
    /// One incident's changes (all with its key).
    pub proposals: Vec<Proposal>,
    /// The workload the Events go on.
    pub event_on: ObjectReference,
    /// The policy whose status shows the outcome, and the action proposed.
    pub policy: Shown,
}

/// Where a proposal's outcome is shown: its policy (namespace, name) and the action.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    pub namespace: String,
    pub name: String,
    pub action: Option<auto_agent_engine::decide::ActionKind>,
}

impl Shown {
    pub fn of(policy: &PolicyRef, action: Option<auto_agent_engine::decide::ActionKind>) -> Self {
        let (namespace, name) = match policy {
            PolicyRef::Namespaced { namespace, name } => (namespace.clone(), name.clone()),
            PolicyRef::Cluster { name } => (String::new(), name.clone()),
        };
        Self {
            namespace,
            name,
            action,
        }
    }
}

/// The handle reconcile stages propose through.
#[derive(Clone, Debug)]
pub struct Proposals {
    tx: Option<mpsc::Sender<Request>>,
    metrics: Option<ControllerMetrics>,
    defaults: Arc<Defaults>,
}

impl Proposals {
    pub fn new(tx: mpsc::Sender<Request>, metrics: ControllerMetrics, defaults: Defaults) -> Self {
        Self {
            tx: Some(tx),
            metrics: Some(metrics),
            defaults: Arc::new(defaults),
        }
    }

    /// No stage: nothing is proposed (tests, and nothing configured).
    pub fn off() -> Self {
        Self {
            tx: None,
            metrics: None,
            defaults: Arc::default(),
        }
    }

    /// Where a policy's proposals go.
    pub fn route(&self, policy: Option<&GitOps>) -> Result<Route, RouteError> {
        if self.tx.is_none() {
            return Err(RouteError::Missing);
        }
        self.defaults.route(policy)
    }

    /// Proposes `proposals` along the policy's route; returns what the `GitOpsManaged` Event says
    /// about the pull request (where it goes, or why there is none).
    pub fn propose(
        &self,
        git_ops: Option<&GitOps>,
        proposals: Vec<Proposal>,
        event_on: ObjectReference,
        policy: Shown,
    ) -> String {
        let route = match self.route(git_ops) {
            Ok(route) => route,
            Err(e) => return format!("no pull request: {e}"),
        };
        let whereto = format!(
            "a pull request goes to {}:{} ({})",
            route.provider.as_str(),
            route.project,
            route.file
        );
        let sent = self.send(Request {
            route,
            proposals,
            event_on,
            policy,
        });
        if sent {
            whereto
        } else {
            "no pull request: the proposal queue is full".to_owned()
        }
    }

    /// Hands a request to the stage without waiting; a full queue drops and counts it.
    pub fn send(&self, request: Request) -> bool {
        let Some(tx) = &self.tx else { return false };
        let sent = tx.try_send(request).is_ok();
        if !sent && let Some(m) = &self.metrics {
            m.gitops_proposals.with_label_values(&["dropped"]).inc();
        }
        sent
    }
}

/// The proposals of a plan's spec changes (memory bumps, image swaps), in the gitops crate's
/// terms; other actions (restarts, evictions) are made live and have none.
pub fn proposals_of(
    actions: &[PlannedAction],
    incident: &str,
    facts: &Facts,
    evidence: Option<String>,
) -> Vec<Proposal> {
    let mut out = Vec::new();
    for action in actions {
        let (workload, reason) = match action {
            PlannedAction::BumpMemory {
                workload, reason, ..
            }
            | PlannedAction::MirrorImage {
                workload, reason, ..
            } => (workload, reason),
            _ => continue,
        };
        let base = |change: Change, from: String, to: String| Proposal {
            incident: incident.to_owned(),
            namespace: workload.namespace.clone(),
            workload: Workload {
                kind: workload.kind.clone(),
                name: workload.name.clone(),
                containers: facts.template_containers.clone(),
            },
            change,
            from,
            to,
            reason: reason.clone(),
            evidence: evidence.clone(),
            summary: None,
        };
        match action {
            PlannedAction::BumpMemory {
                container,
                limit,
                request,
                ..
            } => {
                out.push(base(
                    Change::MemoryLimit {
                        container: container.clone(),
                    },
                    limit.from.map(format_bytes).unwrap_or_default(),
                    format_bytes(limit.to),
                ));
                if let Some(req) = request {
                    out.push(base(
                        Change::MemoryRequest {
                            container: container.clone(),
                        },
                        req.from.map(format_bytes).unwrap_or_default(),
                        format_bytes(req.to),
                    ));
                }
            }
            PlannedAction::MirrorImage {
                container,
                from,
                to,
                ..
            } => out.push(base(
                Change::Image {
                    container: container.clone(),
                    from: from.clone(),
                },
                from.clone(),
                to.clone(),
            )),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::decide::{BytesChange, WorkloadTarget};

    fn workload() -> WorkloadTarget {
        WorkloadTarget {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "api".into(),
        }
    }

    #[test]
    fn spec_changes_become_proposals_and_live_actions_do_not() {
        let facts = Facts {
            template_containers: vec!["app".into(), "log".into()],
            ..Facts::default()
        };
        let actions = vec![
            PlannedAction::BumpMemory {
                workload: workload(),
                container: "app".into(),
                limit: BytesChange {
                    from: Some(256 << 20),
                    to: 384 << 20,
                },
                request: Some(BytesChange {
                    from: Some(128 << 20),
                    to: 192 << 20,
                }),
                reason: "OOMKilled".into(),
            },
            PlannedAction::MirrorImage {
                workload: workload(),
                container: "app".into(),
                from: "docker.io/acme/api:1".into(),
                to: "mirror.local/acme/api:1".into(),
                reason: "ImagePullBackOff".into(),
            },
        ];
        let got = proposals_of(&actions, "pod/shop/Deployment/api/OOMKilled", &facts, None);
        let summary: Vec<(Change, &str, &str)> = got
            .iter()
            .map(|p| (p.change.clone(), p.from.as_str(), p.to.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Change::MemoryLimit {
                        container: "app".into()
                    },
                    "256Mi",
                    "384Mi"
                ),
                (
                    Change::MemoryRequest {
                        container: "app".into()
                    },
                    "128Mi",
                    "192Mi"
                ),
                (
                    Change::Image {
                        container: "app".into(),
                        from: "docker.io/acme/api:1".into()
                    },
                    "docker.io/acme/api:1",
                    "mirror.local/acme/api:1"
                ),
            ]
        );
        assert!(got.iter().all(|p| p.workload.containers == ["app", "log"]));
        assert!(got.iter().all(|p| p.namespace == "shop"));
    }
}
