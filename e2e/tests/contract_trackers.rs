//! The escalation flow of the controller's delivery stage (the escalation crate's rules and
//! `Deliverer` with the real clients) against the GitHub, GitLab, Jira Cloud and Jira Data
//! Center contract servers, with a Slack bot thread alongside: file one ticket per incident key,
//! adopt it instead of filing again when the record was lost (a leader that died before writing
//! it), comment on a repeat, close with a comment on resolve, reopen on a recurrence; and no
//! request breaks the providers' published API descriptions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::contract::{
    ContractServer, GITHUB_TOKEN, GITLAB_TOKEN, JIRA_CLOUD_EMAIL, JIRA_CLOUD_TOKEN, JIRA_DC_TOKEN,
    Provider, SLACK_TOKEN,
};
use auto_agent_escalation::channels::Trackers;
use auto_agent_escalation::deliver::Deliverer;
use auto_agent_escalation::jira::{Jira, JiraConfig, JiraFlavor};
use auto_agent_escalation::llm::Llm;
use auto_agent_escalation::record::{
    Facts, Record, Routes, Rules, Signal, SignalKind, Status, TicketProvider, TicketRoute, apply,
};
use auto_agent_escalation::slack::{Slack, SlackRoute};
use auto_agent_forge::{Forge, ForgeConfig, ForgeKind, Secret};

type Live = Deliverer<Slack, Trackers, Llm>;

fn deliverer(server: &ContractServer) -> Live {
    let forge = |kind, api_url: String, token: &str| {
        Some(
            Forge::new(ForgeConfig {
                kind,
                api_url,
                token: Secret::new(token),
            })
            .unwrap(),
        )
    };
    Deliverer {
        slack: Some(
            Slack::new(SlackRoute::Bot {
                api_url: server.slack_api_url(),
                token: Secret::new(SLACK_TOKEN),
            })
            .unwrap(),
        ),
        tickets: Trackers {
            github: forge(ForgeKind::GitHub, server.github_api_url(), GITHUB_TOKEN),
            gitlab: forge(ForgeKind::GitLab, server.gitlab_api_url(), GITLAB_TOKEN),
            gitea: None,
            jira: None,
        },
        llm: None,
        max_backoff: Duration::from_secs(1),
        permanent_backoff: Duration::from_secs(1),
    }
}

fn jira(server: &ContractServer, flavor: JiraFlavor) -> Jira {
    let (url, email, token) = match flavor {
        JiraFlavor::Cloud => (
            server.jira_cloud_url(),
            Some(JIRA_CLOUD_EMAIL.to_owned()),
            JIRA_CLOUD_TOKEN,
        ),
        JiraFlavor::DataCenter => (server.jira_dc_url(), None, JIRA_DC_TOKEN),
    };
    let mut cfg = JiraConfig::new(flavor, url, Secret::new(token));
    cfg.email = email;
    Jira::new(cfg).unwrap()
}

fn signal(key: &str, at_ms: i64, kind: SignalKind, ticket: &TicketRoute) -> Signal {
    Signal {
        incident: key.to_owned(),
        at_ms,
        kind,
        note: format!("RestartPod budget for this workload used up (incident {key})"),
        facts: Facts {
            target: "Deployment/shop/api".into(),
            namespace: Some("shop".into()),
            policy: "shop/restart".into(),
            failure: "CrashLoopBackOff".into(),
            evidence: Some("s3://incident-evidence/shop/api/1.json".into()),
            log_tail: vec!["panic: connection refused".into()],
            subject: None,
        },
        routes: Routes {
            slack_channel: Some("#prod-incidents".into()),
            ticket: Some(ticket.clone()),
            after_seconds: None,
        },
    }
}

fn refused(key: &str, at: i64, t: &TicketRoute) -> Signal {
    signal(
        key,
        at,
        SignalKind::Refused {
            reason: "BudgetExhausted".into(),
        },
        t,
    )
}

/// Delivers everything the record owes; panics on a failed delivery (the contract servers
/// answer every valid request).
async fn drain(d: &Live, r: &mut Record, now: i64) {
    while let Some(a) = d.deliver_one(r, now).await {
        assert!(
            a.result.is_ok(),
            "{:?} {:?}: {:?}",
            a.channel,
            a.what,
            a.result
        );
    }
    assert!(r.outbox.is_empty());
}

/// The whole lifecycle for one tracker. Returns the ticket id.
async fn lifecycle(d: &Live, key: &str, route: TicketRoute) -> Record {
    let rules = Rules::default();
    let (r, _) = apply(None, &refused(key, 1_000, &route), &rules);
    let mut r = r.unwrap();
    drain(d, &mut r, 1_000).await;
    let ticket = r.ticket.clone().expect("a ticket");
    assert!(r.slack.is_some(), "a thread");
    // The record is lost (a leader died before writing it): the ticket is found by its label and
    // adopted, not filed again.
    let (lost, _) = apply(None, &refused(key, 2_000, &route), &rules);
    let mut lost = lost.unwrap();
    lost.outbox
        .retain(|o| o.channel == auto_agent_escalation::record::Channel::Ticket);
    drain(d, &mut lost, 2_000).await;
    assert_eq!(lost.ticket.as_ref().map(|t| &t.id), Some(&ticket.id));
    // A repeat: a comment and a reply.
    let (next, _) = apply(Some(r), &refused(key, 3_000, &route), &rules);
    let mut r = next.unwrap();
    drain(d, &mut r, 3_000).await;
    // Resolved: closed with a comment.
    let (next, _) = apply(
        Some(r),
        &signal(key, 4_000, SignalKind::Resolved, &route),
        &rules,
    );
    let mut r = next.unwrap();
    assert_eq!(r.status, Status::Resolved);
    drain(d, &mut r, 4_000).await;
    // A recurrence within the window: reopened, same ticket.
    let (next, _) = apply(Some(r), &refused(key, 5_000, &route), &rules);
    let mut r = next.unwrap();
    drain(d, &mut r, 5_000).await;
    assert_eq!(r.ticket.as_ref().map(|t| &t.id), Some(&ticket.id));
    r
}

fn count(reqs: &[auto_agent_e2e::contract::RecordedRequest], method: &str, suffix: &str) -> usize {
    reqs.iter()
        .filter(|r| {
            r.valid
                && r.method == method
                && r.path.ends_with(suffix)
                && (200..300).contains(&r.status)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_gitlab_and_jira_get_one_ticket_per_incident_through_its_lifecycle() {
    let dir = std::env::temp_dir().join(format!("e2e-contract-trackers-{}", std::process::id()));
    let server = ContractServer::start(&dir).await.unwrap();
    let mut d = deliverer(&server);

    let gh = lifecycle(
        &d,
        "pod/shop/Deployment/api/CrashLoopBackOff",
        TicketRoute {
            provider: TicketProvider::GitHub,
            project: "acme/ops-incidents".into(),
        },
    )
    .await;
    let reqs = server.requests(Provider::GitHub).await.unwrap();
    assert_eq!(count(&reqs, "POST", "/issues"), 1, "one GitHub issue");
    // repeat, resolve, recurrence
    assert_eq!(count(&reqs, "POST", "/comments"), 3);
    let states: Vec<&str> = reqs
        .iter()
        .filter(|r| r.method == "PATCH")
        .filter_map(|r| r.body["state"].as_str())
        .collect();
    assert!(states.ends_with(&["closed", "open"]), "{states:?}");
    assert!(gh.ticket.unwrap().url.contains("/acme/ops-incidents/"));

    lifecycle(
        &d,
        "pod/shop/Deployment/worker/OOMKilled",
        TicketRoute {
            provider: TicketProvider::GitLab,
            project: "acme/platform/ops".into(),
        },
    )
    .await;
    let reqs = server.requests(Provider::GitLab).await.unwrap();
    assert_eq!(count(&reqs, "POST", "/issues"), 1, "one GitLab issue");
    assert_eq!(count(&reqs, "POST", "/notes"), 3);
    let events: Vec<&str> = reqs
        .iter()
        .filter(|r| r.method == "PUT")
        .filter_map(|r| r.body["state_event"].as_str())
        .collect();
    assert!(events.ends_with(&["close", "reopen"]), "{events:?}");

    for (flavor, provider, key) in [
        (
            JiraFlavor::Cloud,
            Provider::JiraCloud,
            "node/node-1/MemoryPressure",
        ),
        (
            JiraFlavor::DataCenter,
            Provider::JiraDc,
            "node/node-2/DiskPressure",
        ),
    ] {
        d.tickets.jira = Some(jira(&server, flavor));
        lifecycle(
            &d,
            key,
            TicketRoute {
                provider: TicketProvider::Jira,
                project: "OPS".into(),
            },
        )
        .await;
        let reqs = server.requests(provider).await.unwrap();
        assert_eq!(count(&reqs, "POST", "/issue"), 1, "one {flavor:?} issue");
        assert_eq!(count(&reqs, "POST", "/comment"), 3, "{flavor:?}");
        assert!(
            count(&reqs, "POST", "/transitions") >= 2,
            "{flavor:?} closed and reopened"
        );
    }

    // Slack: one thread per incident (four roots), every other message in its thread.
    let posts: Vec<_> = server
        .requests(Provider::Slack)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.valid && r.path.ends_with("chat.postMessage") && r.status == 200)
        .collect();
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.body["thread_ts"].is_null())
            .count(),
        4
    );
    assert!(posts.len() > 4);
    let rejected = server.rejected().await.unwrap();
    assert!(
        rejected.is_empty(),
        "requests that broke the contract: {rejected:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
