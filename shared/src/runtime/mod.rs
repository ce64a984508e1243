//! The runtime frame both binaries share: logging, the admin HTTP server, shutdown signals.

pub mod admin;
pub mod kube_config;
pub mod logging;
pub mod metrics;
pub mod shutdown;

pub use admin::{AdminArgs, AdminServer, Readiness};
pub use logging::{LogArgs, LogFormat};
pub use shutdown::Shutdown;

/// The flags of a binary's command line that have no environment variable (besides help and
/// version). Behaviour is configured through the chart, which sets env, so each binary's tests
/// assert this is empty.
pub fn flags_without_env(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .filter(|a| a.get_env().is_none())
        .map(|a| format!("--{}", a.get_id()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_without_env_names_each_one() {
        let cmd = clap::Command::new("x")
            .arg(clap::Arg::new("bare").long("bare"))
            .arg(clap::Arg::new("set").long("set").env("X_SET"));
        assert_eq!(super::flags_without_env(&cmd), ["--bare"]);
    }
}
