//! The controller's metrics. The seed's names are kept: `auto_agent_actions_total{type,namespace,workload}`
//! and `auto_agent_incidents_total{reason,namespace,workload}`. Labels are bounded: `workload` is
//! always the owning workload (empty for a bare pod), never a pod or node name or a uid; node
//! actions and incidents have metrics of their own with a `node` label.

use auto_agent_engine::FindingKind;
use auto_agent_engine::decide::{ActionKind, RefusalReason};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    pub actions: IntCounterVec,
    pub node_actions: IntCounterVec,
    pub node_incidents: IntCounterVec,
    pub action_latency: HistogramVec,
    pub detection_to_action: HistogramVec,
    pub decisions: IntCounterVec,
    pub incidents: IntCounterVec,
    pub incidents_by_reason: IntCounterVec,
    pub findings: IntCounterVec,
    pub streams_refused: IntCounterVec,
    pub streams_closed: IntCounterVec,
    pub token_reviews: IntCounterVec,
    pub streams_open: IntGauge,
    pub decision_latency: HistogramVec,
    pub action_errors: IntCounterVec,
    pub leader: IntGauge,
    pub fenced_writes: IntCounterVec,
    pub policies: IntGauge,
    pub policies_invalid: IntGauge,
    pub open_incidents: IntGauge,
    pub scale_decisions: IntCounterVec,
    pub prom_queries: IntCounterVec,
    pub anomalies_active: IntGauge,
    pub bundle_handoffs: IntCounterVec,
    pub forged_findings: IntCounterVec,
    pub ledger_bytes: IntGauge,
    pub ledger_level: IntGauge,
    pub escalation_deliveries: IntCounterVec,
    pub escalation_latency: HistogramVec,
    pub escalation_queue_depth: IntGauge,
    pub escalation_records: IntGauge,
    pub escalation_summaries: IntCounterVec,
    pub escalation_signals_dropped: IntCounter,
    pub escalation_routes_refused: IntCounter,
    pub gitops_proposals: IntCounterVec,
    pub gitops_pending: IntGauge,
    pub gitops_delivery_latency: Histogram,
}

/// Label values known in advance, created at 0 so dashboards and `rate()` see a series from the
/// start instead of "no data" until the first event.
const FINDING_OUTCOMES: &[&str] = &[
    "accepted",
    "duplicate",
    "malformed",
    "rate_limited",
    "wrong_node",
    "stale",
    "forged",
];
/// Why a finding was counted as forged: what it (or the pod it names) claimed that the API server
/// contradicts.
pub const FORGED_REASONS: &[&str] = &[
    "wrong_node",
    "owner_unverified",
    "owner_mismatch",
    "no_container",
];
const REFUSED_STREAM_CAUSES: &[&str] = &[
    "too_many_handshakes",
    "too_many_streams",
    "missing_token",
    "malformed_token",
    "expired_token",
    "invalid_token",
    "wrong_audience",
    "wrong_service_account",
    "no_node_binding",
    "tokenreview_busy",
    "tokenreview_error",
    "no_hello",
    "wrong_node",
];
const CLOSED_STREAM_CAUSES: &[&str] = &["replaced", "token_expired", "token_refused"];
const REVIEW_OUTCOMES: &[&str] = &["authenticated", "refused", "error"];
const WRITE_KINDS: &[&str] = &[
    "event",
    "ledger",
    "delete_pod",
    "patch_workload",
    "policy_status",
    "scale",
    "cordon",
    "evict",
    "uncordon",
    "node",
];
const ACT_ERRORS: &[&str] = &[
    "fenced",
    "condition_cleared",
    "bundle",
    "api",
    "unsupported",
    "template_mismatch",
    "retries_exhausted",
];
const HANDOFF_OUTCOMES: &[&str] = &[
    "handed_off",
    "taken_over",
    "too_large",
    "failed",
    "unreadable",
    "invalid",
];
/// The incident reason of a scaling policy's metric anomaly (not a finding kind).
pub const METRIC_ANOMALY: &str = "MetricAnomaly";
/// Delivered, and the failures every channel can meet (others appear when they happen).
const DELIVERY_OUTCOMES: &[&str] = &[
    "delivered",
    "rate_limited",
    "server_error",
    "unreachable",
    "unauthorized",
    "timeout",
];
/// Where an incident summary came from (`escalation::deliver`).
const SUMMARY_SOURCES: &[&str] = &["llm", "template", "template_fallback"];
const QUERY_OUTCOMES: &[&str] = &[
    "ok",
    "empty",
    "bad_query",
    "unavailable",
    "bad_response",
    "config",
];

impl ControllerMetrics {
    fn touch_known_labels(&self) {
        for o in FINDING_OUTCOMES {
            self.findings.with_label_values(&[o]);
        }
        for c in REFUSED_STREAM_CAUSES {
            self.streams_refused.with_label_values(&[c]);
        }
        for c in CLOSED_STREAM_CAUSES {
            self.streams_closed.with_label_values(&[c]);
        }
        for o in REVIEW_OUTCOMES {
            self.token_reviews.with_label_values(&[o]);
        }
        for w in WRITE_KINDS.iter().chain(ACT_ERRORS) {
            self.action_errors.with_label_values(&[w]);
            self.fenced_writes.with_label_values(&[w]);
        }
        for o in QUERY_OUTCOMES {
            self.prom_queries.with_label_values(&[o]);
        }
        for o in HANDOFF_OUTCOMES {
            self.bundle_handoffs.with_label_values(&[o]);
        }
        for o in [
            "opened",
            "updated",
            "not_needed",
            "merged",
            "declined",
            "resolved",
        ] {
            self.gitops_proposals.with_label_values(&[o]);
        }
        for r in FORGED_REASONS {
            self.forged_findings.with_label_values(&[r]);
        }
        // Decisions, latencies and incidents: every outcome with every reason it can carry.
        for kind in ActionKind::ALL.map(ActionKind::as_str) {
            for outcome in ["executed", "dry_run"] {
                self.decisions.with_label_values(&[outcome, kind]);
            }
            self.action_latency.with_label_values(&[kind]);
            self.detection_to_action.with_label_values(&[kind]);
        }
        for r in RefusalReason::ALL {
            self.decisions.with_label_values(&["refused", r.as_str()]);
        }
        for e in ACT_ERRORS {
            self.decisions.with_label_values(&["failed", e]);
        }
        self.decisions
            .with_label_values(&["blocked", "PodDisruptionBudget"]);
        for kind in FindingKind::ALL.map(FindingKind::as_str) {
            self.decision_latency.with_label_values(&[kind]);
            self.incidents_by_reason.with_label_values(&[kind]);
        }
        self.incidents_by_reason
            .with_label_values(&[METRIC_ANOMALY]);
        for channel in ["slack", "ticket"] {
            for outcome in DELIVERY_OUTCOMES {
                self.escalation_deliveries
                    .with_label_values(&[channel, outcome]);
            }
            self.escalation_latency.with_label_values(&[channel]);
        }
        for source in SUMMARY_SOURCES {
            self.escalation_summaries.with_label_values(&[source]);
        }
    }

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            actions: IntCounterVec::new(
                Opts::new(
                    "auto_agent_actions_total",
                    "Actions executed on pods and workloads, by action type and the owning workload",
                ),
                &["type", "namespace", "workload"],
            )?,
            node_actions: IntCounterVec::new(
                Opts::new(
                    "auto_agent_node_actions_total",
                    "Actions executed on nodes (cordon, uncordon), by action type and node",
                ),
                &["type", "node"],
            )?,
            node_incidents: IntCounterVec::new(
                Opts::new(
                    "auto_agent_node_incidents_total",
                    "Node incidents (pressure conditions) opened or reopened, by condition and node",
                ),
                &["reason", "node"],
            )?,
            action_latency: HistogramVec::new(
                HistogramOpts::new(
                    "auto_agent_action_latency_seconds",
                    "How long executing one action took (for a restart: bundle and delete), by type",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["type"],
            )?,
            detection_to_action: HistogramVec::new(
                HistogramOpts::new(
                    "auto_agent_detection_to_action_seconds",
                    "From the sensor's detection (the finding's observation time) to the action done, by type",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["type"],
            )?,
            decisions: IntCounterVec::new(
                Opts::new(
                    "auto_agent_decisions_total",
                    "Decisions by outcome (executed, dry_run, refused, failed, blocked) and reason (the action type or the refusal reason)",
                ),
                &["outcome", "reason"],
            )?,
            incidents: IntCounterVec::new(
                Opts::new(
                    "auto_agent_incidents_total",
                    "Pod incidents opened or reopened, by finding kind and the owning workload",
                ),
                &["reason", "namespace", "workload"],
            )?,
            incidents_by_reason: IntCounterVec::new(
                Opts::new(
                    "auto_agent_incidents_by_reason_total",
                    "Incidents opened or reopened (pods, nodes, metric anomalies), by reason only: \
                     every reason exists at 0 from the start, so rate() sees the first incident",
                ),
                &["reason"],
            )?,
            findings: IntCounterVec::new(
                Opts::new(
                    "auto_agent_findings_received_total",
                    "Findings received from sensors, by outcome",
                ),
                &["outcome"],
            )?,
            streams_refused: IntCounterVec::new(
                Opts::new(
                    "auto_agent_streams_refused_total",
                    "Sensor streams refused, by cause",
                ),
                &["cause"],
            )?,
            streams_closed: IntCounterVec::new(
                Opts::new(
                    "auto_agent_streams_closed_total",
                    "Open sensor streams the controller closed, by cause (replaced by a newer stream of the same node, token expired, token refused on re-review)",
                ),
                &["cause"],
            )?,
            token_reviews: IntCounterVec::new(
                Opts::new(
                    "auto_agent_token_reviews_total",
                    "TokenReviews sent to the apiserver for sensor tokens, by outcome (authenticated, refused, error)",
                ),
                &["outcome"],
            )?,
            streams_open: IntGauge::new(
                "auto_agent_streams_open",
                "Sensor streams open on this replica",
            )?,
            decision_latency: HistogramVec::new(
                HistogramOpts::new(
                    "auto_agent_decision_latency_seconds",
                    "From a finding's arrival to its decision (or report)",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["kind"],
            )?,
            action_errors: IntCounterVec::new(
                Opts::new(
                    "auto_agent_action_errors_total",
                    "Failed writes, by what was written",
                ),
                &["what"],
            )?,
            leader: IntGauge::new("auto_agent_leader", "1 while this replica holds the lease")?,
            fenced_writes: IntCounterVec::new(
                Opts::new(
                    "auto_agent_fenced_writes_total",
                    "Writes dropped because this replica did not hold the lease",
                ),
                &["what"],
            )?,
            policies: IntGauge::new("auto_agent_policies", "AutoRemediationPolicies known")?,
            policies_invalid: IntGauge::new(
                "auto_agent_policies_invalid",
                "AutoRemediationPolicies that cannot be used",
            )?,
            open_incidents: IntGauge::new(
                "auto_agent_open_incidents",
                "Incidents not yet resolved",
            )?,
            scale_decisions: IntCounterVec::new(
                Opts::new(
                    "auto_agent_scale_decisions_total",
                    "Scaling evaluations by outcome (scaled, dry_run, proposed, held) and reason",
                ),
                &["outcome", "reason"],
            )?,
            prom_queries: IntCounterVec::new(
                Opts::new(
                    "auto_agent_prometheus_queries_total",
                    "Prometheus queries by outcome (ok, empty, bad_query, unavailable, bad_response, too_large, refused)",
                ),
                &["outcome"],
            )?,
            anomalies_active: IntGauge::new(
                "auto_agent_anomalies_active",
                "Workloads whose anomaly query is above its z threshold",
            )?,
            bundle_handoffs: IntCounterVec::new(
                Opts::new(
                    "auto_agent_bundle_handoffs_total",
                    "Spooled bundles handed to ConfigMaps on stop or taken over on start, by outcome",
                ),
                &["outcome"],
            )?,
            forged_findings: IntCounterVec::new(
                Opts::new(
                    "auto_agent_forged_findings_total",
                    "Findings refused because the API server contradicts them (owner, node, container), by reason",
                ),
                &["reason"],
            )?,
            ledger_bytes: IntGauge::new(
                "auto_agent_ledger_bytes",
                "Size of the action ledger's JSON at its last write (bounded at 900 KiB)",
            )?,
            ledger_level: IntGauge::new(
                "auto_agent_ledger_level",
                "How coarse the action ledger had to become at its last write to fit: 0 every \
                 action keeps its workload, namespace, policy and incident; 1, 2, 3 actions older \
                 than a day, an hour, any count against all of them (conservative refusals)",
            )?,
            escalation_deliveries: IntCounterVec::new(
                Opts::new(
                    "auto_agent_escalation_deliveries_total",
                    "Escalation deliveries by channel (slack, ticket) and outcome (delivered, or \
                     the failure's category: rate_limited, server_error, unreachable, \
                     unauthorized, not_found, rejected, protocol, not_configured)",
                ),
                &["channel", "outcome"],
            )?,
            escalation_latency: HistogramVec::new(
                HistogramOpts::new(
                    "auto_agent_escalation_delivery_latency_seconds",
                    "From queueing an escalation message to its delivery, by channel (includes \
                     retries during an outage)",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ]),
                &["channel"],
            )?,
            escalation_queue_depth: IntGauge::new(
                "auto_agent_escalation_queue_depth",
                "Escalation deliveries owed (persisted in the escalation records)",
            )?,
            escalation_records: IntGauge::new(
                "auto_agent_escalation_records",
                "Incidents with an escalation record (watched, escalated, or resolved within the \
                 reopen window)",
            )?,
            escalation_summaries: IntCounterVec::new(
                Opts::new(
                    "auto_agent_escalation_summaries_total",
                    "Incident summaries made, by source: llm, template (no model configured), \
                     template_fallback (the model was slow or failing)",
                ),
                &["source"],
            )?,
            escalation_signals_dropped: IntCounter::new(
                "auto_agent_escalation_signals_dropped_total",
                "Escalation signals dropped because the stage's queue or its record limit was full",
            )?,
            gitops_proposals: IntCounterVec::new(
                Opts::new(
                    "auto_agent_gitops_proposals_total",
                    "GitOps proposal deliveries by outcome: opened, updated, not_needed, merged, \
                     declined, resolved, dropped, or the failure's category (plan, \
                     not_configured, rate_limited, server_error, unreachable, unauthorized, \
                     not_found, rejected, protocol, config)",
                ),
                &["outcome"],
            )?,
            gitops_pending: IntGauge::new(
                "auto_agent_gitops_pending",
                "GitOps proposals owed a delivery (their pull request not yet opened or updated)",
            )?,
            gitops_delivery_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "auto_agent_gitops_delivery_seconds",
                    "One proposal delivery: branch, commit and pull request calls",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            escalation_routes_refused: IntCounter::new(
                "auto_agent_escalation_routes_refused_total",
                "Escalation routes (a Slack channel or a ticket project) a policy named but the \
                 installation does not allow",
            )?,
        };
        m.touch_known_labels();
        registry.register(Box::new(m.forged_findings.clone()))?;
        registry.register(Box::new(m.scale_decisions.clone()))?;
        registry.register(Box::new(m.prom_queries.clone()))?;
        registry.register(Box::new(m.anomalies_active.clone()))?;
        registry.register(Box::new(m.bundle_handoffs.clone()))?;
        registry.register(Box::new(m.ledger_bytes.clone()))?;
        registry.register(Box::new(m.ledger_level.clone()))?;
        registry.register(Box::new(m.escalation_deliveries.clone()))?;
        registry.register(Box::new(m.escalation_latency.clone()))?;
        registry.register(Box::new(m.escalation_queue_depth.clone()))?;
        registry.register(Box::new(m.escalation_records.clone()))?;
        registry.register(Box::new(m.escalation_summaries.clone()))?;
        registry.register(Box::new(m.escalation_signals_dropped.clone()))?;
        registry.register(Box::new(m.escalation_routes_refused.clone()))?;
        registry.register(Box::new(m.gitops_proposals.clone()))?;
        registry.register(Box::new(m.gitops_pending.clone()))?;
        registry.register(Box::new(m.gitops_delivery_latency.clone()))?;
        registry.register(Box::new(m.actions.clone()))?;
        registry.register(Box::new(m.node_actions.clone()))?;
        registry.register(Box::new(m.node_incidents.clone()))?;
        registry.register(Box::new(m.action_latency.clone()))?;
        registry.register(Box::new(m.detection_to_action.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.incidents.clone()))?;
        registry.register(Box::new(m.incidents_by_reason.clone()))?;
        registry.register(Box::new(m.findings.clone()))?;
        registry.register(Box::new(m.streams_refused.clone()))?;
        registry.register(Box::new(m.streams_closed.clone()))?;
        registry.register(Box::new(m.token_reviews.clone()))?;
        registry.register(Box::new(m.streams_open.clone()))?;
        registry.register(Box::new(m.decision_latency.clone()))?;
        registry.register(Box::new(m.action_errors.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.fenced_writes.clone()))?;
        registry.register(Box::new(m.policies.clone()))?;
        registry.register(Box::new(m.policies_invalid.clone()))?;
        registry.register(Box::new(m.open_incidents.clone()))?;
        Ok(m)
    }
}
