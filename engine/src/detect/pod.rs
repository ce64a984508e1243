//! Pod detectors: CrashLoopBackOff, OOMKilled, image pull failures, CreateContainerConfigError,
//! and pods evicted by the kubelet.

use crate::finding::{Finding, FindingKind, PodRef, Transition};
use crate::view::{ContainerState, ContainerView, PodView, Terminated};

const IMAGE_PULL_REASONS: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const CONFIG_ERROR_REASONS: [&str; 1] = ["CreateContainerConfigError"];

fn waiting_reason(c: &ContainerView) -> Option<&str> {
    match &c.state {
        ContainerState::Waiting { reason, .. } => Some(reason.as_str()),
        _ => None,
    }
}

fn waiting_message(c: &ContainerView) -> &str {
    match &c.state {
        ContainerState::Waiting { message, .. } => message,
        _ => "",
    }
}

/// The most recent termination: the current state if terminated, else `lastState`.
fn last_termination(c: &ContainerView) -> Option<&Terminated> {
    match &c.state {
        ContainerState::Terminated(t) => Some(t),
        _ => c.last_terminated.as_ref(),
    }
}

/// Identifies one OOM kill: the restart count and the time it ended.
fn oom_mark(c: &ContainerView) -> Option<(u32, Option<&str>)> {
    last_termination(c)
        .filter(|t| t.reason == "OOMKilled")
        .map(|t| (c.restart_count, t.finished_at.as_deref()))
}

fn in_set(c: Option<&ContainerView>, set: &[&str]) -> bool {
    c.and_then(waiting_reason).is_some_and(|r| set.contains(&r))
}

struct Emit<'a> {
    pod: &'a PodView,
    now_ms: i64,
    out: Vec<Finding>,
}

impl Emit<'_> {
    fn push(
        &mut self,
        kind: FindingKind,
        c: Option<&ContainerView>,
        id_suffix: String,
        reason: &str,
        message: &str,
    ) {
        let pod = self.pod;
        let termination = c.and_then(last_termination);
        self.out.push(Finding {
            id: match c {
                Some(c) => format!("{}/{}/{}/{id_suffix}", pod.uid, c.name, kind.as_str()),
                None => format!("{}/{}/{id_suffix}", pod.uid, kind.as_str()),
            },
            node: pod.node.clone(),
            kind,
            transition: Transition::Started,
            pod: Some(PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            }),
            owner: pod.owner.clone(),
            container: c.map(|c| c.name.clone()),
            reason: reason.to_owned(),
            message: message.to_owned(),
            restart_count: c.map(|c| c.restart_count).unwrap_or_default(),
            exit_code: termination.map(|t| t.exit_code),
            image: c.map(|c| c.image.clone()),
            observed_at_ms: self.now_ms,
            log_lines: Vec::new(),
            log_truncated: false,
        });
    }
}

/// Findings for the transition from `prev` (None: first sight) to `cur`.
pub fn detect_pod(prev: Option<&PodView>, cur: &PodView, now_ms: i64) -> Vec<Finding> {
    let mut emit = Emit {
        pod: cur,
        now_ms,
        out: Vec::new(),
    };

    let evicted = |p: &PodView| p.phase == "Failed" && p.reason.as_deref() == Some("Evicted");
    if evicted(cur) && !prev.is_some_and(evicted) {
        let message = cur.message.clone().unwrap_or_default();
        emit.push(
            FindingKind::PodEvicted,
            None,
            "0".into(),
            "Evicted",
            &message,
        );
    }

    for c in &cur.containers {
        let before = prev.and_then(|p| p.containers.iter().find(|b| b.name == c.name));

        // OOMKilled wins over CrashLoopBackOff: restarting does not cure a memory limit.
        if let Some(mark) = oom_mark(c) {
            if before.and_then(oom_mark) != Some(mark) {
                let message = last_termination(c)
                    .map(|t| t.message.as_str())
                    .unwrap_or_default();
                emit.push(
                    FindingKind::OomKilled,
                    Some(c),
                    c.restart_count.to_string(),
                    "OOMKilled",
                    message,
                );
            }
        } else if waiting_reason(c) == Some("CrashLoopBackOff") {
            let was = before.is_some_and(|b| {
                waiting_reason(b) == Some("CrashLoopBackOff") && b.restart_count == c.restart_count
            });
            if !was {
                emit.push(
                    FindingKind::CrashLoopBackOff,
                    Some(c),
                    c.restart_count.to_string(),
                    "CrashLoopBackOff",
                    waiting_message(c),
                );
            }
        }

        // ErrImagePull and ImagePullBackOff alternate while a pull keeps failing: one state.
        if in_set(Some(c), &IMAGE_PULL_REASONS)
            && !(in_set(before, &IMAGE_PULL_REASONS) && before.is_some_and(|b| b.image == c.image))
        {
            let reason = waiting_reason(c).unwrap_or_default();
            emit.push(
                FindingKind::ImagePullBackOff,
                Some(c),
                c.image.clone(),
                reason,
                waiting_message(c),
            );
        }

        if in_set(Some(c), &CONFIG_ERROR_REASONS) && !in_set(before, &CONFIG_ERROR_REASONS) {
            let reason = waiting_reason(c).unwrap_or_default();
            emit.push(
                FindingKind::CreateContainerConfigError,
                Some(c),
                "0".into(),
                reason,
                waiting_message(c),
            );
        }
    }
    emit.out
}
