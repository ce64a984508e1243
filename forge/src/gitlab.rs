//! GitLab's REST API v4. A project is its numeric id or its full path, sent as one URL-encoded
//! segment (`group%2Fsub%2Fname`); issues are addressed by `iid`, their number in the project.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::error::ForgeError;
use crate::http::Http;
use crate::issues::{Created, Issue, LabelRef, Project, carries};

#[derive(Debug, Deserialize)]
struct ProjectIssue {
    iid: u64,
    web_url: String,
    /// `opened` or `closed`.
    state: String,
    #[serde(default)]
    closed_at: Option<String>,
    #[serde(default)]
    labels: Vec<LabelRef>,
}

impl ProjectIssue {
    fn into_issue(self) -> Issue {
        Issue {
            number: self.iid,
            url: self.web_url,
            open: self.state != "closed",
            closed_at: self.closed_at,
        }
    }
}

fn project_path<'a>(project: &Project<'a>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["projects"];
    path.extend(&project.segments);
    path.extend(rest);
    path
}

fn what_project(project: &Project<'_>) -> String {
    format!("project {}", project.display)
}

fn what_issue(project: &Project<'_>, iid: u64) -> String {
    format!("issue #{iid} in {}", project.display)
}

/// `GET /projects/:id/issues?labels=..&state=all`, newest first by default.
pub(crate) async fn find_issue(
    http: &Http,
    project: &Project<'_>,
    label: &str,
) -> Result<Option<Issue>, ForgeError> {
    let url = http.url(
        &project_path(project, &["issues"]),
        &[("labels", label), ("state", "all"), ("per_page", "100")],
    );
    let items: Vec<ProjectIssue> = http
        .json(Method::GET, url, None, &what_project(project))
        .await?;
    Ok(items
        .into_iter()
        .filter(|i| carries(&i.labels, label))
        .max_by_key(|i| i.iid)
        .map(ProjectIssue::into_issue))
}

/// `POST /projects/:id/issues {title, description, labels}`: GitLab creates a label it does
/// not have yet ("If a label does not already exist, this creates a new project label").
pub(crate) async fn create_issue(
    http: &Http,
    project: &Project<'_>,
    title: &str,
    body: &str,
    label: &str,
) -> Result<Created, ForgeError> {
    let url = http.url(&project_path(project, &["issues"]), &[]);
    let request = json!({ "title": title, "description": body, "labels": label });
    let created: ProjectIssue = http
        .json(Method::POST, url, Some(&request), &what_project(project))
        .await?;
    let labelled = carries(&created.labels, label);
    Ok(Created {
        issue: created.into_issue(),
        labelled,
    })
}

/// `POST /projects/:id/issues/:iid/notes {body}`.
pub(crate) async fn comment(
    http: &Http,
    project: &Project<'_>,
    iid: u64,
    body: &str,
) -> Result<(), ForgeError> {
    let n = iid.to_string();
    let url = http.url(&project_path(project, &["issues", &n, "notes"]), &[]);
    http.send(
        Method::POST,
        url,
        Some(&json!({ "body": body })),
        &what_issue(project, iid),
    )
    .await?;
    Ok(())
}

/// `PUT /projects/:id/issues/:iid {state_event: reopen | close}`.
pub(crate) async fn set_open(
    http: &Http,
    project: &Project<'_>,
    iid: u64,
    open: bool,
) -> Result<(), ForgeError> {
    let n = iid.to_string();
    let url = http.url(&project_path(project, &["issues", &n]), &[]);
    let event = if open { "reopen" } else { "close" };
    http.send(
        Method::PUT,
        url,
        Some(&json!({ "state_event": event })),
        &what_issue(project, iid),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::test_server::{Expect, TestServer};
    use crate::{ForgeError, ForgeKind, Issue};

    const LABEL: &str = "auto-agent:3f2a9c";
    const PREFIX: &str = "/api/v4";
    /// `acme/platform/api` as one path segment.
    const ENCODED: &str = "/api/v4/projects/acme%2Fplatform%2Fapi";

    /// An issue as GitLab's issues API returns it.
    fn item(iid: u64, state: &str, labels: &[&str]) -> Value {
        json!({
            "id": 5000 + iid,
            "iid": iid,
            "project_id": 4711,
            "title": "CrashLoopBackOff in prod/api",
            "description": "The agent restarted the pod twice.",
            "state": state,
            "created_at": "2025-06-01T09:00:00.000Z",
            "updated_at": "2025-06-01T10:00:00.000Z",
            "closed_at": if state == "closed" { json!("2025-06-01T10:00:00.000Z") } else { Value::Null },
            "closed_by": null,
            "labels": labels,
            "milestone": null,
            "assignees": [],
            "author": { "id": 1, "username": "auto-agent", "name": "auto-agent", "state": "active" },
            "type": "ISSUE",
            "issue_type": "issue",
            "user_notes_count": 0,
            "confidential": false,
            "web_url": format!("https://gitlab.example.com/acme/platform/api/-/issues/{iid}"),
            "references": { "short": format!("#{iid}"), "relative": format!("#{iid}"), "full": format!("acme/platform/api#{iid}") },
            "_links": { "self": format!("https://gitlab.example.com/api/v4/projects/4711/issues/{iid}") }
        })
    }

    fn list_query() -> [(&'static str, &'static str); 3] {
        [("labels", LABEL), ("state", "all"), ("per_page", "100")]
    }

    #[tokio::test]
    async fn finds_by_encoded_path_or_numeric_id() {
        let server = TestServer::start(
            ForgeKind::GitLab,
            PREFIX,
            vec![
                Expect::get(&format!("{ENCODED}/issues"))
                    .query(&list_query())
                    .answer(
                        200,
                        json!([
                            item(12, "closed", &[LABEL]),
                            item(3, "opened", &[LABEL, "bug"])
                        ]),
                    ),
                Expect::get("/api/v4/projects/4711/issues")
                    .query(&list_query())
                    .answer(200, json!([])),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitLab);
        assert_eq!(
            forge
                .find_issue("acme/platform/api", LABEL)
                .await
                .expect("find"),
            Some(Issue {
                number: 12,
                url: "https://gitlab.example.com/acme/platform/api/-/issues/12".into(),
                open: false,
                closed_at: Some("2025-06-01T10:00:00.000Z".into()),
            })
        );
        assert_eq!(forge.find_issue("4711", LABEL).await.expect("find"), None);
        server.finish();
    }

    #[tokio::test]
    async fn creates_with_the_label_adds_notes_closes_and_reopens() {
        let server = TestServer::start(
            ForgeKind::GitLab,
            PREFIX,
            vec![
                Expect::post(
                    &format!("{ENCODED}/issues"),
                    json!({ "title": "CrashLoopBackOff in prod/api", "description": "**Pod** crashed", "labels": LABEL }),
                )
                .answer(201, item(13, "opened", &[LABEL])),
                Expect::post(&format!("{ENCODED}/issues/13/notes"), json!({ "body": "Happened again" }))
                    .answer(201, json!({ "id": 302, "body": "Happened again", "noteable_type": "Issue", "noteable_iid": 13, "system": false })),
                Expect::put(&format!("{ENCODED}/issues/13"), json!({ "state_event": "close" }))
                    .answer(200, item(13, "closed", &[LABEL])),
                Expect::put(&format!("{ENCODED}/issues/13"), json!({ "state_event": "reopen" }))
                    .answer(200, item(13, "opened", &[LABEL])),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitLab);
        let issue = forge
            .create_issue(
                "acme/platform/api",
                "CrashLoopBackOff in prod/api",
                "**Pod** crashed",
                LABEL,
            )
            .await
            .expect("create");
        assert_eq!((issue.number, issue.open), (13, true));
        forge
            .comment("acme/platform/api", 13, "Happened again")
            .await
            .expect("note");
        forge
            .set_open("acme/platform/api", 13, false)
            .await
            .expect("close");
        forge
            .set_open("acme/platform/api", 13, true)
            .await
            .expect("reopen");
        server.finish();
    }

    #[tokio::test]
    async fn throttling_and_missing_projects_arrive_as_typed_errors() {
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 30;
        let server = TestServer::start(
            ForgeKind::GitLab,
            PREFIX,
            vec![
                Expect::get(&format!("{ENCODED}/issues"))
                    .query(&list_query())
                    .answer_text(429, "Retry later")
                    .header("ratelimit-limit", "600")
                    .header("ratelimit-remaining", "0")
                    .header("ratelimit-reset", &reset.to_string()),
                Expect::get(&format!("{ENCODED}/issues"))
                    .query(&list_query())
                    .answer_text(429, "Retry later"),
                Expect::post(
                    "/api/v4/projects/acme%2Fgone/issues/1/notes",
                    json!({ "body": "x" }),
                )
                .answer(404, json!({ "message": "404 Project Not Found" })),
                Expect::post(
                    &format!("{ENCODED}/issues"),
                    json!({ "title": "t", "description": "b", "labels": LABEL }),
                )
                .answer(
                    400,
                    json!({ "message": { "title": ["is too long (maximum is 255 characters)"] } }),
                ),
            ],
        )
        .await;
        let forge = server.forge(ForgeKind::GitLab);
        let limited = forge
            .find_issue("acme/platform/api", LABEL)
            .await
            .expect_err("429");
        let after = limited.retry_after().expect("a wait").as_secs();
        assert!((20..=30).contains(&after), "{limited:?}");
        let bare = forge
            .find_issue("acme/platform/api", LABEL)
            .await
            .expect_err("429");
        assert!(bare.retryable() && bare.retry_after().is_none(), "{bare:?}");
        let missing = forge.comment("acme/gone", 1, "x").await.expect_err("404");
        assert_eq!(
            missing.to_string(),
            "GitLab: issue #1 in acme/gone not found"
        );
        let rejected = forge
            .create_issue("acme/platform/api", "t", "b", LABEL)
            .await
            .expect_err("400");
        assert!(
            matches!(rejected, ForgeError::Rejected { status: 400, ref reason, .. } if reason.contains("is too long")),
            "{rejected:?}"
        );
        server.finish();
    }
}
