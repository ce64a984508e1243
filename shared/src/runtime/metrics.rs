//! The metrics registry of one binary, with process metrics (RSS, CPU, open fds) included so the
//! dashboard can show the footprint of both components.

use prometheus::Registry;

/// Prefix of every metric the project exports.
pub const METRIC_PREFIX: &str = "auto_agent";

/// A registry with the process metrics registered.
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(process::Process::new()?))?;
    Ok(registry)
}

#[cfg(target_os = "linux")]
mod process {
    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::MetricFamily;
    use prometheus::{Counter, Opts};

    const CPU: &str = "process_cpu_seconds_total";

    /// The prometheus crate's process collector, except `process_cpu_seconds_total`: the crate
    /// counts it in whole seconds, so an agent using a few percent of a core shows a rate of 0
    /// for minutes and then a spike. This one counts clock ticks (10 ms).
    pub struct Process {
        inner: ProcessCollector,
        cpu: Counter,
        /// Two scrapes at once must not both add the same ticks.
        update: std::sync::Mutex<()>,
    }

    impl Process {
        pub fn new() -> Result<Self, prometheus::Error> {
            Ok(Self {
                inner: ProcessCollector::for_self(),
                cpu: Counter::with_opts(Opts::new(
                    CPU,
                    "Total user and system CPU time spent in seconds.",
                ))?,
                update: std::sync::Mutex::new(()),
            })
        }

        fn cpu_seconds() -> Option<f64> {
            let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
            let ticks = procfs::ticks_per_second();
            (ticks > 0).then(|| (stat.utime + stat.stime) as f64 / ticks as f64)
        }
    }

    impl Collector for Process {
        fn desc(&self) -> Vec<&Desc> {
            // The inner collector describes the CPU counter under the same name and help.
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families: Vec<MetricFamily> = self
                .inner
                .collect()
                .into_iter()
                .filter(|f| f.name() != CPU)
                .collect();
            if let Some(total) = Self::cpu_seconds() {
                let _one = self
                    .update
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let delta = total - self.cpu.get();
                if delta > 0.0 {
                    self.cpu.inc_by(delta);
                }
            }
            families.extend(self.cpu.collect());
            families
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn cpu_counter(registry: &prometheus::Registry) -> Vec<f64> {
            registry
                .gather()
                .iter()
                .filter(|f| f.name() == CPU)
                .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
                .collect()
        }

        #[test]
        fn cpu_seconds_have_sub_second_resolution_in_one_family() {
            let registry = super::super::registry().unwrap();
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap();
            assert!(text.contains("process_resident_memory_bytes"), "{text}");
            // A whole-second counter never shows a fraction; ticks do within a few of them.
            let mut seen = Vec::new();
            for _ in 0..100 {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(7) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                let values = cpu_counter(&registry);
                assert_eq!(values.len(), 1, "one CPU series: {values:?}");
                seen.push(values[0]);
                if values[0].fract() != 0.0 {
                    return;
                }
            }
            panic!("CPU seconds only in whole seconds: {seen:?}");
        }
    }
}
