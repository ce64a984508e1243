//! The scaling decision: a table of named cases (each rule firing and not firing, its boundaries),
//! the full cross product of signals, gates, cooldowns, bounds, HPA, GitOps, dry-run, anomaly and
//! quiet window against a spelled-out specification, the gate and quiet helpers, and two timelines
//! that run the decision the way the controller does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::scale::{
    AnomalyState, Direction, GateReading, GateSummary, HoldReason, Reading, ScaleDecision,
    ScaleFacts, ScaleSpec, decide_scale, gate_active, is_quiet, next_quiet_since, up_step,
};

const S: i64 = 1000;
const NOW: i64 = 1_000_000 * S;
const MIN: i32 = 2;
const MAX: i32 = 10;

fn spec() -> ScaleSpec {
    ScaleSpec {
        min_replicas: MIN,
        max_replicas: MAX,
        cpu_threshold: 0.80,
        scale_down_cpu_threshold: 0.30,
        step_replicas: 1,
        step_percent: 50,
        cooldown_up_ms: 180 * S,
        cooldown_down_ms: 900 * S,
        stabilization_window_ms: 300 * S,
    }
}

/// Four replicas, CPU in the band, nothing recent.
fn facts() -> ScaleFacts {
    ScaleFacts {
        current_replicas: 4,
        cpu: Reading::Value(0.5),
        gates: vec![],
        hpa: None,
        gitops_managed: false,
        anomaly: AnomalyState::NotConfigured,
        quiet_since_ms: None,
        last_scale_up_ms: None,
        last_scale_ms: None,
        dry_run: false,
    }
}

/// CPU above the scale-up threshold, and a gate that agrees.
fn hot() -> ScaleFacts {
    ScaleFacts {
        cpu: Reading::Value(0.95),
        gates: vec![active()],
        ..facts()
    }
}

/// CPU below the scale-down threshold, quiet for longer than the window.
fn cold() -> ScaleFacts {
    ScaleFacts {
        cpu: Reading::Value(0.10),
        quiet_since_ms: Some(NOW - 600 * S),
        ..facts()
    }
}

fn gate(name: &str, reading: Reading, threshold: Option<f64>) -> GateReading {
    GateReading {
        name: name.into(),
        reading,
        threshold,
    }
}

fn active() -> GateReading {
    gate("queueDepth", Reading::Value(120.0), Some(100.0))
}

fn inactive() -> GateReading {
    gate("errorRate", Reading::Value(0.01), Some(0.05))
}

fn empty() -> GateReading {
    gate("p95Latency", Reading::Empty, None)
}

fn failed() -> GateReading {
    gate(
        "p95Latency",
        Reading::Failed("connection refused".into()),
        Some(0.5),
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Scale(i32),
    Propose(i32),
    Hold(HoldReason),
}

/// The decision's outcome, after checking what every change must satisfy: it starts at the current
/// replicas, moves, names its direction right and carries the facts' dry-run flag.
fn outcome(facts: &ScaleFacts, d: &ScaleDecision) -> Outcome {
    if let Some((from, to, direction)) = d.change() {
        assert_eq!(from, facts.current_replicas, "{d:?}");
        assert_ne!(from, to, "a change must change something: {d:?}");
        let want = if to > from {
            Direction::Up
        } else {
            Direction::Down
        };
        assert_eq!(direction, want, "{d:?}");
    }
    match d {
        ScaleDecision::Scale { to, dry_run, .. } => {
            assert_eq!(*dry_run, facts.dry_run, "{d:?}");
            Outcome::Scale(*to)
        }
        ScaleDecision::Propose { to, .. } => Outcome::Propose(*to),
        ScaleDecision::Hold { reason, .. } => Outcome::Hold(*reason),
    }
}

fn run(spec: &ScaleSpec, facts: &ScaleFacts) -> Outcome {
    outcome(facts, &decide_scale(spec, facts, NOW))
}

#[test]
fn decision_table() {
    use HoldReason::*;
    use Outcome::{Hold, Propose, Scale};
    let s = spec();
    let cases: Vec<(&str, ScaleSpec, ScaleFacts, Outcome)> = vec![
        // The HPA owns replicas, whatever else holds.
        (
            "hpa, cpu high",
            s.clone(),
            ScaleFacts {
                hpa: Some("api".into()),
                ..hot()
            },
            Hold(HpaPresent),
        ),
        (
            "hpa, quiet",
            s.clone(),
            ScaleFacts {
                hpa: Some("api".into()),
                ..cold()
            },
            Hold(HpaPresent),
        ),
        (
            "hpa, below min",
            s.clone(),
            ScaleFacts {
                hpa: Some("api".into()),
                current_replicas: 1,
                ..facts()
            },
            Hold(HpaPresent),
        ),
        (
            "hpa, above max",
            s.clone(),
            ScaleFacts {
                hpa: Some("api".into()),
                current_replicas: 20,
                ..facts()
            },
            Hold(HpaPresent),
        ),
        (
            "hpa, invalid spec",
            ScaleSpec {
                min_replicas: 5,
                max_replicas: 3,
                ..s.clone()
            },
            ScaleFacts {
                hpa: Some("api".into()),
                ..hot()
            },
            Hold(HpaPresent),
        ),
        // Inputs the CRD should have refused.
        (
            "min above max",
            ScaleSpec {
                min_replicas: 5,
                max_replicas: 3,
                ..s.clone()
            },
            hot(),
            Hold(InvalidInput),
        ),
        (
            "negative min",
            ScaleSpec {
                min_replicas: -1,
                ..s.clone()
            },
            hot(),
            Hold(InvalidInput),
        ),
        (
            "max zero",
            ScaleSpec {
                min_replicas: 0,
                max_replicas: 0,
                ..s.clone()
            },
            hot(),
            Hold(InvalidInput),
        ),
        (
            "down threshold equal to up threshold",
            ScaleSpec {
                scale_down_cpu_threshold: 0.80,
                ..s.clone()
            },
            hot(),
            Hold(InvalidInput),
        ),
        (
            "down threshold above up threshold",
            ScaleSpec {
                scale_down_cpu_threshold: 0.9,
                ..s.clone()
            },
            cold(),
            Hold(InvalidInput),
        ),
        (
            "NaN threshold",
            ScaleSpec {
                cpu_threshold: f64::NAN,
                ..s.clone()
            },
            hot(),
            Hold(InvalidInput),
        ),
        (
            "negative replicas",
            s.clone(),
            ScaleFacts {
                current_replicas: -1,
                ..hot()
            },
            Hold(InvalidInput),
        ),
        (
            "min equal to max is valid",
            ScaleSpec {
                min_replicas: 4,
                max_replicas: 4,
                ..s.clone()
            },
            hot(),
            Hold(AtMaxReplicas),
        ),
        // Zero replicas: someone turned the workload off.
        (
            "scaled to zero, cpu high",
            s.clone(),
            ScaleFacts {
                current_replicas: 0,
                ..hot()
            },
            Hold(ScaledToZero),
        ),
        (
            "scaled to zero, below min",
            s.clone(),
            ScaleFacts {
                current_replicas: 0,
                cpu: Reading::Empty,
                ..facts()
            },
            Hold(ScaledToZero),
        ),
        // Bound corrections ignore signals, gates, cooldowns and anomalies.
        (
            "below min, cpu failed",
            s.clone(),
            ScaleFacts {
                current_replicas: 1,
                cpu: Reading::Failed("prometheus down".into()),
                ..facts()
            },
            Scale(MIN),
        ),
        (
            "below min, quiet, anomalous, in both cooldowns",
            ScaleSpec {
                min_replicas: 5,
                ..s.clone()
            },
            ScaleFacts {
                current_replicas: 3,
                anomaly: AnomalyState::Anomalous { z: 9.0 },
                last_scale_up_ms: Some(NOW - S),
                last_scale_ms: Some(NOW - S),
                ..cold()
            },
            Scale(5),
        ),
        (
            "below min, no gate agrees",
            s.clone(),
            ScaleFacts {
                current_replicas: 1,
                gates: vec![inactive()],
                ..hot()
            },
            Scale(MIN),
        ),
        (
            "above max, cpu empty",
            s.clone(),
            ScaleFacts {
                current_replicas: 15,
                cpu: Reading::Empty,
                ..facts()
            },
            Scale(MAX),
        ),
        (
            "above max, cpu high, gate active, in cooldown",
            s.clone(),
            ScaleFacts {
                current_replicas: 15,
                gates: vec![active()],
                last_scale_ms: Some(NOW - S),
                anomaly: AnomalyState::Unknown {
                    reason: "no data".into(),
                },
                ..hot()
            },
            Scale(MAX),
        ),
        (
            "below min, gitops",
            s.clone(),
            ScaleFacts {
                current_replicas: 1,
                gitops_managed: true,
                ..facts()
            },
            Propose(MIN),
        ),
        // Never scale on missing data.
        (
            "cpu failed",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Failed("timeout".into()),
                ..cold()
            },
            Hold(CpuQueryFailed),
        ),
        (
            "cpu failed, gate active",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Failed("timeout".into()),
                gates: vec![active()],
                ..facts()
            },
            Hold(CpuQueryFailed),
        ),
        (
            "cpu empty",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Empty,
                ..cold()
            },
            Hold(CpuEmpty),
        ),
        (
            "cpu NaN",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(f64::NAN),
                ..cold()
            },
            Hold(CpuNotFinite),
        ),
        (
            "cpu +inf",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(f64::INFINITY),
                ..hot()
            },
            Hold(CpuNotFinite),
        ),
        (
            "cpu -inf",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(f64::NEG_INFINITY),
                ..cold()
            },
            Hold(CpuNotFinite),
        ),
        // The band and its edges (both thresholds are strict).
        ("cpu mid", s.clone(), facts(), Hold(WithinBand)),
        (
            "cpu exactly at the up threshold",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(0.80),
                ..hot()
            },
            Hold(WithinBand),
        ),
        (
            "cpu exactly at the down threshold",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(0.30),
                ..cold()
            },
            Hold(WithinBand),
        ),
        (
            "cpu just above the up threshold",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(0.8001),
                ..hot()
            },
            Scale(6),
        ),
        (
            "cpu just below the down threshold",
            s.clone(),
            ScaleFacts {
                cpu: Reading::Value(0.2999),
                ..cold()
            },
            Scale(3),
        ),
        (
            "mid band, gate active",
            s.clone(),
            ScaleFacts {
                gates: vec![active()],
                ..facts()
            },
            Hold(WithinBand),
        ),
        // Up.
        (
            "up, gate active: 4 + ceil(50% of 4)",
            s.clone(),
            hot(),
            Scale(6),
        ),
        // The seed's rule is CPU AND a gate: without gates CPU alone never scales up.
        (
            "up, no gate configured",
            s.clone(),
            ScaleFacts {
                gates: vec![],
                ..hot()
            },
            Hold(NoGateConfigured),
        ),
        (
            "up, no gate configured, at max: the missing gate is the reason",
            s.clone(),
            ScaleFacts {
                gates: vec![],
                current_replicas: MAX,
                ..hot()
            },
            Hold(NoGateConfigured),
        ),
        (
            "below min, no gate configured: the bound is corrected",
            s.clone(),
            ScaleFacts {
                gates: vec![],
                current_replicas: 1,
                ..hot()
            },
            Scale(MIN),
        ),
        (
            "up, gate active",
            s.clone(),
            ScaleFacts {
                gates: vec![active()],
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, gate without threshold returns a series",
            s.clone(),
            ScaleFacts {
                gates: vec![gate("queueDepth", Reading::Value(0.0), None)],
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, one of several gates active",
            s.clone(),
            ScaleFacts {
                gates: vec![inactive(), empty(), active()],
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, one gate active, another failed",
            s.clone(),
            ScaleFacts {
                gates: vec![failed(), active()],
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, gate below its threshold",
            s.clone(),
            ScaleFacts {
                gates: vec![inactive()],
                ..hot()
            },
            Hold(NoGateAgrees),
        ),
        (
            "up, gate exactly at its threshold",
            s.clone(),
            ScaleFacts {
                gates: vec![gate("queueDepth", Reading::Value(100.0), Some(100.0))],
                ..hot()
            },
            Hold(NoGateAgrees),
        ),
        (
            "up, gate empty",
            s.clone(),
            ScaleFacts {
                gates: vec![empty()],
                ..hot()
            },
            Hold(NoGateAgrees),
        ),
        (
            "up, gate NaN against a threshold",
            s.clone(),
            ScaleFacts {
                gates: vec![gate("errorRate", Reading::Value(f64::NAN), Some(0.05))],
                ..hot()
            },
            Hold(NoGateAgrees),
        ),
        (
            "up, gate failed",
            s.clone(),
            ScaleFacts {
                gates: vec![failed()],
                ..hot()
            },
            Hold(GateQueryFailed),
        ),
        (
            "up, gate failed, another inactive",
            s.clone(),
            ScaleFacts {
                gates: vec![inactive(), failed()],
                ..hot()
            },
            Hold(GateQueryFailed),
        ),
        (
            "up, cooldown: 179.999 s after a scale-up",
            s.clone(),
            ScaleFacts {
                last_scale_up_ms: Some(NOW - 180 * S + 1),
                last_scale_ms: Some(NOW - 180 * S + 1),
                ..hot()
            },
            Hold(CooldownUp),
        ),
        (
            "up, cooldown over: 180 s after a scale-up",
            s.clone(),
            ScaleFacts {
                last_scale_up_ms: Some(NOW - 180 * S),
                last_scale_ms: Some(NOW - 180 * S),
                ..hot()
            },
            Scale(6),
        ),
        (
            "up right after a scale-down",
            s.clone(),
            ScaleFacts {
                last_scale_up_ms: Some(NOW - 3600 * S),
                last_scale_ms: Some(NOW - S),
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, cooldown up is zero",
            ScaleSpec {
                cooldown_up_ms: 0,
                ..s.clone()
            },
            ScaleFacts {
                last_scale_up_ms: Some(NOW),
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, anomalous (anomalies never hold scale-ups)",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Anomalous { z: 7.0 },
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, anomaly unknown",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Unknown {
                    reason: "2 points".into(),
                },
                ..hot()
            },
            Scale(6),
        ),
        (
            "up, at max",
            s.clone(),
            ScaleFacts {
                current_replicas: MAX,
                ..hot()
            },
            Hold(AtMaxReplicas),
        ),
        (
            "up, at max and in cooldown: the cap is the reason",
            s.clone(),
            ScaleFacts {
                current_replicas: MAX,
                last_scale_up_ms: Some(NOW - S),
                ..hot()
            },
            Hold(AtMaxReplicas),
        ),
        (
            "up, at max, no gate agrees: the gates are the reason",
            s.clone(),
            ScaleFacts {
                current_replicas: MAX,
                gates: vec![inactive()],
                ..hot()
            },
            Hold(NoGateAgrees),
        ),
        (
            "up, capped at max: 9 + 5 -> 10",
            s.clone(),
            ScaleFacts {
                current_replicas: 9,
                ..hot()
            },
            Scale(MAX),
        ),
        (
            "up, at min: 2 + max(1, ceil(1.0)) -> 3",
            s.clone(),
            ScaleFacts {
                current_replicas: 2,
                ..hot()
            },
            Scale(3),
        ),
        (
            "up, percent rounds up: 5 + ceil(2.5) -> 8",
            s.clone(),
            ScaleFacts {
                current_replicas: 5,
                ..hot()
            },
            Scale(8),
        ),
        (
            "up, step replicas larger than the percent",
            ScaleSpec {
                step_replicas: 4,
                ..s.clone()
            },
            hot(),
            Scale(8),
        ),
        (
            "up, percent zero: step replicas",
            ScaleSpec {
                step_percent: 0,
                ..s.clone()
            },
            hot(),
            Scale(5),
        ),
        (
            "up, both steps zero: still one",
            ScaleSpec {
                step_percent: 0,
                step_replicas: 0,
                ..s.clone()
            },
            hot(),
            Scale(5),
        ),
        (
            "up, gitops",
            s.clone(),
            ScaleFacts {
                gitops_managed: true,
                ..hot()
            },
            Propose(6),
        ),
        (
            "up, gitops and dry-run",
            s.clone(),
            ScaleFacts {
                gitops_managed: true,
                dry_run: true,
                ..hot()
            },
            Propose(6),
        ),
        (
            "up, dry-run",
            s.clone(),
            ScaleFacts {
                dry_run: true,
                ..hot()
            },
            Scale(6),
        ),
        // Down.
        ("down, all quiet: one replica", s.clone(), cold(), Scale(3)),
        (
            "down from max: still one replica",
            s.clone(),
            ScaleFacts {
                current_replicas: MAX,
                ..cold()
            },
            Scale(MAX - 1),
        ),
        (
            "down, gate empty and gate inactive",
            s.clone(),
            ScaleFacts {
                gates: vec![empty(), inactive()],
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, gate active",
            s.clone(),
            ScaleFacts {
                gates: vec![inactive(), active()],
                ..cold()
            },
            Hold(GateActive),
        ),
        (
            "down, gate failed",
            s.clone(),
            ScaleFacts {
                gates: vec![inactive(), failed()],
                ..cold()
            },
            Hold(GateQueryFailed),
        ),
        (
            "down, gate active and another failed: active is the reason",
            s.clone(),
            ScaleFacts {
                gates: vec![failed(), active()],
                ..cold()
            },
            Hold(GateActive),
        ),
        (
            "down, at min",
            s.clone(),
            ScaleFacts {
                current_replicas: MIN,
                ..cold()
            },
            Hold(AtMinReplicas),
        ),
        (
            "down, at min and anomalous: the floor is the reason",
            s.clone(),
            ScaleFacts {
                current_replicas: MIN,
                anomaly: AnomalyState::Anomalous { z: 5.0 },
                ..cold()
            },
            Hold(AtMinReplicas),
        ),
        (
            "down, min 0: never the last replica",
            ScaleSpec {
                min_replicas: 0,
                ..s.clone()
            },
            ScaleFacts {
                current_replicas: 1,
                ..cold()
            },
            Hold(AtMinReplicas),
        ),
        (
            "down, min 0: 2 -> 1",
            ScaleSpec {
                min_replicas: 0,
                ..s.clone()
            },
            ScaleFacts {
                current_replicas: 2,
                ..cold()
            },
            Scale(1),
        ),
        (
            "down, anomalous",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Anomalous { z: -4.0 },
                ..cold()
            },
            Hold(AnomalyActive),
        ),
        (
            "down, anomaly unknown",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Unknown {
                    reason: "query failed".into(),
                },
                ..cold()
            },
            Hold(AnomalyUnknown),
        ),
        (
            "down, anomaly normal",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Normal { z: 1.2 },
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, cooldown: 899.999 s after a scale-down",
            s.clone(),
            ScaleFacts {
                last_scale_ms: Some(NOW - 900 * S + 1),
                ..cold()
            },
            Hold(CooldownDown),
        ),
        (
            "down, cooldown: after a scale-up",
            s.clone(),
            ScaleFacts {
                last_scale_up_ms: Some(NOW - 100 * S),
                last_scale_ms: Some(NOW - 100 * S),
                ..cold()
            },
            Hold(CooldownDown),
        ),
        (
            "down, cooldown over: 900 s after",
            s.clone(),
            ScaleFacts {
                last_scale_ms: Some(NOW - 900 * S),
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, the up cooldown does not apply",
            ScaleSpec {
                cooldown_up_ms: 3600 * S,
                ..s.clone()
            },
            ScaleFacts {
                last_scale_up_ms: Some(NOW - 1000 * S),
                last_scale_ms: Some(NOW - 1000 * S),
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, anomalous and in cooldown: the anomaly is the reason",
            s.clone(),
            ScaleFacts {
                anomaly: AnomalyState::Anomalous { z: 4.0 },
                last_scale_ms: Some(NOW - S),
                ..cold()
            },
            Hold(AnomalyActive),
        ),
        (
            "down, in cooldown and not quiet long: the cooldown is the reason",
            s.clone(),
            ScaleFacts {
                last_scale_ms: Some(NOW - S),
                quiet_since_ms: Some(NOW - S),
                ..cold()
            },
            Hold(CooldownDown),
        ),
        (
            "down, quiet 299.999 s",
            s.clone(),
            ScaleFacts {
                quiet_since_ms: Some(NOW - 300 * S + 1),
                ..cold()
            },
            Hold(NotQuietLongEnough),
        ),
        (
            "down, quiet exactly 300 s",
            s.clone(),
            ScaleFacts {
                quiet_since_ms: Some(NOW - 300 * S),
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, not tracked as quiet",
            s.clone(),
            ScaleFacts {
                quiet_since_ms: None,
                ..cold()
            },
            Hold(NotQuietLongEnough),
        ),
        (
            "down, quiet since a time in the future",
            s.clone(),
            ScaleFacts {
                quiet_since_ms: Some(NOW + 600 * S),
                ..cold()
            },
            Hold(NotQuietLongEnough),
        ),
        (
            "down, zero window: quiet since now is enough",
            ScaleSpec {
                stabilization_window_ms: 0,
                ..s.clone()
            },
            ScaleFacts {
                quiet_since_ms: Some(NOW),
                ..cold()
            },
            Scale(3),
        ),
        (
            "down, gitops",
            s.clone(),
            ScaleFacts {
                gitops_managed: true,
                ..cold()
            },
            Propose(3),
        ),
        (
            "down, dry-run",
            s.clone(),
            ScaleFacts {
                dry_run: true,
                ..cold()
            },
            Scale(3),
        ),
    ];
    for (name, spec, facts, want) in &cases {
        assert_eq!(run(spec, facts), *want, "case: {name}");
    }
}

/// How a gate fixture reads, for the specification below (which must not use `gate_active`).
#[derive(Clone, Copy, PartialEq)]
enum Gate {
    Active,
    Inactive,
    Failed,
}

fn gate_fixture(g: Gate) -> GateReading {
    match g {
        Gate::Active => active(),
        Gate::Inactive => inactive(),
        Gate::Failed => failed(),
    }
}

#[derive(Clone, Copy)]
enum Cpu {
    Failed,
    Empty,
    NaN,
    Value(f64),
}

#[derive(Clone, Copy, PartialEq)]
enum Anomaly {
    NotConfigured,
    Normal,
    Anomalous,
    Unknown,
}

/// One point of the cross product.
struct Combo {
    current: i32,
    cpu: Cpu,
    gates: &'static [Gate],
    last_up: Option<i64>,
    last_any: Option<i64>,
    quiet_since: Option<i64>,
    anomaly: Anomaly,
    hpa: bool,
    gitops: bool,
}

impl Combo {
    fn facts(&self, dry_run: bool) -> ScaleFacts {
        ScaleFacts {
            current_replicas: self.current,
            cpu: match self.cpu {
                Cpu::Failed => Reading::Failed("502 Bad Gateway".into()),
                Cpu::Empty => Reading::Empty,
                Cpu::NaN => Reading::Value(f64::NAN),
                Cpu::Value(v) => Reading::Value(v),
            },
            gates: self.gates.iter().copied().map(gate_fixture).collect(),
            hpa: self.hpa.then(|| "api".to_owned()),
            gitops_managed: self.gitops,
            anomaly: match self.anomaly {
                Anomaly::NotConfigured => AnomalyState::NotConfigured,
                Anomaly::Normal => AnomalyState::Normal { z: 0.5 },
                Anomaly::Anomalous => AnomalyState::Anomalous { z: 6.0 },
                Anomaly::Unknown => AnomalyState::Unknown {
                    reason: "3 points".into(),
                },
            },
            quiet_since_ms: self.quiet_since,
            last_scale_up_ms: self.last_up,
            last_scale_ms: self.last_any,
            dry_run,
        }
    }

    /// The rules of the `scale` module, spelled out again for the fixtures of `spec()`.
    fn expected(&self) -> Outcome {
        use HoldReason::*;
        let changed = |to: i32| {
            if self.gitops {
                Outcome::Propose(to)
            } else {
                Outcome::Scale(to)
            }
        };
        let held = Outcome::Hold;
        if self.hpa {
            return held(HpaPresent);
        }
        if self.current == 0 {
            return held(ScaledToZero);
        }
        if self.current < MIN {
            return changed(MIN);
        }
        if self.current > MAX {
            return changed(MAX);
        }
        let cpu = match self.cpu {
            Cpu::Failed => return held(CpuQueryFailed),
            Cpu::Empty => return held(CpuEmpty),
            Cpu::NaN => return held(CpuNotFinite),
            Cpu::Value(v) => v,
        };
        let any_active = self.gates.contains(&Gate::Active);
        let any_failed = self.gates.contains(&Gate::Failed);
        let recent = |at: Option<i64>, cooldown: i64| at.is_some_and(|t| NOW - t < cooldown);
        if cpu > 0.80 {
            if self.gates.is_empty() {
                return held(NoGateConfigured);
            }
            if !any_active {
                return held(if any_failed {
                    GateQueryFailed
                } else {
                    NoGateAgrees
                });
            }
            if self.current == MAX {
                return held(AtMaxReplicas);
            }
            if recent(self.last_up, 180 * S) {
                return held(CooldownUp);
            }
            // 50% of current, rounded up, at least one; capped at max.
            let step = ((self.current + 1) / 2).max(1);
            return changed((self.current + step).min(MAX));
        }
        if cpu < 0.30 {
            if any_active {
                return held(GateActive);
            }
            if any_failed {
                return held(GateQueryFailed);
            }
            if self.current == MIN {
                return held(AtMinReplicas);
            }
            match self.anomaly {
                Anomaly::Anomalous => return held(AnomalyActive),
                Anomaly::Unknown => return held(AnomalyUnknown),
                Anomaly::NotConfigured | Anomaly::Normal => {}
            }
            if recent(self.last_any, 900 * S) {
                return held(CooldownDown);
            }
            if self.quiet_since.is_none_or(|t| NOW - t < 300 * S) {
                return held(NotQuietLongEnough);
            }
            return changed(self.current - 1);
        }
        held(WithinBand)
    }
}

#[test]
fn every_combination_follows_the_rules() {
    let currents = [0, 1, MIN, 4, 9, MAX, 12];
    let cpus = [
        Cpu::Failed,
        Cpu::Empty,
        Cpu::NaN,
        Cpu::Value(0.10),
        Cpu::Value(0.30),
        Cpu::Value(0.50),
        Cpu::Value(0.80),
        Cpu::Value(0.95),
    ];
    let gate_sets: [&[Gate]; 8] = [
        &[],
        &[Gate::Active],
        &[Gate::Inactive],
        &[Gate::Failed],
        &[Gate::Active, Gate::Failed],
        &[Gate::Inactive, Gate::Failed],
        &[Gate::Inactive, Gate::Active],
        &[Gate::Inactive, Gate::Inactive],
    ];
    // Never, inside and just at the end of each cooldown.
    let last_ups = [None, Some(NOW - 60 * S), Some(NOW - 180 * S)];
    let last_anys = [None, Some(NOW - 60 * S), Some(NOW - 900 * S)];
    // Not quiet, quiet a moment too short, quiet for exactly the window.
    let quiet = [None, Some(NOW - 300 * S + 1), Some(NOW - 300 * S)];
    let anomalies = [
        Anomaly::NotConfigured,
        Anomaly::Normal,
        Anomaly::Anomalous,
        Anomaly::Unknown,
    ];
    let s = spec();
    let mut seen = std::collections::BTreeSet::new();
    let mut count = 0usize;
    for &current in &currents {
        for &cpu in &cpus {
            for &gates in &gate_sets {
                for &last_up in &last_ups {
                    for &last_any in &last_anys {
                        for &quiet_since in &quiet {
                            for &anomaly in &anomalies {
                                for hpa in [false, true] {
                                    for gitops in [false, true] {
                                        let combo = Combo {
                                            current,
                                            cpu,
                                            gates,
                                            last_up,
                                            last_any,
                                            quiet_since,
                                            anomaly,
                                            hpa,
                                            gitops,
                                        };
                                        let want = combo.expected();
                                        let live_facts = combo.facts(false);
                                        let dry_facts = combo.facts(true);
                                        let live = decide_scale(&s, &live_facts, NOW);
                                        let dry = decide_scale(&s, &dry_facts, NOW);
                                        assert_eq!(
                                            outcome(&live_facts, &live),
                                            want,
                                            "{live_facts:?}"
                                        );
                                        assert_eq!(outcome(&dry_facts, &dry), want);
                                        assert_eq!(
                                            dry,
                                            mark_dry_run(live.clone()),
                                            "dry-run must plan what live plans"
                                        );
                                        if let Outcome::Hold(r) = want {
                                            seen.insert(r.as_str());
                                        }
                                        count += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(count, 7 * 8 * 8 * 3 * 3 * 3 * 4 * 2 * 2);
    // The product reaches every hold but the invalid-input one (covered by the table).
    let every_hold_but_invalid: std::collections::BTreeSet<&str> = all_hold_reasons()
        .iter()
        .filter(|r| **r != HoldReason::InvalidInput)
        .map(|r| r.as_str())
        .collect();
    assert_eq!(seen, every_hold_but_invalid);
}

fn mark_dry_run(d: ScaleDecision) -> ScaleDecision {
    match d {
        ScaleDecision::Scale {
            from,
            to,
            direction,
            reason,
            ..
        } => ScaleDecision::Scale {
            from,
            to,
            direction,
            reason,
            dry_run: true,
        },
        other => other,
    }
}

fn all_hold_reasons() -> Vec<HoldReason> {
    use HoldReason::*;
    vec![
        HpaPresent,
        InvalidInput,
        ScaledToZero,
        CpuQueryFailed,
        CpuEmpty,
        CpuNotFinite,
        GateQueryFailed,
        NoGateAgrees,
        NoGateConfigured,
        GateActive,
        CooldownUp,
        CooldownDown,
        NotQuietLongEnough,
        AnomalyActive,
        AnomalyUnknown,
        AtMaxReplicas,
        AtMinReplicas,
        WithinBand,
    ]
}

#[test]
fn hold_reasons_are_stable_camel_case_names() {
    let all = all_hold_reasons();
    let names: std::collections::BTreeSet<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), all.len(), "as_str values must be distinct");
    for r in all {
        assert_eq!(r.as_str(), format!("{r:?}"));
    }
    assert_eq!(Direction::Up.as_str(), "Up");
    assert_eq!(Direction::Down.as_str(), "Down");
}

#[test]
fn details_and_reasons_say_why() {
    let s = spec();
    let detail = |facts: &ScaleFacts| match decide_scale(&s, facts, NOW) {
        ScaleDecision::Hold { detail, .. } => detail,
        ScaleDecision::Scale { reason, .. } | ScaleDecision::Propose { reason, .. } => reason,
    };
    let hpa = ScaleFacts {
        hpa: Some("api-hpa".into()),
        ..hot()
    };
    assert!(detail(&hpa).contains("api-hpa"), "{}", detail(&hpa));
    let gate_down = ScaleFacts {
        gates: vec![failed()],
        ..hot()
    };
    let d = detail(&gate_down);
    assert!(
        d.contains("p95Latency") && d.contains("connection refused"),
        "{d}"
    );
    let no_gate = ScaleFacts {
        gates: vec![],
        ..hot()
    };
    assert_eq!(
        detail(&no_gate),
        "CPU 0.95 is above 0.80, but the policy configures no gate (queueDepth, errorRate, \
         p95Latency); the seed's rule is CPU AND a gate"
    );
    let below = ScaleFacts {
        current_replicas: 1,
        ..facts()
    };
    assert!(
        detail(&below).contains("below minReplicas"),
        "{}",
        detail(&below)
    );
    let above = ScaleFacts {
        current_replicas: 11,
        ..facts()
    };
    assert!(
        detail(&above).contains("above maxReplicas"),
        "{}",
        detail(&above)
    );
    let up = ScaleFacts {
        gates: vec![inactive(), active()],
        ..hot()
    };
    assert!(detail(&up).contains("queueDepth"), "{}", detail(&up));
    let cpu_failed = ScaleFacts {
        cpu: Reading::Failed("bad_data: parse error".into()),
        ..facts()
    };
    assert!(
        detail(&cpu_failed).contains("bad_data: parse error"),
        "{}",
        detail(&cpu_failed)
    );
    let unknown = ScaleFacts {
        anomaly: AnomalyState::Unknown {
            reason: "3 usable baseline points".into(),
        },
        ..cold()
    };
    assert!(
        detail(&unknown).contains("3 usable baseline points"),
        "{}",
        detail(&unknown)
    );
    let short = ScaleFacts {
        quiet_since_ms: Some(NOW - 120 * S),
        ..cold()
    };
    assert!(
        detail(&short).contains("120 s of the 300 s"),
        "{}",
        detail(&short)
    );
}

#[test]
fn up_step_is_the_larger_of_count_and_percent() {
    let s = spec();
    let with = |step_replicas: i32, step_percent: u32| ScaleSpec {
        step_replicas,
        step_percent,
        ..s.clone()
    };
    // (step_replicas, step_percent, current, step)
    let cases = [
        (1, 50, 1, 1),
        (1, 50, 2, 1),
        (1, 50, 3, 2),
        (1, 50, 4, 2),
        (1, 50, 5, 3),
        (1, 100, 7, 7),
        (1, 10, 11, 2),
        (5, 50, 4, 5),
        (0, 0, 4, 1),
        (-3, 0, 4, 1),
        (2, 0, 100, 2),
        (1, 1000, 3, 30),
        (1, 1000, i32::MAX, i32::MAX),
    ];
    for (step_replicas, step_percent, current, want) in cases {
        assert_eq!(
            up_step(&with(step_replicas, step_percent), current),
            want,
            "stepReplicas {step_replicas}, stepPercent {step_percent}, current {current}"
        );
    }
}

#[test]
fn gate_activity() {
    let cases = [
        (Reading::Value(120.0), Some(100.0), Some(true)),
        (Reading::Value(100.0), Some(100.0), Some(false)),
        (Reading::Value(99.9), Some(100.0), Some(false)),
        (Reading::Value(-1.0), Some(0.0), Some(false)),
        (Reading::Value(0.0), None, Some(true)),
        (Reading::Value(-5.0), None, Some(true)),
        (Reading::Value(f64::NAN), Some(1.0), Some(false)),
        (Reading::Value(f64::NAN), None, Some(true)),
        (Reading::Value(f64::INFINITY), Some(1.0), Some(true)),
        (Reading::Empty, None, Some(false)),
        (Reading::Empty, Some(0.0), Some(false)),
        (Reading::Failed("x".into()), None, None),
        (Reading::Failed("x".into()), Some(1.0), None),
    ];
    for (reading, threshold, want) in cases {
        assert_eq!(
            gate_active(&reading, threshold),
            want,
            "{reading:?} against {threshold:?}"
        );
    }
}

#[test]
fn gate_summary_sorts_gates() {
    let gates = vec![active(), inactive(), failed(), empty()];
    let summary = GateSummary::of(&gates);
    assert_eq!(summary.configured, 4);
    assert_eq!(summary.active, vec!["queueDepth"]);
    assert_eq!(summary.failed, vec![("p95Latency", "connection refused")]);
    assert_eq!(GateSummary::of(&[]), GateSummary::default());
}

#[test]
fn quiet_means_low_cpu_and_no_gate_active_or_failed() {
    let s = spec();
    let with = |cpu: Reading, gates: Vec<GateReading>| ScaleFacts {
        cpu,
        gates,
        ..facts()
    };
    let cases = [
        ("low cpu, no gates", with(Reading::Value(0.1), vec![]), true),
        ("zero cpu", with(Reading::Value(0.0), vec![]), true),
        (
            "low cpu, gates inactive and empty",
            with(Reading::Value(0.1), vec![inactive(), empty()]),
            true,
        ),
        (
            "cpu at the threshold",
            with(Reading::Value(0.3), vec![]),
            false,
        ),
        ("cpu mid", with(Reading::Value(0.5), vec![]), false),
        ("cpu high", with(Reading::Value(0.95), vec![]), false),
        (
            "cpu failed",
            with(Reading::Failed("x".into()), vec![]),
            false,
        ),
        ("cpu empty", with(Reading::Empty, vec![]), false),
        ("cpu NaN", with(Reading::Value(f64::NAN), vec![]), false),
        (
            "cpu -inf",
            with(Reading::Value(f64::NEG_INFINITY), vec![]),
            false,
        ),
        (
            "gate active",
            with(Reading::Value(0.1), vec![inactive(), active()]),
            false,
        ),
        (
            "gate failed",
            with(Reading::Value(0.1), vec![inactive(), failed()]),
            false,
        ),
    ];
    for (name, facts, want) in cases {
        assert_eq!(is_quiet(&s, &facts), want, "case: {name}");
    }
    // The anomaly does not count towards quiet; the decision checks it on its own.
    let anomalous = ScaleFacts {
        anomaly: AnomalyState::Anomalous { z: 9.0 },
        ..cold()
    };
    assert!(is_quiet(&s, &anomalous));
}

#[test]
fn quiet_since_tracking() {
    let t = NOW;
    // (previous, quiet now, now, next)
    let cases = [
        (None, false, t, None),
        (Some(t - 100 * S), false, t, None),
        (None, true, t, Some(t)),
        (Some(t - 100 * S), true, t, Some(t - 100 * S)),
        (Some(t), true, t, Some(t)),
        (Some(t + 100 * S), true, t, Some(t)),
        (Some(t + 100 * S), false, t, None),
    ];
    for (prev, quiet, now, want) in cases {
        assert_eq!(
            next_quiet_since(prev, quiet, now),
            want,
            "prev {prev:?}, quiet {quiet}, now {now}"
        );
    }
}

/// Runs the decision every 30 s the way the controller does: advance quiet-since, decide, and on a
/// scale apply it and remember when. Returns (seconds since start, new replicas) of each scale.
fn simulate(
    start_replicas: i32,
    steps: i64,
    facts_at: impl Fn(i64) -> ScaleFacts,
) -> Vec<(i64, i32)> {
    let s = spec();
    let mut replicas = start_replicas;
    let mut quiet_since = None;
    let (mut last_up, mut last_any) = (None, None);
    let mut scaled = vec![];
    for step in 0..=steps {
        let now = NOW + step * 30 * S;
        let mut f = ScaleFacts {
            current_replicas: replicas,
            last_scale_up_ms: last_up,
            last_scale_ms: last_any,
            ..facts_at(step * 30)
        };
        quiet_since = next_quiet_since(quiet_since, is_quiet(&s, &f), now);
        f.quiet_since_ms = quiet_since;
        if let ScaleDecision::Scale { to, direction, .. } = decide_scale(&s, &f, now) {
            replicas = to;
            last_any = Some(now);
            if direction == Direction::Up {
                last_up = Some(now);
            }
            scaled.push((step * 30, to));
        }
    }
    scaled
}

#[test]
fn timeline_scale_down_waits_for_the_window_the_cooldown_and_a_fresh_quiet_spell() {
    // Quiet from the start, except for one active gate at 1080 s.
    let scaled = simulate(4, 100, |at_s| ScaleFacts {
        cpu: Reading::Value(0.1),
        gates: if at_s == 1080 {
            vec![active()]
        } else {
            vec![inactive()]
        },
        ..facts()
    });
    // 300 s of quiet -> 3; the cooldown ends at 1200 s, but the blip at 1080 s restarted the window
    // at 1110 s -> 2 at 1410 s; then the floor.
    assert_eq!(scaled, vec![(300, 3), (1410, MIN)]);
}

#[test]
fn timeline_scale_up_steps_with_cooldown_to_max() {
    let scaled = simulate(MIN, 40, |_| ScaleFacts {
        gates: vec![active()],
        ..hot()
    });
    // 2 + 1, 3 + 2, 5 + 3, 8 + 4 capped at 10, every 180 s.
    assert_eq!(scaled, vec![(0, 3), (180, 5), (360, 8), (540, MAX)]);
}

#[test]
fn timeline_failed_queries_restart_the_window() {
    // Quiet, but the CPU query fails at 150 s: the window restarts at 180 s.
    let scaled = simulate(4, 30, |at_s| ScaleFacts {
        cpu: if at_s == 150 {
            Reading::Failed("timeout".into())
        } else {
            Reading::Value(0.1)
        },
        ..facts()
    });
    assert_eq!(scaled, vec![(480, 3)]);
}
