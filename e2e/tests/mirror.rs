//! ImagePullBackOff with a mirror, against a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) started by the test: the image is swapped only when the mirror has it,
//! the original is kept in an annotation, and a missing image is refused with a reason. Private
//! mirrors (token authentication with a token service, and htpasswd Basic) are checked with the
//! logins of the credentials file; missing or refused logins are refused with their cause, and no
//! password appears in an Event or the controller log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_e2e::registry::{Grant, Registry, RegistryAuth, TokenService};
use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::steps::events;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

const NODE: &str = "kwok-node-2";
const TIMEOUT: Duration = Duration::from_secs(90);

async fn deployment(t: &Setup, name: &str, image: &str) -> String {
    t.running_pod(Workload::new(name).label("tier", "pull").image(image))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_swapped_only_when_the_mirror_has_it() {
    let mut t = Setup::new("mirror", NODE).await;
    let admin = t.admin.clone();

    // A real registry on loopback.
    let dir = std::env::temp_dir().join(format!("e2e-registry-{}", t.ns()));
    let mirror = Registry::start(&dir, &RegistryAuth::Open).await.unwrap();
    let registry = mirror.host.clone();
    mirror.push("mirror/team/app", "1", None).await.unwrap();

    t.start_agents(
        1,
        vec![
            ("AUTO_AGENT_PLAIN_HTTP_REGISTRIES".into(), registry.clone()),
            (
                "AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES".into(),
                registry.clone(),
            ),
        ],
    )
    .await;
    let apps = &t.apps;
    let policy = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                        "metadata": {"name": "mirror", "namespace": apps.name},
                        "spec": {"targetSelector": {"matchLabels": {"tier": "pull"}},
                                 "actions": {"imageMirror": {"registry": format!("{registry}/mirror")}}}});
    t.apply(&policy.to_string());

    let present = deployment(&t, "present", "registry.example.com/team/app:1").await;
    let missing = deployment(&t, "missing", "registry.example.com/team/missing:2").await;
    scenario::start_failure(
        &admin,
        &apps.name,
        &present,
        None,
        StartFailure::ErrImagePull,
    )
    .await
    .unwrap();
    scenario::start_failure(
        &admin,
        &apps.name,
        &missing,
        None,
        StartFailure::ImagePullBackOff,
    )
    .await
    .unwrap();

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &apps.name);
    let image_of = |name: &'static str| {
        let d = deployments.clone();
        async move {
            let d = d.get(name).await.unwrap();
            let image = d.spec.unwrap().template.spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            (image, d.metadata.annotations.unwrap_or_default())
        }
    };
    let want = format!("{registry}/mirror/team/app:1");
    poll_until("image swapped to the mirror", TIMEOUT, || {
        let f = image_of("present");
        let want = want.clone();
        async move { Ok(f.await.0 == want) }
    })
    .await
    .unwrap();
    let (_, annotations) = image_of("present").await;
    assert_eq!(
        annotations
            .get("autoagent.io/original-image-app")
            .map(String::as_str),
        Some("registry.example.com/team/app:1")
    );

    let events: Api<Event> = Api::namespaced(admin.clone(), &apps.name);
    poll_until("MirrorMissing reported", TIMEOUT, || {
        let e = events.clone();
        async move {
            Ok(e.list(&ListParams::default()).await?.items.iter().any(|e| {
                e.reason.as_deref() == Some("MirrorMissing")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("missing")
            }))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        image_of("missing").await.0,
        "registry.example.com/team/missing:2",
        "no swap without the image in the mirror"
    );
    t.finish().await;
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn image_of(client: &kube::Client, ns: &str, name: &str) -> String {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_mirrors_are_checked_with_the_configured_logins() {
    const IMAGE: &str = "registry.example.com/team/app:1";
    const SECRETS: [&str; 4] = [
        "pull-secret-1",
        "push-secret-1",
        "basic-secret-1",
        "wrong-password",
    ];
    let mut t = Setup::new("private", NODE).await;
    let admin = t.admin.clone();
    let dir = std::env::temp_dir().join(format!("e2e-private-{}", t.ns()));

    // Token authentication (as Harbor, Docker Hub, GHCR) and HTTP Basic (htpasswd), both real
    // registries holding mirror/team/app:1.
    let tokens = TokenService::start(
        &dir.join("tokens"),
        &[
            ("puller", "pull-secret-1", &["pull"]),
            ("pusher", "push-secret-1", &["pull", "push"]),
        ],
    )
    .await
    .unwrap();
    let by_token = Registry::start(
        &dir.join("token"),
        &RegistryAuth::Token(tokens.config.clone()),
    )
    .await
    .unwrap();
    let by_basic = Registry::start(
        &dir.join("basic"),
        &RegistryAuth::Htpasswd {
            user: "mirror".into(),
            password: "basic-secret-1".into(),
        },
    )
    .await
    .unwrap();
    let push = tokens
        .token(
            "pusher",
            "push-secret-1",
            "repository:mirror/team/app:pull,push",
        )
        .await
        .unwrap();
    by_token
        .push("mirror/team/app", "1", Some(&format!("Bearer {push}")))
        .await
        .unwrap();
    by_basic
        .push(
            "mirror/team/app",
            "1",
            Some(&format!("Basic {}", b64("mirror:basic-secret-1"))),
        )
        .await
        .unwrap();
    // Without a login the registry refuses (so the logins below are what makes checks pass).
    assert!(by_basic.push("mirror/team/x", "1", None).await.is_err());

    // The logins as a dockerconfigjson Secret holds them (keys with or without a scheme).
    let auth_file = dir.join("config.json");
    let write_logins = |token_login: bool, basic_password: &str| {
        let mut auths = serde_json::Map::new();
        if token_login {
            auths.insert(
                by_token.host.clone(),
                json!({"auth": b64("puller:pull-secret-1")}),
            );
        }
        auths.insert(
            format!("http://{}", by_basic.host),
            json!({"username": "mirror", "password": basic_password}),
        );
        std::fs::write(&auth_file, json!({"auths": auths}).to_string()).unwrap();
    };
    write_logins(true, "basic-secret-1");
    let plain = [
        by_token.host.clone(),
        by_basic.host.clone(),
        tokens.addr.to_string(),
    ]
    .join(",");
    t.start_agents(
        1,
        vec![
            ("AUTO_AGENT_PLAIN_HTTP_REGISTRIES".into(), plain.clone()),
            // Both mirrors, and the token service on its own port.
            ("AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES".into(), plain),
            (
                "AUTO_AGENT_REGISTRY_AUTH_FILE".into(),
                auth_file.display().to_string(),
            ),
        ],
    )
    .await;
    let (apps, stack) = (&t.apps, t.stack());
    for (tier, host) in [("token", &by_token.host), ("basic", &by_basic.host)] {
        t.policy(
            tier,
            json!({"targetSelector": {"matchLabels": {"tier": tier}},
                   "actions": {"imageMirror": {"registry": format!("{host}/mirror")}}}),
        );
    }
    let failing = |name: &'static str, tier: &'static str| {
        let admin = admin.clone();
        let ns = apps.name.clone();
        async move {
            let pod = Workload::new(name)
                .on_node(NODE)
                .label("tier", tier)
                .image(IMAGE)
                .running_pod(&admin, &ns)
                .await
                .unwrap();
            scenario::start_failure(&admin, &ns, &pod, None, StartFailure::ImagePullBackOff)
                .await
                .unwrap();
        }
    };

    // With the logins: both mirrors are checked and both images swapped.
    failing("via-token", "token").await;
    failing("via-basic", "basic").await;
    for (name, host) in [("via-token", &by_token.host), ("via-basic", &by_basic.host)] {
        let want = format!("{host}/mirror/team/app:1");
        poll_until(&format!("{name} swapped to its mirror"), TIMEOUT, || {
            let (admin, ns, want) = (admin.clone(), apps.name.clone(), want.clone());
            async move { Ok(image_of(&admin, &ns, name).await == want) }
        })
        .await
        .unwrap();
    }
    assert!(
        tokens.grants().contains(&Grant {
            user: Some("puller".into()),
            scope: "repository:mirror/team/app:pull".into(),
            actions: vec!["pull".into()],
        }),
        "the controller fetched a pull token as puller: {:?}",
        tokens.grants()
    );

    // The Secret rotates: the token registry's login is gone, the Basic password is wrong. Read on
    // the next check, without a restart; both refusals name their cause.
    write_logins(false, "wrong-password");
    failing("anonymous", "token").await;
    failing("refused", "basic").await;
    let anonymous = t.wait_event("anonymous", "MirrorMissing").await;
    assert!(
        anonymous.contains("requires credentials and none are configured"),
        "{anonymous}"
    );
    let refused = t.wait_event("refused", "MirrorMissing").await;
    assert!(
        refused.contains("refused the configured credentials"),
        "{refused}"
    );
    assert!(
        tokens
            .grants()
            .iter()
            .any(|g| g.user.is_none() && g.actions.is_empty()),
        "the anonymous token carried no rights: {:?}",
        tokens.grants()
    );
    for name in ["anonymous", "refused"] {
        assert_eq!(
            image_of(&admin, &apps.name, name).await,
            IMAGE,
            "{name} kept its image"
        );
    }

    let notes: Vec<String> = events(&admin, &apps.name)
        .await
        .into_values()
        .flatten()
        .map(|(_, note)| note)
        .collect();
    let log = stack.controllers[0].process.output();
    for secret in SECRETS {
        assert!(
            !notes.iter().any(|n| n.contains(secret)),
            "{secret} in an Event"
        );
        assert!(!log.contains(secret), "{secret} in the controller log");
        assert!(
            !log.contains(&b64(&format!("puller:{secret}"))),
            "a Basic header in the log"
        );
    }
    t.finish().await;
}
