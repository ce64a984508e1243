//! Owner resolution without API calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use auto_agent_engine::WorkloadRef;
use auto_agent_engine::detect::resolve_owner;

#[test]
fn owner_table() {
    let w = |k: &str, n: &str| {
        Some(WorkloadRef {
            kind: k.into(),
            name: n.into(),
        })
    };
    let cases = [
        (
            (Some("ReplicaSet"), Some("api-7d9c5b"), Some("7d9c5b")),
            w("Deployment", "api"),
        ),
        (
            (Some("ReplicaSet"), Some("my-api-v2-7d9c5b"), Some("7d9c5b")),
            w("Deployment", "my-api-v2"),
        ),
        (
            (Some("ReplicaSet"), Some("standalone"), None),
            w("ReplicaSet", "standalone"),
        ),
        (
            (Some("ReplicaSet"), Some("rs-abc"), Some("zzz")),
            w("ReplicaSet", "rs-abc"),
        ),
        (
            (Some("ReplicaSet"), Some("7d9c5b"), Some("7d9c5b")),
            w("ReplicaSet", "7d9c5b"),
        ),
        (
            (Some("StatefulSet"), Some("db"), None),
            w("StatefulSet", "db"),
        ),
        (
            (Some("DaemonSet"), Some("agent"), Some("h")),
            w("DaemonSet", "agent"),
        ),
        ((Some("Job"), Some("migrate"), None), w("Job", "migrate")),
        ((None, None, None), None),
        ((Some(""), Some("x"), None), None),
    ];
    for ((kind, name, hash), want) in cases {
        assert_eq!(
            resolve_owner(kind, name, hash),
            want,
            "{kind:?} {name:?} {hash:?}"
        );
    }
}
