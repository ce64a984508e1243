//! Annotation, label and finalizer keys, in one place so no module spells them twice.

/// API group of the project's custom resources.
pub const API_GROUP: &str = "autoagent.io";

/// Opt-out annotations (`autoagent.io/ignore: "true"`, cluster-autoscaler's `safe-to-evict:
/// "false"`), defined where the safety rule that reads them lives.
pub use auto_agent_engine::decide::rules::{
    IGNORE as IGNORE_ANNOTATION, SAFE_TO_EVICT as SAFE_TO_EVICT_ANNOTATION,
};

/// Mirror pods (static pods) carry this annotation; they are never touched.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The annotation on the controller's Lease that publishes the leader's gRPC endpoint.
pub const LEADER_ENDPOINT_ANNOTATION: &str = "autoagent.io/grpc-endpoint";

/// Audience of the projected ServiceAccount token the sensor presents to the controller.
pub const SENSOR_TOKEN_AUDIENCE: &str = "auto-agent";

/// Marks a Node the agent cordoned; the value is the NodeRemediationPolicy's name. The uncordon
/// sweep and the policy's `status.cordonedNodes` read it, so both survive a leader change.
pub const CORDONED_BY_ANNOTATION: &str = "autoagent.io/cordoned-by";
/// Label on the Nodes the agent cordoned (beside the annotation naming the policy), so the
/// uncordon sweep lists only those, not every Node.
pub const CORDONED_LABEL: &str = "autoagent.io/cordoned";

/// Prefix of the workload annotation that keeps a container's image from before a mirror swap
/// (`autoagent.io/original-image-<container>`), so the swap can be reverted.
pub const ORIGINAL_IMAGE_PREFIX: &str = "autoagent.io/original-image-";
/// Prefix of the workload annotation that keeps a container's memory limit and request from
/// before the agent's first bump (`autoagent.io/original-memory-<container>`, JSON
/// `{"limit": "256Mi", "request": "128Mi"}`, `null` where none was set), so bumps can be reverted.
pub const ORIGINAL_MEMORY_PREFIX: &str = "autoagent.io/original-memory-";
