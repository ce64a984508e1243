#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The LLM summary client against a real OpenAI-compatible server: llama-cpp-python serving
//! SmolLM2-135M-Instruct on loopback (`e2e/integrations build` caches it). A 135M model writes
//! poor prose, so these tests check protocol and structure (a non-empty summary, the model's name,
//! token usage within the budget, typed errors), never wording.

use std::time::{Duration, Instant};

use auto_agent_e2e::llm::{CONTEXT_TOKENS, ModelServer};
use auto_agent_escalation::llm::{Llm, LlmConfig, LlmError, SYSTEM_PROMPT};
use auto_agent_forge::Secret;
use serde_json::json;

/// A small evidence bundle as the controller hands it over: redacted, in the bundle's shape.
fn bundle() -> String {
    json!({
        "schemaVersion": 2,
        "incidentKey": "pod/shop/Deployment/api/OOMKilled",
        "createdAt": "2026-01-10T08:15:00Z",
        "policy": {"namespace": "shop", "name": "api-prod"},
        "findings": [{
            "kind": "OOMKilled",
            "namespace": "shop",
            "pod": "api-7d9f8c6b5-x2x4q",
            "container": "api",
            "message": "container api was OOMKilled (limit 256Mi), restart count 4",
        }],
        "log": {"lines": [
            "INFO loading product catalog (48213 items)",
            "WARN heap at 241Mi of 256Mi",
            "INFO connecting to postgres://shop:<redacted>@db:5432/shop",
        ]},
        "events": [
            {"reason": "BackOff", "message": "Back-off restarting failed container api", "count": 6},
        ],
        "owner": {"kind": "Deployment", "name": "api", "replicas": 3, "readyReplicas": 2},
        "planned": {"action": "BumpMemory", "from": "256Mi", "to": "308Mi"},
        "taken": [{"action": "BumpMemory", "outcome": "Succeeded"}],
        "redactions": 1,
    })
    .to_string()
}

fn config(server: &ModelServer) -> LlmConfig {
    let mut cfg = LlmConfig::new(server.base_url.clone(), server.model.clone());
    cfg.api_key = Some(Secret::new(server.api_key.clone()));
    // Short answers keep the test fast on one CPU thread; the budget is still checked below.
    cfg.max_tokens = 48;
    cfg.timeout = Duration::from_secs(120);
    cfg
}

async fn start() -> ModelServer {
    let started = Instant::now();
    let server = ModelServer::start(&ModelServer::default_dir())
        .await
        .unwrap();
    println!("model server ready in {:?}", started.elapsed());
    server
}

#[tokio::test]
async fn summarizes_a_redacted_bundle() {
    let server = start().await;
    let llm = Llm::new(config(&server)).unwrap();
    let input = bundle();

    let started = Instant::now();
    let summary = llm
        .summarize(SYSTEM_PROMPT, &input)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    println!(
        "one summary in {:?} ({:?} prompt + {:?} completion tokens): {}",
        started.elapsed(),
        summary.prompt_tokens,
        summary.completion_tokens,
        summary.text
    );
    assert!(!summary.text.is_empty());
    assert_eq!(summary.text, summary.text.trim());
    assert_eq!(summary.model, "smollm2");
    // The system prompt and the whole bundle reached the model: more tokens than the bundle has
    // characters divided by a generous 8 characters per token.
    let prompt_tokens = summary.prompt_tokens.unwrap();
    assert!(
        prompt_tokens > (SYSTEM_PROMPT.len() + input.len()) as u64 / 8,
        "{prompt_tokens}"
    );
    // The server honoured the budget sent in `max_tokens`.
    let completion_tokens = summary.completion_tokens.unwrap();
    assert!((1..=48).contains(&completion_tokens), "{completion_tokens}");

    // Input beyond max_input_chars is cut before it is sent: the server counts fewer tokens.
    let mut cut = config(&server);
    cut.max_input_chars = 200;
    cut.max_tokens = 8;
    let cut = Llm::new(cut)
        .unwrap()
        .summarize(SYSTEM_PROMPT, &input)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));
    assert!(
        cut.prompt_tokens.unwrap() < prompt_tokens,
        "{:?} < {prompt_tokens}",
        cut.prompt_tokens
    );

    // Evidence larger than the model's context is refused by the server, and the error carries
    // neither the key nor the evidence: keep max_input_chars within the model's context.
    let marker = "evidence-line-that-must-not-leak";
    let huge = format!("{marker} ").repeat(CONTEXT_TOKENS as usize);
    let mut unbounded = config(&server);
    unbounded.max_input_chars = huge.len();
    let err = Llm::new(unbounded)
        .unwrap()
        .summarize(SYSTEM_PROMPT, &huge)
        .await
        .unwrap_err();
    println!("over the context window: {err}");
    assert_eq!(err.category(), "protocol", "{err:?}");
    assert!(!err.retryable());
    let text = format!("{err} {err:?}");
    assert!(!text.contains(marker), "{text}");
    assert!(!text.contains(&server.api_key), "{text}");
}

#[tokio::test]
async fn refusals_and_failures_are_typed() {
    let mut server = start().await;

    // The server checks the key: a wrong one is refused before any work.
    let mut wrong = config(&server);
    wrong.api_key = Some(Secret::new("e2e-not-the-key"));
    let err = Llm::new(wrong)
        .unwrap()
        .summarize(SYSTEM_PROMPT, &bundle())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unauthorized(401)), "{err:?}");
    assert!(!err.retryable());
    // No key at all is refused the same way.
    let mut none = config(&server);
    none.api_key = None;
    let err = Llm::new(none)
        .unwrap()
        .summarize(SYSTEM_PROMPT, &bundle())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Unauthorized(401)), "{err:?}");

    // A request the model cannot finish in time ends as Timeout, not a hang.
    let mut hurried = config(&server);
    hurried.timeout = Duration::from_millis(100);
    hurried.max_tokens = 256;
    let started = Instant::now();
    let err = Llm::new(hurried)
        .unwrap()
        .summarize(SYSTEM_PROMPT, &bundle())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
    assert!(err.retryable());
    assert!(started.elapsed() < Duration::from_secs(30));

    // The server still works after a client gave up on it.
    let llm = Llm::new(config(&server)).unwrap();
    llm.summarize(SYSTEM_PROMPT, &bundle())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.output()));

    // A stopped server is unreachable, which a retry may fix.
    server.stop();
    let err = llm.summarize(SYSTEM_PROMPT, &bundle()).await.unwrap_err();
    assert!(matches!(err, LlmError::Unreachable(_)), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn a_missing_environment_names_the_build_command() {
    let dir = std::env::temp_dir().join(format!("e2e-llm-missing-{}", std::process::id()));
    let err = ModelServer::start(&dir).await.unwrap_err().to_string();
    assert!(err.contains("e2e/integrations build"), "{err}");
}
