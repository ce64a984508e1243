//! Scaling a workload on Prometheus signals: (spec, facts read right before, now) -> scale, propose
//! or hold, each hold with a machine-readable reason. Pure: the controller runs the queries, tracks
//! since when the signals have been quiet (`next_quiet_since`) and when it last scaled, and passes
//! all of it in.
//!
//! The design is deliberately more cautious than an HPA: scale up only when CPU is high AND some
//! other signal (a gate: queue depth, errors, latency) agrees, so a policy without gates never
//! scales up on CPU; scale down slowly
//! (one replica at a time) and only after every signal has been quiet for a whole window; never act
//! on missing data.
//!
//! # Rules, in the order they are checked (the first that applies decides)
//!
//! 1. An HPA targets the workload: `Hold(HpaPresent)`, whatever else holds. Two controllers writing
//!    `replicas` fight each other; the HPA owns it.
//! 2. The spec contradicts itself (minReplicas < 0, maxReplicas < 1, minReplicas > maxReplicas, a
//!    threshold that is not a finite number, scaleDownCpuThreshold >= cpuThreshold) or the replica
//!    count is negative: `Hold(InvalidInput)`. The CRD's validation should make this unreachable;
//!    the engine holds rather than guess.
//! 3. Zero replicas: `Hold(ScaledToZero)`. Someone scaled the workload to zero on purpose (the HPA
//!    treats this as "scaling disabled" too); bringing it back would fight them, and with no pods
//!    there is no CPU to read.
//! 4. Outside `[minReplicas, maxReplicas]`: scale straight to the nearest bound ("below
//!    minReplicas" / "above maxReplicas"). These are bound corrections: the user asked for the
//!    bounds, so signals, gates, cooldowns and anomalies do not apply (the HPA hold still does).
//! 5. CPU query failed: `Hold(CpuQueryFailed)`; no series: `Hold(CpuEmpty)`; NaN or infinite:
//!    `Hold(CpuNotFinite)` (usage / requests divides by zero when the pods set no CPU request).
//!    Never scale on missing data, in either direction.
//! 6. Up, when CPU > cpuThreshold (strictly):
//!    - no gate configured: `Hold(NoGateConfigured)`. The seed's rule is CPU AND a gate; CPU
//!      alone is not enough evidence that more replicas would help;
//!    - no gate active: `Hold(GateQueryFailed)` if some gate's query failed (it might have
//!      agreed), else `Hold(NoGateAgrees)`. A failed gate counts as not active, so one active gate
//!      is enough even when another failed;
//!    - at maxReplicas: `Hold(AtMaxReplicas)`;
//!    - less than cooldownUp since the last scale-up: `Hold(CooldownUp)`. A recent scale-down does
//!      not delay a scale-up: load that comes back must be served;
//!    - else scale to `min(max, current + step)`, `step = max(stepReplicas, ceil(current *
//!      stepPercent / 100), 1)`.
//!
//!    Anomalies do not hold a scale-up: an anomalous spike is when capacity may be needed, and the
//!    gates already guard scale-ups.
//! 7. Down, when CPU < scaleDownCpuThreshold (strictly):
//!    - a gate is active: `Hold(GateActive)` (CPU is low but the queue, errors or latency are not);
//!    - a gate's query failed: `Hold(GateQueryFailed)`;
//!    - at `max(minReplicas, 1)`: `Hold(AtMinReplicas)`. The agent never removes the last replica,
//!      even with minReplicas 0: with no pods there is no CPU signal to scale back up on;
//!    - anomaly `Anomalous`: `Hold(AnomalyActive)`; `Unknown`: `Hold(AnomalyUnknown)` (too little
//!      history or a failed query is not evidence that all is normal);
//!    - less than cooldownDown since the last scaling in either direction: `Hold(CooldownDown)`;
//!    - quiet for less than the stabilization window (`now - quiet_since < window`, or not quiet
//!      at all): `Hold(NotQuietLongEnough)`;
//!    - else scale down by one replica.
//! 8. Otherwise (CPU between the thresholds, or exactly on one): `Hold(WithinBand)`.
//!
//! A change becomes `Propose` when the workload is GitOps-managed (a live patch would be reverted:
//! the change is recorded for a human to commit; dry-run does not matter then), else `Scale` with
//! `dry_run` copied from the facts: dry-run produces the very same plan as live.
//!
//! Gates (`gate_active`): a gate is active when its query returns a value, or, with a threshold, a
//! value strictly above it; no series is not active; a failed query is unknown (`None`).

mod decide;
mod gate;
mod quiet;
pub mod zscore;

use serde::{Deserialize, Serialize};

pub use decide::{decide_scale, up_step};
pub use gate::{GateSummary, gate_active};
pub use quiet::{is_quiet, next_quiet_since};
pub use zscore::{MIN_BASELINE_POINTS, ZScore, anomaly_state, zscore};

/// The parts of a policy's `spec.actions.scale` the decision reads (converted from the CRD at the
/// edge; durations in milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleSpec {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Scale up above this CPU usage / requests ratio.
    pub cpu_threshold: f64,
    /// Scale down below this CPU usage / requests ratio.
    pub scale_down_cpu_threshold: f64,
    /// Replicas added by one scale-up, at least (see `up_step`).
    pub step_replicas: i32,
    /// Percent of the current replicas added by one scale-up, at least.
    pub step_percent: u32,
    /// After a scale-up, no further scale-up for this long.
    pub cooldown_up_ms: i64,
    /// After any scaling, no scale-down for this long.
    pub cooldown_down_ms: i64,
    /// Signals must have been quiet this long before a scale-down.
    pub stabilization_window_ms: i64,
}

/// One Prometheus query's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reading {
    /// A scalar, or the one (aggregated) sample of a vector.
    Value(f64),
    /// The query succeeded and returned no series.
    Empty,
    /// Query error, Prometheus unreachable, or a response that could not be read.
    Failed(String),
}

/// One configured gate and what its query returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReading {
    /// `queueDepth`, `errorRate`, `p95Latency`: used in details.
    pub name: String,
    pub reading: Reading,
    pub threshold: Option<f64>,
}

/// The anomaly check's verdict on the workload's signal (see `zscore`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AnomalyState {
    /// The policy configures no anomaly check.
    NotConfigured,
    Normal {
        z: f64,
    },
    /// `|z|` is above the threshold. `z` may be infinite (a change after a constant baseline).
    Anomalous {
        z: f64,
    },
    /// Too little history, a failed query, or a bad threshold.
    Unknown {
        reason: String,
    },
}

/// What the controller read right before deciding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleFacts {
    /// `spec.replicas` of the workload (its scale subresource).
    pub current_replicas: i32,
    /// CPU usage / CPU requests across the workload's pods.
    pub cpu: Reading,
    /// One entry per configured gate; empty when the policy configures none.
    pub gates: Vec<GateReading>,
    /// The name of a HorizontalPodAutoscaler targeting the workload.
    pub hpa: Option<String>,
    /// Argo CD or Flux manages the workload: live patches would be reverted.
    pub gitops_managed: bool,
    pub anomaly: AnomalyState,
    /// Since when the signals have been quiet (`next_quiet_since`, updated with this evaluation's
    /// facts before deciding); `None` when they are not.
    pub quiet_since_ms: Option<i64>,
    /// When the agent last scaled this workload up.
    pub last_scale_up_ms: Option<i64>,
    /// When the agent last scaled this workload, in either direction.
    pub last_scale_ms: Option<i64>,
    /// The policy is in dry-run: report, change nothing.
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "Up",
            Self::Down => "Down",
        }
    }
}

/// Why the decision changes nothing. The strings of `as_str` are stable: they are Event reasons and
/// the `reason` label of metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HoldReason {
    /// An HPA targets the workload; it owns `replicas`.
    HpaPresent,
    /// The spec contradicts itself or the replica count is negative (rule 2).
    InvalidInput,
    /// The workload has zero replicas: scaling is off until someone scales it up.
    ScaledToZero,
    /// The CPU query failed.
    CpuQueryFailed,
    /// The CPU query returned no series.
    CpuEmpty,
    /// The CPU ratio is NaN or infinite (pods without CPU requests).
    CpuNotFinite,
    /// A gate's query failed and no other gate says yes (up), or at all (down).
    GateQueryFailed,
    /// CPU is high, gates are configured, none is active.
    NoGateAgrees,
    /// CPU is high, but the policy configures no gate to agree with it.
    NoGateConfigured,
    /// CPU is low but a gate is active.
    GateActive,
    /// Less than cooldownUp since the last scale-up.
    CooldownUp,
    /// Less than cooldownDown since the last scaling.
    CooldownDown,
    /// The signals have not been quiet for the whole stabilization window.
    NotQuietLongEnough,
    /// The anomaly check flags the signal.
    AnomalyActive,
    /// The anomaly check could not decide.
    AnomalyUnknown,
    AtMaxReplicas,
    /// At minReplicas (or at one replica: the agent never removes the last).
    AtMinReplicas,
    /// CPU is between the thresholds: nothing to do.
    WithinBand,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HpaPresent => "HpaPresent",
            Self::InvalidInput => "InvalidInput",
            Self::ScaledToZero => "ScaledToZero",
            Self::CpuQueryFailed => "CpuQueryFailed",
            Self::CpuEmpty => "CpuEmpty",
            Self::CpuNotFinite => "CpuNotFinite",
            Self::GateQueryFailed => "GateQueryFailed",
            Self::NoGateAgrees => "NoGateAgrees",
            Self::NoGateConfigured => "NoGateConfigured",
            Self::GateActive => "GateActive",
            Self::CooldownUp => "CooldownUp",
            Self::CooldownDown => "CooldownDown",
            Self::NotQuietLongEnough => "NotQuietLongEnough",
            Self::AnomalyActive => "AnomalyActive",
            Self::AnomalyUnknown => "AnomalyUnknown",
            Self::AtMaxReplicas => "AtMaxReplicas",
            Self::AtMinReplicas => "AtMinReplicas",
            Self::WithinBand => "WithinBand",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleDecision {
    /// Patch the scale subresource to `to` (unless `dry_run`).
    Scale {
        from: i32,
        to: i32,
        direction: Direction,
        reason: String,
        dry_run: bool,
    },
    /// GitOps-managed: record the change for a human; do not patch.
    Propose {
        from: i32,
        to: i32,
        direction: Direction,
        reason: String,
    },
    Hold {
        reason: HoldReason,
        detail: String,
    },
}

impl ScaleDecision {
    /// The hold's reason; `None` for a change.
    pub fn hold_reason(&self) -> Option<HoldReason> {
        match self {
            Self::Hold { reason, .. } => Some(*reason),
            Self::Scale { .. } | Self::Propose { .. } => None,
        }
    }

    /// `(from, to, direction)` of a change (scale or proposal); `None` for a hold.
    pub fn change(&self) -> Option<(i32, i32, Direction)> {
        match self {
            Self::Scale {
                from,
                to,
                direction,
                ..
            }
            | Self::Propose {
                from,
                to,
                direction,
                ..
            } => Some((*from, *to, *direction)),
            Self::Hold { .. } => None,
        }
    }
}
