//! The forge's pull-request client and the values editor against a real Gitea (built by
//! `e2e/integrations build`): a branch per incident key, a commit that changes exactly one
//! line of a values file (Gitea's own diff says so), a pull request carrying the incident label,
//! found again by its head branch, updated by a second commit and closed unmerged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_e2e::gitea::Gitea;
use auto_agent_forge::{Forge, ForgeConfig, ForgeKind, PullState, Secret};
use auto_agent_gitops::edit::{self, Document};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

const BRANCH: &str = "auto-agent/5e1f0c2a9b7d3e41";
const LABEL: &str = "auto-agent:5e1f0c2a9b7d3e41";
const FILE: &str = "charts/api/values.yaml";
const VALUES: &str = "# Values for the api chart; reviewed by the platform team.
replicaCount: 2

resources:
  limits:
    cpu: 500m
    memory: 256Mi # raised by hand, see OPS-12
  requests:
    memory: '128Mi'
";

#[tokio::test]
async fn a_pull_request_changes_one_line_and_is_updated_then_closed_unmerged() {
    let dir = std::env::temp_dir().join(format!("e2e-forge-pulls-{}", std::process::id()));
    let gitea = Gitea::start(&dir).await.expect("start Gitea");
    gitea.create_repo("deploy").await.expect("repo");
    let project = format!("{}/deploy", gitea.owner);
    gitea
        .api_post(
            &format!("/repos/{project}/contents/{FILE}"),
            &json!({ "content": STANDARD.encode(VALUES), "message": "api chart values" }),
        )
        .await
        .expect("seed the values file");
    let forge = Forge::new(ForgeConfig {
        kind: ForgeKind::Gitea,
        api_url: gitea.api_url.clone(),
        token: Secret::new(&gitea.token),
    })
    .expect("client");

    // One branch per incident key, from the base branch.
    assert_eq!(forge.branch_head(&project, BRANCH).await.unwrap(), None);
    forge.create_branch(&project, BRANCH, "main").await.unwrap();
    let base = forge.branch_head(&project, "main").await.unwrap().unwrap();
    assert_eq!(
        forge
            .branch_head(&project, BRANCH)
            .await
            .unwrap()
            .as_deref(),
        Some(base.as_str())
    );

    // The change: exactly the memory limit, written back as one commit on the branch.
    let path = "resources.limits.memory".parse().unwrap();
    let file = forge.read_file(&project, FILE, BRANCH).await.unwrap();
    assert_eq!(file.content, VALUES);
    let edited = edit::set(&file.content, &Document::Only, &path, "384Mi").unwrap();
    forge
        .write_file(
            &project,
            FILE,
            BRANCH,
            &edited.text,
            &file.version,
            "api: memory limit 256Mi -> 384Mi",
        )
        .await
        .unwrap();
    // Writing over a version that is no longer the branch's is refused, not merged blindly.
    let stale = forge
        .write_file(&project, FILE, BRANCH, VALUES, &file.version, "stale")
        .await
        .unwrap_err();
    assert!(!stale.retryable(), "{stale}");

    assert_eq!(
        forge.find_pull(&project, BRANCH, "main").await.unwrap(),
        None
    );
    let body = format!("Incident `{LABEL}`\n\n```diff\n{}```\n", edited.diff(FILE));
    let pull = forge
        .open_pull(
            &project,
            BRANCH,
            "main",
            "api: OOMKilled, raise the memory limit",
            &body,
            LABEL,
        )
        .await
        .unwrap();
    assert_eq!(pull.state, PullState::Open);
    assert_eq!(
        pull.url,
        format!("{}/{project}/pulls/{}", gitea.url, pull.number)
    );

    // Gitea's own view: one file, one line out, one line in, and the label on it.
    let files = gitea
        .api_get(&format!("/repos/{project}/pulls/{}/files", pull.number))
        .await
        .unwrap();
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["filename"], FILE);
    assert_eq!(
        (
            files[0]["additions"].as_u64(),
            files[0]["deletions"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let stored = gitea
        .api_get(&format!("/repos/{project}/pulls/{}", pull.number))
        .await
        .unwrap();
    let labels: Vec<&str> = stored["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels, [LABEL]);
    assert_eq!(stored["head"]["ref"], BRANCH);

    // A repeat: found again by its branch, a second commit on it, the description replaced.
    let found = forge
        .find_pull(&project, BRANCH, "main")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, pull);
    let file = forge.read_file(&project, FILE, BRANCH).await.unwrap();
    assert_eq!(file.content, edited.text);
    let again = edit::set(&file.content, &Document::Only, &path, "512Mi").unwrap();
    assert_eq!(
        again.new_line,
        "    memory: 512Mi # raised by hand, see OPS-12"
    );
    forge
        .write_file(
            &project,
            FILE,
            BRANCH,
            &again.text,
            &file.version,
            "api: memory limit 384Mi -> 512Mi",
        )
        .await
        .unwrap();
    forge
        .describe_pull(&project, pull.number, "OOMKilled twice: 512Mi")
        .await
        .unwrap();
    forge
        .comment_pull(&project, pull.number, "Seen again at 2026-12-03T21:00:00Z")
        .await
        .unwrap();
    let commits = gitea
        .api_get(&format!("/repos/{project}/pulls/{}/commits", pull.number))
        .await
        .unwrap();
    assert_eq!(commits.as_array().unwrap().len(), 2);
    let stored = gitea
        .api_get(&format!("/repos/{project}/pulls/{}", pull.number))
        .await
        .unwrap();
    assert_eq!(stored["body"], "OOMKilled twice: 512Mi");
    let comments = gitea
        .api_get(&format!("/repos/{project}/issues/{}/comments", pull.number))
        .await
        .unwrap();
    assert_eq!(comments.as_array().unwrap().len(), 1);

    // Resolved: closed, never merged; the base branch is untouched.
    forge.close_pull(&project, pull.number).await.unwrap();
    let closed = forge
        .find_pull(&project, BRANCH, "main")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.state, PullState::Closed);
    let main = forge.read_file(&project, FILE, "main").await.unwrap();
    assert_eq!(main.content, VALUES);
}
