//! Trust nothing a sensor claims that the API server can tell: a pod anyone may create names a
//! victim's ReplicaSet as its controller (a look-alike API group, so the garbage collector leaves it
//! alone) with a container and image of its own; the honest sensor reports it as the victim
//! Deployment's. With a mirror that serves the attacker's image (a pull-through cache does), the
//! controller used to rewrite the victim's template. It must refuse the finding as forged, say so
//! in an Event on the pod, count it, and leave the victim untouched, while the victim's own
//! failing pod is still remediated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const NODE: &str = "kwok-node-1";
const TIMEOUT: Duration = Duration::from_secs(90);
const VICTIM_IMAGE: &str = "registry.example.com/team/app:1";
const ATTACKER_IMAGE: &str = "registry.example.com/attacker/evil:1";

fn template(
    d: &Deployment,
) -> (
    Vec<(String, String)>,
    std::collections::BTreeMap<String, String>,
) {
    let spec = d.spec.clone().unwrap().template.spec.unwrap();
    let containers = spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    (
        containers,
        d.metadata.annotations.clone().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_forging_its_owner_never_changes_the_victim() {
    let mut t = Setup::new("forged", NODE).await;
    let admin = t.admin.clone();
    let ns = t.ns().to_owned();

    // The mirror serves both the victim's image and the attacker's.
    let mirror = t
        .start_agents_with_mirror(&["mirror/team/app", "mirror/attacker/evil"])
        .await;
    let registry = mirror.host.clone();
    t.policy(
        "mirror",
        json!({"targetSelector": {"matchLabels": {"tier": "pull"}},
               "actions": {"imageMirror": {"registry": format!("{registry}/mirror")}}}),
    );

    let victim_pod = t
        .running_pod(
            Workload::new("victim")
                .label("tier", "pull")
                .image(VICTIM_IMAGE),
        )
        .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let before = template(&deployments.get("victim").await.unwrap());

    // The forged pod: the victim ReplicaSet's name and pod-template-hash, a look-alike group and a
    // made-up uid, its own container and an image that cannot be pulled.
    let rs = Api::<ReplicaSet>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("victim-"))
        })
        .expect("the victim's ReplicaSet");
    let rs_name = rs.metadata.name.clone().unwrap();
    let hash = rs_name.trim_start_matches("victim-").to_owned();
    let forged: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "forged", "labels": {"tier": "pull", "app": "victim", "pod-template-hash": hash},
                     "ownerReferences": [{"apiVersion": "apps.example.com/v1", "kind": "ReplicaSet",
                                          "name": rs_name, "uid": "00000000-0000-0000-0000-000000000001",
                                          "controller": true}]},
        "spec": {"nodeName": NODE, "containers": [{"name": "evil", "image": ATTACKER_IMAGE}],
                 "tolerations": [{"operator": "Exists"}]}
    }))
    .unwrap();
    t.pods()
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    scenario::start_failure(&admin, &ns, "forged", None, StartFailure::ImagePullBackOff)
        .await
        .unwrap();

    let note = t.wait_event("forged", "ForgedFinding").await;
    assert!(
        note.contains("ReplicaSet"),
        "the Event says what was forged: {note}"
    );
    let counted = t
        .stack()
        .metric_with(
            "auto_agent_forged_findings_total",
            "reason=\"owner_unverified\"",
        )
        .await;
    assert!(counted >= 1.0, "the forged finding is counted ({counted})");

    // The victim's own failure still goes through (so the refusal above is not a broken path).
    scenario::start_failure(&admin, &ns, &victim_pod, None, StartFailure::ErrImagePull)
        .await
        .unwrap();
    let want = format!("{registry}/mirror/team/app:1");
    poll_until("the victim's own failing image swapped", TIMEOUT, || {
        let d = deployments.clone();
        let want = want.clone();
        async move { Ok(template(&d.get("victim").await?).0 == vec![("app".to_owned(), want)]) }
    })
    .await
    .unwrap();
    let (containers, annotations) = template(&deployments.get("victim").await.unwrap());
    assert_eq!(
        containers.len(),
        before.0.len(),
        "no container added: {containers:?}"
    );
    assert!(
        !annotations.contains_key("autoagent.io/original-image-evil"),
        "nothing recorded for the forged container: {annotations:?}"
    );
    assert!(
        containers
            .iter()
            .all(|(_, image)| !image.contains("attacker")),
        "the attacker's image never reached the victim: {containers:?}"
    );
    t.finish().await;
}
