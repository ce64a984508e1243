//! Helpers for footprint benchmarks: RSS and CPU time of a process from /proc.

use std::time::{Duration, Instant};

/// Resident set size in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the ')'.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// RSS and CPU samples of a process over a period.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub rss_kib: Vec<u64>,
    /// CPU use in percent of one core over the whole period.
    pub cpu_percent: f64,
}

impl Samples {
    pub fn max_rss_mib(&self) -> f64 {
        self.rss_kib.iter().copied().max().unwrap_or_default() as f64 / 1024.0
    }
    pub fn last_rss_mib(&self) -> f64 {
        self.rss_kib.last().copied().unwrap_or_default() as f64 / 1024.0
    }
}

/// Samples `pid` every `every` for `period`, while `work` runs alongside.
pub async fn sample_while<F: std::future::Future<Output = ()>>(
    pid: u32,
    period: Duration,
    every: Duration,
    work: F,
) -> Samples {
    let ticks = clock_ticks() as f64;
    let start = Instant::now();
    let cpu0 = cpu_ticks(pid).unwrap_or_default();
    let sampler = async {
        let mut rss = Vec::new();
        while start.elapsed() < period {
            if let Some(r) = rss_kib(pid) {
                rss.push(r);
            }
            tokio::time::sleep(every).await;
        }
        rss
    };
    let (rss, ()) = tokio::join!(sampler, work);
    let cpu1 = cpu_ticks(pid).unwrap_or_default();
    let secs = start.elapsed().as_secs_f64();
    Samples {
        rss_kib: rss,
        cpu_percent: (cpu1.saturating_sub(cpu0)) as f64 / ticks / secs * 100.0,
    }
}
