#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The chart agrees with what builds and runs it: the Dockerfiles (toolchain, locked build of every
//! workspace member, non-root user, entrypoint, labels, exposed ports), the Makefile's release build,
//! `Cargo.lock`, the chart's appVersion and images, and the binaries' flags (every env variable the
//! chart sets is a flag, and the binaries accept the rendered values).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::helm;
use auto_agent_e2e::manifests::{all_features, env_of, of_kind, pod_spec, render, str_list};
use serde_json::Value;

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

/// Credentials the chart passes from Secrets; the controller reads them from its environment.
const ESCALATION_CREDENTIALS: &[&str] = &[
    "AUTO_AGENT_SLACK_WEBHOOK_URL",
    "AUTO_AGENT_SLACK_BOT_TOKEN",
    "AUTO_AGENT_LLM_API_KEY",
    "AUTO_AGENT_GITHUB_TOKEN",
    "AUTO_AGENT_GITLAB_TOKEN",
    "AUTO_AGENT_GITEA_TOKEN",
    "AUTO_AGENT_JIRA_EMAIL",
    "AUTO_AGENT_JIRA_API_TOKEN",
];
const CHANNELS_SOURCE: &str = include_str!("../../controller/src/escalate/channels.rs");

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
            // Every variable the chart sets is one of the binary's flags, except credentials: those
            // are read from the environment only (never a flag, so never in args) by the
            // controller's escalation channels. POD_IP only feeds $(POD_IP) in
            // AUTO_AGENT_GRPC_ADVERTISE.
            for name in env_of(container).keys() {
                if ESCALATION_CREDENTIALS.contains(&name.as_str()) {
                    assert!(!flags.contains_key(name), "{name} must not be a flag");
                    assert!(
                        CHANNELS_SOURCE.contains(&format!("\"{name}\"")),
                        "the controller does not read {name}"
                    );
                    continue;
                }
                if name == "POD_IP" || name == "AWS_REGION" || name == "RUST_BACKTRACE" {
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
