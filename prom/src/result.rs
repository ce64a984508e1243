//! Query results, decoded from the JSON envelope of Prometheus's HTTP API
//! (`{"status":"success","data":{"resultType":..,"result":..}}`) into typed values. Prometheus
//! sends sample values as strings so that NaN and the infinities survive JSON; they are parsed
//! here so callers only ever see `f64`. Timestamps arrive as float seconds and are kept as
//! milliseconds since the Unix epoch, Prometheus's own resolution.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::PromError;

/// The result of a query, by Prometheus's `resultType`.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// One sample per series at the evaluation time (instant query of a vector expression).
    Vector(Vec<Sample>),
    /// Points per series (range query, or an instant query of a range selector like `up[5m]`).
    Matrix(Vec<Series>),
    /// A single number, e.g. `scalar(...)` or a literal `3`.
    Scalar { t_ms: i64, value: f64 },
    /// A string literal query such as `"hello"`.
    String { t_ms: i64, value: String },
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch.
    pub t_ms: i64,
    pub value: f64,
}

/// One series of a range vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub metric: BTreeMap<String, String>,
    /// (milliseconds since the Unix epoch, value), in increasing time order.
    pub points: Vec<(i64, f64)>,
}

impl QueryResult {
    /// The one number this result stands for, for gates that compare a reading to a threshold:
    /// a scalar's value, or the value of a vector's only sample.
    ///
    /// The controller's queries aggregate (`sum`, `avg`) down to one series, but a query that
    /// still returns several series yields their maximum, so a "scale up above X" gate fires if
    /// any series is above. NaN samples are skipped unless all are NaN (then NaN is returned,
    /// and every comparison with it is false, so no gate fires).
    ///
    /// `None` when there is no number: an empty vector (the metric is absent), a matrix or a
    /// string.
    pub fn single_value(&self) -> Option<f64> {
        match self {
            Self::Scalar { value, .. } => Some(*value),
            Self::Vector(samples) => samples.iter().map(|s| s.value).reduce(f64::max),
            Self::Matrix(_) | Self::String { .. } => None,
        }
    }

    /// The points of the first series of a matrix, in Prometheus's order (sorted by labels);
    /// `None` for an empty matrix and for the other result types.
    pub fn first_series_points(&self) -> Option<&[(i64, f64)]> {
        match self {
            Self::Matrix(series) => series.first().map(|s| s.points.as_slice()),
            _ => None,
        }
    }
}

/// Decodes a Prometheus API response body: `Ok(Ok(result, warnings))` on success,
/// `Ok(Err((error_type, error)))` when Prometheus answered with `status: error`.
pub(crate) fn decode(body: &[u8]) -> Result<Result<Decoded, ApiError>, PromError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| PromError::BadResponse(format!("not a Prometheus API response: {e}")))?;
    match envelope.status.as_str() {
        "success" => {
            let data = envelope.data.ok_or_else(|| {
                PromError::BadResponse("`status: success` without `data`".to_owned())
            })?;
            Ok(Ok(Decoded {
                result: data.into_result()?,
                warnings: envelope.warnings,
            }))
        }
        "error" => Ok(Err(ApiError {
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_owned()),
            error: envelope.error.unwrap_or_default(),
        })),
        other => Err(PromError::BadResponse(format!(
            "unknown response status `{other}`"
        ))),
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub result: QueryResult,
    pub warnings: Vec<String>,
}

/// Prometheus's own error report (`errorType`, `error`).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub error_type: String,
    pub error: String,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<WireData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum WireData {
    Vector(Vec<WireSample>),
    Matrix(Vec<WireSeries>),
    Scalar(WirePoint),
    String(WirePoint),
}

/// `[<float seconds>, "<value>"]`
type WirePoint = (f64, String);

#[derive(Deserialize)]
struct WireSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Option<WirePoint>,
    histogram: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct WireSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<WirePoint>,
    histograms: Option<IgnoredAny>,
}

const NATIVE_HISTOGRAMS: &str =
    "native histogram samples are not supported; query a float such as histogram_quantile(...)";

impl WireData {
    fn into_result(self) -> Result<QueryResult, PromError> {
        Ok(match self {
            Self::Vector(samples) => QueryResult::Vector(
                samples
                    .into_iter()
                    .map(|s| {
                        if s.histogram.is_some() {
                            return Err(PromError::BadResponse(NATIVE_HISTOGRAMS.to_owned()));
                        }
                        let (t, v) = s.value.ok_or_else(|| {
                            PromError::BadResponse("vector sample without `value`".to_owned())
                        })?;
                        Ok(Sample {
                            metric: s.metric,
                            t_ms: millis(t)?,
                            value: parse_value(&v)?,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Self::Matrix(series) => QueryResult::Matrix(
                series
                    .into_iter()
                    .map(|s| {
                        if s.histograms.is_some() {
                            return Err(PromError::BadResponse(NATIVE_HISTOGRAMS.to_owned()));
                        }
                        Ok(Series {
                            metric: s.metric,
                            points: s
                                .values
                                .iter()
                                .map(|(t, v)| Ok((millis(*t)?, parse_value(v)?)))
                                .collect::<Result<_, PromError>>()?,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Self::Scalar((t, v)) => QueryResult::Scalar {
                t_ms: millis(t)?,
                value: parse_value(&v)?,
            },
            Self::String((t, value)) => QueryResult::String {
                t_ms: millis(t)?,
                value,
            },
        })
    }
}

/// Float seconds (millisecond precision on the wire) to integer milliseconds.
fn millis(seconds: f64) -> Result<i64, PromError> {
    if !seconds.is_finite() {
        return Err(PromError::BadResponse(format!(
            "timestamp {seconds} is not a finite number"
        )));
    }
    Ok((seconds * 1000.0).round() as i64)
}

/// A sample value as Prometheus formats it (Go's `strconv.FormatFloat`): a decimal or exponent
/// number, `NaN`, `+Inf` or `-Inf`.
pub(crate) fn parse_value(text: &str) -> Result<f64, PromError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .map_err(|_| PromError::BadResponse(format!("sample value `{text}` is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success(body: &str) -> QueryResult {
        decode(body.as_bytes()).unwrap().unwrap().result
    }

    #[test]
    fn values_include_nan_and_infinities() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_value("1.5e+06").unwrap(), 1.5e6);
        assert_eq!(parse_value("-0.25").unwrap(), -0.25);
        assert!(matches!(
            parse_value("twelve"),
            Err(PromError::BadResponse(m)) if m.contains("twelve")
        ));
    }

    #[test]
    fn every_result_type_decodes() {
        let vector = success(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"__name__":"up","job":"a"},"value":[1700000000.123,"1"]}]}}"#,
        );
        assert_eq!(
            vector,
            QueryResult::Vector(vec![Sample {
                metric: [("__name__", "up"), ("job", "a")]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into(),
                t_ms: 1_700_000_000_123,
                value: 1.0,
            }])
        );
        let matrix = success(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{},"values":[[1,"1"],[1.5,"+Inf"]]}]}}"#,
        );
        assert_eq!(
            matrix.first_series_points(),
            Some(&[(1000, 1.0), (1500, f64::INFINITY)][..])
        );
        assert_eq!(
            success(r#"{"status":"success","data":{"resultType":"scalar","result":[2,"3"]}}"#),
            QueryResult::Scalar {
                t_ms: 2000,
                value: 3.0
            }
        );
        assert_eq!(
            success(r#"{"status":"success","data":{"resultType":"string","result":[2,"hi"]}}"#),
            QueryResult::String {
                t_ms: 2000,
                value: "hi".to_owned()
            }
        );
    }

    #[test]
    fn error_envelope_keeps_type_and_message() {
        let err = decode(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.error_type, "bad_data");
        assert_eq!(err.error, "parse error");
    }

    #[test]
    fn unreadable_answers_are_bad_responses() {
        for body in [
            &b"<html>not json</html>"[..],
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"resultType":"exemplars","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#,
            br#"{"status":"maybe"}"#,
        ] {
            let err = decode(body).unwrap_err();
            assert_eq!(err.category(), "bad_response", "{err}");
        }
    }

    #[test]
    fn single_value_semantics() {
        let sample = |value| Sample {
            metric: BTreeMap::new(),
            t_ms: 0,
            value,
        };
        assert_eq!(QueryResult::Vector(vec![]).single_value(), None);
        assert_eq!(
            QueryResult::Vector(vec![sample(4.0)]).single_value(),
            Some(4.0)
        );
        assert_eq!(
            QueryResult::Vector(vec![
                sample(4.0),
                sample(f64::NAN),
                sample(9.0),
                sample(1.0)
            ])
            .single_value(),
            Some(9.0)
        );
        assert!(
            QueryResult::Vector(vec![sample(f64::NAN), sample(f64::NAN)])
                .single_value()
                .unwrap()
                .is_nan()
        );
        assert_eq!(
            QueryResult::Scalar {
                t_ms: 0,
                value: 2.0
            }
            .single_value(),
            Some(2.0)
        );
        assert_eq!(QueryResult::Matrix(vec![]).single_value(), None);
        assert_eq!(QueryResult::Matrix(vec![]).first_series_points(), None);
    }
}
