//! Evidence bundles written before any destructive action. This version has the filesystem store
//! (an EFS or any mounted volume); S3 comes with the evidence work. Writes are atomic: a temporary
//! file, fsync, rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use auto_agent_engine::Finding;
use serde_json::json;

/// Where a bundle for this finding goes, relative to the store's root:
/// `<namespace>/<workload>/<reason>/<yyyy-mm-dd>/<pod>-<restart>.json`.
pub fn bundle_key(f: &Finding, date: &str) -> String {
    let (namespace, pod) = f
        .pod
        .as_ref()
        .map_or(("_", "_"), |p| (p.namespace.as_str(), p.name.as_str()));
    let workload = f.owner.as_ref().map_or(pod, |o| o.name.as_str());
    let clean = |s: &str| s.replace(['/', '\\', '\0'], "_").replace("..", "_");
    format!(
        "{}/{}/{}/{}/{}-{}.json",
        clean(namespace),
        clean(workload),
        clean(f.kind.as_str()),
        clean(date),
        clean(pod),
        f.restart_count
    )
}

/// The bundle document (schema version 1): the finding with its log tail, the pod's status
/// (never its spec, which can carry secret values), the plan and who wrote it.
pub fn bundle_json(
    f: &Finding,
    incident: &str,
    policy: &str,
    plan: &serde_json::Value,
    pod_status: &serde_json::Value,
    created_at: &str,
) -> serde_json::Value {
    json!({
        "schemaVersion": 1,
        "incidentKey": incident,
        "createdAt": created_at,
        "agentVersion": auto_agent_shared::VERSION,
        "policy": policy,
        "finding": f,
        "podStatus": pod_status,
        "plan": plan,
    })
}

#[derive(Clone, Debug)]
pub struct FilesystemStore {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("writing the evidence bundle {path}: {source}")]
pub struct BundleError {
    path: PathBuf,
    source: std::io::Error,
}

impl FilesystemStore {
    /// Writes `doc` under `key`, never overwriting an existing bundle (a suffix is added).
    pub fn put(&self, key: &str, doc: &serde_json::Value) -> Result<PathBuf, BundleError> {
        let mut path = self.root.join(key);
        let err = |path: &Path, source| BundleError {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.clone());
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = self
                .root
                .join(key.trim_end_matches(".json").to_owned() + &format!(".{n}.json"));
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| err(&path, e.into()))?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| err(&tmp, e))?;
        file.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::{FindingKind, PodRef, Transition, WorkloadRef};

    fn finding() -> Finding {
        Finding {
            id: "id".into(),
            node: "n".into(),
            kind: FindingKind::CrashLoopBackOff,
            transition: Transition::Started,
            pod: Some(PodRef {
                namespace: "prod".into(),
                name: "api-1".into(),
                uid: "u".into(),
            }),
            owner: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "api".into(),
            }),
            container: Some("app".into()),
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
            restart_count: 4,
            exit_code: Some(1),
            image: None,
            observed_at_ms: 0,
            log_lines: vec!["panic".into()],
            log_truncated: false,
        }
    }

    #[test]
    fn key_follows_the_layout_and_cannot_escape() {
        assert_eq!(
            bundle_key(&finding(), "2026-11-25"),
            "prod/api/CrashLoopBackOff/2026-11-25/api-1-4.json"
        );
        let mut evil = finding();
        evil.pod = Some(PodRef {
            namespace: "..".into(),
            name: "../../etc".into(),
            uid: "u".into(),
        });
        evil.owner = None;
        assert!(!bundle_key(&evil, "d").contains(".."));
    }

    #[test]
    fn writes_atomically_and_never_overwrites() {
        let root = std::env::temp_dir().join(format!("bundle-test-{}", std::process::id()));
        let store = FilesystemStore { root: root.clone() };
        let key = bundle_key(&finding(), "2026-11-25");
        let first = store.put(&key, &json!({"n": 1})).unwrap();
        let second = store.put(&key, &json!({"n": 2})).unwrap();
        assert_ne!(first, second);
        assert!(std::fs::read_to_string(&first).unwrap().contains('1'));
        assert!(second.to_string_lossy().ends_with("api-1-4.2.json"));
        assert!(!first.with_extension("json.tmp").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
