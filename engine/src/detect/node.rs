//! Node detectors: Memory/Disk/PID pressure and Ready=False/Unknown, with their clearing.

use crate::finding::{Finding, FindingKind, Transition};
use crate::view::{NodeConditionView, NodeView};

/// The node conditions watched, with the finding kind each produces.
const WATCHED: [(&str, FindingKind); 4] = [
    ("MemoryPressure", FindingKind::NodeMemoryPressure),
    ("DiskPressure", FindingKind::NodeDiskPressure),
    ("PIDPressure", FindingKind::NodePidPressure),
    ("Ready", FindingKind::NodeNotReady),
];

fn is_bad(type_: &str, status: &str) -> bool {
    if type_ == "Ready" {
        status != "True"
    } else {
        status == "True"
    }
}

fn finding(
    node: &NodeView,
    kind: FindingKind,
    transition: Transition,
    c: &NodeConditionView,
    now_ms: i64,
) -> Finding {
    let edge = match transition {
        Transition::Started => "Started",
        Transition::Cleared => "Cleared",
    };
    Finding {
        id: format!(
            "{}/{}/{edge}/{}",
            node.name,
            kind.as_str(),
            c.last_transition
        ),
        node: node.name.clone(),
        kind,
        transition,
        pod: None,
        owner: None,
        container: None,
        reason: if c.reason.is_empty() {
            kind.as_str().to_owned()
        } else {
            c.reason.clone()
        },
        message: c.message.clone(),
        restart_count: 0,
        exit_code: None,
        image: None,
        observed_at_ms: now_ms,
        log_lines: Vec::new(),
        log_truncated: false,
    }
}

/// Findings for the transition from `prev` (None: first sight) to `cur`. A condition first seen bad
/// is reported as started; clearing is only reported after a start was seen.
pub fn detect_node(prev: Option<&NodeView>, cur: &NodeView, now_ms: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    for (type_, kind) in WATCHED {
        let Some(now) = cur.condition(type_) else {
            continue;
        };
        let was_bad = prev
            .and_then(|p| p.condition(type_))
            .map(|c| is_bad(type_, &c.status));
        match (was_bad, is_bad(type_, &now.status)) {
            (None | Some(false), true) => {
                out.push(finding(cur, kind, Transition::Started, now, now_ms))
            }
            (Some(true), false) => out.push(finding(cur, kind, Transition::Cleared, now, now_ms)),
            _ => {}
        }
    }
    out
}
