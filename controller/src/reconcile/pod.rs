//! The pod reconcile for one incident change, as named steps:
//! gather (workload and policy, fresh facts from the API, the failing pods the leader knows) ->
//! decide (pure, engine, on the ledger) -> reserve (the ledger, before acting) -> act (fenced) ->
//! report (one outcome writer). Dry-run runs the same steps and stops before reserving; a decision
//! that waits for a storm to show itself (`Settling`) is handed back to be decided again later.

use std::sync::Arc;
use std::time::Duration;

use auto_agent_engine::decide::{
    self, ActionKind, ActionRecord, AllowedActions, Decision, Input, Plan, PlannedAction, Refusal,
    RefusalReason, workload_target,
};
use auto_agent_engine::{Finding, FindingKind, IncidentKey};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::EventType;

use crate::act::{ActError, Done, Executor};
use crate::cluster::workloads::WorkloadCache;
use crate::evidence::bundle::{BundleContext, BundleDefaults};
use crate::ingest::pipeline::Change;
use crate::platform::metrics::ControllerMetrics;
use crate::policies::index::{PolicyEntry, PolicyIndex, policy_view};
use crate::reconcile::failing::FailingPods;
use crate::reconcile::gather;
use crate::reconcile::ledger::Ledger;
use crate::reconcile::outcome::{Outcomes, Scope, Subject};
use crate::reconcile::reserve::{Settled, Verdict, decide_and_reserve};

pub struct PodReconciler {
    pub client: Client,
    pub outcomes: Outcomes,
    pub policies: PolicyIndex,
    pub workloads: Arc<WorkloadCache>,
    pub metrics: ControllerMetrics,
    pub ledger: Ledger,
    pub executor: Arc<Executor>,
    pub cluster_budgets: Vec<decide::BudgetLimit>,
    pub allowed: AllowedActions,
    pub registry: auto_agent_registry::RegistryClient,
    pub bundle_defaults: BundleDefaults,
}

impl std::fmt::Debug for PodReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodReconciler")
    }
}

pub use crate::reconcile::Next;

/// At most this many of a workload's other failing pods are looked up per decision (beyond it,
/// the rest count unasked: that many failing pods is a storm either way), this many at once.
const CONFIRM_MAX: usize = 32;
const CONFIRM_CONCURRENCY: usize = 4;

/// What the decision on the ledger came to.
enum Step {
    Refused(Refusal),
    /// GitOps owns the workload's spec: the plan goes to a pull request, not the cluster.
    Propose(Plan, Refusal),
    DryRun(Plan),
    Act(Plan, Vec<auto_agent_evidence::document::TakenAction>),
}

fn pod_ref(f: &Finding) -> Option<ObjectReference> {
    let pod = f.pod.as_ref()?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    })
}

/// The finding's owning workload (as the ingest verified it against the API server), for Events
/// when nothing else needs it read.
fn owner_ref(f: &Finding) -> Option<ObjectReference> {
    let (pod, owner) = (f.pod.as_ref()?, f.owner.as_ref()?);
    let api_version = match owner.kind.as_str() {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(owner.kind.clone()),
        namespace: Some(pod.namespace.clone()),
        name: Some(owner.name.clone()),
        ..Default::default()
    })
}

/// The action a finding kind would lead to, to file a refusal under.
fn action_for(kind: FindingKind) -> ActionKind {
    match kind {
        FindingKind::OomKilled => ActionKind::BumpMemory,
        FindingKind::ImagePullBackOff => ActionKind::MirrorImage,
        _ => ActionKind::RestartPod,
    }
}

/// A pod finding's metric labels: its namespace and owning workload (empty for a bare pod, so a
/// pod name never becomes a label value).
#[derive(Debug)]
pub struct ScopeLabels {
    pub namespace: String,
    pub workload: String,
}

pub fn labels_of(f: &Finding) -> ScopeLabels {
    ScopeLabels {
        namespace: f
            .pod
            .as_ref()
            .map(|p| p.namespace.clone())
            .unwrap_or_default(),
        workload: f.owner.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
    }
}

/// The metric scope of a pod finding.
pub fn scope_of(f: &Finding) -> Scope {
    let ScopeLabels {
        namespace,
        workload,
    } = labels_of(f);
    Scope::Workload {
        namespace,
        workload,
    }
}

/// A policy may put workloads without Argo CD or Flux markers under GitOps too.
pub fn policy_puts_under_gitops(entry: &PolicyEntry) -> bool {
    entry
        .spec
        .as_ref()
        .and_then(|s| s.git_ops.as_ref())
        .is_some_and(|g| g.enabled)
}

impl PodReconciler {
    pub async fn handle(
        &self,
        change: &Change,
        key: &IncidentKey,
        first: bool,
        failing: &mut FailingPods,
    ) -> Next {
        let f = &change.finding;
        let (target, policy) = match self.gather_policy(f).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, incident = %key, "Reading the workload failed; trying again");
                return Next::Failed;
            }
        };
        let Some(target) = target else {
            return Next::Done;
        };
        let Some(entry) = policy else {
            if first {
                let note = format!(
                    "{} incident {key}: no AutoRemediationPolicy selects this workload; reported only",
                    f.kind.as_str()
                );
                self.outcomes
                    .unowned(&target, EventType::Normal, "NoPolicy", note)
                    .await;
            }
            return Next::Done;
        };
        self.decide_and_act(change, key, &entry, target, failing)
            .await
    }

    /// The object to report on (workload, else pod) and the first usable policy selecting it.
    async fn gather_policy(
        &self,
        f: &Finding,
    ) -> Result<(Option<ObjectReference>, Option<PolicyEntry>), kube::Error> {
        let Some(pod) = &f.pod else {
            return Ok((None, None));
        };
        let policies = self.policies.in_namespace(&pod.namespace);
        if policies.is_empty() {
            // No policy in the namespace can select anything: report on the owner the ingest
            // verified, without reading it (a storm of unmanaged pods costs no API reads here).
            return Ok((owner_ref(f).or_else(|| pod_ref(f)), None));
        }
        let (kind, name) = f.owner.as_ref().map_or(("Pod", pod.name.as_str()), |o| {
            (o.kind.as_str(), o.name.as_str())
        });
        let Some(workload) = self.workloads.get(&pod.namespace, kind, name).await? else {
            return Ok((pod_ref(f), None));
        };
        let policy = policies
            .into_iter()
            .find(|p| p.selects(&workload.pod_labels));
        Ok((Some(workload.reference), policy))
    }

    async fn decide_and_act(
        &self,
        change: &Change,
        key: &IncidentKey,
        entry: &PolicyEntry,
        event_on: ObjectReference,
        failing: &mut FailingPods,
    ) -> Next {
        let f = &change.finding;
        let Some(view) = policy_view(entry) else {
            return Next::Done;
        };
        let policy = entry.policy_ref();
        let workload = workload_target(f);
        let subject = Subject {
            event_on,
            scope: scope_of(f),
            target: workload.clone(),
            escalation: crate::escalate::escalating(
                key.as_str(),
                entry.spec.as_ref().and_then(|s| s.escalation.as_ref()),
                auto_agent_escalation::record::Facts {
                    target: workload.clone(),
                    namespace: f.pod.as_ref().map(|p| p.namespace.clone()),
                    policy: policy.id(),
                    failure: f.kind.as_str().to_owned(),
                    evidence: None,
                    // Logs are redacted before they leave the controller, as in a bundle.
                    log_tail: auto_agent_evidence::redact::redact_lines(&f.log_lines).0,
                    subject: None,
                },
            ),
            incident: Some(key.as_str().to_owned()),
        };
        let mirror = view.image_mirror.as_deref().map(|m| (m, &self.registry));
        let mut facts = match gather::facts(&self.client, f, mirror).await {
            Ok((facts, _)) => facts,
            Err(e) => {
                tracing::warn!(error = %e, "Gathering facts failed; trying again");
                return Next::Failed;
            }
        };
        facts.gitops_managed |= policy_puts_under_gitops(entry);
        let pod_uid = f.pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default();
        let namespace = f
            .pod
            .as_ref()
            .map(|p| p.namespace.clone())
            .unwrap_or_default();
        let now = auto_agent_shared::clock::now_ms();
        facts.failing_pods = failing.count(&workload, now);
        if facts.failing_pods >= 2 {
            // The count could trip the breaker: only pods that still exist count.
            self.confirm_failing(&namespace, &workload, &pod_uid, failing)
                .await;
            facts.failing_pods = failing.count(&workload, now);
        }
        facts.incident_age_ms = failing.age_ms(&workload, &pod_uid, now);
        let settled = decide_and_reserve(&self.ledger, |history, now| {
            let decision = decide::decide(&Input {
                incident: key,
                finding: f,
                policy: Some(&view),
                facts: &facts,
                history,
                cluster_budgets: &self.cluster_budgets,
                allowed: &self.allowed,
                now_ms: now,
            });
            match decision {
                Decision::Refuse(refusal) => Verdict::Stop(Step::Refused(refusal)),
                Decision::Propose(plan, why) => Verdict::Stop(Step::Propose(plan, why)),
                Decision::Act(plan) if plan.dry_run => Verdict::Stop(Step::DryRun(plan)),
                Decision::Act(plan) => {
                    let records = plan
                        .actions
                        .iter()
                        .map(|a| ActionRecord {
                            at_ms: now,
                            action: a.kind(),
                            target: workload.clone(),
                            namespace: namespace.clone(),
                            policy: policy.id(),
                            incident: key.as_str().to_owned(),
                        })
                        .collect();
                    let taken = crate::evidence::bundle::taken_on(&history.records, &workload);
                    Verdict::Reserve(records, Step::Act(plan, taken))
                }
            }
        })
        .await;
        self.metrics
            .decision_latency
            .with_label_values(&[f.kind.as_str()])
            .observe(change.received.elapsed().as_secs_f64());
        let step = match settled {
            Ok(Settled::Stopped(step) | Settled::Reserved(step)) => step,
            Err(e) => {
                tracing::warn!(error = %e, incident = %key, "No decision: the action ledger could not be used; trying again");
                self.metrics
                    .action_errors
                    .with_label_values(&[e.category()])
                    .inc();
                return Next::Failed;
            }
        };
        match step {
            Step::Refused(r) if r.reason == RefusalReason::Settling => {
                let wait = (view.storm_window_ms - facts.incident_age_ms).clamp(50, 60_000);
                tracing::debug!(incident = %key, wait_ms = wait, "Waiting for the storm window");
                Next::Retry(Duration::from_millis(wait as u64))
            }
            Step::Propose(plan, r) => {
                self.propose(&plan, &r, f, entry, &subject, &facts).await;
                Next::Done
            }
            Step::Refused(r) => {
                let note = format!(
                    "{} incident {key}: not acting ({}): {}",
                    f.kind.as_str(),
                    r.reason.as_str(),
                    r.message
                );
                self.outcomes
                    .refused(
                        &policy,
                        &subject,
                        action_for(f.kind),
                        r.reason.as_str(),
                        r.reason.escalates(),
                        note,
                    )
                    .await;
                Next::Done
            }
            Step::DryRun(plan) => {
                for action in &plan.actions {
                    let note = format!(
                        "{} {} because {} (incident {})",
                        action.kind().as_str(),
                        action.target(),
                        action.reason(),
                        plan.incident
                    );
                    self.outcomes
                        .dry_run(&policy, &subject.about(action), action.kind(), note)
                        .await;
                }
                Next::Done
            }
            Step::Act(plan, taken) => {
                let bundle = self.bundle_context(f, entry, &facts, taken);
                // One action per pod plan (the engine plans one); each is reported on its own.
                for action in &plan.actions {
                    let started = std::time::Instant::now();
                    let result = self.execute(&plan, action, f, &bundle).await;
                    let kind = action.kind();
                    self.metrics
                        .action_latency
                        .with_label_values(&[kind.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    match result {
                        Ok(done) => {
                            let since_detection =
                                auto_agent_shared::clock::now_ms() - f.observed_at_ms;
                            self.metrics
                                .detection_to_action
                                .with_label_values(&[kind.as_str()])
                                .observe(since_detection.max(0) as f64 / 1000.0);
                            if kind == ActionKind::RestartPod {
                                failing.forget(&workload, &pod_uid);
                            }
                            let mut about = subject.about(action);
                            // The escalation's messages point at the bundle this restart saved.
                            if let (Some(bundle), Some(e)) = (done.evidence, &mut about.escalation)
                            {
                                std::sync::Arc::make_mut(e).facts.evidence = Some(bundle);
                            }
                            self.outcomes
                                .executed(&policy, &about, kind, done.note)
                                .await;
                        }
                        Err(e) => {
                            self.outcomes
                                .failed(
                                    &policy,
                                    &subject.about(action),
                                    kind,
                                    e.category(),
                                    e.to_string(),
                                )
                                .await;
                        }
                    }
                }
                Next::Done
            }
        }
    }

    /// Asks the apiserver about the workload's other failing pods the leader counts: a pod that
    /// is gone or terminating is forgotten (a person or a rollout deleted it, and no sensor
    /// reports a deletion), one that is alive is confirmed for a while. An unanswered question
    /// keeps the pod counted: the breaker errs on the side of not disrupting.
    async fn confirm_failing(
        &self,
        namespace: &str,
        workload: &str,
        except: &str,
        failing: &mut FailingPods,
    ) {
        use futures::StreamExt;
        let api = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
            self.client.clone(),
            namespace,
        );
        let now = auto_agent_shared::clock::now_ms();
        let asked = failing.unconfirmed(workload, except, now);
        let answers: Vec<_> = futures::stream::iter(asked.into_iter().take(CONFIRM_MAX))
            .map(|(uid, name)| {
                let api = api.clone();
                async move {
                    let answer = api.get_opt(&name).await;
                    (uid, answer)
                }
            })
            .buffer_unordered(CONFIRM_CONCURRENCY)
            .collect()
            .await;
        for (uid, answer) in answers {
            match answer {
                Ok(Some(p))
                    if p.metadata.uid.as_deref() == Some(uid.as_str())
                        && p.metadata.deletion_timestamp.is_none() =>
                {
                    failing.confirmed(workload, &uid, now);
                }
                Ok(_) => failing.forget(workload, &uid),
                Err(e) => {
                    tracing::warn!(error = %e, "Asking whether a failing pod still exists failed; counting it");
                }
            }
        }
    }

    /// GitOps owns the spec: reported as `GitOpsManaged` (as before), and the plan's changes go
    /// to the GitOps stage as a pull request where a repository is configured and allowed.
    async fn propose(
        &self,
        plan: &Plan,
        why: &Refusal,
        f: &Finding,
        entry: &PolicyEntry,
        subject: &Subject,
        facts: &decide::Facts,
    ) {
        let git_ops = entry.spec.as_ref().and_then(|s| s.git_ops.as_ref());
        let proposals =
            crate::gitops::proposals_of(&plan.actions, plan.incident.as_str(), facts, None);
        let delivery = if proposals.is_empty() {
            "nothing to propose".to_owned()
        } else if plan.dry_run {
            "dry run: no pull request".to_owned()
        } else {
            self.outcomes.proposals.propose(
                git_ops,
                proposals,
                subject.event_on.clone(),
                crate::gitops::Shown::of(
                    &entry.policy_ref(),
                    plan.actions.first().map(|a| a.kind()),
                ),
            )
        };
        let note = format!(
            "{} incident {}: not acting ({}): {}; {delivery}",
            f.kind.as_str(),
            plan.incident,
            why.reason.as_str(),
            why.message
        );
        self.outcomes
            .refused(
                &entry.policy_ref(),
                subject,
                action_for(f.kind),
                why.reason.as_str(),
                false,
                note,
            )
            .await;
    }

    async fn execute(
        &self,
        plan: &Plan,
        action: &PlannedAction,
        f: &Finding,
        bundle: &BundleContext,
    ) -> Result<Done, ActError> {
        let x = &self.executor;
        match action {
            PlannedAction::RestartPod { pod, reason } => {
                x.restart(plan, pod, reason, f, bundle).await
            }
            PlannedAction::BumpMemory {
                workload,
                container,
                limit,
                request,
                reason,
            } => {
                x.bump_memory(workload, container, *limit, *request, reason)
                    .await
            }
            PlannedAction::MirrorImage {
                workload,
                container,
                from,
                to,
                ..
            } => x.mirror_image(workload, container, from, to).await,
            other => Err(ActError::Unsupported(format!(
                "{} from a pod incident",
                other.kind().as_str()
            ))),
        }
    }

    fn bundle_context(
        &self,
        f: &Finding,
        entry: &PolicyEntry,
        facts: &decide::Facts,
        taken: Vec<auto_agent_evidence::document::TakenAction>,
    ) -> BundleContext {
        let log_bundle = entry.spec.as_ref().and_then(|s| s.log_bundle.as_ref());
        BundleContext {
            destination: crate::evidence::bundle::destination_for(
                log_bundle,
                &self.bundle_defaults,
            ),
            caps: crate::evidence::bundle::caps_for(log_bundle),
            policy: auto_agent_evidence::document::PolicyRef {
                namespace: entry.namespace.clone(),
                name: entry.name.clone(),
            },
            owner: f
                .owner
                .as_ref()
                .map(|o| auto_agent_evidence::document::OwnerSummary {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    desired_replicas: Some(facts.desired_replicas),
                    ready_replicas: Some(facts.ready_replicas),
                }),
            taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::recent::{PolicyRef, RecentActions};
    use crate::testing::{
        FakeApi, FakeLeader, crash_finding, crashing_pod, deployment, keeper, metrics,
    };
    use auto_agent_engine::Observed;
    use auto_agent_evidence::Destination;
    use serde_json::{Value, json};
    use tokio::sync::Notify;

    const POD: &str = "/api/v1/namespaces/prod/pods/api-1";
    const LEDGER: &str = "/api/v1/namespaces/auto-agent/configmaps";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";
    const WORKLOAD: &str = "Deployment/prod/api";

    struct Fixture {
        api: FakeApi,
        reconciler: PodReconciler,
        recent: RecentActions,
        _leader: FakeLeader,
    }

    fn fixture(spec: Option<Value>, pod_annotations: Value, replicas: i32) -> Fixture {
        fixture_with(spec, pod_annotations, replicas, |_| {})
    }

    /// A policy `prod/api` selecting `app=api` with these `spec` fields on top of a restart opt-in
    /// (none: no policy); `routes` are registered before the defaults, so they win.
    fn fixture_with(
        spec: Option<Value>,
        pod_annotations: Value,
        replicas: i32,
        routes: impl FnOnce(&FakeApi),
    ) -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = FakeApi::default();
        routes(&api);
        api.on(
            "GET",
            "/apis/apps/v1/namespaces/prod/deployments/api",
            vec![(200, deployment(replicas, replicas, json!({})))],
        )
        .on("GET", POD, vec![(200, crashing_pod("u1", pod_annotations))])
        .on("DELETE", POD, vec![(200, crashing_pod("u1", json!({})))])
        .on(
            "GET",
            &format!("{LEDGER}/ledger"),
            vec![FakeApi::not_found(404)],
        )
        .on("POST", LEDGER, vec![crate::testing::ledger_created()])
        .on("POST", EVENTS, vec![crate::testing::event_created()]);
        let metrics = metrics();
        let leader = FakeLeader::new(&metrics, true);
        let client = api.client();
        let policies = PolicyIndex::default();
        if let Some(extra) = spec {
            let mut spec = json!({"targetSelector": {"matchLabels": {"app": "api"}},
                                  "actions": {"restartStuckPods": true}});
            for (k, v) in extra.as_object().into_iter().flatten() {
                spec[k] = v.clone();
            }
            policies.insert(json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                                   "metadata": {"name": "api", "namespace": "prod", "generation": 1},
                                   "spec": spec}));
        }
        let recent = RecentActions::new(Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (evidence, dir) = keeper("pod-reconcile");
        let events = crate::testing::event_sink(&client, &leader.leadership, &metrics);
        let reconciler = PodReconciler {
            client: client.clone(),
            outcomes: Outcomes {
                events,
                metrics: metrics.clone(),
                recent: recent.clone(),
                escalations: crate::escalate::Escalations::off(),
                proposals: crate::gitops::Proposals::off(),
                incidents: Default::default(),
            },
            policies,
            workloads: Arc::new(WorkloadCache::new(client.clone(), Duration::from_secs(30))),
            ledger: Ledger::fake(&client, &leader.leadership, &metrics),
            metrics,
            executor: Arc::new(Executor {
                client: client.clone(),
                eviction_client: client,
                leadership: leader.leadership.clone(),
                evidence,
            }),
            cluster_budgets: vec![],
            allowed: AllowedActions::all(),
            registry: auto_agent_registry::RegistryClient::new(vec![], None).unwrap(),
            bundle_defaults: BundleDefaults {
                destination: Destination::Filesystem { root: dir },
                sse: None,
            },
        };
        Fixture {
            api,
            reconciler,
            recent,
            _leader: leader,
        }
    }

    impl Fixture {
        /// Handles a fresh crash-loop incident, with `failing` as what the leader knows.
        async fn handle(&self, failing: &mut FailingPods) -> Next {
            let finding = crash_finding();
            let key = IncidentKey::for_finding(&finding).unwrap();
            let change = Change {
                finding,
                observed: Observed::Opened(key.clone()),
                received: std::time::Instant::now(),
            };
            self.reconciler.handle(&change, &key, true, failing).await
        }

        fn event_reasons(&self) -> Vec<String> {
            self.api
                .seen_with("POST", EVENTS)
                .iter()
                .map(|s| s.body["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        }

        fn deleted(&self) -> usize {
            self.api.seen_with("DELETE", POD).len()
        }

        fn reserved(&self) -> usize {
            self.api.seen_with("POST", LEDGER).len() + self.api.seen_with("PUT", LEDGER).len()
        }
    }

    /// The leader knows these pods of `api` failing since `age_ms` ago (uid `uN` is pod `api-N`).
    fn failing_now(pods: &[&str], age_ms: i64) -> FailingPods {
        let mut f = FailingPods::default();
        let now = auto_agent_shared::clock::now_ms();
        for p in pods {
            let name = format!("api-{}", p.trim_start_matches('u'));
            f.observe(WORKLOAD, (p, &name), true, now - age_ms);
        }
        f
    }

    /// Pod `prod/api-N` with uid `uN`, crash-looping.
    fn other_pod(n: u32) -> Value {
        let mut pod = crashing_pod(&format!("u{n}"), json!({}));
        pod["metadata"]["name"] = json!(format!("api-{n}"));
        pod
    }

    /// An API error before the decision is not the end of the incident: the reconcile says
    /// `Failed` (the dispatcher tries again with backoff), reports nothing it does not know (no
    /// "NoPolicy"), and the next try acts.
    #[tokio::test]
    async fn an_api_error_before_deciding_is_tried_again_not_dropped() {
        let fx = fixture(Some(json!({})), json!({}), 3);
        let unavailable = (
            503,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "ServiceUnavailable", "code": 503}),
        );
        fx.api.first(
            "GET",
            "/apis/apps/v1/namespaces/prod/deployments/api",
            vec![unavailable, (200, deployment(3, 3, json!({})))],
        );
        let mut failing = failing_now(&["u1"], 60_000);
        assert_eq!(fx.handle(&mut failing).await, Next::Failed);
        assert!(fx.event_reasons().is_empty(), "{:?}", fx.event_reasons());
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
        assert_eq!(fx.handle(&mut failing).await, Next::Done);
        assert_eq!(fx.deleted(), 1, "the retry restarted the pod");
    }

    #[tokio::test]
    async fn without_a_policy_the_incident_is_reported_and_nothing_changes() {
        let fx = fixture(None, json!({}), 3);
        assert_eq!(fx.handle(&mut failing_now(&["u1"], 0)).await, Next::Done);
        assert_eq!(fx.event_reasons(), ["NoPolicy"]);
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
        // No policy in the namespace: the Event is on the verified owner, and nothing is read.
        let events = fx.api.seen_with("POST", EVENTS);
        assert_eq!(
            events[0].body["regarding"]["kind"], "Deployment",
            "{:?}",
            events[0].body
        );
        assert_eq!(events[0].body["regarding"]["name"], "api");
        let reads: Vec<String> = fx
            .api
            .seen()
            .iter()
            .filter(|s| s.method == "GET")
            .map(|s| s.uri.clone())
            .collect();
        assert!(reads.is_empty(), "{reads:?}");
    }

    #[tokio::test]
    async fn a_live_restart_reserves_deletes_and_reports_once() {
        let fx = fixture(
            Some(json!({"safety": {"stormWindowSeconds": 0}})),
            json!({}),
            3,
        );
        let mut failing = failing_now(&["u1"], 0);
        assert_eq!(fx.handle(&mut failing).await, Next::Done);
        assert_eq!(fx.deleted(), 1);
        assert_eq!(fx.reserved(), 1);
        assert_eq!(fx.event_reasons(), ["RestartedPod"]);
        let recent = fx.recent.get(&PolicyRef::Namespaced {
            namespace: "prod".into(),
            name: "api".into(),
        });
        assert_eq!(
            recent[0].outcome,
            auto_agent_shared::crd::ActionOutcome::Executed
        );
        assert_eq!(
            recent[0].target, "Pod/prod/api-1",
            "the status names what changed"
        );
        let m = &fx.reconciler.metrics;
        assert_eq!(
            m.actions
                .with_label_values(&["RestartPod", "prod", "api"])
                .get(),
            1
        );
        assert_eq!(
            failing.count(WORKLOAD, auto_agent_shared::clock::now_ms()),
            0,
            "the restarted pod no longer counts as failing"
        );
    }

    #[tokio::test]
    async fn dry_run_reports_the_same_plan_and_writes_nothing() {
        let fx = fixture(
            Some(json!({"dryRun": true, "safety": {"stormWindowSeconds": 0}})),
            json!({}),
            3,
        );
        fx.handle(&mut failing_now(&["u1"], 0)).await;
        assert_eq!(fx.event_reasons(), ["DryRun"]);
        let note = fx.api.seen_with("POST", EVENTS)[0].body["note"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(note.contains("would RestartPod Pod/prod/api-1"), "{note}");
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
    }

    #[tokio::test]
    async fn an_opted_out_pod_is_refused_before_any_reservation() {
        let fx = fixture(
            Some(json!({"safety": {"stormWindowSeconds": 0}})),
            json!({"autoagent.io/ignore": "true"}),
            3,
        );
        fx.handle(&mut failing_now(&["u1"], 0)).await;
        assert_eq!(fx.event_reasons(), ["OptedOut"]);
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
    }

    #[tokio::test]
    async fn a_fresh_failure_waits_for_the_storm_window_silently() {
        let fx = fixture(Some(json!({})), json!({}), 3);
        match fx.handle(&mut failing_now(&["u1"], 200)).await {
            Next::Retry(wait) => assert!(
                (Duration::from_millis(600)..=Duration::from_millis(800)).contains(&wait),
                "{wait:?}"
            ),
            other => panic!("acted or failed inside the storm window: {other:?}"),
        }
        assert!(fx.event_reasons().is_empty());
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
    }

    #[tokio::test]
    async fn the_breaker_counts_failing_pods_the_lagging_ready_count_misses() {
        // 4 of 4 ready, says the Deployment; the leader knows 3 of its pods are failing.
        let fx = fixture_with(Some(json!({})), json!({}), 4, |api| {
            api.on(
                "GET",
                "/api/v1/namespaces/prod/pods/api-2",
                vec![(200, other_pod(2))],
            )
            .on(
                "GET",
                "/api/v1/namespaces/prod/pods/api-3",
                vec![(200, other_pod(3))],
            );
        });
        let mut failing = failing_now(&["u1", "u2", "u3"], 5_000);
        assert_eq!(fx.handle(&mut failing).await, Next::Done);
        assert_eq!(fx.event_reasons(), ["DisruptionBreaker"]);
        let event = &fx.api.seen_with("POST", EVENTS)[0].body;
        assert_eq!(event["type"], "Warning");
        assert!(event["note"].as_str().unwrap().contains("escalating"));
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
        // The apiserver confirmed both; within the confirmation's time they are not read again.
        assert_eq!(
            fx.api
                .seen_with("GET", "/api/v1/namespaces/prod/pods/api-2")
                .len(),
            1
        );
        assert_eq!(fx.handle(&mut failing).await, Next::Done);
        assert_eq!(
            fx.api
                .seen_with("GET", "/api/v1/namespaces/prod/pods/api-2")
                .len(),
            1
        );
        assert_eq!((fx.deleted(), fx.reserved()), (0, 0));
    }

    /// A failing pod someone else deleted (a person, a rollout) sends no finding: the leader
    /// still counts it until it ages out. Before the count trips the breaker, the apiserver is
    /// asked; a pod that is gone, terminating or replaced under its name no longer counts, and
    /// one whose lookup fails still does.
    #[tokio::test]
    async fn the_breaker_does_not_count_failing_pods_that_are_gone() {
        let mut terminating = other_pod(3);
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let unavailable = (
            503,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "ServiceUnavailable", "code": 503}),
        );
        struct Case {
            name: &'static str,
            api_2: (u16, Value),
            api_3: (u16, Value),
            restarted: bool,
        }
        let cases = [
            Case {
                name: "one gone, one terminating",
                api_2: FakeApi::not_found(404),
                api_3: (200, terminating.clone()),
                restarted: true,
            },
            Case {
                name: "a new pod under the old name",
                api_2: (200, other_pod(7)),
                api_3: FakeApi::not_found(404),
                restarted: true,
            },
            Case {
                name: "one alive",
                api_2: (200, other_pod(2)),
                api_3: FakeApi::not_found(404),
                restarted: false,
            },
            Case {
                name: "one unanswered",
                api_2: unavailable.clone(),
                api_3: FakeApi::not_found(404),
                restarted: false,
            },
        ];
        for c in cases {
            let fx = fixture_with(
                Some(json!({"safety": {"stormWindowSeconds": 0}})),
                json!({}),
                3,
                |api| {
                    api.on(
                        "GET",
                        "/api/v1/namespaces/prod/pods/api-2",
                        vec![c.api_2.clone()],
                    )
                    .on(
                        "GET",
                        "/api/v1/namespaces/prod/pods/api-3",
                        vec![c.api_3.clone()],
                    );
                },
            );
            let mut failing = failing_now(&["u1", "u2", "u3"], 5_000);
            assert_eq!(fx.handle(&mut failing).await, Next::Done, "{}", c.name);
            let now = auto_agent_shared::clock::now_ms();
            if c.restarted {
                assert_eq!(fx.event_reasons(), ["RestartedPod"], "{}", c.name);
                assert_eq!(fx.deleted(), 1, "{}", c.name);
                // The ones the apiserver no longer has are forgotten, the restarted one too.
                assert_eq!(failing.count(WORKLOAD, now), 0, "{}", c.name);
            } else {
                assert_eq!(fx.event_reasons(), ["DisruptionBreaker"], "{}", c.name);
                assert_eq!(fx.deleted(), 0, "{}", c.name);
                assert_eq!(failing.count(WORKLOAD, now), 2, "{}", c.name);
            }
        }
    }

    #[tokio::test]
    async fn a_ledger_conflict_decides_again_and_acts_once() {
        // Another write created the ledger between our read and our create.
        let fx = fixture_with(
            Some(json!({"safety": {"stormWindowSeconds": 0}})),
            json!({}),
            3,
            |api| {
                api.on(
                    "POST",
                    LEDGER,
                    vec![FakeApi::conflict(), crate::testing::ledger_created()],
                );
            },
        );
        assert_eq!(fx.handle(&mut failing_now(&["u1"], 0)).await, Next::Done);
        assert_eq!(fx.api.seen_with("POST", LEDGER).len(), 2);
        assert_eq!(fx.api.seen_with("GET", "/configmaps/ledger").len(), 2);
        assert_eq!(fx.deleted(), 1);
        assert_eq!(fx.event_reasons(), ["RestartedPod"]);
    }
}
