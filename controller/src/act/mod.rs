//! Act: execute one planned action, leader-only through the fence, idempotent, re-reading the target
//! right before writing. The payloads are typed (`engine::decide::PlannedAction`), so nothing here
//! parses a target back from a string.
//!
//! - `pod`: restart (the evidence bundle is written before the pod is deleted)
//! - `workload`: memory bump, image mirror, scale subresource
//! - `node`: cordon, one eviction attempt, uncordon (the retry policy around evictions belongs to
//!   the node reconcile)

pub mod node;
pub mod pod;
pub mod workload;

use std::sync::Arc;

use auto_agent_evidence::{Keeper, SaveError};
use kube::Client;

use crate::platform::leader::Leadership;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("not the leader any more")]
    Fenced,
    #[error("the condition cleared before acting")]
    Cleared,
    #[error("evidence bundle not saved, so the pod is kept: {0}")]
    Bundle(Box<SaveError>),
    #[error("API call failed: {0}")]
    Api(#[from] kube::Error),
    #[error("cannot act on {0}")]
    Unsupported(String),
}

impl From<SaveError> for ActError {
    fn from(e: SaveError) -> Self {
        Self::Bundle(Box::new(e))
    }
}

impl ActError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fenced => "fenced",
            Self::Cleared => "condition_cleared",
            Self::Bundle(_) => "bundle",
            Self::Api(_) => "api",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// What an executed action did, for the Event.
#[derive(Debug)]
pub struct Done {
    pub note: String,
}

pub struct Executor {
    pub client: Client,
    /// A client without kube's automatic 429 retry, so a PodDisruptionBudget's refusal of an
    /// eviction is seen at once.
    pub eviction_client: Client,
    pub leadership: Leadership,
    pub evidence: Arc<Keeper>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("evidence", &self.evidence.durability)
            .finish()
    }
}

impl Executor {
    /// Refuses (and counts) the write unless this replica holds the lease with margin.
    fn fence(&self, what: &str) -> Result<(), ActError> {
        self.leadership.fence(what).map_err(|_| ActError::Fenced)
    }
}
