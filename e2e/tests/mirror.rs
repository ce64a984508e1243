//! ImagePullBackOff with a mirror, against a real registry (Debian's `docker-registry`, the CNCF
//! distribution registry) started by the test: the image is swapped only when the mirror has it,
//! the original is kept in an annotation, and a missing image is refused with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use auto_agent_e2e::agents::AgentStack;
use auto_agent_e2e::process::{Process, free_port, http_get};
use auto_agent_e2e::scenario::{self, StartFailure};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::workloads::single_pod_deployment;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use sha2::{Digest, Sha256};

const NODE: &str = "kwok-node-2";
const TIMEOUT: Duration = Duration::from_secs(90);

fn digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Pushes a minimal OCI image (one config blob, one layer blob) as `repo:tag`.
async fn push(registry: &str, repo: &str, tag: &str) {
    // reqwest is built with rustls but no provider (the workspace standardises on ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let upload = |bytes: Vec<u8>| {
        let http = http.clone();
        let repo = repo.to_owned();
        let registry = registry.to_owned();
        async move {
            let start = http
                .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(start.status().as_u16(), 202);
            let location = start.headers()["location"].to_str().unwrap().to_owned();
            let url = if location.starts_with("http") {
                location
            } else {
                format!("http://{registry}{location}")
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let d = digest(&bytes);
            let put = http
                .put(format!("{url}{sep}digest={d}"))
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(
                put.status().as_u16(),
                201,
                "{}",
                put.text().await.unwrap_or_default()
            );
            (d, bytes.len())
        }
    };
    let (config, config_size) = upload(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
    )
    .await;
    let (layer, layer_size) = upload(b"not really a tarball".to_vec()).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    });
    let put = http
        .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status().as_u16(),
        201,
        "{}",
        put.text().await.unwrap_or_default()
    );
}

async fn deployment(client: &kube::Client, ns: &str, name: &str, image: &str) -> String {
    single_pod_deployment(client, ns, name, NODE, json!({"tier": "pull"}), image)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_swapped_only_when_the_mirror_has_it() {
    let cluster = Cluster::get().unwrap();
    cluster.install_crds().await.unwrap();
    let admin = cluster.admin().await.unwrap();
    let apps = TestNamespace::create(&cluster, "mirror").await.unwrap();

    // A real registry on loopback.
    let dir = std::env::temp_dir().join(format!("e2e-registry-{}", apps.name));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let port = free_port().unwrap();
    let registry = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("config.yml"),
        format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {registry}\n", dir.join("data").display()),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve").arg(dir.join("config.yml"));
    let _registry = Process::spawn(cmd, dir.join("registry.log")).unwrap();
    let addr = registry.parse().unwrap();
    poll_until("registry up", TIMEOUT, || async move {
        Ok(http_get(addr, "/v2/").await?.0 == 200)
    })
    .await
    .unwrap();
    push(&registry, "mirror/team/app", "1").await;

    let stack = AgentStack::start_with_env(
        &cluster,
        NODE,
        1,
        vec![("AUTO_AGENT_PLAIN_HTTP_REGISTRIES".into(), registry.clone())],
    )
    .await
    .unwrap();
    let policy = json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                        "metadata": {"name": "mirror", "namespace": apps.name},
                        "spec": {"targetSelector": {"matchLabels": {"tier": "pull"}},
                                 "actions": {"imageMirror": {"registry": format!("{registry}/mirror")}}}});
    let (ok, _, err) = cluster
        .kubectl(&["apply", "-f", "-"], Some(&policy.to_string()))
        .unwrap();
    assert!(ok, "{err}");

    let present = deployment(
        &admin,
        &apps.name,
        "present",
        "registry.example.com/team/app:1",
    )
    .await;
    let missing = deployment(
        &admin,
        &apps.name,
        "missing",
        "registry.example.com/team/missing:2",
    )
    .await;
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
    stack.delete().await.unwrap();
    apps.delete(admin).await.unwrap();
}
