//! The chart's rendered manifests as JSON, for the chart tests: `helm template` with the release
//! [`RELEASE`] in [`NAMESPACE`] (or any other), parsed one value per document, and accessors for the
//! parts the tests look at (documents by kind and name, pod specs, containers, env, volumes). They
//! panic on what is missing (test code).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::helm::{self, Helm};

pub const CI_VALUES: &str = "charts/auto-agent/ci/all-features-values.yaml";
pub const RELEASE: &str = "auto-agent";
pub const NAMESPACE: &str = "auto-agent";

/// `helm template` with `extra` arguments, parsed into one JSON value per document.
pub fn render(extra: &[&str]) -> Vec<Value> {
    render_as(RELEASE, NAMESPACE, extra)
}

pub fn render_as(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let yaml = Helm::new()
        .expect("helm")
        .template(release, namespace, extra)
        .expect("helm template");
    parse_documents(&yaml)
}

pub fn parse_documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = serde_norway::Value::deserialize(doc).expect("a YAML document");
        if value.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(value).expect("YAML as JSON"));
    }
    docs
}

pub fn all_features() -> Vec<Value> {
    render(&["--values", CI_VALUES])
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

pub fn names_of(docs: &[Value], kind: &str) -> BTreeSet<String> {
    of_kind(docs, kind)
        .iter()
        .map(|d| d["metadata"]["name"].as_str().expect("a name").to_owned())
        .collect()
}

pub fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

pub fn containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    let mut out: Vec<&Value> = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .collect();
    if let Some(init) = spec["initContainers"].as_array() {
        out.extend(init.iter());
    }
    out
}

pub fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("env name").to_owned(), e.clone()))
        .collect()
}

pub fn env_value(container: &Value, name: &str) -> String {
    env_of(container)
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not set"))["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no literal value"))
        .to_owned()
}

pub fn volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    pod_spec(workload)["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

pub fn mount<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no volume mount {name}"))
}

/// The Grafana dashboard the chart ships (`dashboards/auto-agent.json`).
pub fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(helm::chart_dir().join("dashboards/auto-agent.json"))
            .expect("the dashboard file"),
    )
    .expect("the dashboard is JSON")
}
