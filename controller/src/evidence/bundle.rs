//! Gathering an evidence bundle before a destructive action: where it goes (the policy's
//! `logBundle`, else the chart's default), and what goes in it (the pod, its recent Events, its
//! node's conditions, the previous log from the finding or the API, the plan and the actions already
//! taken on the target). Building, redaction and storing live in the evidence crate.

use std::path::PathBuf;

use auto_agent_engine::Finding;
use auto_agent_engine::decide::{ActionRecord, Plan};
use auto_agent_evidence::document::{
    EventSummary, NodeConditionSummary, NodeSummary, OwnerSummary, PolicyRef, TakenAction,
};
use auto_agent_evidence::{BundleInput, Caps, Destination, KeyParts, Sse, bundle_key};
use auto_agent_shared::crd::policy::LogBundle;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};

/// The chart's default destination and encryption, used when a policy names none.
#[derive(Clone, Debug)]
pub struct BundleDefaults {
    pub destination: Destination,
    pub sse: Option<Sse>,
}

/// What a restart needs to know about its bundle beyond the finding and the pod.
#[derive(Clone, Debug)]
pub struct BundleContext {
    pub destination: Destination,
    pub caps: Caps,
    pub policy: PolicyRef,
    pub owner: Option<OwnerSummary>,
    pub taken: Vec<TakenAction>,
}

/// The destination for a policy's `logBundle` (or the default).
pub fn destination_for(log_bundle: Option<&LogBundle>, defaults: &BundleDefaults) -> Destination {
    let Some(lb) = log_bundle else {
        return defaults.destination.clone();
    };
    if let Some(s3) = &lb.s3 {
        let sse = match s3.server_side_encryption {
            Some(alg) => Some(Sse {
                algorithm: alg.as_str().to_owned(),
                kms_key_id: s3.kms_key_id.clone(),
            }),
            None => defaults.sse.clone(),
        };
        return Destination::S3 {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            sse,
        };
    }
    if let Some(fs) = &lb.filesystem {
        return Destination::Filesystem {
            root: PathBuf::from(&fs.path),
        };
    }
    defaults.destination.clone()
}

/// Caps from the policy (`logBundle.tailLines`).
pub fn caps_for(log_bundle: Option<&LogBundle>) -> Caps {
    let mut caps = Caps::default();
    if let Some(lb) = log_bundle {
        caps.log_lines = usize::try_from(lb.tail_lines).unwrap_or(caps.log_lines);
    }
    caps
}

/// RFC 3339 UTC of a time in milliseconds (empty if out of range).
pub fn rfc3339_ms(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Actions already taken on `target`, oldest first.
pub fn taken_on(records: &[ActionRecord], target: &str) -> Vec<TakenAction> {
    records
        .iter()
        .filter(|r| r.target == target)
        .map(|r| TakenAction {
            at: rfc3339_ms(r.at_ms),
            action: r.action.as_str().to_owned(),
            target: r.target.clone(),
            policy: r.policy.clone(),
            incident: r.incident.clone(),
        })
        .collect()
}

/// The key of this finding's bundle inside its destination.
pub fn key_for(f: &Finding, dest: &Destination, date: &str) -> String {
    let (namespace, pod) = f
        .pod
        .as_ref()
        .map_or(("_", "_"), |p| (p.namespace.as_str(), p.name.as_str()));
    let workload = f.owner.as_ref().map_or(pod, |o| o.name.as_str());
    bundle_key(
        dest.prefix(),
        &KeyParts {
            namespace,
            workload,
            reason: f.kind.as_str(),
            date,
            pod,
            restart_count: f.restart_count,
        },
    )
}

/// Reads what the bundle holds besides the finding. Every read is best effort: a bundle with a
/// gap (and the gap's reason in the log) beats no bundle, and never blocks the action.
pub async fn gather(
    client: &Client,
    f: &Finding,
    pod: &Pod,
    ctx: &BundleContext,
    plan: &Plan,
    created_at: String,
) -> BundleInput {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();

    let events = Api::<Event>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await;
    let mut events: Vec<EventSummary> = match events {
        Ok(list) => list.items.into_iter().map(event_summary).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "Reading the pod's Events for the bundle failed");
            Vec::new()
        }
    };
    events.sort_by(|a, b| a.time.cmp(&b.time));

    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let node = match &node_name {
        Some(n) => match Api::<Node>::all(client.clone()).get_opt(n).await {
            Ok(node) => Some(node_summary(n, node.as_ref())),
            Err(e) => {
                tracing::warn!(error = %e, "Reading the node for the bundle failed");
                Some(node_summary(n, None))
            }
        },
        None => None,
    };

    // The sensor's lines are the primary source; the API is the fallback for findings that came
    // without them (a sensor that could not read the file, or lines cut by the message cap).
    let api_log_lines = if f.log_lines.is_empty() {
        let params = LogParams {
            container: f.container.clone(),
            previous: true,
            tail_lines: Some(ctx.caps.log_lines as i64),
            limit_bytes: Some(256 * 1024),
            ..LogParams::default()
        };
        match Api::<Pod>::namespaced(client.clone(), &namespace)
            .logs(&name, &params)
            .await
        {
            Ok(text) => Some(text.lines().map(str::to_owned).collect()),
            Err(e) => {
                tracing::debug!(error = %e, "No previous log from the API");
                None
            }
        }
    } else {
        None
    };

    BundleInput {
        incident_key: plan.incident.as_str().to_owned(),
        created_at,
        policy: ctx.policy.clone(),
        findings: vec![f.clone()],
        api_log_lines,
        pod: serde_json::to_value(pod).ok(),
        events,
        owner: ctx.owner.clone(),
        node,
        planned: serde_json::to_value(plan).unwrap_or_default(),
        taken: ctx.taken.clone(),
    }
}

fn event_summary(e: Event) -> EventSummary {
    let time = e
        .last_timestamp
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.map(|t| t.0.to_string()));
    EventSummary {
        time,
        type_: e.type_.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        count: e.count.unwrap_or(1),
    }
}

fn node_summary(name: &str, node: Option<&Node>) -> NodeSummary {
    let conditions = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| NodeConditionSummary {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    last_transition_time: c.last_transition_time.as_ref().map(|t| t.0.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    NodeSummary {
        name: name.to_owned(),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_shared::crd::policy::{
        FilesystemDestination, S3Destination, ServerSideEncryption,
    };

    fn defaults() -> BundleDefaults {
        BundleDefaults {
            destination: Destination::Filesystem {
                root: "/var/lib/auto-agent/bundles".into(),
            },
            sse: Some(Sse {
                algorithm: "AES256".into(),
                kms_key_id: None,
            }),
        }
    }

    fn s3(sse: Option<ServerSideEncryption>) -> LogBundle {
        LogBundle {
            s3: Some(S3Destination {
                bucket: "evidence".into(),
                prefix: "prod".into(),
                server_side_encryption: sse,
                kms_key_id: None,
            }),
            filesystem: None,
            tail_lines: 20,
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(destination_for(None, &defaults()), defaults().destination);
        assert_eq!(
            destination_for(Some(&s3(None)), &defaults()),
            Destination::S3 {
                bucket: "evidence".into(),
                prefix: "prod".into(),
                sse: defaults().sse,
            }
        );
        let kms = destination_for(Some(&s3(Some(ServerSideEncryption::AwsKms))), &defaults());
        assert!(
            matches!(kms, Destination::S3 { sse: Some(Sse { ref algorithm, .. }), .. } if algorithm == "aws:kms")
        );
        let fs = LogBundle {
            s3: None,
            filesystem: Some(FilesystemDestination {
                path: "/mnt/efs/evidence".into(),
            }),
            tail_lines: 50,
        };
        assert_eq!(
            destination_for(Some(&fs), &defaults()),
            Destination::Filesystem {
                root: "/mnt/efs/evidence".into()
            }
        );
        assert_eq!(caps_for(Some(&s3(None))).log_lines, 20);
        assert_eq!(caps_for(None).log_lines, Caps::default().log_lines);
    }
}
