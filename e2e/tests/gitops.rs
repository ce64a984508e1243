//! GitOps proposals on the real control plane with the real sensor and controller, and a real
//! Gitea holding the repository the workload comes from (created by the test): an OOMKilled
//! Argo CD-managed Deployment gets a pull request raising exactly its container's memory (limit
//! and request), the cluster is not patched; a second OOM updates the same pull request; with
//! Gitea down a third is delivered once Gitea is back; after a human merges it, a recurrence
//! proposes from the merged file and opens nothing new.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::gitea::Gitea;
use auto_agent_e2e::scenario;
use auto_agent_e2e::wait::poll_value;
use auto_agent_e2e::{Setup, Workload};
use auto_agent_gitops::edit::{self, Document};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};

const NODE: &str = "kwok-node-0";
const TIMEOUT: Duration = Duration::from_secs(120);
const FILE: &str = "apps/api/values.yaml";
const VALUES: &str = "# The api chart's values; Argo CD syncs this repository.
replicaCount: 2
image:
  repository: registry.example.com/app
resources:
  limits:
    memory: 256Mi # sized in the capacity review
  requests:
    memory: \"128Mi\"
";

async fn pulls(gitea: &Gitea, project: &str) -> Vec<Value> {
    gitea
        .api_get(&format!("/repos/{project}/pulls?state=all&limit=50"))
        .await
        .map(|v| v.as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

async fn comments(gitea: &Gitea, project: &str, number: u64) -> Vec<String> {
    gitea
        .api_get(&format!("/repos/{project}/issues/{number}/comments"))
        .await
        .map(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn file_on(gitea: &Gitea, project: &str, branch: &str) -> String {
    let v = gitea
        .api_get(&format!("/repos/{project}/contents/{FILE}?ref={branch}"))
        .await
        .unwrap();
    let b64: String = v["content"]
        .as_str()
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oomkilled_argo_deployment_gets_one_pull_request_updated_and_delivered_after_an_outage()
{
    let dir = std::env::temp_dir().join(format!("e2e-gitops-{}", std::process::id()));
    let mut gitea = Gitea::start(&dir.join("gitea")).await.unwrap();
    gitea.create_repo("deploy").await.unwrap();
    let project = format!("{}/deploy", gitea.owner);
    gitea
        .api_post(
            &format!("/repos/{project}/contents/{FILE}"),
            &json!({ "content": STANDARD.encode(VALUES), "message": "api values" }),
        )
        .await
        .unwrap();

    let mut t = Setup::new("gitops", NODE).await;
    t.start_agents(
        1,
        vec![
            ("AUTO_AGENT_GITEA_API_URL".into(), gitea.api_url.clone()),
            ("AUTO_AGENT_GITEA_TOKEN".into(), gitea.token.clone()),
            ("AUTO_AGENT_GITOPS_PROVIDER".into(), "gitea".into()),
            ("AUTO_AGENT_GITOPS_REPO".into(), project.clone()),
            ("AUTO_AGENT_GITOPS_VALUES_FILE".into(), FILE.into()),
        ],
    )
    .await;
    t.policy(
        "mem",
        json!({"targetSelector": {"matchLabels": {"tier": "api"}},
               "actions": {"bumpMemoryPercent": 50},
               "safety": {"cooldownSeconds": 0, "maxRepeats": 100}}),
    );
    t.rollout(
        Workload::new("api")
            .replicas(2)
            .label("tier", "api")
            .memory("256Mi", "128Mi")
            .deployment_annotation(
                "argocd.argoproj.io/tracking-id",
                "shop:apps/Deployment:x/api",
            ),
    )
    .await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();

    // The first OOM: a pull request, not a patch.
    let pod = t.ready_pod_names("api").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 1)
        .await
        .unwrap();
    let note = t.wait_event("api", "ProposalOpened").await;
    let managed = t.wait_event("api", "GitOpsManaged").await;
    assert!(
        managed.contains(&format!("a pull request goes to gitea:{project}")),
        "{managed}"
    );
    let all = pulls(&gitea, &project).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let pull = &all[0];
    let number = pull["number"].as_u64().unwrap();
    assert!(note.contains(pull["html_url"].as_str().unwrap()), "{note}");
    let branch = pull["head"]["ref"].as_str().unwrap().to_owned();
    assert!(branch.starts_with("auto-agent/"), "{branch}");
    assert_eq!(pull["base"]["ref"], "main");
    let labels: Vec<&str> = pull["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels.len(), 1);
    assert!(labels[0].starts_with("auto-agent-"), "{labels:?}");
    let key = format!("pod/{ns}/Deployment/api/OOMKilled");
    let body = pull["body"].as_str().unwrap();
    assert!(body.contains(&key), "{body}");
    assert!(body.contains("`256Mi` -> `384Mi`"), "{body}");

    // Exactly that container's memory: the limit and the request lines, nothing else.
    let files = gitea
        .api_get(&format!("/repos/{project}/pulls/{number}/files"))
        .await
        .unwrap();
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0]["additions"].as_u64(),
            files[0]["deletions"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let proposed = file_on(&gitea, &project, &branch).await;
    let read = |text: &str, path: &str| {
        edit::read(text, &Document::Only, &path.parse().unwrap())
            .unwrap()
            .value
    };
    assert_eq!(read(&proposed, "resources.limits.memory"), "384Mi");
    let request = read(&proposed, "resources.requests.memory");
    assert_ne!(request, "128Mi");
    let expected = VALUES
        .replace("memory: 256Mi #", "memory: 384Mi #")
        .replace("\"128Mi\"", &format!("\"{request}\""));
    assert_eq!(proposed, expected, "comments, quotes and order kept");

    // The policy's status shows the proposal with its pull request.
    let policies: Api<auto_agent_shared::crd::AutoRemediationPolicy> =
        Api::namespaced(admin.clone(), &ns);
    let url = pull["html_url"].as_str().unwrap().to_owned();
    poll_value("the proposal in the policy's status", TIMEOUT, || {
        let policies = policies.clone();
        let url = url.clone();
        async move {
            let recent = policies
                .get("mem")
                .await?
                .status
                .map(|s| s.recent_actions)
                .unwrap_or_default();
            Ok(recent
                .iter()
                .any(|a| {
                    format!("{:?}", a.outcome) == "Proposed"
                        && a.reason == "ProposalOpened"
                        && a.message.contains(&url)
                })
                .then_some(()))
        }
    })
    .await
    .unwrap();

    // The cluster is not patched: Argo CD would revert it.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let live = deployments.get("api").await.unwrap();
    let c = &live.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "256Mi"
    );

    // A second OOM: the same pull request, described again, with a comment; no second one.
    let pod = t.ready_pod_names("api").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 2)
        .await
        .unwrap();
    poll_value("the repeat comment", TIMEOUT, || {
        let gitea = &gitea;
        let project = project.clone();
        async move {
            let c = comments(gitea, &project, number).await;
            Ok((c.len() == 1).then_some(c))
        }
    })
    .await
    .unwrap();
    let all = pulls(&gitea, &project).await;
    assert_eq!(all.len(), 1);
    assert!(
        all[0]["body"].as_str().unwrap().contains("2 times"),
        "{}",
        all[0]["body"]
    );

    // Gitea down: the third occurrence waits in its record and arrives when Gitea is back.
    gitea.stop();
    let pod = t.ready_pod_names("api").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 3)
        .await
        .unwrap();
    let stack = t.stack();
    poll_value("a failed delivery", TIMEOUT, || async {
        let failed = stack
            .metric_with(
                "auto_agent_gitops_proposals_total",
                "outcome=\"unreachable\"",
            )
            .await;
        Ok((failed >= 1.0).then_some(failed))
    })
    .await
    .unwrap();
    gitea.start_again().await.unwrap();
    poll_value(
        "the delivery after the outage",
        Duration::from_secs(180),
        || {
            let gitea = &gitea;
            let project = project.clone();
            async move {
                let all = pulls(gitea, &project).await;
                Ok(all
                    .first()
                    .and_then(|p| p["body"].as_str())
                    .filter(|b| b.contains("3 times"))
                    .map(str::to_owned))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pulls(&gitea, &project).await.len(),
        1,
        "still one pull request"
    );
    // The description is replaced first, then the repeat is commented on.
    poll_value("the second repeat comment", TIMEOUT, || {
        let gitea = &gitea;
        let project = project.clone();
        async move { Ok((comments(gitea, &project, number).await.len() == 2).then_some(())) }
    })
    .await
    .unwrap();

    // A human merges it; the incident comes back before a sync: the next proposal starts from
    // the merged file on the incident's next branch, finds it already asks for that memory, and
    // opens nothing (never a second pull request for the same change).
    gitea
        .api_post(
            &format!("/repos/{project}/pulls/{number}/merge"),
            &json!({"Do": "merge"}),
        )
        .await
        .ok();
    let merged = gitea
        .api_get(&format!("/repos/{project}/pulls/{number}"))
        .await
        .unwrap();
    assert_eq!(merged["merged"], true, "{merged}");
    let pod = t.ready_pod_names("api").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 4)
        .await
        .unwrap();
    let note = t.wait_event("api", "ProposalNotNeeded").await;
    assert!(note.contains("already asks for 384Mi"), "{note}");
    assert_eq!(pulls(&gitea, &project).await.len(), 1);

    // A policy naming a file the repository lacks: a clear reason in a Warning Event and in the
    // policy's status; nothing patched live instead.
    t.policy(
        "broken",
        json!({"targetSelector": {"matchLabels": {"tier": "web"}},
               "actions": {"bumpMemoryPercent": 50},
               "safety": {"cooldownSeconds": 0},
               "gitOps": {"valuesFile": "apps/missing.yaml"}}),
    );
    t.rollout(
        Workload::new("web")
            .replicas(1)
            .label("tier", "web")
            .memory("256Mi", "128Mi")
            .deployment_annotation(
                "argocd.argoproj.io/tracking-id",
                "shop:apps/Deployment:x/web",
            ),
    )
    .await;
    let pod = t.ready_pod_names("web").await.remove(0);
    scenario::oom_killed(&admin, &ns, &pod, None, 1)
        .await
        .unwrap();
    let failed = t.wait_event("web", "ProposalFailed").await;
    assert!(
        failed.contains("apps/missing.yaml") && failed.contains("not_found"),
        "{failed}"
    );
    poll_value("the failure in the policy's status", TIMEOUT, || {
        let policies = policies.clone();
        async move {
            let recent = policies
                .get("broken")
                .await?
                .status
                .map(|s| s.recent_actions)
                .unwrap_or_default();
            Ok(recent
                .iter()
                .any(|a| {
                    format!("{:?}", a.outcome) == "Failed"
                        && a.reason == "ProposalFailed"
                        && a.message.contains("apps/missing.yaml")
                })
                .then_some(()))
        }
    })
    .await
    .unwrap();
    let live = deployments.get("web").await.unwrap();
    let c = &live.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "256Mi"
    );
    t.finish().await;
}
