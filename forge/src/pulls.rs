//! The provider-neutral pull-request API GitOps uses: a branch per incident key, a file read and
//! written on it (one commit per change, guarded by the version read), and the pull request
//! (GitLab: merge request) found by its head branch, opened, described, commented and closed.
//! The agent never merges.
//!
//! Per forge:
//! - GitHub: refs (`git/ref/heads/..`, `POST git/refs`), contents (`GET`/`PUT contents/{path}`
//!   with the blob sha), pulls listed by `head=owner:branch`, labels added through the issue.
//! - Gitea: branches (`branches/{b}`, `POST branches`), the same contents API as GitHub, pulls
//!   listed and matched by head branch, labels by id on create.
//! - GitLab: `repository/branches`, `repository/files/{path}` (guarded by `last_commit_id`),
//!   merge requests listed by `source_branch`, labels by name on create.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::error::ForgeError;
use crate::github::repo_path;
use crate::issues::{Forge, ForgeKind, Project};

/// A file as read from a branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAt {
    pub content: String,
    /// What a write must name to replace exactly this version: the blob sha (GitHub, Gitea) or
    /// the last commit id (GitLab). A write over a newer version is refused (409/400).
    pub version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// GitHub's and Gitea's number, GitLab's `iid`.
    pub number: u64,
    /// The page a human opens.
    pub url: String,
    pub state: PullState,
}

/// Files larger than this are not edited (values files are kilobytes).
const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Pull-request pages read on Gitea (which cannot filter by head) before giving up.
const MAX_PULL_PAGES: usize = 200;
const GITEA_PAGE: usize = 50;

impl Forge {
    /// The commit a branch points at; `None` when the branch does not exist.
    pub async fn branch_head(
        &self,
        project: &str,
        branch: &str,
    ) -> Result<Option<String>, ForgeError> {
        check_branch(self.kind(), branch)?;
        let project = Project::parse(self.kind(), project)?;
        let http = self.http();
        let found = match self.kind() {
            ForgeKind::GitHub => {
                #[derive(Deserialize)]
                struct Object {
                    sha: String,
                }
                #[derive(Deserialize)]
                struct Ref {
                    object: Object,
                }
                let url = http.url(&refs_path(&project, &["git", "ref", "heads"], branch), &[]);
                http.json::<Ref>(Method::GET, url, None, &what_branch(&project, branch))
                    .await
                    .map(|r| r.object.sha)
            }
            ForgeKind::Gitea | ForgeKind::GitLab => {
                #[derive(Deserialize)]
                struct Commit {
                    id: String,
                }
                #[derive(Deserialize)]
                struct Branch {
                    commit: Commit,
                }
                let url = match self.kind() {
                    ForgeKind::GitLab => http.url(
                        &gitlab_path(&project, &["repository", "branches", branch]),
                        &[],
                    ),
                    _ => http.url(&repo_path(&project, &["branches", branch]), &[]),
                };
                http.json::<Branch>(Method::GET, url, None, &what_branch(&project, branch))
                    .await
                    .map(|b| b.commit.id)
            }
        };
        match found {
            Ok(sha) => Ok(Some(sha)),
            Err(ForgeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `branch` at the head of `from`.
    pub async fn create_branch(
        &self,
        project: &str,
        branch: &str,
        from: &str,
    ) -> Result<(), ForgeError> {
        check_branch(self.kind(), branch)?;
        check_branch(self.kind(), from)?;
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let what = what_branch(&parsed, from);
        match self.kind() {
            ForgeKind::GitHub => {
                let Some(sha) = self.branch_head(project, from).await? else {
                    return Err(ForgeError::NotFound {
                        provider: self.kind().name(),
                        what,
                    });
                };
                let url = http.url(&repo_path(&parsed, &["git", "refs"]), &[]);
                let body = json!({ "ref": format!("refs/heads/{branch}"), "sha": sha });
                http.send(Method::POST, url, Some(&body), &what).await?;
            }
            ForgeKind::Gitea => {
                let url = http.url(&repo_path(&parsed, &["branches"]), &[]);
                let body = json!({ "new_branch_name": branch, "old_branch_name": from });
                http.send(Method::POST, url, Some(&body), &what).await?;
            }
            ForgeKind::GitLab => {
                let url = http.url(&gitlab_path(&parsed, &["repository", "branches"]), &[]);
                let body = json!({ "branch": branch, "ref": from });
                http.send(Method::POST, url, Some(&body), &what).await?;
            }
        }
        Ok(())
    }

    /// The file at `path` on `branch`, decoded as UTF-8.
    pub async fn read_file(
        &self,
        project: &str,
        path: &str,
        branch: &str,
    ) -> Result<FileAt, ForgeError> {
        check_branch(self.kind(), branch)?;
        let segments = file_segments(self.kind(), path)?;
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let what = format!("file {path} on {branch} in {}", parsed.display);
        let (encoded, version) = match self.kind() {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                #[derive(Deserialize)]
                struct Contents {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    content: Option<String>,
                    sha: String,
                }
                let mut p = repo_path(&parsed, &["contents"]);
                p.extend(segments.iter().copied());
                let url = http.url(&p, &[("ref", branch)]);
                // A directory answers with a list, which is not this shape.
                let c: Contents = http.json(Method::GET, url, None, &what).await?;
                if c.kind != "file" {
                    return Err(self.rejected(404, format!("{path} is a {}, not a file", c.kind)));
                }
                (c.content.unwrap_or_default(), c.sha)
            }
            ForgeKind::GitLab => {
                #[derive(Deserialize)]
                struct File {
                    content: String,
                    last_commit_id: String,
                }
                let url = http.url(
                    &gitlab_path(&parsed, &["repository", "files", path]),
                    &[("ref", branch)],
                );
                let f: File = http.json(Method::GET, url, None, &what).await?;
                (f.content, f.last_commit_id)
            }
        };
        // Base64 as the forges send it: wrapped at 60 or 76 characters.
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = STANDARD
            .decode(compact)
            .map_err(|e| http.protocol(format!("{what}: the content is not base64 ({e})")))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(self.rejected(413, format!("{path} is larger than 1 MiB")));
        }
        let content = String::from_utf8(bytes)
            .map_err(|_| self.rejected(415, format!("{path} is not UTF-8 text")))?;
        Ok(FileAt { content, version })
    }

    /// Replaces the file at `path` on `branch` with `content` in one commit, if it is still at
    /// `version` (what [`read_file`](Self::read_file) gave).
    pub async fn write_file(
        &self,
        project: &str,
        path: &str,
        branch: &str,
        content: &str,
        version: &str,
        message: &str,
    ) -> Result<(), ForgeError> {
        check_branch(self.kind(), branch)?;
        let segments = file_segments(self.kind(), path)?;
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let what = format!("file {path} on {branch} in {}", parsed.display);
        let encoded = STANDARD.encode(content.as_bytes());
        match self.kind() {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                let mut p = repo_path(&parsed, &["contents"]);
                p.extend(segments.iter().copied());
                let url = http.url(&p, &[]);
                let body = json!({
                    "message": message,
                    "content": encoded,
                    "sha": version,
                    "branch": branch,
                });
                http.send(Method::PUT, url, Some(&body), &what).await?;
            }
            ForgeKind::GitLab => {
                let url = http.url(&gitlab_path(&parsed, &["repository", "files", path]), &[]);
                // python-gitlab sends the path in the body too; GitLab reads either.
                let body = json!({
                    "file_path": path,
                    "branch": branch,
                    "content": encoded,
                    "encoding": "base64",
                    "commit_message": message,
                    "last_commit_id": version,
                });
                http.send(Method::PUT, url, Some(&body), &what).await?;
            }
        }
        Ok(())
    }

    /// The newest pull request from `head` into `base`, in any state; `None` if there is none.
    pub async fn find_pull(
        &self,
        project: &str,
        head: &str,
        base: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        check_branch(self.kind(), head)?;
        check_branch(self.kind(), base)?;
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let what = format!("pull requests of {}", parsed.display);
        match self.kind() {
            ForgeKind::GitHub => {
                let owner = parsed.segments.first().copied().unwrap_or_default();
                let head = format!("{owner}:{head}");
                let url = http.url(
                    &repo_path(&parsed, &["pulls"]),
                    &[
                        ("head", &head),
                        ("base", base),
                        ("state", "all"),
                        ("per_page", "100"),
                    ],
                );
                let pulls: Vec<RepoPull> = http.json(Method::GET, url, None, &what).await?;
                Ok(pulls
                    .into_iter()
                    .max_by_key(|p| p.number)
                    .map(RepoPull::into_pull))
            }
            ForgeKind::Gitea => {
                let limit = GITEA_PAGE.to_string();
                for page in 1..=MAX_PULL_PAGES {
                    let page = page.to_string();
                    let url = http.url(
                        &repo_path(&parsed, &["pulls"]),
                        &[
                            ("state", "all"),
                            ("sort", "newest"),
                            ("page", &page),
                            ("limit", &limit),
                        ],
                    );
                    let pulls: Vec<RepoPull> = http.json(Method::GET, url, None, &what).await?;
                    let done = pulls.is_empty();
                    if let Some(p) = pulls
                        .into_iter()
                        .filter(|p| p.head.as_ref().is_some_and(|h| h.branch == head))
                        .filter(|p| p.base.as_ref().is_none_or(|b| b.branch == base))
                        .max_by_key(|p| p.number)
                    {
                        return Ok(Some(p.into_pull()));
                    }
                    if done {
                        return Ok(None);
                    }
                }
                Err(http.protocol(format!(
                    "{} has more than {} pull requests; the one from {head} cannot be looked up",
                    parsed.display,
                    MAX_PULL_PAGES * GITEA_PAGE
                )))
            }
            ForgeKind::GitLab => {
                let url = http.url(
                    &gitlab_path(&parsed, &["merge_requests"]),
                    &[
                        ("source_branch", head),
                        ("target_branch", base),
                        ("state", "all"),
                        ("per_page", "100"),
                    ],
                );
                let mrs: Vec<MergeRequest> = http.json(Method::GET, url, None, &what).await?;
                Ok(mrs
                    .into_iter()
                    .max_by_key(|m| m.iid)
                    .map(MergeRequest::into_pull))
            }
        }
    }

    /// Opens a pull request from `head` into `base` carrying `label`.
    pub async fn open_pull(
        &self,
        project: &str,
        head: &str,
        base: &str,
        title: &str,
        body_markdown: &str,
        label: &str,
    ) -> Result<PullRequest, ForgeError> {
        check_branch(self.kind(), head)?;
        check_branch(self.kind(), base)?;
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let what = format!("pull requests of {}", parsed.display);
        let title: String = title.chars().take(255).collect();
        match self.kind() {
            ForgeKind::GitHub => {
                let url = http.url(&repo_path(&parsed, &["pulls"]), &[]);
                let body = json!({ "title": title, "head": head, "base": base, "body": body_markdown, "maintainer_can_modify": false });
                let pull: RepoPull = http.json(Method::POST, url, Some(&body), &what).await?;
                // Pull requests take labels through their issue.
                let n = pull.number.to_string();
                let url = http.url(&repo_path(&parsed, &["issues", &n, "labels"]), &[]);
                http.send(
                    Method::POST,
                    url,
                    Some(&json!({ "labels": [label] })),
                    &what,
                )
                .await?;
                Ok(pull.into_pull())
            }
            ForgeKind::Gitea => {
                let id = crate::gitea::label_id(http, &parsed, label).await?;
                let url = http.url(&repo_path(&parsed, &["pulls"]), &[]);
                let body = json!({ "title": title, "head": head, "base": base, "body": body_markdown, "labels": [id] });
                let pull: RepoPull = http.json(Method::POST, url, Some(&body), &what).await?;
                Ok(pull.into_pull())
            }
            ForgeKind::GitLab => {
                let url = http.url(&gitlab_path(&parsed, &["merge_requests"]), &[]);
                let body = json!({
                    "source_branch": head,
                    "target_branch": base,
                    "title": title,
                    "description": body_markdown,
                    "labels": label,
                    "remove_source_branch": true,
                });
                let mr: MergeRequest = http.json(Method::POST, url, Some(&body), &what).await?;
                Ok(mr.into_pull())
            }
        }
    }

    /// Replaces the description of pull request `number`.
    pub async fn describe_pull(
        &self,
        project: &str,
        number: u64,
        body_markdown: &str,
    ) -> Result<(), ForgeError> {
        self.edit_pull(project, number, EditPull::Body(body_markdown))
            .await
    }

    /// Closes pull request `number` without merging; closing twice is harmless.
    pub async fn close_pull(&self, project: &str, number: u64) -> Result<(), ForgeError> {
        self.edit_pull(project, number, EditPull::Close).await
    }

    /// Adds a comment to pull request `number`.
    pub async fn comment_pull(
        &self,
        project: &str,
        number: u64,
        body_markdown: &str,
    ) -> Result<(), ForgeError> {
        match self.kind() {
            // A pull request's conversation is its issue's.
            ForgeKind::GitHub | ForgeKind::Gitea => {
                self.comment(project, number, body_markdown).await
            }
            ForgeKind::GitLab => {
                let parsed = Project::parse(self.kind(), project)?;
                let http = self.http();
                let n = number.to_string();
                let url = http.url(&gitlab_path(&parsed, &["merge_requests", &n, "notes"]), &[]);
                http.send(
                    Method::POST,
                    url,
                    Some(&json!({ "body": body_markdown })),
                    &what_pull(&parsed, number),
                )
                .await?;
                Ok(())
            }
        }
    }

    async fn edit_pull(
        &self,
        project: &str,
        number: u64,
        edit: EditPull<'_>,
    ) -> Result<(), ForgeError> {
        let parsed = Project::parse(self.kind(), project)?;
        let http = self.http();
        let n = number.to_string();
        let what = what_pull(&parsed, number);
        let (method, url, body) = match self.kind() {
            ForgeKind::GitHub | ForgeKind::Gitea => (
                Method::PATCH,
                http.url(&repo_path(&parsed, &["pulls", &n]), &[]),
                match edit {
                    EditPull::Body(b) => json!({ "body": b }),
                    EditPull::Close => json!({ "state": "closed" }),
                },
            ),
            ForgeKind::GitLab => (
                Method::PUT,
                http.url(&gitlab_path(&parsed, &["merge_requests", &n]), &[]),
                match edit {
                    EditPull::Body(b) => json!({ "description": b }),
                    EditPull::Close => json!({ "state_event": "close" }),
                },
            ),
        };
        http.send(method, url, Some(&body), &what).await?;
        Ok(())
    }

    fn rejected(&self, status: u16, reason: String) -> ForgeError {
        ForgeError::Rejected {
            provider: self.kind().name(),
            status,
            reason,
        }
    }
}

enum EditPull<'a> {
    Body(&'a str),
    Close,
}

/// A pull request in GitHub's shape, which Gitea's copies.
#[derive(Debug, Deserialize)]
struct RepoPull {
    number: u64,
    html_url: String,
    state: String,
    /// GitHub: set once merged.
    #[serde(default)]
    merged_at: Option<String>,
    /// Gitea: true once merged.
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    head: Option<BranchRef>,
    #[serde(default)]
    base: Option<BranchRef>,
}

#[derive(Debug, Deserialize)]
struct BranchRef {
    #[serde(rename = "ref")]
    branch: String,
}

impl RepoPull {
    fn into_pull(self) -> PullRequest {
        let merged = self.merged_at.is_some() || self.merged == Some(true);
        PullRequest {
            number: self.number,
            url: self.html_url,
            state: if merged {
                PullState::Merged
            } else if self.state == "closed" {
                PullState::Closed
            } else {
                PullState::Open
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct MergeRequest {
    iid: u64,
    web_url: String,
    /// `opened`, `closed`, `merged`, `locked`.
    state: String,
}

impl MergeRequest {
    fn into_pull(self) -> PullRequest {
        PullRequest {
            number: self.iid,
            url: self.web_url,
            state: match self.state.as_str() {
                "merged" => PullState::Merged,
                "closed" => PullState::Closed,
                _ => PullState::Open,
            },
        }
    }
}

fn gitlab_path<'a>(project: &Project<'a>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = vec!["projects"];
    path.extend(&project.segments);
    path.extend(rest);
    path
}

/// GitHub's ref paths take the branch's own slashes as path separators.
fn refs_path<'a>(project: &Project<'a>, rest: &[&'a str], branch: &'a str) -> Vec<&'a str> {
    let mut path = repo_path(project, rest);
    path.extend(branch.split('/'));
    path
}

fn what_branch(project: &Project<'_>, branch: &str) -> String {
    format!("branch {branch} in {}", project.display)
}

fn what_pull(project: &Project<'_>, number: u64) -> String {
    format!("pull request #{number} in {}", project.display)
}

/// Branch names as git allows them (`git check-ref-format --branch`), in the subset this
/// client sends.
fn check_branch(kind: ForgeKind, branch: &str) -> Result<(), ForgeError> {
    let ok = !branch.is_empty()
        && branch.len() <= 200
        && !branch.starts_with(['/', '-', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.contains("@{")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ForgeError::Config {
            provider: kind.name(),
            reason: format!(
                "`{}` is not a branch name this client sends",
                branch.escape_debug()
            ),
        })
    }
}

/// A file path inside the repository, as URL segments.
fn file_segments(kind: ForgeKind, path: &str) -> Result<Vec<&str>, ForgeError> {
    let segments: Vec<&str> = path.split('/').collect();
    let ok = !path.is_empty()
        && path.len() <= 1024
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..")
        && !path.chars().any(char::is_control);
    if ok {
        Ok(segments)
    } else {
        Err(ForgeError::Config {
            provider: kind.name(),
            reason: format!("`{}` is not a relative file path", path.escape_debug()),
        })
    }
}

#[cfg(test)]
mod tests;
