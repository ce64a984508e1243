//! The apiserver's own view of its load, for the scale benchmark: its `/metrics` (requests by verb,
//! resource and flow schema, long-running requests, response sizes) and its process's CPU time.
//!
//! Requests are attributed to clients through API Priority and Fairness: the benchmark gives each
//! client identity (sensor, controller, the naive baseline) a FlowSchema of its own, so
//! `apiserver_flowcontrol_dispatched_requests_total{flow_schema}` counts that client's requests.

use std::collections::BTreeMap;

use kube::Client;
use serde_json::json;

use crate::Cluster;

/// One scrape: every sample as (name, sorted labels) -> value.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

/// Parses Prometheus text exposition (what the apiserver serves).
pub fn parse(text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        samples.insert((name.to_owned(), labels), value);
    }
    Scrape { samples }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        // Label values here never hold escaped quotes.
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value.to_owned());
        rest = tail;
    }
    labels
}

impl Scrape {
    /// Sum of `name` over the samples whose labels include every pair of `filter`, grouped by the
    /// values of `by`.
    pub fn sum_by(
        &self,
        name: &str,
        filter: &[(&str, &str)],
        by: &[&str],
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((n, labels), v) in &self.samples {
            if n != name
                || !filter
                    .iter()
                    .all(|(k, want)| labels.get(*k).map(String::as_str) == Some(*want))
            {
                continue;
            }
            let group: Vec<&str> = by
                .iter()
                .map(|k| labels.get(*k).map_or("", String::as_str))
                .collect();
            *out.entry(group.join(" ")).or_insert(0.0) += v;
        }
        out
    }

    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.sum_by(name, filter, &[]).values().sum()
    }

    /// `self - before`, sample by sample (counters; a sample new in `self` counts from 0).
    pub fn minus(&self, before: &Scrape) -> Scrape {
        Scrape {
            samples: self
                .samples
                .iter()
                .map(|(k, v)| (k.clone(), v - before.samples.get(k).copied().unwrap_or(0.0)))
                .collect(),
        }
    }
}

/// Scrapes the apiserver's `/metrics` as the admin.
pub async fn scrape(client: &Client) -> anyhow::Result<Scrape> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    Ok(parse(&client.request_text(request).await?))
}

/// The apiserver's process id, from the cluster's pid file.
pub fn pid(cluster: &Cluster, component: &str) -> anyhow::Result<u32> {
    let file = cluster
        .state_dir()
        .join("pids")
        .join(format!("{component}.pid"));
    Ok(std::fs::read_to_string(&file)?.trim().parse()?)
}

/// A FlowSchema that puts every request of `service_account` (namespace/name) into its own flow
/// schema `name`, ahead of the built-in `service-accounts` schema, at the `workload-low` priority
/// level the built-in one uses.
pub fn flow_schema(name: &str, namespace: &str, service_account: &str) -> serde_json::Value {
    json!({
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": 500,
            "priorityLevelConfiguration": {"name": "workload-low"},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "ServiceAccount",
                              "serviceAccount": {"name": service_account, "namespace": namespace}}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                   "clusterScope": true, "namespaces": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
            }]
        }
    })
}

/// What one client cost the apiserver over a phase (a difference of two scrapes).
#[derive(Clone, Debug, Default)]
pub struct ClientLoad {
    pub requests: f64,
    /// Seconds the apiserver spent executing them (APF's execution time; a watch counts its
    /// initialization).
    pub execution_seconds: f64,
}

pub fn client_load(delta: &Scrape, flow_schema: &str) -> ClientLoad {
    let filter = [("flow_schema", flow_schema)];
    ClientLoad {
        requests: delta.sum("apiserver_flowcontrol_dispatched_requests_total", &filter),
        execution_seconds: delta.sum(
            "apiserver_flowcontrol_request_execution_seconds_sum",
            &filter,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_sums_deltas() {
        let before = parse(
            "# HELP x\napiserver_request_total{code=\"200\",resource=\"pods\",verb=\"LIST\"} 3\n",
        );
        let after = parse(
            "apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"LIST\"} 10\n\
             apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"WATCH\"} 2\n\
             apiserver_request_total{code=\"200\",resource=\"nodes\",verb=\"LIST\"} 1.5e1\n",
        );
        let delta = after.minus(&before);
        let by = delta.sum_by(
            "apiserver_request_total",
            &[("resource", "pods")],
            &["verb"],
        );
        assert_eq!(by.get("LIST"), Some(&7.0));
        assert_eq!(by.get("WATCH"), Some(&2.0));
        assert_eq!(
            delta.sum("apiserver_request_total", &[("verb", "LIST")]),
            22.0
        );
    }
}
