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
