//! Node pressure scenarios on the real control plane. A separate test binary, so the taints the
//! node lifecycle controller adds never meet the scheduling tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::Cluster;
use auto_agent_e2e::scenario::{self, HOLD_LABEL, NodePressure};
use auto_agent_e2e::wait::until;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

const TIMEOUT: Duration = Duration::from_secs(60);

fn condition(node: &Node, type_: &str) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

#[tokio::test]
async fn pressure_conditions_stay_until_cleared() {
    let cluster = Cluster::get().unwrap();
    let client = cluster.admin().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = "kwok-node-0";
    let cases = [
        (NodePressure::Memory, "node.kubernetes.io/memory-pressure"),
        (NodePressure::Disk, "node.kubernetes.io/disk-pressure"),
        (NodePressure::Pid, "node.kubernetes.io/pid-pressure"),
    ];
    for (pressure, taint) in cases {
        let kind = pressure.condition_type();
        scenario::node_pressure(&client, node, pressure, true)
            .await
            .unwrap();
        // The real node lifecycle controller reacts to the condition with its taint.
        let tainted = until(nodes.clone(), node, TIMEOUT, move |n: Option<&Node>| {
            n.is_some_and(|n| has_taint(n, taint))
        })
        .await
        .unwrap();
        assert_eq!(condition(&tainted, kind).as_deref(), Some("True"), "{kind}");
        assert_eq!(
            condition(&tainted, "Ready").as_deref(),
            Some("True"),
            "pressure is not NotReady"
        );
        assert!(
            tainted
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(HOLD_LABEL)
        );

        let cleared = scenario::node_pressure(&client, node, pressure, false)
            .await
            .unwrap();
        assert_eq!(condition(&cleared, kind).as_deref(), Some("False"));
        let untainted = until(nodes.clone(), node, TIMEOUT, move |n: Option<&Node>| {
            n.is_some_and(|n| !has_taint(n, taint))
        })
        .await
        .unwrap();
        assert!(
            !untainted
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(HOLD_LABEL)
        );
    }
}
