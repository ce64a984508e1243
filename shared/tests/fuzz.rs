//! Fuzzing the wire contract on stable Rust (proptest): whatever bytes reach a controller or a
//! sensor decode to a message or an error, every wire finding converts or is refused with a typed
//! reason, and conversions round-trip. Budget: `PROPTEST_CASES` (proptest's 256 in `make test`,
//! more in `make fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::{Finding, FindingKind, PodRef, Transition, WorkloadRef};
use auto_agent_shared::convert::{finding_from_proto, finding_to_proto};
use auto_agent_shared::proto::v1::{self as pb, controller_message, sensor_message};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::Message;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9./-]{1,12}", any::<String>()]
}

fn wire_finding() -> impl Strategy<Value = pb::Finding> {
    let pod = option::of(
        (text(), text(), text()).prop_map(|(namespace, name, uid)| pb::PodRef {
            namespace,
            name,
            uid,
        }),
    );
    let owner =
        option::of((text(), text()).prop_map(|(kind, name)| pb::WorkloadRef { kind, name }));
    let observed = option::of(
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    );
    let evidence = option::of(
        (vec(any::<String>(), 0..4), any::<bool>(), -2..6i32).prop_map(
            |(log_lines, truncated, source)| pb::Evidence {
                log_lines,
                truncated,
                source,
            },
        ),
    );
    (
        (
            text(),
            any::<u64>(),
            text(),
            -2..12i32,
            -2..4i32,
            pod,
            owner,
        ),
        (
            text(),
            text(),
            text(),
            any::<u32>(),
            option::of(any::<i32>()),
            text(),
            observed,
            evidence,
        ),
    )
        .prop_map(
            |(
                (id, sequence, node_name, kind, transition, pod, owner),
                (
                    container,
                    reason,
                    message,
                    restart_count,
                    exit_code,
                    image,
                    observed_at,
                    evidence,
                ),
            )| pb::Finding {
                id,
                sequence,
                node_name,
                kind,
                transition,
                pod,
                owner,
                container,
                reason,
                message,
                restart_count,
                exit_code,
                image,
                observed_at,
                evidence,
            },
        )
}

fn non_empty() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,20}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty())
    ]
}

/// Findings as a sensor builds them: every field the wire requires is present.
fn domain_finding() -> impl Strategy<Value = Finding> {
    let kind = proptest::sample::select(FindingKind::ALL.to_vec());
    let pod = (non_empty(), non_empty(), non_empty()).prop_map(|(namespace, name, uid)| PodRef {
        namespace,
        name,
        uid,
    });
    let owner = (non_empty(), non_empty()).prop_map(|(kind, name)| WorkloadRef { kind, name });
    (
        (
            non_empty(),
            non_empty(),
            kind,
            any::<bool>(),
            pod,
            any::<bool>(),
            option::of(owner),
        ),
        (
            option::of(non_empty()),
            any::<String>(),
            any::<String>(),
            any::<u32>(),
        ),
        (
            option::of(any::<i32>()),
            option::of(non_empty()),
            any::<i64>(),
            vec(any::<String>(), 0..4),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (id, node, kind, cleared, pod, node_has_pod, owner),
                (container, reason, message, restart_count),
                (exit_code, image, observed_at_ms, log_lines, log_truncated),
            )| Finding {
                id,
                node,
                kind,
                transition: if cleared {
                    Transition::Cleared
                } else {
                    Transition::Started
                },
                pod: (!kind.is_node() || node_has_pod).then_some(pod),
                owner,
                container,
                reason,
                message,
                restart_count,
                exit_code,
                image,
                observed_at_ms,
                log_lines,
                log_truncated,
            },
        )
}

proptest! {
    /// Arbitrary bytes as either side's message: decoded or refused, never a panic; a decoded
    /// finding converts or is refused with a typed reason.
    #[test]
    fn fuzz_any_bytes_decode_or_are_refused(bytes in vec(any::<u8>(), 0..600)) {
        if let Ok(m) = pb::SensorMessage::decode(bytes.as_slice())
            && let Some(sensor_message::Message::Finding(f)) = m.message
            && let Err(e) = finding_from_proto(f)
        {
            prop_assert!(!e.category().is_empty());
        }
        if let Ok(m) = pb::ControllerMessage::decode(bytes.as_slice())
            && let Some(controller_message::Message::NotLeader(n)) = m.message
        {
            // The endpoint is just text to the decoder; the sensor's dialer validates it.
            let _ = n.leader_endpoint.len();
        }
    }

    /// Any wire finding converts or is refused; what converts comes back the same after a round
    /// trip through the wire (the controller and the sensor agree on it).
    #[test]
    fn fuzz_wire_findings_convert_or_are_refused(f in wire_finding()) {
        let sequence = f.sequence;
        match finding_from_proto(f) {
            Ok(d) => {
                let again = finding_from_proto(finding_to_proto(&d, sequence));
                prop_assert_eq!(again, Ok(d));
            }
            Err(e) => prop_assert!(!e.category().is_empty()),
        }
    }

    /// A sensor's finding survives encoding to bytes and back unchanged, sequence included.
    #[test]
    fn fuzz_domain_findings_round_trip_through_bytes(d in domain_finding(), sequence in any::<u64>()) {
        let message = pb::SensorMessage {
            message: Some(sensor_message::Message::Finding(finding_to_proto(&d, sequence))),
        };
        let decoded = pb::SensorMessage::decode(message.encode_to_vec().as_slice()).unwrap();
        let Some(sensor_message::Message::Finding(wire)) = decoded.message else {
            panic!("not a finding: {decoded:?}");
        };
        prop_assert_eq!(wire.sequence, sequence);
        prop_assert_eq!(finding_from_proto(wire), Ok(d));
    }
}
