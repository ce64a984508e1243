#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Grafana dashboard the chart ships (`charts/auto-agent/dashboards/auto-agent.json`), checked
//! statically: well-formed panels on the datasource variable, every query valid PromQL (promtool),
//! and only metrics the code exports. `dashboard.rs` checks the same queries return real data.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::manifests::dashboard;
use serde_json::json;

// ------------------------------------------------------------------------------------------------
// Grafana dashboard

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
    for file in [
        "controller/src/platform/metrics.rs",
        "evidence/src/keeper.rs",
    ] {
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
        "auto_agent_incidents_by_reason_total",
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
    assert!(all.contains(r#"auto_agent_decisions_total{outcome="executed"}"#));
    assert!(all.contains(r#"reason="BudgetExhausted""#));
    println!(
        "dashboard: {} queries over {} metrics checked in {:?}",
        exprs.len(),
        used.len(),
        started.elapsed()
    );
}
