//! The forge's pull-request client and the values editor against the GitHub and GitLab contract
//! servers (every request checked against @octokit/openapi's api.github.com.json and
//! python-gitlab's attributes; every GitHub answer against its documented schema): a branch per
//! incident key, one commit changing one line, a pull request (merge request) with the incident
//! label, found again by its branch and updated by a second commit, a stale write refused, the
//! base branch never written, closed unmerged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_e2e::contract::{ContractServer, GITHUB_TOKEN, GITLAB_TOKEN};
use auto_agent_forge::{Forge, ForgeConfig, ForgeKind, PullState, Secret};
use auto_agent_gitops::edit::{self, Document};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const BRANCH: &str = "auto-agent/5e1f0c2a9b7d3e41";
const LABEL: &str = "auto-agent:5e1f0c2a9b7d3e41";
const FILE: &str = "apps/api/deployment.yaml";
const MANIFEST: &str = "# Applied by Argo CD from this repository.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: app
          image: docker.io/acme/api:1.4.2
          resources:
            limits:
              memory: \"256Mi\"
";

/// Puts the manifest on `main` through the provider's own API (validated like every request).
async fn seed(server: &ContractServer, kind: ForgeKind, project: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let response = match kind {
        ForgeKind::GitHub => {
            http.put(format!(
                "{}/repos/{project}/contents/{FILE}",
                server.github_api_url()
            ))
            .header("authorization", format!("Bearer {GITHUB_TOKEN}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "auto-agent-e2e")
            .json(&json!({"message": "api manifest", "content": STANDARD.encode(MANIFEST)}))
            .send()
            .await
        }
        _ => {
            http.post(format!(
                "{}/projects/{}/repository/commits",
                server.gitlab_api_url(),
                project.replace('/', "%2F")
            ))
            .header("private-token", GITLAB_TOKEN)
            .json(&json!({
                "branch": "main",
                "commit_message": "api manifest",
                "actions": [{"action": "create", "file_path": FILE, "content": MANIFEST}],
            }))
            .send()
            .await
        }
    }
    .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

async fn flow(server: &ContractServer, kind: ForgeKind, project: &str) -> u64 {
    let (api_url, token) = match kind {
        ForgeKind::GitHub => (server.github_api_url(), GITHUB_TOKEN),
        _ => (server.gitlab_api_url(), GITLAB_TOKEN),
    };
    let forge = Forge::new(ForgeConfig {
        kind,
        api_url,
        token: Secret::new(token),
    })
    .unwrap();
    seed(server, kind, project).await;
    let document = Document::Resource {
        kind: "Deployment".into(),
        name: "api".into(),
    };
    let path = "spec.template.spec.containers[name=app].resources.limits.memory"
        .parse()
        .unwrap();

    assert_eq!(forge.branch_head(project, BRANCH).await.unwrap(), None);
    forge.create_branch(project, BRANCH, "main").await.unwrap();
    assert!(forge.branch_head(project, BRANCH).await.unwrap().is_some());

    let file = forge.read_file(project, FILE, BRANCH).await.unwrap();
    assert_eq!(file.content, MANIFEST);
    let edited = edit::set(&file.content, &document, &path, "384Mi").unwrap();
    assert_eq!(edited.new_line, "              memory: \"384Mi\"");
    forge
        .write_file(
            project,
            FILE,
            BRANCH,
            &edited.text,
            &file.version,
            "api: memory 256Mi -> 384Mi",
        )
        .await
        .unwrap();
    let stale = forge
        .write_file(project, FILE, BRANCH, MANIFEST, &file.version, "stale")
        .await
        .unwrap_err();
    assert_eq!(stale.category(), "rejected", "{stale}");

    assert_eq!(
        forge.find_pull(project, BRANCH, "main").await.unwrap(),
        None
    );
    let body = format!("Incident `{LABEL}`\n\n```diff\n{}```\n", edited.diff(FILE));
    let pull = forge
        .open_pull(
            project,
            BRANCH,
            "main",
            "api: OOMKilled, raise the memory limit",
            &body,
            LABEL,
        )
        .await
        .unwrap();
    assert_eq!(pull.state, PullState::Open);
    // A second open pull request from the same branch is refused by the forge itself.
    let twice = forge
        .open_pull(project, BRANCH, "main", "again", &body, LABEL)
        .await
        .unwrap_err();
    assert_eq!(twice.category(), "rejected", "{twice}");

    // A repeat: the same pull request, a second commit, a new description and a comment.
    assert_eq!(
        forge.find_pull(project, BRANCH, "main").await.unwrap(),
        Some(pull.clone())
    );
    let file = forge.read_file(project, FILE, BRANCH).await.unwrap();
    assert_eq!(file.content, edited.text);
    let again = edit::set(&file.content, &document, &path, "512Mi").unwrap();
    forge
        .write_file(
            project,
            FILE,
            BRANCH,
            &again.text,
            &file.version,
            "api: memory 384Mi -> 512Mi",
        )
        .await
        .unwrap();
    forge
        .describe_pull(project, pull.number, "OOMKilled twice: 512Mi")
        .await
        .unwrap();
    forge
        .comment_pull(project, pull.number, "Seen again")
        .await
        .unwrap();

    // Resolved: closed, not merged; main still holds the original.
    forge.close_pull(project, pull.number).await.unwrap();
    let closed = forge
        .find_pull(project, BRANCH, "main")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (closed.number, closed.state),
        (pull.number, PullState::Closed)
    );
    assert_eq!(
        forge
            .read_file(project, FILE, "main")
            .await
            .unwrap()
            .content,
        MANIFEST
    );
    let on_branch = forge.read_file(project, FILE, BRANCH).await.unwrap();
    assert_eq!(on_branch.content, again.text);
    pull.number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_gitlab_pull_requests_keep_every_contract() {
    let dir = std::env::temp_dir().join(format!("e2e-contract-pulls-{}", std::process::id()));
    let server = ContractServer::start(&dir).await.unwrap();

    let number = flow(&server, ForgeKind::GitHub, "acme/deploy").await;
    let iid = flow(&server, ForgeKind::GitLab, "platform/deploy").await;

    // GitLab's protected base branch: a write there is refused with GitLab's reason.
    let forge = Forge::new(ForgeConfig {
        kind: ForgeKind::GitLab,
        api_url: server.gitlab_api_url(),
        token: Secret::new(GITLAB_TOKEN),
    })
    .unwrap();
    let main = forge
        .read_file("platform/deploy", FILE, "main")
        .await
        .unwrap();
    let protected = forge
        .write_file(
            "platform/deploy",
            FILE,
            "main",
            "x: 1\n",
            &main.version,
            "direct",
        )
        .await
        .unwrap_err();
    assert!(
        protected.to_string().contains("not allowed to push"),
        "{protected}"
    );

    let state = server.state().await.unwrap();
    let pr = state["github"]["acme/deploy"]["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["number"] == number)
        .cloned()
        .unwrap();
    assert_eq!(pr["pull"], true);
    assert_eq!(pr["labels"], json!([LABEL]));
    assert_eq!(pr["state"], "closed");
    assert_eq!(pr["body"], "OOMKilled twice: 512Mi");
    assert_eq!(pr["comments"], 1);
    let mr = state["gitlab"]["platform/deploy"]["mrs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["iid"] == iid)
        .cloned()
        .unwrap();
    assert_eq!(mr["state"], "closed");
    assert_eq!(mr["description"], "OOMKilled twice: 512Mi");
    assert_eq!(mr["labels"], json!([LABEL]));
    let notes: Vec<&Value> = state["gitlab"]["platform/deploy"]["mr_notes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(notes.len(), 1);

    // Only the deliberate refusals broke a rule; each was the server's answer, not a contract
    // violation of the client.
    let rejected = server.rejected().await.unwrap();
    assert!(rejected.is_empty(), "{rejected:#?}");
}
