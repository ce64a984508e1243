//! auto-agent-sensor: the per-node half of auto-agent (DaemonSet).
//!
//! What runs today: the runtime frame (logging, admin server with `/live`, `/ready`, `/metrics`,
//! graceful shutdown). Watching the node's pods, detection and the gRPC stream come next (see the
//! README's status table); nothing here pretends to detect yet.

#![forbid(unsafe_code)]

use auto_agent_shared::runtime::{AdminArgs, AdminServer, LogArgs, Readiness, Shutdown, metrics};
use clap::Parser;

/// Watches the pods and the Node object of one node and streams findings to the controller.
#[derive(Debug, Parser)]
#[command(name = "auto-agent-sensor", version = auto_agent_shared::VERSION)]
struct Args {
    /// The node this sensor watches (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    admin: AdminArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    let registry = metrics::registry()?;
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("auto_agent_sensor_info", "Sensor build and node identity"),
        &["version", "node"],
    )?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[auto_agent_shared::VERSION, &args.node_name])
        .set(1);

    let shutdown = Shutdown::new();
    shutdown.spawn_signal_handler()?;
    let readiness = Readiness::new();
    // No watches exist yet, so there is nothing to wait for before reporting ready.
    readiness.set(true);
    tracing::info!(node = %args.node_name, version = auto_agent_shared::VERSION, "Sensor started");
    AdminServer::new(readiness, registry)
        .serve(args.admin.admin_addr, shutdown)
        .await?;
    tracing::info!("Sensor stopped");
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
