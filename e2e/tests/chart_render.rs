#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Helm chart (`charts/auto-agent`) as `helm lint` and `helm template` see it: the schema
//! refuses bad values, the rendered manifests are hardened, RBAC is least-privilege and exactly what
//! each feature needs, no secret leaves a Secret, TLS comes from exactly one source and serves the
//! name the sensors dial, and resource names follow the fullname rule.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Instant;

use auto_agent_e2e::helm::{self, Helm};
use auto_agent_e2e::manifests::{
    CI_VALUES, NAMESPACE, RELEASE, all_features, containers, dashboard, env_of, env_value, mount,
    names_of, of_kind, one, parse_documents, pod_spec, render, render_as, str_list, volume,
};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------------
// Rendering helpers

fn helm() -> Helm {
    Helm::new().unwrap()
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
        &[
            "autoremediationpolicies/status",
            "noderemediationpolicies/status",
        ],
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
    // Group 0 only where the kubelet's root:root 0640 log files must be read (the sensor's
    // read-only hostPath; e2e/tests/real_node.rs), nowhere else.
    let groups: Vec<i64> = pod_sc["supplementalGroups"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    if name.ends_with("-sensor") {
        assert_eq!(groups, vec![0], "{name}: supplementalGroups");
    } else {
        assert!(groups.is_empty(), "{name}: supplementalGroups {groups:?}");
    }
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
        json!({"cpu": "10m", "memory": "20Mi", "ephemeral-storage": "16Mi"})
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "200m", "memory": "64Mi", "ephemeral-storage": "64Mi"})
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
    // Reads and updates of the Lease and the ledger are limited to their names. The rules
    // without names are the spool hand-off's (ConfigMap names are per bundle: list and delete)
    // and the escalation records' (names are per incident key: update), on ConfigMaps in this
    // namespace only; never get.
    for rule in role["rules"].as_array().unwrap() {
        let verbs = str_list(&rule["verbs"]);
        if verbs == ["list", "delete"] || (verbs == ["update"] && rule["resourceNames"].is_null()) {
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
        ["gitea", "github", "gitlab", "jira", "llm", "slack"]
            .iter()
            .map(|s| format!("auto-agent-{s}"))
            .collect::<BTreeSet<_>>()
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
        (
            "AUTO_AGENT_CLUSTER_BUDGETS",
            "RestartPod=20/3600,UncordonNode=5/604800",
        ),
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
                &[
                    "autoremediationpolicies/status",
                    "noderemediationpolicies/status"
                ],
                &["patch", "update"],
            ),
            ("events.k8s.io", &["events"], &["create", "patch"]),
        ])
    );
    println!("feature toggles: {:?}", started.elapsed());
}

/// The sensor gets the CA of the TLS Secret and nothing else of it: exactly one volume names the
/// Secret (directly or projected), it lists the CA key as its only item (never the whole Secret),
/// and nothing in the DaemonSet mentions the key file.
fn assert_sensor_gets_only_the_ca(docs: &[Value], secret: &str, ca_key: &str) {
    let sensor = one(docs, "DaemonSet", &sensor_name());
    let mut sources = Vec::new();
    for v in pod_spec(sensor)["volumes"].as_array().unwrap() {
        if v["secret"]["secretName"] == secret {
            sources.push(&v["secret"]);
        }
        for p in v["projected"]["sources"].as_array().into_iter().flatten() {
            if p["secret"]["name"] == secret {
                sources.push(&p["secret"]);
            }
        }
    }
    assert_eq!(sources.len(), 1, "{secret}: {sources:?}");
    let keys: Vec<&str> = sources[0]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{secret} mounted whole in the sensor"))
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec![ca_key], "{secret}");
    assert!(!sensor.to_string().contains("tls.key"), "{secret}");
}

#[test]
fn the_sensor_never_mounts_the_server_key() {
    let generated = format!("{}-tls", controller_name());
    let cases: [(&[&str], &str, &str); 4] = [
        (&[], &generated, "ca.crt"),
        (&["--set", "tls.existingSecret=my-tls"], "my-tls", "ca.crt"),
        (
            &[
                "--set",
                "tls.existingSecret=my-tls",
                "--set",
                "tls.caKey=bundle.pem",
            ],
            "my-tls",
            "bundle.pem",
        ),
        (
            &[
                "--set",
                "tls.certManager.enabled=true",
                "--set",
                "tls.certManager.issuerRef.name=ca",
            ],
            &generated,
            "ca.crt",
        ),
    ];
    for (extra, secret, ca_key) in cases {
        assert_sensor_gets_only_the_ca(&render(extra), secret, ca_key);
    }
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
// Values: the seed chart's names, cluster-wide budgets

/// The seed chart's `logs:` block, and the same store with the chart's own `evidence.s3` names.
const SEED_LOGS_VALUES: &str = "e2e/fixtures/chart/seed-logs-values.yaml";
const EVIDENCE_S3_VALUES: &str = "e2e/fixtures/chart/evidence-s3-values.yaml";

/// The controller container of rendered manifests.
fn controller_container(docs: &[Value]) -> &Value {
    &pod_spec(one(docs, "Deployment", &controller_name()))["containers"][0]
}

/// The controller's env variables for evidence bundles (AUTO_AGENT_BUNDLE_*, AUTO_AGENT_S3_*,
/// AUTO_AGENT_SPOOL_*), by name.
fn evidence_env(docs: &[Value]) -> BTreeMap<String, Value> {
    env_of(controller_container(docs))
        .into_iter()
        .filter(|(name, _)| {
            ["AUTO_AGENT_BUNDLE_", "AUTO_AGENT_S3_", "AUTO_AGENT_SPOOL_"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .collect()
}

/// NOTES.txt rendered with `extra` values, without a cluster (`helm install --dry-run` wants one):
/// a copy of the chart in which a ConfigMap template renders NOTES.txt with `tpl`, the same
/// engine, values and helpers.
fn notes(extra: &[&str]) -> String {
    let copy = std::env::temp_dir().join(format!("chart-notes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let status = Command::new("cp")
        .arg("-r")
        .arg(helm::chart_dir())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(copy.join("templates/NOTES.txt"), copy.join("notes.txt")).unwrap();
    std::fs::write(
        copy.join("templates/notes-under-test.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n\
         data:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let mut args = vec![
        "template",
        RELEASE,
        copy.to_str().unwrap(),
        "-n",
        NAMESPACE,
        "--show-only",
        "templates/notes-under-test.yaml",
    ];
    args.extend_from_slice(extra);
    let out = helm().run(&args).unwrap().ok("helm template (NOTES)");
    std::fs::remove_dir_all(&copy).unwrap();
    let docs = parse_documents(&out.unwrap());
    one(&docs, "ConfigMap", "notes")["data"]["notes"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn seed_logs_values_render_the_same_s3_evidence_settings() {
    let seed = render(&["--values", SEED_LOGS_VALUES]);
    let evidence = render(&["--values", EVIDENCE_S3_VALUES]);
    let seed_env = evidence_env(&seed);
    assert_eq!(
        env_value(controller_container(&seed), "AUTO_AGENT_BUNDLE_S3_BUCKET"),
        "my-bucket"
    );
    assert_eq!(
        env_value(controller_container(&seed), "AUTO_AGENT_BUNDLE_S3_PREFIX"),
        "auto-agent/"
    );
    assert_eq!(seed_env, evidence_env(&evidence), "logs.* == evidence.s3.*");
    // Nothing else differs either: the whole controller Deployment is the same.
    assert_eq!(
        one(&seed, "Deployment", &controller_name()),
        one(&evidence, "Deployment", &controller_name())
    );
    // Without either, no S3 store.
    let defaults = evidence_env(&render(&[]));
    assert!(
        !defaults.contains_key("AUTO_AGENT_BUNDLE_S3_BUCKET"),
        "{defaults:?}"
    );
    assert!(
        !defaults.contains_key("AUTO_AGENT_BUNDLE_S3_PREFIX"),
        "{defaults:?}"
    );

    // evidence.* wins where both are set, field by field.
    for (evidence_values, prefix) in [
        ("evidence.s3.bucket=evidence-bucket", "auto-agent/"),
        (
            "evidence.s3.bucket=evidence-bucket,evidence.s3.prefix=evidence/",
            "evidence/",
        ),
    ] {
        let both = render(&["--values", SEED_LOGS_VALUES, "--set", evidence_values]);
        let c = controller_container(&both);
        assert_eq!(
            env_value(c, "AUTO_AGENT_BUNDLE_S3_BUCKET"),
            "evidence-bucket"
        );
        assert_eq!(env_value(c, "AUTO_AGENT_BUNDLE_S3_PREFIX"), prefix);
    }

    // The seed's filesystem stores: bundles go to evidence.bundleDir, its s3 block is not a store.
    for store in ["efs", "filesystem"] {
        let docs = render(&[
            "--values",
            SEED_LOGS_VALUES,
            "--set",
            &format!("logs.store={store}"),
        ]);
        let env = evidence_env(&docs);
        assert!(
            !env.contains_key("AUTO_AGENT_BUNDLE_S3_BUCKET"),
            "{store}: {env:?}"
        );
        assert_eq!(
            env["AUTO_AGENT_BUNDLE_DIR"],
            defaults["AUTO_AGENT_BUNDLE_DIR"]
        );
    }
    // store s3 without a bucket anywhere is refused; the schema knows the seed's names only.
    let err = helm()
        .template(RELEASE, NAMESPACE, &["--set", "logs.store=s3"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("logs.store s3 needs a bucket"), "{err}");
    for bad in [
        "logs.store=gcs",
        "logs.s3.region=eu-west-1",
        "logs.bucket=x",
    ] {
        let out = helm().lint(&["--set", bad]).unwrap();
        assert!(!out.success, "--set {bad} must fail the lint");
    }

    // NOTES point seed users to the preferred names, and only them.
    let seed_notes = notes(&["--values", SEED_LOGS_VALUES]);
    assert!(
        seed_notes.contains("evidence.* is the preferred name"),
        "{seed_notes}"
    );
    assert!(
        seed_notes.contains("s3://my-bucket/auto-agent/"),
        "{seed_notes}"
    );
    let evidence_notes = notes(&["--values", EVIDENCE_S3_VALUES]);
    assert!(
        !evidence_notes.contains("preferred name"),
        "{evidence_notes}"
    );
}

#[test]
fn security_allowlists_reach_the_controller_env_and_default_to_none() {
    const MIRRORS: &str = "AUTO_AGENT_ALLOWED_MIRROR_REGISTRIES";
    const BUCKETS: &str = "AUTO_AGENT_BUNDLE_ALLOWED_BUCKETS";
    // By default no mirror may be named, and no bucket but the chart's own default.
    let defaults = render(&[]);
    let env = env_of(controller_container(&defaults));
    assert!(!env.contains_key(MIRRORS), "{env:?}");
    assert!(!env.contains_key(BUCKETS), "{env:?}");

    let docs = render(&[
        "--set-json",
        r#"security.allowedMirrorRegistries=["harbor.example.com/dockerhub","mirror.local:5000","auth.docker.io"]"#,
        "--set-json",
        r#"security.allowedBuckets=["team-a-evidence","team-b-evidence"]"#,
        "--set",
        "evidence.s3.bucket=platform-evidence",
    ]);
    let c = controller_container(&docs);
    assert_eq!(
        env_value(c, MIRRORS),
        "harbor.example.com/dockerhub,mirror.local:5000,auth.docker.io"
    );
    assert_eq!(env_value(c, BUCKETS), "team-a-evidence,team-b-evidence");
    // The default bucket travels in its own variable; the controller allows it too.
    assert_eq!(
        env_value(c, "AUTO_AGENT_BUNDLE_S3_BUCKET"),
        "platform-evidence"
    );

    // The schema refuses what the controller would refuse at start, and unknown keys.
    for bad in [
        r#"security.allowedMirrorRegistries=["https://mirror.example.com"]"#,
        r#"security.allowedMirrorRegistries=["*.example.com"]"#,
        r#"security.allowedMirrorRegistries=["a.example,b.example"]"#,
        r#"security.allowedMirrorRegistries="mirror.example.com""#,
        r#"security.allowedBuckets=["a,b"]"#,
        r#"security.allowedBuckets=[""]"#,
        r#"security.allowEverything=true"#,
    ] {
        let err = helm()
            .template(RELEASE, NAMESPACE, &["--set-json", bad])
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema"), "{bad}: {err}");
    }
}

#[test]
fn cluster_budgets_render_into_one_env_and_the_schema_checks_them() {
    let defaults = render(&[]);
    let env = env_of(controller_container(&defaults));
    assert_eq!(
        env_value(
            controller_container(&defaults),
            "AUTO_AGENT_CLUSTER_BUDGETS"
        ),
        "RestartPod=50/3600,BumpMemory=20/3600,MirrorImage=20/3600,EvictPod=50/3600,\
         CordonNode=3/3600,ScaleUp=100/3600,ScaleDown=100/3600"
    );
    assert!(
        !env.contains_key("AUTO_AGENT_CLUSTER_RESTARTS_PER_HOUR"),
        "the per-action budgets replace the restart budget"
    );
    // A list of one's own, at the bounds; an empty list sets none.
    let docs = render(&[
        "--set-json",
        r#"budgets.cluster=[{"action":"UncordonNode","max":1,"windowSeconds":60},{"action":"ScaleDown","max":1000,"windowSeconds":604800}]"#,
    ]);
    assert_eq!(
        env_value(controller_container(&docs), "AUTO_AGENT_CLUSTER_BUDGETS"),
        "UncordonNode=1/60,ScaleDown=1000/604800"
    );
    let docs = render(&["--set-json", "budgets.cluster=[]"]);
    assert!(!env_of(controller_container(&docs)).contains_key("AUTO_AGENT_CLUSTER_BUDGETS"));

    // The schema refuses what the controller would not parse.
    for (bad, why) in [
        (
            r#"[{"action":"DeletePod","max":5,"windowSeconds":3600}]"#,
            "action",
        ),
        (
            r#"[{"action":"restartpod","max":5,"windowSeconds":3600}]"#,
            "action",
        ),
        (
            r#"[{"action":"RestartPod","max":0,"windowSeconds":3600}]"#,
            "max",
        ),
        (
            r#"[{"action":"RestartPod","max":5,"windowSeconds":59}]"#,
            "windowSeconds",
        ),
        (
            r#"[{"action":"RestartPod","max":5,"windowSeconds":604801}]"#,
            "windowSeconds",
        ),
        (r#"[{"action":"RestartPod","max":5}]"#, "windowSeconds"),
        (
            r#"[{"action":"RestartPod","max":5,"windowSeconds":3600,"burst":2}]"#,
            "burst",
        ),
        (
            r#"[{"action":"RestartPod","max":"5","windowSeconds":3600}]"#,
            "max",
        ),
    ] {
        let err = helm()
            .template(
                RELEASE,
                NAMESPACE,
                &["--set-json", &format!("budgets.cluster={bad}")],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("schema"), "{bad}: {err}");
        assert!(err.contains(why), "{bad}: the error names {why}: {err}");
    }
    // The old single restart budget is gone from the values, not silently ignored.
    let out = helm()
        .lint(&["--set", "controller.clusterRestartsPerHour=20"])
        .unwrap();
    assert!(
        !out.success,
        "controller.clusterRestartsPerHour must fail the lint"
    );
    // One entry per action: two would contradict each other.
    let err = helm()
        .template(
            RELEASE,
            NAMESPACE,
            &[
                "--set-json",
                r#"budgets.cluster=[{"action":"EvictPod","max":5,"windowSeconds":3600},{"action":"EvictPod","max":50,"windowSeconds":60}]"#,
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("budgets.cluster names EvictPod twice"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------------
// Admission policies on the controller's own requests

/// The protected namespaces the namespaces policy renders (its `protected` variable, a CEL list
/// literal that is also JSON).
fn protected_namespaces(docs: &[Value]) -> Vec<String> {
    let policy = one(
        docs,
        "ValidatingAdmissionPolicy",
        &format!("{}-namespaces", controller_name()),
    );
    let var = policy["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "protected")
        .unwrap();
    serde_json::from_str(var["expression"].as_str().unwrap()).unwrap()
}

#[test]
fn admission_policies_bind_to_the_controller_and_cover_what_its_role_writes() {
    let docs = render(&[]);
    let policies = of_kind(&docs, "ValidatingAdmissionPolicy");
    let expected: BTreeSet<String> = ["workloads", "nodes", "namespaces"]
        .iter()
        .map(|p| format!("{}-{p}", controller_name()))
        .collect();
    assert_eq!(names_of(&docs, "ValidatingAdmissionPolicy"), expected);
    assert_eq!(
        names_of(&docs, "ValidatingAdmissionPolicyBinding"),
        expected
    );
    // Each binding puts its policy in force everywhere, denying.
    for binding in of_kind(&docs, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(binding["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(
            binding["spec"]["policyName"], binding["metadata"]["name"],
            "{binding}"
        );
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert!(binding["spec"]["paramRef"].is_null());
        assert!(binding["spec"]["matchResources"].is_null());
    }
    // Each policy applies to the controller's ServiceAccount only, the one the chart creates.
    let sa = one(&docs, "ServiceAccount", &controller_name());
    let user = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap()
    );
    for policy in &policies {
        let name = policy["metadata"]["name"].as_str().unwrap();
        assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{name}");
        assert_eq!(
            policy["spec"]["matchConditions"],
            json!([{"name": "auto-agent-controller",
                    "expression": format!("request.userInfo.username == '{user}'")}]),
            "{name}"
        );
        for v in policy["spec"]["validations"].as_array().unwrap() {
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("auto-agent controller may"),
                "{name}: {v}"
            );
            assert_eq!(v["reason"], "Forbidden", "{name}: {v}");
        }
    }
    // Every resource the ClusterRole lets the controller write is covered by a policy, except its
    // reports (Events, policy status) and TokenReviews, which change no workload. Checked with
    // every feature on, where the role is largest.
    let all = all_features();
    let covered: BTreeSet<(String, String)> = of_kind(&all, "ValidatingAdmissionPolicy")
        .iter()
        .flat_map(|p| {
            p["spec"]["matchConstraints"]["resourceRules"]
                .as_array()
                .unwrap()
        })
        .flat_map(|rule| {
            let groups = str_list(&rule["apiGroups"]);
            str_list(&rule["resources"])
                .into_iter()
                .flat_map(move |r| groups.clone().into_iter().map(move |g| (g, r.clone())))
        })
        .collect();
    let reports = [
        "tokenreviews",
        "events",
        "autoremediationpolicies/status",
        "noderemediationpolicies/status",
    ];
    let written: BTreeSet<(String, String)> =
        triples(one(&all, "ClusterRole", "auto-agent-controller"))
            .into_iter()
            .filter(|(_, r, v)| {
                v != "get" && v != "list" && v != "watch" && !reports.contains(&r.as_str())
            })
            .map(|(g, r, _)| (g, r))
            .collect();
    assert!(!written.is_empty());
    let uncovered: Vec<_> = written.difference(&covered).collect();
    assert!(
        uncovered.is_empty(),
        "writes no policy covers: {uncovered:?}"
    );

    // kube-system is always protected; protectedNamespaces adds to it.
    assert_eq!(protected_namespaces(&docs), ["kube-system"]);
    let more = render(&[
        "--set-json",
        r#"admissionPolicy.protectedNamespaces=["monitoring","kube-system","cert-manager"]"#,
    ]);
    assert_eq!(
        protected_namespaces(&more),
        ["kube-system", "monitoring", "cert-manager"]
    );

    // Another release in another namespace: the policies name its ServiceAccount.
    let other = render_as("ops", "platform", &[]);
    let workloads = one(
        &other,
        "ValidatingAdmissionPolicy",
        "ops-auto-agent-controller-workloads",
    );
    assert_eq!(
        workloads["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == 'system:serviceaccount:platform:ops-auto-agent-controller'"
    );

    // The switch.
    let off = render(&["--set", "admissionPolicy.enabled=false"]);
    assert!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&off, "ValidatingAdmissionPolicyBinding").is_empty());
}

// ------------------------------------------------------------------------------------------------
// NetworkPolicies

/// Whether a `matchLabels` selector selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object().unwrap();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v)
}

fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

fn api_server_rule(cidrs: &[&str], ports: &[u16]) -> Value {
    json!({
        "to": cidrs.iter().map(|c| json!({"ipBlock": {"cidr": c}})).collect::<Vec<_>>(),
        "ports": ports.iter().map(|p| json!({"protocol": "TCP", "port": p})).collect::<Vec<_>>(),
    })
}

fn kube_dns_rule() -> Value {
    json!({
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    })
}

fn default_prometheus() -> Value {
    json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    })
}

/// A container's port number by name.
fn container_port(workload: &Value, name: &str) -> Value {
    pod_spec(workload)["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()["containerPort"]
        .clone()
}

#[test]
fn network_policies_admit_only_sensors_and_prometheus_and_reach_only_what_is_configured() {
    let docs = render(&[]);
    let controller = one(&docs, "Deployment", &controller_name());
    let sensor = one(&docs, "DaemonSet", &sensor_name());
    let cnp = one(&docs, "NetworkPolicy", &controller_name());
    let snp = one(&docs, "NetworkPolicy", &sensor_name());
    assert_eq!(of_kind(&docs, "NetworkPolicy").len(), 2);
    // Each selects its own component's pods and only those; both directions are closed.
    assert!(selects(&cnp["spec"]["podSelector"], pod_labels(controller)));
    assert!(!selects(&cnp["spec"]["podSelector"], pod_labels(sensor)));
    assert!(selects(&snp["spec"]["podSelector"], pod_labels(sensor)));
    assert!(!selects(
        &snp["spec"]["podSelector"],
        pod_labels(controller)
    ));
    for np in [cnp, snp] {
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    }

    // Controller in: gRPC from this release's sensors, /metrics from Prometheus, nothing else.
    let grpc = container_port(controller, "grpc");
    let metrics = container_port(controller, "metrics");
    let ingress = cnp["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"protocol": "TCP", "port": grpc}])
    );
    assert_eq!(ingress[0]["from"].as_array().unwrap().len(), 1);
    let from_sensor = &ingress[0]["from"][0];
    assert!(
        from_sensor["namespaceSelector"].is_null(),
        "this namespace only"
    );
    assert!(selects(&from_sensor["podSelector"], pod_labels(sensor)));
    assert!(!selects(
        &from_sensor["podSelector"],
        pod_labels(controller)
    ));
    assert_eq!(
        ingress[1],
        json!({"from": [default_prometheus()], "ports": [{"protocol": "TCP", "port": metrics}]})
    );
    // Controller out: the API server and DNS; no Prometheus without scaling.prometheusUrl.
    assert_eq!(
        cnp["spec"]["egress"],
        json!([
            api_server_rule(&["0.0.0.0/0"], &[443, 6443]),
            kube_dns_rule()
        ])
    );

    // Sensor in: /metrics from Prometheus. Out: the controllers' gRPC, the API server, DNS.
    assert_eq!(
        snp["spec"]["ingress"],
        json!([{"from": [default_prometheus()],
                "ports": [{"protocol": "TCP", "port": container_port(sensor, "metrics")}]}])
    );
    let egress = snp["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(
        egress[0]["ports"],
        json!([{"protocol": "TCP", "port": grpc}])
    );
    assert!(selects(
        &egress[0]["to"][0]["podSelector"],
        pod_labels(controller)
    ));
    assert!(!selects(
        &egress[0]["to"][0]["podSelector"],
        pod_labels(sensor)
    ));
    assert_eq!(egress[1], api_server_rule(&["0.0.0.0/0"], &[443, 6443]));
    assert_eq!(egress[2], kube_dns_rule());

    // Values shape them: ports, the API server, Prometheus, integrations, extra rules.
    let docs = render(&[
        "--set",
        "controller.grpcPort=9555",
        "--set",
        "controller.adminPort=9091",
        "--set",
        "sensor.adminPort=9100",
        "--set",
        "scaling.prometheusUrl=http://prometheus.obs.svc:9090",
        "--set-json",
        r#"networkPolicy.apiServer={"cidrs":["10.0.0.10/32","10.0.0.11/32"],"ports":[6443]}"#,
        "--set-json",
        r#"networkPolicy.prometheus={"peers":[{"namespaceSelector":{"matchLabels":{"team":"obs"}},"podSelector":{}}],"queryPort":9091}"#,
        "--set-json",
        r#"networkPolicy.dns.to=[{"ipBlock":{"cidr":"169.254.20.10/32"}}]"#,
        "--set-json",
        r#"networkPolicy.integrations=[{"name":"s3","cidr":"52.218.0.0/17","except":["52.218.1.0/24"],"ports":[{"port":443}]},{"name":"syslog","cidr":"192.0.2.7/32","ports":[{"port":514,"protocol":"UDP"}]}]"#,
        "--set-json",
        r#"networkPolicy.extraControllerEgress=[{"to":[{"podSelector":{"matchLabels":{"app":"gitea"}}}],"ports":[{"port":3000}]}]"#,
    ]);
    let cnp = one(&docs, "NetworkPolicy", &controller_name());
    let snp = one(&docs, "NetworkPolicy", &sensor_name());
    let prometheus =
        json!({"namespaceSelector": {"matchLabels": {"team": "obs"}}, "podSelector": {}});
    assert_eq!(
        cnp["spec"]["ingress"][0]["ports"],
        json!([{"protocol": "TCP", "port": 9555}])
    );
    assert_eq!(
        cnp["spec"]["ingress"][1],
        json!({"from": [prometheus], "ports": [{"protocol": "TCP", "port": 9091}]})
    );
    let api = api_server_rule(&["10.0.0.10/32", "10.0.0.11/32"], &[6443]);
    // Lists of peers are replaced whole, never merged with the defaults' selectors.
    let node_local_dns = json!({
        "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    });
    assert_eq!(
        cnp["spec"]["egress"],
        json!([
            api,
            node_local_dns,
            {"to": [prometheus], "ports": [{"protocol": "TCP", "port": 9091}]},
            {"to": [{"ipBlock": {"cidr": "52.218.0.0/17", "except": ["52.218.1.0/24"]}}],
             "ports": [{"protocol": "TCP", "port": 443}]},
            {"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}],
             "ports": [{"protocol": "UDP", "port": 514}]},
            {"to": [{"podSelector": {"matchLabels": {"app": "gitea"}}}], "ports": [{"port": 3000}]},
        ])
    );
    assert_eq!(
        snp["spec"]["ingress"][0],
        json!({"from": [prometheus], "ports": [{"protocol": "TCP", "port": 9100}]})
    );
    assert_eq!(
        snp["spec"]["egress"][0]["ports"],
        json!([{"protocol": "TCP", "port": 9555}])
    );
    assert_eq!(snp["spec"]["egress"][1], api);
    assert_eq!(snp["spec"]["egress"][2], node_local_dns);
    assert_eq!(
        snp["spec"]["egress"].as_array().unwrap().len(),
        3,
        "integrations are the controller's only"
    );

    // The switch.
    let off = render(&["--set", "networkPolicy.enabled=false"]);
    assert!(of_kind(&off, "NetworkPolicy").is_empty());
}

// ------------------------------------------------------------------------------------------------
// Bounds and cross-field checks

fn template_error(extra: &[&str]) -> String {
    helm()
        .template(RELEASE, NAMESPACE, extra)
        .unwrap_err()
        .to_string()
}

#[test]
fn out_of_range_values_are_refused_with_a_message_naming_the_field() {
    // Upper bounds and formats in the schema: the error names the field's path.
    for (bad, path) in [
        ("controller.leaseSeconds=3601", "/controller/leaseSeconds"),
        ("controller.renewSeconds=3601", "/controller/renewSeconds"),
        (
            "controller.fenceMarginSeconds=3601",
            "/controller/fenceMarginSeconds",
        ),
        ("controller.replicas=11", "/controller/replicas"),
        ("controller.maxStreams=100001", "/controller/maxStreams"),
        (
            "controller.maxMessageBytes=4194305",
            "/controller/maxMessageBytes",
        ),
        ("controller.streamRate=100001", "/controller/streamRate"),
        ("sensor.logTailBytes=1048577", "/sensor/logTailBytes"),
        ("sensor.logTailLines=1001", "/sensor/logTailLines"),
        ("sensor.queueCapacity=1000001", "/sensor/queueCapacity"),
        ("sensor.watchPageSize=10001", "/sensor/watchPageSize"),
        (
            "auth.tokenExpirationSeconds=86401",
            "/auth/tokenExpirationSeconds",
        ),
        ("scaling.intervalSeconds=3601", "/scaling/intervalSeconds"),
        (
            "evidence.writeTimeoutSeconds=301",
            "/evidence/writeTimeoutSeconds",
        ),
        (
            "admissionPolicy.protectedNamespaces={Kube_System}",
            "/admissionPolicy/protectedNamespaces/0",
        ),
        ("admissionPolicy.enabled=maybe", "/admissionPolicy/enabled"),
        (
            "networkPolicy.apiServer.cidrs={anywhere}",
            "/networkPolicy/apiServer/cidrs/0",
        ),
        (
            "networkPolicy.apiServer.ports={0}",
            "/networkPolicy/apiServer/ports/0",
        ),
        (
            "networkPolicy.dns.ports={65536}",
            "/networkPolicy/dns/ports/0",
        ),
        ("networkPolicy.egress=open", "networkPolicy"),
    ] {
        let err = template_error(&["--set", bad]);
        assert!(err.contains("schema"), "{bad}: {err}");
        assert!(err.contains(path), "{bad}: the error names {path}: {err}");
    }
    let err = template_error(&[
        "--set-json",
        r#"networkPolicy.integrations=[{"name":"s3","cidr":"52.218.0.0/17","ports":[{"port":443,"protocol":"HTTP"}]}]"#,
    ]);
    assert!(
        err.contains("/networkPolicy/integrations/0/ports/0/protocol"),
        "{err}"
    );
    let err = template_error(&[
        "--set-json",
        r#"networkPolicy.integrations=[{"cidr":"52.218.0.0/17","ports":[{"port":443}]}]"#,
    ]);
    assert!(
        err.contains("/networkPolicy/integrations/0") && err.contains("name"),
        "{err}"
    );

    // What JSON schema cannot compare, the templates refuse with the same care.
    for (bad, says) in [
        (
            vec!["controller.leaseSeconds=10"],
            "controller.leaseSeconds (10) must be greater than controller.renewSeconds (5) + \
             controller.fenceMarginSeconds (5)",
        ),
        (
            vec!["controller.renewSeconds=10"],
            "controller.leaseSeconds (15) must be greater than controller.renewSeconds (10) + \
             controller.fenceMarginSeconds (5)",
        ),
        (
            vec!["sensor.logTailBytes=250000"],
            "sensor.logTailBytes (250000) must stay at least 16384 bytes below \
             controller.maxMessageBytes (262144)",
        ),
        (
            vec!["controller.maxMessageBytes=32767"],
            "sensor.logTailBytes (16384) must stay at least 16384 bytes below \
             controller.maxMessageBytes (32767)",
        ),
    ] {
        let args: Vec<&str> = bad.iter().flat_map(|b| ["--set", *b]).collect();
        let err = template_error(&args);
        assert!(err.contains(says), "{bad:?}: {err}");
    }

    // The limits themselves are accepted.
    for edge in [
        vec![
            "controller.leaseSeconds=11",
            "controller.renewSeconds=5",
            "controller.fenceMarginSeconds=5",
        ],
        vec![
            "controller.leaseSeconds=3600",
            "controller.renewSeconds=3599",
            "controller.fenceMarginSeconds=0",
        ],
        vec!["sensor.logTailBytes=245760"],
        vec![
            "sensor.logTailBytes=1048576",
            "controller.maxMessageBytes=4194304",
        ],
    ] {
        let args: Vec<&str> = edge.iter().flat_map(|b| ["--set", *b]).collect();
        let docs = render(&args);
        assert_eq!(of_kind(&docs, "Deployment").len(), 1, "{edge:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// Escalation: credentials and settings

/// Credentials given as values, recognisable anywhere in the render.
const SLACK_WEBHOOK: &str = "https://hooks.slack.com/services/T1/B1/escalation-webhook-secret";
const SLACK_BOT_TOKEN: &str = "xoxb-escalation-bot-token-secret";
const LLM_API_KEY: &str = "sk-escalation-llm-api-key-secret";
const GITHUB_TOKEN: &str = "ghp_escalation-github-token-secret";
const GITLAB_TOKEN: &str = "glpat-escalation-gitlab-token-secret";
const GITEA_TOKEN: &str = "escalation-gitea-token-secret";
const JIRA_TOKEN: &str = "escalation-jira-api-token-secret";
const JIRA_EMAIL: &str = "oncall-escalation@example.com";

/// The controller's escalation variables, by name.
fn escalation_env(docs: &[Value]) -> BTreeMap<String, Value> {
    env_of(controller_container(docs))
        .into_iter()
        .filter(|(name, _)| {
            [
                "AUTO_AGENT_SLACK_",
                "AUTO_AGENT_LLM_",
                "AUTO_AGENT_GITHUB_",
                "AUTO_AGENT_GITLAB_",
                "AUTO_AGENT_GITEA_",
                "AUTO_AGENT_JIRA_",
                "AUTO_AGENT_ESCALATION_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        })
        .collect()
}

/// The Secret reference of an env var that must come from a Secret (and carry no literal value).
fn secret_ref(env: &BTreeMap<String, Value>, name: &str) -> Value {
    let var = env.get(name).unwrap_or_else(|| panic!("{name} is not set"));
    assert!(var["value"].is_null(), "{name} has a literal value: {var}");
    var["valueFrom"]["secretKeyRef"].clone()
}

fn literal(env: &BTreeMap<String, Value>, name: &str) -> String {
    env.get(name).unwrap_or_else(|| panic!("{name} is not set"))["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no literal value"))
        .to_owned()
}

fn secret_data(docs: &[Value], name: &str) -> BTreeMap<String, String> {
    one(docs, "Secret", name)["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let decoded = base64_decode(v.as_str().unwrap());
            (k.clone(), String::from_utf8(decoded).unwrap())
        })
        .collect()
}

fn every_escalation_value() -> Vec<String> {
    [
        format!("slack.webhookUrl={SLACK_WEBHOOK}"),
        format!("slack.botToken={SLACK_BOT_TOKEN}"),
        "slack.apiUrl=https://slack-proxy.example.com/api".to_owned(),
        "llm.enabled=true".to_owned(),
        "llm.baseUrl=https://api.openai.com/v1".to_owned(),
        "llm.model=gpt-4o-mini".to_owned(),
        "llm.maxTokens=300".to_owned(),
        "llm.maxTokensField=max_completion_tokens".to_owned(),
        "llm.timeoutSeconds=15".to_owned(),
        format!("llm.apiKey={LLM_API_KEY}"),
        format!("tickets.github.token={GITHUB_TOKEN}"),
        "tickets.github.apiUrl=https://github.example.com/api/v3".to_owned(),
        format!("tickets.gitlab.token={GITLAB_TOKEN}"),
        format!("tickets.gitea.token={GITEA_TOKEN}"),
        "tickets.gitea.apiUrl=https://gitea.example.com/api/v1".to_owned(),
        "tickets.jira.url=https://jira.example.com".to_owned(),
        "tickets.jira.flavor=dataCenter".to_owned(),
        "tickets.jira.issueType=Incident".to_owned(),
        format!("tickets.jira.email={JIRA_EMAIL}"),
        format!("tickets.jira.apiToken={JIRA_TOKEN}"),
        "escalation.reopenWindowSeconds=3600".to_owned(),
        "escalation.maxRecords=5000".to_owned(),
        "escalation.allowedSlackChannels={#prod-incidents,C0123456789}".to_owned(),
        "escalation.allowedTicketProjects={github:acme/ops,jira:*}".to_owned(),
    ]
    .into_iter()
    .collect()
}

fn set_args(values: &[String]) -> Vec<&str> {
    values.iter().flat_map(|v| ["--set", v.as_str()]).collect()
}

#[test]
fn escalation_credentials_live_in_secrets_and_reach_the_controller_by_secret_key_ref() {
    let values = every_escalation_value();
    let docs = render(&set_args(&values));
    let name = fullname();

    // One Secret per service, holding exactly its credentials.
    let expected: [(&str, &[(&str, &str)]); 5] = [
        (
            "slack",
            &[
                ("webhook-url", SLACK_WEBHOOK),
                ("bot-token", SLACK_BOT_TOKEN),
            ],
        ),
        ("llm", &[("api-key", LLM_API_KEY)]),
        ("github", &[("token", GITHUB_TOKEN)]),
        ("gitlab", &[("token", GITLAB_TOKEN)]),
        ("jira", &[("api-token", JIRA_TOKEN), ("email", JIRA_EMAIL)]),
    ];
    for (suffix, data) in expected {
        let want: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(secret_data(&docs, &format!("{name}-{suffix}")), want);
    }
    assert_eq!(
        secret_data(&docs, &format!("{name}-gitea"))["token"],
        GITEA_TOKEN
    );

    // Each credential reaches the controller by secretKeyRef, never as a literal.
    let env = escalation_env(&docs);
    for (var, secret, key) in [
        ("AUTO_AGENT_SLACK_WEBHOOK_URL", "slack", "webhook-url"),
        ("AUTO_AGENT_SLACK_BOT_TOKEN", "slack", "bot-token"),
        ("AUTO_AGENT_LLM_API_KEY", "llm", "api-key"),
        ("AUTO_AGENT_GITHUB_TOKEN", "github", "token"),
        ("AUTO_AGENT_GITLAB_TOKEN", "gitlab", "token"),
        ("AUTO_AGENT_GITEA_TOKEN", "gitea", "token"),
        ("AUTO_AGENT_JIRA_API_TOKEN", "jira", "api-token"),
        ("AUTO_AGENT_JIRA_EMAIL", "jira", "email"),
    ] {
        assert_eq!(
            secret_ref(&env, var),
            json!({"name": format!("{name}-{secret}"), "key": key}),
            "{var}"
        );
    }
    // The settings are literal values, named like the controller's flags.
    for (var, value) in [
        (
            "AUTO_AGENT_SLACK_API_URL",
            "https://slack-proxy.example.com/api",
        ),
        ("AUTO_AGENT_LLM_BASE_URL", "https://api.openai.com/v1"),
        ("AUTO_AGENT_LLM_MODEL", "gpt-4o-mini"),
        ("AUTO_AGENT_LLM_MAX_TOKENS", "300"),
        ("AUTO_AGENT_LLM_MAX_TOKENS_FIELD", "max_completion_tokens"),
        ("AUTO_AGENT_LLM_TIMEOUT_SECONDS", "15"),
        (
            "AUTO_AGENT_GITHUB_API_URL",
            "https://github.example.com/api/v3",
        ),
        ("AUTO_AGENT_GITLAB_API_URL", "https://gitlab.com/api/v4"),
        (
            "AUTO_AGENT_GITEA_API_URL",
            "https://gitea.example.com/api/v1",
        ),
        ("AUTO_AGENT_JIRA_URL", "https://jira.example.com"),
        ("AUTO_AGENT_JIRA_FLAVOR", "data-center"),
        ("AUTO_AGENT_JIRA_ISSUE_TYPE", "Incident"),
        ("AUTO_AGENT_ESCALATION_REOPEN_WINDOW_SECONDS", "3600"),
        ("AUTO_AGENT_ESCALATION_MAX_RECORDS", "5000"),
        ("AUTO_AGENT_ESCALATION_RESOLVE_QUIET_SECONDS", "300"),
        (
            "AUTO_AGENT_ESCALATION_ALLOWED_SLACK_CHANNELS",
            "#prod-incidents,C0123456789",
        ),
        (
            "AUTO_AGENT_ESCALATION_ALLOWED_TICKET_PROJECTS",
            "github:acme/ops,jira:*",
        ),
    ] {
        assert_eq!(literal(&env, var), value, "{var}");
    }
    assert_eq!(env.len(), 25, "{:?}", env.keys());

    // No credential anywhere but in its Secret: not in args, env values, ConfigMaps or annotations.
    for container in of_kind(&docs, "Deployment")
        .into_iter()
        .chain(of_kind(&docs, "DaemonSet"))
        .flat_map(containers)
    {
        assert!(container["args"].is_null(), "configuration goes by env");
    }
    for doc in docs.iter().filter(|d| d["kind"] != "Secret") {
        let text = serde_json::to_string(doc).unwrap();
        for credential in [
            SLACK_WEBHOOK,
            SLACK_BOT_TOKEN,
            LLM_API_KEY,
            GITHUB_TOKEN,
            GITLAB_TOKEN,
            GITEA_TOKEN,
            JIRA_TOKEN,
            JIRA_EMAIL,
        ] {
            assert!(
                !text.contains(credential),
                "{} {} holds {credential}",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
    }
    assert_no_secret_outside_secrets(&docs);
}

#[test]
fn existing_secrets_replace_the_charts_and_keep_their_keys() {
    let docs = render(&[
        "--set",
        "slack.existingSecret=team-slack",
        "--set",
        "slack.existingSecretKey=hook",
        "--set",
        "slack.existingSecretBotTokenKey=bot",
        // A value next to existingSecret is ignored: the existing Secret wins.
        "--set",
        &format!("slack.botToken={SLACK_BOT_TOKEN}"),
        "--set",
        "llm.enabled=true",
        "--set",
        "llm.baseUrl=http://ollama.ai.svc:11434",
        "--set",
        "llm.model=llama3.2:3b",
        "--set",
        "llm.existingSecret=team-llm",
        "--set",
        "llm.existingSecretKey=openai",
        "--set",
        "tickets.github.existingSecret=team-github",
        "--set",
        "tickets.github.existingSecretKey=pat",
        "--set",
        "tickets.jira.url=https://example.atlassian.net",
        "--set",
        "tickets.jira.existingSecret=team-jira",
    ]);
    // Only the chart's TLS Secret: every credential comes from the user's Secrets.
    assert_eq!(
        names_of(&docs, "Secret"),
        BTreeSet::from([format!("{}-tls", controller_name())])
    );
    assert!(
        !serde_json::to_string(&docs)
            .unwrap()
            .contains(SLACK_BOT_TOKEN)
    );
    let env = escalation_env(&docs);
    for (var, reference) in [
        // One Slack Secret may hold either credential or both: each key is optional.
        (
            "AUTO_AGENT_SLACK_WEBHOOK_URL",
            json!({"name": "team-slack", "key": "hook", "optional": true}),
        ),
        (
            "AUTO_AGENT_SLACK_BOT_TOKEN",
            json!({"name": "team-slack", "key": "bot", "optional": true}),
        ),
        (
            "AUTO_AGENT_LLM_API_KEY",
            json!({"name": "team-llm", "key": "openai"}),
        ),
        (
            "AUTO_AGENT_GITHUB_TOKEN",
            json!({"name": "team-github", "key": "pat"}),
        ),
        // Data Center needs no email: optional in the user's Secret; the token is not.
        (
            "AUTO_AGENT_JIRA_EMAIL",
            json!({"name": "team-jira", "key": "email", "optional": true}),
        ),
        (
            "AUTO_AGENT_JIRA_API_TOKEN",
            json!({"name": "team-jira", "key": "api-token"}),
        ),
    ] {
        assert_eq!(secret_ref(&env, var), reference, "{var}");
    }
    assert_eq!(literal(&env, "AUTO_AGENT_JIRA_FLAVOR"), "cloud");
    assert_eq!(literal(&env, "AUTO_AGENT_JIRA_ISSUE_TYPE"), "Task");
    assert_eq!(
        literal(&env, "AUTO_AGENT_SLACK_API_URL"),
        "https://slack.com/api"
    );
    assert_eq!(
        literal(&env, "AUTO_AGENT_GITHUB_API_URL"),
        "https://api.github.com"
    );
    assert_eq!(literal(&env, "AUTO_AGENT_LLM_MAX_TOKENS"), "256");
    assert_eq!(
        literal(&env, "AUTO_AGENT_LLM_MAX_TOKENS_FIELD"),
        "max_tokens"
    );
    assert_eq!(literal(&env, "AUTO_AGENT_LLM_TIMEOUT_SECONDS"), "20");
    assert_eq!(
        literal(&env, "AUTO_AGENT_ESCALATION_REOPEN_WINDOW_SECONDS"),
        "86400"
    );
    assert_eq!(literal(&env, "AUTO_AGENT_ESCALATION_MAX_RECORDS"), "1000");
    assert!(!env.contains_key("AUTO_AGENT_GITLAB_TOKEN"));
    assert!(!env.contains_key("AUTO_AGENT_GITLAB_API_URL"));
}

#[test]
fn without_escalation_settings_nothing_of_escalation_renders() {
    // The defaults render no escalation setting; the all-features CI values render every one
    // (chart_packaging checks each name against the controller's flags).
    let defaults = render(&[]);
    assert_eq!(escalation_env(&defaults), BTreeMap::new());
    assert_eq!(
        names_of(&defaults, "Secret"),
        BTreeSet::from([format!("{}-tls", controller_name())])
    );
    let all = all_features();
    let env = escalation_env(&all);
    let names: BTreeSet<&str> = env.keys().map(|k| k.as_str()).collect();
    for name in [
        "AUTO_AGENT_SLACK_WEBHOOK_URL",
        "AUTO_AGENT_SLACK_BOT_TOKEN",
        "AUTO_AGENT_LLM_API_KEY",
        "AUTO_AGENT_GITHUB_TOKEN",
        "AUTO_AGENT_GITLAB_TOKEN",
        "AUTO_AGENT_GITEA_TOKEN",
        "AUTO_AGENT_JIRA_API_TOKEN",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }

    // Credentials of a disabled LLM render nothing either, not even their Secret.
    let docs = render(&["--set", &format!("llm.apiKey={LLM_API_KEY}")]);
    assert_eq!(escalation_env(&docs), BTreeMap::new());
    assert!(!serde_json::to_string(&docs).unwrap().contains(LLM_API_KEY));
    assert!(
        !serde_json::to_string(&docs)
            .unwrap()
            .contains(&helm_b64(LLM_API_KEY))
    );

    // An LLM without a key (a local server) gets its settings and no key variable.
    let docs = render(&[
        "--set",
        "llm.enabled=true",
        "--set",
        "llm.baseUrl=http://127.0.0.1:8080",
        "--set",
        "llm.model=smollm2",
    ]);
    let env = escalation_env(&docs);
    assert!(env.contains_key("AUTO_AGENT_LLM_BASE_URL"));
    assert!(!env.contains_key("AUTO_AGENT_LLM_API_KEY"));
    // The summarizer keeps no records: no escalation tuning for it alone.
    assert!(!env.contains_key("AUTO_AGENT_ESCALATION_MAX_RECORDS"));
}

/// Standard base64 with padding, as Helm's b64enc writes it.
fn helm_b64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn escalation_values_are_checked_by_the_schema_and_the_templates() {
    // The schema: enums, bounds, URLs, unknown keys; the error names the field.
    for (bad, path) in [
        ("tickets.jira.flavor=server", "/tickets/jira/flavor"),
        ("tickets.jira.flavor=data-center", "/tickets/jira/flavor"),
        ("llm.maxTokensField=maxTokens", "/llm/maxTokensField"),
        ("llm.maxTokens=0", "/llm/maxTokens"),
        ("llm.maxTokens=4097", "/llm/maxTokens"),
        ("llm.timeoutSeconds=0", "/llm/timeoutSeconds"),
        ("llm.timeoutSeconds=301", "/llm/timeoutSeconds"),
        ("llm.baseUrl=ollama:11434", "/llm/baseUrl"),
        ("llm.enabled=yes", "/llm/enabled"),
        ("slack.apiUrl=slack.com/api", "/slack/apiUrl"),
        ("tickets.github.apiUrl=", "/tickets/github/apiUrl"),
        (
            "tickets.gitlab.existingSecretKey=a/b",
            "/tickets/gitlab/existingSecretKey",
        ),
        ("tickets.jira.issueType=", "/tickets/jira/issueType"),
        (
            "escalation.reopenWindowSeconds=59",
            "/escalation/reopenWindowSeconds",
        ),
        (
            "escalation.reopenWindowSeconds=2592001",
            "/escalation/reopenWindowSeconds",
        ),
        ("escalation.maxRecords=9", "/escalation/maxRecords"),
        ("escalation.maxRecords=10001", "/escalation/maxRecords"),
        (
            "escalation.allowedTicketProjects={acme/ops}",
            "/escalation/allowedTicketProjects/0",
        ),
        (
            "escalation.allowedTicketProjects={bitbucket:acme/ops}",
            "/escalation/allowedTicketProjects/0",
        ),
        (
            "escalation.allowedSlackChannels={#ops,a b}",
            "/escalation/allowedSlackChannels/1",
        ),
        ("tickets.linear.token=x", "tickets"),
        ("llm.temperature=1", "llm"),
    ] {
        let err = template_error(&["--set", bad]);
        assert!(err.contains("schema"), "{bad}: {err}");
        assert!(err.contains(path), "{bad}: the error names {path}: {err}");
    }

    // What the schema cannot express, the templates refuse, naming the value to set.
    for (bad, says) in [
        (
            vec!["llm.enabled=true", "llm.model=m"],
            "llm.baseUrl is required",
        ),
        (
            vec!["llm.enabled=true", "llm.baseUrl=http://h"],
            "llm.model is required",
        ),
        (
            vec!["tickets.gitea.token=t"],
            "tickets.gitea.apiUrl is required",
        ),
        (
            vec!["tickets.jira.apiToken=t"],
            "tickets.jira.url is required",
        ),
        (
            vec![
                "tickets.jira.url=https://jira.example.com",
                "tickets.jira.flavor=dataCenter",
            ],
            "tickets.jira.url needs credentials",
        ),
        (
            vec![
                "tickets.jira.url=https://x.atlassian.net",
                "tickets.jira.apiToken=t",
            ],
            "tickets.jira.email is required for Jira Cloud",
        ),
    ] {
        let args: Vec<&str> = bad.iter().flat_map(|b| ["--set", *b]).collect();
        let err = template_error(&args);
        assert!(err.contains(says), "{bad:?}: {err}");
    }

    // The edges are accepted.
    for edge in [
        vec!["llm.maxTokens=16", "llm.timeoutSeconds=300"],
        vec![
            "escalation.reopenWindowSeconds=60",
            "escalation.maxRecords=10000",
        ],
        vec![
            "tickets.jira.url=https://jira.example.com",
            "tickets.jira.flavor=dataCenter",
            "tickets.jira.apiToken=personal-access-token",
        ],
    ] {
        let args: Vec<&str> = edge.iter().flat_map(|b| ["--set", *b]).collect();
        let docs = render(&args);
        assert_eq!(of_kind(&docs, "Deployment").len(), 1, "{edge:?}");
    }
}

#[test]
fn gitops_defaults_render_into_env_and_the_schema_checks_them() {
    let env = env_of(controller_container(&all_features()));
    for (var, value) in [
        ("AUTO_AGENT_GITOPS_PROVIDER", "github"),
        ("AUTO_AGENT_GITOPS_REPO", "acme/deploy"),
        ("AUTO_AGENT_GITOPS_BRANCH", "main"),
        ("AUTO_AGENT_GITOPS_VALUES_FILE", "apps/api/values.yaml"),
        (
            "AUTO_AGENT_GITOPS_ALLOWED_REPOS",
            "gitlab:platform/deploy,gitea:*",
        ),
    ] {
        assert_eq!(literal(&env, var), value, "{var}");
    }
    // Nothing set: nothing rendered (no repository, no proposals).
    let defaults = env_of(controller_container(&render(&[])));
    assert!(
        defaults
            .keys()
            .all(|k| !k.starts_with("AUTO_AGENT_GITOPS_"))
    );
    for (bad, path) in [
        ("gitops.provider=bitbucket", "/gitops/provider"),
        ("gitops.repo=no-slash", "/gitops/repo"),
        ("gitops.valuesFile=/etc/passwd", "/gitops/valuesFile"),
        (
            "gitops.allowedRepos={acme/deploy}",
            "/gitops/allowedRepos/0",
        ),
        (
            "gitops.allowedRepos={github:acme/*}",
            "/gitops/allowedRepos/0",
        ),
        ("gitops.branch=", "/gitops/branch"),
    ] {
        let err = template_error(&["--set", bad]);
        assert!(err.contains("schema"), "{bad}: {err}");
        assert!(err.contains(path), "{bad}: the error names {path}: {err}");
    }
}

/// The kubelet counts a pod's emptyDirs against the sum of its containers' ephemeral-storage
/// limits: a limit below the spool's and bundles' size limits would get the controller evicted
/// exactly when its store is down and the spool fills. Defaults and every feature.
#[test]
fn ephemeral_storage_limits_hold_the_pods_empty_dirs_and_logs() {
    use auto_agent_engine::quantity::parse_bytes;
    // The kubelet's default container log rotation: 5 files of 10Mi.
    const LOGS: u64 = 50 << 20;
    for docs in [render(&[]), all_features()] {
        for workload in docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
        {
            let spec = &workload["spec"]["template"]["spec"];
            let empty_dirs: u64 = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v["emptyDir"].as_object())
                .map(|e| {
                    let limit = e.get("sizeLimit").and_then(Value::as_str);
                    parse_bytes(limit.expect("every emptyDir has a sizeLimit")).unwrap()
                })
                .sum();
            let limits: u64 = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let l = c["resources"]["limits"]["ephemeral-storage"].as_str();
                    parse_bytes(l.expect("an ephemeral-storage limit")).unwrap()
                })
                .sum();
            let name = &workload["metadata"]["name"];
            assert!(
                limits >= empty_dirs + LOGS,
                "{name}: ephemeral-storage limits {limits} below emptyDirs {empty_dirs} + logs {LOGS}"
            );
        }
    }
}
