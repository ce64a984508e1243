//! The sensor's metrics, registered once with the `auto_agent_sensor_` prefix. Labels stay low in
//! cardinality: finding kinds, resources, outcomes; never pod names or uids.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct SensorMetrics {
    pub findings: IntCounterVec,
    pub queue_depth: IntGauge,
    pub inflight: IntGauge,
    pub coalesced: IntCounter,
    pub dropped: IntCounter,
    pub truncated: IntCounter,
    pub oversized: IntCounter,
    pub acked: IntCounter,
    pub rejected: IntCounterVec,
    pub stream_reconnects: IntCounter,
    pub redirects: IntCounter,
    pub resyncs: IntCounter,
    pub watch_restarts: IntCounterVec,
    pub log_reads: IntCounterVec,
    pub watched_pods: IntGauge,
}

impl SensorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let p = "auto_agent_sensor";
        let m = Self {
            findings: IntCounterVec::new(
                Opts::new(format!("{p}_findings_total"), "Findings detected, by kind"),
                &["kind"],
            )?,
            queue_depth: IntGauge::new(
                format!("{p}_queue_depth"),
                "Findings waiting to be sent or acknowledged",
            )?,
            inflight: IntGauge::new(
                format!("{p}_inflight"),
                "Findings sent and not yet acknowledged",
            )?,
            coalesced: IntCounter::new(
                format!("{p}_coalesced_total"),
                "Findings merged into a pending one",
            )?,
            dropped: IntCounter::new(
                format!("{p}_dropped_total"),
                "Findings dropped because the queue was full",
            )?,
            truncated: IntCounter::new(
                format!("{p}_truncated_total"),
                "Findings whose log tail (or message) was cut to fit the controller's message size",
            )?,
            oversized: IntCounter::new(
                format!("{p}_oversized_total"),
                "Findings dropped because they exceed the controller's message size even without a log tail",
            )?,
            acked: IntCounter::new(
                format!("{p}_acked_total"),
                "Findings acknowledged by the controller",
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    format!("{p}_rejected_total"),
                    "Findings the controller refused, by reason",
                ),
                &["reason"],
            )?,
            stream_reconnects: IntCounter::new(
                format!("{p}_stream_reconnects_total"),
                "gRPC streams re-established",
            )?,
            redirects: IntCounter::new(
                format!("{p}_leader_redirects_total"),
                "Streams redirected to the leader",
            )?,
            resyncs: IntCounter::new(
                format!("{p}_resyncs_total"),
                "Re-sends of every condition that still holds, on a new leadership term",
            )?,
            watch_restarts: IntCounterVec::new(
                Opts::new(
                    format!("{p}_watch_restarts_total"),
                    "Watch errors followed by a restart, by resource",
                ),
                &["resource"],
            )?,
            log_reads: IntCounterVec::new(
                Opts::new(
                    format!("{p}_log_reads_total"),
                    "Previous-log reads, by source (node_file, api) and outcome",
                ),
                &["source", "outcome"],
            )?,
            watched_pods: IntGauge::new(
                format!("{p}_watched_pods"),
                "Pods on this node currently tracked",
            )?,
        };
        // Known label values at 0 from the start, so dashboards show a series, not "no data".
        for reason in [
            "REJECT_REASON_WRONG_NODE",
            "REJECT_REASON_MALFORMED",
            "REJECT_REASON_RATE_LIMITED",
        ] {
            m.rejected.with_label_values(&[reason]);
        }
        for kind in auto_agent_engine::FindingKind::ALL {
            m.findings.with_label_values(&[kind.as_str()]);
        }
        for resource in ["pods", "node"] {
            m.watch_restarts.with_label_values(&[resource]);
        }
        for source in ["node_file", "api"] {
            for outcome in ["ok", "error"] {
                m.log_reads.with_label_values(&[source, outcome]);
            }
        }
        registry.register(Box::new(m.findings.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.inflight.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.truncated.clone()))?;
        registry.register(Box::new(m.oversized.clone()))?;
        registry.register(Box::new(m.acked.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.stream_reconnects.clone()))?;
        registry.register(Box::new(m.redirects.clone()))?;
        registry.register(Box::new(m.resyncs.clone()))?;
        registry.register(Box::new(m.watch_restarts.clone()))?;
        registry.register(Box::new(m.log_reads.clone()))?;
        registry.register(Box::new(m.watched_pods.clone()))?;
        Ok(m)
    }
}
