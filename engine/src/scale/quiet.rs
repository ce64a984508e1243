//! The stabilization window's clock. A scale-down needs the signals to have been quiet for a whole
//! window, not just now: one low sample between bursts must not shed capacity. The engine has no
//! memory, so the controller keeps "quiet since" per workload and advances it every evaluation with
//! `next_quiet_since(prev, is_quiet(spec, facts), now)`, before deciding.
//!
//! Any evaluation that is not quiet, including one whose queries failed, restarts the window: a gap
//! in the data is not evidence of quiet.

use super::gate::GateSummary;
use super::{Reading, ScaleFacts, ScaleSpec};

/// Quiet: CPU is a finite number strictly below the scale-down threshold, no gate is active and no gate's
/// query failed. The anomaly state does not count here; the decision checks it on its own.
pub fn is_quiet(spec: &ScaleSpec, facts: &ScaleFacts) -> bool {
    let cpu_low = matches!(facts.cpu, Reading::Value(v) if v.is_finite() && v < spec.scale_down_cpu_threshold);
    let gates = GateSummary::of(&facts.gates);
    cpu_low && gates.active.is_empty() && gates.failed.is_empty()
}

/// Since when the signals have been quiet, given the previous value and whether they are quiet now:
/// not quiet resets to `None`; quiet keeps an earlier start or starts now. A start in the future
/// (clocks differ after a leader change) is pulled back to now, so the window never counts time
/// that has not passed.
pub fn next_quiet_since(prev: Option<i64>, quiet_now: bool, now_ms: i64) -> Option<i64> {
    if !quiet_now {
        return None;
    }
    Some(prev.map_or(now_ms, |since| since.min(now_ms)))
}
