//! The z-score on synthetic series: constant, constant then a spike either way, noisy with and
//! without a spike, NaN and missing samples, too few samples, and the verdict's threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::scale::{AnomalyState, MIN_BASELINE_POINTS, ZScore, anomaly_state, zscore};

/// Samples every 30 s from t = 0.
fn series(values: &[f64]) -> Vec<(i64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * 30_000, *v))
        .collect()
}

fn value(z: ZScore) -> f64 {
    match z {
        ZScore::Value(v) => v,
        other => panic!("expected a z-score, got {other:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Baseline mean 10, population std 1.5 (deviations 0, 2, -2, 1, -1, 0, 2, -2: squares sum to 18
/// over 8 points); its sample std would be sqrt(18 / 7) = 1.604.
const NOISY: [f64; 8] = [10.0, 12.0, 8.0, 11.0, 9.0, 10.0, 12.0, 8.0];

fn noisy_then(observation: f64) -> Vec<(i64, f64)> {
    let mut v = NOISY.to_vec();
    v.push(observation);
    series(&v)
}

#[test]
fn constant_series_scores_zero() {
    assert_eq!(zscore(&series(&[5.0; 10])), ZScore::Value(0.0));
    // Values that do not add up exactly in binary stay exactly constant too.
    assert_eq!(zscore(&series(&[0.1; 30])), ZScore::Value(0.0));
    assert_eq!(zscore(&series(&[0.0; 6])), ZScore::Value(0.0));
}

#[test]
fn a_change_after_a_constant_baseline_is_infinitely_unusual() {
    let mut up = vec![5.0; 10];
    up.push(5.5);
    assert_eq!(zscore(&series(&up)), ZScore::Value(f64::INFINITY));
    let mut down = vec![5.0; 10];
    down.push(4.0);
    assert_eq!(zscore(&series(&down)), ZScore::Value(f64::NEG_INFINITY));
    assert!(matches!(
        anomaly_state(zscore(&series(&up)), 3.0),
        AnomalyState::Anomalous { z } if z == f64::INFINITY
    ));
    assert!(matches!(
        anomaly_state(zscore(&series(&down)), 1000.0),
        AnomalyState::Anomalous { z } if z == f64::NEG_INFINITY
    ));
}

#[test]
fn noisy_series_without_a_spike_is_normal() {
    let z = value(zscore(&noisy_then(11.0)));
    assert!(close(z, 1.0 / 1.5), "z = {z}");
    assert!(
        matches!(anomaly_state(ZScore::Value(z), 3.0), AnomalyState::Normal { z } if close(z, 1.0 / 1.5))
    );
    // The observation at the mean.
    assert!(close(value(zscore(&noisy_then(10.0))), 0.0));
}

#[test]
fn noisy_series_with_a_spike_is_anomalous() {
    // (16 - 10) / 1.5 = 4 exactly with the population std; the sample std would give 3.74, and
    // including the observation in its own baseline would give 2.26.
    let z = value(zscore(&noisy_then(16.0)));
    assert!(close(z, 4.0), "z = {z}");
    assert!(matches!(
        anomaly_state(ZScore::Value(z), 3.0),
        AnomalyState::Anomalous { .. }
    ));
}

#[test]
fn negative_spike_is_anomalous_too() {
    let z = value(zscore(&noisy_then(4.0)));
    assert!(close(z, -4.0), "z = {z}");
    assert!(matches!(
        anomaly_state(ZScore::Value(z), 3.0),
        AnomalyState::Anomalous { z } if z < 0.0
    ));
}

#[test]
fn long_noisy_series() {
    // 120 samples of deterministic noise in [99, 101] (a linear congruential generator), then an
    // ordinary sample and a spike.
    let mut state: u64 = 42;
    let mut noise = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let baseline: Vec<f64> = (0..120).map(|_| 100.0 + noise()).collect();
    let with = |x: f64| {
        let mut v = baseline.clone();
        v.push(x);
        series(&v)
    };
    // Uniform noise of half-width 1 has std 1/sqrt(3) = 0.577.
    let ordinary = value(zscore(&with(100.5)));
    assert!(ordinary.abs() < 3.0, "z = {ordinary}");
    assert!(matches!(
        anomaly_state(ZScore::Value(ordinary), 3.0),
        AnomalyState::Normal { .. }
    ));
    let spike = value(zscore(&with(120.0)));
    assert!(spike > 20.0, "z = {spike}");
    let dip = value(zscore(&with(80.0)));
    assert!(dip < -20.0, "z = {dip}");
}

#[test]
fn nan_and_infinite_samples_are_dropped() {
    let clean = zscore(&noisy_then(16.0));
    let mut dirty = NOISY.to_vec();
    dirty.insert(2, f64::NAN);
    dirty.insert(5, f64::INFINITY);
    dirty.insert(7, f64::NEG_INFINITY);
    dirty.push(16.0);
    assert_eq!(zscore(&series(&dirty)), clean);
    // A NaN at the end: the latest finite sample is the observation, the rest the baseline.
    let mut trailing = NOISY.to_vec();
    trailing.push(16.0);
    trailing.push(f64::NAN);
    assert_eq!(zscore(&series(&trailing)), clean);
}

#[test]
fn missing_samples_are_simply_absent() {
    // Drop two samples' timestamps from the grid: the score is that of the remaining points.
    let full = noisy_then(16.0);
    let gappy: Vec<(i64, f64)> = full
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, p)| *p)
        .collect();
    // Without 11 and 9 the baseline is 10, 12, 8, 10, 12, 8: mean 10, std sqrt(16 / 6).
    let z = value(zscore(&gappy));
    assert!(close(z, 6.0 / (16.0f64 / 6.0).sqrt()), "z = {z}");
}

#[test]
fn the_latest_sample_is_the_observation_whatever_the_order() {
    let mut shuffled = noisy_then(16.0);
    shuffled.reverse();
    shuffled.swap(2, 5);
    assert!(close(value(zscore(&shuffled)), 4.0));
}

#[test]
fn too_few_samples() {
    assert_eq!(MIN_BASELINE_POINTS, 5);
    assert_eq!(zscore(&[]), ZScore::Insufficient { have: 0 });
    assert_eq!(zscore(&series(&[3.0])), ZScore::Insufficient { have: 0 });
    assert_eq!(
        zscore(&series(&[1.0, 2.0, 3.0, 4.0, 9.0])),
        ZScore::Insufficient { have: 4 }
    );
    // Five baseline points are enough.
    assert!(matches!(
        zscore(&series(&[1.0, 2.0, 3.0, 4.0, 5.0, 9.0])),
        ZScore::Value(_)
    ));
    // NaN does not count towards the baseline.
    assert_eq!(
        zscore(&series(&[1.0, 2.0, f64::NAN, 4.0, 5.0, 9.0])),
        ZScore::Insufficient { have: 4 }
    );
    assert_eq!(
        zscore(&series(&[f64::NAN; 10])),
        ZScore::Insufficient { have: 0 }
    );
    assert!(matches!(
        anomaly_state(ZScore::Insufficient { have: 4 }, 3.0),
        AnomalyState::Unknown { reason } if reason.contains('4') && reason.contains('5')
    ));
}

#[test]
fn the_threshold_is_strict_and_must_be_a_number() {
    let cases = [
        (ZScore::Value(3.0), 3.0, "Normal"),
        (ZScore::Value(-3.0), 3.0, "Normal"),
        (ZScore::Value(3.0001), 3.0, "Anomalous"),
        (ZScore::Value(-3.0001), 3.0, "Anomalous"),
        (ZScore::Value(0.0), 0.0, "Normal"),
        (ZScore::Value(0.1), 0.0, "Anomalous"),
        (ZScore::Value(f64::NAN), 3.0, "Unknown"),
        (ZScore::Value(1.0), f64::NAN, "Unknown"),
        (ZScore::Value(1.0), -1.0, "Unknown"),
        (ZScore::Insufficient { have: 0 }, 3.0, "Unknown"),
    ];
    for (z, threshold, want) in cases {
        let state = anomaly_state(z, threshold);
        let got = match &state {
            AnomalyState::NotConfigured => "NotConfigured",
            AnomalyState::Normal { .. } => "Normal",
            AnomalyState::Anomalous { .. } => "Anomalous",
            AnomalyState::Unknown { .. } => "Unknown",
        };
        assert_eq!(got, want, "{z:?} against {threshold}: {state:?}");
    }
    // The verdict carries the score.
    assert_eq!(
        anomaly_state(ZScore::Value(-4.5), 3.0),
        AnomalyState::Anomalous { z: -4.5 }
    );
    assert_eq!(
        anomaly_state(ZScore::Value(1.5), 3.0),
        AnomalyState::Normal { z: 1.5 }
    );
}
