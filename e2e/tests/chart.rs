#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Helm chart (`charts/auto-agent`): lint, the rendered manifests (hardening, RBAC per
//! feature, no secret outside a Secret, TLS), consistency with the Dockerfiles and the binaries'
//! flags, the Grafana dashboard's queries (checked by promtool) and metric names, and an install
//! into the real control plane with RBAC proved through tokens of the chart's own ServiceAccounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::helm::{self, ChartRelease, Helm};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Cluster, TestNamespace};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

const CI_VALUES: &str = "charts/auto-agent/ci/all-features-values.yaml";
const RELEASE: &str = "auto-agent";
const NAMESPACE: &str = "auto-agent";

// ------------------------------------------------------------------------------------------------
// Rendering helpers

fn helm() -> Helm {
    Helm::new().unwrap()
}

/// `helm template` with `extra` arguments, parsed into one JSON value per document.
fn render(extra: &[&str]) -> Vec<Value> {
    render_as(RELEASE, NAMESPACE, extra)
}

fn render_as(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let yaml = helm().template(release, namespace, extra).unwrap();
    parse_documents(&yaml)
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let value = serde_norway::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(value).unwrap());
    }
    docs
}

fn all_features() -> Vec<Value> {
    render(&["--values", CI_VALUES])
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

fn names_of(docs: &[Value], kind: &str) -> BTreeSet<String> {
    of_kind(docs, kind)
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

type Triple = (String, String, String);

/// A role's rules as (apiGroup, resource, verb) triples.
fn triples(role: &Value) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in str_list(&rule["apiGroups"]) {
            for resource in str_list(&rule["resources"]) {
                for verb in str_list(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// RBAC rules written as (apiGroup, resources, verbs).
type Rules<'a> = &'a [(&'a str, &'a [&'a str], &'a [&'a str])];

fn expand(rules: Rules<'_>) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in rules {
        for resource in *resources {
            for verb in *verbs {
                out.insert((
                    (*group).to_owned(),
                    (*resource).to_owned(),
                    (*verb).to_owned(),
                ));
            }
        }
    }
    out
}

/// What the controller is known to need: the ClusterRole `e2e/src/agents.rs` gives the controller
/// processes every e2e test runs.
const CONTROLLER_RULES_KNOWN_TO_WORK: Rules<'static> = &[
    ("authentication.k8s.io", &["tokenreviews"], &["create"]),
    ("", &["pods"], &["get", "list", "delete"]),
    ("", &["pods/log"], &["get"]),
    ("", &["events"], &["list"]),
    ("", &["pods/eviction"], &["create"]),
    ("", &["nodes"], &["get", "list", "patch"]),
    (
        "autoagent.io",
        &["noderemediationpolicies"],
        &["get", "list", "watch"],
    ),
    (
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "patch"],
    ),
    ("apps", &["replicasets"], &["get"]),
    (
        "apps",
        &["deployments/scale", "statefulsets/scale"],
        &["get", "patch"],
    ),
    ("autoscaling", &["horizontalpodautoscalers"], &["list"]),
    ("batch", &["jobs"], &["get"]),
    (
        "autoagent.io",
        &["autoremediationpolicies"],
        &["get", "list", "watch"],
    ),
    (
        "autoagent.io",
        &["autoremediationpolicies/status"],
        &["get", "patch", "update"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
];

const CONTROLLER_ROLE_KNOWN_TO_WORK: Rules<'static> = &[
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update", "patch"],
    ),
    (
        "",
        &["configmaps"],
        &["get", "create", "update", "list", "delete"],
    ),
];

const SENSOR_RULES: Rules<'static> = &[
    ("", &["pods"], &["get", "list", "watch"]),
    ("", &["pods/log"], &["get"]),
    ("", &["nodes"], &["get", "list", "watch"]),
];

fn fullname() -> String {
    helm::fullname(RELEASE)
}

fn sensor_name() -> String {
    format!("{}-sensor", fullname())
}

fn controller_name() -> String {
    format!("{}-controller", fullname())
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    let mut out: Vec<&Value> = spec["containers"].as_array().unwrap().iter().collect();
    if let Some(init) = spec["initContainers"].as_array() {
        out.extend(init.iter());
    }
    out
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

fn env_value(container: &Value, name: &str) -> String {
    env_of(container)
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not set"))["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no literal value"))
        .to_owned()
}

fn volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    pod_spec(workload)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn mount<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no volume mount {name}"))
}

/// The hardening every pod of the chart carries.
fn assert_hardened(workload: &Value) {
    let name = workload["metadata"]["name"].as_str().unwrap();
    let spec = pod_spec(workload);
    let pod_sc = &spec["securityContext"];
    assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(spec[host], true, "{name}: {host}");
    }
    assert_eq!(pod_sc["runAsNonRoot"], true, "{name}: pod runAsNonRoot");
    assert_eq!(
        pod_sc["seccompProfile"]["type"], "RuntimeDefault",
        "{name}: pod seccomp"
    );
    for c in containers(workload) {
        let sc = &c["securityContext"];
        let cname = format!("{name}/{}", c["name"]);
        assert_eq!(sc["runAsNonRoot"], true, "{cname}: runAsNonRoot");
        assert_eq!(sc["runAsUser"], 65532, "{cname}: runAsUser");
        assert_eq!(sc["runAsGroup"], 65532, "{cname}: runAsGroup");
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{cname}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{cname}: allowPrivilegeEscalation"
        );
        assert_ne!(sc["privileged"], true, "{cname}: privileged");
        assert!(
            str_list(&sc["capabilities"]["drop"]).contains(&"ALL".to_owned()),
            "{cname}: capabilities drop ALL"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{cname}: no capability added"
        );
        assert_eq!(
            sc["seccompProfile"]["type"], "RuntimeDefault",
            "{cname}: seccomp"
        );
        for kind in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][res].is_null(),
                    "{cname}: resources.{kind}.{res}"
                );
            }
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live", "{cname}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{cname}");
    }
}

/// RBAC that must never appear: Secrets, wildcards, escalation verbs.
fn assert_no_dangerous_rules(role: &Value) {
    let name = role["metadata"]["name"].as_str().unwrap();
    for rule in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            assert!(
                !str_list(&rule[field]).iter().any(|s| s.contains('*')),
                "{name}: wildcard in {field}: {rule}"
            );
        }
        assert!(
            !str_list(&rule["resources"])
                .iter()
                .any(|r| r == "secrets" || r.starts_with("secrets/")),
            "{name}: a rule on Secrets: {rule}"
        );
        for verb in str_list(&rule["verbs"]) {
            assert!(
                !["escalate", "bind", "impersonate"].contains(&verb.as_str()),
                "{name}: {verb}"
            );
        }
        assert!(rule["nonResourceURLs"].is_null(), "{name}: nonResourceURLs");
    }
}

/// Standard base64 (the alphabet Kubernetes uses for Secret data).
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for b in s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == b)
            .unwrap_or_else(|| panic!("not base64: {s}")) as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

/// Every value held by a Secret in the rendered chart (decoded and encoded), long enough to be
/// recognisable.
fn secret_values(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for secret in of_kind(docs, "Secret") {
        if let Some(data) = secret["data"].as_object() {
            for v in data.values() {
                let encoded = v.as_str().unwrap();
                out.push(encoded.to_owned());
                let decoded = String::from_utf8(base64_decode(encoded)).unwrap();
                // PEM blocks: also each base64 line of the body.
                out.extend(
                    decoded
                        .lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                        .map(str::to_owned),
                );
                out.push(decoded);
            }
        }
        if let Some(data) = secret["stringData"].as_object() {
            out.extend(data.values().map(|v| v.as_str().unwrap().to_owned()));
        }
    }
    out.retain(|v| v.len() >= 16);
    out
}

fn assert_no_secret_outside_secrets(docs: &[Value]) {
    let values = secret_values(docs);
    assert!(!values.is_empty(), "the render has Secret data to look for");
    for doc in docs.iter().filter(|d| d["kind"] != "Secret") {
        let text = serde_json::to_string(doc).unwrap();
        let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} holds a private key block"
        );
        for v in &values {
            assert!(!text.contains(v.as_str()), "{what} holds a Secret's value");
        }
    }
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The generated certificate: signed by the CA in the same Secret, names the host the sensors
/// dial, and matches its key.
fn assert_tls_secret_serves(secret: &Value, host: &str) {
    let dir = std::env::temp_dir().join(format!("chart-tls-{}-{host}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = BTreeMap::new();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let path = dir.join(key);
        std::fs::write(&path, base64_decode(secret["data"][key].as_str().unwrap())).unwrap();
        files.insert(key, path.to_str().unwrap().to_owned());
    }
    let verified = openssl(&["verify", "-CAfile", &files["ca.crt"], &files["tls.crt"]]);
    assert!(verified.trim_end().ends_with("OK"), "{verified}");
    let sans = openssl(&[
        "x509",
        "-in",
        &files["tls.crt"],
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(sans.contains(&format!("DNS:{host}")), "{host} in {sans}");
    let cert_key = openssl(&["x509", "-in", &files["tls.crt"], "-noout", "-pubkey"]);
    let key = openssl(&["pkey", "-in", &files["tls.key"], "-pubout"]);
    assert_eq!(cert_key, key, "the key belongs to the certificate");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------------------------------------
// Lint and render

#[test]
fn chart_lints_clean_with_defaults_and_every_feature() {
    let started = Instant::now();
    for extra in [vec![], vec!["--values", CI_VALUES]] {
        let out = helm().lint(&extra).unwrap();
        println!("helm lint {extra:?}:\n{}{}", out.stdout, out.stderr);
        assert!(out.success, "helm lint {extra:?} failed");
        assert!(
            !out.stdout.contains("[ERROR]"),
            "helm lint {extra:?} reported errors"
        );
        for warning in out.stdout.lines().filter(|l| l.contains("[WARNING]")) {
            println!("lint warning: {warning}");
        }
    }
    // The schema catches what the templates would otherwise render wrongly.
    for bad in [
        "evidence.durability=sometimes",
        "logging.format=xml",
        "features.restart=yes",
        "evidence.s3.sse=rot13",
        "tls.certManager.enabled=true",
        "controller.replicas=-1",
        "not.a.value=1",
    ] {
        let out = helm().lint(&["--set", bad]).unwrap();
        assert!(!out.success, "--set {bad} must fail the lint");
    }
    println!("lint: {:?}", started.elapsed());
}

#[test]
fn default_render_is_least_privilege_and_hardened() {
    let docs = render(&[]);
    let sensor = one(&docs, "DaemonSet", &sensor_name());
    let controller = one(&docs, "Deployment", &controller_name());
    assert_hardened(sensor);
    assert_hardened(controller);
    assert_eq!(of_kind(&docs, "DaemonSet").len(), 1);
    assert_eq!(of_kind(&docs, "Deployment").len(), 1);

    // Sensor: every node, read-only logs, its two tokens, its node, its footprint.
    let spec = pod_spec(sensor);
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
        "the sensor tolerates every taint"
    );
    assert_eq!(spec["serviceAccountName"], sensor_name());
    assert!(spec["priorityClassName"].is_null());
    let logs = volume(sensor, "pod-logs");
    assert_eq!(logs["hostPath"]["path"], "/var/log/pods");
    let c = &spec["containers"][0];
    let logs_mount = mount(c, "pod-logs");
    assert_eq!(logs_mount["readOnly"], true);
    assert_eq!(logs_mount["mountPath"], "/var/log/pods");
    assert_eq!(env_value(c, "AUTO_AGENT_POD_LOG_DIR"), "/var/log/pods");
    let token = &volume(sensor, "agent-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "auto-agent");
    assert_eq!(token["expirationSeconds"], 3600);
    let token_file = format!(
        "{}/{}",
        mount(c, "agent-token")["mountPath"].as_str().unwrap(),
        token["path"].as_str().unwrap()
    );
    assert_eq!(env_value(c, "AUTO_AGENT_TOKEN_FILE"), token_file);
    // The API token: projected explicitly where in-cluster configuration looks for it.
    let api = volume(sensor, "kube-api-access");
    assert!(
        api["projected"]["sources"][0]["serviceAccountToken"]["audience"].is_null(),
        "the API token has the API server's audience"
    );
    assert_eq!(
        mount(c, "kube-api-access")["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    // Only the CA of the TLS Secret reaches the sensor, never the key.
    let ca = volume(sensor, "controller-ca");
    assert_eq!(
        str_list(&json!(
            ca["secret"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].clone())
                .collect::<Vec<_>>()
        )),
        vec!["ca.crt"]
    );
    assert_eq!(
        env_of(c)["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "10m", "memory": "20Mi"})
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "200m", "memory": "64Mi"})
    );
    let dial = env_value(c, "AUTO_AGENT_CONTROLLER");
    assert_eq!(
        dial,
        format!("https://{}.{NAMESPACE}.svc:9443", controller_name())
    );

    // Controller: two replicas spread over nodes, a PDB, its identity, its volumes.
    let cspec = pod_spec(controller);
    assert_eq!(controller["spec"]["replicas"], 2);
    let anti =
        &cspec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pod_labels = &controller["spec"]["template"]["metadata"]["labels"];
    for (k, v) in anti["podAffinityTerm"]["labelSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "anti-affinity selects the controller pods"
        );
    }
    let pdb = one(&docs, "PodDisruptionBudget", &controller_name());
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        controller["spec"]["selector"]["matchLabels"]
    );
    let cc = &cspec["containers"][0];
    let env = env_of(cc);
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_value(cc, "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT"),
        format!("{NAMESPACE}/{}", sensor_name())
    );
    assert_eq!(env_value(cc, "AUTO_AGENT_TOKEN_AUDIENCE"), "auto-agent");
    assert_eq!(env_value(cc, "AUTO_AGENT_GRPC_ADVERTISE"), "$(POD_IP):9443");
    for (var, volume_name) in [
        ("AUTO_AGENT_SPOOL_DIR", "spool"),
        ("AUTO_AGENT_BUNDLE_DIR", "bundles"),
    ] {
        assert!(volume(controller, volume_name)["emptyDir"].is_object());
        assert_eq!(
            mount(cc, volume_name)["mountPath"].as_str().unwrap(),
            env_value(cc, var)
        );
    }
    let tls = volume(controller, "tls");
    assert_eq!(
        tls["secret"]["secretName"],
        format!("{}-tls", controller_name())
    );
    let tls_dir = mount(cc, "tls")["mountPath"].as_str().unwrap();
    assert_eq!(
        env_value(cc, "AUTO_AGENT_TLS_CERT_FILE"),
        format!("{tls_dir}/tls.crt")
    );
    assert_eq!(
        env_value(cc, "AUTO_AGENT_TLS_KEY_FILE"),
        format!("{tls_dir}/tls.key")
    );
    assert!(!env.contains_key("AUTO_AGENT_PROMETHEUS_URL"));
    assert!(!env.contains_key("AUTO_AGENT_SLACK_WEBHOOK_URL"));

    // The generated certificate serves the name the sensors dial.
    let secret = one(&docs, "Secret", &format!("{}-tls", controller_name()));
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let host = dial
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap();
    assert_tls_secret_serves(secret, host);
    assert_tls_secret_serves(secret, &format!("{host}.cluster.local"));

    // Services: gRPC and metrics on the controller, metrics on the sensors.
    let svc = one(&docs, "Service", &controller_name());
    let ports: BTreeMap<String, Value> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["port"].clone()))
        .collect();
    assert_eq!(ports["grpc"], 9443);
    assert_eq!(ports["metrics"], 8080);
    let sensor_svc = one(&docs, "Service", &format!("{}-metrics", sensor_name()));
    assert_eq!(sensor_svc["spec"]["clusterIP"], "None");
    assert_eq!(sensor_svc["spec"]["ports"][0]["name"], "metrics");

    // RBAC: exactly what the e2e identities are known to need; read-only sensor; no Secrets.
    let crole = one(&docs, "ClusterRole", &controller_name());
    let srole = one(&docs, "ClusterRole", &sensor_name());
    for role in of_kind(&docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(&docs, "Role"))
    {
        assert_no_dangerous_rules(role);
    }
    assert_eq!(triples(crole), expand(CONTROLLER_RULES_KNOWN_TO_WORK));
    assert_eq!(triples(srole), expand(SENSOR_RULES));
    assert!(
        triples(srole)
            .iter()
            .all(|(_, _, verb)| ["get", "list", "watch"].contains(&verb.as_str()))
    );
    let role = one(&docs, "Role", &controller_name());
    assert_eq!(triples(role), expand(CONTROLLER_ROLE_KNOWN_TO_WORK));
    // Reads and updates of the Lease and the ledger are limited to their names. The one rule
    // without names is the spool hand-off's (ConfigMap names are per bundle): list and delete of
    // ConfigMaps, in this namespace only, and never update.
    for rule in role["rules"].as_array().unwrap() {
        if str_list(&rule["verbs"]) == ["list", "delete"] {
            assert_eq!(str_list(&rule["resources"]), ["configmaps"], "{rule}");
            assert!(rule["resourceNames"].is_null(), "{rule}");
            continue;
        }
        if str_list(&rule["verbs"]) != ["create"] {
            let names = str_list(&rule["resourceNames"]);
            assert_eq!(names.len(), 1, "{rule}");
            let var = if rule["resources"][0] == "leases" {
                "AUTO_AGENT_LEASE_NAME"
            } else {
                "AUTO_AGENT_LEDGER_NAME"
            };
            assert_eq!(names[0], env_value(cc, var));
        }
    }
    // Bindings: each ServiceAccount to its own role.
    for (kind, name, role_kind) in [
        ("ClusterRoleBinding", sensor_name(), "ClusterRole"),
        ("ClusterRoleBinding", controller_name(), "ClusterRole"),
        ("RoleBinding", controller_name(), "Role"),
    ] {
        let b = one(&docs, kind, &name);
        assert_eq!(b["roleRef"]["kind"], role_kind);
        assert_eq!(b["roleRef"]["name"], name);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}])
        );
    }
    assert_eq!(
        names_of(&docs, "ServiceAccount"),
        BTreeSet::from([sensor_name(), controller_name()])
    );
    for sa in of_kind(&docs, "ServiceAccount") {
        assert_eq!(sa["automountServiceAccountToken"], false);
    }

    // Nothing optional by default.
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "Certificate").is_empty());
    assert_eq!(of_kind(&docs, "Secret").len(), 1, "only the TLS Secret");
    assert_no_secret_outside_secrets(&docs);
}

#[test]
fn every_feature_renders_and_keeps_secrets_in_secrets() {
    let docs = all_features();
    let sensor = one(&docs, "DaemonSet", "auto-agent-sensor");
    let controller = one(&docs, "Deployment", "auto-agent-controller");
    assert_hardened(sensor);
    assert_hardened(controller);
    for role in of_kind(&docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(&docs, "Role"))
    {
        assert_no_dangerous_rules(role);
    }
    assert_eq!(
        pod_spec(sensor)["priorityClassName"],
        "system-node-critical"
    );
    assert_eq!(
        pod_spec(controller)["priorityClassName"],
        "system-cluster-critical"
    );
    let sc = &pod_spec(sensor)["containers"][0];
    assert!(sc["image"].as_str().unwrap().contains("@sha256:"));
    let token = &volume(sensor, "agent-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "auto-agent-ci");
    assert_eq!(token["expirationSeconds"], 1800);

    // cert-manager issues the certificate; the chart generates none.
    let cert = one(&docs, "Certificate", "auto-agent-controller-tls");
    assert_eq!(cert["spec"]["secretName"], "auto-agent-controller-tls");
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    assert!(
        str_list(&cert["spec"]["dnsNames"])
            .contains(&format!("auto-agent-controller.{NAMESPACE}.svc"))
    );
    assert_eq!(
        names_of(&docs, "Secret"),
        BTreeSet::from(["auto-agent-slack".to_owned()])
    );

    // Slack: a Secret, reaching the controller by secretKeyRef only.
    let cc = &pod_spec(controller)["containers"][0];
    let slack = &env_of(cc)["AUTO_AGENT_SLACK_WEBHOOK_URL"];
    assert!(slack["value"].is_null());
    assert_eq!(
        slack["valueFrom"]["secretKeyRef"],
        json!({"name": "auto-agent-slack", "key": "webhook-url"})
    );
    let url = "https://hooks.slack.com/services/T00000000/B00000000/ci-secret-webhook-token";
    assert!(secret_values(&docs).contains(&url.to_owned()));
    for doc in docs.iter().filter(|d| d["kind"] != "Secret") {
        assert!(
            !serde_json::to_string(doc)
                .unwrap()
                .contains("ci-secret-webhook-token")
        );
    }
    assert_no_secret_outside_secrets(&docs);

    // Evidence and scaling settings reach the controller's flags.
    for (var, value) in [
        ("AUTO_AGENT_BUNDLE_S3_BUCKET", "incident-evidence"),
        ("AUTO_AGENT_BUNDLE_S3_PREFIX", "clusters/ci"),
        ("AUTO_AGENT_S3_REGION", "eu-west-1"),
        (
            "AUTO_AGENT_S3_ENDPOINT_URL",
            "https://s3.eu-west-1.amazonaws.com",
        ),
        ("AUTO_AGENT_S3_FORCE_PATH_STYLE", "true"),
        ("AUTO_AGENT_S3_SSE", "aws:kms"),
        ("AUTO_AGENT_BUNDLE_DURABILITY", "remote"),
        ("AUTO_AGENT_BUNDLE_ALLOWED_ROOTS", "/mnt/efs"),
        ("AUTO_AGENT_SPOOL_MAX_BUNDLES", "500"),
        ("AUTO_AGENT_SPOOL_MAX_BYTES", "134217728"),
        (
            "AUTO_AGENT_PROMETHEUS_URL",
            "http://prometheus-operated.monitoring.svc:9090",
        ),
        ("AUTO_AGENT_PLAIN_HTTP_REGISTRIES", "mirror.local:5000"),
        ("AUTO_AGENT_CLUSTER_RESTARTS_PER_HOUR", "20"),
        (
            "AUTO_AGENT_REGISTRY_AUTH_FILE",
            "/etc/auto-agent/registry/config.json",
        ),
    ] {
        assert_eq!(env_value(cc, var), value, "{var}");
    }
    // Mirror logins: the Secret's .dockerconfigjson as the file the flag names, read-only.
    let logins = volume(controller, "registry-credentials");
    assert_eq!(logins["secret"]["secretName"], "mirror-logins");
    assert_eq!(logins["secret"]["items"][0]["key"], ".dockerconfigjson");
    assert_eq!(logins["secret"]["items"][0]["path"], "config.json");
    let mount = cc["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "registry-credentials")
        .expect("the logins are mounted");
    assert_eq!(mount["mountPath"], "/etc/auto-agent/registry");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        volume(controller, "bundles")["persistentVolumeClaim"]["claimName"],
        "auto-agent-bundles"
    );
    assert_eq!(
        volume(controller, "spool")["persistentVolumeClaim"]["claimName"],
        "auto-agent-spool"
    );
    // IRSA on the controller's ServiceAccount only.
    let csa = one(&docs, "ServiceAccount", "auto-agent-controller");
    assert_eq!(
        csa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/auto-agent-bundles"
    );
    assert!(one(&docs, "ServiceAccount", "auto-agent-sensor")["metadata"]["annotations"].is_null());

    // ServiceMonitors for both, on the Services' metrics ports.
    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2);
    for sm in monitors {
        assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
        assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
        let selected: Vec<&Value> = of_kind(&docs, "Service")
            .into_iter()
            .filter(|svc| {
                sm["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &svc["metadata"]["labels"][k] == v)
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{} selects one Service",
            sm["metadata"]["name"]
        );
        assert!(
            selected[0]["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "metrics")
        );
    }

    // The dashboard ConfigMap carries the dashboard file as it is.
    let cm = one(&docs, "ConfigMap", "auto-agent-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    let shipped: Value =
        serde_json::from_str(cm["data"]["auto-agent.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard());
}

/// The controller's AUTO_AGENT_FEATURES in rendered manifests.
fn features_env(docs: &[Value]) -> String {
    let deployment = one(docs, "Deployment", &controller_name());
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AUTO_AGENT_FEATURES")
        .and_then(|e| e["value"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn turning_a_feature_off_removes_exactly_its_rules() {
    let started = Instant::now();
    let full = triples(one(&render(&[]), "ClusterRole", &controller_name()));
    let cases: &[(&[&str], Rules<'_>)] = &[
        (
            &["features.restart=false"],
            &[
                ("", &["pods"], &["delete"]),
                ("", &["events"], &["list"]),
                ("", &["pods/log"], &["get"]),
            ],
        ),
        (
            &["features.evidenceApiLogs=false"],
            &[("", &["pods/log"], &["get"])],
        ),
        // Both patch the workload: the rule goes only with both.
        (&["features.memoryBump=false"], &[]),
        (&["features.mirrorImage=false"], &[]),
        (
            &["features.memoryBump=false", "features.mirrorImage=false"],
            &[(
                "apps",
                &["deployments", "statefulsets", "daemonsets"],
                &["patch"],
            )],
        ),
        (
            &["features.nodeRemediation=false"],
            &[
                ("", &["nodes"], &["patch"]),
                ("", &["pods"], &["list"]),
                ("", &["pods/eviction"], &["create"]),
            ],
        ),
        (
            &["features.scaling=false"],
            &[
                (
                    "apps",
                    &["deployments/scale", "statefulsets/scale"],
                    &["get", "patch"],
                ),
                ("autoscaling", &["horizontalpodautoscalers"], &["list"]),
            ],
        ),
    ];
    for (sets, removed) in cases {
        let mut extra = Vec::new();
        for s in *sets {
            extra.extend(["--set", s]);
        }
        let docs = render(&extra);
        let rules = triples(one(&docs, "ClusterRole", &controller_name()));
        let gone: BTreeSet<Triple> = full.difference(&rules).cloned().collect();
        assert_eq!(gone, expand(removed), "{sets:?}");
        assert!(rules.is_subset(&full), "{sets:?} adds nothing");
        // The controller is told, so it refuses the action up front instead of meeting a 403.
        let env = features_env(&docs);
        for s in *sets {
            let feature = s.trim_start_matches("features.").trim_end_matches("=false");
            if feature != "evidenceApiLogs" {
                assert!(!env.split(',').any(|f| f == feature), "{sets:?}: {env}");
            }
        }
        // The sensor and the namespaced Role do not depend on features.
        assert_eq!(
            triples(one(&docs, "ClusterRole", &sensor_name())),
            expand(SENSOR_RULES)
        );
        assert_eq!(
            triples(one(&docs, "Role", &controller_name())),
            expand(CONTROLLER_ROLE_KNOWN_TO_WORK)
        );
    }
    // Everything off: what ingest, decisions, status and Events need, all read-only but Events,
    // status and TokenReviews.
    let docs = render(&[
        "--set",
        "features.restart=false,features.memoryBump=false,features.mirrorImage=false,features.nodeRemediation=false,features.scaling=false,features.evidenceApiLogs=false",
    ]);
    assert_eq!(features_env(&docs), "");
    assert_eq!(
        features_env(&render(&[])),
        "restart,memoryBump,mirrorImage,nodeRemediation,scaling"
    );
    let core = triples(one(&docs, "ClusterRole", &controller_name()));
    let writes: BTreeSet<Triple> = core
        .iter()
        .filter(|(_, _, verb)| !["get", "list", "watch"].contains(&verb.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        writes,
        expand(&[
            ("authentication.k8s.io", &["tokenreviews"], &["create"]),
            (
                "autoagent.io",
                &["autoremediationpolicies/status"],
                &["patch", "update"],
            ),
            ("events.k8s.io", &["events"], &["create", "patch"]),
        ])
    );
    println!("feature toggles: {:?}", started.elapsed());
}

#[test]
fn tls_comes_from_exactly_one_source() {
    // An existing Secret: used by both pods, nothing generated.
    let docs = render(&["--set", "tls.existingSecret=my-tls"]);
    assert!(of_kind(&docs, "Secret").is_empty());
    assert!(of_kind(&docs, "Certificate").is_empty());
    assert_eq!(
        volume(one(&docs, "Deployment", &controller_name()), "tls")["secret"]["secretName"],
        "my-tls"
    );
    assert_eq!(
        volume(one(&docs, "DaemonSet", &sensor_name()), "controller-ca")["secret"]["secretName"],
        "my-tls"
    );
    // Two sources, or cert-manager without an issuer, are refused.
    for extra in [
        &[
            "--set",
            "tls.existingSecret=my-tls",
            "--set",
            "tls.certManager.enabled=true",
            "--set",
            "tls.certManager.issuerRef.name=ca",
        ][..],
        &["--set", "tls.certManager.enabled=true"][..],
    ] {
        assert!(
            helm().template(RELEASE, NAMESPACE, extra).is_err(),
            "{extra:?}"
        );
    }
    // The generated certificate follows the release's names.
    let docs = render_as("edge", "ops", &[]);
    let secret = one(&docs, "Secret", "edge-auto-agent-controller-tls");
    assert_tls_secret_serves(secret, "edge-auto-agent-controller.ops.svc");
}

#[test]
fn resource_names_follow_the_fullname_rule() {
    for (release, extra) in [
        ("auto-agent", vec![]),
        ("aa", vec![]),
        ("auto-agent-e2e-123", vec![]),
        ("prod-auto-agent", vec![]),
    ] {
        let docs = render_as(release, "ns1", &extra);
        let full = helm::fullname(release);
        assert_eq!(
            names_of(&docs, "ServiceAccount"),
            BTreeSet::from([format!("{full}-sensor"), format!("{full}-controller")]),
            "{release}"
        );
        assert_eq!(
            names_of(&docs, "ClusterRole"),
            BTreeSet::from([format!("{full}-sensor"), format!("{full}-controller")]),
        );
    }
    let docs = render_as("x", "ns1", &["--set", "fullnameOverride=agent"]);
    assert_eq!(
        names_of(&docs, "ServiceAccount"),
        BTreeSet::from(["agent-sensor".to_owned(), "agent-controller".to_owned()])
    );
    // With the release named like the chart, the names are the binaries' own defaults.
    let docs = render(&[]);
    let cc = &pod_spec(one(&docs, "Deployment", "auto-agent-controller"))["containers"][0];
    assert_eq!(
        env_value(cc, "AUTO_AGENT_LEASE_NAME"),
        "auto-agent-controller"
    );
    assert_eq!(env_value(cc, "AUTO_AGENT_LEDGER_NAME"), "auto-agent-ledger");
    assert_eq!(
        env_value(cc, "AUTO_AGENT_SENSOR_SERVICE_ACCOUNT"),
        "auto-agent/auto-agent-sensor"
    );
}

// ------------------------------------------------------------------------------------------------
// Dockerfiles, binaries and chart agree

/// A Dockerfile's instructions: (INSTRUCTION, arguments), continuation lines joined.
fn dockerfile(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join(name)).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instr, args) = current.split_once(' ').unwrap();
        out.push((instr.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

fn args_of<'a>(instructions: &'a [(String, String)], instr: &str) -> Vec<&'a str> {
    instructions
        .iter()
        .filter(|(i, _)| i == instr)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// `KEY="value"` pairs of LABEL instructions.
fn labels(instructions: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for args in args_of(instructions, "LABEL") {
        let mut rest = args.trim();
        while let Some((key, tail)) = rest.split_once("=\"") {
            let (value, after) = tail.split_once('"').unwrap();
            out.insert(key.trim().to_owned(), value.to_owned());
            rest = after.trim();
        }
    }
    out
}

/// `cargo metadata` of the workspace, with `--locked`: fails when Cargo.lock is stale, as the
/// Dockerfiles' `--locked` builds would.
fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--locked",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata --locked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The binary's `--help`, with a clean environment so no flag shows a value from this process.
fn help_of(binary: &Path) -> String {
    let out = Command::new(binary)
        .env_clear()
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The env names of every flag, and each flag's default, from `--help`.
fn flags_of(help: &str) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for line in help.lines() {
        if let Some((_, rest)) = line.split_once("[env: ") {
            let name = rest.split('=').next().unwrap().to_owned();
            let default = line
                .split_once("[default: ")
                .map(|(_, d)| d.split(']').next().unwrap().to_owned());
            out.insert(name, default);
        }
    }
    out
}

/// `repository` of `[workspace.package]` in the root Cargo.toml (the binaries' crates do not
/// inherit it, so cargo metadata does not show it).
fn workspace_repository() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let section = manifest.split("[workspace.package]").nth(1).unwrap();
    let line = section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find(|l| l.starts_with("repository"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn dockerfiles_match_the_chart_and_the_binaries() {
    let started = Instant::now();
    let metadata = cargo_metadata();
    let workspace_root = PathBuf::from(metadata["workspace_root"].as_str().unwrap());
    let packages = metadata["packages"].as_array().unwrap();
    let package = |name: &str| packages.iter().find(|p| p["name"] == name).unwrap();
    let chart: Value = serde_json::to_value(
        serde_norway::from_str::<serde_norway::Value>(
            &std::fs::read_to_string(helm::chart_dir().join("Chart.yaml")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let values: Value = serde_json::to_value(
        serde_norway::from_str::<serde_norway::Value>(
            &std::fs::read_to_string(helm::chart_dir().join("values.yaml")).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let defaults = render(&[]);
    let all = all_features();

    // Every workspace member's manifest is in the dependency layer, or `cargo fetch --locked`
    // would fail on the missing member.
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| {
            Path::new(p["manifest_path"].as_str().unwrap())
                .strip_prefix(&workspace_root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let dockerignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    assert!(dockerignore.lines().any(|l| l.trim() == "target/"));

    for (component, pkg_name, workload_kind) in [
        ("sensor", "auto-agent-sensor", "DaemonSet"),
        ("controller", "auto-agent-controller", "Deployment"),
    ] {
        let file = format!("Dockerfile.{component}");
        let d = dockerfile(&file);
        let pkg = package(pkg_name);
        let bins: Vec<&str> = pkg["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(bins.len(), 1, "{pkg_name} has one binary");
        let bin = bins[0];
        let installed = format!("/usr/local/bin/{bin}");

        // Builder: the toolchain the workspace asks for, protoc, the locked release build.
        let arg_defaults: BTreeMap<&str, &str> = args_of(&d, "ARG")
            .into_iter()
            .filter_map(|a| a.split_once('='))
            .collect();
        let froms = args_of(&d, "FROM");
        assert_eq!(froms.len(), 2, "{file}: builder and runtime stages");
        let rust_version = pkg["rust_version"].as_str().unwrap();
        assert_eq!(arg_defaults["RUST_VERSION"], rust_version, "{file}");
        assert_eq!(
            froms[0], "rust:${RUST_VERSION}-bookworm AS builder",
            "{file}"
        );
        assert_eq!(froms[1], "gcr.io/distroless/cc-debian12:nonroot", "{file}");
        let runs = args_of(&d, "RUN").join("\n");
        assert!(runs.contains("apt-get install -y --no-install-recommends protobuf-compiler"));
        assert!(
            runs.contains("cargo fetch --locked"),
            "{file}: dependency layer"
        );
        assert!(
            runs.contains(&format!("cargo build --release --locked -p {pkg_name}")),
            "{file}: the locked release build of {pkg_name}"
        );
        // No engine here: `make test` (CI) runs that very build step natively.
        let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
        let release_recipe: String = makefile
            .split("\nrelease:")
            .nth(1)
            .expect("a release target in the Makefile")
            .lines()
            .take_while(|l| l.starts_with('\t') || l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let step = format!("$(CARGO) build --release --locked -p {pkg_name}");
        assert!(
            release_recipe.lines().any(|l| l.trim() == step),
            "the Makefile's release target builds {pkg_name} as {file} does:\n{release_recipe}"
        );
        assert!(
            makefile
                .lines()
                .any(|l| l.starts_with("test:") && l.split_whitespace().any(|w| w == "release")),
            "make test runs the release build"
        );
        let copies = args_of(&d, "COPY");
        for member in &members {
            let dir = Path::new(member).parent().unwrap().to_string_lossy();
            let expected = if dir.is_empty() {
                "Cargo.toml Cargo.lock ./".to_owned()
            } else {
                format!("{member} {dir}/")
            };
            assert!(
                copies.contains(&expected.as_str()),
                "{file}: the dependency layer copies {member}"
            );
        }
        assert!(copies.contains(&format!("--from=builder /out/{bin} {installed}").as_str()));

        // Runtime: the non-root user the chart runs as, the entrypoint, labels, ports.
        let user = args_of(&d, "USER");
        let sc = &values[component]["securityContext"];
        assert_eq!(
            user,
            vec![format!("{}:{}", sc["runAsUser"], sc["runAsGroup"])],
            "{file}"
        );
        assert_eq!(
            args_of(&d, "ENTRYPOINT"),
            vec![format!("[\"{installed}\"]")],
            "{file}"
        );
        let l = labels(&d);
        assert_eq!(l["org.opencontainers.image.title"], bin);
        assert_eq!(l["org.opencontainers.image.source"], workspace_repository());
        assert_eq!(l["org.opencontainers.image.licenses"], pkg["license"]);
        assert_eq!(l["org.opencontainers.image.version"], "${VERSION}");
        assert_eq!(arg_defaults["VERSION"], pkg["version"]);
        assert_eq!(chart["appVersion"], pkg["version"], "Chart appVersion");
        assert!(
            values[component]["image"]["repository"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{bin}")),
            "the chart's image is built from {file}"
        );
        let exposed: BTreeSet<u16> = args_of(&d, "EXPOSE")
            .iter()
            .flat_map(|a| a.split_whitespace())
            .map(|p| p.parse().unwrap())
            .collect();

        // The binary's own defaults.
        let binary = auto_agent_e2e::process::binary(bin, false).unwrap();
        let flags = flags_of(&help_of(&binary));
        let mut default_ports = BTreeSet::new();
        for var in ["AUTO_AGENT_ADMIN_ADDR", "AUTO_AGENT_GRPC_ADDR"] {
            if let Some(default) = flags.get(var) {
                default_ports.insert(port_of(default.as_deref().unwrap()));
            }
        }
        assert_eq!(
            exposed, default_ports,
            "{file}: EXPOSE == the binary's default ports"
        );

        for docs in [&defaults, &all] {
            let workload = of_kind(docs, workload_kind)[0];
            let container = &pod_spec(workload)["containers"][0];
            // The chart runs the image's entrypoint.
            if !container["command"].is_null() {
                assert_eq!(str_list(&container["command"]), vec![installed.clone()]);
            }
            assert!(
                container["args"].is_null(),
                "configuration goes by env, not args"
            );
            let ports: BTreeSet<u16> = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["containerPort"].as_u64().unwrap() as u16)
                .collect();
            assert_eq!(ports, exposed, "{workload_kind}: container ports == EXPOSE");
            // Every variable the chart sets is one of the binary's flags (Slack is wired ahead of
            // its flag; POD_IP only feeds $(POD_IP) in AUTO_AGENT_GRPC_ADVERTISE).
            for name in env_of(container).keys() {
                if name == "POD_IP"
                    || name == "AUTO_AGENT_SLACK_WEBHOOK_URL"
                    || name == "AWS_REGION"
                    || name == "RUST_BACKTRACE"
                {
                    continue;
                }
                assert!(flags.contains_key(name), "{bin} has no flag for {name}");
            }
            // ... with values the binary accepts: clap parses them all (exit 2 is a usage
            // error); it then fails on the kubeconfig that does not exist, as intended.
            let mut cmd = Command::new(&binary);
            cmd.env_clear().env("KUBECONFIG", "/nonexistent/kubeconfig");
            for (name, e) in env_of(container) {
                let value = match e["value"].as_str() {
                    Some(v) => v.replace("$(POD_IP)", "10.0.0.7"),
                    None => "from-the-downward-api-or-a-secret".to_owned(),
                };
                cmd.env(name, value);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_ne!(
                out.status.code(),
                Some(2),
                "{bin} rejects the chart's env: {stderr}"
            );
            assert!(!out.status.success());
            assert!(
                stderr.contains("/nonexistent/kubeconfig"),
                "{bin}: {stderr}"
            );
        }
    }
    println!("dockerfiles and binaries: {:?}", started.elapsed());
}

// ------------------------------------------------------------------------------------------------
// Grafana dashboard

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(helm::chart_dir().join("dashboards/auto-agent.json")).unwrap(),
    )
    .unwrap()
}

/// Metric names the code registers: string literals `"auto_agent_..."` and the sensor's
/// `format!("{p}_...")` with its prefix, plus the prometheus crate's process collector.
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let literal = |text: &str, prefix: &str, out: &mut BTreeSet<String>| {
        for piece in text.split('"').skip(1).step_by(2) {
            if let Some(rest) = piece.strip_prefix(prefix)
                && rest
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                out.insert(piece.to_owned());
            }
        }
    };
    for file in ["controller/src/metrics.rs", "evidence/src/keeper.rs"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        literal(&text, "auto_agent_", &mut names);
    }
    let sensor = std::fs::read_to_string(repo_root().join("sensor/src/metrics.rs")).unwrap();
    assert!(sensor.contains("let p = \"auto_agent_sensor\";"));
    for piece in sensor.split("format!(\"{p}").skip(1) {
        let suffix = piece.split('"').next().unwrap();
        names.insert(format!("auto_agent_sensor{suffix}"));
    }
    // prometheus::process_collector::ProcessCollector (registered by shared/src/runtime/metrics.rs).
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_threads",
    ] {
        names.insert(name.to_owned());
    }
    names
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .expect("`promtool` is not installed; run `make setup` (Debian's prometheus package)")
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_metrics() {
    let started = Instant::now();
    let d = dashboard();
    assert_eq!(d["uid"], "auto-agent");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "unique panel ids"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert!(
            panel["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            exprs.push((title.to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
    }

    // promtool parses and type-checks every query as a recording rule (Grafana's interval
    // variables replaced by durations, as Grafana does before sending them).
    let rules = json!({"groups": [{"name": "dashboard", "rules": exprs.iter().enumerate().map(|(i, (_, e))| json!({
        "record": format!("dashboard:query_{i}"),
        "expr": e.replace("$__rate_interval", "2m").replace("$__interval", "1m").replace("$__range", "1h"),
    })).collect::<Vec<_>>()}]});
    let file =
        std::env::temp_dir().join(format!("chart-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&file, serde_json::to_string_pretty(&rules).unwrap()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file).unwrap();
    assert!(out.status.success(), "promtool check rules:\n{report}");
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{report}"
    );

    // Only metrics the code exports.
    let exported = exported_metrics();
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if !(token.starts_with("auto_agent_") || token.starts_with("process_")) {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| token.strip_suffix(s))
                .filter(|b| !exported.contains(token) && exported.contains(*b))
                .unwrap_or(token);
            assert!(
                exported.contains(base),
                "{title}: {token} is not exported by the code"
            );
            used.insert(token.to_owned());
        }
    }
    // The panels the issue asks for.
    for needed in [
        "auto_agent_actions_total",
        "auto_agent_incidents_total",
        "auto_agent_findings_received_total",
        "auto_agent_sensor_findings_total",
        "auto_agent_decision_latency_seconds_bucket",
        "auto_agent_decisions_total",
        "auto_agent_leader",
        "auto_agent_sensor_queue_depth",
        "auto_agent_sensor_stream_reconnects_total",
        "process_resident_memory_bytes",
        "auto_agent_bundles_written_total",
        "auto_agent_bundles_spooled_total",
        "auto_agent_bundle_spool_entries",
        "auto_agent_scale_decisions_total",
        "auto_agent_prometheus_queries_total",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    assert!(all.contains("histogram_quantile("));
    assert!(all.contains(r#"auto_agent_decisions_total{outcome="refused"}"#));
    assert!(all.contains(r#"reason="BudgetExhausted""#));
    println!(
        "dashboard: {} queries over {} metrics checked in {:?}",
        exprs.len(),
        used.len(),
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------------
// The real control plane

fn assert_status(result: Result<impl std::fmt::Debug, kube::Error>, code: u16, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, code, "{what}: {status:?}"),
        other => panic!("{what}: expected {code}, got {other:?}"),
    }
}

async fn client_with_token(cluster: &Cluster, token: String) -> Client {
    let mut config = cluster.admin_config().await.unwrap();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn installs_into_the_real_cluster_with_least_privilege_identities() {
    let cluster = Cluster::get().unwrap();
    let admin = cluster.admin().await.unwrap();
    let ns = TestNamespace::create(&cluster, "chart").await.unwrap();
    let release = ChartRelease::release_name("chart");
    let started = Instant::now();
    let chart = ChartRelease::install(&cluster, &release, &ns.name, &[]).unwrap();
    println!(
        "helm install {release} -n {}: {:?}",
        ns.name,
        started.elapsed()
    );
    assert_eq!(chart.fullname, release, "the release name is the fullname");
    let sensor_sa = chart.sensor_service_account();
    let controller_sa = chart.controller_service_account();

    // A sensor on every node, both controllers Running (KWOK runs pods without images).
    let nodes: Vec<String> = Api::<Node>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(nodes.len() >= 3, "{nodes:?}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns.name);
    let running = |selector: String| {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels(&selector)).await?;
            Ok::<_, anyhow::Error>(
                list.items
                    .into_iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.spec.and_then(|s| s.node_name))
                    .collect::<Vec<String>>(),
            )
        }
    };
    let wait = Instant::now();
    poll_until(
        "a Running sensor on every node",
        Duration::from_secs(120),
        || {
            let running = running(chart.selector("sensor"));
            let nodes = nodes.clone();
            async move {
                let on: BTreeSet<String> = running.await?.into_iter().collect();
                Ok(nodes.iter().all(|n| on.contains(n)))
            }
        },
    )
    .await
    .unwrap();
    let sensors = running(chart.selector("sensor")).await.unwrap();
    assert_eq!(
        sensors.len(),
        nodes.len(),
        "one sensor per node: {sensors:?}"
    );
    println!(
        "sensors Running on {} nodes: {:?}",
        nodes.len(),
        wait.elapsed()
    );
    poll_until("both controllers Running", Duration::from_secs(120), || {
        let running = running(chart.selector("controller"));
        async move { Ok(running.await?.len() == 2) }
    })
    .await
    .unwrap();
    println!(
        "controllers Running on {:?}: {:?}",
        running(chart.selector("controller")).await.unwrap(),
        wait.elapsed()
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns.name)
        .get(&controller_sa)
        .await
        .unwrap();
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // The generated TLS Secret survives an upgrade unchanged (lookup keeps it).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns.name);
    let before = secrets
        .get(&chart.tls_secret_name())
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        before.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ca.crt".to_owned(),
            "tls.crt".to_owned(),
            "tls.key".to_owned()
        ])
    );
    let upgrade = Instant::now();
    chart.upgrade(&["--reuse-values"]).unwrap();
    let after = secrets
        .get(&chart.tls_secret_name())
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        before, after,
        "helm upgrade keeps the generated certificate"
    );
    println!("helm upgrade kept the certificate: {:?}", upgrade.elapsed());

    // Tokens of the chart's ServiceAccounts (TokenRequest) against the real API server.
    let rbac = Instant::now();
    let sensor = cluster.client_as(&ns.name, &sensor_sa).await.unwrap();
    let controller = cluster.client_as(&ns.name, &controller_sa).await.unwrap();
    let node = &nodes[0];
    let controller_pod = pods
        .list(&ListParams::default().labels(&chart.selector("controller")))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();

    // The sensor reads its node's pods and its Node ...
    Api::<Pod>::all(sensor.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap();
    Api::<Node>::all(sensor.clone()).get(node).await.unwrap();
    // ... and writes nothing, reads no Secret.
    assert_status(
        Api::<Pod>::namespaced(sensor.clone(), &ns.name)
            .delete(&controller_pod, &DeleteParams::default())
            .await,
        403,
        "sensor deletes a pod",
    );
    assert_status(
        Api::<Node>::all(sensor.clone())
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"chart-e2e": "x"}}})),
            )
            .await,
        403,
        "sensor patches a node",
    );
    assert_status(
        Api::<Secret>::namespaced(sensor.clone(), &ns.name)
            .list(&ListParams::default())
            .await,
        403,
        "sensor lists Secrets",
    );

    // The controller reviews the sensor's agent token, bound to the DaemonSet pod on `node`: the
    // audience, the ServiceAccount and the node all come out as the controller expects.
    let (pod_name, pod_uid) = chart.sensor_pod_on(&cluster, node).await.unwrap();
    let agent_token = cluster
        .bound_token(
            &ns.name,
            &sensor_sa,
            &["auto-agent"],
            (pod_name.as_str(), pod_uid.as_str()),
        )
        .await
        .unwrap();
    let review = Api::<TokenReview>::all(controller.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: agent_token.clone(),
                    audiences: Some(vec!["auto-agent".into()]),
                },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(review.authenticated, Some(true), "{review:?}");
    let user = review.user.unwrap();
    assert_eq!(
        user.username.unwrap(),
        format!("system:serviceaccount:{}:{sensor_sa}", ns.name)
    );
    assert_eq!(
        user.extra.unwrap()["authentication.kubernetes.io/node-name"],
        vec![node.clone()]
    );
    // That token is useless against the API itself (wrong audience).
    let agent_client = client_with_token(&cluster, agent_token).await;
    assert_status(
        Api::<Pod>::namespaced(agent_client, &ns.name)
            .list(&ListParams::default())
            .await,
        401,
        "the agent token against the API",
    );

    // The controller: what its features use ...
    Api::<Node>::all(controller.clone())
        .patch(
            node,
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), &ns.name)
            .get(&chart.ledger_name())
            .await,
        404,
        "controller reads its ledger (allowed, not created yet)",
    );
    assert_status(
        Api::<Lease>::namespaced(controller.clone(), &ns.name)
            .get(&chart.lease_name())
            .await,
        404,
        "controller reads its Lease (allowed, not created yet)",
    );
    // ... and no Secret anywhere, nothing beyond its names in its namespace.
    assert_status(
        Api::<Secret>::namespaced(controller.clone(), "default")
            .get("anything")
            .await,
        403,
        "controller reads a Secret in another namespace",
    );
    assert_status(
        Api::<Secret>::all(controller.clone())
            .list(&ListParams::default())
            .await,
        403,
        "controller lists Secrets cluster-wide",
    );
    assert_status(
        Api::<Secret>::namespaced(controller.clone(), &ns.name)
            .get(&chart.tls_secret_name())
            .await,
        403,
        "controller reads its own TLS Secret through the API",
    );
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), &ns.name)
            .get("kube-root-ca.crt")
            .await,
        403,
        "controller reads another ConfigMap",
    );
    assert_status(
        Api::<ConfigMap>::namespaced(controller.clone(), "default")
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
            )
            .await,
        403,
        "controller creates a ConfigMap in another namespace",
    );
    assert_status(
        Api::<Node>::all(controller.clone())
            .delete(node, &DeleteParams::default().dry_run())
            .await,
        403,
        "controller deletes a node",
    );
    println!("RBAC through the chart's tokens: {:?}", rbac.elapsed());

    // Uninstall removes the cluster-scoped RBAC; then the namespace goes.
    let cleanup = Instant::now();
    chart.uninstall().unwrap();
    for name in [&sensor_sa, &controller_sa] {
        assert_status(
            Api::<ClusterRole>::all(admin.clone()).get(name).await,
            404,
            "ClusterRole after uninstall",
        );
    }
    ns.delete(admin).await.unwrap();
    println!("uninstall and namespace deletion: {:?}", cleanup.elapsed());
    println!("install test total: {:?}", started.elapsed());
}
