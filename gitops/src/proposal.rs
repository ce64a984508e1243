//! What a proposal does to the file on its branch, and what its pull request says.
//!
//! Pure: given the proposal and the file as it stands on the incident's branch, `plan` says
//! whether to commit (and exactly what) or only to note a repeat, and refuses what would be
//! wrong to propose: a memory value below what the file already asks for, or a file whose value
//! is neither the cluster's nor the proposal's (then it is not where this workload comes from).

use std::fmt::Write as _;

use auto_agent_engine::quantity::parse_bytes;
use sha2::{Digest, Sha256};

use crate::edit::{self, EditError, Edited};
use crate::target::{Change, FileKind, TargetError, ValuePaths, Workload, repository, target};

/// A change the agent would make live, for a GitOps-managed workload.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// The incident key: the branch, the label and every text carry it.
    pub incident: String,
    pub namespace: String,
    pub workload: Workload,
    pub change: Change,
    /// The value the cluster runs (a full image reference for images).
    pub from: String,
    /// The value proposed.
    pub to: String,
    /// Why, in a sentence (`OOMKilled 3 times in 10 minutes`).
    pub reason: String,
    /// The evidence bundle's key or URL, when one was saved.
    pub evidence: Option<String>,
    /// The incident summary, when one was written.
    pub summary: Option<String>,
}

/// What to do with the file on the branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Write `edited.text` in one commit with `message`.
    Commit { edited: Edited, message: String },
    /// The branch already asks for this (or more): nothing to commit; note the repeat.
    Unchanged { current: String },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{file}: {source}")]
    Edit { file: String, source: EditError },
    #[error(
        "{file}: {path} is {found:?}, but the cluster runs {live:?}: the file does not look like where this workload comes from"
    )]
    NotTheSource {
        file: String,
        path: String,
        found: String,
        live: String,
    },
    #[error("{file}: {path} is {found:?}, which is not a memory quantity")]
    NotAQuantity {
        file: String,
        path: String,
        found: String,
    },
}

/// The branch of an incident: stable, a valid git ref, whatever the key holds.
pub fn branch(incident: &str) -> String {
    format!("auto-agent/{}", hash16(incident))
}

/// The label on the pull request: the same as the incident's ticket carries.
pub fn label(incident: &str) -> String {
    format!("auto-agent-{}", hash16(incident))
}

fn hash16(incident: &str) -> String {
    Sha256::digest(incident.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What to commit for `proposal` to the file `file` (as it stands on the incident's branch).
pub fn plan(
    file: &str,
    content: &str,
    proposal: &Proposal,
    paths: &ValuePaths,
) -> Result<Plan, PlanError> {
    let kind = FileKind::guess(file, content);
    let t = target(kind, &proposal.workload, &proposal.change, paths)?;
    let edit_err = |source| PlanError::Edit {
        file: file.to_owned(),
        source,
    };
    let current = edit::read(content, &t.document, &t.path)
        .map_err(edit_err)?
        .value;
    let (live, wanted) = if t.repository_only {
        (repository(&proposal.from), repository(&proposal.to))
    } else {
        (proposal.from.as_str(), proposal.to.as_str())
    };
    let not_source = || PlanError::NotTheSource {
        file: file.to_owned(),
        path: t.path.to_string(),
        found: current.clone(),
        live: live.to_owned(),
    };
    match &proposal.change {
        Change::MemoryLimit { .. } | Change::MemoryRequest { .. } => {
            let have = parse_bytes(&current).ok_or_else(|| PlanError::NotAQuantity {
                file: file.to_owned(),
                path: t.path.to_string(),
                found: current.clone(),
            })?;
            // Never propose less than the file already asks for (a raise already pending,
            // or one made by hand and not yet synced).
            if parse_bytes(wanted).is_some_and(|want| have >= want) {
                return Ok(Plan::Unchanged { current });
            }
        }
        Change::Image { .. } | Change::Replicas => {
            if current == wanted {
                return Ok(Plan::Unchanged { current });
            }
            if current != live {
                return Err(not_source());
            }
        }
    }
    let edited = edit::set(content, &t.document, &t.path, wanted).map_err(edit_err)?;
    let message = format!(
        "{}: {} {} -> {}\n\n{}\nIncident: {}",
        workload_name(proposal),
        what(&proposal.change),
        current,
        wanted,
        proposal.reason,
        proposal.incident
    );
    Ok(Plan::Commit { edited, message })
}

fn workload_name(p: &Proposal) -> String {
    format!("{}/{} {}", p.namespace, p.workload.kind, p.workload.name)
}

fn what(change: &Change) -> String {
    match change {
        Change::MemoryLimit { container } => format!("memory limit of {container}"),
        Change::MemoryRequest { container } => format!("memory request of {container}"),
        Change::Image { container, .. } => format!("image of {container}"),
        Change::Replicas => "replicas".to_owned(),
    }
}

/// The pull request's title (GitHub and GitLab cut at 255 characters; this stays far below).
pub fn title(p: &Proposal) -> String {
    let title = format!(
        "auto-agent: {} of {} -> {}",
        what(&p.change),
        workload_name(p),
        p.to
    );
    title.chars().take(200).collect()
}

/// The pull request's description: the incident key, what and why, the diff, the evidence and
/// the summary. The agent never merges; a human reviews and merges.
pub fn body(p: &Proposal, file: &str, diff: &str, repeats: u32) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "**Incident** `{}`\n", p.incident);
    let _ = writeln!(
        b,
        "The workload is managed by GitOps, so auto-agent proposes this change instead of patching it live: the next sync would revert a live patch.\n"
    );
    let _ = writeln!(b, "- **Workload:** `{}`", workload_name(p));
    let _ = writeln!(
        b,
        "- **Change:** {} `{}` -> `{}`",
        what(&p.change),
        p.from,
        p.to
    );
    let _ = writeln!(b, "- **Why:** {}", p.reason);
    if repeats > 1 {
        let _ = writeln!(b, "- **Seen:** {repeats} times while this was open");
    }
    match &p.evidence {
        Some(e) => {
            let _ = writeln!(b, "- **Evidence:** `{e}`");
        }
        None => {
            let _ = writeln!(b, "- **Evidence:** none saved");
        }
    }
    if !diff.is_empty() {
        let _ = writeln!(b, "\n`{file}`:\n\n```diff\n{diff}```");
    }
    if let Some(s) = &p.summary {
        let _ = writeln!(b, "\n**Summary**\n\n{s}");
    }
    let _ = writeln!(
        b,
        "\n_auto-agent never merges: review and merge to apply, or close to decline._"
    );
    b
}

/// The comment on a repeat that changes nothing in the file.
pub fn repeat_comment(p: &Proposal, at: &str) -> String {
    format!(
        "Seen again at {at}: {}. The proposed change still stands; incident `{}`.",
        p.reason, p.incident
    )
}

/// The comment before closing: the incident resolved or the change was superseded.
pub fn closing_comment(incident: &str, why: &str) -> String {
    format!("Closing: {why}. Incident `{incident}`. Nothing was merged by auto-agent.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "image:\n  repository: docker.io/acme/api # upstream\n  tag: \"1.4.2\"\nreplicaCount: 2\nresources:\n  limits:\n    memory: 256Mi\n";

    fn proposal(change: Change, from: &str, to: &str) -> Proposal {
        Proposal {
            incident: "pod/shop/Deployment/api/OOMKilled".into(),
            namespace: "shop".into(),
            workload: Workload {
                kind: "Deployment".into(),
                name: "api".into(),
                containers: vec!["app".into()],
            },
            change,
            from: from.into(),
            to: to.into(),
            reason: "OOMKilled 3 times in 10 minutes".into(),
            evidence: Some("s3://evidence/shop/api/1.json".into()),
            summary: Some("The heap outgrew its limit.".into()),
        }
    }

    fn memory() -> Change {
        Change::MemoryLimit {
            container: "app".into(),
        }
    }

    #[test]
    fn table_of_plans() {
        let image = Change::Image {
            container: "app".into(),
            from: "docker.io/acme/api:1.4.2".into(),
        };
        // (file content, change, live, proposed, Some(new line) to commit or None for unchanged)
        let cases: Vec<(String, Change, &str, &str, Option<&str>)> = vec![
            (
                VALUES.to_owned(),
                memory(),
                "256Mi",
                "384Mi",
                Some("    memory: 384Mi"),
            ),
            // A raise already on the branch: a repeat commits nothing.
            (
                VALUES.replace("256Mi", "384Mi"),
                memory(),
                "256Mi",
                "384Mi",
                None,
            ),
            // The file already asks for more (a hand-made raise not yet synced): not lowered.
            (
                VALUES.replace("256Mi", "1Gi"),
                memory(),
                "256Mi",
                "384Mi",
                None,
            ),
            // A file that lags the cluster still gets the raise (it is what matters).
            (
                VALUES.replace("256Mi", "128Mi"),
                memory(),
                "256Mi",
                "384Mi",
                Some("    memory: 384Mi"),
            ),
            (
                VALUES.to_owned(),
                image.clone(),
                "docker.io/acme/api:1.4.2",
                "registry.internal/mirror/acme/api:1.4.2",
                Some("  repository: registry.internal/mirror/acme/api # upstream"),
            ),
            (
                VALUES.replace("docker.io/acme/api", "registry.internal/mirror/acme/api"),
                image,
                "docker.io/acme/api:1.4.2",
                "registry.internal/mirror/acme/api:1.4.2",
                None,
            ),
            (
                VALUES.to_owned(),
                Change::Replicas,
                "2",
                "4",
                Some("replicaCount: 4"),
            ),
            (
                VALUES.replace("replicaCount: 2", "replicaCount: 4"),
                Change::Replicas,
                "2",
                "4",
                None,
            ),
        ];
        for (content, change, from, to, want) in cases {
            let p = proposal(change, from, to);
            let got = plan(
                "charts/api/values.yaml",
                &content,
                &p,
                &ValuePaths::default(),
            )
            .unwrap();
            match (got, want) {
                (Plan::Commit { edited, message }, Some(line)) => {
                    assert_eq!(edited.new_line, line);
                    assert!(message.contains(&p.incident), "{message}");
                    assert!(message.starts_with("shop/Deployment api: "), "{message}");
                }
                (Plan::Unchanged { .. }, None) => {}
                (got, want) => panic!("{to}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_file_that_is_not_the_workloads_source_is_refused() {
        // The file runs another image and another replica count than the cluster: not its source.
        let p = proposal(
            Change::Image {
                container: "app".into(),
                from: "quay.io/other/api:2".into(),
            },
            "quay.io/other/api:2",
            "registry.internal/mirror/other/api:2",
        );
        let e = plan("values.yaml", VALUES, &p, &ValuePaths::default()).unwrap_err();
        assert!(matches!(e, PlanError::NotTheSource { .. }), "{e}");
        assert!(e.to_string().contains("image.repository"), "{e}");
        let p = proposal(Change::Replicas, "5", "6");
        assert!(matches!(
            plan("values.yaml", VALUES, &p, &ValuePaths::default()),
            Err(PlanError::NotTheSource { .. })
        ));
        let p = proposal(memory(), "256Mi", "384Mi");
        let e = plan(
            "values.yaml",
            "resources:\n  limits:\n    memory: lots\n",
            &p,
            &ValuePaths::default(),
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::NotAQuantity { .. }), "{e}");
        let e = plan(
            "values.yaml",
            "replicaCount: 1\n",
            &p,
            &ValuePaths::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("values.yaml: "), "{e}");
    }

    #[test]
    fn branch_and_label_carry_the_incident_key() {
        let key = "pod/shop/Deployment/api/OOMKilled";
        assert_eq!(branch(key), branch(key));
        assert_ne!(
            branch(key),
            branch("pod/shop/Deployment/api/CrashLoopBackOff")
        );
        assert!(branch(key).starts_with("auto-agent/"));
        assert_eq!(label(key).len(), "auto-agent-".len() + 16);
        assert_eq!(
            branch(key)["auto-agent/".len()..],
            label(key)["auto-agent-".len()..]
        );
    }

    #[test]
    fn the_body_says_what_why_diff_evidence_and_summary() {
        let p = proposal(memory(), "256Mi", "384Mi");
        let Plan::Commit { edited, .. } =
            plan("charts/api/values.yaml", VALUES, &p, &ValuePaths::default()).unwrap()
        else {
            panic!("a commit");
        };
        let b = body(
            &p,
            "charts/api/values.yaml",
            &edited.diff("charts/api/values.yaml"),
            2,
        );
        for needle in [
            "`pod/shop/Deployment/api/OOMKilled`",
            "`shop/Deployment api`",
            "`256Mi` -> `384Mi`",
            "OOMKilled 3 times",
            "2 times",
            "s3://evidence/shop/api/1.json",
            "-    memory: 256Mi\n+    memory: 384Mi",
            "The heap outgrew its limit.",
            "never merges",
        ] {
            assert!(b.contains(needle), "{needle} missing from\n{b}");
        }
        assert!(title(&p).contains("memory limit of app"));
        assert!(repeat_comment(&p, "2026-12-03T21:00:00Z").contains(&p.incident));
        assert!(
            closing_comment(&p.incident, "the incident resolved").contains("Nothing was merged")
        );
    }
}
