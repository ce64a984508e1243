//! Kubernetes Events for every action and refusal, written by the leader only (fenced).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;

#[derive(Clone)]
pub struct EventSink {
    pub recorder: Recorder,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

impl EventSink {
    /// Publishes an Event on `target` with a PascalCase `reason`; dropped (and counted) when this
    /// replica does not hold the lease.
    pub async fn publish(
        &self,
        target: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if self.leadership.fence("event").is_err() {
            return;
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Remediate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, target).await {
            self.metrics
                .action_errors
                .with_label_values(&["event"])
                .inc();
            tracing::warn!(error = %e, "Publishing an Event failed");
        }
    }
}
