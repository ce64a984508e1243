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

/// The history a ledger ConfigMap holds (empty when it has none yet).
pub fn history_of(cm: &ConfigMap) -> Result<History, serde_json::Error> {
    match cm.data.as_ref().and_then(|d| d.get(KEY)) {
        Some(json) => serde_json::from_str(json),
        None => Ok(History::default()),
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
            Some(cm) => Ok((history_of(&cm)?, cm.metadata.resource_version)),
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
    use auto_agent_engine::decide::ledger::{
        EXACT_MAX_BYTES, INCIDENT_KEEP_MS, KEEP_MS, LEDGER_MAX_BYTES,
    };
    use auto_agent_engine::decide::{ActionKind, BudgetLimit, BudgetScope};
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

    #[tokio::test]
    async fn a_ledger_of_the_previous_version_loads_and_is_compacted_on_the_next_write() {
        // What the previous version wrote: records only, the oldest without a namespace, more
        // than the exact part keeps.
        let now: i64 = 1_750_000_000_000;
        let mut records = Vec::new();
        for i in 0..3_000_i64 {
            let mut r = record(now - KEEP_MS + 1 + i * 200_000);
            if i % 3 == 0 {
                r.namespace = String::new();
                r.action = ActionKind::ScaleUp;
            }
            r.target = format!("Deployment/prod/api-{}", i % 40);
            records.push(serde_json::to_value(&r).unwrap());
        }
        let old = json!({"records": records}).to_string();
        assert!(old.len() > EXACT_MAX_BYTES, "{}", old.len());
        let api = FakeApi::default();
        api.on(
            "GET",
            &format!("{PATH}/ledger"),
            vec![(200, json!({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "ledger", "namespace": "auto-agent", "resourceVersion": "41"},
                              "data": {KEY: old}}))],
        )
        .on("PUT", &format!("{PATH}/ledger"), vec![(200, stored(&History::default(), "42"))]);
        let (ledger, _leader, m) = ledger_with_metrics(&api, true);
        let (history, version) = ledger.load().await.unwrap();
        assert_eq!(history.records.len(), 3_000);
        assert!(
            ledger
                .reserve_all(history.clone(), version, vec![record(now)], now)
                .await
                .unwrap()
        );
        let put = api.seen_with("PUT", "/ledger");
        assert_eq!(put[0].body["metadata"]["resourceVersion"], "41");
        let json = put[0].body["data"][KEY].as_str().unwrap();
        let written: History = serde_json::from_str(json).unwrap();
        assert!(!written.folded.is_empty(), "the older records are folded");
        assert!(written.records.len() < 3_000 && written.records.contains(&record(now)));
        assert_eq!(m.ledger_bytes.get(), json.len() as i64);
        assert_eq!(m.ledger_level.get(), 0);
        // Every budget counts at least what it counted on the old ledger (and the new record).
        let mut with_new = history;
        with_new.record(record(now));
        for scope in [
            BudgetScope::Target,
            BudgetScope::Namespace,
            BudgetScope::Policy,
            BudgetScope::Cluster,
        ] {
            for action in [ActionKind::RestartPod, ActionKind::ScaleUp] {
                for window_ms in [60_000, 3_600_000, 86_400_000, KEEP_MS] {
                    let limit = BudgetLimit {
                        action,
                        scope,
                        max: 0,
                        window_ms,
                    };
                    for later in [0, 30_000, 3_600_000] {
                        let (t, p, at) = ("Deployment/prod/api-7", "prod/api", now + later);
                        let before = with_new.used(&limit, t, p, at);
                        let after = written.used(&limit, t, p, at);
                        assert!(after >= before, "{limit:?} at +{later}: {after} < {before}");
                    }
                }
            }
        }
    }

    /// The largest ledger the defaults allow: the default `--cluster-budgets`, each spent to the
    /// full over the longest window a budget can have (the CRD's 7 days), spread over 10,000
    /// workloads with the longest names Kubernetes allows, each in a namespace and under a policy
    /// of its own, and 1,000 nodes.
    fn worst_case(now: i64) -> History {
        let entries: Vec<String> = crate::args::DEFAULT_CLUSTER_BUDGETS
            .split(',')
            .map(str::to_owned)
            .collect();
        let limits = crate::args::cluster_budgets(&entries).unwrap();
        let long = |c: char, n: usize, i: usize| format!("{i:05}{}", c.to_string().repeat(n - 5));
        let mut history = History::default();
        for limit in limits {
            let spent = i64::from(limit.max) * KEEP_MS / limit.window_ms;
            for j in 0..spent {
                let at = now - KEEP_MS + 1 + j * KEEP_MS / spent;
                let i = usize::try_from(j * 7_919).unwrap() % 10_000;
                let record =
                    if matches!(limit.action, ActionKind::EvictPod | ActionKind::CordonNode) {
                        let node = long('n', 253, i % 1_000);
                        ActionRecord {
                            at_ms: at,
                            action: limit.action,
                            target: format!("Node//{node}"),
                            namespace: String::new(),
                            policy: long('q', 253, 0),
                            incident: format!("node/{node}/MemoryPressure"),
                        }
                    } else {
                        let (ns, name) = (long('s', 63, i), long('w', 253, i));
                        ActionRecord {
                            at_ms: at,
                            action: limit.action,
                            target: format!("StatefulSet/{ns}/{name}"),
                            namespace: ns.clone(),
                            policy: format!("{ns}/{}", long('p', 253, i)),
                            incident: format!(
                                "pod/{ns}/StatefulSet/{name}/{}",
                                limit.action.as_str()
                            ),
                        }
                    };
                history.record(record);
            }
        }
        history.records.sort_by_key(|r| r.at_ms);
        history
    }

    #[tokio::test]
    async fn the_worst_case_at_ten_thousand_workloads_fits_with_a_day_per_workload() {
        let now: i64 = 1_750_000_000_000;
        let full = worst_case(now);
        let workloads: std::collections::BTreeSet<&str> = full
            .records
            .iter()
            .filter(|r| !r.target.starts_with("Node/"))
            .map(|r| r.target.as_str())
            .collect();
        assert_eq!(workloads.len(), 10_000);
        let raw = serde_json::to_string(&full).unwrap().len();
        // Written through the ledger, as a reservation would.
        let api = FakeApi::default();
        api.on(
            "PUT",
            &format!("{PATH}/ledger"),
            vec![(200, stored(&History::default(), "2"))],
        );
        let (ledger, _leader, m) = ledger_with_metrics(&api, true);
        let started = std::time::Instant::now();
        let reserved = ledger.reserve_all(full.clone(), Some("1".into()), vec![], now);
        assert!(reserved.await.unwrap());
        let took = started.elapsed();
        let json = api.seen_with("PUT", "/ledger")[0].body["data"][KEY]
            .as_str()
            .unwrap()
            .to_owned();
        let level = m.ledger_level.get();
        let c = auto_agent_engine::decide::ledger::Compacted {
            history: serde_json::from_str(&json).unwrap(),
            json,
            level: usize::try_from(level).unwrap(),
        };
        println!(
            "{} records ({raw} bytes as records) -> {} bytes at level {level} ({} exact, {} tallies) in {took:?}",
            full.records.len(),
            c.json.len(),
            c.history.records.len(),
            c.history.folded.tallies().count(),
        );
        assert_eq!(m.ledger_bytes.get(), c.json.len() as i64);
        assert!(c.json.len() <= LEDGER_MAX_BYTES, "{} bytes", c.json.len());
        // Every workload keeps its own count for the last day; only actions older than a day
        // count against every workload (level 1).
        assert_eq!(level, 1);
        // The writes that follow, at the same pace (one every 10.5 s): what every reservation costs
        // (the load parses it, the write compacts and serialises it).
        let mut written = c.clone();
        let mut took = Vec::new();
        for k in 1..=20_i64 {
            let at = now + k * 10_500;
            let started = std::time::Instant::now();
            let mut next: History = serde_json::from_str(&written.json).unwrap();
            let mut r = full.records[usize::try_from(k).unwrap()].clone();
            r.at_ms = at;
            next.record(r);
            written = auto_agent_engine::decide::ledger::compact(next, at).unwrap();
            took.push(started.elapsed());
            assert!(
                written.json.len() <= LEDGER_MAX_BYTES,
                "{}",
                written.json.len()
            );
        }
        took.sort();
        println!(
            "each next write: {} bytes at level {}, {:?} (median of 20: load, compact, serialise)",
            written.json.len(),
            written.level,
            took[took.len() / 2]
        );
        // Inside the last day, each workload's budgets count exactly what it did (to the slot).
        for r in full.records.iter().rev().take(2_000) {
            let limit = BudgetLimit {
                action: r.action,
                scope: BudgetScope::Target,
                max: 0,
                window_ms: 86_400_000 - 3_600_000,
            };
            let want = full.used(&limit, &r.target, &r.policy, now);
            let got = c.history.used(&limit, &r.target, &r.policy, now);
            assert!(
                got >= want && got <= want + 1,
                "{}: {got} vs {want}",
                r.target
            );
        }
    }

    /// The `maximum` of every property called `name` (under a property called `under`, if given)
    /// in a JSON schema.
    fn maxima(schema: &serde_json::Value, name: &str, under: Option<&str>, out: &mut Vec<f64>) {
        if let Some(items) = schema.as_array() {
            for item in items {
                maxima(item, name, under, out);
            }
        }
        let Some(object) = schema.as_object() else {
            return;
        };
        for (key, value) in object {
            if key == "properties" {
                for (property, sub) in value.as_object().into_iter().flatten() {
                    if property == name && under.is_none() {
                        out.extend(sub["maximum"].as_f64());
                    }
                    let inside = under.is_none_or(|u| property == u);
                    maxima(sub, name, if inside { None } else { under }, out);
                }
            } else {
                maxima(value, name, under, out);
            }
        }
    }

    #[test]
    fn the_ledger_keeps_what_the_longest_window_and_cooldown_allowed_need() {
        let crds: Vec<serde_json::Value> = auto_agent_shared::crd::all()
            .iter()
            .map(|(_, crd)| serde_json::to_value(crd).unwrap())
            .collect();
        // (property, under, how long the ledger keeps what it needs)
        let cases = [
            // Budget windows count per target, namespace and policy for the whole window.
            ("windowSeconds", Some("budgets"), KEEP_MS, 2),
            // Incident cooldowns look at the incident's last action.
            ("cooldownSeconds", None, INCIDENT_KEEP_MS, 1),
            // Scaling cooldowns look at the workload's last scaling.
            ("cooldownUpSeconds", None, KEEP_MS, 1),
            ("cooldownDownSeconds", None, KEEP_MS, 1),
        ];
        for (name, under, kept_ms, found) in cases {
            let mut all = Vec::new();
            for crd in &crds {
                maxima(crd, name, under, &mut all);
            }
            assert_eq!(all.len(), found, "{name}: {all:?}");
            for max in all {
                assert!(max * 1000.0 <= kept_ms as f64, "{name} reaches {max} s");
            }
        }
        // Cluster budgets have the same bound.
        let entry = |w: i64| vec![format!("RestartPod=1/{w}")];
        assert!(crate::args::cluster_budgets(&entry(KEEP_MS / 1000)).is_ok());
        assert!(crate::args::cluster_budgets(&entry(KEEP_MS / 1000 + 1)).is_err());
    }
}
