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

    /// A pod with one container (`container` merged into it) and `volumes`.
    fn pod_with(container: Value, volumes: Value) -> Value {
        let mut c = json!({"name": "app", "image": "app:1"});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
            c.extend(extra.clone());
        }
        json!({
            "metadata": {"name": "api-1", "namespace": "prod"},
            "spec": {"containers": [c], "volumes": volumes}
        })
    }

    #[test]
    fn probes_hooks_and_volumes_never_reach_the_bundle() {
        let header = |name: &str, value: &str| json!({"httpGet": {"port": 8080, "httpHeaders": [{"name": name, "value": value}]}});
        let exec = |cmd: &[&str]| json!({"exec": {"command": cmd}});
        let vol = |source: Value| pod_with(json!({}), json!([source]));
        let table: Vec<(&str, Value, &str)> = vec![
            (
                "liveness header, plain name",
                pod_with(
                    json!({"livenessProbe": header("X-Probe-Check", "s3cr3t-liveness-header")}),
                    json!([]),
                ),
                "s3cr3t-liveness-header",
            ),
            (
                "readiness Authorization header",
                pod_with(
                    json!({"readinessProbe": header("Authorization", "Basic dXNlcjpyZWFkaW5lc3M=")}),
                    json!([]),
                ),
                "dXNlcjpyZWFkaW5lc3M",
            ),
            (
                "startup header",
                pod_with(
                    json!({"startupProbe": header("X-Token", "s3cr3t-startup-header")}),
                    json!([]),
                ),
                "s3cr3t-startup-header",
            ),
            (
                "startup path query",
                pod_with(
                    json!({"startupProbe": {"httpGet": {"path": "/healthz?token=s3cr3t-startup-path", "port": 80}}}),
                    json!([]),
                ),
                "s3cr3t-startup-path",
            ),
            (
                "liveness exec bearer",
                pod_with(
                    json!({"livenessProbe": exec(&["sh", "-c", "curl -H 'Authorization: Bearer s3cr3tlivenessexec' localhost"])}),
                    json!([]),
                ),
                "s3cr3tlivenessexec",
            ),
            (
                "readiness exec flag",
                pod_with(
                    json!({"readinessProbe": exec(&["check", "--api-key", "s3cr3t-readiness-exec"])}),
                    json!([]),
                ),
                "s3cr3t-readiness-exec",
            ),
            (
                "startup exec pair",
                pod_with(
                    json!({"startupProbe": exec(&["check", "--password=s3cr3t-startup-exec"])}),
                    json!([]),
                ),
                "s3cr3t-startup-exec",
            ),
            (
                "postStart exec",
                pod_with(
                    json!({"lifecycle": {"postStart": exec(&["/bin/notify", "--token", "s3cr3t-poststart-exec"])}}),
                    json!([]),
                ),
                "s3cr3t-poststart-exec",
            ),
            (
                "preStop exec",
                pod_with(
                    json!({"lifecycle": {"preStop": exec(&["sh", "-c", "PASSWORD=s3cr3t-prestop-exec drain"])}}),
                    json!([]),
                ),
                "s3cr3t-prestop-exec",
            ),
            (
                "postStart header",
                pod_with(
                    json!({"lifecycle": {"postStart": header("X-Hook", "s3cr3t-poststart-header")}}),
                    json!([]),
                ),
                "s3cr3t-poststart-header",
            ),
            (
                "preStop header",
                pod_with(
                    json!({"lifecycle": {"preStop": header("X-Drain-Key", "s3cr3t-prestop-header")}}),
                    json!([]),
                ),
                "s3cr3t-prestop-header",
            ),
            (
                "init container probe",
                json!({"spec": {"initContainers": [{"name": "side", "restartPolicy": "Always", "startupProbe": header("X-Side", "s3cr3t-init-header")}]}}),
                "s3cr3t-init-header",
            ),
            (
                "csi volumeAttributes",
                vol(
                    json!({"name": "v", "csi": {"driver": "x.csi", "volumeAttributes": {"endpoint": "s3cr3t-csi-attribute"}}}),
                ),
                "s3cr3t-csi-attribute",
            ),
            (
                "flexVolume options",
                vol(
                    json!({"name": "v", "flexVolume": {"driver": "x/y", "options": {"opt": "s3cr3t-flex-option"}}}),
                ),
                "s3cr3t-flex-option",
            ),
            (
                "iscsi",
                vol(
                    json!({"name": "v", "iscsi": {"targetPortal": "10.0.0.1:3260", "iqn": "iqn.s3cr3t-iscsi", "lun": 0, "chapAuthSession": true, "secretRef": {"name": "chap"}}}),
                ),
                "iqn.s3cr3t-iscsi",
            ),
            (
                "rbd",
                vol(
                    json!({"name": "v", "rbd": {"monitors": ["m:6789"], "image": "i", "keyring": "/etc/ceph/s3cr3t-rbd-keyring", "user": "admin"}}),
                ),
                "s3cr3t-rbd-keyring",
            ),
            (
                "azureFile",
                vol(
                    json!({"name": "v", "azureFile": {"secretName": "azure", "shareName": "s3cr3t-azure-share"}}),
                ),
                "s3cr3t-azure-share",
            ),
            (
                "cephfs",
                vol(
                    json!({"name": "v", "cephfs": {"monitors": ["m"], "secretFile": "/etc/ceph/s3cr3t-cephfs"}}),
                ),
                "s3cr3t-cephfs",
            ),
            (
                "projected",
                vol(
                    json!({"name": "v", "projected": {"sources": [{"serviceAccountToken": {"audience": "s3cr3t-audience", "path": "t"}}]}}),
                ),
                "s3cr3t-audience",
            ),
            (
                "secret items",
                vol(
                    json!({"name": "v", "secret": {"secretName": "db", "items": [{"key": "k", "path": "s3cr3t-item-path"}]}}),
                ),
                "s3cr3t-item-path",
            ),
            (
                "hostPath",
                vol(json!({"name": "v", "hostPath": {"path": "/s3cr3t-host-path"}})),
                "s3cr3t-host-path",
            ),
        ];
        for (place, pod, secret) in table {
            assert!(
                pod.to_string().contains(secret),
                "{place}: the input holds it"
            );
            let mut input = input(vec![finding(&[])]);
            input.pod = Some(pod);
            let b = Bundle::build(input, Caps::default());
            let text = String::from_utf8(b.to_bytes().unwrap()).unwrap();
            assert!(!text.contains(secret), "{place}: {secret} in {text}");
        }
    }

    #[test]
    fn volumes_keep_their_name_type_and_reference() {
        let mut pod = pod_with(
            json!({"readinessProbe": {"httpGet": {"path": "/ready", "port": 80, "httpHeaders": [{"name": "X-Probe", "value": "v"}]}}}),
            json!([
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 256}},
                {"name": "conf", "configMap": {"name": "app-config", "items": [{"key": "a", "path": "b"}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-0", "readOnly": true}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "blob", "csi": {"driver": "blob.csi", "volumeAttributes": {"k": "v"}}}
            ]),
        );
        let n = redact::redact_pod(&mut pod);
        assert_eq!(
            pod["spec"]["volumes"],
            json!([
                {"name": "creds", "secret": {"secretName": "db"}},
                {"name": "conf", "configMap": {"name": "app-config"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "blob", "csi": {}}
            ])
        );
        let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
        assert_eq!(probe["path"], "/ready");
        assert_eq!(
            probe["httpHeaders"][0],
            json!({"name": "X-Probe", "value": redact::REDACTED})
        );
        assert_eq!(n, 5, "four volumes lost details, one header value");
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
