//! Logging setup: plain text for people, JSON for log pipelines.

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log output format.
    #[arg(long, env = "AUTO_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,auto_agent_controller=debug`.
    #[arg(long, env = "AUTO_AGENT_LOG", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

impl LogArgs {
    /// Installs the global subscriber. Call once, first thing in `main`.
    pub fn init(&self) -> Result<(), LoggingError> {
        let filter =
            EnvFilter::try_new(&self.log_level).map_err(|source| LoggingError::Filter {
                filter: self.log_level.clone(),
                source,
            })?;
        let registry = tracing_subscriber::registry().with(filter);
        match self.log_format {
            LogFormat::Plain => {
                // Colours only on a terminal; log files and pipelines get plain text.
                let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
                registry
                    .with(fmt::layer().with_target(true).with_ansi(ansi))
                    .try_init()?
            }
            LogFormat::Json => registry
                .with(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false),
                )
                .try_init()?,
        }
        Ok(())
    }
}
