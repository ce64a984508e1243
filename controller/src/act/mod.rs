//! Act: execute one planned action, leader-only through the fence, idempotent, re-reading the target
//! right before writing. The payloads are typed (`engine::decide::PlannedAction`), so nothing here
//! parses a target back from a string.
//!
//! - `pod`: restart (the evidence bundle is written before the pod is deleted)
//! - `workload`: memory bump, image mirror, scale subresource
//! - `node`: cordon, one eviction attempt, uncordon (the retry policy around evictions belongs to
//!   the node reconcile)

pub mod node;
pub mod pod;
pub mod workload;

use std::sync::Arc;

use auto_agent_evidence::{Keeper, SaveError};
use kube::Client;

use crate::platform::leader::Leadership;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("not the leader any more")]
    Fenced,
    #[error("the condition cleared before acting")]
    Cleared,
    #[error("evidence bundle not saved, so the pod is kept: {0}")]
    Bundle(Box<SaveError>),
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    #[error("cannot act on {0}")]
    Unsupported(String),
    #[error("{0}")]
    TemplateMismatch(String),
}

impl From<SaveError> for ActError {
    fn from(e: SaveError) -> Self {
        Self::Bundle(Box::new(e))
    }
}

impl ActError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            Self::Cleared => "condition_cleared",
            Self::Bundle(_) => "bundle",
            Self::Api(_) => "api",
            Self::Unsupported(_) => "unsupported",
            Self::TemplateMismatch(_) => "template_mismatch",
        }
    }
}

/// What an executed action did, for the Event.
#[derive(Debug)]
pub struct Done {
    pub note: String,
    /// Where the evidence bundle went (a restart's), for the escalation's messages.
    pub evidence: Option<String>,
}

pub struct Executor {
    pub client: Client,
    /// A client without kube's automatic 429 retry, so a PodDisruptionBudget's refusal of an
    /// eviction is seen at once.
    pub eviction_client: Client,
    pub leadership: Leadership,
    pub evidence: Arc<Keeper>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("evidence", &self.evidence.durability)
            .finish()
    }
}

impl Executor {
    /// Refuses (and counts) the write unless this replica holds the lease with margin.
    fn fence(&self, what: &str) -> Result<(), ActError> {
        self.leadership.fence(what).map_err(|_| ActError::Fenced)
    }
}

#[cfg(test)]
mod tests {
    use super::node::Eviction;
    use super::*;
    use crate::evidence::bundle::{BundleContext, caps_for};
    use crate::testing::{
        FakeApi, FakeLeader, crash_finding, crashing_pod, files_below, keeper, metrics,
    };
    use auto_agent_engine::IncidentKey;
    use auto_agent_engine::decide::{BytesChange, Plan, PlannedAction, PodTarget, WorkloadTarget};
    use auto_agent_evidence::Destination;
    use serde_json::json;

    const POD: &str = "/api/v1/namespaces/prod/pods/api-1";
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/prod/deployments/api";

    fn executor(
        api: &FakeApi,
        leading: bool,
        name: &str,
    ) -> (Executor, FakeLeader, std::path::PathBuf) {
        let leader = FakeLeader::new(&metrics(), leading);
        let (evidence, dir) = keeper(name);
        (
            Executor {
                client: api.client(),
                eviction_client: api.client(),
                leadership: leader.leadership.clone(),
                evidence,
            },
            leader,
            dir,
        )
    }

    fn pod() -> PodTarget {
        PodTarget {
            namespace: "prod".into(),
            name: "api-1".into(),
            uid: "u1".into(),
        }
    }

    fn workload(kind: &str) -> WorkloadTarget {
        WorkloadTarget {
            kind: kind.into(),
            namespace: "prod".into(),
            name: "api".into(),
        }
    }

    fn restart_plan() -> (Plan, BundleContext) {
        let f = crash_finding();
        let plan = Plan {
            incident: IncidentKey::for_finding(&f).unwrap(),
            policy: "api".into(),
            dry_run: false,
            actions: vec![PlannedAction::RestartPod {
                pod: pod(),
                reason: "crash loop".into(),
            }],
        };
        (
            plan,
            BundleContext {
                destination: Destination::Filesystem {
                    root: std::path::PathBuf::new(),
                },
                caps: caps_for(None),
                policy: auto_agent_evidence::document::PolicyRef {
                    namespace: "prod".into(),
                    name: "api".into(),
                },
                owner: None,
                taken: vec![],
            },
        )
    }

    #[tokio::test]
    async fn a_restart_saves_the_bundle_then_deletes_that_very_pod() {
        let api = FakeApi::default();
        api.on("GET", POD, vec![(200, crashing_pod("u1", json!({})))])
            .on("DELETE", POD, vec![(200, crashing_pod("u1", json!({})))]);
        let (x, _leader, dir) = executor(&api, true, "restart");
        let (plan, mut ctx) = restart_plan();
        ctx.destination = Destination::Filesystem {
            root: dir.join("store"),
        };
        let done = x
            .restart(&plan, &pod(), "crash loop", &crash_finding(), &ctx)
            .await
            .unwrap();
        assert!(done.note.contains("deleted pod api-1"), "{}", done.note);
        let deletes = api.seen_with("DELETE", POD);
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].body["preconditions"]["uid"], "u1");
        let bundles = files_below(&dir.join("store"));
        assert_eq!(bundles.len(), 1, "{bundles:?}");
        assert!(bundles[0].ends_with("api-1-3.json"), "{bundles:?}");
    }

    #[tokio::test]
    async fn a_replaced_or_recovered_pod_is_not_deleted() {
        for (uid, waiting) in [("u2", "CrashLoopBackOff"), ("u1", "ContainerCreating")] {
            let mut current = crashing_pod(uid, json!({}));
            current["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] =
                json!(waiting);
            let api = FakeApi::default();
            api.on("GET", POD, vec![(200, current)]);
            let (x, _leader, dir) = executor(&api, true, "cleared");
            let (plan, mut ctx) = restart_plan();
            ctx.destination = Destination::Filesystem {
                root: dir.join("store"),
            };
            let err = x
                .restart(&plan, &pod(), "r", &crash_finding(), &ctx)
                .await
                .unwrap_err();
            assert!(matches!(err, ActError::Cleared), "{uid} {waiting}: {err}");
            assert!(api.seen_with("DELETE", POD).is_empty());
            assert!(
                files_below(&dir.join("store")).is_empty(),
                "no bundle for a kept pod"
            );
        }
    }

    #[tokio::test]
    async fn a_replica_that_lost_the_lease_keeps_the_evidence_and_deletes_nothing() {
        let api = FakeApi::default();
        api.on("GET", POD, vec![(200, crashing_pod("u1", json!({})))]);
        let (x, _leader, dir) = executor(&api, false, "fenced");
        let (plan, mut ctx) = restart_plan();
        ctx.destination = Destination::Filesystem {
            root: dir.join("store"),
        };
        let err = x
            .restart(&plan, &pod(), "r", &crash_finding(), &ctx)
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::Fenced), "{err}");
        assert_eq!(err.category(), "fenced");
        assert!(api.seen_with("DELETE", "").is_empty());
        assert_eq!(files_below(&dir.join("store")).len(), 1);
    }

    /// A Deployment whose template has a sidecar first, so the patched index is not 0.
    fn two_containers() -> serde_json::Value {
        let mut d = crate::testing::deployment(3, 3, json!({"team": "shop"}));
        d["metadata"]["resourceVersion"] = json!("42");
        d["spec"]["template"]["spec"]["containers"] = json!([
            {"name": "proxy", "image": "proxy:1"},
            {"name": "app", "image": "docker.io/app:1",
             "resources": {"limits": {"memory": "256Mi", "cpu": "1"}}}]);
        d
    }

    fn op<'a>(ops: &'a serde_json::Value, kind: &str, path: &str) -> Option<&'a serde_json::Value> {
        ops.as_array()?
            .iter()
            .find(|o| o["op"] == kind && o["path"] == path)
            .map(|o| &o["value"])
    }

    #[tokio::test]
    async fn workload_changes_patch_one_existing_container_and_the_scale_subresource() {
        let api = FakeApi::default();
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "api"}, "spec": {"replicas": 3}});
        api.on("PATCH", &format!("{DEPLOYMENT}/scale"), vec![(200, scale)])
            .on("GET", DEPLOYMENT, vec![(200, two_containers())])
            .on("PATCH", DEPLOYMENT, vec![(200, two_containers())]);
        let (x, _leader, _dir) = executor(&api, true, "patch");
        x.bump_memory(
            &workload("Deployment"),
            "app",
            BytesChange {
                from: Some(256 << 20),
                to: 356 << 20,
            },
            Some(BytesChange {
                from: Some(128 << 20),
                to: 228 << 20,
            }),
            "OOMKilled",
        )
        .await
        .unwrap();
        x.mirror_image(
            &workload("Deployment"),
            "app",
            "docker.io/app:1",
            "mirror.local/app:1",
        )
        .await
        .unwrap();
        let scaled = x.scale(&workload("Deployment"), 2, 3, "cpu").await;
        assert!(scaled.is_ok(), "{scaled:?} {:?}", api.seen().last());
        let patches = api.seen_with("PATCH", DEPLOYMENT);
        assert_eq!(patches.len(), 3);
        let c = "/spec/template/spec/containers/1";
        for p in &patches[..2] {
            assert_eq!(p.content_type, "application/json-patch+json");
            // Guards: the object read, and the container still at that index.
            assert_eq!(
                op(&p.body, "test", "/metadata/resourceVersion"),
                Some(&json!("42"))
            );
            assert_eq!(
                op(&p.body, "test", &format!("{c}/name")),
                Some(&json!("app"))
            );
        }
        let bump = &patches[0].body;
        assert_eq!(
            op(bump, "add", &format!("{c}/resources/limits/memory")),
            Some(&json!("356Mi"))
        );
        // No requests yet: the map is added, the limits map (with its cpu) is left alone.
        assert_eq!(
            op(bump, "add", &format!("{c}/resources/requests")),
            Some(&json!({"memory": "228Mi"}))
        );
        // What it had before, kept for a revert.
        let kept = op(
            bump,
            "add",
            "/metadata/annotations/autoagent.io~1original-memory-app",
        )
        .unwrap();
        let kept: serde_json::Value = serde_json::from_str(kept.as_str().unwrap()).unwrap();
        assert_eq!(kept, json!({"limit": "256Mi", "request": null}));
        let swap = &patches[1].body;
        assert_eq!(
            op(swap, "test", &format!("{c}/image")),
            Some(&json!("docker.io/app:1"))
        );
        assert_eq!(
            op(swap, "replace", &format!("{c}/image")),
            Some(&json!("mirror.local/app:1"))
        );
        assert_eq!(
            op(
                swap,
                "add",
                "/metadata/annotations/autoagent.io~1original-image-app"
            ),
            Some(&json!("docker.io/app:1"))
        );
        for p in &patches[..2] {
            let ops = p.body.as_array().unwrap();
            assert!(
                ops.iter()
                    .all(|o| o["path"].as_str().unwrap().starts_with(c)
                        || o["path"].as_str().unwrap().starts_with("/metadata/")),
                "only the one container and metadata: {ops:?}"
            );
        }
        assert!(
            patches[2].uri.starts_with(&format!("{DEPLOYMENT}/scale")),
            "{}",
            patches[2].uri
        );
        assert_eq!(patches[2].body, json!({"spec": {"replicas": 3}}));
    }

    /// A later bump keeps the annotation of the first: a revert goes back to what the owner set.
    #[tokio::test]
    async fn a_later_bump_keeps_the_first_original_memory() {
        let mut bumped = two_containers();
        bumped["metadata"]["annotations"] = json!({
            "autoagent.io/original-memory-app": "{\"limit\":\"256Mi\",\"request\":null}"});
        let api = FakeApi::default();
        api.on("GET", DEPLOYMENT, vec![(200, bumped.clone())]).on(
            "PATCH",
            DEPLOYMENT,
            vec![(200, bumped)],
        );
        let (x, _leader, _dir) = executor(&api, true, "second-bump");
        let change = BytesChange {
            from: Some(356 << 20),
            to: 456 << 20,
        };
        x.bump_memory(&workload("Deployment"), "app", change, None, "OOMKilled")
            .await
            .unwrap();
        let patch = &api.seen_with("PATCH", DEPLOYMENT)[0].body;
        let paths: Vec<_> = patch
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            paths
                .iter()
                .all(|p| !p.starts_with("/metadata/annotations")),
            "{paths:?}"
        );
    }

    #[tokio::test]
    async fn a_container_the_template_does_not_have_is_never_added() {
        let api = FakeApi::default();
        api.on("GET", DEPLOYMENT, vec![(200, two_containers())]);
        let (x, _leader, _dir) = executor(&api, true, "no-append");
        let err = x
            .mirror_image(
                &workload("Deployment"),
                "evil",
                "attacker/evil:1",
                "mirror.local/evil:1",
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::TemplateMismatch(_)), "{err}");
        assert_eq!(err.category(), "template_mismatch");
        let err = x
            .bump_memory(
                &workload("Deployment"),
                "evil",
                BytesChange {
                    from: Some(1),
                    to: 2 << 30,
                },
                None,
                "OOMKilled",
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::TemplateMismatch(_)), "{err}");
        assert!(api.seen_with("PATCH", "").is_empty(), "nothing patched");
    }

    #[tokio::test]
    async fn kinds_the_agent_does_not_change_are_refused_without_a_request() {
        let api = FakeApi::default();
        let (x, _leader, _dir) = executor(&api, true, "unsupported");
        let err = x
            .scale(&workload("DaemonSet"), 1, 2, "cpu")
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::Unsupported(_)), "{err}");
        let err = x
            .mirror_image(&workload("Job"), "app", "a", "b")
            .await
            .unwrap_err();
        assert!(matches!(err, ActError::Unsupported(_)), "{err}");
        assert!(api.seen().is_empty());
    }

    #[tokio::test]
    async fn evictions_map_the_api_answer_and_never_delete() {
        let eviction = "/api/v1/namespaces/prod/pods/api-1/eviction";
        for (code, want) in [
            (201, Eviction::Evicted),
            (429, Eviction::Blocked),
            (404, Eviction::Gone),
        ] {
            let api = FakeApi::default();
            api.on("POST", eviction, vec![(code, json!({"kind": "Status", "apiVersion": "v1", "code": code, "status": if code == 201 {"Success"} else {"Failure"}}))]);
            let (x, _leader, _dir) = executor(&api, true, "evict");
            assert_eq!(x.evict_once(&pod()).await.unwrap(), want, "{code}");
            assert_eq!(api.seen_with("POST", eviction).len(), 1);
            assert!(api.seen_with("DELETE", "").is_empty());
        }
    }

    #[tokio::test]
    async fn cordon_and_uncordon_mark_the_node_with_the_policy() {
        let api = FakeApi::default();
        api.on(
            "PATCH",
            "/api/v1/nodes/node-a",
            vec![(
                200,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
            )],
        );
        let (x, leader, _dir) = executor(&api, true, "cordon");
        x.cordon("node-a", "pressure", "MemoryPressure")
            .await
            .unwrap();
        x.uncordon("node-a", "clear").await.unwrap();
        let patches = api.seen_with("PATCH", "/nodes/node-a");
        assert_eq!(
            patches[0].body["metadata"]["annotations"]["autoagent.io/cordoned-by"],
            "pressure"
        );
        assert_eq!(patches[0].body["spec"]["unschedulable"], true);
        assert_eq!(
            patches[0].body["metadata"]["labels"]["autoagent.io/cordoned"],
            "true"
        );
        assert!(patches[1].body["metadata"]["annotations"]["autoagent.io/cordoned-by"].is_null());
        assert_eq!(patches[1].body["spec"]["unschedulable"], false);
        leader.set(false);
        assert!(matches!(
            x.cordon("node-a", "p", "r").await,
            Err(ActError::Fenced)
        ));
        assert_eq!(api.seen_with("PATCH", "/nodes/node-a").len(), 2);
    }
}
