//! The report stage: gather the workload, match the namespace's policies, stop at the decide
//! boundary, and report: an Event on the target for every incident, `auto_agent_incidents_total`,
//! and the decision latency. Deciding and acting come with the remediation engine; until then a
//! matched incident is reported as such and nothing is changed.

use std::sync::Arc;

use auto_agent_engine::{Finding, Observed};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::leader::Leadership;
use crate::metrics::ControllerMetrics;
use crate::pipeline::Change;
use crate::policies::PolicyIndex;
use crate::workloads::WorkloadCache;

pub struct Reporter {
    pub recorder: Recorder,
    pub policies: PolicyIndex,
    pub workloads: Arc<WorkloadCache>,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
}

fn pod_ref(f: &Finding) -> Option<ObjectReference> {
    let pod = f.pod.as_ref()?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    })
}

fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    }
}

impl Reporter {
    pub async fn run(self, mut changes: mpsc::Receiver<Change>, stop: CancellationToken) {
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = stop.cancelled() => None,
            };
            let Some(change) = change else { return };
            self.handle(change).await;
        }
    }

    async fn handle(&self, change: Change) {
        let Change {
            finding,
            observed,
            received,
        } = change;
        let kind = finding.kind.as_str();
        let (namespace, workload) = match (&finding.pod, &finding.owner) {
            (Some(p), Some(o)) => (p.namespace.clone(), o.name.clone()),
            (Some(p), None) => (p.namespace.clone(), p.name.clone()),
            (None, _) => (String::new(), finding.node.clone()),
        };
        let (reason, note, target) = match &observed {
            Observed::Opened(key) | Observed::Reopened(key) => {
                self.metrics
                    .incidents
                    .with_label_values(&[kind, &namespace, &workload])
                    .inc();
                let (target, policy) = self.gather(&finding).await;
                let (reason, note) = match policy {
                    Some(p) => (
                        "IncidentMatched",
                        format!(
                            "{kind} incident {key} matches AutoRemediationPolicy {p}; reported only: this version has no decision step yet"
                        ),
                    ),
                    None => (
                        "NoPolicy",
                        format!(
                            "{kind} incident {key}: no AutoRemediationPolicy selects this workload; reported only"
                        ),
                    ),
                };
                (reason, note, target)
            }
            Observed::Resolved(key) => (
                "IncidentResolved",
                format!("{kind} cleared; incident {key} resolved"),
                Some(node_ref(&finding.node)),
            ),
            Observed::Repeated(_) | Observed::ClearedUnknown(_) | Observed::Duplicate => {
                self.metrics
                    .decision_latency
                    .with_label_values(&[kind])
                    .observe(received.elapsed().as_secs_f64());
                return;
            }
        };
        self.metrics
            .decision_latency
            .with_label_values(&[kind])
            .observe(received.elapsed().as_secs_f64());
        tracing::info!(kind, namespace = %namespace, workload = %workload, reason, "{note}");
        let Some(target) = target else { return };
        if self.leadership.fence("event").is_err() {
            return;
        }
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: "Report".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &target).await {
            self.metrics
                .action_errors
                .with_label_values(&["event"])
                .inc();
            tracing::warn!(error = %e, "Publishing an Event failed");
        }
    }

    /// The object to report on (the workload, else the pod, else the node) and the name of the
    /// first usable policy that selects the workload's pods.
    async fn gather(&self, f: &Finding) -> (Option<ObjectReference>, Option<String>) {
        let Some(pod) = &f.pod else {
            return (Some(node_ref(&f.node)), None);
        };
        let (kind, name) = match &f.owner {
            Some(o) => (o.kind.as_str(), o.name.as_str()),
            None => ("Pod", pod.name.as_str()),
        };
        let workload = match self.workloads.get(&pod.namespace, kind, name).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, kind, name, "Reading the workload failed");
                None
            }
        };
        let Some(workload) = workload else {
            return (pod_ref(f), None);
        };
        let policy = self
            .policies
            .in_namespace(&pod.namespace)
            .into_iter()
            .find(|p| p.selects(&workload.pod_labels))
            .map(|p| p.name);
        (Some(workload.reference), policy)
    }
}
