//! The forge client against a real Gitea (built by `e2e/integrations build`): an issue is found
//! by its label and by nothing else, created once (the label made first), commented, closed and
//! reopened; a bad token and an outage give the documented errors, and after the outage the
//! same issue is found again instead of a second one being opened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use auto_agent_e2e::gitea::Gitea;
use auto_agent_forge::{Forge, ForgeConfig, ForgeError, ForgeKind, Secret};
use serde_json::{Value, json};

const LABEL: &str = "auto-agent:5e1f0c2a9b7d3e41";
const OTHER_LABEL: &str = "auto-agent:0000aaaa1111bbbb";

fn work_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("e2e-forge-gitea-{test}-{}", std::process::id()))
}

async fn start(test: &str) -> Gitea {
    let started = Instant::now();
    let gitea = Gitea::start(&work_dir(test)).await.expect("start Gitea");
    eprintln!(
        "Gitea started in {:.1}s (setup, migrate, admin, token, web until healthy)",
        started.elapsed().as_secs_f64()
    );
    gitea
}

fn forge(gitea: &Gitea, token: &str) -> Forge {
    Forge::new(ForgeConfig {
        kind: ForgeKind::Gitea,
        api_url: gitea.api_url.clone(),
        token: Secret::new(token),
    })
    .expect("client")
}

/// Every issue of the repository, open or closed, as Gitea lists them.
async fn all_issues(gitea: &Gitea, project: &str) -> Vec<Value> {
    let list = gitea
        .api_get(&format!(
            "/repos/{project}/issues?state=all&type=issues&limit=50"
        ))
        .await
        .expect("list issues");
    list.as_array().cloned().expect("an array")
}

fn label_names(issue: &Value) -> Vec<String> {
    issue["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_issue_lives_through_find_create_comment_close_and_reopen() {
    let gitea = start("lifecycle").await;
    gitea.create_repo("incidents").await.expect("repo");
    let project = format!("{}/incidents", gitea.owner);
    let forge = forge(&gitea, &gitea.token);

    assert_eq!(
        forge.find_issue(&project, LABEL).await.expect("find"),
        None,
        "an empty repository has no issue"
    );

    // Gitea lists every issue when filtered by a label it does not have; none of them is ours.
    gitea
        .api_post(
            &format!("/repos/{project}/issues"),
            &json!({ "title": "Someone else's bug", "body": "not an incident" }),
        )
        .await
        .expect("unrelated issue");
    assert_eq!(
        forge.find_issue(&project, LABEL).await.expect("find"),
        None,
        "an unlabelled issue is not the incident's"
    );

    let created = forge
        .create_issue(
            &project,
            "CrashLoopBackOff: prod/api",
            "**prod/api** restarted 3 times\n\n- evidence: `s3://evidence/prod/api/1.json`",
            LABEL,
        )
        .await
        .expect("create");
    assert!(created.open && created.closed_at.is_none(), "{created:?}");
    assert_eq!(
        created.url,
        format!("{}/{project}/issues/{}", gitea.url, created.number)
    );
    let stored = gitea
        .api_get(&format!("/repos/{project}/issues/{}", created.number))
        .await
        .expect("read back");
    assert_eq!(label_names(&stored), [LABEL]);
    assert_eq!(stored["title"], "CrashLoopBackOff: prod/api");

    // Found again, twice, and finding never opens another.
    for _ in 0..2 {
        assert_eq!(
            forge.find_issue(&project, LABEL).await.expect("find"),
            Some(created.clone())
        );
    }
    assert_eq!(all_issues(&gitea, &project).await.len(), 2);

    // Another incident's label finds nothing, then its own issue, which does not shadow ours.
    assert_eq!(
        forge.find_issue(&project, OTHER_LABEL).await.expect("find"),
        None
    );
    let other = forge
        .create_issue(&project, "OOMKilled: prod/worker", "b", OTHER_LABEL)
        .await
        .expect("create other");
    assert!(other.number > created.number);
    assert_eq!(
        forge
            .find_issue(&project, LABEL)
            .await
            .expect("find")
            .map(|i| i.number),
        Some(created.number)
    );

    forge
        .comment(&project, created.number, "Happened again at **10:02**")
        .await
        .expect("comment");
    let comments = gitea
        .api_get(&format!(
            "/repos/{project}/issues/{}/comments",
            created.number
        ))
        .await
        .expect("comments");
    let bodies: Vec<&str> = comments
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|c| c["body"].as_str())
        .collect();
    assert_eq!(bodies, ["Happened again at **10:02**"]);

    forge
        .set_open(&project, created.number, false)
        .await
        .expect("close");
    let closed = forge
        .find_issue(&project, LABEL)
        .await
        .expect("find")
        .expect("still found when closed");
    assert_eq!(closed.number, created.number);
    assert!(!closed.open && closed.closed_at.is_some(), "{closed:?}");

    forge
        .set_open(&project, created.number, true)
        .await
        .expect("reopen");
    let reopened = forge
        .find_issue(&project, LABEL)
        .await
        .expect("find")
        .expect("found");
    assert!(
        reopened.open && reopened.closed_at.is_none(),
        "{reopened:?}"
    );

    // A later issue for the same label reuses the label and becomes the one found (the newest).
    let newer = forge
        .create_issue(&project, "CrashLoopBackOff: prod/api (again)", "b", LABEL)
        .await
        .expect("create again");
    assert_eq!(
        forge
            .find_issue(&project, LABEL)
            .await
            .expect("find")
            .map(|i| i.number),
        Some(newer.number)
    );
    let labels = gitea
        .api_get(&format!("/repos/{project}/labels?limit=50"))
        .await
        .expect("labels");
    let named: Vec<&Value> = labels
        .as_array()
        .expect("an array")
        .iter()
        .filter(|l| l["name"] == LABEL)
        .collect();
    assert_eq!(named.len(), 1, "one label per incident key: {labels}");

    let bad = forge_with_bad_token(&gitea);
    let err = bad
        .find_issue(&project, LABEL)
        .await
        .expect_err("bad token");
    assert!(
        matches!(err, ForgeError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.retryable());
    assert!(!format!("{err} {err:?}").contains("not-a-real-token"));

    let missing = forge
        .find_issue(&format!("{}/no-such-repo", gitea.owner), LABEL)
        .await
        .expect_err("missing repository");
    assert_eq!(missing.category(), "not_found", "{missing:?}");

    // Kept when an assertion fails above, for its web.log.
    drop(gitea);
    let _ = std::fs::remove_dir_all(work_dir("lifecycle"));
}

fn forge_with_bad_token(gitea: &Gitea) -> Forge {
    forge(gitea, "not-a-real-token")
}

#[tokio::test]
async fn an_outage_is_retryable_and_the_same_issue_is_found_after_it() {
    let mut gitea = start("outage").await;
    gitea.create_repo("incidents").await.expect("repo");
    let project = format!("{}/incidents", gitea.owner);
    let forge = forge(&gitea, &gitea.token);
    let created = forge
        .create_issue(&project, "NodeNotReady: kwok-node-1", "b", LABEL)
        .await
        .expect("create");

    gitea.stop();
    let err = forge
        .find_issue(&project, LABEL)
        .await
        .expect_err("Gitea is down");
    assert!(
        matches!(err, ForgeError::Unreachable { .. }) && err.retryable(),
        "{err:?}"
    );
    assert!(!err.to_string().contains(&gitea.token), "{err}");
    let err = forge
        .create_issue(&project, "NodeNotReady: kwok-node-1", "b", LABEL)
        .await
        .expect_err("Gitea is down");
    assert!(err.retryable(), "{err:?}");

    let restarted = Instant::now();
    gitea.start_again().await.expect("start again");
    eprintln!(
        "Gitea restarted in {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(
        forge.find_issue(&project, LABEL).await.expect("find"),
        Some(created.clone()),
        "the issue from before the outage"
    );
    let issues = all_issues(&gitea, &project).await;
    assert_eq!(issues.len(), 1, "no duplicate: {issues:?}");
    assert_eq!(issues[0]["number"], created.number);

    drop(gitea);
    let _ = std::fs::remove_dir_all(work_dir("outage"));
}
