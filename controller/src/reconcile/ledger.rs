//! The action ledger: budget, cooldown and loop state kept in the cluster (a ConfigMap in the
//! controller's namespace), so a new leader sees what the old one did.
//!
//! Every live action is reserved in the ledger *before* it is executed, with an optimistic-concurrency
//! update (resourceVersion): a failed action still counts (conservative), and two replicas that both
//! believe they lead cannot both spend the last token. Each write compacts the history first
//! (`engine::decide::ledger::compact`): the newest records stay exact, older ones are folded into
//! tallies that never count fewer actions, and nothing inside a window is dropped; the JSON stays
//! under 900 KiB by construction, so the ConfigMap never reaches its 1 MiB limit.

use auto_agent_engine::decide::ledger::compact;
use auto_agent_engine::decide::{ActionRecord, History};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;

const KEY: &str = "actions.json";

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
    metrics: ControllerMetrics,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("name", &self.name).finish()
    }
}

impl Ledger {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        leadership: Leadership,
        metrics: ControllerMetrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            leadership,
            metrics,
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
        let compacted = compact(history, now_ms)?;
        let bytes = compacted.json.len();
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
            data: Some([(KEY.to_owned(), compacted.json)].into()),
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
            Ok(_) => {
                self.metrics.ledger_bytes.set(gauge(bytes));
                self.metrics.ledger_level.set(gauge(compacted.level));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
impl Ledger {
    /// The ledger `auto-agent/ledger` on a fake API, fenced by `leadership`.
    pub(crate) fn fake(
        client: &Client,
        leadership: &Leadership,
        metrics: &ControllerMetrics,
    ) -> Self {
        Self::new(
            client.clone(),
            "auto-agent",
            "ledger",
            leadership.clone(),
            metrics.clone(),
        )
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeApi, FakeLeader, metrics};
    use auto_agent_engine::decide::ActionKind;
    use auto_agent_engine::decide::ledger::KEEP_MS;
    use serde_json::json;

    const PATH: &str = "/api/v1/namespaces/auto-agent/configmaps";

    fn record(at_ms: i64) -> ActionRecord {
        ActionRecord {
            at_ms,
            action: ActionKind::RestartPod,
            target: "Deployment/prod/api".into(),
            namespace: "prod".into(),
            policy: "prod/api".into(),
            incident: "pod/prod/Deployment/api/CrashLoopBackOff".into(),
        }
    }

    fn stored(history: &History, version: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "ledger", "namespace": "auto-agent", "resourceVersion": version},
               "data": {KEY: serde_json::to_string(history).unwrap()}})
    }

    fn ledger(api: &FakeApi, leading: bool) -> (Ledger, FakeLeader) {
        let (ledger, leader, _) = ledger_with_metrics(api, leading);
        (ledger, leader)
    }

    fn ledger_with_metrics(
        api: &FakeApi,
        leading: bool,
    ) -> (Ledger, FakeLeader, ControllerMetrics) {
        let m = metrics();
        let leader = FakeLeader::new(&m, leading);
        (
            Ledger::fake(&api.client(), &leader.leadership, &m),
            leader,
            m,
        )
    }

    #[tokio::test]
    async fn a_missing_ledger_reads_empty_and_the_first_reservation_creates_it() {
        let api = FakeApi::default();
        api.on(
            "GET",
            &format!("{PATH}/ledger"),
            vec![FakeApi::not_found(404)],
        )
        .on("POST", PATH, vec![(201, stored(&History::default(), "1"))]);
        let (ledger, _leader, m) = ledger_with_metrics(&api, true);
        let (history, version) = ledger.load().await.unwrap();
        assert!(history.records.is_empty());
        assert_eq!(version, None);
        assert!(
            ledger
                .reserve_all(history, version, vec![record(5)], 5)
                .await
                .unwrap()
        );
        let created = api.seen_with("POST", PATH);
        assert_eq!(created.len(), 1);
        let json = created[0].body["data"][KEY].as_str().unwrap();
        let written: History = serde_json::from_str(json).unwrap();
        assert_eq!(written.records, vec![record(5)]);
        assert_eq!(m.ledger_bytes.get(), json.len() as i64);
        assert_eq!(m.ledger_level.get(), 0);
    }

    #[tokio::test]
    async fn an_existing_ledger_is_replaced_at_its_version_and_a_conflict_is_no_reservation() {
        let mut old = History::default();
        old.record(record(1));
        let api = FakeApi::default();
        api.on(
            "GET",
            &format!("{PATH}/ledger"),
            vec![(200, stored(&old, "7"))],
        )
        .on("PUT", &format!("{PATH}/ledger"), vec![FakeApi::conflict()]);
        let (ledger, _leader) = ledger(&api, true);
        let (history, version) = ledger.load().await.unwrap();
        assert_eq!(history.records.len(), 1);
        assert_eq!(version.as_deref(), Some("7"));
        let reserved = ledger
            .reserve_all(history, version, vec![record(2)], 2)
            .await
            .unwrap();
        assert!(!reserved, "a 409 must not count as reserved");
        let put = api.seen_with("PUT", "/ledger");
        assert_eq!(put[0].body["metadata"]["resourceVersion"], "7");
    }

    #[tokio::test]
    async fn records_past_the_longest_window_are_pruned_on_write() {
        let api = FakeApi::default();
        api.on("POST", PATH, vec![(201, stored(&History::default(), "1"))]);
        let (ledger, _leader) = ledger(&api, true);
        let mut old = History::default();
        old.record(record(0));
        let now = KEEP_MS + 10;
        ledger
            .reserve_all(old, None, vec![record(now)], now)
            .await
            .unwrap();
        let body = &api.seen_with("POST", PATH)[0].body;
        let written: History = serde_json::from_str(body["data"][KEY].as_str().unwrap()).unwrap();
        assert_eq!(written.records, vec![record(now)]);
    }

    #[tokio::test]
    async fn a_replica_that_does_not_lead_writes_nothing() {
        let api = FakeApi::default();
        let (ledger, _leader) = ledger(&api, false);
        let err = ledger
            .reserve_all(History::default(), None, vec![record(1)], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Fenced), "{err}");
        assert!(api.seen().is_empty(), "{:?}", api.seen());
    }
}
