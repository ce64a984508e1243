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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeApi, FakeLeader, metrics};
    use auto_agent_engine::decide::ActionKind;
    use serde_json::json;

    const CM: &str = "/api/v1/namespaces/auto-agent/configmaps/ledger";

    fn cm(version: &str) -> (u16, serde_json::Value) {
        (
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "ledger", "resourceVersion": version}, "data": {}}),
        )
    }

    fn record(now: i64) -> ActionRecord {
        ActionRecord {
            at_ms: now,
            action: ActionKind::ScaleUp,
            target: "Deployment/prod/api".into(),
            namespace: "prod".into(),
            policy: "prod/api".into(),
            incident: "i".into(),
        }
    }

    fn ledger(api: &FakeApi) -> (Ledger, FakeLeader) {
        let m = metrics();
        let leader = FakeLeader::new(&m, true);
        (Ledger::fake(&api.client(), &leader.leadership, &m), leader)
    }

    #[tokio::test]
    async fn a_conflict_decides_again_on_the_new_ledger() {
        let api = FakeApi::default();
        api.on("GET", CM, vec![cm("1"), cm("2"), cm("3")]).on(
            "PUT",
            CM,
            vec![FakeApi::conflict(), FakeApi::conflict(), cm("4")],
        );
        let (ledger, _l) = ledger(&api);
        let mut decided = 0;
        let settled = decide_and_reserve(&ledger, |_, now| {
            decided += 1;
            Verdict::Reserve(vec![record(now)], decided)
        })
        .await
        .unwrap();
        assert_eq!(settled, Settled::Reserved(3));
        let versions: Vec<_> = api
            .seen_with("PUT", CM)
            .iter()
            .map(|s| s.body["metadata"]["resourceVersion"].clone())
            .collect();
        assert_eq!(versions, [json!("1"), json!("2"), json!("3")]);
    }

    #[tokio::test]
    async fn a_ledger_that_keeps_changing_gives_up_after_three_decisions() {
        let api = FakeApi::default();
        api.on("GET", CM, vec![cm("1")])
            .on("PUT", CM, vec![FakeApi::conflict()]);
        let (ledger, _l) = ledger(&api);
        let mut decided = 0;
        let err = decide_and_reserve(&ledger, |_, now| {
            decided += 1;
            Verdict::Reserve(vec![record(now)], ())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ReserveError::KeptChanging));
        assert_eq!(err.category(), "ledger");
        assert_eq!(decided, ATTEMPTS);
    }

    #[tokio::test]
    async fn a_decision_that_reserves_nothing_writes_nothing() {
        let api = FakeApi::default();
        api.on("GET", CM, vec![cm("1")]);
        let (ledger, _l) = ledger(&api);
        let settled = decide_and_reserve(&ledger, |_, _| Verdict::<&str>::Stop("refused"))
            .await
            .unwrap();
        assert_eq!(settled, Settled::Stopped("refused"));
        assert!(api.seen_with("PUT", CM).is_empty() && api.seen_with("POST", "").is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_ledger_is_no_decision() {
        let api = FakeApi::default();
        api.on(
            "GET",
            CM,
            vec![(
                500,
                json!({"kind": "Status", "code": 500, "message": "etcd down"}),
            )],
        );
        let (ledger, _l) = ledger(&api);
        let mut decided = false;
        let err = decide_and_reserve(&ledger, |_, _| {
            decided = true;
            Verdict::Stop(())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, ReserveError::Ledger(LedgerError::Api(_))),
            "{err}"
        );
        assert!(!decided, "decided without the ledger");
    }
}
