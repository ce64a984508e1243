//! Verify: a finding is a hint from a node, and a node can be compromised (so can anyone who may
//! create a pod). Before a pod finding enters the incident book, the pod is read from the API
//! server: it must exist with the finding's uid, run on the stream's node, and have the named
//! container; its owner is resolved from the API (`cluster::owner`) and must be the one claimed. The
//! finding that goes on carries the API server's owner and image, never the sensor's.

use auto_agent_engine::{Finding, Transition, WorkloadRef};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::cluster::owner::{ChainError, Owner};
use crate::platform::events::EventSink;
use crate::platform::metrics::ControllerMetrics;

/// Why a finding does not go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The pod it is about no longer exists (or is another pod of that name): nothing to do.
    Stale(String),
    /// The finding, or the pod it is about, claims what the API server contradicts.
    Forged {
        /// Bounded metric label.
        reason: &'static str,
        message: String,
    },
}

fn forged(reason: &'static str, message: String) -> Refused {
    Refused::Forged { reason, message }
}

/// What the API server says about the pod a finding names.
#[derive(Debug)]
pub struct PodTruth {
    /// The pod, if it exists with the finding's uid.
    pub pod: Option<Pod>,
    /// Its owner as resolved from the API (`Ok(None)`: a bare pod).
    pub owner: Result<Option<Owner>, ChainError>,
}

/// The finding to go on with, rewritten with the API server's facts, or why it stops here.
pub fn check(mut f: Finding, stream_node: &str, truth: &PodTruth) -> Result<Finding, Refused> {
    let Some(pod_ref) = f.pod.clone() else {
        // Node findings: the stream's node was checked at the ingest.
        return Ok(f);
    };
    let Some(pod) = &truth.pod else {
        if f.transition == Transition::Cleared {
            // A cleared condition may outlive its pod; it only closes an incident, and keeps no logs.
            f.log_lines.clear();
            return Ok(f);
        }
        return Err(Refused::Stale(format!(
            "pod {}/{} (uid {}) does not exist",
            pod_ref.namespace, pod_ref.name, pod_ref.uid
        )));
    };
    let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if on_node != Some(stream_node) {
        return Err(forged(
            "wrong_node",
            format!(
                "pod {}/{} runs on node {}, not on the stream's node {stream_node}",
                pod_ref.namespace,
                pod_ref.name,
                on_node.unwrap_or("(none)")
            ),
        ));
    }
    let owner = match &truth.owner {
        Ok(o) => o.as_ref().map(|o| WorkloadRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        }),
        Err(e) => return Err(forged("owner_unverified", e.to_string())),
    };
    if f.owner != owner {
        let name = |o: &Option<WorkloadRef>| {
            o.as_ref()
                .map_or("no owner".to_owned(), |o| format!("{} {}", o.kind, o.name))
        };
        return Err(forged(
            "owner_mismatch",
            format!(
                "the finding names {} as the owner of pod {}/{}; the API server says {}",
                name(&f.owner),
                pod_ref.namespace,
                pod_ref.name,
                name(&owner)
            ),
        ));
    }
    if let Some(container) = &f.container {
        let spec = pod.spec.as_ref();
        let found = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| &c.name == container);
        let Some(found) = found else {
            return Err(forged(
                "no_container",
                format!(
                    "pod {}/{} has no container {container}",
                    pod_ref.namespace, pod_ref.name
                ),
            ));
        };
        // The image the pod's spec asks for, not what a sensor says it saw.
        f.image = found.image.clone();
    }
    f.owner = owner;
    Ok(f)
}

/// Reads what `check` needs: the pod by name (kept only with the finding's uid) and its owner.
pub async fn read(client: &Client, f: &Finding) -> Result<PodTruth, kube::Error> {
    let Some(pod_ref) = &f.pod else {
        return Ok(PodTruth {
            pod: None,
            owner: Ok(None),
        });
    };
    let pod = Api::<Pod>::namespaced(client.clone(), &pod_ref.namespace)
        .get_opt(&pod_ref.name)
        .await?
        .filter(|p| p.metadata.uid.as_deref() == Some(pod_ref.uid.as_str()));
    let owner = match &pod {
        Some(p) => crate::cluster::owner::resolve(client, p).await?,
        None => Ok(None),
    };
    Ok(PodTruth { pod, owner })
}

/// The verify step as the ingest uses it: read, check, and count and report what is refused.
#[derive(Clone)]
pub struct Verifier {
    pub client: Client,
    pub events: EventSink,
    pub metrics: ControllerMetrics,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl Verifier {
    /// The finding to submit, or why not (already counted, and a forgery reported as a Warning
    /// Event on the pod). An API error is returned as is: the finding is not acknowledged, so the
    /// sensor sends it again.
    pub async fn verify(
        &self,
        f: Finding,
        stream_node: &str,
    ) -> Result<Result<Finding, Refused>, kube::Error> {
        let truth = read(&self.client, &f).await?;
        let checked = check(f, stream_node, &truth);
        match &checked {
            Ok(_) => {}
            Err(Refused::Stale(message)) => {
                self.metrics.findings.with_label_values(&["stale"]).inc();
                tracing::debug!(%message, "Finding about a pod that no longer exists dropped");
            }
            Err(Refused::Forged { reason, message }) => {
                self.metrics.findings.with_label_values(&["forged"]).inc();
                self.metrics
                    .forged_findings
                    .with_label_values(&[reason])
                    .inc();
                tracing::warn!(node = stream_node, reason, %message, "Forged finding refused");
                if let Some(pod) = &truth.pod {
                    use kube::Resource;
                    self.events
                        .publish(
                            &pod.object_ref(&()),
                            kube::runtime::events::EventType::Warning,
                            "ForgedFinding",
                            format!("not acting on a finding from node {stream_node}: {message}"),
                        )
                        .await;
                }
            }
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_engine::{FindingKind, PodRef};
    use serde_json::json;

    fn finding(
        owner: Option<(&str, &str)>,
        container: Option<&str>,
        transition: Transition,
    ) -> Finding {
        Finding {
            id: "f-1".into(),
            node: "node-a".into(),
            kind: FindingKind::ImagePullBackOff,
            transition,
            pod: Some(PodRef {
                namespace: "shop".into(),
                name: "api-x".into(),
                uid: "pod-uid".into(),
            }),
            owner: owner.map(|(k, n)| WorkloadRef {
                kind: k.into(),
                name: n.into(),
            }),
            container: container.map(Into::into),
            reason: "ImagePullBackOff".into(),
            message: String::new(),
            restart_count: 0,
            exit_code: None,
            image: Some("attacker.example/evil:1".into()),
            observed_at_ms: 1,
            log_lines: vec!["a log line".into()],
            log_truncated: false,
        }
    }

    fn pod(node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "api-x", "namespace": "shop", "uid": "pod-uid"},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "shop/api:1"}],
                     "initContainers": [{"name": "init", "image": "shop/init:1"}]}
        }))
        .unwrap()
    }

    fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            kind: kind.into(),
            name: name.into(),
            fetched: None,
        }
    }

    fn outcome(r: &Result<Finding, Refused>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(Refused::Stale(_)) => "stale",
            Err(Refused::Forged { reason, .. }) => reason,
        }
    }

    #[test]
    fn only_what_the_api_server_confirms_goes_on() {
        use Transition::{Cleared, Started};
        let api = Some(("Deployment", "api"));
        let billing = Some(("Deployment", "billing"));
        let chain_error = ChainError::Uid {
            kind: "ReplicaSet".into(),
            name: "billing-1".into(),
            claimed: "forged".into(),
            actual: "real".into(),
        };
        // (case, finding's owner, container, transition, pod's node (None: pod gone), API owner, want)
        type Owned = Option<(&'static str, &'static str)>;
        type Case = (
            &'static str,
            Owned,
            Option<&'static str>,
            Transition,
            Option<Option<&'static str>>,
            Result<Owned, ChainError>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "all confirmed",
                api,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Ok(api),
                "ok",
            ),
            (
                "init container",
                api,
                Some("init"),
                Started,
                Some(Some("node-a")),
                Ok(api),
                "ok",
            ),
            (
                "bare pod",
                None,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Ok(None),
                "ok",
            ),
            (
                "pod gone",
                api,
                Some("app"),
                Started,
                None,
                Ok(None),
                "stale",
            ),
            (
                "pod gone, condition cleared",
                api,
                Some("app"),
                Cleared,
                None,
                Ok(None),
                "ok",
            ),
            (
                "pod on another node",
                api,
                Some("app"),
                Started,
                Some(Some("node-b")),
                Ok(api),
                "wrong_node",
            ),
            (
                "pod not scheduled",
                api,
                Some("app"),
                Started,
                Some(None),
                Ok(api),
                "wrong_node",
            ),
            (
                "claims another team's Deployment",
                billing,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Ok(api),
                "owner_mismatch",
            ),
            (
                "claims an owner for a bare pod",
                billing,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Ok(None),
                "owner_mismatch",
            ),
            (
                "hides its owner",
                None,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Ok(api),
                "owner_mismatch",
            ),
            (
                "pod's owner reference forged",
                billing,
                Some("app"),
                Started,
                Some(Some("node-a")),
                Err(chain_error.clone()),
                "owner_unverified",
            ),
            (
                "container the pod does not have",
                api,
                Some("evil"),
                Started,
                Some(Some("node-a")),
                Ok(api),
                "no_container",
            ),
            (
                "cleared, but forged owner",
                billing,
                Some("app"),
                Cleared,
                Some(Some("node-a")),
                Ok(api),
                "owner_mismatch",
            ),
        ];
        for (name, claimed, container, transition, node, api_owner, want) in cases {
            let truth = PodTruth {
                pod: node.map(pod),
                owner: api_owner.map(|o| o.map(|(k, n)| owner(k, n))),
            };
            let got = check(finding(claimed, container, transition), "node-a", &truth);
            assert_eq!(outcome(&got), want, "{name}: {got:?}");
            if let Err(Refused::Forged { reason, .. }) = &got {
                assert!(
                    crate::platform::metrics::FORGED_REASONS.contains(reason),
                    "{reason} is a pre-registered label"
                );
            }
        }
    }

    #[test]
    fn what_goes_on_carries_the_api_servers_image_and_owner() {
        let truth = PodTruth {
            pod: Some(pod(Some("node-a"))),
            owner: Ok(Some(owner("Deployment", "api"))),
        };
        let f = check(
            finding(
                Some(("Deployment", "api")),
                Some("app"),
                Transition::Started,
            ),
            "node-a",
            &truth,
        )
        .unwrap();
        assert_eq!(
            f.image.as_deref(),
            Some("shop/api:1"),
            "the spec's image, not the sensor's"
        );
        assert_eq!(f.owner.map(|o| o.name).as_deref(), Some("api"));

        let gone = PodTruth {
            pod: None,
            owner: Ok(None),
        };
        let f = check(
            finding(
                Some(("Deployment", "api")),
                Some("app"),
                Transition::Cleared,
            ),
            "node-a",
            &gone,
        )
        .unwrap();
        assert!(
            f.log_lines.is_empty(),
            "a cleared finding about a gone pod keeps no logs"
        );
    }
}
