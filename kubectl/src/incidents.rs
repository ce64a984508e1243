//! `incidents`: the open and recently resolved incidents and their state, from the leader through
//! the apiserver's proxy (so the reader's RBAC applies), or, when the leader cannot be reached,
//! pieced together from the agent's Events (each object's latest).

use std::collections::BTreeMap;

use auto_agent_controller::platform::incidents::IncidentView;
use k8s_openapi::api::events::v1::Event;
use serde::Serialize;

use crate::context::event_ms;
use crate::output::{Render, age, table};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    pub key: String,
    pub kind: String,
    pub state: String,
    pub namespace: String,
    /// `Kind/name` of the workload, or the pod or node.
    pub subject: String,
    pub findings: u32,
    pub last_outcome: String,
    pub last_seen: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incidents {
    /// `leader <identity>`, or `events` with why the leader was not asked.
    pub source: String,
    pub incidents: Vec<IncidentRow>,
}

/// The leader's incidents in `namespace` (all when `None`).
pub fn from_leader(
    views: &[IncidentView],
    namespace: Option<&str>,
    now_ms: i64,
) -> Vec<IncidentRow> {
    views
        .iter()
        .filter(|v| namespace.is_none_or(|ns| v.namespace == ns))
        .map(|v| IncidentRow {
            key: v.key.clone(),
            kind: v.kind.clone(),
            state: v.state.clone(),
            namespace: v.namespace.clone(),
            subject: if !v.workload.is_empty() {
                v.workload.clone()
            } else if !v.pod.is_empty() {
                format!("Pod/{}", v.pod)
            } else {
                format!("Node/{}", v.node)
            },
            findings: v.findings,
            last_outcome: v.last_outcome.as_ref().map_or_else(
                || "(deciding)".to_owned(),
                |o| format!("{} {}", o.outcome, o.reason),
            ),
            last_seen: age(now_ms - v.last_seen_ms),
        })
        .collect()
}

/// Without the leader: each object's latest Event from the agent, newest first. No incident keys
/// or finding counts (Events do not carry them); the state is what the last Event says.
pub fn from_events(events: &[Event], now_ms: i64) -> Vec<IncidentRow> {
    let mut latest: BTreeMap<(String, String), &Event> = BTreeMap::new();
    for e in events {
        let Some(r) = &e.regarding else { continue };
        let key = (
            r.namespace.clone().unwrap_or_default(),
            format!(
                "{}/{}",
                r.kind.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            ),
        );
        if latest.get(&key).is_none_or(|l| event_ms(l) <= event_ms(e)) {
            latest.insert(key, e);
        }
    }
    let mut rows: Vec<(i64, IncidentRow)> = latest
        .into_iter()
        .map(|((namespace, subject), e)| {
            let reason = e.reason.clone().unwrap_or_default();
            let state = if reason.contains("Resolved") {
                "Resolved"
            } else {
                "Open"
            };
            (
                event_ms(e),
                IncidentRow {
                    key: String::new(),
                    kind: String::new(),
                    state: state.to_owned(),
                    namespace,
                    subject,
                    findings: 0,
                    last_outcome: format!("{} {reason}", e.type_.as_deref().unwrap_or_default()),
                    last_seen: age(now_ms - event_ms(e)),
                },
            )
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.into_iter().map(|(_, r)| r).collect()
}

impl Render for Incidents {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .incidents
            .iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.subject.clone(),
                    r.kind.clone(),
                    r.state.clone(),
                    r.findings.to_string(),
                    r.last_outcome.clone(),
                    r.last_seen.clone(),
                    r.key.clone(),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "NAMESPACE",
                "SUBJECT",
                "KIND",
                "STATE",
                "FINDINGS",
                "LAST OUTCOME",
                "SEEN",
                "KEY",
            ],
            &rows,
        );
        out.push_str(&format!("\nfrom {}\n", self.source));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_controller::platform::incidents::OutcomeView;
    use serde_json::json;

    fn view(
        ns: &str,
        workload: &str,
        pod: &str,
        node: &str,
        outcome: Option<&str>,
    ) -> IncidentView {
        IncidentView {
            key: format!("k-{ns}-{workload}{pod}{node}"),
            kind: "CrashLoopBackOff".into(),
            state: "Open".into(),
            node: node.into(),
            namespace: ns.into(),
            pod: pod.into(),
            workload: workload.into(),
            container: "app".into(),
            opened_at_ms: 0,
            last_seen_ms: 40_000,
            findings: 3,
            last_outcome: outcome.map(|r| OutcomeView {
                outcome: "Refused".into(),
                reason: r.into(),
                action: "RestartPod".into(),
                message: String::new(),
                at_ms: 0,
            }),
        }
    }

    #[test]
    fn leader_rows_filter_by_namespace_and_name_their_subject() {
        let views = [
            view(
                "shop",
                "Deployment/api",
                "api-1",
                "n",
                Some("BudgetExhausted"),
            ),
            view("shop", "", "bare", "n", None),
            view("", "", "", "node-a", None),
            view("web", "Deployment/web", "web-1", "n", None),
        ];
        let rows = from_leader(&views, Some("shop"), 100_000);
        let got: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.subject.as_str(),
                    r.last_outcome.as_str(),
                    r.last_seen.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Deployment/api", "Refused BudgetExhausted", "1m"),
                ("Pod/bare", "(deciding)", "1m")
            ]
        );
        assert_eq!(from_leader(&views, None, 100_000)[2].subject, "Node/node-a");
    }

    #[test]
    fn without_the_leader_each_objects_latest_event_stands_for_it() {
        let ev = |name: &str, reason: &str, t: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": format!("{name}.{reason}"), "namespace": "shop"},
                "eventTime": t, "reason": reason, "type": "Normal", "reportingController": "auto-agent",
                "regarding": {"kind": "Deployment", "namespace": "shop", "name": name}}))
            .unwrap()
        };
        let events = [
            ev("api", "RestartedPod", "2026-01-01T00:00:00.000000Z"),
            ev("api", "EscalationResolved", "2026-01-01T00:05:00.000000Z"),
            ev("web", "BudgetExhausted", "2026-01-01T00:03:00.000000Z"),
        ];
        let now = k8s_openapi::jiff::Timestamp::from_second(1_767_225_900)
            .unwrap()
            .as_millisecond();
        let rows = from_events(&events, now);
        let got: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.subject.as_str(),
                    r.state.as_str(),
                    r.last_outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Deployment/api", "Resolved", "Normal EscalationResolved"),
                ("Deployment/web", "Open", "Normal BudgetExhausted")
            ]
        );
    }
}
