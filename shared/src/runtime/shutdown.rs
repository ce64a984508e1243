//! Graceful shutdown: the first SIGTERM/SIGINT starts a drain, a second one aborts it.

use tokio_util::sync::CancellationToken;

/// Cancelled when the process should stop. Clone it into every task that must drain.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks select on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts the shutdown from inside the process (e.g. a fatal task ended).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Watches SIGTERM and SIGINT: the first cancels the token, the second exits the process at
    /// once (the operator gave up on the drain).
    pub fn spawn_signal_handler(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "Shutting down; a second signal aborts the drain"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "Shutting down; a second signal aborts the drain"),
            }
            token.cancel();
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("Second signal: exiting without draining");
            std::process::exit(130);
        });
        Ok(())
    }
}
