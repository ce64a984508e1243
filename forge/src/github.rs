//! GitHub's REST API (api.github.com, or GitHub Enterprise Server's `/api/v3`).

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::error::ForgeError;
use crate::http::Http;
use crate::issues::{Created, Issue, LabelRef, Project, carries};

/// An issue in GitHub's shape, which Gitea's API copies.
#[derive(Debug, Deserialize)]
pub(crate) struct RepoIssue {
    pub number: u64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    /// Present (GitHub) or non-null (Gitea) on pull requests, which the issue list includes.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
    #[serde(default)]
    pub labels: Vec<LabelRef>,
}

impl RepoIssue {
    pub(crate) fn into_issue(self) -> Issue {
        Issue {
            number: self.number,
            url: self.html_url,
            open: self.state != "closed",
            closed_at: self.closed_at,
        }
    }

    pub(crate) fn into_created(self, label: &str) -> Created {
        let labelled = carries(&self.labels, label);
        Created {
            issue: self.into_issue(),
            labelled,
        }
    }
}

/// The newest issue in a page of a label-filtered list, skipping pull requests and (as a guard
/// for servers that ignore an unknown label filter) items without the label.
pub(crate) fn newest(items: Vec<RepoIssue>, label: &str) -> Option<Issue> {
    items
        .into_iter()
        .filter(|i| i.pull_request.is_none() && carries(&i.labels, label))
        .max_by_key(|i| i.number)
        .map(RepoIssue::into_issue)
}

pub(crate) fn repo_path<'a>(project: &Project<'a>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["repos"];
    path.extend(&project.segments);
    path.extend(rest);
    path
}

pub(crate) fn what_repo(project: &Project<'_>) -> String {
    format!("repository {}", project.display)
}

pub(crate) fn what_issue(project: &Project<'_>, number: u64) -> String {
    format!("issue #{number} in {}", project.display)
}

/// `GET /repos/{o}/{r}/issues?labels=..&state=all`: the list is newest first; 100 is the
/// largest page and far more than one incident label gathers.
pub(crate) async fn find_issue(
    http: &Http,
    project: &Project<'_>,
    label: &str,
) -> Result<Option<Issue>, ForgeError> {
    let url = http.url(
        &repo_path(project, &["issues"]),
        &[("labels", label), ("state", "all"), ("per_page", "100")],
    );
    let items: Vec<RepoIssue> = http
        .json(Method::GET, url, None, &what_repo(project))
        .await?;
    Ok(newest(items, label))
}

/// `POST /repos/{o}/{r}/issues {title, body, labels}`; GitHub creates a missing label.
pub(crate) async fn create_issue(
    http: &Http,
    project: &Project<'_>,
    title: &str,
    body: &str,
    label: &str,
) -> Result<Created, ForgeError> {
    let url = http.url(&repo_path(project, &["issues"]), &[]);
    let request = json!({ "title": title, "body": body, "labels": [label] });
    let created: RepoIssue = http
        .json(Method::POST, url, Some(&request), &what_repo(project))
        .await?;
    Ok(created.into_created(label))
}

/// `POST /repos/{o}/{r}/issues/{n}/comments {body}` (Gitea's API has the same call; it answers
/// 201 too).
pub(crate) async fn comment(
    http: &Http,
    project: &Project<'_>,
    number: u64,
    body: &str,
) -> Result<(), ForgeError> {
    let n = number.to_string();
    let url = http.url(&repo_path(project, &["issues", &n, "comments"]), &[]);
    http.send(
        Method::POST,
        url,
        Some(&json!({ "body": body })),
        &what_issue(project, number),
    )
    .await?;
    Ok(())
}

/// `PATCH /repos/{o}/{r}/issues/{n}` with the state and its reason (`reopened`, `completed`).
pub(crate) async fn set_open(
    http: &Http,
    project: &Project<'_>,
    number: u64,
    open: bool,
) -> Result<(), ForgeError> {
    let n = number.to_string();
    let url = http.url(&repo_path(project, &["issues", &n]), &[]);
    let request = if open {
        json!({ "state": "open", "state_reason": "reopened" })
    } else {
        json!({ "state": "closed", "state_reason": "completed" })
    };
    http.send(
        Method::PATCH,
        url,
        Some(&request),
        &what_issue(project, number),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::test_server::{Expect, TOKEN, TestServer};
    use crate::{ForgeError, ForgeKind, Issue};

    const LABEL: &str = "auto-agent:3f2a9c";
    /// GitHub Enterprise Server's prefix: paths must be appended to it, not replace it.
    const PREFIX: &str = "/api/v3";

    /// An issue (or pull request) as `GET /repos/{o}/{r}/issues` lists it.
    fn item(number: u64, state: &str, labels: &[&str], pull_request: bool) -> Value {
        let base = "https://api.github.com/repos/acme/api";
        let mut item = json!({
            "id": 1_000_000 + number,
            "node_id": "I_kwDOA1b2c3",
            "url": format!("{base}/issues/{number}"),
            "repository_url": base,
            "labels_url": format!("{base}/issues/{number}/labels{{/name}}"),
            "comments_url": format!("{base}/issues/{number}/comments"),
            "html_url": format!("https://github.com/acme/api/issues/{number}"),
            "number": number,
            "state": state,
            "state_reason": if state == "closed" { json!("completed") } else { Value::Null },
            "title": "CrashLoopBackOff in prod/api",
            "body": "The agent restarted the pod twice.",
            "user": { "login": "auto-agent[bot]", "id": 41898282, "type": "Bot" },
            "labels": labels.iter().map(|name| json!({
                "id": 208045946, "node_id": "LA_kwDOA1b2c3", "url": format!("{base}/labels/{name}"),
                "name": name, "description": null, "color": "d93f0b", "default": false
            })).collect::<Vec<_>>(),
            "assignee": null, "assignees": [], "milestone": null, "locked": false,
            "comments": 1,
            "created_at": "2025-06-01T09:00:00Z",
            "updated_at": "2025-06-01T10:00:00Z",
            "closed_at": if state == "closed" { json!("2025-06-01T10:00:00Z") } else { Value::Null },
            "author_association": "NONE"
        });
        if pull_request {
            item["pull_request"] = json!({
                "url": format!("{base}/pulls/{number}"),
                "html_url": format!("https://github.com/acme/api/pull/{number}"),
                "diff_url": format!("https://github.com/acme/api/pull/{number}.diff"),
                "patch_url": format!("https://github.com/acme/api/pull/{number}.patch"),
                "merged_at": null
            });
        }
        item
    }

    fn list_query() -> [(&'static str, &'static str); 3] {
        [("labels", LABEL), ("state", "all"), ("per_page", "100")]
    }

    #[tokio::test]
    async fn finds_the_newest_issue_and_skips_pull_requests() {
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::get("/api/v3/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(
                        200,
                        json!([
                            item(9, "open", &[LABEL], true),
                            item(7, "closed", &[LABEL, "bug"], false),
                            item(4, "open", &[LABEL], false),
                        ]),
                    ),
            ],
        )
        .await;
        let found = server
            .forge(ForgeKind::GitHub)
            .find_issue("acme/api", LABEL)
            .await
            .expect("find");
        assert_eq!(
            found,
            Some(Issue {
                number: 7,
                url: "https://github.com/acme/api/issues/7".into(),
                open: false,
                closed_at: Some("2025-06-01T10:00:00Z".into()),
            })
        );
        server.finish();
    }

    #[tokio::test]
    async fn finds_nothing_when_only_a_pull_request_carries_the_label() {
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::get("/api/v3/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(200, json!([item(9, "open", &[LABEL], true)])),
                Expect::get("/api/v3/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(200, json!([])),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitHub);
        assert_eq!(
            forge.find_issue("acme/api", LABEL).await.expect("find"),
            None
        );
        assert_eq!(
            forge.find_issue("acme/api", LABEL).await.expect("find"),
            None
        );
        server.finish();
    }

    #[tokio::test]
    async fn creates_with_the_label_comments_closes_and_reopens() {
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::post(
                    "/api/v3/repos/acme/api/issues",
                    json!({ "title": "CrashLoopBackOff in prod/api", "body": "**Pod** crashed", "labels": [LABEL] }),
                )
                .answer(201, item(12, "open", &[LABEL], false)),
                Expect::post(
                    "/api/v3/repos/acme/api/issues/12/comments",
                    json!({ "body": "Happened again" }),
                )
                .answer(
                    201,
                    json!({ "id": 1, "body": "Happened again", "html_url": "https://github.com/acme/api/issues/12#issuecomment-1" }),
                ),
                Expect::patch(
                    "/api/v3/repos/acme/api/issues/12",
                    json!({ "state": "closed", "state_reason": "completed" }),
                )
                .answer(200, item(12, "closed", &[LABEL], false)),
                Expect::patch(
                    "/api/v3/repos/acme/api/issues/12",
                    json!({ "state": "open", "state_reason": "reopened" }),
                )
                .answer(200, item(12, "open", &[LABEL], false)),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitHub);
        let issue = forge
            .create_issue(
                "acme/api",
                "CrashLoopBackOff in prod/api",
                "**Pod** crashed",
                LABEL,
            )
            .await
            .expect("create");
        assert_eq!(issue.number, 12);
        assert!(issue.open);
        assert_eq!(issue.closed_at, None);
        forge
            .comment("acme/api", 12, "Happened again")
            .await
            .expect("comment");
        forge.set_open("acme/api", 12, false).await.expect("close");
        forge.set_open("acme/api", 12, true).await.expect("reopen");
        server.finish();
    }

    #[tokio::test]
    async fn follows_a_same_origin_redirect_for_a_renamed_repository() {
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::get("/api/v3/repos/acme/old-api/issues")
                    .query(&list_query())
                    .answer(301, json!({ "message": "Moved Permanently", "url": "https://api.github.com/repositories/42/issues" }))
                    .header("location", "/api/v3/repositories/42/issues?labels=auto-agent%3A3f2a9c&state=all&per_page=100"),
                Expect::get("/api/v3/repositories/42/issues")
                    .query(&list_query())
                    .answer(200, json!([item(4, "open", &[LABEL], false)])),
            ],
        )
        .await;
        let found = server
            .forge(ForgeKind::GitHub)
            .find_issue("acme/old-api", LABEL)
            .await
            .expect("find");
        assert_eq!(found.map(|i| i.number), Some(4));
        server.finish();
    }

    #[tokio::test]
    async fn an_issue_created_without_the_label_is_an_error() {
        // GitHub drops labels for tokens without push access; that issue could never be found.
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::post(
                    "/api/v3/repos/acme/api/issues",
                    json!({ "title": "t", "body": "b", "labels": [LABEL] }),
                )
                .answer(201, item(13, "open", &[], false)),
            ],
        )
        .await;
        let err = server
            .forge(ForgeKind::GitHub)
            .create_issue("acme/api", "t", "b", LABEL)
            .await
            .expect_err("unlabelled");
        assert!(
            matches!(err, ForgeError::Rejected { ref reason, .. } if reason.contains("#13")),
            "{err:?}"
        );
        assert!(!err.retryable());
        server.finish();
    }

    #[tokio::test]
    async fn limits_and_refusals_arrive_as_typed_errors() {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 120;
        let server = TestServer::start(
            ForgeKind::GitHub,
            PREFIX,
            vec![
                Expect::get("/api/v3/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(403, json!({ "message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api" }))
                    .header("x-ratelimit-limit", "5000")
                    .header("x-ratelimit-remaining", "0")
                    .header("x-ratelimit-reset", &reset.to_string()),
                Expect::get("/api/v3/repos/acme/gone/issues")
                    .query(&list_query())
                    .answer(404, json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest/issues/issues#list-repository-issues" })),
                Expect::post(
                    "/api/v3/repos/acme/api/issues/3/comments",
                    json!({ "body": "x" }),
                )
                .answer(401, json!({ "message": "Bad credentials" })),
                Expect::patch(
                    "/api/v3/repos/acme/api/issues/3",
                    json!({ "state": "open", "state_reason": "reopened" }),
                )
                .answer(422, json!({ "message": format!("Validation Failed for {TOKEN}"), "errors": [{ "resource": "Issue", "code": "invalid", "field": "state" }] })),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitHub);
        let limited = forge
            .find_issue("acme/api", LABEL)
            .await
            .expect_err("limited");
        let after = limited.retry_after().expect("a wait").as_secs();
        assert!(
            limited.retryable() && (100..=120).contains(&after),
            "{limited:?}"
        );
        assert_eq!(limited.category(), "rate_limited");

        let missing = forge.find_issue("acme/gone", LABEL).await.expect_err("404");
        assert_eq!(
            missing.to_string(),
            "GitHub: repository acme/gone not found"
        );

        let refused = forge.comment("acme/api", 3, "x").await.expect_err("401");
        assert!(
            matches!(refused, ForgeError::Unauthorized { status: 401, .. }),
            "{refused:?}"
        );

        let rejected = forge.set_open("acme/api", 3, true).await.expect_err("422");
        assert_eq!(
            rejected.to_string(),
            "GitHub rejected the request (422): Validation Failed for <redacted> (state invalid)"
        );
        server.finish();
    }
}
