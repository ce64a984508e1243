//! auto-agent-controller: the leader-elected half of auto-agent (Deployment).
//!
//! What runs today: the runtime frame (logging, admin server with `/live`, `/ready`, `/metrics`,
//! graceful shutdown). Leader election, ingest, policies, decisions and actions come next (see the
//! README's status table); nothing here pretends to remediate yet.

#![forbid(unsafe_code)]

use auto_agent_shared::runtime::{AdminArgs, AdminServer, LogArgs, Readiness, Shutdown, metrics};
use clap::Parser;

/// Ingests sensor findings, decides within AutoRemediationPolicy rules and safety limits, acts and
/// reports.
#[derive(Debug, Parser)]
#[command(name = "auto-agent-controller", version = auto_agent_shared::VERSION)]
struct Args {
    /// This replica's identity in leader election (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "auto-agent-controller")]
    identity: String,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    admin: AdminArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let registry = metrics::registry()?;
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "auto_agent_controller_info",
            "Controller build and identity",
        ),
        &["version", "identity"],
    )?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[auto_agent_shared::VERSION, &args.identity])
        .set(1);

    let shutdown = Shutdown::new();
    shutdown.spawn_signal_handler()?;
    let readiness = Readiness::new();
    // No watches exist yet, so there is nothing to wait for before reporting ready.
    readiness.set(true);
    tracing::info!(identity = %args.identity, version = auto_agent_shared::VERSION, "Controller started");
    AdminServer::new(readiness, registry)
        .serve(args.admin.admin_addr, shutdown)
        .await?;
    tracing::info!("Controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_name() {
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id} has no env name");
        }
    }
}
