//! The apiserver's audit log as `e2e/cluster` writes it (JSON lines, Metadata level, writes by
//! ServiceAccounts only): who wrote what, with which user agent, and whether it was accepted.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditEvent {
    pub stage: String,
    pub verb: String,
    pub user: AuditUser,
    pub user_agent: String,
    pub object_ref: Option<ObjectRef>,
    pub response_status: Option<ResponseStatus>,
    pub request_received_timestamp: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuditUser {
    pub username: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ObjectRef {
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResponseStatus {
    pub code: u16,
}

impl AuditEvent {
    /// When the apiserver received the request.
    pub fn received(&self) -> Option<Timestamp> {
        self.request_received_timestamp.parse().ok()
    }

    /// The response code (0 when the request never completed).
    pub fn code(&self) -> u16 {
        self.response_status.as_ref().map_or(0, |s| s.code)
    }

    /// The apiserver carried the write out.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.code())
    }

    /// `verb resource[/subresource] namespace/name -> code`, for messages.
    pub fn describe(&self) -> String {
        let o = self.object_ref.clone().unwrap_or_default();
        let resource = if o.subresource.is_empty() {
            o.resource
        } else {
            format!("{}/{}", o.resource, o.subresource)
        };
        format!(
            "{} {} {} {}/{} -> {} ({})",
            self.request_received_timestamp,
            self.verb,
            resource,
            o.namespace,
            o.name,
            self.code(),
            self.user_agent
        )
    }
}

/// Every completed request in `audit*.log` under `dir`, rotated files (older) first.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<AuditEvent>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
        })
        .collect();
    // `audit.log` is the live file; rotated ones carry a timestamp and sort before it.
    files.sort_by_key(|p| p.file_name().is_some_and(|n| n == "audit.log"));
    anyhow::ensure!(
        !files.is_empty(),
        "no audit log in {}: the cluster was started before `e2e/cluster` turned auditing on; \
         run `e2e/cluster down` and try again",
        dir.display()
    );
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<AuditEvent>(l).ok())
                .filter(|e| e.stage == "ResponseComplete" || e.stage == "Panic"),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_write_reads_back_with_its_agent_and_outcome() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/pods/p","verb":"delete","user":{"username":"system:serviceaccount:a:c","groups":["system:serviceaccounts"]},"userAgent":"auto-agent-controller/0.1.0 (controller-0)","objectRef":{"resource":"pods","namespace":"a","name":"p","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-04T05:00:00.123456Z","stageTimestamp":"2026-12-04T05:00:00.133456Z"}"#;
        let e: AuditEvent = serde_json::from_str(line).unwrap();
        assert!(e.accepted());
        assert_eq!(e.user_agent, "auto-agent-controller/0.1.0 (controller-0)");
        assert_eq!(e.object_ref.as_ref().unwrap().name, "p");
        assert_eq!(
            e.received().unwrap().to_string(),
            "2026-12-04T05:00:00.123456Z"
        );
        let refused = line.replace(r#""code":200"#, r#""code":409"#);
        assert!(
            !serde_json::from_str::<AuditEvent>(&refused)
                .unwrap()
                .accepted()
        );
    }
}
