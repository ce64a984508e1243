//! Conversions between the wire format (`proto::v1`) and the engine's domain types, kept at the
//! edge so the engine never sees generated code. Malformed messages become typed errors, counted
//! by the controller under `MalformedFinding` reasons.

use auto_agent_engine::{Finding, FindingKind, PodRef, Transition, WorkloadRef};

use crate::proto::v1 as pb;

/// Why a wire finding was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("finding kind is unspecified or unknown ({0})")]
    UnknownKind(i32),
    #[error("transition is unspecified or unknown ({0})")]
    UnknownTransition(i32),
    #[error("a {0} finding needs pod namespace, name and uid")]
    MissingPod(FindingKind),
    #[error("finding id is empty")]
    MissingId,
    #[error("finding node name is empty")]
    MissingNode,
}

impl ConvertError {
    /// Low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownKind(_) => "unknown_kind",
            Self::UnknownTransition(_) => "unknown_transition",
            Self::MissingPod(_) => "missing_pod",
            Self::MissingId => "missing_id",
            Self::MissingNode => "missing_node",
        }
    }
}

pub fn kind_to_proto(kind: FindingKind) -> pb::FindingKind {
    match kind {
        FindingKind::CrashLoopBackOff => pb::FindingKind::CrashLoopBackOff,
        FindingKind::OomKilled => pb::FindingKind::OomKilled,
        FindingKind::ImagePullBackOff => pb::FindingKind::ImagePullBackOff,
        FindingKind::CreateContainerConfigError => pb::FindingKind::CreateContainerConfigError,
        FindingKind::PodEvicted => pb::FindingKind::PodEvicted,
        FindingKind::NodeMemoryPressure => pb::FindingKind::NodeMemoryPressure,
        FindingKind::NodeDiskPressure => pb::FindingKind::NodeDiskPressure,
        FindingKind::NodePidPressure => pb::FindingKind::NodePidPressure,
        FindingKind::NodeNotReady => pb::FindingKind::NodeNotReady,
    }
}

pub fn kind_from_proto(raw: i32) -> Result<FindingKind, ConvertError> {
    Ok(
        match pb::FindingKind::try_from(raw).map_err(|_| ConvertError::UnknownKind(raw))? {
            pb::FindingKind::Unspecified => return Err(ConvertError::UnknownKind(raw)),
            pb::FindingKind::CrashLoopBackOff => FindingKind::CrashLoopBackOff,
            pb::FindingKind::OomKilled => FindingKind::OomKilled,
            pb::FindingKind::ImagePullBackOff => FindingKind::ImagePullBackOff,
            pb::FindingKind::CreateContainerConfigError => FindingKind::CreateContainerConfigError,
            pb::FindingKind::PodEvicted => FindingKind::PodEvicted,
            pb::FindingKind::NodeMemoryPressure => FindingKind::NodeMemoryPressure,
            pb::FindingKind::NodeDiskPressure => FindingKind::NodeDiskPressure,
            pb::FindingKind::NodePidPressure => FindingKind::NodePidPressure,
            pb::FindingKind::NodeNotReady => FindingKind::NodeNotReady,
        },
    )
}

fn transition_from_proto(raw: i32) -> Result<Transition, ConvertError> {
    match pb::Transition::try_from(raw) {
        Ok(pb::Transition::Started) => Ok(Transition::Started),
        Ok(pb::Transition::Cleared) => Ok(Transition::Cleared),
        _ => Err(ConvertError::UnknownTransition(raw)),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Domain -> wire. `sequence` is assigned by the sensor's queue.
pub fn finding_to_proto(f: &Finding, sequence: u64) -> pb::Finding {
    pb::Finding {
        id: f.id.clone(),
        sequence,
        node_name: f.node.clone(),
        kind: kind_to_proto(f.kind) as i32,
        transition: match f.transition {
            Transition::Started => pb::Transition::Started,
            Transition::Cleared => pb::Transition::Cleared,
        } as i32,
        pod: f.pod.as_ref().map(|p| pb::PodRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        }),
        owner: f.owner.as_ref().map(|o| pb::WorkloadRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        }),
        container: f.container.clone().unwrap_or_default(),
        reason: f.reason.clone(),
        message: f.message.clone(),
        restart_count: f.restart_count,
        exit_code: f.exit_code,
        image: f.image.clone().unwrap_or_default(),
        observed_at: Some(prost_types::Timestamp {
            seconds: f.observed_at_ms.div_euclid(1000),
            nanos: (f.observed_at_ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        evidence: (!f.log_lines.is_empty() || f.log_truncated).then(|| pb::Evidence {
            log_lines: f.log_lines.clone(),
            truncated: f.log_truncated,
            source: pb::LogSource::Unspecified as i32,
        }),
    }
}

/// Wire -> domain, refusing what the engine could not key or act on.
pub fn finding_from_proto(f: pb::Finding) -> Result<Finding, ConvertError> {
    let kind = kind_from_proto(f.kind)?;
    let transition = transition_from_proto(f.transition)?;
    if f.id.is_empty() {
        return Err(ConvertError::MissingId);
    }
    if f.node_name.is_empty() {
        return Err(ConvertError::MissingNode);
    }
    let pod = match f.pod {
        Some(p) if !p.namespace.is_empty() && !p.name.is_empty() && !p.uid.is_empty() => {
            Some(PodRef {
                namespace: p.namespace,
                name: p.name,
                uid: p.uid,
            })
        }
        _ if kind.is_node() => None,
        _ => return Err(ConvertError::MissingPod(kind)),
    };
    let owner = f
        .owner
        .filter(|o| !o.kind.is_empty() && !o.name.is_empty())
        .map(|o| WorkloadRef {
            kind: o.kind,
            name: o.name,
        });
    // In i128: near the ends of i64, seconds * 1000 leaves i64 before the nanos bring it back.
    let observed_at_ms = f
        .observed_at
        .map(|t| {
            let ms = i128::from(t.seconds) * 1000 + i128::from(t.nanos / 1_000_000);
            ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        })
        .unwrap_or_default();
    let (log_lines, log_truncated) = f
        .evidence
        .map(|e| (e.log_lines, e.truncated))
        .unwrap_or_default();
    Ok(Finding {
        id: f.id,
        node: f.node_name,
        kind,
        transition,
        pod,
        owner,
        container: non_empty(f.container),
        reason: f.reason,
        message: f.message,
        restart_count: f.restart_count,
        exit_code: f.exit_code,
        image: non_empty(f.image),
        observed_at_ms,
        log_lines,
        log_truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            id: "node-a/uid-1/app/7".into(),
            node: "node-a".into(),
            kind,
            transition: Transition::Started,
            pod: (!kind.is_node()).then(|| PodRef {
                namespace: "prod".into(),
                name: "api-1".into(),
                uid: "uid-1".into(),
            }),
            owner: (!kind.is_node()).then(|| WorkloadRef {
                kind: "Deployment".into(),
                name: "api".into(),
            }),
            container: (!kind.is_node()).then(|| "app".into()),
            reason: kind.as_str().into(),
            message: "m".into(),
            restart_count: 7,
            exit_code: Some(137),
            image: Some("img:1".into()),
            observed_at_ms: 1_764_000_000_123,
            log_lines: vec!["line 1".into(), "line 2".into()],
            log_truncated: true,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in FindingKind::ALL {
            let f = finding(kind);
            let wire = finding_to_proto(&f, 42);
            assert_eq!(wire.sequence, 42);
            assert_eq!(finding_from_proto(wire).unwrap(), f, "{kind}");
        }
    }

    #[test]
    fn malformed_findings_are_refused() {
        let good = finding_to_proto(&finding(FindingKind::OomKilled), 1);
        let cases: Vec<(pb::Finding, ConvertError)> = vec![
            (
                pb::Finding {
                    kind: 0,
                    ..good.clone()
                },
                ConvertError::UnknownKind(0),
            ),
            (
                pb::Finding {
                    kind: 999,
                    ..good.clone()
                },
                ConvertError::UnknownKind(999),
            ),
            (
                pb::Finding {
                    transition: 0,
                    ..good.clone()
                },
                ConvertError::UnknownTransition(0),
            ),
            (
                pb::Finding {
                    id: String::new(),
                    ..good.clone()
                },
                ConvertError::MissingId,
            ),
            (
                pb::Finding {
                    node_name: String::new(),
                    ..good.clone()
                },
                ConvertError::MissingNode,
            ),
            (
                pb::Finding {
                    pod: None,
                    ..good.clone()
                },
                ConvertError::MissingPod(FindingKind::OomKilled),
            ),
            (
                pb::Finding {
                    pod: Some(pb::PodRef {
                        namespace: "a".into(),
                        name: "b".into(),
                        uid: String::new(),
                    }),
                    ..good.clone()
                },
                ConvertError::MissingPod(FindingKind::OomKilled),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(finding_from_proto(wire), Err(want));
        }
    }

    #[test]
    fn node_findings_need_no_pod() {
        let wire = finding_to_proto(&finding(FindingKind::NodeDiskPressure), 3);
        assert!(wire.pod.is_none());
        assert_eq!(
            finding_from_proto(wire).unwrap().kind,
            FindingKind::NodeDiskPressure
        );
    }

    /// Found by `tests/fuzz.rs`: times near the ends of i64 came back shifted by up to a second.
    #[test]
    fn observation_times_at_the_ends_of_i64_round_trip() {
        for ms in [
            i64::MIN,
            i64::MIN + 1,
            -9_223_372_036_854_775_001,
            -1,
            0,
            999,
            i64::MAX,
        ] {
            let f = Finding {
                observed_at_ms: ms,
                ..finding(FindingKind::CrashLoopBackOff)
            };
            let back = finding_from_proto(finding_to_proto(&f, 1)).unwrap();
            assert_eq!(back.observed_at_ms, ms, "{ms}");
        }
    }
}
