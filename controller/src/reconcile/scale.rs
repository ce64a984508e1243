//! The scaling loop (leader only): every interval, for each policy with `actions.scale.enabled`,
//! each Deployment/StatefulSet it selects: read replicas (scale subresource), HPAs, the CPU, gate
//! and anomaly queries -> `engine::scale::decide_scale` (pure) -> patch the scale subresource,
//! record a proposal (GitOps) or hold. Scale-ups and -downs are ledger records, so cooldowns hold
//! across failover. Every decision is a metric; an Event is written when a workload scales, or its
//! hold reason or anomaly state changes (not every interval, which would flood the namespace).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auto_agent_engine::decide::scale_admission::{self, ScaleAdmission};
use auto_agent_engine::decide::{
    ActionKind, ActionRecord, AllowedActions, BudgetLimit, History, Key, PlannedAction,
    WorkloadTarget,
};
use auto_agent_engine::scale::{
    self, AnomalyState, Direction, GateReading, HoldReason, Reading, ScaleDecision, ScaleFacts,
    ScaleSpec,
};
use auto_agent_prom::scope::ScopeError;
use auto_agent_prom::{PromClient, PromError};
use auto_agent_shared::clock::now_ms;

use crate::platform::metrics::METRIC_ANOMALY;
use auto_agent_shared::crd::policy::{Scale, ScaleAnomaly};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::events::EventType;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::act::Executor;
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;
use crate::policies::health::ScaleHealth;
use crate::policies::index::{PolicyEntry, PolicyIndex};
use crate::reconcile::ledger::Ledger;
use crate::reconcile::outcome::{Outcomes, Scope, Subject};
use crate::reconcile::reserve::{Settled, Verdict, decide_and_reserve};

/// The default CPU ratio: usage over requests across the workload's pods (cAdvisor and
/// kube-state-metrics series). `$namespace` and `$pods` (the workload's own pods) are substituted.
pub const DEFAULT_CPU_QUERY: &str = "sum(rate(container_cpu_usage_seconds_total{namespace=\"$namespace\",pod=~\"$pods\",container!=\"\",container!=\"POD\"}[2m])) / sum(kube_pod_container_resource_requests{namespace=\"$namespace\",pod=~\"$pods\",resource=\"cpu\"})";

/// What the loop remembers per workload between evaluations (leader memory; lost on failover,
/// which only restarts the quiet window: the conservative direction).
#[derive(Debug, Default)]
struct WorkloadState {
    quiet_since_ms: Option<i64>,
    last_report: Option<String>,
    anomalous: bool,
}

pub struct Scaler {
    pub client: Client,
    pub prom: Option<PromClient>,
    pub policies: PolicyIndex,
    pub ledger: Ledger,
    pub leadership: Leadership,
    pub outcomes: Outcomes,
    pub executor: Arc<Executor>,
    pub metrics: ControllerMetrics,
    pub health: ScaleHealth,
    pub interval: Duration,
    /// Consecutive passes with failed queries before a policy shows Degraded.
    pub failures_before_degraded: u32,
    pub features: crate::platform::features::Features,
    pub allowed: AllowedActions,
    pub cluster_budgets: Vec<BudgetLimit>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scaler")
    }
}

/// The engine's view of a policy's `scale` section.
pub fn scale_spec(s: &Scale) -> ScaleSpec {
    let ms = |secs: i32| i64::from(secs) * 1000;
    ScaleSpec {
        min_replicas: s.min_replicas,
        max_replicas: s.max_replicas,
        cpu_threshold: s.cpu_threshold,
        scale_down_cpu_threshold: s.scale_down_cpu_threshold,
        step_replicas: s.step_replicas,
        step_percent: u32::try_from(s.step_percent).unwrap_or(0),
        cooldown_up_ms: ms(s.cooldown_up_seconds),
        cooldown_down_ms: ms(s.cooldown_down_seconds),
        stabilization_window_ms: ms(s.stabilization_window_seconds),
    }
}

/// A policy's query for one workload: `$namespace`, `$workload` and `$pods` substituted, and every
/// selector confined to the policy's namespace (`auto_agent_prom::scope`), or why it cannot be.
pub fn render(
    query: &str,
    namespace: &str,
    kind: &str,
    workload: &str,
) -> Result<String, ScopeError> {
    auto_agent_prom::scope::render(query, namespace, kind, workload)
}

/// When the ledger says this target was last scaled up, and last scaled at all.
pub fn last_scaled(history: &History, target: &str) -> (Option<i64>, Option<i64>) {
    let target = Key::Target(target);
    (
        history.last(&[ActionKind::ScaleUp], target),
        history.last(&[ActionKind::ScaleUp, ActionKind::ScaleDown], target),
    )
}

/// A selected workload: kind, name, metadata and desired replicas.
struct Target {
    kind: &'static str,
    name: String,
    meta: ObjectMeta,
}

impl Target {
    /// The workload through the dynamic API: one code path for reading the scale subresource of
    /// either kind.
    fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        let resource = if self.kind == "StatefulSet" {
            ApiResource::erase::<StatefulSet>(&())
        } else {
            ApiResource::erase::<Deployment>(&())
        };
        Api::namespaced_with(client.clone(), ns, &resource)
    }

    fn id(&self, ns: &str) -> String {
        format!("{}/{ns}/{}", self.kind, self.name)
    }

    fn reference(&self, ns: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(self.kind.into()),
            namespace: Some(ns.into()),
            name: Some(self.name.clone()),
            uid: self.meta.uid.clone(),
            ..Default::default()
        }
    }
}

impl Scaler {
    pub async fn run(self, stop: CancellationToken) {
        let mut state: HashMap<String, WorkloadState> = HashMap::new();
        let mut failures: HashMap<(String, String), u32> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = stop.cancelled() => return,
            }
            if !self.leadership.is_leader() {
                state.clear();
                continue;
            }
            for policy in self.policies.all() {
                let Some(scale) = policy
                    .spec
                    .as_ref()
                    .and_then(|s| s.actions.scale.clone())
                    .filter(|s| s.enabled && policy.problem.is_none())
                else {
                    self.health.set(&policy.namespace, &policy.name, None);
                    continue;
                };
                if !self.features.enabled("scaling") {
                    self.health.set(
                        &policy.namespace,
                        &policy.name,
                        Some((
                            "FeatureDisabled",
                            "scale.enabled, but this installation has features.scaling off".into(),
                        )),
                    );
                    continue;
                }
                let Some(prom) = &self.prom else {
                    self.health.set(
                        &policy.namespace,
                        &policy.name,
                        Some((
                            "PrometheusNotConfigured",
                            "scale.enabled needs the controller's --prometheus-url".into(),
                        )),
                    );
                    continue;
                };
                if let Some(problem) = query_problem(&policy.namespace, &scale) {
                    self.health
                        .set(&policy.namespace, &policy.name, Some(problem));
                    continue;
                }
                let failed = self.policy_pass(prom, &policy, &scale, &mut state).await;
                let key = (policy.namespace.clone(), policy.name.clone());
                let count = failures.entry(key).or_default();
                match failed {
                    Some(why) => {
                        *count += 1;
                        if *count >= self.failures_before_degraded {
                            self.health.set(
                                &policy.namespace,
                                &policy.name,
                                Some((
                                    "PrometheusUnavailable",
                                    format!(
                                        "scaling holds: {count} evaluations in a row failed: {why}"
                                    ),
                                )),
                            );
                        }
                    }
                    None => {
                        *count = 0;
                        self.health
                            .set(&policy.namespace, &policy.name, no_gate_problem(&scale));
                    }
                }
            }
        }
    }

    /// One evaluation of a policy's workloads; returns why queries failed, if any did.
    async fn policy_pass(
        &self,
        prom: &PromClient,
        policy: &PolicyEntry,
        scale: &Scale,
        state: &mut HashMap<String, WorkloadState>,
    ) -> Option<String> {
        let ns = policy.namespace.as_str();
        let targets = match self.targets(policy).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, namespace = ns, "Listing workloads to scale failed");
                return None;
            }
        };
        if targets.is_empty() {
            return None;
        }
        let hpas = match Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                // Unknown HPAs: holding is the only safe choice; the policy shows why.
                tracing::warn!(error = %e, "Listing HorizontalPodAutoscalers failed; holding");
                self.metrics
                    .scale_decisions
                    .with_label_values(&["held", "HpaUnknown"])
                    .inc();
                return Some(format!("listing HorizontalPodAutoscalers: {e}"));
            }
        };
        // One ledger read per pass, not per workload. Without it the cooldowns are unknown: hold.
        let history = match self.ledger.load().await {
            Ok((history, _)) => history,
            Err(e) => {
                tracing::warn!(error = %e, "Reading the action ledger failed; scaling holds");
                self.metrics
                    .scale_decisions
                    .with_label_values(&["held", "LedgerUnavailable"])
                    .inc();
                return Some(format!("reading the action ledger: {e}"));
            }
        };
        let spec = scale_spec(scale);
        let dry_run = policy.spec.as_ref().is_some_and(|s| s.dry_run);
        let mut failed = None;
        for target in targets {
            let hpa = hpas
                .iter()
                .find(|h| {
                    h.spec.scale_target_ref.kind == target.kind
                        && h.spec.scale_target_ref.name == target.name
                })
                .and_then(|h| h.metadata.name.clone());
            let st = state.entry(target.id(ns)).or_default();
            let (facts, query_error) = self
                .facts(prom, ns, &target, scale, &spec, hpa, dry_run, &history, st)
                .await;
            if let Some(e) = query_error {
                failed = Some(e);
            }
            let decision = scale::decide_scale(&spec, &facts, now_ms());
            self.report_anomaly(policy, ns, &target, &facts.anomaly, st)
                .await;
            self.apply(policy, ns, &target, &decision, st).await;
        }
        failed
    }

    /// The Deployments and StatefulSets the policy selects (the kinds with a scale subresource).
    async fn targets(&self, policy: &PolicyEntry) -> Result<Vec<Target>, kube::Error> {
        Ok(
            crate::cluster::workloads::list(&self.client, &policy.namespace)
                .await?
                .into_iter()
                .filter(|w| matches!(w.kind, "Deployment" | "StatefulSet"))
                .filter(|w| policy.selects(&w.pod_labels))
                .map(|w| Target {
                    kind: w.kind,
                    name: w.meta.name.clone().unwrap_or_default(),
                    meta: w.meta,
                })
                .collect(),
        )
    }

    async fn current_replicas(&self, ns: &str, target: &Target) -> Result<i32, kube::Error> {
        let scale = target.api(&self.client, ns).get_scale(&target.name).await?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    async fn query(
        &self,
        prom: &PromClient,
        query: Result<String, ScopeError>,
    ) -> (Reading, Option<String>) {
        let query = match query {
            Ok(q) => q,
            Err(e) => {
                self.count_query("refused");
                let msg = format!("query refused: {e}");
                return (Reading::Failed(msg.clone()), Some(msg));
            }
        };
        match prom.instant(&query, None).await {
            Ok(result) => match result.single_value() {
                Some(v) => {
                    self.count_query("ok");
                    (Reading::Value(v), None)
                }
                None => {
                    self.count_query("empty");
                    (Reading::Empty, None)
                }
            },
            Err(e) => {
                self.count_query(e.category());
                let msg = e.to_string();
                (Reading::Failed(msg.clone()), Some(msg))
            }
        }
    }

    fn count_query(&self, outcome: &str) {
        self.metrics
            .prom_queries
            .with_label_values(&[outcome])
            .inc();
    }

    #[allow(clippy::too_many_arguments)]
    async fn facts(
        &self,
        prom: &PromClient,
        ns: &str,
        target: &Target,
        scale: &Scale,
        spec: &ScaleSpec,
        hpa: Option<String>,
        dry_run: bool,
        history: &History,
        st: &mut WorkloadState,
    ) -> (ScaleFacts, Option<String>) {
        let mut error = None;
        let current_replicas = match self.current_replicas(ns, target).await {
            Ok(r) => r,
            Err(e) => {
                error = Some(format!("reading the scale subresource: {e}"));
                0
            }
        };
        let cpu_query = render(
            scale.cpu_query.as_deref().unwrap_or(DEFAULT_CPU_QUERY),
            ns,
            target.kind,
            &target.name,
        );
        let (cpu, e) = self.query(prom, cpu_query).await;
        error = error.or(e);
        let mut gates = Vec::new();
        if let Some(g) = &scale.gates {
            for (name, gate) in [
                ("queueDepth", &g.queue_depth),
                ("errorRate", &g.error_rate),
                ("p95Latency", &g.p95_latency),
            ] {
                let Some(gate) = gate else { continue };
                let (reading, e) = self
                    .query(prom, render(&gate.query, ns, target.kind, &target.name))
                    .await;
                error = error.or(e);
                gates.push(GateReading {
                    name: name.into(),
                    reading,
                    threshold: gate.threshold,
                });
            }
        }
        let anomaly = match &scale.anomaly {
            None => AnomalyState::NotConfigured,
            Some(a) => self.anomaly(prom, a, ns, target.kind, &target.name).await,
        };
        let (last_scale_up_ms, last_scale_ms) = last_scaled(history, &target.id(ns));
        let mut facts = ScaleFacts {
            current_replicas,
            cpu,
            gates,
            hpa,
            gitops_managed: crate::cluster::facts::is_gitops_managed(&target.meta),
            anomaly,
            quiet_since_ms: None,
            last_scale_up_ms,
            last_scale_ms,
            dry_run,
        };
        let now = now_ms();
        st.quiet_since_ms =
            scale::next_quiet_since(st.quiet_since_ms, scale::is_quiet(spec, &facts), now);
        facts.quiet_since_ms = st.quiet_since_ms;
        (facts, error)
    }

    async fn anomaly(
        &self,
        prom: &PromClient,
        a: &ScaleAnomaly,
        ns: &str,
        kind: &str,
        workload: &str,
    ) -> AnomalyState {
        let end = SystemTime::now();
        let window = Duration::from_secs(u64::try_from(a.window_seconds).unwrap_or(3600));
        let step = Duration::from_secs(u64::try_from(a.step_seconds).unwrap_or(60));
        let query = match render(&a.query, ns, kind, workload) {
            Ok(q) => q,
            Err(e) => {
                self.count_query("refused");
                return AnomalyState::Unknown {
                    reason: format!("anomaly query refused: {e}"),
                };
            }
        };
        match prom.range(&query, end - window, end, step).await {
            Ok(result) => {
                self.count_query("ok");
                let points = result.first_series_points().unwrap_or_default();
                scale::anomaly_state(scale::zscore(points), a.z_threshold)
            }
            Err(e) => {
                self.count_query(e.category());
                AnomalyState::Unknown {
                    reason: prom_error_reason(&e),
                }
            }
        }
    }

    async fn report_anomaly(
        &self,
        policy: &PolicyEntry,
        ns: &str,
        target: &Target,
        anomaly: &AnomalyState,
        st: &mut WorkloadState,
    ) {
        let now_anomalous = matches!(anomaly, AnomalyState::Anomalous { .. });
        if now_anomalous == st.anomalous {
            return;
        }
        st.anomalous = now_anomalous;
        let reference = target.reference(ns);
        // The incident's stable key, for whoever follows it up (the same key on detect and resolve).
        let incident =
            auto_agent_engine::IncidentKey::for_metric_anomaly(ns, target.kind, &target.name)
                .map_or_else(|e| format!("(no incident key: {e})"), |k| k.to_string());
        if let AnomalyState::Anomalous { z } = anomaly {
            self.metrics.anomalies_active.inc();
            self.metrics
                .incidents
                .with_label_values(&[METRIC_ANOMALY, ns, &target.name])
                .inc();
            self.metrics
                .incidents_by_reason
                .with_label_values(&[METRIC_ANOMALY])
                .inc();
            let note = format!(
                "metric anomaly on {} {}: z = {z:.2} over the policy's window; scale-down vetoed while it lasts (incident {incident}, policy {})",
                target.kind, target.name, policy.name
            );
            tracing::warn!(%incident, z, policy = %policy.name, "Metric anomaly");
            self.outcomes
                .events
                .publish(&reference, EventType::Warning, "AnomalyDetected", note)
                .await;
        } else {
            self.metrics.anomalies_active.dec();
            let note = format!(
                "metric back within the z threshold (incident {incident}, policy {})",
                policy.name
            );
            tracing::info!(%incident, policy = %policy.name, "Metric anomaly resolved");
            self.outcomes
                .events
                .publish(&reference, EventType::Normal, "AnomalyResolved", note)
                .await;
        }
    }

    /// Reports a hold once per change of reason (not every interval, which would flood the
    /// namespace).
    async fn hold(
        &self,
        policy: &PolicyEntry,
        target: &Target,
        reference: &ObjectReference,
        st: &mut WorkloadState,
        reason: HoldReason,
        detail: &str,
    ) {
        self.metrics
            .scale_decisions
            .with_label_values(&["held", reason.as_str()])
            .inc();
        let report = format!("held:{}", reason.as_str());
        if st.last_report.as_deref() == Some(report.as_str()) {
            return;
        }
        st.last_report = Some(report);
        let type_ = if matches!(
            reason,
            HoldReason::CpuQueryFailed | HoldReason::GateQueryFailed | HoldReason::AnomalyUnknown
        ) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!(
            "scaling {} {} held ({}): {detail} (policy {})",
            target.kind,
            target.name,
            reason.as_str(),
            policy.name
        );
        tracing::info!(workload = %target.name, reason = reason.as_str(), "{note}");
        self.outcomes
            .events
            .publish(reference, type_, reason.as_str(), note)
            .await;
    }

    /// A replica change for a GitOps-managed workload, handed to the GitOps stage as its own
    /// pull request (one per workload and direction); returns what the Event says about it.
    #[allow(clippy::too_many_arguments)]
    fn propose_replicas(
        &self,
        policy: &PolicyEntry,
        ns: &str,
        target: &Target,
        from: i32,
        to: i32,
        direction: Direction,
        reason: &str,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
    ) -> String {
        if policy.spec.as_ref().is_some_and(|s| s.dry_run) {
            return "dry run: no pull request".to_owned();
        }
        let git_ops = policy.spec.as_ref().and_then(|s| s.git_ops.as_ref());
        let proposal = auto_agent_gitops::proposal::Proposal {
            incident: format!(
                "scale/{ns}/{}/{}/{}",
                target.kind,
                target.name,
                action_kind(direction).as_str()
            ),
            namespace: ns.to_owned(),
            workload: auto_agent_gitops::target::Workload {
                kind: target.kind.to_owned(),
                name: target.name.clone(),
                containers: Vec::new(),
            },
            change: auto_agent_gitops::target::Change::Replicas,
            from: from.to_string(),
            to: to.to_string(),
            reason: reason.to_owned(),
            evidence: None,
            summary: None,
        };
        let delivery = self.outcomes.proposals.propose(
            git_ops,
            vec![proposal],
            reference.clone(),
            crate::gitops::Shown::of(&policy.policy_ref(), Some(action_kind(direction))),
        );
        if delivery.starts_with("no pull request") {
            format!("{delivery}; commit it to the repository")
        } else {
            delivery
        }
    }

    async fn apply(
        &self,
        policy: &PolicyEntry,
        ns: &str,
        target: &Target,
        decision: &ScaleDecision,
        st: &mut WorkloadState,
    ) {
        let reference = target.reference(ns);
        let policy_ref = policy.policy_ref();
        let subject = Subject {
            event_on: reference.clone(),
            scope: Scope::Workload {
                namespace: ns.to_owned(),
                workload: target.name.clone(),
            },
            target: target.id(ns),
            // Scaling has no incident key of its own; its refusals show in Events and status.
            escalation: None,
            incident: None,
        };
        let (from, to, direction, reason, dry_run) = match decision {
            ScaleDecision::Hold { reason, detail } => {
                return self
                    .hold(policy, target, &reference, st, *reason, detail)
                    .await;
            }
            ScaleDecision::Propose {
                from,
                to,
                direction,
                reason,
            } => {
                self.metrics
                    .scale_decisions
                    .with_label_values(&["proposed", direction.as_str()])
                    .inc();
                let report = format!("proposed:{to}");
                if st.last_report.as_deref() == Some(report.as_str()) {
                    return;
                }
                st.last_report = Some(report);
                let delivery = self.propose_replicas(
                    policy, ns, target, *from, *to, *direction, reason, &reference,
                );
                let note = format!(
                    "GitOps-managed: proposing replicas {from} -> {to} ({reason}) instead of patching; {delivery}"
                );
                return self
                    .outcomes
                    .refused(
                        &policy_ref,
                        &subject,
                        action_kind(*direction),
                        "GitOpsManaged",
                        false,
                        note,
                    )
                    .await;
            }
            ScaleDecision::Scale {
                from,
                to,
                direction,
                reason,
                dry_run,
            } => (*from, *to, *direction, reason.as_str(), *dry_run),
        };
        let kind = action_kind(direction);
        let workload = WorkloadTarget {
            kind: target.kind.to_owned(),
            namespace: ns.to_owned(),
            name: target.name.clone(),
        };
        let action = PlannedAction::Scale {
            workload: workload.clone(),
            from,
            to,
            reason: reason.to_owned(),
        };
        // The same safety chain as every action (feature, opt-out, budgets), before reserving.
        let limits = crate::policies::index::policy_view(policy)
            .map(|v| v.budgets)
            .unwrap_or_default();
        let annotations = target.meta.annotations.clone().unwrap_or_default();
        let settled = decide_and_reserve(&self.ledger, |history, now| {
            let admitted = scale_admission::admit(&ScaleAdmission {
                action: &action,
                workload_annotations: &annotations,
                policy: &policy_ref.id(),
                policy_budgets: &limits,
                cluster_budgets: &self.cluster_budgets,
                allowed: &self.allowed,
                history,
                now_ms: now,
            });
            match admitted {
                Err(refusal) => Verdict::Stop(Err(refusal)),
                Ok(()) if dry_run => Verdict::Stop(Ok(false)),
                Ok(()) => Verdict::Reserve(
                    vec![ActionRecord {
                        at_ms: now,
                        action: kind,
                        target: target.id(ns),
                        namespace: ns.to_owned(),
                        policy: policy_ref.id(),
                        incident: format!("{ns}/{}/{}/Scale", target.kind, target.name),
                    }],
                    Ok(true),
                ),
            }
        })
        .await;
        let admitted = match settled {
            Ok(Settled::Stopped(a) | Settled::Reserved(a)) => a,
            Err(e) => {
                self.metrics
                    .action_errors
                    .with_label_values(&[e.category()])
                    .inc();
                tracing::warn!(error = %e, workload = %target.name, "Scaling holds: the action ledger could not be used");
                return;
            }
        };
        match admitted {
            Err(refusal) => {
                let reason = refusal.reason.as_str();
                self.metrics
                    .scale_decisions
                    .with_label_values(&["held", reason])
                    .inc();
                let report = format!("refused:{reason}");
                if st.last_report.as_deref() == Some(report.as_str()) {
                    return;
                }
                st.last_report = Some(report);
                let note = format!(
                    "not scaling {} {} from {from} to {to}: {}",
                    target.kind, target.name, refusal.message
                );
                self.outcomes
                    .refused(
                        &policy_ref,
                        &subject,
                        kind,
                        reason,
                        refusal.reason.escalates(),
                        note,
                    )
                    .await;
            }
            Ok(false) => {
                self.metrics
                    .scale_decisions
                    .with_label_values(&["dry_run", direction.as_str()])
                    .inc();
                let report = format!("dry:{to}");
                if st.last_report.as_deref() == Some(report.as_str()) {
                    return;
                }
                st.last_report = Some(report);
                let note = format!(
                    "scale {} {} from {from} to {to} because {reason}",
                    target.kind, target.name
                );
                self.outcomes
                    .dry_run(&policy_ref, &subject, kind, note)
                    .await;
            }
            Ok(true) => {
                let started = std::time::Instant::now();
                let result = self.executor.scale(&workload, from, to, reason).await;
                self.metrics
                    .action_latency
                    .with_label_values(&[kind.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(done) => {
                        st.last_report = None;
                        self.metrics
                            .scale_decisions
                            .with_label_values(&["scaled", direction.as_str()])
                            .inc();
                        self.outcomes
                            .executed(&policy_ref, &subject, kind, done.note)
                            .await;
                    }
                    Err(e) => {
                        self.outcomes
                            .failed(&policy_ref, &subject, kind, e.category(), e.to_string())
                            .await;
                    }
                }
            }
        }
    }
}

/// A policy that scales with no gate never scales up (the rule is CPU AND a gate): its status says
/// so while everything else works.
pub fn no_gate_problem(scale: &Scale) -> Option<(&'static str, String)> {
    let configured = scale.gates.as_ref().is_some_and(|g| {
        g.queue_depth.is_some() || g.error_rate.is_some() || g.p95_latency.is_some()
    });
    (!configured).then(|| {
        (
            "NoGateConfigured",
            "scale.enabled with no gate: scale-up needs CPU above its threshold AND one of queueDepth, errorRate, p95Latency; only scale-down and the minReplicas floor apply".to_owned(),
        )
    })
}

/// Why the policy's queries cannot run in its namespace (they name another one, or cannot be
/// parsed or confined), checked before any query is sent.
pub fn query_problem(namespace: &str, scale: &Scale) -> Option<(&'static str, String)> {
    let gates = scale.gates.as_ref();
    let queries = [
        (
            "cpuQuery",
            Some(scale.cpu_query.as_deref().unwrap_or(DEFAULT_CPU_QUERY)),
        ),
        (
            "gates.queueDepth",
            gates
                .and_then(|g| g.queue_depth.as_ref())
                .map(|g| g.query.as_str()),
        ),
        (
            "gates.errorRate",
            gates
                .and_then(|g| g.error_rate.as_ref())
                .map(|g| g.query.as_str()),
        ),
        (
            "gates.p95Latency",
            gates
                .and_then(|g| g.p95_latency.as_ref())
                .map(|g| g.query.as_str()),
        ),
        ("anomaly", scale.anomaly.as_ref().map(|a| a.query.as_str())),
    ];
    queries.into_iter().find_map(|(name, query)| {
        let e = render(query?, namespace, "Deployment", "workload").err()?;
        Some(("QueryRefused", format!("scale.{name} is not run: {e}")))
    })
}

fn action_kind(d: Direction) -> ActionKind {
    match d {
        Direction::Up => ActionKind::ScaleUp,
        Direction::Down => ActionKind::ScaleDown,
    }
}

fn prom_error_reason(e: &PromError) -> String {
    format!("anomaly query {}: {e}", e.category())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_rendered_per_workload_and_confined_to_the_namespace() {
        assert_eq!(
            render(
                "max(x{namespace=\"$namespace\",w=\"$workload\"})",
                "prod",
                "Deployment",
                "api"
            )
            .unwrap(),
            "max(x{namespace=\"prod\",w=\"api\"})"
        );
        let cpu = render(DEFAULT_CPU_QUERY, "prod", "Deployment", "api").unwrap();
        let pods = auto_agent_prom::scope::pods_regex("Deployment", "api");
        assert_eq!(cpu.matches(&format!("pod=~\"{pods}\"")).count(), 2, "{cpu}");
        assert!(!cpu.contains(".+"), "{cpu}");
        assert!(render("max(x{namespace=\"other\"})", "prod", "Deployment", "api").is_err());
    }

    #[test]
    fn a_policy_whose_queries_leave_its_namespace_is_refused_up_front() {
        let policy = |json: serde_json::Value| -> Scale { serde_json::from_value(json).unwrap() };
        let base = serde_json::json!({"enabled": true, "minReplicas": 1, "maxReplicas": 3});
        assert_eq!(query_problem("prod", &policy(base.clone())), None);
        for (field, value) in [
            ("cpuQuery", serde_json::json!("max(x{namespace=\"other\"})")),
            (
                "gates",
                serde_json::json!({"errorRate": {"query": "sum(", "threshold": 1}}),
            ),
            ("anomaly", serde_json::json!({"query": "info(up)"})),
        ] {
            let mut spec = base.clone();
            spec[field] = value;
            let (reason, message) = query_problem("prod", &policy(spec)).unwrap();
            assert_eq!(reason, "QueryRefused");
            assert!(message.contains(field), "{field}: {message}");
        }
    }

    #[test]
    fn last_scaled_reads_the_ledger_per_target() {
        let rec = |at_ms, action, target: &str| ActionRecord {
            namespace: String::new(),
            at_ms,
            action,
            target: target.into(),
            policy: "p".into(),
            incident: "i".into(),
        };
        let history = History {
            records: vec![
                rec(1, ActionKind::ScaleUp, "Deployment/prod/api"),
                rec(5, ActionKind::ScaleDown, "Deployment/prod/api"),
                rec(9, ActionKind::ScaleUp, "Deployment/prod/other"),
                rec(7, ActionKind::RestartPod, "Deployment/prod/api"),
            ],
            ..History::default()
        };
        assert_eq!(
            last_scaled(&history, "Deployment/prod/api"),
            (Some(1), Some(5))
        );
        assert_eq!(last_scaled(&history, "Deployment/prod/none"), (None, None));
    }

    #[test]
    fn spec_conversion_keeps_units() {
        let s: Scale = serde_json::from_value(serde_json::json!({
            "enabled": true, "minReplicas": 2, "maxReplicas": 5, "cooldownUpSeconds": 5
        }))
        .unwrap();
        let spec = scale_spec(&s);
        assert_eq!(spec.cooldown_up_ms, 5000);
        assert_eq!(spec.cooldown_down_ms, 900_000);
        assert_eq!(spec.stabilization_window_ms, 300_000);
        assert!((spec.scale_down_cpu_threshold - 0.30).abs() < 1e-9);
    }

    mod apply {
        use super::super::*;
        use crate::policies::recent::RecentActions;
        use crate::testing::{FakeApi, FakeLeader, keeper, metrics};
        use serde_json::{Value, json};
        use tokio::sync::Notify;

        const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";
        const LEDGER: &str = "/api/v1/namespaces/auto-agent/configmaps";
        const SCALE: &str = "/apis/apps/v1/namespaces/prod/deployments/api/scale";

        fn scaler(api: &FakeApi, leader: &FakeLeader, m: &ControllerMetrics) -> Scaler {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = api.client();
            let (evidence, _dir) = keeper("scale-apply");
            let changed = Arc::new(Notify::new());
            Scaler {
                client: client.clone(),
                prom: None,
                policies: PolicyIndex::default(),
                ledger: Ledger::fake(&client, &leader.leadership, m),
                leadership: leader.leadership.clone(),
                outcomes: Outcomes {
                    events: crate::testing::event_sink(&client, &leader.leadership, m),
                    metrics: m.clone(),
                    recent: RecentActions::new(changed.clone(), changed.clone()),
                    escalations: crate::escalate::Escalations::off(),
                    proposals: crate::gitops::Proposals::off(),
                    incidents: Default::default(),
                },
                executor: Arc::new(Executor {
                    client: client.clone(),
                    eviction_client: client,
                    leadership: leader.leadership.clone(),
                    evidence,
                }),
                metrics: m.clone(),
                health: ScaleHealth::new(changed),
                interval: Duration::from_secs(1),
                failures_before_degraded: 3,
                features: crate::platform::features::Features::parse(&["scaling".into()]).unwrap(),
                allowed: AllowedActions::all(),
                cluster_budgets: vec![],
            }
        }

        fn api() -> FakeApi {
            let api = FakeApi::default();
            api.on("GET", &format!("{LEDGER}/ledger"), vec![FakeApi::not_found(404)])
                .on(
                    "POST",
                    LEDGER,
                    vec![crate::testing::ledger_created()],
                )
                .on(
                    "PATCH",
                    SCALE,
                    vec![(200, json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "api"}, "spec": {"replicas": 3}}))],
                )
                .on(
                    "POST",
                    EVENTS,
                    vec![crate::testing::event_created()],
                );
            api
        }

        fn policy(budgets: Value) -> PolicyEntry {
            let index = PolicyIndex::default();
            index.insert(json!({"apiVersion": "autoagent.io/v1alpha1", "kind": "AutoRemediationPolicy",
                                "metadata": {"name": "web", "namespace": "prod"},
                                "spec": {"targetSelector": {"matchLabels": {"app": "api"}}, "budgets": budgets,
                                         "actions": {"scale": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}}}));
            index.all().remove(0)
        }

        fn target(annotations: Value) -> Target {
            Target {
                kind: "Deployment",
                name: "api".into(),
                meta: serde_json::from_value(
                    json!({"name": "api", "namespace": "prod", "annotations": annotations}),
                )
                .unwrap(),
            }
        }

        fn up(dry_run: bool) -> ScaleDecision {
            ScaleDecision::Scale {
                from: 2,
                to: 3,
                direction: Direction::Up,
                reason: "CPU 0.95 is above 0.80; active gates: queueDepth".into(),
                dry_run,
            }
        }

        /// Events written, in order (the recorder patches a repeat of an Event it already created).
        fn reasons(api: &FakeApi) -> Vec<String> {
            api.seen()
                .iter()
                .filter(|s| {
                    s.uri.starts_with(EVENTS) && (s.method == "POST" || s.method == "PATCH")
                })
                .map(|s| s.body["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        }

        #[tokio::test]
        async fn a_scale_up_is_reserved_then_patched_and_reported() {
            let (api, m) = (api(), metrics());
            let leader = FakeLeader::new(&m, true);
            let s = scaler(&api, &leader, &m);
            let mut st = WorkloadState::default();
            s.apply(
                &policy(json!([])),
                "prod",
                &target(json!({})),
                &up(false),
                &mut st,
            )
            .await;
            assert_eq!(api.seen_with("POST", LEDGER).len(), 1);
            assert_eq!(
                api.seen_with("PATCH", SCALE)[0].body,
                json!({"spec": {"replicas": 3}})
            );
            assert_eq!(reasons(&api), ["ScaledUp"]);
            assert_eq!(
                m.actions
                    .with_label_values(&["ScaleUp", "prod", "api"])
                    .get(),
                1
            );
        }

        #[tokio::test]
        async fn an_opted_out_workload_is_refused_before_the_ledger_and_reported_once() {
            let (api, m) = (api(), metrics());
            let leader = FakeLeader::new(&m, true);
            let s = scaler(&api, &leader, &m);
            let mut st = WorkloadState::default();
            let ignored = target(json!({"autoagent.io/ignore": "true"}));
            for _ in 0..3 {
                s.apply(&policy(json!([])), "prod", &ignored, &up(false), &mut st)
                    .await;
            }
            assert!(api.seen_with("PATCH", SCALE).is_empty());
            assert!(api.seen_with("POST", LEDGER).is_empty());
            assert_eq!(
                reasons(&api),
                ["OptedOut"],
                "one Event per change of reason"
            );
            assert_eq!(
                m.scale_decisions
                    .with_label_values(&["held", "OptedOut"])
                    .get(),
                3
            );
        }

        #[tokio::test]
        async fn an_exhausted_budget_holds_and_dry_run_writes_nothing() {
            let (api, m) = (api(), metrics());
            let leader = FakeLeader::new(&m, true);
            let s = scaler(&api, &leader, &m);
            let mut st = WorkloadState::default();
            // A ledger that already holds one scale-up of this workload, and a budget of one.
            let spent = json!({"records": [{"at_ms": auto_agent_shared::clock::now_ms(), "action": "ScaleUp",
                                            "target": "Deployment/prod/api", "policy": "prod/web", "incident": "i"}]});
            let full = FakeApi::default();
            full.on(
                "GET",
                &format!("{LEDGER}/ledger"),
                vec![(200, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ledger", "resourceVersion": "3"},
                                  "data": {"actions.json": spent.to_string()}}))],
            );
            let s_full = Scaler {
                ledger: Ledger::fake(&full.client(), &leader.leadership, &m),
                ..scaler(&api, &leader, &m)
            };
            let budget =
                json!([{"action": "ScaleUp", "scope": "Target", "max": 1, "windowSeconds": 3600}]);
            s_full
                .apply(
                    &policy(budget),
                    "prod",
                    &target(json!({})),
                    &up(false),
                    &mut st,
                )
                .await;
            assert_eq!(reasons(&api), ["BudgetExhausted"]);
            assert!(api.seen_with("PATCH", SCALE).is_empty());
            let mut st = WorkloadState::default();
            s.apply(
                &policy(json!([])),
                "prod",
                &target(json!({})),
                &up(true),
                &mut st,
            )
            .await;
            assert_eq!(reasons(&api), ["BudgetExhausted", "DryRun"]);
            assert!(api.seen_with("PATCH", SCALE).is_empty());
            assert!(api.seen_with("POST", LEDGER).is_empty());
        }

        #[tokio::test]
        async fn holds_and_proposals_are_reported_once_per_change() {
            let (api, m) = (api(), metrics());
            let leader = FakeLeader::new(&m, true);
            let s = scaler(&api, &leader, &m);
            let mut st = WorkloadState::default();
            let hold = ScaleDecision::Hold {
                reason: HoldReason::NoGateConfigured,
                detail: "no gate".into(),
            };
            let propose = ScaleDecision::Propose {
                from: 2,
                to: 3,
                direction: Direction::Up,
                reason: "cpu".into(),
            };
            for d in [&hold, &hold, &propose, &propose, &hold] {
                s.apply(&policy(json!([])), "prod", &target(json!({})), d, &mut st)
                    .await;
            }
            assert_eq!(
                reasons(&api),
                ["NoGateConfigured", "GitOpsManaged", "NoGateConfigured"]
            );
            assert!(api.seen_with("PATCH", SCALE).is_empty());
            assert!(api.seen_with("POST", LEDGER).is_empty());
        }
    }
}
