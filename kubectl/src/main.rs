//! The `kubectl-auto_agent` binary (krew naming: `kubectl auto-agent ...`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = auto_agent_kubectl::cli::Cli::parse();
    match auto_agent_kubectl::cli::run(cli).await {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            auto_agent_kubectl::cli::Exit::Error.into()
        }
    }
}
