//! auto-agent-controller: the leader-elected half of auto-agent (Deployment, 2+ replicas). The
//! library (`auto_agent_controller`) holds the stages; this binary only parses flags and starts it.

#![forbid(unsafe_code)]

use auto_agent_controller::args::Args;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    auto_agent_controller::app::run(args).await
}
