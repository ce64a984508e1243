//! Escalation on the real cluster with the real sensor and controller processes, a real Gitea, a
//! real OpenAI-compatible model server (SmolLM2 behind llama-cpp-python) and the Slack contract
//! server (every request validated against Slack's Web API description and Block Kit limits):
//!
//! - a crash loop past its budget -> one Slack thread and one Gitea issue carrying the incident
//!   key and the model's summary; the next occurrence replies and comments instead of opening
//!   new ones, across a leader kill; the workload healing resolves both;
//! - Slack answering 429 and Gitea down for a minute -> the restart happens while both are
//!   unreachable, and every message and the ticket arrive afterwards, none twice.
//!
//! The servers come from `e2e/integrations build` (the test fails with that hint when missing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use auto_agent_e2e::contract::{ContractServer, Provider};
use auto_agent_e2e::gitea::Gitea;
use auto_agent_e2e::llm::ModelServer;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::{poll_until, poll_value};
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(120);
const CHANNEL: &str = "#prod-incidents";

fn env(
    gitea: &Gitea,
    slack: &ContractServer,
    model: Option<&ModelServer>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("AUTO_AGENT_SLACK_API_URL".into(), slack.slack_api_url()),
        (
            "AUTO_AGENT_SLACK_BOT_TOKEN".into(),
            auto_agent_e2e::contract::SLACK_TOKEN.into(),
        ),
        ("AUTO_AGENT_GITEA_API_URL".into(), gitea.api_url.clone()),
        ("AUTO_AGENT_GITEA_TOKEN".into(), gitea.token.clone()),
        // The installation allows the channel and the project the policies name (nothing else).
        (
            "AUTO_AGENT_ESCALATION_ALLOWED_SLACK_CHANNELS".into(),
            CHANNEL.into(),
        ),
        (
            "AUTO_AGENT_ESCALATION_ALLOWED_TICKET_PROJECTS".into(),
            format!("gitea:{}/incidents", gitea.owner),
        ),
        // Resolve a healed workload quickly (the default waits 5 minutes without a failure).
        (
            "AUTO_AGENT_ESCALATION_RESOLVE_QUIET_SECONDS".into(),
            "3".into(),
        ),
    ];
    if let Some(m) = model {
        env.push(("AUTO_AGENT_LLM_BASE_URL".into(), m.base_url.clone()));
        env.push(("AUTO_AGENT_LLM_MODEL".into(), m.model.clone()));
        env.push(("AUTO_AGENT_LLM_API_KEY".into(), m.api_key.clone()));
        // One CPU thread on a busy 2-core machine: give the small model time.
        env.push(("AUTO_AGENT_LLM_TIMEOUT_SECONDS".into(), "60".into()));
    }
    env
}

fn policy(project: &str) -> Value {
    json!({
        "targetSelector": {"matchLabels": {"app": "api"}},
        "actions": {"restartStuckPods": true},
        "safety": {"minReadyReplicas": 0, "cooldownSeconds": 0, "maxRepeats": 100},
        "budgets": [{"action": "RestartPod", "scope": "Target", "max": 1, "windowSeconds": 3600}],
        "escalation": {"slackChannel": CHANNEL, "ticket": {"provider": "Gitea", "project": project}},
    })
}

/// A fresh directory for this test's servers.
fn scratch() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("e2e-escalation-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Gitea's issues of the repository (all states), through its API.
async fn issues(gitea: &Gitea, repo: &str) -> Vec<Value> {
    let url = format!(
        "{}/repos/{}/{repo}/issues?state=all&type=issues&limit=50",
        gitea.api_url, gitea.owner
    );
    let v: Value = reqwest::Client::new()
        .get(url)
        .header("Authorization", format!("token {}", gitea.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

async fn comments(gitea: &Gitea, repo: &str, number: u64) -> Vec<String> {
    let url = format!(
        "{}/repos/{}/{repo}/issues/{number}/comments",
        gitea.api_url, gitea.owner
    );
    let v: Value = reqwest::Client::new()
        .get(url)
        .header("Authorization", format!("token {}", gitea.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["body"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The escalation record of `key` from the controller's namespace.
async fn record(admin: &kube::Client, namespace: &str, key: &str) -> Option<Value> {
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels("autoagent.io/escalation=record"))
        .await
        .unwrap();
    list.items.iter().find_map(|cm| {
        let v: Value = serde_json::from_str(cm.data.as_ref()?.get("record.json")?).ok()?;
        (v["key"] == key).then_some(v)
    })
}

/// Slack calls the contract server accepted, by method (`chat.postMessage`, `chat.update`).
async fn slack_calls(slack: &ContractServer, method: &str) -> Vec<Value> {
    slack
        .requests(Provider::Slack)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.valid && (200..300).contains(&r.status) && r.path.ends_with(method))
        .map(|r| r.body.clone())
        .collect()
}

/// Marks a pod's container running and ready again (the fix a human made).
async fn heal(admin: &kube::Client, ns: &str, pod: &str) {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let current = api.get(pod).await.unwrap();
    let now = chrono_now();
    let statuses: Vec<Value> = current
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
            "restartCount": c.restart_count, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let conditions = json!([
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
    ]);
    api.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "conditions": conditions, "containerStatuses": statuses}})),
    )
    .await
    .unwrap();
}

fn chrono_now() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
}

/// Creates `api` (one replica), crash-loops its pod and waits for the agent to restart it (its
/// budget of one).
async fn first_restart(t: &Setup) -> (String, Duration) {
    let first = t.running_pod(Workload::new("api")).await;
    let started = Instant::now();
    scenario::crash_loop(&t.admin, t.ns(), &first, None, 3, 1)
        .await
        .unwrap();
    let pods = t.pods();
    poll_until("the first restart", TIMEOUT, || {
        let pods = pods.clone();
        let first = first.clone();
        async move { Ok(pods.get_opt(&first).await?.is_none()) }
    })
    .await
    .unwrap();
    (first, started.elapsed())
}

/// The first restart, then the replacement crash-loops too: the budget (1 restart per hour) is
/// spent, so the agent refuses and escalates. Returns the replacement and how long the restart
/// took.
async fn past_the_budget(t: &Setup) -> (String, Duration) {
    let (first, took) = first_restart(t).await;
    let second = poll_value("the replacement pod", TIMEOUT, || {
        let first = first.clone();
        async move {
            Ok(t.ready_pod_names("api")
                .await
                .into_iter()
                .find(|p| *p != first))
        }
    })
    .await
    .unwrap();
    scenario::crash_loop(&t.admin, t.ns(), &second, None, 3, 1)
        .await
        .unwrap();
    (second, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_past_its_budget_reaches_one_thread_and_one_ticket_across_a_leader_kill() {
    let dir = scratch();
    let gitea = Gitea::start(&dir.join("gitea")).await.unwrap();
    gitea.create_repo("incidents").await.unwrap();
    let slack = ContractServer::start(&dir.join("contract")).await.unwrap();
    let model = ModelServer::start(&ModelServer::default_dir())
        .await
        .unwrap();
    let mut t = Setup::new("escalate", NODE).await;
    t.start_agents(2, env(&gitea, &slack, Some(&model))).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    let controller_ns = t.stack().namespace.name.clone();
    let project = format!("{}/incidents", gitea.owner);
    t.policy("esc", policy(&project));
    let key = format!("pod/{ns}/Deployment/api/CrashLoopBackOff");

    let (second, _) = past_the_budget(&t).await;
    let refused = t.wait_event("api", "BudgetExhausted").await;
    assert!(refused.contains(&key), "{refused}");

    // One Gitea issue with the key's label, the key and the model's summary in its body.
    let issue = poll_value("the Gitea issue", TIMEOUT, || {
        let gitea = &gitea;
        async move { Ok(issues(gitea, "incidents").await.into_iter().next()) }
    })
    .await
    .unwrap();
    let body = issue["body"].as_str().unwrap();
    assert!(body.contains(&key), "{body}");
    let labels: Vec<&str> = issue["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels.len(), 1);
    assert!(labels[0].starts_with("auto-agent-"), "{labels:?}");
    let rec = poll_value("the record with the thread and ticket", TIMEOUT, || {
        let admin = admin.clone();
        let (controller_ns, key) = (controller_ns.clone(), key.clone());
        async move {
            Ok(record(&admin, &controller_ns, &key).await.filter(|r| {
                r["slack"].is_object()
                    && r["ticket"].is_object()
                    && r["outbox"].as_array().is_none_or(|o| o.is_empty())
            }))
        }
    })
    .await
    .unwrap();
    let summary = rec["summary"]["text"].as_str().unwrap();
    assert_eq!(
        rec["summary"]["source"],
        format!("llm:{}", model.model),
        "{rec}"
    );
    assert!(!summary.trim().is_empty());
    assert!(
        body.contains(summary.trim()),
        "the ticket carries the model's summary"
    );
    // ... and where the first restart's evidence bundle went.
    let bundle = rec["facts"]["evidence"]
        .as_str()
        .expect("the bundle of the restart");
    assert!(body.contains(bundle), "{body}");
    let roots = slack_calls(&slack, "chat.postMessage").await;
    assert_eq!(roots.len(), 1, "one thread root: {roots:?}");
    assert_eq!(roots[0]["channel"], CHANNEL);
    assert!(roots[0]["thread_ts"].is_null());
    assert!(roots[0]["text"].as_str().unwrap().contains(&key));
    assert!(
        roots[0]["blocks"]
            .to_string()
            .contains(summary.trim().split('\n').next().unwrap_or(""))
    );
    let thread_ts = rec["slack"]["ts"].as_str().unwrap().to_owned();
    // kubectl describe shows where people were told.
    let escalated = t.wait_event("api", "Escalated").await;
    assert!(escalated.contains(&key), "{escalated}");

    // Kill the leader; the next occurrence goes to the same thread and ticket.
    let leader = t.stack().leader().await.unwrap();
    t.stack_mut().controllers[leader].kill();
    poll_until("a new leader", TIMEOUT, || {
        let s = t.stack();
        async move { Ok(s.leader().await.is_some()) }
    })
    .await
    .unwrap();
    scenario::crash_loop(&admin, &ns, &second, None, 4, 1)
        .await
        .unwrap();
    let number = issue["number"].as_u64().unwrap();
    poll_until("a comment on the same issue", TIMEOUT, || {
        let gitea = &gitea;
        async move { Ok(!comments(gitea, "incidents", number).await.is_empty()) }
    })
    .await
    .unwrap();
    let replies = poll_value("a reply in the thread", TIMEOUT, || {
        let slack = &slack;
        async move {
            let posts = slack_calls(slack, "chat.postMessage").await;
            Ok((posts.len() >= 2).then_some(posts))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        replies[1]["thread_ts"],
        thread_ts.as_str(),
        "the reply joins the thread"
    );
    assert_eq!(
        issues(&gitea, "incidents").await.len(),
        1,
        "still exactly one ticket"
    );

    // A human fixes it: the pod runs and is ready; after the quiet period both channels say so.
    heal(&admin, &ns, &second).await;
    poll_until("the issue closed with a resolving comment", TIMEOUT, || {
        let gitea = &gitea;
        async move {
            let all = issues(gitea, "incidents").await;
            let closed = all.first().is_some_and(|i| i["state"] == "closed");
            let said = comments(gitea, "incidents", number)
                .await
                .iter()
                .any(|c| c.starts_with("Resolved"));
            Ok(closed && said)
        }
    })
    .await
    .unwrap();
    let updates = slack_calls(&slack, "chat.update").await;
    assert!(
        updates.iter().any(|u| u["ts"] == thread_ts.as_str()
            && u["text"].as_str().unwrap_or("").starts_with("Resolved")),
        "the thread's root shows it resolved: {updates:?}"
    );
    let posts = slack_calls(&slack, "chat.postMessage").await;
    assert!(posts.iter().any(|p| p["thread_ts"] == thread_ts.as_str()
        && p["text"].as_str().unwrap_or("").starts_with("Resolved")));
    assert_eq!(issues(&gitea, "incidents").await.len(), 1);
    assert!(
        slack.rejected().await.unwrap().is_empty(),
        "every Slack request was valid"
    );
    // No credential in any controller's log.
    for c in &t.stack().controllers {
        let log = std::fs::read_to_string(&c.process.log).unwrap_or_default();
        assert!(!log.is_empty());
        for secret in [
            gitea.token.as_str(),
            auto_agent_e2e::contract::SLACK_TOKEN,
            model.api_key.as_str(),
        ] {
            assert!(
                !log.contains(secret),
                "a credential in {}",
                c.process.log.display()
            );
        }
    }
    let delivered = t
        .stack()
        .metric("auto_agent_escalation_deliveries_total{channel=\"ticket\",outcome=\"delivered\"}")
        .await;
    assert!(
        delivered >= 1.0,
        "the new leader counts its deliveries: {delivered}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_rate_limits_and_gitea_down_delay_escalation_but_not_remediation() {
    let dir = scratch();
    let mut gitea = Gitea::start(&dir.join("gitea")).await.unwrap();
    gitea.create_repo("incidents").await.unwrap();
    let slack = ContractServer::start(&dir.join("contract")).await.unwrap();
    // No model: the template summary (and the model's absence must not slow anything).
    let mut t = Setup::new("escout", NODE).await;
    t.start_agents(1, env(&gitea, &slack, None)).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();
    let controller_ns = t.stack().namespace.name.clone();
    t.policy("esc", policy(&format!("{}/incidents", gitea.owner)));
    let key = format!("pod/{ns}/Deployment/api/CrashLoopBackOff");

    // Slack answers 429 (Retry-After 5 s) to the next three calls; Gitea is down.
    slack.fault(Provider::Slack, 429, Some(5), 3).await.unwrap();
    gitea.stop();
    let down = Instant::now();
    let (_, restart_took) = past_the_budget(&t).await;
    t.wait_event("api", "BudgetExhausted").await;
    println!("restart with Slack rate-limited and Gitea down took {restart_took:?}");
    // The escalation is owed, not lost: persisted in its record while the channels fail.
    let owed = poll_value("the escalation owed in its record", TIMEOUT, || {
        let admin = admin.clone();
        let (controller_ns, key) = (controller_ns.clone(), key.clone());
        async move {
            Ok(record(&admin, &controller_ns, &key).await.filter(|r| {
                r["outbox"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|d| d["attempts"].as_u64() > Some(0)))
            }))
        }
    })
    .await
    .unwrap();
    assert!(owed["ticket"].is_null());
    assert!(t.stack().metric("auto_agent_escalation_queue_depth").await >= 1.0);
    // Gitea comes back after a minute; everything arrives, once.
    let left = Duration::from_secs(60).saturating_sub(down.elapsed());
    tokio::time::sleep(left).await;
    assert!(
        issues_unreachable(&gitea).await,
        "Gitea stayed down for the minute"
    );
    gitea.start_again().await.unwrap();
    poll_until(
        "the ticket after the outage",
        Duration::from_secs(180),
        || {
            let gitea = &gitea;
            async move { Ok(issues(gitea, "incidents").await.len() == 1) }
        },
    )
    .await
    .unwrap();
    poll_until("the Slack thread after the rate limit", TIMEOUT, || {
        let slack = &slack;
        async move { Ok(slack_calls(slack, "chat.postMessage").await.len() == 1) }
    })
    .await
    .unwrap();
    poll_until("nothing owed", TIMEOUT, || {
        let admin = admin.clone();
        let (controller_ns, key) = (controller_ns.clone(), key.clone());
        async move {
            Ok(record(&admin, &controller_ns, &key)
                .await
                .is_some_and(|r| r["outbox"].as_array().is_none_or(|o| o.is_empty())))
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        issues(&gitea, "incidents").await.len(),
        1,
        "one ticket, not one per retry"
    );
    assert_eq!(
        slack_calls(&slack, "chat.postMessage").await.len(),
        1,
        "one message, not one per retry"
    );
    let limited = slack
        .requests(Provider::Slack)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(limited, 3, "the rate limit was hit and honoured");
    assert!(slack.rejected().await.unwrap().is_empty());
    assert!(
        t.stack()
            .metric(
                "auto_agent_escalation_deliveries_total{channel=\"ticket\",outcome=\"unreachable\"}"
            )
            .await
            >= 1.0
    );
    t.finish().await;
}

async fn issues_unreachable(gitea: &Gitea) -> bool {
    reqwest::Client::new()
        .get(format!("{}/version", gitea.api_url))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_still_failing_after_seconds_past_an_action_escalates_through_a_webhook() {
    let dir = scratch();
    let slack = ContractServer::start(&dir.join("contract")).await.unwrap();
    let mut t = Setup::new("escwait", NODE).await;
    t.start_agents(
        1,
        vec![
            (
                "AUTO_AGENT_SLACK_WEBHOOK_URL".into(),
                slack.slack_webhook_url(),
            ),
            (
                "AUTO_AGENT_ESCALATION_ALLOWED_SLACK_CHANNELS".into(),
                "#alerts".into(),
            ),
        ],
    )
    .await;
    // One restart, then the cooldown (a refusal that does not escalate) holds further ones; what
    // escalates is the incident still failing a minute after the agent acted.
    t.policy(
        "esc",
        json!({
            "targetSelector": {"matchLabels": {"app": "api"}},
            "actions": {"restartStuckPods": true},
            "safety": {"minReadyReplicas": 0, "cooldownSeconds": 600},
            "escalation": {"slackChannel": "#alerts", "afterSeconds": 60},
        }),
    );
    let key = format!("pod/{}/Deployment/api/CrashLoopBackOff", t.ns());
    let (first, _) = first_restart(&t).await;
    let acted = Instant::now();
    // The replacement fails too; the cooldown keeps the agent from acting again.
    let second = poll_value("the replacement pod", TIMEOUT, || {
        let first = first.clone();
        let t = &t;
        async move {
            Ok(t.ready_pod_names("api")
                .await
                .into_iter()
                .find(|p| *p != first))
        }
    })
    .await
    .unwrap();
    scenario::crash_loop(&t.admin, t.ns(), &second, None, 3, 1)
        .await
        .unwrap();
    let posts = poll_value("the webhook message", Duration::from_secs(150), || {
        let slack = &slack;
        async move {
            let posts: Vec<_> = slack
                .requests(Provider::Slack)
                .await?
                .into_iter()
                .filter(|r| r.valid && r.status == 200 && r.path.starts_with("/webhook"))
                .collect();
            Ok((!posts.is_empty()).then_some(posts))
        }
    })
    .await
    .unwrap();
    let waited = acted.elapsed();
    assert!(
        waited >= Duration::from_secs(55),
        "not before the deadline: {waited:?}"
    );
    assert_eq!(posts.len(), 1, "one message");
    let body = posts[0].body.to_string();
    assert!(body.contains(&key), "{body}");
    assert!(body.contains("still open after the agent acted"), "{body}");
    let escalated = t.wait_event("api", "Escalated").await;
    assert!(escalated.contains("StillOpen"), "{escalated}");
    assert!(slack.rejected().await.unwrap().is_empty());
    let refused = t.wait_event("api", "Cooldown").await;
    assert!(refused.contains(&key), "{refused}");
    t.finish().await;
}
