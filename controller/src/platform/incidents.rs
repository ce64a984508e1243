//! What the leader knows of its incidents, served as `GET /incidents` on the admin server (the
//! kubectl plugin reads it through the apiserver's proxy, so the reader's RBAC applies): each
//! incident's key, kind, subject, when it opened and was last seen, and the last outcome the
//! controller reported for it, with the decision configuration (cluster budgets, allowed actions)
//! the plugin needs to decide as the controller does.
//!
//! In memory, one per leadership term like the incident book it mirrors: the pipeline adds and
//! updates entries as the book does and drops those the book forgot; a new leader starts empty and
//! fills as sensors re-send what still holds. No log lines, no messages from sensors: only what the
//! controller's own Events say.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use auto_agent_engine::decide::{AllowedActions, BudgetLimit};
use auto_agent_engine::{Incident, IncidentState};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::platform::leader::Leadership;

/// Incidents kept at most (the book keeps more; the oldest seen are dropped from this view first).
const MAX_ENTRIES: usize = 10_000;

/// The last outcome reported for an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeView {
    /// Executed, Failed, Refused or DryRun.
    pub outcome: String,
    /// The Event reason (RestartedPod, BudgetExhausted, ...).
    pub reason: String,
    /// The action it was about.
    pub action: String,
    pub message: String,
    pub at_ms: i64,
}

/// One incident as the leader knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    pub key: String,
    pub kind: String,
    /// Open or Resolved.
    pub state: String,
    pub node: String,
    /// The pod's namespace; empty for a node incident.
    pub namespace: String,
    pub pod: String,
    /// The owning workload (`Kind/name`) the sensor named; empty for a bare pod or a node.
    pub workload: String,
    pub container: String,
    pub opened_at_ms: i64,
    pub last_seen_ms: i64,
    pub findings: u32,
    pub last_outcome: Option<OutcomeView>,
}

impl IncidentView {
    fn of(i: &Incident) -> Self {
        let f = &i.last_finding;
        let state = match i.state {
            IncidentState::Resolved => "Resolved",
            IncidentState::Open | IncidentState::Acting | IncidentState::Escalated => "Open",
        };
        Self {
            key: i.key.as_str().to_owned(),
            kind: f.kind.as_str().to_owned(),
            state: state.to_owned(),
            node: f.node.clone(),
            namespace: f
                .pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_default(),
            pod: f.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
            workload: f
                .owner
                .as_ref()
                .map(|o| format!("{}/{}", o.kind, o.name))
                .unwrap_or_default(),
            container: f.container.clone().unwrap_or_default(),
            opened_at_ms: i.opened_at_ms,
            last_seen_ms: i.last_seen_ms,
            findings: i.findings,
            last_outcome: None,
        }
    }
}

/// The shared register of incident views.
#[derive(Clone, Debug, Default)]
pub struct Incidents(Arc<Mutex<BTreeMap<String, IncidentView>>>);

impl Incidents {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, IncidentView>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The book's incident after a change: added, or updated keeping its last outcome.
    pub fn observed(&self, incident: &Incident) {
        let mut map = self.lock();
        let mut view = IncidentView::of(incident);
        if let Some(old) = map.get(&view.key) {
            view.last_outcome = old.last_outcome.clone();
        }
        map.insert(view.key.clone(), view);
        if map.len() > MAX_ENTRIES {
            // Drop the tenth seen longest ago, in one pass.
            let mut by_seen: Vec<(i64, String)> = map
                .values()
                .map(|v| (v.last_seen_ms, v.key.clone()))
                .collect();
            by_seen.sort();
            for (_, key) in by_seen.into_iter().take(MAX_ENTRIES / 10) {
                map.remove(&key);
            }
        }
    }

    /// The outcome the controller reported for `key` (ignored for an incident not in view).
    pub fn outcome(&self, key: &str, outcome: OutcomeView) {
        if let Some(v) = self.lock().get_mut(key) {
            v.last_outcome = Some(outcome);
        }
    }

    /// Keeps only the incidents `keep` says are still known.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Every incident, open ones first, newest first.
    pub fn snapshot(&self) -> Vec<IncidentView> {
        let mut all: Vec<IncidentView> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| {
            (a.state != "Open", -a.last_seen_ms, &a.key).cmp(&(
                b.state != "Open",
                -b.last_seen_ms,
                &b.key,
            ))
        });
        all
    }
}

/// The body of `GET /incidents`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentsReply {
    pub leader: bool,
    pub identity: String,
    /// The leader's identity, when this replica knows it (a non-leader's answer points there).
    pub holder: Option<String>,
    pub cluster_budgets: Vec<BudgetLimit>,
    pub allowed_actions: AllowedActions,
    pub incidents: Vec<IncidentView>,
}

#[derive(Clone, Debug)]
struct RouteState {
    incidents: Incidents,
    leadership: Leadership,
    identity: String,
    cluster_budgets: Vec<BudgetLimit>,
    allowed: AllowedActions,
}

/// `GET /incidents`: 200 with the incidents from the leader; 503 from any other replica (it knows
/// none), naming the holder, so a reader going through a Service tries again.
pub fn router(
    incidents: Incidents,
    leadership: Leadership,
    identity: String,
    cluster_budgets: Vec<BudgetLimit>,
    allowed: AllowedActions,
) -> Router {
    Router::new()
        .route("/incidents", get(reply))
        .with_state(RouteState {
            incidents,
            leadership,
            identity,
            cluster_budgets,
            allowed,
        })
}

async fn reply(State(s): State<RouteState>) -> impl IntoResponse {
    let view = s.leadership.view();
    let body = IncidentsReply {
        leader: view.is_leader,
        identity: s.identity.clone(),
        holder: view.holder.clone(),
        cluster_budgets: s.cluster_budgets.clone(),
        allowed_actions: s.allowed.clone(),
        incidents: if view.is_leader {
            s.incidents.snapshot()
        } else {
            Vec::new()
        },
    };
    let code = if view.is_leader {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match serde_json::to_vec(&body) {
        Ok(json) => (code, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::{Finding, FindingKind, IncidentKey, PodRef, Transition, WorkloadRef};

    fn incident(name: &str, seen: i64, state: IncidentState) -> Incident {
        let finding = Finding {
            id: format!("u-{name}/app/CrashLoopBackOff/3"),
            node: "node-a".into(),
            kind: FindingKind::CrashLoopBackOff,
            transition: Transition::Started,
            pod: Some(PodRef {
                namespace: "shop".into(),
                name: name.into(),
                uid: format!("u-{name}"),
            }),
            owner: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: format!("w-{name}"),
            }),
            container: Some("app".into()),
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
            restart_count: 3,
            exit_code: Some(1),
            image: None,
            observed_at_ms: seen,
            log_lines: vec![],
            log_truncated: false,
        };
        Incident {
            key: IncidentKey::for_finding(&finding).unwrap(),
            state,
            opened_at_ms: 1,
            last_seen_ms: seen,
            findings: 1,
            last_finding: finding,
            last_action_ms: None,
        }
    }

    #[test]
    fn an_update_keeps_the_last_outcome_and_open_incidents_come_first() {
        let reg = Incidents::new();
        let a = incident("api-1", 10, IncidentState::Open);
        let b = incident("api-2", 20, IncidentState::Resolved);
        reg.observed(&a);
        reg.observed(&b);
        let outcome = OutcomeView {
            outcome: "Executed".into(),
            reason: "RestartedPod".into(),
            action: "RestartPod".into(),
            message: "restarted".into(),
            at_ms: 11,
        };
        reg.outcome(a.key.as_str(), outcome.clone());
        reg.outcome("unknown", outcome.clone());
        reg.observed(&Incident {
            last_seen_ms: 30,
            findings: 2,
            ..a.clone()
        });
        let all = reg.snapshot();
        assert_eq!(all.len(), 2, "an outcome for an unknown key adds nothing");
        assert_eq!(
            all[0].key,
            a.key.as_str(),
            "open first although seen earlier"
        );
        assert_eq!(all[0].findings, 2);
        assert_eq!(all[0].last_outcome, Some(outcome));
        assert_eq!(all[0].workload, "Deployment/w-api-1");
        assert_eq!(all[1].state, "Resolved");
        reg.retain(|k| k != a.key.as_str());
        assert_eq!(reg.snapshot().len(), 1);
    }

    #[test]
    fn the_view_is_bounded_and_drops_the_longest_unseen() {
        let reg = Incidents::new();
        for i in 0..=MAX_ENTRIES {
            reg.observed(&incident(&format!("p-{i}"), i as i64, IncidentState::Open));
        }
        let all = reg.snapshot();
        assert_eq!(all.len(), MAX_ENTRIES + 1 - MAX_ENTRIES / 10);
        assert!(
            all.iter()
                .all(|v| v.last_seen_ms >= (MAX_ENTRIES / 10) as i64)
        );
    }

    async fn get(router: Router) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::get("/incidents")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let code = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap())
    }

    /// Only the leader answers with incidents; another replica says it is not the leader, so a
    /// reader behind a Service tries again instead of taking an empty list for the truth.
    #[tokio::test]
    async fn only_the_leader_lists_incidents() {
        use crate::platform::leader::{LeaderConfig, LeaderView, channel};
        let metrics =
            crate::platform::metrics::ControllerMetrics::register(&prometheus::Registry::new())
                .unwrap();
        let config = LeaderConfig {
            namespace: "ns".into(),
            lease_name: "lease".into(),
            identity: "controller-0".into(),
            advertise: "127.0.0.1:1".into(),
            ttl: std::time::Duration::from_secs(15),
            renew_every: std::time::Duration::from_secs(5),
            margin: std::time::Duration::from_secs(5),
        };
        let reg = Incidents::new();
        reg.observed(&incident("api-1", 10, IncidentState::Open));
        let budgets = auto_agent_engine::decide::budget::default_budgets();
        for (leading, want_code, want_len) in [(true, 200, 1), (false, 503, 0)] {
            let (tx, leadership) = channel(&config, metrics.clone());
            tx.send_replace(LeaderView {
                is_leader: leading,
                term: leading.then(|| "t-1".to_owned()),
                ..LeaderView::default()
            });
            let router = router(
                reg.clone(),
                leadership,
                "controller-0".into(),
                budgets.clone(),
                AllowedActions::all(),
            );
            let (code, body) = get(router).await;
            assert_eq!(code.as_u16(), want_code);
            assert_eq!(body["leader"], leading);
            assert_eq!(body["incidents"].as_array().unwrap().len(), want_len);
            assert_eq!(body["clusterBudgets"][0]["action"], "RestartPod");
            assert!(body["allowedActions"].as_array().unwrap().len() > 3);
        }
    }
}
