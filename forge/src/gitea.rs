//! Gitea's REST API v1 (`/api/v1`). Close to GitHub's, with differences that matter here:
//! - an issue list filtered by a label the repository does not have ignores the filter and
//!   lists every issue, so items are checked for the label;
//! - `POST /issues` takes label ids, so the label is found by name (or created) first;
//! - `PATCH` of an issue answers 201.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::error::ForgeError;
use crate::github::{RepoIssue, newest};
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

fn repo_path<'a>(project: &Project<'a>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["repos"];
    path.extend(&project.segments);
    path.extend(rest);
    path
}

fn what_repo(project: &Project<'_>) -> String {
    format!("repository {}", project.display)
}

fn what_issue(project: &Project<'_>, number: u64) -> String {
    format!("issue #{number} in {}", project.display)
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
async fn label_id(http: &Http, project: &Project<'_>, label: &str) -> Result<u64, ForgeError> {
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

/// `POST /repos/{o}/{r}/issues/{n}/comments {body}` (201).
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
