//! The Slack and Jira clients against the contract servers (e2e/contract/server.py), which
//! validate every request against Slack's, GitHub's, GitLab's and Jira's machine-readable API
//! descriptions: each test ends with no request rejected. The first test proves the server can
//! tell a broken request from a good one for every provider.
//!
//! Needs `e2e/integrations build contract` (a venv and the description files, cached).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::contract::{self, ContractServer, Provider};
use auto_agent_escalation::doc::{Block, Doc};
use auto_agent_escalation::jira::{Jira, JiraConfig, JiraError, JiraFlavor};
use auto_agent_escalation::slack::{Slack, SlackError, SlackMessage, SlackRoute, SlackThread};
use auto_agent_forge::Secret;
use base64::Engine;
use serde_json::{Value, json};

async fn server(name: &str) -> ContractServer {
    let dir = std::env::temp_dir().join(format!("e2e-contract-{name}-{}", std::process::id()));
    ContractServer::start(&dir).await.unwrap()
}

async fn assert_none_rejected(server: &ContractServer) {
    let rejected = server.rejected().await.unwrap();
    assert!(rejected.is_empty(), "rejected requests: {rejected:#?}");
}

/// An incident text as escalation builds it: every block kind.
fn incident_doc() -> Doc {
    let mut d = Doc::new();
    d.push(Block::Heading("Crash loop in shop/api".into()))
        .push(Block::Paragraph(
            "The agent restarted the pod twice.".into(),
        ))
        .push(Block::Fields(vec![
            (
                "Incident key".into(),
                "pod/shop/Deployment/api/CrashLoopBackOff".into(),
            ),
            ("Workload".into(), "Deployment shop/api".into()),
        ]))
        .push(Block::Bullets(vec![
            "restarted pod api-1".into(),
            "restarted pod api-2".into(),
        ]))
        .push(Block::Code("panic: boom\n  at main.go:12".into()))
        .push(Block::Paragraph(String::new()));
    d
}

fn incident_message(title: &str) -> SlackMessage {
    SlackMessage {
        text: format!("{title}: crash loop in shop/api"),
        blocks: json!([
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Workload*: Deployment shop/api"},
             "fields": [{"type": "mrkdwn", "text": "*Restarts*\n2"}, {"type": "mrkdwn", "text": "*Namespace*\nshop"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "incident `pod/shop/Deployment/api/CrashLoopBackOff`"}]},
        ]),
    }
}

fn bot(server: &ContractServer) -> Slack {
    Slack::new(SlackRoute::Bot {
        api_url: server.slack_api_url(),
        token: Secret::new(contract::SLACK_TOKEN),
    })
    .unwrap()
}

fn jira_cloud(server: &ContractServer) -> Jira {
    let mut config = JiraConfig::new(
        JiraFlavor::Cloud,
        server.jira_cloud_url(),
        Secret::new(contract::JIRA_CLOUD_TOKEN),
    );
    config.email = Some(contract::JIRA_CLOUD_EMAIL.to_owned());
    Jira::new(config).unwrap()
}

fn jira_dc(server: &ContractServer) -> Jira {
    Jira::new(JiraConfig::new(
        JiraFlavor::DataCenter,
        server.jira_dc_url(),
        Secret::new(contract::JIRA_DC_TOKEN),
    ))
    .unwrap()
}

/// The contract server's own check: one valid and one invalid request per provider, told apart.
#[tokio::test]
async fn contract_server_tells_valid_from_invalid_requests() {
    let server = server("selftest").await;
    // reqwest is built without a default crypto provider in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let json_ct = "application/json; charset=utf-8";
    let gh = |req: reqwest::RequestBuilder| {
        req.header(
            "Authorization",
            format!("Bearer {}", contract::GITHUB_TOKEN),
        )
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header("User-Agent", "contract-selftest")
        .header("Content-Type", "application/json")
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        contract::JIRA_CLOUD_EMAIL,
        contract::JIRA_CLOUD_TOKEN
    ));
    let adf = json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "x"}]}]});
    // (provider, request, expected status, the rule expected to fail or None)
    let cases: Vec<(Provider, reqwest::RequestBuilder, u16, Option<&str>)> = vec![
        (
            Provider::Slack,
            http.post(format!("{}/chat.postMessage", server.slack_api_url()))
                .bearer_auth(contract::SLACK_TOKEN)
                .header("Content-Type", json_ct)
                .body(json!({"channel": "#alerts", "text": "t"}).to_string()),
            200,
            None,
        ),
        (
            Provider::Slack,
            http.post(format!("{}/chat.update", server.slack_api_url()))
                .bearer_auth(contract::SLACK_TOKEN)
                .header("Content-Type", json_ct)
                .body(json!({"channel": "C0AAAAAAAAA", "text": "t"}).to_string()),
            400,
            Some("required"),
        ),
        (
            Provider::Slack,
            http.post(server.slack_webhook_url())
                .header("Content-Type", "application/json")
                .body(json!({"text": "t", "channel_name": "x"}).to_string()),
            400,
            Some("invalid_payload"),
        ),
        (
            Provider::GitHub,
            gh(http.post(format!("{}/repos/o/r/issues", server.github_api_url())))
                .body(json!({"title": "t", "labels": ["auto-agent:1"]}).to_string()),
            201,
            None,
        ),
        (
            Provider::GitHub,
            gh(http.post(format!("{}/repos/o/r/issues", server.github_api_url())))
                .body(json!({"title": "t", "labels": "auto-agent:1"}).to_string()),
            422,
            Some("body_schema"),
        ),
        (
            Provider::GitHub,
            http.get(format!("{}/repos/o/r/issues", server.github_api_url()))
                .bearer_auth(contract::GITHUB_TOKEN)
                .header("User-Agent", "contract-selftest"),
            400,
            Some("accept"),
        ),
        (
            Provider::GitLab,
            http.post(format!("{}/projects/grp%2Fapp/issues", server.gitlab_api_url()))
                .header("PRIVATE-TOKEN", contract::GITLAB_TOKEN)
                .header("Content-Type", "application/json")
                .body(json!({"title": "t", "labels": "auto-agent:1"}).to_string()),
            201,
            None,
        ),
        (
            Provider::GitLab,
            http.put(format!("{}/projects/grp%2Fapp/issues/1", server.gitlab_api_url()))
                .header("PRIVATE-TOKEN", contract::GITLAB_TOKEN)
                .header("Content-Type", "application/json")
                .body(json!({"state": "closed"}).to_string()),
            400,
            Some("unknown_attribute"),
        ),
        (
            Provider::JiraCloud,
            http.post(format!("{}/rest/api/3/issue", server.jira_cloud_url()))
                .header("Authorization", format!("Basic {basic}"))
                .header("Content-Type", "application/json")
                .body(json!({"fields": {"project": {"key": "OPS"}, "summary": "s", "issuetype": {"name": "Task"}, "description": adf, "labels": ["a"]}}).to_string()),
            201,
            None,
        ),
        (
            Provider::JiraCloud,
            http.post(format!("{}/rest/api/3/issue/OPS-1/comment", server.jira_cloud_url()))
                .header("Authorization", format!("Basic {basic}"))
                .header("Content-Type", "application/json")
                .body(json!({"body": "plain text is v2, not v3"}).to_string()),
            400,
            Some("adf"),
        ),
        (
            Provider::JiraCloud,
            http.post(format!("{}/rest/api/3/search", server.jira_cloud_url()))
                .header("Authorization", format!("Basic {basic}"))
                .header("Content-Type", "application/json")
                .body(json!({"jql": "project = OPS"}).to_string()),
            410,
            Some("removed"),
        ),
        (
            Provider::JiraDc,
            http.post(format!("{}/rest/api/2/issue", server.jira_dc_url()))
                .bearer_auth(contract::JIRA_DC_TOKEN)
                .header("Content-Type", "application/json")
                .body(json!({"fields": {"project": {"key": "OPS"}, "summary": "s", "issuetype": {"name": "Task"}, "description": "plain"}}).to_string()),
            201,
            None,
        ),
        (
            Provider::JiraDc,
            http.post(format!("{}/rest/api/2/issue", server.jira_dc_url()))
                .bearer_auth(contract::JIRA_DC_TOKEN)
                .header("Content-Type", "application/json")
                .body(json!({"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Task"}}}).to_string()),
            400,
            Some("required_fields"),
        ),
    ];
    let mut expected_rejections = Vec::new();
    for (i, (provider, req, status, rule)) in cases.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "case {i} ({provider:?}): {text}");
        if let Some(rule) = rule {
            assert!(
                text.contains(rule),
                "case {i}: the answer names the rule {rule}: {text}"
            );
            expected_rejections.push((provider.as_str(), rule));
        }
    }
    let rejected: Vec<(String, String)> = server
        .rejected()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.provider, r.rule.unwrap_or_default()))
        .collect();
    let expected: Vec<(String, String)> = expected_rejections
        .into_iter()
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
        .collect();
    assert_eq!(rejected, expected);
    // Each provider's records hold the accepted request too, and no credential.
    for provider in [
        Provider::Slack,
        Provider::GitHub,
        Provider::GitLab,
        Provider::JiraCloud,
        Provider::JiraDc,
    ] {
        let records = server.requests(provider).await.unwrap();
        assert!(
            records.iter().any(|r| r.valid),
            "{provider:?}: {records:#?}"
        );
        let shown = format!("{records:?}");
        for secret in [
            contract::SLACK_TOKEN,
            contract::GITHUB_TOKEN,
            contract::GITLAB_TOKEN,
            contract::JIRA_DC_TOKEN,
            &basic,
            "whsecret",
        ] {
            assert!(
                !shown.contains(secret),
                "{provider:?} records show a credential"
            );
        }
    }
}

#[tokio::test]
async fn slack_webhook_and_bot_thread_with_update() {
    let server = server("slack").await;
    let webhook = Slack::new(SlackRoute::Webhook {
        url: Secret::new(server.slack_webhook_url()),
    })
    .unwrap();
    assert_eq!(
        webhook
            .post("#alerts", &incident_message("Crash loop"), None)
            .await
            .unwrap(),
        None
    );

    let slack = bot(&server);
    let thread = slack
        .post("#prod-incidents", &incident_message("Crash loop"), None)
        .await
        .unwrap()
        .expect("a bot post returns its thread");
    // Slack answers with the channel ID, not the name.
    assert!(
        thread.channel.starts_with('C') && thread.channel.len() == 11,
        "{thread:?}"
    );
    let reply = SlackMessage {
        text: "Restarted api-1 again".into(),
        blocks: Value::Null,
    };
    let replied = slack
        .post("#prod-incidents", &reply, Some(&thread))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replied.channel, thread.channel);
    assert_ne!(replied.ts, thread.ts);
    slack
        .update(&thread, &incident_message("Resolved: crash loop"))
        .await
        .unwrap();
    // A webhook can answer into the bot's thread too (it cannot start one).
    webhook
        .post("#prod-incidents", &reply, Some(&thread))
        .await
        .unwrap();

    let state = server.state().await.unwrap();
    let messages = state["slack"]["messages"].as_array().unwrap();
    let parent = messages
        .iter()
        .find(|m| m["ts"] == json!(thread.ts))
        .unwrap();
    assert_eq!(parent["edited"], true);
    assert_eq!(parent["blocks"][0]["text"]["text"], "Resolved: crash loop");
    let child = messages
        .iter()
        .find(|m| m["ts"] == json!(replied.ts))
        .unwrap();
    assert_eq!(child["thread_ts"], json!(thread.ts));
    assert_eq!(messages.iter().filter(|m| m["via"] == "webhook").count(), 2);

    // Slack's refusals come back typed.
    let e = slack
        .post("#no-such-channel", &reply, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("channel_not_found"));
    assert!(!e.retryable());
    let gone = SlackThread {
        channel: thread.channel.clone(),
        ts: "1.999999".into(),
    };
    assert_eq!(
        slack.update(&gone, &reply).await.unwrap_err().code(),
        Some("message_not_found")
    );
    let wrong = Slack::new(SlackRoute::Bot {
        api_url: server.slack_api_url(),
        token: Secret::new("xoxb-wrong"),
    })
    .unwrap();
    let e = wrong.post("#alerts", &reply, None).await.unwrap_err();
    assert_eq!(
        (e.code(), e.category()),
        (Some("invalid_auth"), "unauthorized")
    );
    server
        .fault_with_text(Provider::Slack, 404, "channel_not_found")
        .await
        .unwrap();
    let e = webhook.post("#alerts", &reply, None).await.unwrap_err();
    assert!(
        matches!(&e, SlackError::Webhook { status: 404, text } if text == "channel_not_found"),
        "{e}"
    );
    assert!(!format!("{e} {e:?} {webhook:?}").contains("whsecret"));

    let records = server.requests(Provider::Slack).await.unwrap();
    let post = records
        .iter()
        .find(|r| r.path == "/api/chat.postMessage")
        .unwrap();
    assert_eq!(post.auth.as_deref(), Some("Bearer xoxb-<redacted>"));
    assert_none_rejected(&server).await;
}

#[tokio::test]
async fn slack_rate_limits_are_retryable_with_the_servers_duration() {
    let server = server("slack-429").await;
    let slack = bot(&server);
    let msg = incident_message("Crash loop");
    server
        .fault(Provider::Slack, 429, Some(7), 1)
        .await
        .unwrap();
    let e = slack.post("#alerts", &msg, None).await.unwrap_err();
    assert!(e.retryable(), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(e.category(), "rate_limited");
    server.fault(Provider::Slack, 503, None, 1).await.unwrap();
    let e = slack.post("#alerts", &msg, None).await.unwrap_err();
    assert!(e.retryable() && e.category() == "server_error", "{e}");
    // The fault is spent: the retry goes through.
    slack.post("#alerts", &msg, None).await.unwrap().unwrap();

    let webhook = Slack::new(SlackRoute::Webhook {
        url: Secret::new(server.slack_webhook_url()),
    })
    .unwrap();
    server
        .fault(Provider::Slack, 429, Some(30), 1)
        .await
        .unwrap();
    let e = webhook.post("#alerts", &msg, None).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(e.retryable());
    let faulted = server
        .requests(Provider::Slack)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.fault)
        .count();
    assert_eq!(faulted, 3);
    assert_none_rejected(&server).await;
}

/// A header over Block Kit's 150 characters: the contract server refuses it, which proves it
/// validates what the client sends.
#[tokio::test]
async fn malformed_blocks_are_rejected_by_the_contract_server() {
    let server = server("slack-blocks").await;
    let slack = bot(&server);
    let long = SlackMessage {
        text: "fallback".into(),
        blocks: json!([{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(200)}}]),
    };
    let e = slack.post("#alerts", &long, None).await.unwrap_err();
    assert_eq!(e.code(), Some("invalid_blocks"), "{e}");
    assert!(!e.retryable());
    let too_many = SlackMessage {
        text: "fallback".into(),
        blocks: Value::Array(vec![json!({"type": "divider"}); 51]),
    };
    assert_eq!(
        slack
            .post("#alerts", &too_many, None)
            .await
            .unwrap_err()
            .code(),
        Some("invalid_blocks")
    );
    let no_fallback = SlackMessage {
        text: String::new(),
        blocks: json!([{"type": "divider"}]),
    };
    assert_eq!(
        slack
            .post("#alerts", &no_fallback, None)
            .await
            .unwrap_err()
            .code(),
        Some("no_text")
    );
    let webhook = Slack::new(SlackRoute::Webhook {
        url: Secret::new(server.slack_webhook_url()),
    })
    .unwrap();
    let e = webhook.post("#alerts", &long, None).await.unwrap_err();
    assert!(
        matches!(&e, SlackError::Webhook { status: 400, text } if text.starts_with("invalid_payload")),
        "{e}"
    );

    let rejected = server.rejected().await.unwrap();
    let rules: Vec<&str> = rejected.iter().filter_map(|r| r.rule.as_deref()).collect();
    assert_eq!(
        rules,
        ["block_kit", "block_kit", "text_fallback", "block_kit"]
    );
    assert!(
        rejected[0].reason.as_deref().unwrap().contains("150"),
        "{:?}",
        rejected[0]
    );
}

async fn jira_lifecycle(server: &ContractServer, jira: &Jira, provider: Provider) {
    let label = "auto-agent-3f9a1c";
    assert_eq!(jira.find_issue("OPS", label).await.unwrap(), None);
    let issue = jira
        .create_issue(
            "OPS",
            "Crash loop in shop/api\n(2 restarts)",
            &incident_doc(),
            label,
        )
        .await
        .unwrap();
    assert!(issue.open);
    assert!(
        issue.url.ends_with(&format!("/browse/{}", issue.key)),
        "{issue:?}"
    );
    let found = jira.find_issue("OPS", label).await.unwrap().unwrap();
    assert_eq!(found, issue);
    // Another label, another project: not this issue.
    assert_eq!(
        jira.find_issue("OPS", "auto-agent-other").await.unwrap(),
        None
    );
    assert_eq!(jira.find_issue("SRE", label).await.unwrap(), None);

    jira.comment(&issue.key, &incident_doc()).await.unwrap();
    jira.set_open(&issue.key, false).await.unwrap();
    assert!(!jira.find_issue("OPS", label).await.unwrap().unwrap().open);
    jira.set_open(&issue.key, false).await.unwrap();
    jira.set_open(&issue.key, true).await.unwrap();
    assert!(jira.find_issue("OPS", label).await.unwrap().unwrap().open);

    let state = server.state().await.unwrap();
    let stored = &state[provider.as_str()]["issues"][0];
    assert_eq!(stored["summary"], "Crash loop in shop/api (2 restarts)");
    assert_eq!(stored["labels"], json!([label]));
    assert_eq!(stored["comments"].as_array().unwrap().len(), 1);
    assert_eq!(stored["status"], "10000", "reopened to To Do");
    // Closing went through the Done transition and reopening through Reopen, looked up by id.
    let transitions: Vec<Value> = server
        .requests(provider)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/transitions"))
        .map(|r| r.body)
        .collect();
    assert_eq!(
        transitions,
        [
            json!({"transition": {"id": "31"}}),
            json!({"transition": {"id": "41"}})
        ]
    );

    let missing = jira.comment("OPS-999", &incident_doc()).await.unwrap_err();
    assert!(matches!(missing, JiraError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn jira_cloud_find_create_comment_close_reopen() {
    let server = server("jira-cloud").await;
    let jira = jira_cloud(&server);
    jira_lifecycle(&server, &jira, Provider::JiraCloud).await;
    let records = server.requests(Provider::JiraCloud).await.unwrap();
    assert!(records.iter().any(|r| r.path == "/rest/api/3/search/jql"));
    let created = records
        .iter()
        .find(|r| r.path == "/rest/api/3/issue")
        .unwrap();
    assert_eq!(created.body["fields"]["description"]["type"], "doc");
    assert_eq!(created.auth.as_deref(), Some("Basic <redacted>"));
    assert_none_rejected(&server).await;
}

#[tokio::test]
async fn jira_data_center_find_create_comment_close_reopen() {
    let server = server("jira-dc").await;
    let jira = jira_dc(&server);
    jira_lifecycle(&server, &jira, Provider::JiraDc).await;
    let records = server.requests(Provider::JiraDc).await.unwrap();
    assert!(records.iter().any(|r| r.path == "/rest/api/2/search"));
    let created = records
        .iter()
        .find(|r| r.path == "/rest/api/2/issue")
        .unwrap();
    assert!(
        created.body["fields"]["description"]
            .as_str()
            .unwrap()
            .contains("Incident key: pod/shop")
    );
    assert_none_rejected(&server).await;
}

#[tokio::test]
async fn jira_cloud_search_lag_rate_limits_and_credentials() {
    let server = server("jira-lag").await;
    // Cloud's search does not show new issues at once: a second find right after the create
    // must still see the issue, or a new leader would file a duplicate.
    server
        .jira_search_lag(Provider::JiraCloud, 300.0)
        .await
        .unwrap();
    let jira = jira_cloud(&server);
    let issue = jira
        .create_issue("OPS", "lagging", &incident_doc(), "auto-agent-lag")
        .await
        .unwrap();
    assert_eq!(
        jira.find_issue("OPS", "auto-agent-lag").await.unwrap(),
        Some(issue.clone())
    );
    // Another process has no such memory: the search alone finds nothing yet.
    assert_eq!(
        jira_cloud(&server)
            .find_issue("OPS", "auto-agent-lag")
            .await
            .unwrap(),
        None
    );

    server
        .fault(Provider::JiraCloud, 429, Some(9), 1)
        .await
        .unwrap();
    let e = jira.comment(&issue.key, &incident_doc()).await.unwrap_err();
    assert!(e.retryable() && e.category() == "rate_limited", "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));
    server
        .fault(Provider::JiraCloud, 503, Some(2), 1)
        .await
        .unwrap();
    let e = jira.comment(&issue.key, &incident_doc()).await.unwrap_err();
    assert_eq!(
        (e.category(), e.retry_after()),
        ("server_error", Some(Duration::from_secs(2)))
    );
    jira.comment(&issue.key, &incident_doc()).await.unwrap();

    let mut wrong = JiraConfig::new(
        JiraFlavor::Cloud,
        server.jira_cloud_url(),
        Secret::new("not-the-token"),
    );
    wrong.email = Some(contract::JIRA_CLOUD_EMAIL.to_owned());
    let e = Jira::new(wrong)
        .unwrap()
        .find_issue("OPS", "x")
        .await
        .unwrap_err();
    assert_eq!(e.category(), "unauthorized");
    assert!(!format!("{e:?}").contains("not-the-token"));
    assert_none_rejected(&server).await;
}

/// The forge contract servers keep issues the way GitHub and GitLab document, so a forge client
/// can find by label, create, comment, close and reopen; faults and restarts behave like the
/// Slack and Jira ones.
#[tokio::test]
async fn github_and_gitlab_contract_servers_keep_issue_state() {
    let mut server = server("forges").await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let gh = |req: reqwest::RequestBuilder| {
        req.header(
            "Authorization",
            format!("Bearer {}", contract::GITHUB_TOKEN),
        )
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header("User-Agent", "contract-test")
        .header("Content-Type", "application/json")
    };
    let send = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        )
    };
    let gh_url = |p: &str| format!("{}/repos/acme/shop{p}", server.github_api_url());
    let label = "auto-agent:3f9a1c";
    let list = gh_url(&format!("/issues?labels={label}&state=all&per_page=100"));
    let (s, found) = send(gh(http.get(&list))).await;
    assert_eq!((s, found), (200, json!([])));
    let (s, issue) = send(
        gh(http.post(gh_url("/issues"))).body(
            json!({"title": "Crash loop", "body": "<!-- auto-agent:3f9a1c -->", "labels": [label]})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(s, 201, "{issue}");
    let n = issue["number"].as_u64().unwrap();
    let (s, _) = send(
        gh(http.post(gh_url(&format!("/issues/{n}/comments"))))
            .body(json!({"body": "again"}).to_string()),
    )
    .await;
    assert_eq!(s, 201);
    let (s, closed) = send(
        gh(http.patch(gh_url(&format!("/issues/{n}"))))
            .body(json!({"state": "closed", "state_reason": "completed"}).to_string()),
    )
    .await;
    assert_eq!((s, closed["state"].clone()), (200, json!("closed")));
    let (_, open_only) = send(gh(
        http.get(gh_url(&format!("/issues?labels={label}&state=open")))
    ))
    .await;
    assert_eq!(open_only, json!([]));
    let (s, reopened) = send(
        gh(http.patch(gh_url(&format!("/issues/{n}"))))
            .body(json!({"state": "open", "state_reason": "reopened"}).to_string()),
    )
    .await;
    assert_eq!(
        (s, reopened["state_reason"].clone()),
        (200, json!("reopened"))
    );
    let (_, found) = send(gh(http.get(&list))).await;
    assert_eq!(found[0]["number"].as_u64(), Some(n));
    assert_eq!(found[0]["comments"], 1);
    assert_eq!(send(gh(http.get(gh_url("/issues/999")))).await.0, 404);
    // GitHub's secondary rate limit: 403 with retry-after.
    server
        .fault(Provider::GitHub, 403, Some(60), 1)
        .await
        .unwrap();
    let resp = gh(http.get(&list)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.headers()["retry-after"], "60");

    let gl_url = |p: &str| format!("{}/projects/acme%2Fshop{p}", server.gitlab_api_url());
    let gl = |req: reqwest::RequestBuilder| {
        req.header("PRIVATE-TOKEN", contract::GITLAB_TOKEN)
            .header("Content-Type", "application/json")
    };
    let (s, issue) = send(
        gl(http.post(gl_url("/issues")))
            .body(json!({"title": "Crash loop", "description": "d", "labels": label}).to_string()),
    )
    .await;
    assert_eq!(s, 201, "{issue}");
    let iid = issue["iid"].as_u64().unwrap();
    assert_eq!(
        send(
            gl(http.post(gl_url(&format!("/issues/{iid}/notes"))))
                .body(json!({"body": "again"}).to_string())
        )
        .await
        .0,
        201
    );
    let (_, closed) = send(
        gl(http.put(gl_url(&format!("/issues/{iid}"))))
            .body(json!({"state_event": "close"}).to_string()),
    )
    .await;
    assert_eq!(closed["state"], "closed");
    let (_, found) = send(gl(
        http.get(gl_url(&format!("/issues?labels={label}&state=closed")))
    ))
    .await;
    assert_eq!(found[0]["iid"].as_u64(), Some(iid));
    let (_, reopened) = send(
        gl(http.put(gl_url(&format!("/issues/{iid}"))))
            .body(json!({"state_event": "reopen"}).to_string()),
    )
    .await;
    assert_eq!(reopened["state"], "opened");
    let commit = json!({"branch": "auto-agent/fix", "start_branch": "main", "commit_message": "bump memory",
        "actions": [{"action": "update", "file_path": "apps/shop/deploy.yaml", "content": "x"}]});
    assert_eq!(
        send(gl(http.post(gl_url("/repository/commits"))).body(commit.to_string()))
            .await
            .0,
        201
    );
    let mr =
        json!({"source_branch": "auto-agent/fix", "target_branch": "main", "title": "bump memory"});
    assert_eq!(
        send(gl(http.post(gl_url("/merge_requests"))).body(mr.to_string()))
            .await
            .0,
        201
    );
    assert_eq!(
        send(gl(http.post(gl_url("/merge_requests"))).body(mr.to_string()))
            .await
            .0,
        409
    );
    assert_none_rejected(&server).await;

    // An operation the server does not keep state for is refused, never faked.
    let (s, _) = send(gh(http.get(gh_url("/releases")))).await;
    assert_eq!(s, 501);
    let rejected = server.rejected().await.unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].rule.as_deref(), Some("unserved"));
    assert_eq!(
        rejected[0].operation.as_deref(),
        Some("repos/list-releases")
    );

    // An outage: the client sees a connection error, then the same URLs work again.
    server.stop();
    let slack = bot(&server);
    let e = slack
        .post("#alerts", &incident_message("x"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SlackError::Unreachable { .. }) && e.retryable(),
        "{e}"
    );
    server.start_again().await.unwrap();
    slack
        .post("#alerts", &incident_message("x"), None)
        .await
        .unwrap()
        .unwrap();
    assert_none_rejected(&server).await;
}

/// What escalation renders (Block Kit root and replies, ticket bodies and comments, the incident
/// label) passes the providers' validation as sent by these clients, including an incident whose
/// texts are long and full of markup.
#[tokio::test]
async fn rendered_incident_messages_and_tickets_pass_the_contracts() {
    use auto_agent_escalation::record::{Facts, Line, Record, Routes, Status, What};
    use auto_agent_escalation::render;

    let server = server("rendered").await;
    let record = |log_line: String, target: String| Record {
        key: format!("pod/shop/Deployment/{target}/CrashLoopBackOff"),
        status: Status::Escalated,
        revision: 2,
        routes: Routes::default(),
        facts: Facts {
            target: format!("Deployment/shop/{target}"),
            namespace: Some("shop".into()),
            policy: "shop/restart".into(),
            failure: "CrashLoopBackOff".into(),
            evidence: Some("s3://bundles/shop/api/1.json".into()),
            log_tail: vec![log_line; 40],
            subject: None,
        },
        reason: "BudgetExhausted".into(),
        opened_at_ms: 0,
        last_at_ms: 0,
        last_failure_ms: 0,
        last_acted_ms: None,
        escalate_at_ms: None,
        resolved_at_ms: None,
        repeats: 3,
        history: (0..30)
            .map(|i| Line {
                at_ms: i,
                text: format!("RestartPod: restarted api-{i} <&>*_`"),
            })
            .collect(),
        summary: None,
        slack: None,
        ticket: None,
        outbox: vec![],
    };
    let records = [
        record("panic: <boom> & more".into(), "api".into()),
        record("x".repeat(5000), "a".repeat(300)),
    ];
    let slack = bot(&server);
    let cloud = jira_cloud(&server);
    let dc = jira_dc(&server);
    for r in &records {
        let summary = render::template_summary(r);
        let root = render::slack_root(r, &summary, Some("https://jira.example.com/browse/OPS-1"));
        let thread = slack
            .post("#prod-incidents", &root, None)
            .await
            .unwrap()
            .unwrap();
        for what in [What::Update, What::Resolve] {
            slack
                .post(
                    &thread.channel,
                    &render::slack_reply(r, what, &summary),
                    Some(&thread),
                )
                .await
                .unwrap();
        }
        slack.update(&thread, &root).await.unwrap();
        let label = render::label(&r.key);
        for jira in [&cloud, &dc] {
            let issue = jira
                .create_issue(
                    "OPS",
                    &render::ticket_title(r),
                    &render::ticket_body(r, &summary),
                    &label,
                )
                .await
                .unwrap();
            jira.comment(
                &issue.key,
                &render::ticket_comment(r, What::Update, &summary),
            )
            .await
            .unwrap();
            assert_eq!(
                jira.find_issue("OPS", &label).await.unwrap().map(|i| i.key),
                Some(issue.key)
            );
        }
    }
    assert_none_rejected(&server).await;
}
