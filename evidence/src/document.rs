//! The bundle document, schema version 2 (documented in docs/EVIDENCE.md). Built only through
//! [`Bundle::build`], which redacts and caps everything it is given, so no unredacted bundle can
//! be serialised.

use auto_agent_engine::Finding;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::redact;

pub const SCHEMA_VERSION: u32 = 2;

/// Size caps; what is cut is listed in `truncation` so a reader knows the bundle is partial.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Log lines kept (the newest); the policy's `logBundle.tailLines`.
    pub log_lines: usize,
    /// Bytes of one log line or Event message.
    pub line_bytes: usize,
    /// Events kept (the newest).
    pub events: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            log_lines: 50,
            line_bytes: 4096,
            events: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// The sensor read the kubelet's log file (or the API) on the node.
    Sensor,
    /// The controller read `pods/log?previous=true` because the finding carried no lines.
    Api,
    /// No log was available.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTail {
    pub container: Option<String>,
    pub source: LogSource,
    pub lines: Vec<String>,
    /// The sensor or the caps dropped lines.
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerSummary {
    pub kind: String,
    pub name: String,
    pub desired_replicas: Option<u32>,
    pub ready_replicas: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub last_transition_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub name: String,
    pub conditions: Vec<NodeConditionSummary>,
}

/// An action already taken on the same target (from the action ledger).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TakenAction {
    pub at: String,
    pub action: String,
    pub target: String,
    pub policy: String,
    pub incident: String,
}

/// Everything the controller gathered, before redaction.
#[derive(Clone, Debug)]
pub struct BundleInput {
    pub incident_key: String,
    pub created_at: String,
    pub policy: PolicyRef,
    pub findings: Vec<Finding>,
    /// Lines from the controller's own `pods/log` read, used when the finding has none.
    pub api_log_lines: Option<Vec<String>>,
    pub pod: Option<Value>,
    pub events: Vec<EventSummary>,
    pub owner: Option<OwnerSummary>,
    pub node: Option<NodeSummary>,
    pub planned: Value,
    pub taken: Vec<TakenAction>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub schema_version: u32,
    /// Stable for the same incident and findings: a retried delivery finds its own object and
    /// does not write a second one.
    pub bundle_id: String,
    pub incident_key: String,
    pub created_at: String,
    pub agent_version: String,
    pub policy: PolicyRef,
    /// The findings, with their log lines moved to `log`.
    pub findings: Vec<Finding>,
    pub log: LogTail,
    /// The pod (metadata, spec and status), redacted; `managedFields` dropped.
    pub pod: Option<Value>,
    pub events: Vec<EventSummary>,
    pub owner: Option<OwnerSummary>,
    pub node: Option<NodeSummary>,
    pub planned: Value,
    pub taken: Vec<TakenAction>,
    /// What the caps cut, e.g. `log: 120 lines dropped`.
    pub truncation: Vec<String>,
    /// How many values redaction replaced.
    pub redactions: usize,
}

/// The id of a bundle: a digest of the incident key and the findings' ids.
pub fn bundle_id(incident_key: &str, findings: &[Finding]) -> String {
    let mut h = Sha256::new();
    h.update(incident_key.as_bytes());
    for f in findings {
        h.update([0]);
        h.update(f.id.as_bytes());
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn cap_line(s: &str, max: usize, cut: &mut usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    *cut += 1;
    format!("{}…[truncated {} bytes]", &s[..end], s.len() - end)
}

impl Bundle {
    /// Builds the document: log lines taken from the findings (else the API read), redacted and
    /// capped; pod, Events and plan redacted.
    pub fn build(input: BundleInput, caps: Caps) -> Self {
        let BundleInput {
            incident_key,
            created_at,
            policy,
            mut findings,
            api_log_lines,
            pod,
            events,
            owner,
            node,
            mut planned,
            taken,
        } = input;
        let mut truncation = Vec::new();
        let mut redactions = 0;
        let id = bundle_id(&incident_key, &findings);

        // The newest finding with lines is the log's source.
        let container = findings.iter().rev().find_map(|f| f.container.clone());
        let sensor_lines = findings
            .iter()
            .rev()
            .find(|f| !f.log_lines.is_empty())
            .map(|f| (f.log_lines.clone(), f.log_truncated));
        let (source, raw, mut truncated) = match (sensor_lines, api_log_lines) {
            (Some((lines, t)), _) => (LogSource::Sensor, lines, t),
            (None, Some(lines)) if !lines.is_empty() => (LogSource::Api, lines, false),
            _ => (LogSource::None, Vec::new(), false),
        };
        for f in &mut findings {
            f.log_lines.clear();
            let (msg, n) = redact_one(&f.message);
            f.message = msg;
            redactions += n;
        }
        let (mut lines, n) = redact::redact_lines(&raw);
        redactions += n;
        if lines.len() > caps.log_lines {
            let drop = lines.len() - caps.log_lines;
            lines.drain(..drop);
            truncation.push(format!("log: {drop} older lines dropped"));
            truncated = true;
        }
        let mut long = 0;
        let lines = lines
            .iter()
            .map(|l| cap_line(l, caps.line_bytes, &mut long))
            .collect();
        if long > 0 {
            truncation.push(format!("log: {long} long lines cut"));
        }

        let pod = pod.map(|mut p| {
            redactions += redact::redact_pod(&mut p);
            p
        });
        let mut events = events;
        if events.len() > caps.events {
            let drop = events.len() - caps.events;
            events.drain(..drop);
            truncation.push(format!("events: {drop} older events dropped"));
        }
        let mut long = 0;
        for e in &mut events {
            let (msg, n) = redact_one(&e.message);
            redactions += n;
            e.message = cap_line(&msg, caps.line_bytes, &mut long);
        }
        if long > 0 {
            truncation.push(format!("events: {long} long messages cut"));
        }
        redactions += redact::redact_strings(&mut planned);

        Self {
            schema_version: SCHEMA_VERSION,
            bundle_id: id,
            incident_key,
            created_at,
            agent_version: auto_agent_shared::VERSION.to_owned(),
            policy,
            findings,
            log: LogTail {
                container,
                source,
                lines,
                truncated,
            },
            pod,
            events,
            owner,
            node,
            planned,
            taken,
            truncation,
            redactions,
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }
}

fn redact_one(s: &str) -> (String, usize) {
    match redact::redact_text(s) {
        std::borrow::Cow::Borrowed(b) => (b.to_owned(), 0),
        std::borrow::Cow::Owned(o) => (o, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::{FindingKind, PodRef, Transition, WorkloadRef};
    use serde_json::json;

    pub(crate) fn finding(lines: &[&str]) -> Finding {
        Finding {
            id: "f1".into(),
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
            message: "back-off restarting; Bearer abcdefgh12345678".into(),
            restart_count: 4,
            exit_code: Some(1),
            image: None,
            observed_at_ms: 0,
            log_lines: lines.iter().map(|s| s.to_string()).collect(),
            log_truncated: false,
        }
    }

    fn input(findings: Vec<Finding>) -> BundleInput {
        BundleInput {
            incident_key: "prod/Deployment/api/CrashLoopBackOff".into(),
            created_at: "2026-11-25T00:00:00Z".into(),
            policy: PolicyRef {
                namespace: "prod".into(),
                name: "p".into(),
            },
            findings,
            api_log_lines: Some(vec!["from api".into()]),
            pod: Some(json!({"metadata": {"annotations": {redact::LAST_APPLIED: "{}"}}})),
            events: (0..30)
                .map(|i| EventSummary {
                    time: None,
                    type_: "Warning".into(),
                    reason: "BackOff".into(),
                    message: format!("event {i} password=pw{i}"),
                    count: 1,
                })
                .collect(),
            owner: None,
            node: None,
            planned: json!({"note": "token=abcdef"}),
            taken: vec![],
        }
    }

    #[test]
    fn builds_redacted_capped_bundles() {
        let lines: Vec<String> = (0..80).map(|i| format!("line {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut f = finding(&refs);
        f.log_lines.push("x".repeat(5000));
        let b = Bundle::build(input(vec![f]), Caps::default());
        assert_eq!(b.schema_version, 2);
        assert_eq!(b.log.source, LogSource::Sensor);
        assert_eq!(b.log.lines.len(), 50);
        assert_eq!(b.log.lines[0], "line 31");
        assert!(b.log.lines[49].ends_with("…[truncated 904 bytes]"));
        assert!(b.log.truncated);
        assert_eq!(b.events.len(), 20);
        assert_eq!(b.truncation.len(), 3, "{:?}", b.truncation);
        assert!(b.findings[0].log_lines.is_empty());
        let text = String::from_utf8(b.to_bytes().unwrap()).unwrap();
        for secret in ["abcdefgh12345678", "pw29", "token=abcdef", "{}\""] {
            assert!(!text.contains(secret), "{secret}");
        }
    }

    #[test]
    fn falls_back_to_the_api_log_and_keeps_a_stable_id() {
        let b = Bundle::build(input(vec![finding(&[])]), Caps::default());
        assert_eq!(b.log.source, LogSource::Api);
        assert_eq!(b.log.lines, vec!["from api"]);
        let again = Bundle::build(input(vec![finding(&[])]), Caps::default());
        assert_eq!(b.bundle_id, again.bundle_id);
        let mut other = finding(&[]);
        other.id = "f2".into();
        assert_ne!(
            b.bundle_id,
            Bundle::build(input(vec![other]), Caps::default()).bundle_id
        );
    }
}
