//! The scaling decision itself; the rules and their order are documented on the `scale` module.

use super::gate::GateSummary;
use super::{AnomalyState, Direction, HoldReason, Reading, ScaleDecision, ScaleFacts, ScaleSpec};

/// Decides whether to scale one workload now.
pub fn decide_scale(spec: &ScaleSpec, facts: &ScaleFacts, now_ms: i64) -> ScaleDecision {
    if let Some(hpa) = &facts.hpa {
        return hold(
            HoldReason::HpaPresent,
            format!("HorizontalPodAutoscaler {hpa} targets this workload; replicas are its to set"),
        );
    }
    if let Err(problem) = check_input(spec, facts) {
        return hold(HoldReason::InvalidInput, problem);
    }
    let current = facts.current_replicas;
    if current == 0 {
        return hold(
            HoldReason::ScaledToZero,
            "the workload is scaled to zero; scaling resumes once someone scales it up",
        );
    }
    if current < spec.min_replicas {
        let reason = format!(
            "{current} replicas is below minReplicas {}",
            spec.min_replicas
        );
        return change(facts, spec.min_replicas, Direction::Up, reason);
    }
    if current > spec.max_replicas {
        let reason = format!(
            "{current} replicas is above maxReplicas {}",
            spec.max_replicas
        );
        return change(facts, spec.max_replicas, Direction::Down, reason);
    }
    let cpu = match &facts.cpu {
        Reading::Value(v) if v.is_finite() => *v,
        Reading::Value(v) => {
            return hold(
                HoldReason::CpuNotFinite,
                format!("the CPU ratio is {v}; do the pods set CPU requests?"),
            );
        }
        Reading::Empty => {
            return hold(HoldReason::CpuEmpty, "the CPU query returned no series");
        }
        Reading::Failed(error) => {
            return hold(
                HoldReason::CpuQueryFailed,
                format!("the CPU query failed: {error}"),
            );
        }
    };
    let gates = GateSummary::of(&facts.gates);
    if cpu > spec.cpu_threshold {
        return up(spec, facts, cpu, &gates, now_ms);
    }
    if cpu < spec.scale_down_cpu_threshold {
        return down(spec, facts, cpu, &gates, now_ms);
    }
    hold(
        HoldReason::WithinBand,
        format!(
            "CPU {cpu:.2} is within [{:.2}, {:.2}]",
            spec.scale_down_cpu_threshold, spec.cpu_threshold
        ),
    )
}

/// Replicas one scale-up adds at `current`: `max(stepReplicas, ceil(current * stepPercent / 100))`,
/// and at least one. Not yet capped at maxReplicas.
pub fn up_step(spec: &ScaleSpec, current: i32) -> i32 {
    let current = u64::try_from(current).unwrap_or(0);
    let by_percent = (current * u64::from(spec.step_percent)).div_ceil(100);
    let by_percent = i64::try_from(by_percent).unwrap_or(i64::MAX);
    let step = by_percent.max(i64::from(spec.step_replicas)).max(1);
    i32::try_from(step).unwrap_or(i32::MAX)
}

fn up(
    spec: &ScaleSpec,
    facts: &ScaleFacts,
    cpu: f64,
    gates: &GateSummary<'_>,
    now_ms: i64,
) -> ScaleDecision {
    let current = facts.current_replicas;
    if gates.configured == 0 {
        return hold(
            HoldReason::NoGateConfigured,
            format!(
                "CPU {cpu:.2} is above {:.2}, but the policy configures no gate (queueDepth, \
                 errorRate, p95Latency); the seed's rule is CPU AND a gate",
                spec.cpu_threshold
            ),
        );
    }
    if gates.active.is_empty() {
        if !gates.failed.is_empty() {
            return hold(
                HoldReason::GateQueryFailed,
                format!(
                    "CPU {cpu:.2} is above {:.2}, no gate is active and some could not be read: {}",
                    spec.cpu_threshold,
                    gates.failed_names()
                ),
            );
        }
        return hold(
            HoldReason::NoGateAgrees,
            format!(
                "CPU {cpu:.2} is above {:.2} but none of the {} gates is active",
                spec.cpu_threshold, gates.configured
            ),
        );
    }
    if current >= spec.max_replicas {
        return hold(
            HoldReason::AtMaxReplicas,
            format!(
                "CPU {cpu:.2} is above {:.2} but the workload is at maxReplicas {}",
                spec.cpu_threshold, spec.max_replicas
            ),
        );
    }
    if let Some(last) = facts.last_scale_up_ms
        && in_cooldown(last, spec.cooldown_up_ms, now_ms)
    {
        return hold(
            HoldReason::CooldownUp,
            format!(
                "last scale-up {} s ago; cooldownUpSeconds {}",
                (now_ms - last) / 1000,
                spec.cooldown_up_ms / 1000
            ),
        );
    }
    let target = i64::from(current) + i64::from(up_step(spec, current));
    let to = i32::try_from(target.min(i64::from(spec.max_replicas))).unwrap_or(spec.max_replicas);
    let reason = format!(
        "CPU {cpu:.2} is above {:.2}; active gates: {}",
        spec.cpu_threshold,
        gates.active_names()
    );
    change(facts, to, Direction::Up, reason)
}

fn down(
    spec: &ScaleSpec,
    facts: &ScaleFacts,
    cpu: f64,
    gates: &GateSummary<'_>,
    now_ms: i64,
) -> ScaleDecision {
    let current = facts.current_replicas;
    if !gates.active.is_empty() {
        return hold(
            HoldReason::GateActive,
            format!(
                "CPU {cpu:.2} is below {:.2} but gates are active: {}",
                spec.scale_down_cpu_threshold,
                gates.active_names()
            ),
        );
    }
    if !gates.failed.is_empty() {
        return hold(
            HoldReason::GateQueryFailed,
            format!(
                "CPU {cpu:.2} is below {:.2} but some gates could not be read: {}",
                spec.scale_down_cpu_threshold,
                gates.failed_names()
            ),
        );
    }
    let floor = spec.min_replicas.max(1);
    if current <= floor {
        let detail = if spec.min_replicas < 1 {
            format!("at {current} replica; the agent never removes the last replica")
        } else {
            format!("at minReplicas {}", spec.min_replicas)
        };
        return hold(HoldReason::AtMinReplicas, detail);
    }
    match &facts.anomaly {
        AnomalyState::Anomalous { z } => {
            return hold(
                HoldReason::AnomalyActive,
                format!("the signal is anomalous (z = {z:.2}); no scale-down during an anomaly"),
            );
        }
        AnomalyState::Unknown { reason } => {
            return hold(
                HoldReason::AnomalyUnknown,
                format!("the anomaly check could not decide: {reason}"),
            );
        }
        AnomalyState::NotConfigured | AnomalyState::Normal { .. } => {}
    }
    if let Some(last) = facts.last_scale_ms
        && in_cooldown(last, spec.cooldown_down_ms, now_ms)
    {
        return hold(
            HoldReason::CooldownDown,
            format!(
                "last scaling {} s ago; cooldownDownSeconds {}",
                (now_ms - last) / 1000,
                spec.cooldown_down_ms / 1000
            ),
        );
    }
    let window_s = spec.stabilization_window_ms / 1000;
    match facts.quiet_since_ms {
        Some(since) if now_ms.saturating_sub(since) >= spec.stabilization_window_ms => {}
        Some(since) => {
            return hold(
                HoldReason::NotQuietLongEnough,
                format!(
                    "quiet for {} s of the {window_s} s stabilization window",
                    now_ms.saturating_sub(since) / 1000
                ),
            );
        }
        None => {
            return hold(
                HoldReason::NotQuietLongEnough,
                format!("the signals are not quiet yet; they must be for {window_s} s"),
            );
        }
    }
    let reason = format!(
        "CPU {cpu:.2} is below {:.2} and all signals have been quiet for {window_s} s",
        spec.scale_down_cpu_threshold
    );
    change(facts, current - 1, Direction::Down, reason)
}

/// Rule 2: inputs the CRD's validation should have refused.
fn check_input(spec: &ScaleSpec, facts: &ScaleFacts) -> Result<(), String> {
    let (up, down) = (spec.cpu_threshold, spec.scale_down_cpu_threshold);
    if spec.min_replicas < 0 {
        return Err(format!("minReplicas {} is negative", spec.min_replicas));
    }
    if spec.max_replicas < 1 {
        return Err(format!("maxReplicas {} is below 1", spec.max_replicas));
    }
    if spec.min_replicas > spec.max_replicas {
        return Err(format!(
            "minReplicas {} is above maxReplicas {}",
            spec.min_replicas, spec.max_replicas
        ));
    }
    if !up.is_finite() || !down.is_finite() {
        return Err(format!(
            "cpuThreshold {up} and scaleDownCpuThreshold {down} must be numbers"
        ));
    }
    if down >= up {
        return Err(format!(
            "scaleDownCpuThreshold {down} is not below cpuThreshold {up}"
        ));
    }
    if facts.current_replicas < 0 {
        return Err(format!(
            "the workload reports {} replicas",
            facts.current_replicas
        ));
    }
    Ok(())
}

/// Whether a cooldown of `cooldown_ms` that started at `last_ms` still runs at `now_ms`.
fn in_cooldown(last_ms: i64, cooldown_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(last_ms) < cooldown_ms
}

fn hold(reason: HoldReason, detail: impl Into<String>) -> ScaleDecision {
    ScaleDecision::Hold {
        reason,
        detail: detail.into(),
    }
}

/// A change from the current replicas to `to`: a proposal for GitOps-managed workloads, else a
/// scale (marked dry-run when the policy is).
fn change(facts: &ScaleFacts, to: i32, direction: Direction, reason: String) -> ScaleDecision {
    let from = facts.current_replicas;
    if facts.gitops_managed {
        ScaleDecision::Propose {
            from,
            to,
            direction,
            reason,
        }
    } else {
        ScaleDecision::Scale {
            from,
            to,
            direction,
            reason,
            dry_run: facts.dry_run,
        }
    }
}
