//! Each forge's pull-request flow as its documentation shows it: the exact requests, in order,
//! answered with the documented shapes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::test_server::{Expect, TestServer};
use crate::{ForgeKind, PullRequest, PullState};

const BRANCH: &str = "auto-agent/3f2a9c0d1e2f3a4b";
const LABEL: &str = "auto-agent:3f2a9c0d1e2f3a4b";
const VALUES: &str = "resources:\n  limits:\n    memory: 256Mi # see OPS-12\n";
const EDITED: &str = "resources:\n  limits:\n    memory: 384Mi # see OPS-12\n";

/// Base64 wrapped at 60 characters, as GitHub sends file contents.
fn wrapped(text: &str) -> String {
    let b64 = STANDARD.encode(text);
    b64.as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn github_branch_file_and_pull_request() {
    let server = TestServer::start(
        ForgeKind::GitHub,
        "/api/v3",
        vec![
            Expect::get(&format!("/api/v3/repos/acme/deploy/git/ref/heads/{BRANCH}"))
                .answer(404, json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
            Expect::get("/api/v3/repos/acme/deploy/git/ref/heads/main").answer(
                200,
                json!({"ref": "refs/heads/main", "object": {"sha": "aa11", "type": "commit"}}),
            ),
            Expect::post(
                "/api/v3/repos/acme/deploy/git/refs",
                json!({"ref": format!("refs/heads/{BRANCH}"), "sha": "aa11"}),
            )
            .answer(201, json!({"ref": format!("refs/heads/{BRANCH}"), "object": {"sha": "aa11"}})),
            Expect::get("/api/v3/repos/acme/deploy/contents/charts/api/values.yaml")
                .query(&[("ref", BRANCH)])
                .answer(
                    200,
                    json!({"type": "file", "encoding": "base64", "content": wrapped(VALUES), "sha": "blob1", "path": "charts/api/values.yaml"}),
                ),
            Expect::put(
                "/api/v3/repos/acme/deploy/contents/charts/api/values.yaml",
                json!({"message": "memory 256Mi -> 384Mi", "content": STANDARD.encode(EDITED), "sha": "blob1", "branch": BRANCH}),
            )
            .answer(200, json!({"content": {"sha": "blob2"}, "commit": {"sha": "bb22"}})),
            Expect::get("/api/v3/repos/acme/deploy/pulls")
                .query(&[
                    ("head", &format!("acme:{BRANCH}")),
                    ("base", "main"),
                    ("state", "all"),
                    ("per_page", "100"),
                ])
                .answer(200, json!([])),
            Expect::post(
                "/api/v3/repos/acme/deploy/pulls",
                json!({"title": "OOMKilled: raise api's memory", "head": BRANCH, "base": "main", "body": "diff", "maintainer_can_modify": false}),
            )
            .answer(
                201,
                json!({"number": 7, "html_url": "https://github.com/acme/deploy/pull/7", "state": "open", "merged_at": null, "head": {"ref": BRANCH}, "base": {"ref": "main"}}),
            ),
            Expect::post(
                "/api/v3/repos/acme/deploy/issues/7/labels",
                json!({"labels": [LABEL]}),
            )
            .answer(200, json!([{"id": 1, "name": LABEL}])),
            Expect::post(
                "/api/v3/repos/acme/deploy/issues/7/comments",
                json!({"body": "again"}),
            )
            .answer(201, json!({"id": 1})),
            Expect::patch("/api/v3/repos/acme/deploy/pulls/7", json!({"body": "diff 2"}))
                .answer(200, json!({"number": 7})),
            Expect::get("/api/v3/repos/acme/deploy/pulls")
                .query(&[
                    ("head", &format!("acme:{BRANCH}")),
                    ("base", "main"),
                    ("state", "all"),
                    ("per_page", "100"),
                ])
                .answer(
                    200,
                    json!([{"number": 7, "html_url": "https://github.com/acme/deploy/pull/7", "state": "closed", "merged_at": "2026-01-02T03:04:05Z"}]),
                ),
            Expect::patch("/api/v3/repos/acme/deploy/pulls/7", json!({"state": "closed"}))
                .answer(200, json!({"number": 7})),
        ],
    )
    .await;
    let forge = server.forge(ForgeKind::GitHub);
    let p = "acme/deploy";
    assert_eq!(forge.branch_head(p, BRANCH).await.unwrap(), None);
    forge.create_branch(p, BRANCH, "main").await.unwrap();
    let file = forge
        .read_file(p, "charts/api/values.yaml", BRANCH)
        .await
        .unwrap();
    assert_eq!(file.content, VALUES);
    assert_eq!(file.version, "blob1");
    forge
        .write_file(
            p,
            "charts/api/values.yaml",
            BRANCH,
            EDITED,
            &file.version,
            "memory 256Mi -> 384Mi",
        )
        .await
        .unwrap();
    assert_eq!(forge.find_pull(p, BRANCH, "main").await.unwrap(), None);
    let pull = forge
        .open_pull(
            p,
            BRANCH,
            "main",
            "OOMKilled: raise api's memory",
            "diff",
            LABEL,
        )
        .await
        .unwrap();
    assert_eq!(
        pull,
        PullRequest {
            number: 7,
            url: "https://github.com/acme/deploy/pull/7".into(),
            state: PullState::Open
        }
    );
    forge.comment_pull(p, 7, "again").await.unwrap();
    forge.describe_pull(p, 7, "diff 2").await.unwrap();
    let found = forge.find_pull(p, BRANCH, "main").await.unwrap().unwrap();
    assert_eq!(found.state, PullState::Merged);
    forge.close_pull(p, 7).await.unwrap();
    server.finish();
}

#[tokio::test]
async fn gitlab_branch_file_and_merge_request() {
    let project = "/api/v4/projects/platform%2Fdeploy";
    let server = TestServer::start(
        ForgeKind::GitLab,
        "/api/v4",
        vec![
            Expect::get(&format!(
                "{project}/repository/branches/auto-agent%2F3f2a9c0d1e2f3a4b"
            ))
            .answer(404, json!({"message": "404 Branch Not Found"})),
            Expect::post(
                &format!("{project}/repository/branches"),
                json!({"branch": BRANCH, "ref": "main"}),
            )
            .answer(201, json!({"name": BRANCH, "commit": {"id": "aa11"}})),
            Expect::get(&format!("{project}/repository/files/kustomize%2Fpatch.yaml"))
                .query(&[("ref", BRANCH)])
                .answer(
                    200,
                    json!({"file_name": "patch.yaml", "file_path": "kustomize/patch.yaml", "encoding": "base64", "content": STANDARD.encode(VALUES), "blob_id": "b1", "last_commit_id": "aa11", "ref": BRANCH}),
                ),
            Expect::put(
                &format!("{project}/repository/files/kustomize%2Fpatch.yaml"),
                json!({"file_path": "kustomize/patch.yaml", "branch": BRANCH, "content": STANDARD.encode(EDITED), "encoding": "base64", "commit_message": "m", "last_commit_id": "aa11"}),
            )
            .answer(200, json!({"file_path": "kustomize/patch.yaml", "branch": BRANCH})),
            Expect::get(&format!("{project}/merge_requests"))
                .query(&[
                    ("source_branch", BRANCH),
                    ("target_branch", "main"),
                    ("state", "all"),
                    ("per_page", "100"),
                ])
                .answer(
                    200,
                    json!([
                        {"iid": 3, "web_url": "https://gitlab.com/platform/deploy/-/merge_requests/3", "state": "closed"},
                        {"iid": 9, "web_url": "https://gitlab.com/platform/deploy/-/merge_requests/9", "state": "opened"}
                    ]),
                ),
            Expect::post(
                &format!("{project}/merge_requests"),
                json!({"source_branch": BRANCH, "target_branch": "main", "title": "t", "description": "d", "labels": LABEL, "remove_source_branch": true}),
            )
            .answer(
                201,
                json!({"iid": 10, "web_url": "https://gitlab.com/platform/deploy/-/merge_requests/10", "state": "opened"}),
            ),
            Expect::post(
                &format!("{project}/merge_requests/10/notes"),
                json!({"body": "again"}),
            )
            .answer(201, json!({"id": 1})),
            Expect::put(
                &format!("{project}/merge_requests/10"),
                json!({"description": "d2"}),
            )
            .answer(200, json!({"iid": 10})),
            Expect::put(
                &format!("{project}/merge_requests/10"),
                json!({"state_event": "close"}),
            )
            .answer(200, json!({"iid": 10})),
        ],
    )
    .await;
    let forge = server.forge(ForgeKind::GitLab);
    let p = "platform/deploy";
    assert_eq!(forge.branch_head(p, BRANCH).await.unwrap(), None);
    forge.create_branch(p, BRANCH, "main").await.unwrap();
    let file = forge
        .read_file(p, "kustomize/patch.yaml", BRANCH)
        .await
        .unwrap();
    assert_eq!(
        (file.content.as_str(), file.version.as_str()),
        (VALUES, "aa11")
    );
    forge
        .write_file(p, "kustomize/patch.yaml", BRANCH, EDITED, "aa11", "m")
        .await
        .unwrap();
    let found = forge.find_pull(p, BRANCH, "main").await.unwrap().unwrap();
    assert_eq!((found.number, found.state), (9, PullState::Open));
    let opened = forge
        .open_pull(p, BRANCH, "main", "t", "d", LABEL)
        .await
        .unwrap();
    assert_eq!(opened.number, 10);
    forge.comment_pull(p, 10, "again").await.unwrap();
    forge.describe_pull(p, 10, "d2").await.unwrap();
    forge.close_pull(p, 10).await.unwrap();
    server.finish();
}

#[tokio::test]
async fn gitea_matches_pulls_by_head_branch_and_labels_by_id() {
    let pull = |n: u64, head: &str, state: &str, merged: bool| json!({"number": n, "html_url": format!("http://gitea.local/acme/deploy/pulls/{n}"), "state": state, "merged": merged, "head": {"ref": head}, "base": {"ref": "main"}});
    let server =
        TestServer::start(
            ForgeKind::Gitea,
            "/api/v1",
            vec![
            Expect::get("/api/v1/repos/acme/deploy/branches/auto-agent%2F3f2a9c0d1e2f3a4b")
            .answer(200, json!({"name": BRANCH, "commit": {"id": "cc33"}})),
            Expect::get("/api/v1/repos/acme/deploy/pulls")
                .query(&[("state", "all"), ("sort", "newest"), ("page", "1"), ("limit", "50")])
                .answer(200, json!([pull(5, "feature", "open", false)])),
            Expect::get("/api/v1/repos/acme/deploy/pulls")
                .query(&[("state", "all"), ("sort", "newest"), ("page", "2"), ("limit", "50")])
                .answer(200, json!([pull(2, BRANCH, "closed", false)])),
            Expect::get("/api/v1/repos/acme/deploy/labels")
                .query(&[("page", "1"), ("limit", "50")])
                .answer(200, json!([{"id": 4, "name": LABEL}]))
                .header("x-total-count", "1"),
            Expect::post(
                "/api/v1/repos/acme/deploy/pulls",
                json!({"title": "t", "head": BRANCH, "base": "main", "body": "d", "labels": [4]}),
            )
            .answer(201, pull(6, BRANCH, "open", false)),
            Expect::post(
                "/api/v1/repos/acme/deploy/branches",
                json!({"new_branch_name": "other", "old_branch_name": "main"}),
            )
            .answer(409, json!({"message": "The branch already exists.", "url": ""})),
        ],
        )
        .await;
    let forge = server.forge(ForgeKind::Gitea);
    let p = "acme/deploy";
    assert_eq!(
        forge.branch_head(p, BRANCH).await.unwrap().as_deref(),
        Some("cc33")
    );
    let found = forge.find_pull(p, BRANCH, "main").await.unwrap().unwrap();
    assert_eq!((found.number, found.state), (2, PullState::Closed));
    let opened = forge
        .open_pull(p, BRANCH, "main", "t", "d", LABEL)
        .await
        .unwrap();
    assert_eq!((opened.number, opened.state), (6, PullState::Open));
    let err = forge.create_branch(p, "other", "main").await.unwrap_err();
    assert_eq!(err.category(), "rejected", "{err}");
    server.finish();
}

#[tokio::test]
async fn bad_branches_and_paths_are_refused_before_any_request() {
    let server = TestServer::start(ForgeKind::GitHub, "/api/v3", vec![]).await;
    let forge = server.forge(ForgeKind::GitHub);
    for branch in [
        "", "-x", "a..b", "a b", "x.lock", "a//b", "a@{1}", "/a", "a/",
    ] {
        let err = forge.branch_head("acme/deploy", branch).await.unwrap_err();
        assert_eq!(err.category(), "config", "{branch:?}");
    }
    for path in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\nb"] {
        let err = forge
            .read_file("acme/deploy", path, "main")
            .await
            .unwrap_err();
        assert_eq!(err.category(), "config", "{path:?}");
    }
    server.finish();
}

#[tokio::test]
async fn a_directory_or_binary_file_is_not_edited() {
    let server = TestServer::start(
        ForgeKind::Gitea,
        "/api/v1",
        vec![
            Expect::get("/api/v1/repos/acme/deploy/contents/charts")
                .query(&[("ref", "main")])
                .answer(200, json!({"type": "dir", "sha": "d1", "content": null})),
            Expect::get("/api/v1/repos/acme/deploy/contents/logo.png")
                .query(&[("ref", "main")])
                .answer(
                    200,
                    json!({"type": "file", "sha": "p1", "encoding": "base64", "content": STANDARD.encode([0xff, 0xfe, 0x00])}),
                ),
        ],
    )
    .await;
    let forge = server.forge(ForgeKind::Gitea);
    let err = forge
        .read_file("acme/deploy", "charts", "main")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a file"), "{err}");
    let err = forge
        .read_file("acme/deploy", "logo.png", "main")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    server.finish();
}
