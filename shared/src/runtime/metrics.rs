//! The metrics registry of one binary, with process metrics (RSS, CPU, open fds) included so the
//! dashboard can show the footprint of both components.

use prometheus::Registry;

/// Prefix of every metric the project exports.
pub const METRIC_PREFIX: &str = "auto_agent";

/// A registry with the process collector registered.
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}
