//! Incident keys: one stable key per (target, failure mode), built from fields and never from free
//! text, so repeated findings, resends and LLM summaries can never split one incident into many.
//! The key names one Slack thread, one ticket and one GitOps branch.

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, FindingKind};

/// `pod/<namespace>/<workload kind>/<workload name>/<kind>`, `node/<node>/<kind>` or, for metric
/// anomalies, `workload/<namespace>/<workload kind>/<workload name>/MetricAnomaly`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentKey(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IncidentKeyError {
    #[error("a {0} finding needs a pod reference")]
    MissingPod(FindingKind),
    #[error("a {0} finding needs a node name")]
    MissingNode(FindingKind),
    #[error("field {field} must not be empty or contain '/'")]
    BadField { field: &'static str },
}

fn part<'a>(field: &'static str, value: &'a str) -> Result<&'a str, IncidentKeyError> {
    if value.is_empty() || value.contains('/') {
        return Err(IncidentKeyError::BadField { field });
    }
    Ok(value)
}

impl IncidentKey {
    /// The key of the incident a finding belongs to.
    ///
    /// Pods are grouped by their owning workload, so the replacement pods of one crash-looping
    /// Deployment stay one incident; a bare pod is its own workload.
    pub fn for_finding(finding: &Finding) -> Result<Self, IncidentKeyError> {
        let kind = finding.kind;
        if kind.is_node() {
            if finding.node.is_empty() {
                return Err(IncidentKeyError::MissingNode(kind));
            }
            let node = part("node", &finding.node)?;
            return Ok(Self(format!("node/{node}/{}", kind.as_str())));
        }
        let pod = finding
            .pod
            .as_ref()
            .ok_or(IncidentKeyError::MissingPod(kind))?;
        let namespace = part("namespace", &pod.namespace)?;
        let (owner_kind, owner_name) = match &finding.owner {
            Some(owner) => (
                part("owner.kind", &owner.kind)?,
                part("owner.name", &owner.name)?,
            ),
            None => ("Pod", part("pod.name", &pod.name)?),
        };
        Ok(Self(format!(
            "pod/{namespace}/{owner_kind}/{owner_name}/{}",
            kind.as_str()
        )))
    }

    /// The key of a metric anomaly on a scaled workload (one per workload, whatever the z-score):
    /// `workload/<namespace>/<kind>/<name>/MetricAnomaly`.
    pub fn for_metric_anomaly(
        namespace: &str,
        workload_kind: &str,
        workload_name: &str,
    ) -> Result<Self, IncidentKeyError> {
        Ok(Self(format!(
            "workload/{}/{}/{}/MetricAnomaly",
            part("namespace", namespace)?,
            part("workload.kind", workload_kind)?,
            part("workload.name", workload_name)?,
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short stable digest of the key (12 hex digits of SHA-256), for places with tight length or
    /// character limits: ticket labels, branch names, Lease names.
    pub fn digest(&self) -> String {
        short_digest(&self.0)
    }
}

/// 12 hex digits (48 bits) of the SHA-256 of `text`: a stable short name for a key.
pub fn short_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl std::fmt::Display for IncidentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
