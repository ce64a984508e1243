//! Which workload owns a pod, as the API server tells it: the pod's controller reference, followed
//! by uid to the object it names (ReplicaSet, StatefulSet, DaemonSet, Job), and from a ReplicaSet to
//! its controlling Deployment, each link checked by uid and by the owner's selector matching the
//! pod's labels. A sensor's claim about the owner is never used; a pod that names an owner which does
//! not own it is a forgery (anyone who may create pods can write any ownerReference).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;

use crate::cluster::facts::selector_of;
use crate::cluster::workloads::{Fetched, fetch};

/// The workload that owns a pod.
#[derive(Clone, Debug)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    /// The object as read (`None` for a controller kind the agent does not read or patch, whose
    /// name comes from the pod's own reference).
    pub fetched: Option<Fetched>,
}

/// Why a pod's ownership does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the pod names {kind} {name} as its controller, which does not exist")]
    Missing { kind: String, name: String },
    #[error("the pod names {kind} {name} with uid {claimed}, but that object's uid is {actual}")]
    Uid {
        kind: String,
        name: String,
        claimed: String,
        actual: String,
    },
    #[error("the pod's labels do not match the selector of {kind} {name}")]
    Selector { kind: String, name: String },
    #[error(
        "the pod names {kind} ({api_version}) as its controller, which never owns pods directly"
    )]
    Impostor { kind: String, api_version: String },
}

/// The API group/version each controller kind the agent reads lives in.
fn api_version_of(kind: &str) -> Option<&'static str> {
    match kind {
        "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Deployment" => Some("apps/v1"),
        "Job" => Some("batch/v1"),
        _ => None,
    }
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `reference` (from a child) truly points at `owner`, and the owner selects the pod.
pub fn link(
    pod_labels: &BTreeMap<String, String>,
    reference: &OwnerReference,
    owner: Option<&Fetched>,
) -> Result<(), ChainError> {
    let (kind, name) = (reference.kind.clone(), reference.name.clone());
    let Some(owner) = owner else {
        return Err(ChainError::Missing { kind, name });
    };
    let actual = owner.meta.uid.clone().unwrap_or_default();
    if actual.is_empty() || actual != reference.uid {
        return Err(ChainError::Uid {
            kind,
            name,
            claimed: reference.uid.clone(),
            actual,
        });
    }
    // An owner without a selector (or with one the agent cannot read) selects nothing: a
    // controller always has one, so this is not a pod it manages.
    let selects = owner
        .selector
        .as_ref()
        .and_then(|s| selector_of(s).ok())
        .is_some_and(|s| {
            !(s.match_labels.is_empty() && s.requirements.is_empty()) && s.matches(pod_labels)
        });
    if !selects {
        return Err(ChainError::Selector { kind, name });
    }
    Ok(())
}

/// How the agent treats a pod's controller reference.
#[derive(Debug, PartialEq, Eq)]
enum Reference {
    /// A kind that owns pods and that the agent reads (ReplicaSet, StatefulSet, DaemonSet, Job).
    Readable,
    /// A kind the agent neither reads nor patches (an operator's own kind): named, never acted on.
    Foreign,
    /// A kind the agent patches named where it never owns pods (a Deployment directly, or a
    /// look-alike in another API group): only a forged pod does that.
    Impostor,
}

fn classify(reference: &OwnerReference) -> Reference {
    match api_version_of(&reference.kind) {
        None => Reference::Foreign,
        Some(_) if reference.kind == "Deployment" => Reference::Impostor,
        Some(v) if v == reference.api_version => Reference::Readable,
        Some(_) => Reference::Impostor,
    }
}

/// The owner of a pod as the API server tells it: `Ok(None)` for a bare pod.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
) -> Result<Result<Option<Owner>, ChainError>, kube::Error> {
    let Some(first) = controller_of(&pod.metadata) else {
        return Ok(Ok(None));
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    match classify(first) {
        Reference::Readable => {}
        Reference::Foreign => {
            return Ok(Ok(Some(Owner {
                kind: first.kind.clone(),
                name: first.name.clone(),
                fetched: None,
            })));
        }
        Reference::Impostor => {
            return Ok(Err(ChainError::Impostor {
                kind: first.kind.clone(),
                api_version: first.api_version.clone(),
            }));
        }
    }
    let direct = fetch(client, &namespace, &first.kind, &first.name).await?;
    if let Err(e) = link(&labels, first, direct.as_ref()) {
        return Ok(Err(e));
    }
    // `link` refused a missing owner above.
    let Some(direct) = direct else {
        return Ok(Err(ChainError::Missing {
            kind: first.kind.clone(),
            name: first.name.clone(),
        }));
    };
    let above = controller_of(&direct.meta)
        .filter(|r| first.kind == "ReplicaSet" && r.kind == "Deployment")
        .filter(|r| r.api_version == "apps/v1")
        .cloned();
    let Some(second) = above else {
        return Ok(Ok(Some(Owner {
            kind: first.kind.clone(),
            name: first.name.clone(),
            fetched: Some(direct),
        })));
    };
    let deployment = fetch(client, &namespace, "Deployment", &second.name).await?;
    if let Err(e) = link(&labels, &second, deployment.as_ref()) {
        return Ok(Err(e));
    }
    Ok(Ok(Some(Owner {
        kind: second.kind.clone(),
        name: second.name.clone(),
        fetched: deployment,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeApi;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use serde_json::{Value, json};

    fn reference(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version_of(kind).unwrap_or("example.com/v1").into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    fn fetched(uid: Option<&str>, selector: Option<&[(&str, &str)]>) -> Fetched {
        Fetched {
            meta: ObjectMeta {
                uid: uid.map(Into::into),
                ..ObjectMeta::default()
            },
            desired: 1,
            ready: 1,
            template: None,
            selector: selector.map(|pairs| LabelSelector {
                match_labels: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..LabelSelector::default()
            }),
            reference: Default::default(),
        }
    }

    #[test]
    fn a_link_holds_only_by_uid_and_selector() {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "api".to_owned())].into();
        let r = reference("ReplicaSet", "api-5d8f7", "uid-1");
        let cases: Vec<(&str, Option<Fetched>, Result<(), &str>)> = vec![
            (
                "uid and selector match",
                Some(fetched(Some("uid-1"), Some(&[("app", "api")]))),
                Ok(()),
            ),
            ("owner missing", None, Err("Missing")),
            (
                "another object of that name",
                Some(fetched(Some("uid-2"), Some(&[("app", "api")]))),
                Err("Uid"),
            ),
            (
                "owner without uid",
                Some(fetched(None, Some(&[("app", "api")]))),
                Err("Uid"),
            ),
            (
                "selector does not match the pod",
                Some(fetched(Some("uid-1"), Some(&[("app", "billing")]))),
                Err("Selector"),
            ),
            (
                "no selector",
                Some(fetched(Some("uid-1"), None)),
                Err("Selector"),
            ),
            (
                "empty selector selects nothing here",
                Some(fetched(Some("uid-1"), Some(&[]))),
                Err("Selector"),
            ),
        ];
        for (name, owner, want) in cases {
            let got = link(&labels, &r, owner.as_ref()).map_err(|e| match e {
                ChainError::Missing { .. } => "Missing",
                ChainError::Uid { .. } => "Uid",
                ChainError::Selector { .. } => "Selector",
                ChainError::Impostor { .. } => "Impostor",
            });
            assert_eq!(got, want, "{name}");
        }
    }

    fn pod(owner: Option<OwnerReference>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "api-5d8f7-x2x9z", "namespace": "shop", "uid": "pod-uid",
                         "labels": {"app": "api", "pod-template-hash": "5d8f7"},
                         "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default()},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "shop/api:1"}]}
        }))
        .unwrap()
    }

    fn replica_set(uid: &str, owner: Option<Value>) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "api-5d8f7", "namespace": "shop", "uid": uid,
                            "ownerReferences": owner.map(|o| vec![o]).unwrap_or_default()},
               "spec": {"selector": {"matchLabels": {"app": "api", "pod-template-hash": "5d8f7"}},
                        "template": {"metadata": {"labels": {"app": "api"}},
                                     "spec": {"containers": [{"name": "app", "image": "shop/api:1"}]}}}})
    }

    fn deployment(uid: &str, app: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "api", "namespace": "shop", "uid": uid},
               "spec": {"selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}},
                                     "spec": {"containers": [{"name": "app", "image": "shop/api:1"}]}}}})
    }

    fn deployment_ref(uid: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": uid, "controller": true})
    }

    const RS: &str = "/apis/apps/v1/namespaces/shop/replicasets/api-5d8f7";
    const DEPLOY: &str = "/apis/apps/v1/namespaces/shop/deployments/api";

    /// (case, pod's controller reference, ReplicaSet answer, Deployment answer, want)
    #[tokio::test]
    async fn the_chain_is_followed_by_uid_from_the_api_server() {
        let rs_ref = reference("ReplicaSet", "api-5d8f7", "rs-uid");
        type Want = Result<Option<(&'static str, &'static str)>, &'static str>;
        type Case = (
            &'static str,
            Option<OwnerReference>,
            Option<Value>,
            Option<Value>,
            Want,
        );
        let cases: Vec<Case> = vec![
            ("bare pod", None, None, None, Ok(None)),
            (
                "pod -> ReplicaSet -> Deployment",
                Some(rs_ref.clone()),
                Some(replica_set("rs-uid", Some(deployment_ref("d-uid")))),
                Some(deployment("d-uid", "api")),
                Ok(Some(("Deployment", "api"))),
            ),
            (
                "ReplicaSet without a Deployment",
                Some(rs_ref.clone()),
                Some(replica_set("rs-uid", None)),
                None,
                Ok(Some(("ReplicaSet", "api-5d8f7"))),
            ),
            (
                "forged uid for the ReplicaSet",
                Some(reference("ReplicaSet", "api-5d8f7", "forged")),
                Some(replica_set("rs-uid", Some(deployment_ref("d-uid")))),
                Some(deployment("d-uid", "api")),
                Err("Uid"),
            ),
            (
                "named ReplicaSet does not exist",
                Some(rs_ref.clone()),
                None,
                Some(deployment("d-uid", "api")),
                Err("Missing"),
            ),
            (
                "the Deployment was replaced (uid differs)",
                Some(rs_ref.clone()),
                Some(replica_set("rs-uid", Some(deployment_ref("d-uid")))),
                Some(deployment("other-uid", "api")),
                Err("Uid"),
            ),
            (
                "the Deployment does not select the pod",
                Some(rs_ref.clone()),
                Some(replica_set("rs-uid", Some(deployment_ref("d-uid")))),
                Some(deployment("d-uid", "billing")),
                Err("Selector"),
            ),
            (
                "a look-alike kind in another group is not followed",
                Some(OwnerReference {
                    api_version: "apps.example.com/v1".into(),
                    ..rs_ref.clone()
                }),
                Some(replica_set("rs-uid", Some(deployment_ref("d-uid")))),
                Some(deployment("d-uid", "api")),
                Err("Impostor"),
            ),
            (
                "a pod may not name a Deployment directly",
                Some(reference("Deployment", "api", "d-uid")),
                None,
                Some(deployment("d-uid", "api")),
                Err("Impostor"),
            ),
            (
                "an operator's own kind is named, not read",
                Some(reference("Rollout", "api", "r-uid")),
                None,
                None,
                Ok(Some(("Rollout", "api"))),
            ),
        ];
        for (name, owner, rs, deploy, want) in cases {
            let api = FakeApi::default();
            if let Some(rs) = rs {
                api.on("GET", RS, vec![(200, rs)]);
            }
            if let Some(d) = deploy {
                api.on("GET", DEPLOY, vec![(200, d)]);
            }
            let got = resolve(&api.client(), &pod(owner)).await.unwrap();
            let got = got
                .as_ref()
                .map(|o| o.as_ref().map(|o| (o.kind.as_str(), o.name.as_str())))
                .map_err(|e| match e {
                    ChainError::Missing { .. } => "Missing",
                    ChainError::Uid { .. } => "Uid",
                    ChainError::Selector { .. } => "Selector",
                    ChainError::Impostor { .. } => "Impostor",
                });
            assert_eq!(got, want, "{name}");
            let verified = got
                .as_ref()
                .ok()
                .and_then(|o| *o)
                .is_some_and(|(k, _)| k == "Deployment" || k == "ReplicaSet");
            if name.contains("look-alike") || name.contains("directly") || name.contains("operator")
            {
                // Neither is read from the API: nothing the agent could patch is vouched for.
                assert!(api.seen().is_empty(), "{name}: {:?}", api.seen());
            } else if verified {
                assert!(!api.seen().is_empty(), "{name}: the chain was read");
            }
        }
    }
}
