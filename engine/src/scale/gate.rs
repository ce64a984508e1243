//! Reading gates: whether one gate is active, and what all of a workload's gates say together. Kept
//! apart from the decision so the controller can report gate states (metrics, status) with the
//! very same rule.

use super::{GateReading, Reading};

/// Whether a gate is active: a value, or with a threshold a value strictly above it (a NaN value is
/// never above a threshold; without one, any value means the query matched something). No series:
/// `Some(false)`. A failed query: `None`, unknown.
pub fn gate_active(reading: &Reading, threshold: Option<f64>) -> Option<bool> {
    match (reading, threshold) {
        (Reading::Failed(_), _) => None,
        (Reading::Empty, _) => Some(false),
        (Reading::Value(_), None) => Some(true),
        (Reading::Value(v), Some(t)) => Some(*v > t),
    }
}

/// All of a workload's gates at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateSummary<'a> {
    /// How many gates the policy configures.
    pub configured: usize,
    /// Names of the active gates.
    pub active: Vec<&'a str>,
    /// Names and errors of the gates whose query failed.
    pub failed: Vec<(&'a str, &'a str)>,
}

impl<'a> GateSummary<'a> {
    pub fn of(gates: &'a [GateReading]) -> Self {
        let mut summary = Self {
            configured: gates.len(),
            ..Self::default()
        };
        for g in gates {
            match (gate_active(&g.reading, g.threshold), &g.reading) {
                (Some(true), _) => summary.active.push(&g.name),
                (None, Reading::Failed(error)) => summary.failed.push((&g.name, error)),
                (None, _) => summary.failed.push((&g.name, "")),
                (Some(false), _) => {}
            }
        }
        summary
    }

    /// Active gates' names, comma-separated, for details.
    pub fn active_names(&self) -> String {
        self.active.join(", ")
    }

    /// Failed gates as `name (error)`, comma-separated, for details.
    pub fn failed_names(&self) -> String {
        self.failed
            .iter()
            .map(|(name, error)| format!("{name} ({error})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
