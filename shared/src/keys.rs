//! Annotation, label and finalizer keys, in one place so no module spells them twice.

/// API group of the project's custom resources.
pub const API_GROUP: &str = "autoagent.io";

/// Put `autoagent.io/ignore: "true"` on a pod or workload to keep the agent's hands off it.
pub const IGNORE_ANNOTATION: &str = "autoagent.io/ignore";

/// cluster-autoscaler's opt-out from eviction; honoured for every disruptive action.
pub const SAFE_TO_EVICT_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Mirror pods (static pods) carry this annotation; they are never touched.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The annotation on the controller's Lease that publishes the leader's gRPC endpoint.
pub const LEADER_ENDPOINT_ANNOTATION: &str = "autoagent.io/grpc-endpoint";

/// Audience of the projected ServiceAccount token the sensor presents to the controller.
pub const SENSOR_TOKEN_AUDIENCE: &str = "auto-agent";
