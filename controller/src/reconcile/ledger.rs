//! The action ledger: budget, cooldown and loop state kept in the cluster (a ConfigMap in the
//! controller's namespace), so a new leader sees what the old one did.
//!
//! Every live action is reserved in the ledger *before* it is executed, with an optimistic-concurrency
//! update (resourceVersion): a failed action still counts (conservative), and two replicas that both
//! believe they lead cannot both spend the last token. Records older than the longest window are
//! pruned on write; the ConfigMap stays far below its 1 MiB limit.

use auto_agent_engine::decide::{ActionRecord, History};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::platform::leader::Leadership;

const KEY: &str = "actions.json";
/// Longest budget window kept (7 days).
const KEEP_MS: i64 = 7 * 24 * 3_600_000;
/// Most records kept, newest last.
const MAX_RECORDS: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("reading or writing the ledger: {0}")]
    Api(#[from] kube::Error),
    #[error("the ledger is not valid JSON: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("not the leader")]
    Fenced,
}

#[derive(Clone)]
pub struct Ledger {
    api: Api<ConfigMap>,
    name: String,
    leadership: Leadership,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("name", &self.name).finish()
    }
}

impl Ledger {
    pub fn new(client: Client, namespace: &str, name: &str, leadership: Leadership) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            leadership,
        }
    }

    /// The current history and the ConfigMap's resourceVersion (None: no ledger yet).
    pub async fn load(&self) -> Result<(History, Option<String>), LedgerError> {
        match self.api.get_opt(&self.name).await? {
            Some(cm) => {
                let history = match cm.data.as_ref().and_then(|d| d.get(KEY)) {
                    Some(json) => serde_json::from_str(json)?,
                    None => History::default(),
                };
                Ok((history, cm.metadata.resource_version))
            }
            None => Ok((History::default(), None)),
        }
    }

    /// Appends `record` if the ledger is still at `version`; `Ok(false)` on a conflict (reload and
    /// decide again).
    pub async fn reserve(
        &self,
        history: History,
        version: Option<String>,
        record: ActionRecord,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.reserve_all(history, version, vec![record], now_ms)
            .await
    }

    /// Appends every record of a plan in one write; `Ok(false)` on a conflict.
    pub async fn reserve_all(
        &self,
        mut history: History,
        version: Option<String>,
        records: Vec<ActionRecord>,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        for record in records {
            history.record(record);
        }
        history.prune(now_ms, KEEP_MS);
        if history.records.len() > MAX_RECORDS {
            let excess = history.records.len() - MAX_RECORDS;
            history.records.drain(..excess);
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: version.clone(),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "auto-agent".to_owned(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([(KEY.to_owned(), serde_json::to_string(&history)?)].into()),
            ..ConfigMap::default()
        };
        self.leadership
            .fence("ledger")
            .map_err(|_| LedgerError::Fenced)?;
        let result = match version {
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &cm)
                    .await
            }
            None => self.api.create(&PostParams::default(), &cm).await,
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
