//! Writes NodeRemediationPolicy status like the namespaced policy's (leader only, fenced, only on
//! change): `Ready`/`Degraded` with reasons, `observedGeneration`, `matchedTargets` (nodes its
//! selector matches), `cordonedNodes` (nodes the agent cordoned under it now, from the
//! `autoagent.io/cordoned-by` marks on the Nodes) and the recent actions and refusals.

use std::sync::Arc;

use auto_agent_shared::crd::NodeRemediationPolicy;
use auto_agent_shared::keys::CORDONED_BY_ANNOTATION as CORDONED_BY;
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;
use crate::policies::node_index::{NodePolicyEntry, NodePolicyIndex};
use crate::policies::recent::{PolicyRef, RecentActions};
use crate::policies::status::{Desired, Pass, Written};

/// Matched and cordoned counts of one policy over the listed nodes.
pub fn counts<K: ResourceExt>(entry: &NodePolicyEntry, nodes: &[K]) -> (i32, i32) {
    let Ok(usable) = &entry.usable else {
        return (0, 0);
    };
    let matched = nodes
        .iter()
        .filter(|n| usable.selector.matches(n.labels()))
        .count() as i32;
    let cordoned = nodes
        .iter()
        .filter(|n| n.annotations().get(CORDONED_BY) == Some(&entry.name))
        .count() as i32;
    (matched, cordoned)
}

pub async fn run(
    client: Client,
    index: NodePolicyIndex,
    mut leadership: Leadership,
    metrics: ControllerMetrics,
    recent: RecentActions,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let api: Api<DeserializeGuard<NodeRemediationPolicy>> = Api::all(client.clone());
    let nodes_api: Api<Node> = Api::all(client);
    let mut written = Written::default();
    loop {
        match written.next_pass(&changed, &mut leadership, &stop).await {
            Pass::Stop => return,
            Pass::NotLeading => continue,
            Pass::Write => {}
        }
        let policies = index.all();
        if policies.is_empty() {
            continue;
        }
        // One list of Nodes per pass, metadata only (labels and annotations are what the counts
        // need; a Node's status is most of its size).
        let nodes = match nodes_api.list_metadata(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "Listing nodes for NodeRemediationPolicy status failed");
                continue;
            }
        };
        for entry in policies {
            let (matched, cordoned) = counts(&entry, &nodes);
            let policy = PolicyRef::Cluster {
                name: entry.name.clone(),
            };
            let desired = Desired {
                generation: entry.generation,
                matched: Some(matched),
                cordoned: Some(cordoned),
                problem: entry
                    .usable
                    .as_ref()
                    .err()
                    .map(|p| (p.reason, p.message.clone())),
                degraded: None,
                recent: recent.get(&policy),
            };
            if written.unchanged(&policy, &desired) {
                continue;
            }
            if !written
                .write(&api, &policy, desired, &leadership, &metrics)
                .await
            {
                break;
            }
        }
    }
}
