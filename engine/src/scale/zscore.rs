//! Is the latest sample of a signal unusual against its own recent history? A z-score answers it
//! without a model: how many standard deviations the observation lies from the baseline's mean.
//!
//! The input is a Prometheus range query's samples, `(timestamp, value)`. The observation is the
//! latest finite sample (the last one, for Prometheus' time-ordered output); the baseline is every
//! other finite sample. Then
//!
//! ```text
//! mean = (1/n) * sum(b_i)
//! std  = sqrt((1/n) * sum((b_i - mean)^2))
//! z    = (x - mean) / std
//! ```
//!
//! - The observation is left out of the baseline: a spike inside its own baseline raises the mean
//!   and the spread it is measured against, and hides itself: a sample inside its own window of n
//!   can never score above (n - 1) / sqrt(n) (Samuelson's inequality; under 1.8 for n = 5).
//! - Population standard deviation (divide by n, not n - 1): the baseline is the whole window we
//!   judge against, not a sample of a larger population whose spread we estimate; it also keeps a
//!   constant baseline exactly at std 0.
//! - NaN and infinite samples (Prometheus returns `NaN` for 0/0) are dropped as if absent; absent
//!   samples simply are not there. Both shrink the baseline, which needs at least
//!   `MIN_BASELINE_POINTS` finite points, else `Insufficient`.
//! - A constant baseline (std = 0): the observation equal to it scores 0; any other value is
//!   infinitely unusual, `z = +inf` or `-inf` by its direction, which every threshold flags.
//! - The mean and spread are computed with Welford's running update: stable for large values, and
//!   exact for a constant baseline (no rounding turns std 0 into a tiny number that would make the
//!   same value look infinitely unusual).

use serde::{Deserialize, Serialize};

use super::AnomalyState;

/// Fewer finite baseline points than this and the spread means little: `Insufficient`.
pub const MIN_BASELINE_POINTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ZScore {
    /// `(x - mean) / std`; infinite after a constant baseline that the observation leaves.
    Value(f64),
    /// Too few finite baseline points; `have` is how many there were.
    Insufficient { have: usize },
}

/// The z-score of the latest finite sample against the other finite samples.
pub fn zscore(points: &[(i64, f64)]) -> ZScore {
    let finite = || {
        points
            .iter()
            .enumerate()
            .filter(|(_, (_, value))| value.is_finite())
    };
    // The latest timestamp; among equal timestamps the later one in the slice.
    let Some((observed_at, &(_, x))) = finite().max_by_key(|(i, (t, _))| (*t, *i)) else {
        return ZScore::Insufficient { have: 0 };
    };
    let (mut n, mut mean, mut sum_sq_dev) = (0usize, 0.0f64, 0.0f64);
    for (_, &(_, value)) in finite().filter(|(i, _)| *i != observed_at) {
        n += 1;
        let delta = value - mean;
        mean += delta / n as f64;
        sum_sq_dev += delta * (value - mean);
    }
    if n < MIN_BASELINE_POINTS {
        return ZScore::Insufficient { have: n };
    }
    let std = (sum_sq_dev / n as f64).sqrt();
    if std == 0.0 {
        return ZScore::Value(if x == mean {
            0.0
        } else if x > mean {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        });
    }
    ZScore::Value((x - mean) / std)
}

/// The verdict for a z-score: `Anomalous` when `|z|` is strictly above `threshold`, `Normal`
/// otherwise; `Unknown` with too little history, a NaN z, or a threshold that is negative or NaN.
pub fn anomaly_state(z: ZScore, threshold: f64) -> AnomalyState {
    if threshold.is_nan() || threshold < 0.0 {
        return AnomalyState::Unknown {
            reason: format!("zThreshold {threshold} is not a non-negative number"),
        };
    }
    match z {
        ZScore::Insufficient { have } => AnomalyState::Unknown {
            reason: format!(
                "{have} usable baseline points; at least {MIN_BASELINE_POINTS} are needed"
            ),
        },
        ZScore::Value(z) if z.is_nan() => AnomalyState::Unknown {
            reason: "the z-score is not a number".into(),
        },
        ZScore::Value(z) if z.abs() > threshold => AnomalyState::Anomalous { z },
        ZScore::Value(z) => AnomalyState::Normal { z },
    }
}
