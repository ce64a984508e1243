#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Third-party audits of the chart, each tool built from the Go module proxy by `make setup`
//! (scripts/setup.sh) into the shared cache:
//! - kube-score (`github.com/zegl/kube-score`) on the default and the every-feature render: no
//!   finding, and every check the chart switches off (`kube-score/ignore`) is justified by a
//!   comment right above it;
//! - kubeconform (`github.com/yannh/kubeconform`), strict, against JSON schemas made from the
//!   running apiserver's own OpenAPI document (the Kubernetes version the cluster runs, the CRDs it
//!   serves): every rendered object valid, and a broken one refused, so the schemas are real;
//! - kubectl-who-can (`github.com/aquasecurity/kubectl-who-can`) on a real install: who can delete
//!   pods, patch deployments, patch nodes and read secrets, of the chart's subjects: only the
//!   intended ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::helm::{ChartRelease, Helm};
use auto_agent_e2e::manifests::{CI_VALUES, NAMESPACE, RELEASE, parse_documents};
use auto_agent_e2e::{Cluster, TestNamespace};
use serde_json::{Value, json};

const KUBE_SCORE_VERSION: &str = "v1.20.0";
const KUBECONFORM_VERSION: &str = "v0.8.0";
const WHO_CAN_VERSION: &str = "v0.4.0";

/// A tool from the cache `make setup` fills (the directory name carries the versions).
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("AUTO_AGENT_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/auto-agent"),
        PathBuf::from,
    );
    let path = cache
        .join(format!(
            "audit-kube-score-{KUBE_SCORE_VERSION}-kubeconform-{KUBECONFORM_VERSION}-who-can-{WHO_CAN_VERSION}"
        ))
        .join("bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make setup` (scripts/setup.sh builds the audit tools)",
        path.display()
    );
    path
}

/// Runs `program` with `stdin`; (exit success, stdout, stderr).
fn run(program: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn renders() -> Vec<(&'static str, String)> {
    let helm = Helm::new().unwrap();
    vec![
        (
            "defaults",
            helm.template(RELEASE, NAMESPACE, &["--include-crds"])
                .unwrap(),
        ),
        (
            "every feature",
            helm.template(
                RELEASE,
                NAMESPACE,
                &["--include-crds", "--values", CI_VALUES],
            )
            .unwrap(),
        ),
    ]
}

// ------------------------------------------------------------------------------------------------
// kube-score

#[test]
fn kube_score_finds_nothing_the_chart_does_not_justify() {
    let kube_score = tool("kube-score");
    for (what, yaml) in renders() {
        let (ok, out, err) = run(&kube_score, &["score", "--output-format", "ci", "-"], &yaml);
        let findings: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("[OK]") && !l.starts_with("[SKIPPED]"))
            .collect();
        assert!(
            ok && findings.is_empty(),
            "kube-score on the {what} render:\n{}\n{err}",
            findings.join("\n")
        );
        let scored = out.lines().filter(|l| l.starts_with("[OK]")).count();
        assert!(
            scored > 30,
            "kube-score checked the {what} render: {scored} OK"
        );
        println!("kube-score, {what}: {scored} checks OK, no finding");
    }
    // Each check the chart switches off says why, in the comment lines right above.
    let templates = repo_root().join("charts/auto-agent/templates");
    let mut ignores = 0;
    for entry in std::fs::read_dir(&templates).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("kube-score/ignore:") {
                ignores += 1;
                let comment = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|l| l.trim_start().starts_with('#'))
                    .count();
                assert!(
                    comment >= 2,
                    "{}:{}: a kube-score exception needs its reason in a comment above it",
                    path.display(),
                    i + 1
                );
            }
        }
    }
    assert!(ignores >= 1, "the exceptions were found");
}

// ------------------------------------------------------------------------------------------------
// kubeconform against the apiserver's OpenAPI

/// kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}` for a group, version and kind.
fn schema_file(group: &str, version: &str, kind: &str) -> String {
    let group = group.split('.').next().unwrap_or_default();
    let suffix = if group.is_empty() {
        format!("-{version}")
    } else {
        format!("-{group}-{version}")
    };
    format!("{}{}.json", kind.to_lowercase(), suffix.to_lowercase())
}

/// A definition made strict like kubeconform's own `-strict` schemas: objects with properties
/// admit no others (unless the API says unknown fields are kept), and the types Kubernetes writes
/// as strings but accepts as numbers take both.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && map.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                strict(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

fn refs(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                out.insert(name.to_owned());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// One schema file per kind the apiserver serves: the kind's definition and every definition it
/// reaches, from `/openapi/v2`.
fn write_schemas(openapi: &Value, dir: &Path) -> usize {
    let mut definitions = openapi["definitions"].as_object().unwrap().clone();
    for number_or_string in [
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
    ] {
        definitions.insert(
            number_or_string.into(),
            json!({"oneOf": [{"type": "string"}, {"type": "number"}]}),
        );
    }
    for v in definitions.values_mut() {
        strict(v);
    }
    let mut written = 0;
    for (name, def) in &definitions {
        let Some(gvks) = def["x-kubernetes-group-version-kind"].as_array() else {
            continue;
        };
        let mut reached = BTreeSet::from([name.clone()]);
        let mut todo = vec![name.clone()];
        while let Some(n) = todo.pop() {
            let mut found = BTreeSet::new();
            refs(&definitions[&n], &mut found);
            for f in found {
                if reached.insert(f.clone()) {
                    todo.push(f);
                }
            }
        }
        let used: serde_json::Map<String, Value> = reached
            .iter()
            .filter_map(|n| Some((n.clone(), definitions.get(n)?.clone())))
            .collect();
        let schema = json!({"$ref": format!("#/definitions/{name}"), "definitions": used});
        for gvk in gvks {
            let file = schema_file(
                gvk["group"].as_str().unwrap_or_default(),
                gvk["version"].as_str().unwrap_or_default(),
                gvk["kind"].as_str().unwrap_or_default(),
            );
            std::fs::write(dir.join(file), schema.to_string()).unwrap();
            written += 1;
        }
    }
    written
}

fn kubeconform(dir: &Path, yaml: &str) -> Vec<Value> {
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        dir.display()
    );
    let (_, out, err) = run(
        &tool("kubeconform"),
        &[
            "-strict",
            "-verbose",
            "-output",
            "json",
            "-schema-location",
            &location,
            "-",
        ],
        yaml,
    );
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("kubeconform's JSON report: {e}\n{out}\n{err}"));
    report["resources"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn kubeconform_validates_every_object_against_the_apiservers_schemas() {
    let cluster = Cluster::get().unwrap();
    // The chart's CRDs are served (and so in the OpenAPI document), like after `helm install`.
    cluster.install_crds().await.unwrap();
    let (ok, openapi, err) = cluster
        .kubectl(&["get", "--raw", "/openapi/v2"], None)
        .unwrap();
    assert!(ok, "{err}");
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    let dir = cluster.state_dir().join("kubeconform-schemas");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let written = write_schemas(&openapi, &dir);
    assert!(written > 50, "schemas for the served kinds: {written}");

    for (what, yaml) in renders() {
        let docs = parse_documents(&yaml);
        let results = kubeconform(&dir, &yaml);
        let by_status: BTreeMap<String, Vec<String>> =
            results.iter().fold(BTreeMap::new(), |mut m, r| {
                m.entry(r["status"].as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .push(format!("{} {}: {}", r["kind"], r["name"], r["msg"]));
                m
            });
        let valid = by_status.get("statusValid").map_or(0, Vec::len);
        // cert-manager's Certificate and the Prometheus Operator's ServiceMonitor (both opt-in)
        // belong to operators this cluster does not run, so its apiserver has no schema for them.
        let unserved: BTreeSet<&str> = results
            .iter()
            .filter(|r| r["status"] == "statusError")
            .filter(|r| {
                r["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("could not find schema"))
            })
            .filter_map(|r| r["kind"].as_str())
            .collect();
        let third_party = docs
            .iter()
            .filter(|d| d["kind"] == "Certificate" || d["kind"] == "ServiceMonitor")
            .count();
        assert!(
            unserved.is_subset(&BTreeSet::from(["Certificate", "ServiceMonitor"])),
            "{unserved:?}"
        );
        assert_eq!(
            valid + third_party,
            docs.len(),
            "kubeconform on the {what} render, every object valid against the apiserver's schemas: {by_status:#?}"
        );
        println!(
            "kubeconform, {what}: {valid} objects valid, {third_party} of operators the cluster does not run ({unserved:?})"
        );
    }

    // The schemas are real: a wrong type, an unknown field and a misspelt one are refused.
    let broken = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: two
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: app, image: x, imagePullPolicy: IfNotPresent, resource: {}}]
  unknownField: 1
"#;
    let results = kubeconform(&dir, broken);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], "statusInvalid", "{results:?}");
    let msg = results[0]["msg"].as_str().unwrap_or_default();
    for part in ["replicas", "unknownField", "resource"] {
        assert!(msg.contains(part), "the refusal names {part}: {msg}");
    }
}

// ------------------------------------------------------------------------------------------------
// kubectl-who-can on a real install

/// Subjects of the install (ServiceAccounts of its namespace) that `kubectl-who-can` finds for
/// `verb resource`, from RoleBindings and ClusterRoleBindings.
fn who_can(cluster: &Cluster, ns: &str, verb: &str, resource: &str) -> BTreeSet<String> {
    let out = Command::new(tool("kubectl-who-can"))
        .args([verb, resource, "-n", ns, "--kubeconfig"])
        .arg(cluster.kubeconfig_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl-who-can {verb} {resource}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // ROLEBINDING NAMESPACE SUBJECT TYPE SA-NAMESPACE, or
        // CLUSTERROLEBINDING SUBJECT TYPE SA-NAMESPACE.
        let (subject, kind, sa_ns) = match cols.as_slice() {
            [_, _, s, t, n] => (*s, *t, *n),
            [_, s, t, n] => (*s, *t, *n),
            _ => continue,
        };
        if kind == "ServiceAccount" && sa_ns == ns {
            found.insert(subject.to_owned());
        }
    }
    found
}

#[tokio::test]
async fn kubectl_who_can_finds_only_the_intended_subjects() {
    let cluster = Cluster::get().unwrap();
    let ns = TestNamespace::create(&cluster, "whocan").await.unwrap();
    let release = ChartRelease::release_name("whocan");
    let chart = ChartRelease::install(&cluster, &release, &ns.name, &[]).unwrap();
    let controller = chart.controller_service_account();
    let sensor = chart.sensor_service_account();
    let only_controller = BTreeSet::from([controller.clone()]);
    for (verb, resource, want) in [
        ("delete", "pods", &only_controller),
        ("patch", "deployments", &only_controller),
        ("patch", "nodes", &only_controller),
        ("get", "secrets", &BTreeSet::new()),
        ("list", "secrets", &BTreeSet::new()),
    ] {
        let found = who_can(&cluster, &ns.name, verb, resource);
        println!("kubectl-who-can {verb} {resource}: {found:?} of the install");
        assert_eq!(&found, want, "{verb} {resource}");
        assert!(
            !found.contains(&sensor),
            "the sensor may not {verb} {resource}"
        );
    }
    chart.uninstall().unwrap();
}
