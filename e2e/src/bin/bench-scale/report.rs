//! The scale benchmark's figures and report: CSV files, SVG charts and the Markdown section of
//! docs/BENCHMARKS.md between its `scale-report` markers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use auto_agent_e2e::cluster::repo_root;
use auto_agent_e2e::loadgen::Answers;
use auto_agent_e2e::plot::{Series, cdf, csv, line_chart, quantile};

/// One cluster size's figures.
#[derive(Clone, Debug, Default)]
pub struct SizeRow {
    pub nodes: usize,
    pub pods: usize,
    pub populate_seconds: f64,
    pub streams: usize,
    pub streams_open_seconds: f64,
    /// Before the load generator's streams opened.
    pub before_streams_rss_mib: f64,
    pub idle_rss_mib: f64,
    pub idle_cpu_percent: f64,
    pub idle_controller_requests: f64,
    /// New findings: one per pod.
    pub storm: Ingest,
    pub storm_rejected: BTreeMap<String, u64>,
    /// The same findings again, three times.
    pub dedupe: Ingest,
    pub after_rss_mib: f64,
    pub latencies: Vec<f64>,
    /// Namespaces the 100 app Deployments are spread over.
    pub app_namespaces: usize,
    pub naive_events: u64,
    pub naive_init_seconds: f64,
    pub load: BTreeMap<&'static str, PhaseLoad>,
    pub k8sgpt: Option<K8sgptRun>,
    pub agent_detect_seconds: f64,
}

/// What the controller did with a batch of findings from the load generator.
#[derive(Clone, Debug, Default)]
pub struct Ingest {
    pub findings: u64,
    pub seconds: f64,
    pub max_rss_mib: f64,
    pub cpu_percent: f64,
    /// The controller's own API requests meanwhile.
    pub controller_requests: f64,
}

impl Ingest {
    /// Adds one round of sends; `cpu_share` is its part of the phase's CPU.
    pub fn add(&mut self, answers: &Answers, seconds: f64, max_rss_mib: f64, cpu_share: f64) {
        self.findings += answers.acked + answers.rejected.values().sum::<u64>();
        self.seconds += seconds;
        self.max_rss_mib = self.max_rss_mib.max(max_rss_mib);
        self.cpu_percent += cpu_share;
    }

    pub fn per_second(&self) -> f64 {
        per_second(self.findings, self.seconds)
    }

    /// findings, s, per s, max RSS, CPU %, API requests.
    fn cells(&self) -> [String; 6] {
        [
            self.findings.to_string(),
            f2(self.seconds),
            f1(self.per_second()),
            f1(self.max_rss_mib),
            f1(self.cpu_percent),
            f1(self.controller_requests),
        ]
    }
}

/// What a phase cost the apiserver.
#[derive(Clone, Debug, Default)]
pub struct PhaseLoad {
    pub seconds: f64,
    pub clients: usize,
    pub requests: f64,
    pub execution_seconds: f64,
    pub by_verb: BTreeMap<String, f64>,
    pub pod_response_bytes: f64,
    pub pod_watches: f64,
    pub apiserver_cpu_seconds: f64,
    pub apiserver_max_rss_mib: f64,
    pub etcd_cpu_seconds: f64,
}

#[derive(Clone, Debug, Default)]
pub struct K8sgptRun {
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub max_rss_mib: f64,
    pub results: usize,
    pub broken_found: usize,
    pub sample: String,
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}
fn f2(v: f64) -> String {
    format!("{v:.2}")
}
fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn per_second(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The machine, named: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
}

fn load_of(row: &SizeRow, phase: &str) -> PhaseLoad {
    row.load.get(phase).cloned().unwrap_or_default()
}

/// Above the quiet phase's background (per second of phase, times the phase's length).
fn above_quiet(row: &SizeRow, phase: &str, f: fn(&PhaseLoad) -> f64) -> f64 {
    let quiet = load_of(row, "quiet");
    let p = load_of(row, phase);
    let rate = if quiet.seconds > 0.0 {
        f(&quiet) / quiet.seconds
    } else {
        0.0
    };
    (f(&p) - rate * p.seconds).max(0.0)
}

/// Pod watches open during a phase that its design opened: the quiet phase's are the
/// background's; the agent's sensors keep running through the naive phase, so the naive agents'
/// are those above the agent phase's.
fn opened_watches(row: &SizeRow, phase: &str) -> f64 {
    let w = |p: &str| load_of(row, p).pod_watches;
    match phase {
        "agent" => w("agent") - w("quiet"),
        "naive" => w("naive") - w("agent"),
        _ => w(phase),
    }
}

/// Writes the CSV files, the SVG charts and the report section (`report.md` in `out`; also into
/// docs/BENCHMARKS.md when `splice`).
pub fn write(out: &Path, rows: &[SizeRow], splice: bool) -> anyhow::Result<()> {
    let size = |r: &SizeRow| vec![r.nodes.to_string(), r.pods.to_string()];
    std::fs::write(
        out.join("controller.csv"),
        csv(
            &[
                "nodes",
                "pods",
                "populate_s",
                "streams",
                "streams_open_s",
                "before_streams_rss_mib",
                "idle_rss_mib",
                "idle_cpu_pct",
                "idle_api_requests",
                "storm_findings",
                "storm_s",
                "storm_per_s",
                "storm_max_rss_mib",
                "storm_cpu_pct",
                "storm_api_requests",
                "storm_rejected",
                "dedupe_findings",
                "dedupe_s",
                "dedupe_per_s",
                "dedupe_max_rss_mib",
                "dedupe_cpu_pct",
                "dedupe_api_requests",
                "after_rss_mib",
            ],
            &rows
                .iter()
                .map(|r| {
                    let mut v = size(r);
                    v.extend([
                        f1(r.populate_seconds),
                        r.streams.to_string(),
                        f2(r.streams_open_seconds),
                        f1(r.before_streams_rss_mib),
                        f1(r.idle_rss_mib),
                        f2(r.idle_cpu_percent),
                        f1(r.idle_controller_requests),
                    ]);
                    v.extend(r.storm.cells());
                    v.push(format!("{:?}", r.storm_rejected));
                    v.extend(r.dedupe.cells());
                    v.extend([f1(r.after_rss_mib)]);
                    v
                })
                .collect::<Vec<_>>(),
        ),
    )?;
    let mut api_rows = Vec::new();
    for r in rows {
        for (phase, l) in &r.load {
            let mut v = size(r);
            v.extend([
                (*phase).to_owned(),
                l.clients.to_string(),
                f1(l.seconds),
                f1(l.requests),
                f3(l.execution_seconds),
                f1(l.by_verb.get("LIST").copied().unwrap_or_default()),
                f1(l.by_verb.get("WATCH").copied().unwrap_or_default()),
                f1(l.by_verb.get("GET").copied().unwrap_or_default()),
                format!("{:.0}", l.pod_response_bytes),
                f1(l.pod_watches),
                f2(l.apiserver_cpu_seconds),
                f1(l.apiserver_max_rss_mib),
                f2(l.etcd_cpu_seconds),
            ]);
            api_rows.push(v);
        }
    }
    std::fs::write(
        out.join("apiserver.csv"),
        csv(
            &[
                "nodes",
                "pods",
                "phase",
                "clients",
                "seconds",
                "client_requests",
                "client_execution_s",
                "pod_list",
                "pod_watch",
                "pod_get",
                "pod_response_bytes",
                "pod_watches_open",
                "apiserver_cpu_s",
                "apiserver_max_rss_mib",
                "etcd_cpu_s",
            ],
            &api_rows,
        ),
    )?;
    let latency_rows: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.latencies.iter().enumerate().map(move |(i, l)| {
                let mut v = size(r);
                v.extend([i.to_string(), f3(*l)]);
                v
            })
        })
        .collect();
    std::fs::write(
        out.join("latency.csv"),
        csv(&["nodes", "pods", "crash_loop", "seconds"], &latency_rows),
    )?;
    std::fs::write(
        out.join("k8sgpt.csv"),
        csv(
            &[
                "nodes",
                "pods",
                "broken_pods",
                "k8sgpt_wall_s",
                "k8sgpt_cpu_s",
                "k8sgpt_max_rss_mib",
                "k8sgpt_results",
                "k8sgpt_broken_found",
                "agent_detect_s",
            ],
            &rows
                .iter()
                .map(|r| {
                    let k = r.k8sgpt.clone().unwrap_or_default();
                    let mut v = size(r);
                    v.extend([
                        "100".into(),
                        f2(k.wall_seconds),
                        f2(k.cpu_seconds),
                        f1(k.max_rss_mib),
                        k.results.to_string(),
                        k.broken_found.to_string(),
                        f2(r.agent_detect_seconds),
                    ]);
                    v
                })
                .collect::<Vec<_>>(),
        ),
    )?;

    // Charts.
    let by_nodes = |name: &str, f: &dyn Fn(&SizeRow) -> f64| Series {
        name: name.into(),
        points: rows.iter().map(|r| (r.nodes as f64, f(r))).collect(),
    };
    std::fs::write(
        out.join("controller-memory.svg"),
        line_chart(
            "Controller RSS (MiB) versus cluster size (30 pods per node)",
            "nodes",
            "MiB",
            &[
                by_nodes("idle, every node's stream open", &|r| r.idle_rss_mib),
                by_nodes("storm: a crash-loop finding per pod (max)", &|r| {
                    r.storm.max_rss_mib
                }),
                by_nodes("duplicates re-sent (max)", &|r| r.dedupe.max_rss_mib),
            ],
        ),
    )?;
    std::fs::write(
        out.join("apiserver-cpu.svg"),
        line_chart(
            "apiserver CPU seconds over 30 s, above the quiet background",
            "nodes",
            "CPU seconds",
            &[
                by_nodes("100 sensors: start + watches", &|r| {
                    above_quiet(r, "agent", |l| l.apiserver_cpu_seconds)
                }),
                by_nodes("100 naive agents (all pods): start + watches", &|r| {
                    above_quiet(r, "naive", |l| l.apiserver_cpu_seconds)
                }),
            ],
        ),
    )?;
    std::fs::write(
        out.join("latency-cdf.svg"),
        line_chart(
            "Crash loop set -> pod restarted by the agent: distribution of 100",
            "seconds",
            "fraction at or below",
            &rows
                .iter()
                .map(|r| Series {
                    name: format!("{} nodes / {} pods", r.nodes, r.pods),
                    points: cdf(&r.latencies),
                })
                .collect::<Vec<_>>(),
        ),
    )?;
    let section = markdown(rows);
    std::fs::write(out.join("report.md"), &section)?;
    if splice {
        replace_section(&section)?;
    }
    Ok(())
}

const BEGIN: &str = "<!-- scale-report:begin (written by `make bench`) -->";
const END: &str = "<!-- scale-report:end -->";

fn replace_section(section: &str) -> anyhow::Result<()> {
    let path = repo_root().join("docs/BENCHMARKS.md");
    let text = std::fs::read_to_string(&path)?;
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if a < b => {
            format!(
                "{}{BEGIN}\n{section}{END}{}",
                &text[..a],
                &text[b + END.len()..]
            )
        }
        _ => format!("{}\n{BEGIN}\n{section}{END}\n", text.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

fn markdown(rows: &[SizeRow]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## At cluster scale: the controller, the apiserver, the naive design and k8sgpt\n\n\
         ```\nmake bench\n```\n\n\
         Measured {} on commit {} on {}. KWOK nodes and pods on the local control plane of the \
         benchmark's own (`$AUTO_AGENT_CACHE/bench-cluster`); the chart installed, so every node \
         has its sensor pod; 100 release-built sensor processes for the first 100 nodes; the \
         load generator (`e2e/src/loadgen.rs`) opens one TLS stream per node with a token bound \
         to that node's sensor pod and speaks the real protocol; one release-built controller. \
         Everything shares the two cores. Raw data beside this file in `docs/bench/*.csv`.\n",
        chrono_free_date(),
        git_commit(),
        machine()
    );
    let _ = writeln!(
        md,
        "### Controller\n\n\
         Idle: every node's stream open, 30 s; before the streams: the RSS just before the load \
         generator opened them (after the first size it holds what earlier storms left), so the \
         difference over the streams is what one open stream costs. Storm: each stream sends one CrashLoopBackOff \
         finding for every pod on its node, all nodes at once (verified against the API, booked, \
         decided; no policy covers these pods). Duplicates: the same findings sent again three \
         times (the dedupe path).\n\n\
         | nodes | pods | RSS before the streams (MiB) | RSS idle (MiB) | per stream (KiB) | CPU idle | API requests idle (30 s) | storm findings | storm rate (/s) | RSS storm max (MiB) | CPU storm (% of a core) | API requests in the storm | duplicates rate (/s) | API requests for duplicates | RSS after (MiB) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.2} % | {:.0} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            r.nodes,
            r.pods,
            r.before_streams_rss_mib,
            r.idle_rss_mib,
            (r.idle_rss_mib - r.before_streams_rss_mib) * 1024.0 / r.streams.max(1) as f64,
            r.idle_cpu_percent,
            r.idle_controller_requests,
            r.storm.findings,
            r.storm.per_second(),
            r.storm.max_rss_mib,
            r.storm.cpu_percent,
            r.storm.controller_requests,
            r.dedupe.per_second(),
            r.dedupe.controller_requests,
            r.after_rss_mib
        );
    }
    let _ = writeln!(
        md,
        "\nStorm answers other than an ack: {}.\n\n![controller memory](bench/controller-memory.svg)\n",
        rows.iter()
            .map(|r| format!("{} nodes {:?}", r.nodes, r.storm_rejected))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        md,
        "### Detection -> action latency\n\n\
         100 Deployments of 3 replicas on the real sensors' nodes, in {} namespace(s) \
         (`BENCH_APP_NAMESPACES`); one pod of each set to CrashLoopBackOff, 10 per second, while \
         {} background pods per second are deleted and created again. Latency: from the status \
         write to the pod's deletion seen by a watch. The policy sets `stormWindowSeconds: 0`; \
         with the default 1 s, add that second. The controller reconciles one change at a time \
         per namespace, so in one namespace the restarts queue behind each other.\n\n\
         | nodes | pods | restarted | p50 (s) | p90 (s) | p99 (s) | max (s) |\n| --- | --- | --- | --- | --- | --- | --- |",
        rows.first().map_or(1, |r| r.app_namespaces),
        10
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.nodes,
            r.pods,
            r.latencies.len(),
            quantile(&r.latencies, 0.5),
            quantile(&r.latencies, 0.9),
            quantile(&r.latencies, 0.99),
            quantile(&r.latencies, 1.0)
        );
    }
    let _ = writeln!(md, "\n![latency distribution](bench/latency-cdf.svg)\n");
    let _ = writeln!(
        md,
        "### apiserver load: the agent's sensors versus the naive design\n\n\
         Each phase is 30 s after its clients started (the naive agents' phase runs until each \
         finished its first list, then 30 s). Agent: the 100 real sensors started anew (each \
         lists and watches its own node's pods and its Node). Naive: 100 agents written for the \
         benchmark, each listing and watching every pod of the cluster, as a node agent without \
         a field selector does. Requests and apiserver execution time are the clients' own \
         (their FlowSchema in `apiserver_flowcontrol_*`); pod response bytes \
         (`apiserver_response_sizes_sum`), CPU and RSS are the whole apiserver's, shown above the \
         quiet phase's background (30 s with neither).\n\n\
         | nodes | pods | design | requests | apiserver execution (s) | pod response bytes | pod watches it opened | apiserver CPU (s, above quiet) | apiserver RSS max (MiB) | etcd CPU (s) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        for (phase, name) in [
            ("quiet", "neither (background)"),
            ("agent", "agent, 100 sensors"),
            ("naive", "naive, 100 agents"),
        ] {
            let l = load_of(r, phase);
            let _ = writeln!(
                md,
                "| {} | {} | {name} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
                r.nodes,
                r.pods,
                // + 0.0: an empty difference is -0, printed as such otherwise
                l.requests + 0.0,
                l.execution_seconds + 0.0,
                if phase == "quiet" {
                    l.pod_response_bytes
                } else {
                    above_quiet(r, phase, |l| l.pod_response_bytes)
                },
                opened_watches(r, phase),
                if phase == "quiet" {
                    l.apiserver_cpu_seconds
                } else {
                    above_quiet(r, phase, |l| l.apiserver_cpu_seconds)
                },
                l.apiserver_max_rss_mib,
                l.etcd_cpu_seconds
            );
        }
    }
    let _ = writeln!(md, "\n![apiserver CPU](bench/apiserver-cpu.svg)\n");
    let _ = writeln!(
        md,
        "Per node, at N nodes the agent's side is N times its 100 sensors' figure (each sensor's \
         cost does not depend on the cluster's size), the naive design's N times its 100 \
         agents' (each of which grows with the pods).\n"
    );
    let _ = writeln!(
        md,
        "### k8sgpt v0.4.36 versus the agent: 100 broken pods\n\n\
         100 bare pods on the real sensors' nodes set to CrashLoopBackOff (no policy covers \
         them). Agent: from the status writes to 100 findings accepted by the controller. \
         k8sgpt: `k8sgpt analyze --filter Pod --output json` (no AI backend) run once \
         afterwards, wall and CPU time from `/usr/bin/time`.\n\n\
         | nodes | pods | agent: all 100 detected (s) | k8sgpt wall (s) | k8sgpt CPU (s) | k8sgpt RSS (MiB) | k8sgpt results | of them the 100 broken |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let k = r.k8sgpt.clone().unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} |",
            r.nodes,
            r.pods,
            r.agent_detect_seconds,
            k.wall_seconds,
            k.cpu_seconds,
            k.max_rss_mib,
            k.results,
            k.broken_found
        );
    }
    if let Some(sample) = rows
        .iter()
        .filter_map(|r| r.k8sgpt.as_ref())
        .map(|k| k.sample.clone())
        .find(|s| !s.is_empty())
    {
        let _ = writeln!(
            md,
            "\nWhat k8sgpt reports for one of them:\n\n```json\n{sample}\n```\n"
        );
    }
    md
}

/// Today's date (UTC) from the system clock, as YYYY-MM-DD.
fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(String::new, |s| s.trim().to_owned())
}
