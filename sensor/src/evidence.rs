//! Evidence for crash and OOM findings: the previous container's log tail, read from the kubelet's
//! files on the node when they are there (cheap, and survives the API's log rotation), else from the
//! API (`pods/log?previous=true&tailLines=`).

use std::path::PathBuf;

use auto_agent_engine::{ContainerState, Finding, FindingKind, PodView};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::{Api, Client};

use crate::logtail::{self, Tail, TailLimits};
use crate::metrics::SensorMetrics;

#[derive(Clone)]
pub struct EvidenceReader {
    pub client: Client,
    pub pod_log_dir: PathBuf,
    pub limits: TailLimits,
    pub metrics: SensorMetrics,
}

impl std::fmt::Debug for EvidenceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceReader")
            .field("pod_log_dir", &self.pod_log_dir)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Only crash and OOM findings carry a log tail: for the others the container never ran.
pub fn wants_logs(f: &Finding) -> bool {
    matches!(
        f.kind,
        FindingKind::CrashLoopBackOff | FindingKind::OomKilled
    )
}

/// Where the log of the run that failed is, by the container's state when the finding was made.
/// The kubelet names a run's file after its attempt, `<restartCount>.log` for the newest, and keeps
/// only the newest dead run beside a live one (seen on a real node, e2e/tests/real_node.rs):
/// - running again (an OOM kill already restarted): the failed run is the previous attempt,
///   `<restartCount - 1>.log`, the API's `previous=true`;
/// - waiting in back-off (CrashLoopBackOff): no run is live, the failed run is the newest attempt,
///   `<restartCount>.log`, still the API's `previous=true`;
/// - terminated and not restarted yet: the newest attempt, `<restartCount>.log`, the API's current
///   log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedRun {
    Previous,
    NewestDead,
    Current,
}

impl FailedRun {
    /// From the pod as the finding was detected on it.
    pub fn of(view: &PodView, container: Option<&str>) -> Self {
        let state = view
            .containers
            .iter()
            .find(|c| Some(c.name.as_str()) == container)
            .map(|c| &c.state);
        match state {
            Some(ContainerState::Terminated(_)) => Self::Current,
            Some(ContainerState::Waiting { .. }) => Self::NewestDead,
            Some(ContainerState::Running | ContainerState::Unknown) | None => Self::Previous,
        }
    }

    /// The index of that run's log file for a container restarted `restart_count` times.
    fn log_index(self, restart_count: u32) -> Option<u32> {
        match self {
            Self::Current | Self::NewestDead => Some(restart_count),
            Self::Previous => restart_count.checked_sub(1),
        }
    }

    /// Whether the API serves that run as the previous container's log.
    fn api_previous(self) -> bool {
        self != Self::Current
    }
}

impl EvidenceReader {
    /// Adds the log tail of the run that failed to `finding`. Never fails: without a readable
    /// log, the finding goes out without one.
    pub async fn attach(&self, finding: &mut Finding, run: FailedRun) {
        let (Some(pod), Some(container)) = (finding.pod.clone(), finding.container.clone()) else {
            return;
        };
        if let Some(path) = run.log_index(finding.restart_count).and_then(|index| {
            logtail::container_log_path(
                &self.pod_log_dir,
                &pod.namespace,
                &pod.name,
                &pod.uid,
                &container,
                index,
            )
        }) {
            match logtail::tail_file(&path, self.limits) {
                Ok(tail) => {
                    self.metrics
                        .log_reads
                        .with_label_values(&["node_file", "ok"])
                        .inc();
                    return set(finding, tail);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(path = %path.display(), "No log file; using the API");
                }
                Err(e) => {
                    self.metrics
                        .log_reads
                        .with_label_values(&["node_file", "error"])
                        .inc();
                    tracing::debug!(error = %e, "Reading the node's log file failed; using the API");
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let params = LogParams {
            container: Some(container),
            previous: run.api_previous(),
            tail_lines: Some(self.limits.lines as i64),
            limit_bytes: Some(self.limits.scan_bytes as i64),
            ..LogParams::default()
        };
        match api.logs(&pod.name, &params).await {
            Ok(text) => {
                self.metrics
                    .log_reads
                    .with_label_values(&["api", "ok"])
                    .inc();
                let lines = text.lines().map(str::to_owned).collect();
                set(finding, logtail::bound(lines, self.limits, false));
            }
            Err(e) => {
                self.metrics
                    .log_reads
                    .with_label_values(&["api", "error"])
                    .inc();
                tracing::debug!(pod = %pod.name, error = %e, "No previous log available");
            }
        }
    }
}

fn set(finding: &mut Finding, tail: Tail) {
    finding.log_lines = tail.lines;
    finding.log_truncated = tail.truncated;
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::{ContainerView, Terminated};

    fn view(state: ContainerState) -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            node: "n".into(),
            owner: None,
            phase: "Running".into(),
            reason: None,
            message: None,
            containers: vec![ContainerView {
                name: "app".into(),
                image: "i".into(),
                restart_count: 2,
                ready: false,
                state,
                last_terminated: None,
            }],
        }
    }

    fn terminated() -> Terminated {
        Terminated {
            reason: "OOMKilled".into(),
            exit_code: 137,
            message: String::new(),
            finished_at: None,
        }
    }

    #[test]
    fn the_failed_run_follows_the_container_state() {
        let waiting = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        let cases = [
            // (state, container asked for, run, log index at restart count 2)
            (
                ContainerState::Terminated(terminated()),
                Some("app"),
                FailedRun::Current,
                Some(2),
            ),
            (waiting, Some("app"), FailedRun::NewestDead, Some(2)),
            (
                ContainerState::Running,
                Some("app"),
                FailedRun::Previous,
                Some(1),
            ),
            (
                ContainerState::Unknown,
                Some("app"),
                FailedRun::Previous,
                Some(1),
            ),
            // another container's state says nothing about this one
            (
                ContainerState::Terminated(terminated()),
                Some("other"),
                FailedRun::Previous,
                Some(1),
            ),
            (
                ContainerState::Terminated(terminated()),
                None,
                FailedRun::Previous,
                Some(1),
            ),
        ];
        for (state, container, run, index) in cases {
            let got = FailedRun::of(&view(state.clone()), container);
            assert_eq!(got, run, "{state:?} {container:?}");
            assert_eq!(got.log_index(2), index);
        }
        assert_eq!(
            FailedRun::Previous.log_index(0),
            None,
            "no previous run yet"
        );
        assert_eq!(FailedRun::Current.log_index(0), Some(0), "the first run");
    }
}
