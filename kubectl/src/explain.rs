//! `explain pod/NAME | deploy/NAME`: which policy selects the workload and why (or why none), what
//! the agent did (its Events, ledger records, tickets and pull requests), and what it would do now
//! for each kind of pod failure, decided by the engine on live facts.

use std::collections::BTreeMap;

use auto_agent_controller::policies::index::PolicyEntry;
use serde::Serialize;

use crate::context::{Ctx, event_ms};
use crate::judge::{self, Judge, Judgement, KINDS};
use crate::output::{Render, age, table, time};
use crate::target::Resolved;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    pub policy: String,
    pub selects: bool,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    pub at: String,
    pub action: String,
    pub policy: String,
    pub incident: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub at: String,
    pub age: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub object: String,
    pub note: String,
}

/// A ticket, Slack thread or pull request the agent keeps for an incident of this workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub kind: String,
    pub incident: String,
    pub status: String,
    pub link: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub target: String,
    pub pods: Vec<String>,
    pub policies: Vec<PolicyMatch>,
    /// The policy the controller uses (the first by name that selects it).
    pub policy: Option<String>,
    pub actions: Vec<Done>,
    pub events: Vec<EventLine>,
    /// Where the evidence bundles of its restarts are, newest last.
    pub bundles: Vec<String>,
    pub links: Vec<Link>,
    pub would_do: Vec<Judgement>,
    /// Where the decision settings came from.
    pub decided_with: String,
    /// What could not be read (with the reader's RBAC), and other caveats.
    pub notes: Vec<String>,
}

/// Whether each policy selects pods with these labels, and why; the controller uses the first
/// that does (policies by name).
pub fn matches(policies: &[PolicyEntry], labels: &BTreeMap<String, String>) -> Vec<PolicyMatch> {
    let mut first: Option<String> = None;
    policies
        .iter()
        .map(|p| {
            let (selects, why) = if let Some(problem) = &p.problem {
                (
                    false,
                    format!("unusable ({}): {}", problem.reason, problem.message),
                )
            } else if !p.target.as_ref().is_some_and(|t| t.matches(labels)) {
                (
                    false,
                    "its targetSelector does not match the pods' labels".to_owned(),
                )
            } else if p.exclude.as_ref().is_some_and(|e| e.matches(labels)) {
                (
                    false,
                    "its excludeSelector matches the pods' labels".to_owned(),
                )
            } else {
                match &first {
                    Some(f) => (
                        true,
                        format!("selects, but {f} comes first by name and is used"),
                    ),
                    None => {
                        first = Some(p.name.clone());
                        (true, "selects the pods; this policy is used".to_owned())
                    }
                }
            };
            PolicyMatch {
                policy: p.name.clone(),
                selects,
                why,
            }
        })
        .collect()
}

/// The evidence bundles named by the agent's restart Events (`...; evidence bundle <where> (policy
/// <name>)`).
pub fn bundles(events: &[EventLine]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.reason == "RestartedPod")
        .filter_map(|e| {
            let (_, rest) = e.note.split_once("evidence bundle ")?;
            let at = rest.rfind(" (policy ").unwrap_or(rest.len());
            Some(rest[..at].to_owned())
        })
        .collect()
}

/// The escalation and GitOps records about `target` (`Kind/namespace/name`).
pub fn links(
    target: &str,
    escalations: &[serde_json::Value],
    proposals: &[serde_json::Value],
) -> Vec<Link> {
    let s = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut out = Vec::new();
    for r in escalations
        .iter()
        .filter(|r| s(r, "/facts/target") == target)
    {
        if let Some(url) = r.pointer("/ticket/url").and_then(|u| u.as_str()) {
            out.push(Link {
                kind: "ticket".into(),
                incident: s(r, "/key"),
                status: s(r, "/status"),
                link: url.to_owned(),
            });
        }
        if r.get("slack").is_some_and(|v| !v.is_null()) {
            out.push(Link {
                kind: "slack".into(),
                incident: s(r, "/key"),
                status: s(r, "/status"),
                link: format!("{} thread {}", s(r, "/slack/channel"), s(r, "/slack/ts")),
            });
        }
    }
    for r in proposals {
        let on = format!(
            "{}/{}/{}",
            s(r, "/event_on/kind"),
            s(r, "/event_on/namespace"),
            s(r, "/event_on/name")
        );
        if on != target {
            continue;
        }
        let link = r.pointer("/pull/url").and_then(|u| u.as_str()).map_or_else(
            || {
                format!(
                    "not opened yet{}",
                    r.get("last_error")
                        .and_then(|e| e.as_str())
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            },
            str::to_owned,
        );
        out.push(Link {
            kind: "pull request".into(),
            incident: s(r, "/key"),
            status: s(r, "/status"),
            link,
        });
    }
    out
}

pub async fn explain(ctx: &Ctx, w: &Resolved) -> anyhow::Result<Explanation> {
    let mut notes = Vec::new();
    let policies = ctx.policies(Some(&w.namespace)).await?;
    let policy_matches = matches(&policies, &w.pod_labels);
    let used = policy_matches
        .iter()
        .find(|m| m.selects)
        .and_then(|m| policies.iter().find(|p| p.name == m.policy));
    let target = w.id();

    let history = match ctx.history().await {
        Ok(h) => h,
        Err(e) => {
            notes.push(format!("the ledger: {e:#}"));
            Default::default()
        }
    };
    let actions = history
        .records
        .iter()
        .filter(|r| r.target == target)
        .map(|r| Done {
            at: time(r.at_ms),
            action: r.action.as_str().to_owned(),
            policy: r.policy.clone(),
            incident: r.incident.clone(),
        })
        .collect();

    let pod_names: Vec<String> = w
        .pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let events = match ctx.agent_events(Some(&w.namespace)).await {
        Ok(all) => all
            .iter()
            .filter(|e| {
                let Some(r) = &e.regarding else { return false };
                let (kind, name) = (
                    r.kind.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default(),
                );
                (kind == w.kind && name == w.name)
                    || (kind == "Pod"
                        && (pod_names.iter().any(|p| p == name)
                            || w.named_pod.as_deref() == Some(name)))
            })
            .map(|e| {
                let r = e.regarding.as_ref();
                EventLine {
                    at: time(event_ms(e)),
                    age: age(ctx.now_ms - event_ms(e)),
                    type_: e.type_.clone().unwrap_or_default(),
                    reason: e.reason.clone().unwrap_or_default(),
                    object: format!(
                        "{}/{}",
                        r.and_then(|r| r.kind.clone()).unwrap_or_default(),
                        r.and_then(|r| r.name.clone()).unwrap_or_default()
                    ),
                    note: e.note.clone().unwrap_or_default(),
                }
            })
            .collect(),
        Err(e) => {
            notes.push(format!("Events: {e:#}"));
            Vec::new()
        }
    };

    let escalations = ctx.records("escalation").await.unwrap_or_else(|e| {
        notes.push(format!("tickets and Slack threads: {e:#}"));
        Vec::new()
    });
    let proposals = ctx.records("gitops").await.unwrap_or_else(|e| {
        notes.push(format!("pull requests: {e:#}"));
        Vec::new()
    });

    let config = ctx.decision_config().await;
    let registry = judge::registry_for(&policies, &ctx.agent.plain_http_registries)?;
    let judge = Judge {
        client: &ctx.client,
        registry: &registry,
        history: &history,
        config: &config,
        now_ms: ctx.now_ms,
    };
    let current: Vec<(String, Vec<auto_agent_engine::Finding>)> = w
        .pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                judge::current_findings(p, ctx.now_ms),
            )
        })
        .collect();
    let failing = current.iter().filter(|(_, f)| !f.is_empty()).count() as u32;
    // The pod named, else one failing, else the first.
    let pod = w
        .named_pod
        .as_ref()
        .and_then(|n| w.pods.iter().find(|p| p.metadata.name.as_ref() == Some(n)))
        .or_else(|| {
            current
                .iter()
                .find(|(_, f)| !f.is_empty())
                .and_then(|(n, _)| w.pods.iter().find(|p| p.metadata.name.as_ref() == Some(n)))
        })
        .or_else(|| w.pods.first());
    let mut would_do = Vec::new();
    match pod {
        Some(pod) => {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let now = current
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            let first_container = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default();
            for kind in KINDS {
                let real = now.iter().find(|f| f.kind == kind);
                let (finding, supposed) = match real {
                    Some(f) => (f.clone(), false),
                    None => {
                        let container = now
                            .first()
                            .and_then(|f| f.container.clone())
                            .unwrap_or_else(|| first_container.clone());
                        (
                            judge::supposed_finding(pod, &container, kind, ctx.now_ms),
                            true,
                        )
                    }
                };
                would_do.push(judge.decide(&finding, used, supposed, failing).await?);
            }
        }
        None => notes.push("no pods: nothing to decide on".into()),
    }

    Ok(Explanation {
        target,
        pods: pod_names,
        policies: policy_matches,
        policy: used.map(|p| p.name.clone()),
        actions,
        bundles: bundles(&events),
        events,
        links: links(&w.id(), &escalations, &proposals),
        would_do,
        decided_with: config.source,
        notes,
    })
}

impl Render for Explanation {
    fn table(&self) -> String {
        let mut out = format!(
            "Target:   {}\nPods:     {}\n",
            self.target,
            self.pods.join(", ")
        );
        out.push_str(&format!(
            "Policy:   {}\n\nPolicies in the namespace:\n",
            self.policy
                .as_deref()
                .unwrap_or("none selects it: the agent reports its failures and does nothing")
        ));
        if self.policies.is_empty() {
            out.push_str("  (none)\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .policies
                .iter()
                .map(|p| {
                    vec![
                        p.policy.clone(),
                        if p.selects { "yes" } else { "no" }.into(),
                        p.why.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(&["POLICY", "SELECTS", "WHY"], &rows)));
        }
        out.push_str("\nWhat the agent did (ledger):\n");
        if self.actions.is_empty() {
            out.push_str("  nothing\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .actions
                .iter()
                .map(|a| {
                    vec![
                        a.at.clone(),
                        a.action.clone(),
                        a.policy.clone(),
                        a.incident.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["TIME", "ACTION", "POLICY", "INCIDENT"],
                &rows,
            )));
        }
        out.push_str("\nEvents from the agent:\n");
        if self.events.is_empty() {
            out.push_str("  none\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.age.clone(),
                        e.type_.clone(),
                        e.reason.clone(),
                        e.object.clone(),
                        e.note.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["AGE", "TYPE", "REASON", "OBJECT", "NOTE"],
                &rows,
            )));
        }
        if !self.bundles.is_empty() {
            out.push_str("\nEvidence bundles:\n");
            for b in &self.bundles {
                out.push_str(&format!("  {b}\n"));
            }
        }
        if !self.links.is_empty() {
            out.push_str("\nTickets, threads and pull requests:\n");
            let rows: Vec<Vec<String>> = self
                .links
                .iter()
                .map(|l| {
                    vec![
                        l.kind.clone(),
                        l.status.clone(),
                        l.link.clone(),
                        l.incident.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["KIND", "STATUS", "LINK", "INCIDENT"],
                &rows,
            )));
        }
        out.push_str(&format!(
            "\nWhat it would do now (decided with {}):\n",
            self.decided_with
        ));
        out.push_str(&indent(&judge::table(&self.would_do)));
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}\n"));
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, spec: serde_json::Value) -> PolicyEntry {
        let obj = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                         "metadata": {"name": name, "namespace": "shop"}, "spec": spec});
        auto_agent_controller::policies::index::entry(serde_json::from_value(obj).unwrap())
    }

    #[test]
    fn each_policy_says_whether_it_selects_and_the_first_by_name_is_used() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "api".to_owned()),
            ("tier".to_owned(), "web".to_owned()),
        ]
        .into();
        let policies = vec![
            policy(
                "a-other",
                json!({"targetSelector": {"matchLabels": {"app": "db"}}, "actions": {}}),
            ),
            policy(
                "b-excluded",
                json!({"targetSelector": {"matchLabels": {"app": "api"}},
                                        "excludeSelector": {"matchLabels": {"tier": "web"}}, "actions": {}}),
            ),
            policy(
                "c-used",
                json!({"targetSelector": {"matchLabels": {"app": "api"}}, "actions": {}}),
            ),
            policy("d-second", json!({"targetSelector": {}, "actions": {}})),
            policy(
                "e-broken",
                json!({"targetSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}, "actions": {}}),
            ),
        ];
        let got: Vec<(String, bool, String)> = matches(&policies, &labels)
            .into_iter()
            .map(|m| (m.policy, m.selects, m.why))
            .collect();
        assert!(!got[0].1);
        assert!(
            got[0].2.contains("targetSelector does not match"),
            "{:?}",
            got[0]
        );
        assert!(
            !got[1].1 && got[1].2.contains("excludeSelector"),
            "{:?}",
            got[1]
        );
        assert!(got[2].1 && got[2].2.contains("is used"), "{:?}", got[2]);
        assert!(
            got[3].1 && got[3].2.contains("c-used comes first"),
            "{:?}",
            got[3]
        );
        assert!(
            !got[4].1 && got[4].2.starts_with("unusable"),
            "{:?}",
            got[4]
        );
    }

    #[test]
    fn bundles_are_read_from_the_restart_events() {
        let line = |reason: &str, note: &str| EventLine {
            at: String::new(),
            age: String::new(),
            type_: "Normal".into(),
            reason: reason.into(),
            object: String::new(),
            note: note.into(),
        };
        let events = [
            line(
                "RestartedPod",
                "deleted pod api-1 (container app is in CrashLoopBackOff after 3 restarts); evidence bundle s3://b/shop/api/x.json (policy restart)",
            ),
            line("BudgetExhausted", "evidence bundle nowhere (policy p)"),
            line(
                "RestartedPod",
                "deleted pod api-2 (r); evidence bundle /var/b/y.json",
            ),
        ];
        assert_eq!(
            bundles(&events),
            ["s3://b/shop/api/x.json", "/var/b/y.json"]
        );
    }

    #[test]
    fn links_are_the_records_about_this_workload_only() {
        let target = "Deployment/shop/api";
        let escalations = vec![
            json!({"key": "k1", "status": "Open", "facts": {"target": target},
                   "ticket": {"url": "https://git.example/issues/4"}, "slack": {"channel": "C1", "ts": "1.2"}}),
            json!({"key": "k2", "status": "Open", "facts": {"target": "Deployment/shop/web"},
                   "ticket": {"url": "https://git.example/issues/5"}}),
        ];
        let proposals = vec![
            json!({"key": "k3", "status": "Open", "event_on": {"kind": "Deployment", "namespace": "shop", "name": "api"},
                   "pull": {"url": "https://git.example/pulls/9"}}),
            json!({"key": "k4", "status": "Pending", "event_on": {"kind": "Deployment", "namespace": "shop", "name": "api"},
                   "pull": null, "last_error": "the values file has no such key"}),
        ];
        let got = links(target, &escalations, &proposals);
        let kinds: Vec<(&str, &str)> = got
            .iter()
            .map(|l| (l.kind.as_str(), l.link.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ticket", "https://git.example/issues/4"),
                ("slack", "C1 thread 1.2"),
                ("pull request", "https://git.example/pulls/9"),
                (
                    "pull request",
                    "not opened yet: the values file has no such key"
                ),
            ]
        );
    }
}
