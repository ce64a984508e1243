//! Gitea's REST API v1 (`/api/v1`). Close to GitHub's, with differences that matter here:
//! - an issue list filtered by a label the repository does not have ignores the filter and
//!   lists every issue, so items are checked for the label;
//! - `POST /issues` takes label ids, so the label is found by name (or created) first;
//! - `PATCH` of an issue answers 201.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::error::ForgeError;
use crate::github::{RepoIssue, newest, repo_path, what_issue, what_repo};
use crate::http::Http;
use crate::issues::{Created, Issue, Project};

/// Gitea's default `MAX_RESPONSE_ITEMS`; a server configured lower answers shorter pages.
const PAGE: usize = 50;
/// Label pages read before giving up (100,000 labels): a bound, not an expectation.
const MAX_LABEL_PAGES: usize = 2000;
/// The colour of the labels this client creates.
const LABEL_COLOR: &str = "#d93f0b";
const LABEL_DESCRIPTION: &str = "auto-agent incident key: one issue per incident";

#[derive(Debug, Deserialize)]
struct Label {
    id: u64,
    name: String,
}

/// `GET /repos/{o}/{r}/issues?labels=..&state=all&type=issues`, newest first.
pub(crate) async fn find_issue(
    http: &Http,
    project: &Project<'_>,
    label: &str,
) -> Result<Option<Issue>, ForgeError> {
    let limit = PAGE.to_string();
    let url = http.url(
        &repo_path(project, &["issues"]),
        &[
            ("labels", label),
            ("state", "all"),
            ("type", "issues"),
            ("limit", &limit),
        ],
    );
    let items: Vec<RepoIssue> = http
        .json(Method::GET, url, None, &what_repo(project))
        .await?;
    Ok(newest(items, label))
}

/// The label's id: looked up by name through the label pages, created when missing (Gitea
/// does not refuse a second label of the same name, so looking first is what keeps one).
pub(crate) async fn label_id(
    http: &Http,
    project: &Project<'_>,
    label: &str,
) -> Result<u64, ForgeError> {
    let limit = PAGE.to_string();
    let mut seen = 0usize;
    for page in 1..=MAX_LABEL_PAGES {
        let page = page.to_string();
        let url = http.url(
            &repo_path(project, &["labels"]),
            &[("page", &page), ("limit", &limit)],
        );
        let answer = http
            .send(Method::GET, url, None, &what_repo(project))
            .await?;
        let labels: Vec<Label> = http.decode(&answer.body, "the label list")?;
        if let Some(found) = labels.iter().find(|l| l.name == label) {
            return Ok(found.id);
        }
        seen += labels.len();
        let total = answer
            .headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let done = match total {
            Some(total) => seen >= total,
            None => labels.is_empty(),
        };
        if done || labels.is_empty() {
            let url = http.url(&repo_path(project, &["labels"]), &[]);
            let request = json!({
                "name": label,
                "color": LABEL_COLOR,
                "description": LABEL_DESCRIPTION,
            });
            let created: Label = http
                .json(Method::POST, url, Some(&request), &what_repo(project))
                .await?;
            return Ok(created.id);
        }
    }
    Err(http.protocol(format!(
        "{} has more than {} labels; the label `{label}` cannot be looked up",
        project.display,
        MAX_LABEL_PAGES * PAGE
    )))
}

/// The label (found or created), then `POST /repos/{o}/{r}/issues {title, body, labels: [id]}`.
pub(crate) async fn create_issue(
    http: &Http,
    project: &Project<'_>,
    title: &str,
    body: &str,
    label: &str,
) -> Result<Created, ForgeError> {
    let id = label_id(http, project, label).await?;
    let url = http.url(&repo_path(project, &["issues"]), &[]);
    let request = json!({ "title": title, "body": body, "labels": [id] });
    let created: RepoIssue = http
        .json(Method::POST, url, Some(&request), &what_repo(project))
        .await?;
    Ok(created.into_created(label))
}

/// `PATCH /repos/{o}/{r}/issues/{n} {state: open | closed}` (201).
pub(crate) async fn set_open(
    http: &Http,
    project: &Project<'_>,
    number: u64,
    open: bool,
) -> Result<(), ForgeError> {
    let n = number.to_string();
    let url = http.url(&repo_path(project, &["issues", &n]), &[]);
    let state = if open { "open" } else { "closed" };
    http.send(
        Method::PATCH,
        url,
        Some(&json!({ "state": state })),
        &what_issue(project, number),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::test_server::{Expect, TestServer};
    use crate::{ForgeKind, Issue};

    const LABEL: &str = "auto-agent:3f2a9c";
    const PREFIX: &str = "/api/v1";

    /// A label as Gitea's API returns it.
    fn label(id: u64, name: &str) -> Value {
        json!({
            "id": id, "name": name, "exclusive": false, "is_archived": false,
            "color": "d93f0b", "description": "",
            "url": format!("http://gitea.local/api/v1/repos/acme/api/labels/{id}")
        })
    }

    /// An issue as Gitea's API returns it (`pull_request` is null on issues).
    fn item(number: u64, state: &str, labels: Vec<Value>) -> Value {
        json!({
            "id": 100 + number,
            "url": format!("http://gitea.local/api/v1/repos/acme/api/issues/{number}"),
            "html_url": format!("http://gitea.local/acme/api/issues/{number}"),
            "number": number,
            "user": { "id": 1, "login": "auto-agent", "username": "auto-agent" },
            "original_author": "", "original_author_id": 0,
            "title": "CrashLoopBackOff in prod/api", "body": "b", "ref": "", "assets": [],
            "labels": labels,
            "milestone": null, "assignee": null, "assignees": null,
            "state": state, "is_locked": false, "comments": 0,
            "created_at": "2025-06-01T09:00:00Z", "updated_at": "2025-06-01T10:00:00Z",
            "closed_at": if state == "closed" { json!("2025-06-01T10:00:00Z") } else { Value::Null },
            "due_date": null, "pull_request": null,
            "repository": { "id": 1, "name": "api", "owner": "acme", "full_name": "acme/api" },
            "pin_order": 0
        })
    }

    fn list_query() -> [(&'static str, &'static str); 4] {
        [
            ("labels", LABEL),
            ("state", "all"),
            ("type", "issues"),
            ("limit", "50"),
        ]
    }

    #[tokio::test]
    async fn find_ignores_issues_without_the_label() {
        // Gitea drops a filter on a label the repository lacks and lists every issue.
        let server = TestServer::start(
            ForgeKind::Gitea,
            PREFIX,
            vec![
                Expect::get("/api/v1/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(
                        200,
                        json!([
                            item(2, "open", vec![label(1, "bug")]),
                            item(1, "open", vec![])
                        ]),
                    ),
                Expect::get("/api/v1/repos/acme/api/issues")
                    .query(&list_query())
                    .answer(
                        200,
                        json!([
                            item(5, "closed", vec![label(3, LABEL)]),
                            item(4, "open", vec![label(3, LABEL)])
                        ]),
                    ),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::Gitea);
        assert_eq!(
            forge.find_issue("acme/api", LABEL).await.expect("find"),
            None
        );
        assert_eq!(
            forge.find_issue("acme/api", LABEL).await.expect("find"),
            Some(Issue {
                number: 5,
                url: "http://gitea.local/acme/api/issues/5".into(),
                open: false,
                closed_at: Some("2025-06-01T10:00:00Z".into()),
            })
        );
        server.finish();
    }

    #[tokio::test]
    async fn create_makes_the_missing_label_first() {
        let server = TestServer::start(
            ForgeKind::Gitea,
            PREFIX,
            vec![
                Expect::get("/api/v1/repos/acme/api/labels")
                    .query(&[("page", "1"), ("limit", "50")])
                    .answer(200, json!([label(1, "bug")]))
                    .header("x-total-count", "1"),
                Expect::post(
                    "/api/v1/repos/acme/api/labels",
                    json!({ "name": LABEL, "color": "#d93f0b", "description": "auto-agent incident key: one issue per incident" }),
                )
                .answer(201, label(2, LABEL)),
                Expect::post(
                    "/api/v1/repos/acme/api/issues",
                    json!({ "title": "CrashLoopBackOff in prod/api", "body": "**Pod** crashed", "labels": [2] }),
                )
                .answer(201, item(6, "open", vec![label(2, LABEL)])),
            ],
        )
        .await;
        let issue = server
            .forge(ForgeKind::Gitea)
            .create_issue(
                "acme/api",
                "CrashLoopBackOff in prod/api",
                "**Pod** crashed",
                LABEL,
            )
            .await
            .expect("create");
        assert_eq!((issue.number, issue.open), (6, true));
        server.finish();
    }

    #[tokio::test]
    async fn create_reuses_a_label_found_on_a_later_page() {
        let first: Vec<Value> = (1..=50)
            .map(|id| label(id, &format!("team-{id}")))
            .collect();
        let server = TestServer::start(
            ForgeKind::Gitea,
            PREFIX,
            vec![
                Expect::get("/api/v1/repos/acme/api/labels")
                    .query(&[("page", "1"), ("limit", "50")])
                    .answer(200, json!(first))
                    .header("x-total-count", "51"),
                Expect::get("/api/v1/repos/acme/api/labels")
                    .query(&[("page", "2"), ("limit", "50")])
                    .answer(200, json!([label(51, LABEL)]))
                    .header("x-total-count", "51"),
                Expect::post(
                    "/api/v1/repos/acme/api/issues",
                    json!({ "title": "t", "body": "b", "labels": [51] }),
                )
                .answer(201, item(7, "open", vec![label(51, LABEL)])),
            ],
        )
        .await;
        let issue = server
            .forge(ForgeKind::Gitea)
            .create_issue("acme/api", "t", "b", LABEL)
            .await
            .expect("create");
        assert_eq!(issue.number, 7);
        server.finish();
    }

    #[tokio::test]
    async fn comments_closes_and_reopens_with_201_answers() {
        let server = TestServer::start(
            ForgeKind::Gitea,
            PREFIX,
            vec![
                Expect::post("/api/v1/repos/acme/api/issues/6/comments", json!({ "body": "Happened again" }))
                    .answer(201, json!({ "id": 4, "body": "Happened again", "html_url": "http://gitea.local/acme/api/issues/6#issuecomment-4" })),
                Expect::patch("/api/v1/repos/acme/api/issues/6", json!({ "state": "closed" }))
                    .answer(201, item(6, "closed", vec![label(2, LABEL)])),
                Expect::patch("/api/v1/repos/acme/api/issues/6", json!({ "state": "open" }))
                    .answer(201, item(6, "open", vec![label(2, LABEL)])),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::Gitea);
        forge
            .comment("acme/api", 6, "Happened again")
            .await
            .expect("comment");
        forge.set_open("acme/api", 6, false).await.expect("close");
        forge.set_open("acme/api", 6, true).await.expect("reopen");
        server.finish();
    }
}
