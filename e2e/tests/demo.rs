//! `make demo`, the main job, run as the README tells a newcomer to run it: the Makefile's target
//! (its `setup` prerequisite, then the demo binary through cargo) against the shared local cluster.
//! It must exit 0, and what its summary says it proved must hold in the cluster: the crash-looping
//! pod is gone and replaced, its evidence bundle is on disk with the seeded previous log, a
//! RestartedPod Event names that bundle, and the seed policy's status records the restart.
//!
//! The demo reuses the namespace `prod` (a rerun is another crash loop on another pod). Later test
//! binaries' agents read every policy in the cluster, so when this test created `prod`, it deletes
//! it again; a `prod` that was there before (a developer's `make demo`) is left as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auto_agent_e2e::Cluster;
use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::workloads::running_and_ready;
use auto_agent_shared::crd::{ActionOutcome, ActionType, AutoRemediationPolicy};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

/// Setup, a cargo freshness check and the demo itself (about a minute on a warm cluster).
const DEMO_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `make demo` in its own process group; on a timeout the whole group (make, cargo, the demo
/// and the agent processes it started) is killed. Returns (exit status, stdout + stderr).
fn make_demo() -> (std::process::ExitStatus, String) {
    use std::os::unix::process::CommandExt;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new("make")
        .current_dir(repo_root())
        .args(["--no-print-directory", "demo", &format!("CARGO={cargo}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("running make");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!(
                "make demo did not finish within {DEMO_TIMEOUT:?}:\n{}\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!(
        "{}\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    (status, output)
}

/// Starts the deletion of `prod` when dropped (a failed test leaves nothing for later binaries).
#[derive(Debug)]
struct DeleteProd(Cluster);

impl Drop for DeleteProd {
    fn drop(&mut self) {
        let _ = self.0.kubectl(
            &[
                "delete",
                "namespace",
                "prod",
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// The value of the demo's `demo proved: <what> <value>` line.
fn proved<'a>(output: &'a str, what: &str) -> &'a str {
    let prefix = format!("demo proved: {what} ");
    output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the demo's output:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_demo_restarts_the_crash_looping_pod_with_its_bundle_event_and_status() {
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let prod_was_there = namespaces.get_opt("prod").await.unwrap().is_some();
    let _delete_prod = (!prod_was_there).then(|| DeleteProd(cluster.clone()));

    let started = Instant::now();
    let (status, output) = tokio::task::spawn_blocking(make_demo).await.unwrap();
    println!("make demo took {:?}:\n{output}", started.elapsed());
    assert!(status.success(), "make demo failed ({status}):\n{output}");

    // The crash-looping pod was deleted and the Deployment is whole again.
    let victim = proved(&output, "victim");
    let victim = victim.strip_prefix("prod/").unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "prod");
    assert!(
        pods.get_opt(victim).await.unwrap().is_none(),
        "{victim} was replaced"
    );
    let running = pods
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && running_and_ready(p))
        .count();
    assert_eq!(running, 3, "three api pods run again");

    // Its evidence bundle, with the previous log the demo seeded.
    let bundle = proved(&output, "bundle");
    assert!(bundle.ends_with(&format!("{victim}-3.json")), "{bundle}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    assert_eq!(doc["policy"]["name"], "api-prod");
    let fatal = "FATAL: password authentication failed for user \"api\"";
    assert!(
        doc["log"]["lines"]
            .as_array()
            .is_some_and(|lines| lines.iter().any(|l| l == fatal)),
        "the seeded previous log is in the bundle: {}",
        doc["log"]
    );

    // The Event that names the bundle.
    let relative = bundle.split("/bundles/").last().unwrap();
    let notes: Vec<String> = Api::<Event>::namespaced(admin.clone(), "prod")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RestartedPod"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes.iter().any(|n| n.contains(relative)),
        "a RestartedPod Event names {relative}: {notes:?}"
    );

    // The seed policy's status records this restart.
    let policy = Api::<AutoRemediationPolicy>::namespaced(admin.clone(), "prod")
        .get("api-prod")
        .await
        .unwrap();
    let target = format!("Pod/prod/{victim}");
    let recent = policy.status.map(|s| s.recent_actions).unwrap_or_default();
    assert!(
        recent.iter().any(|a| a.target == target
            && a.action == ActionType::RestartPod
            && a.outcome == ActionOutcome::Executed),
        "{target} restarted in the status: {recent:?}"
    );

    if !prod_was_there {
        namespaces
            .delete("prod", &DeleteParams::default())
            .await
            .unwrap();
        poll_until("prod deleted", Duration::from_secs(120), || {
            let namespaces = namespaces.clone();
            async move { Ok(namespaces.get_opt("prod").await?.is_none()) }
        })
        .await
        .unwrap();
    }
}
