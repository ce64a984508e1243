//! Where a policy's proposals go: its `gitOps` block over the installation's defaults, checked
//! against the repositories the installation allows. The installation's tokens can write to
//! every repository their owner can; a policy author must not be able to push branches anywhere
//! else than where the installation says.

use auto_agent_forge::ForgeKind;
use auto_agent_gitops::target::ValuePaths;
use auto_agent_shared::crd::policy::{GitOps, GitProvider};

/// A repository, base branch and file to propose into.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub provider: Provider,
    pub project: String,
    pub base: String,
    pub file: String,
    pub paths: ValuePaths,
}

/// The forges pull requests go to (serde-friendly mirror of `ForgeKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
}

impl Provider {
    pub fn kind(self) -> ForgeKind {
        match self {
            Self::GitHub => ForgeKind::GitHub,
            Self::GitLab => ForgeKind::GitLab,
            Self::Gitea => ForgeKind::Gitea,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "github" => Some(Self::GitHub),
            "gitlab" => Some(Self::GitLab),
            "gitea" => Some(Self::Gitea),
            _ => None,
        }
    }
}

/// The installation's defaults (the chart's `gitops.*`) and the repositories policies may name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    pub provider: Option<Provider>,
    pub project: Option<String>,
    pub base: String,
    pub file: Option<String>,
    /// `(provider, project)`; project `*` allows every project of that forge. The default
    /// repository is always allowed.
    pub allowed: Vec<(Provider, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "no GitOps repository: set the policy's gitOps.provider, repo and valuesFile (or the chart's gitops.*)"
    )]
    Missing,
    #[error("gitOps.{field} is not set and the installation has no default")]
    Incomplete { field: &'static str },
    #[error(
        "gitOps.provider Git (a plain remote) cannot take pull requests; use GitHub, GitLab or Gitea"
    )]
    PlainGit,
    #[error(
        "the installation does not allow proposals to {provider}:{project} (gitops.allowedRepos)"
    )]
    NotAllowed {
        provider: &'static str,
        project: String,
    },
    #[error("gitops.allowedRepos entry {0:?}: expected provider:project (github, gitlab or gitea)")]
    BadAllowEntry(String),
}

impl Defaults {
    /// `entries` as given to `--gitops-allowed-repos`.
    pub fn parse_allowed(entries: &[String]) -> Result<Vec<(Provider, String)>, RouteError> {
        entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (p, project) = e
                    .split_once(':')
                    .ok_or_else(|| RouteError::BadAllowEntry(e.to_owned()))?;
                let provider =
                    Provider::parse(p).ok_or_else(|| RouteError::BadAllowEntry(e.to_owned()))?;
                // `*` alone allows a forge's every project; no other pattern is understood.
                if project.is_empty() || (project != "*" && project.contains('*')) {
                    return Err(RouteError::BadAllowEntry(e.to_owned()));
                }
                Ok((provider, project.to_owned()))
            })
            .collect()
    }

    fn allows(&self, provider: Provider, project: &str) -> bool {
        let default = self.provider == Some(provider)
            && self
                .project
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(project));
        default
            || self
                .allowed
                .iter()
                .any(|(p, a)| *p == provider && (a == "*" || a.eq_ignore_ascii_case(project)))
    }

    /// The route of a policy's `gitOps` (or of none: the defaults alone).
    pub fn route(&self, policy: Option<&GitOps>) -> Result<Route, RouteError> {
        let provider = match policy.and_then(|g| g.provider) {
            Some(GitProvider::Git) => return Err(RouteError::PlainGit),
            Some(GitProvider::GitHub) => Some(Provider::GitHub),
            Some(GitProvider::GitLab) => Some(Provider::GitLab),
            Some(GitProvider::Gitea) => Some(Provider::Gitea),
            None => self.provider,
        };
        let project = policy
            .and_then(|g| g.repo.clone())
            .or_else(|| self.project.clone());
        let file = policy
            .and_then(|g| g.values_file.clone())
            .or_else(|| self.file.clone());
        if provider.is_none() && project.is_none() && file.is_none() {
            return Err(RouteError::Missing);
        }
        let provider = provider.ok_or(RouteError::Incomplete { field: "provider" })?;
        let project = project.ok_or(RouteError::Incomplete { field: "repo" })?;
        let file = file.ok_or(RouteError::Incomplete {
            field: "valuesFile",
        })?;
        if !self.allows(provider, &project) {
            return Err(RouteError::NotAllowed {
                provider: provider.as_str(),
                project,
            });
        }
        let paths = policy
            .map(|g| ValuePaths {
                memory_limit: g.value_paths.memory_limit.clone(),
                memory_request: g.value_paths.memory_request.clone(),
                image: g.value_paths.image.clone(),
                replicas: g.value_paths.replicas.clone(),
            })
            .unwrap_or_default();
        Ok(Route {
            provider,
            project,
            base: policy
                .and_then(|g| g.branch.clone())
                .unwrap_or_else(|| self.base.clone()),
            file,
            paths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gitops(provider: Option<GitProvider>, repo: Option<&str>, file: Option<&str>) -> GitOps {
        GitOps {
            enabled: true,
            provider,
            repo: repo.map(str::to_owned),
            branch: None,
            values_file: file.map(str::to_owned),
            value_paths: Default::default(),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            provider: Some(Provider::Gitea),
            project: Some("platform/deploy".into()),
            base: "main".into(),
            file: Some("apps/values.yaml".into()),
            allowed: Defaults::parse_allowed(&["github:acme/deploy".into(), "gitlab:*".into()])
                .unwrap(),
        }
    }

    #[test]
    fn table_of_policies_over_defaults() {
        let d = defaults();
        // The defaults alone.
        let r = d.route(None).unwrap();
        assert_eq!(
            (
                r.provider,
                r.project.as_str(),
                r.base.as_str(),
                r.file.as_str()
            ),
            (
                Provider::Gitea,
                "platform/deploy",
                "main",
                "apps/values.yaml"
            )
        );
        // A policy naming an allowed repository and its own file.
        let p = gitops(
            Some(GitProvider::GitHub),
            Some("acme/deploy"),
            Some("api/values.yaml"),
        );
        let r = d.route(Some(&p)).unwrap();
        assert_eq!(
            (r.provider, r.file.as_str()),
            (Provider::GitHub, "api/values.yaml")
        );
        // Any GitLab project is allowed; the file comes from the defaults.
        let p = gitops(Some(GitProvider::GitLab), Some("group/sub/deploy"), None);
        assert_eq!(d.route(Some(&p)).unwrap().file, "apps/values.yaml");
        // Another GitHub repository is not.
        let p = gitops(Some(GitProvider::GitHub), Some("evil/repo"), Some("x.yaml"));
        assert!(matches!(
            d.route(Some(&p)),
            Err(RouteError::NotAllowed { .. })
        ));
        let p = gitops(
            Some(GitProvider::Git),
            Some("https://git.example/x.git"),
            Some("x"),
        );
        assert_eq!(d.route(Some(&p)), Err(RouteError::PlainGit));
        // Nothing configured anywhere.
        assert_eq!(Defaults::default().route(None), Err(RouteError::Missing));
        let p = gitops(None, Some("acme/deploy"), None);
        assert_eq!(
            Defaults::default().route(Some(&p)),
            Err(RouteError::Incomplete { field: "provider" })
        );
        // With an empty allow list, only the default repository.
        let only_default = Defaults {
            allowed: vec![],
            ..defaults()
        };
        assert!(only_default.route(None).is_ok());
        let p = gitops(Some(GitProvider::Gitea), Some("someone/else"), None);
        assert!(matches!(
            only_default.route(Some(&p)),
            Err(RouteError::NotAllowed { .. })
        ));
    }

    #[test]
    fn bad_allow_entries_are_named() {
        for bad in [
            "acme/deploy",
            "bitbucket:acme/x",
            "github:",
            "github:acme/*",
        ] {
            assert_eq!(
                Defaults::parse_allowed(&[bad.into()]),
                Err(RouteError::BadAllowEntry(bad.into()))
            );
        }
    }
}
