//! Which value of which file a change goes to: the documented mapping from a workload and its
//! container to a key path (docs/GITOPS.md).
//!
//! | File | Memory limit / request | Image | Replicas |
//! |---|---|---|---|
//! | Helm values | `resources.limits.memory` / `resources.requests.memory` (one container only) | `image.repository` (+ `image.tag` unchanged) | `replicaCount` |
//! | Manifests, kustomize patches | the workload's document, `<pod spec>.containers[name=<c>].resources.limits.memory` | `<pod spec>.containers[name=<c>].image` | `spec.replicas` |
//! | kustomization.yaml | (a patch file) | `images[name=<old repository>].newName` | `replicas[name=<workload>].count` |
//!
//! A policy's `gitOps.valuePaths` replaces the default, with `{container}` and `{workload}`
//! standing for the names (`{container}.resources.limits.memory` for a chart with one block per
//! container). What the mapping cannot name unambiguously is refused with the setting to add.

use crate::edit::Document;
use crate::path::{KeyPath, PathError, Step};

/// How the file the workload comes from is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A Helm chart's values file.
    HelmValues,
    /// Plain manifests or kustomize strategic-merge patches: the workload's own document.
    Manifest,
    /// A `kustomization.yaml` (its `images` and `replicas` transformers).
    Kustomization,
}

impl FileKind {
    /// The kind a file's name and content suggest: `kustomization.yaml`, a file with `kind:` and
    /// `apiVersion:` at the top level, or else Helm values.
    pub fn guess(file: &str, content: &str) -> Self {
        let name = file.rsplit('/').next().unwrap_or(file);
        if matches!(
            name,
            "kustomization.yaml" | "kustomization.yml" | "Kustomization"
        ) {
            return Self::Kustomization;
        }
        let top = |key: &str| content.lines().any(|l| l.starts_with(key));
        if top("apiVersion:") && top("kind:") {
            Self::Manifest
        } else {
            Self::HelmValues
        }
    }
}

/// What the agent would change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    MemoryLimit {
        container: String,
    },
    MemoryRequest {
        container: String,
    },
    /// The image of a container; `from` is the reference the cluster runs.
    Image {
        container: String,
        from: String,
    },
    Replicas,
}

/// The workload the change is for, as the API server has it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    /// Its pod template's container names.
    pub containers: Vec<String>,
}

/// A policy's `gitOps.valuePaths`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValuePaths {
    pub memory_limit: Option<String>,
    pub memory_request: Option<String>,
    pub image: Option<String>,
    pub replicas: Option<String>,
}

/// Where the value is, and how the new value is written there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub document: Document,
    pub path: KeyPath,
    /// For images: whether the key holds the repository only (`image.repository`, a
    /// kustomization's `newName`) rather than the whole reference.
    pub repository_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{workload} has {count} containers: set gitOps.valuePaths.{setting} (e.g. `{example}`)"
    )]
    WhichContainer {
        workload: String,
        count: usize,
        setting: &'static str,
        example: &'static str,
    },
    #[error(
        "{what} is not kept in a kustomization.yaml: point gitOps.valuesFile at the patch that sets it"
    )]
    NotInKustomization { what: &'static str },
    #[error("{kind} has no pod template this mapping knows: set gitOps.valuePaths.{setting}")]
    UnknownKind { kind: String, setting: &'static str },
    #[error("gitOps.valuePaths.{setting}: {source}")]
    BadPath {
        setting: &'static str,
        source: PathError,
    },
}

/// The target of `change` on `workload` in a file of `kind`.
pub fn target(
    kind: FileKind,
    workload: &Workload,
    change: &Change,
    paths: &ValuePaths,
) -> Result<Target, TargetError> {
    let (setting, custom) = match change {
        Change::MemoryLimit { .. } => ("memoryLimit", &paths.memory_limit),
        Change::MemoryRequest { .. } => ("memoryRequest", &paths.memory_request),
        Change::Image { .. } => ("image", &paths.image),
        Change::Replicas => ("replicas", &paths.replicas),
    };
    let container = match change {
        Change::MemoryLimit { container }
        | Change::MemoryRequest { container }
        | Change::Image { container, .. } => Some(container.as_str()),
        Change::Replicas => None,
    };
    let document = match kind {
        FileKind::Manifest => Document::Resource {
            kind: workload.kind.clone(),
            name: workload.name.clone(),
        },
        FileKind::HelmValues | FileKind::Kustomization => Document::Only,
    };
    if let Some(template) = custom {
        let text = template
            .replace("{container}", container.unwrap_or_default())
            .replace("{workload}", &workload.name);
        let path = text
            .parse()
            .map_err(|source| TargetError::BadPath { setting, source })?;
        let repository_only = matches!(change, Change::Image { .. })
            && path_ends_with(&path, &["repository", "newName"]);
        return Ok(Target {
            document,
            path,
            repository_only,
        });
    }
    let key = |k: &str| Step::Key(k.to_owned());
    let (steps, repository_only) = match kind {
        FileKind::HelmValues => {
            if container.is_some() && workload.containers.len() > 1 {
                return Err(TargetError::WhichContainer {
                    workload: format!("{} {}", workload.kind, workload.name),
                    count: workload.containers.len(),
                    setting,
                    example: match change {
                        Change::Image { .. } => "{container}.image.repository",
                        Change::MemoryRequest { .. } => "{container}.resources.requests.memory",
                        _ => "{container}.resources.limits.memory",
                    },
                });
            }
            match change {
                Change::MemoryLimit { .. } => {
                    (vec![key("resources"), key("limits"), key("memory")], false)
                }
                Change::MemoryRequest { .. } => (
                    vec![key("resources"), key("requests"), key("memory")],
                    false,
                ),
                Change::Image { .. } => (vec![key("image"), key("repository")], true),
                Change::Replicas => (vec![key("replicaCount")], false),
            }
        }
        FileKind::Manifest => {
            let mut steps: Vec<Step> = pod_spec(&workload.kind)
                .ok_or_else(|| TargetError::UnknownKind {
                    kind: workload.kind.clone(),
                    setting,
                })?
                .iter()
                .map(|k| key(k))
                .collect();
            let item = |c: &str| Step::Item {
                key: "name".into(),
                equals: c.to_owned(),
            };
            match change {
                Change::MemoryLimit { container } => {
                    steps.extend([
                        key("containers"),
                        item(container),
                        key("resources"),
                        key("limits"),
                        key("memory"),
                    ]);
                }
                Change::MemoryRequest { container } => {
                    steps.extend([
                        key("containers"),
                        item(container),
                        key("resources"),
                        key("requests"),
                        key("memory"),
                    ]);
                }
                Change::Image { container, .. } => {
                    steps.extend([key("containers"), item(container), key("image")]);
                }
                Change::Replicas => steps = vec![key("spec"), key("replicas")],
            }
            (steps, false)
        }
        FileKind::Kustomization => match change {
            Change::Image { from, .. } => (
                vec![
                    key("images"),
                    Step::Item {
                        key: "name".into(),
                        equals: repository(from).to_owned(),
                    },
                    key("newName"),
                ],
                true,
            ),
            Change::Replicas => (
                vec![
                    key("replicas"),
                    Step::Item {
                        key: "name".into(),
                        equals: workload.name.clone(),
                    },
                    key("count"),
                ],
                false,
            ),
            Change::MemoryLimit { .. } | Change::MemoryRequest { .. } => {
                return Err(TargetError::NotInKustomization { what: "memory" });
            }
        },
    };
    Ok(Target {
        document,
        path: KeyPath(steps),
        repository_only,
    })
}

fn path_ends_with(path: &KeyPath, keys: &[&str]) -> bool {
    matches!(path.steps().last(), Some(Step::Key(k)) if keys.contains(&k.as_str()))
}

/// The keys from a workload's root to its pod spec.
fn pod_spec(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// The repository of an image reference: without its tag and digest
/// (`registry:5000/acme/api:1.4@sha256:..` -> `registry:5000/acme/api`).
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(kind: &str, containers: &[&str]) -> Workload {
        Workload {
            kind: kind.into(),
            name: "api".into(),
            containers: containers.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn limit(c: &str) -> Change {
        Change::MemoryLimit {
            container: c.into(),
        }
    }

    #[test]
    fn table_of_files_workloads_and_changes() {
        let image = Change::Image {
            container: "app".into(),
            from: "docker.io/acme/api:1.4.2".into(),
        };
        let none = ValuePaths::default();
        let custom = ValuePaths {
            memory_limit: Some("{container}.resources.limits.memory".into()),
            image: Some("apps.{workload}.image.repository".into()),
            ..ValuePaths::default()
        };
        let cases: Vec<(FileKind, Workload, Change, &ValuePaths, &str, bool)> = vec![
            (
                FileKind::HelmValues,
                workload("Deployment", &["app"]),
                limit("app"),
                &none,
                "resources.limits.memory",
                false,
            ),
            (
                FileKind::HelmValues,
                workload("Deployment", &["app"]),
                Change::MemoryRequest {
                    container: "app".into(),
                },
                &none,
                "resources.requests.memory",
                false,
            ),
            (
                FileKind::HelmValues,
                workload("Deployment", &["app"]),
                image.clone(),
                &none,
                "image.repository",
                true,
            ),
            (
                FileKind::HelmValues,
                workload("Deployment", &["app"]),
                Change::Replicas,
                &none,
                "replicaCount",
                false,
            ),
            (
                FileKind::HelmValues,
                workload("Deployment", &["app", "sidecar"]),
                limit("sidecar"),
                &custom,
                "sidecar.resources.limits.memory",
                false,
            ),
            (
                FileKind::HelmValues,
                workload("Deployment", &["app"]),
                image.clone(),
                &custom,
                "apps.api.image.repository",
                true,
            ),
            (
                FileKind::Manifest,
                workload("Deployment", &["app", "log"]),
                limit("app"),
                &none,
                "spec.template.spec.containers[name=app].resources.limits.memory",
                false,
            ),
            (
                FileKind::Manifest,
                workload("CronJob", &["app"]),
                image.clone(),
                &none,
                "spec.jobTemplate.spec.template.spec.containers[name=app].image",
                false,
            ),
            (
                FileKind::Manifest,
                workload("StatefulSet", &["app"]),
                Change::Replicas,
                &none,
                "spec.replicas",
                false,
            ),
            (
                FileKind::Kustomization,
                workload("Deployment", &["app"]),
                image.clone(),
                &none,
                "images[name=docker.io/acme/api].newName",
                true,
            ),
            (
                FileKind::Kustomization,
                workload("Deployment", &["app"]),
                Change::Replicas,
                &none,
                "replicas[name=api].count",
                false,
            ),
        ];
        for (kind, w, change, paths, want, repo_only) in cases {
            let t = target(kind, &w, &change, paths).unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(t.path.to_string(), want);
            assert_eq!(t.repository_only, repo_only, "{want}");
            let doc_is_resource = matches!(t.document, Document::Resource { .. });
            assert_eq!(doc_is_resource, kind == FileKind::Manifest, "{want}");
        }
    }

    #[test]
    fn what_the_mapping_cannot_name_says_what_to_set() {
        let none = ValuePaths::default();
        let e = target(
            FileKind::HelmValues,
            &workload("Deployment", &["app", "log"]),
            &limit("app"),
            &none,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("gitOps.valuePaths.memoryLimit"),
            "{e}"
        );
        let e = target(
            FileKind::Kustomization,
            &workload("Deployment", &["app"]),
            &limit("app"),
            &none,
        )
        .unwrap_err();
        assert!(matches!(e, TargetError::NotInKustomization { .. }));
        let e = target(
            FileKind::Manifest,
            &workload("Rollout", &["app"]),
            &limit("app"),
            &none,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Rollout"), "{e}");
        let bad = ValuePaths {
            replicas: Some("a..b".into()),
            ..ValuePaths::default()
        };
        let e = target(
            FileKind::HelmValues,
            &workload("Deployment", &["app"]),
            &Change::Replicas,
            &bad,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("gitOps.valuePaths.replicas"),
            "{e}"
        );
    }

    #[test]
    fn repositories_drop_tags_and_digests_but_keep_ports() {
        for (image, repo) in [
            ("nginx", "nginx"),
            ("nginx:1.27", "nginx"),
            ("docker.io/acme/api:1.4.2", "docker.io/acme/api"),
            ("registry:5000/acme/api", "registry:5000/acme/api"),
            (
                "registry:5000/acme/api:1.4@sha256:abc",
                "registry:5000/acme/api",
            ),
            ("acme/api@sha256:abc", "acme/api"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn file_kinds_are_guessed_from_name_and_content() {
        assert_eq!(
            FileKind::guess("overlays/prod/kustomization.yaml", ""),
            FileKind::Kustomization
        );
        assert_eq!(
            FileKind::guess("deploy/api.yaml", "apiVersion: apps/v1\nkind: Deployment\n"),
            FileKind::Manifest
        );
        assert_eq!(
            FileKind::guess("charts/api/values.yaml", "replicaCount: 1\n"),
            FileKind::HelmValues
        );
    }
}
