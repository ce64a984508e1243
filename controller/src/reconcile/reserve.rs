//! The step every reconcile shares between deciding and acting: load the ledger, decide on it, and
//! reserve the decided actions with an optimistic-concurrency write; on a conflict (another write
//! got there first) load and decide again. A decision that reserves nothing (a refusal, a dry-run,
//! a hold) stops without writing.

use auto_agent_engine::decide::{ActionRecord, History};

use crate::reconcile::ledger::{Ledger, LedgerError};

/// Attempts before giving up on a ledger that keeps changing under us.
const ATTEMPTS: usize = 3;

/// What a decision on the current ledger asks for.
#[derive(Debug)]
pub enum Verdict<T> {
    /// Nothing to reserve: report `T` and stop.
    Stop(T),
    /// Reserve these records, then act on `T`.
    Reserve(Vec<ActionRecord>, T),
}

/// What came of it.
#[derive(Debug, PartialEq)]
pub enum Settled<T> {
    Stopped(T),
    /// The records are in the ledger; act now.
    Reserved(T),
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the action ledger kept changing ({ATTEMPTS} attempts)")]
    KeptChanging,
}

impl ReserveError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Ledger(LedgerError::Fenced) => "fenced",
            Self::Ledger(_) | Self::KeptChanging => "ledger",
        }
    }
}

/// Loads the ledger, lets `decide(history, now_ms)` decide, and reserves what it asks for,
/// deciding again on a conflict.
pub async fn decide_and_reserve<T>(
    ledger: &Ledger,
    mut decide: impl FnMut(&History, i64) -> Verdict<T>,
) -> Result<Settled<T>, ReserveError> {
    for _ in 0..ATTEMPTS {
        let (history, version) = ledger.load().await?;
        let now = auto_agent_shared::clock::now_ms();
        match decide(&history, now) {
            Verdict::Stop(t) => return Ok(Settled::Stopped(t)),
            Verdict::Reserve(records, t) => {
                if ledger.reserve_all(history, version, records, now).await? {
                    return Ok(Settled::Reserved(t));
                }
            }
        }
    }
    Err(ReserveError::KeptChanging)
}
