//! Evidence for crash and OOM findings: the previous container's log tail, read from the kubelet's
//! files on the node when they are there (cheap, and survives the API's log rotation), else from the
//! API (`pods/log?previous=true&tailLines=`).

use std::path::PathBuf;

use auto_agent_engine::{Finding, FindingKind};
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

impl EvidenceReader {
    /// Adds the log tail to `finding`. Never fails: without a readable log, the finding goes out
    /// without one.
    pub async fn attach(&self, finding: &mut Finding) {
        let (Some(pod), Some(container)) = (finding.pod.clone(), finding.container.clone()) else {
            return;
        };
        if let Some(path) = logtail::previous_log_path(
            &self.pod_log_dir,
            &pod.namespace,
            &pod.name,
            &pod.uid,
            &container,
            finding.restart_count,
        ) {
            match logtail::tail_file(&path, self.limits) {
                Ok(tail) => {
                    self.metrics
                        .log_reads
                        .with_label_values(&["node_file", "ok"])
                        .inc();
                    return set(finding, tail);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
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
            previous: true,
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
