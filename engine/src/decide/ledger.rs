//! The action ledger's bounded form. The controller keeps the `History` as JSON in one ConfigMap,
//! which must stay under 1 MiB whatever happens; this module decides what it keeps, with the
//! clock as an input.
//!
//! - The newest records stay exact (`History::records`), as many as fit in `EXACT_MAX_BYTES`.
//! - Older records are folded into tallies (`History::folded`): per action, a count of actions
//!   with the same target, namespace, policy and incident (each kept as a 12-hex-digit digest)
//!   whose times lie in one slot. A slot is 1 minute for actions up to an hour old, 1 hour up to
//!   a day, 1 day beyond. A tally keeps its first and last second (rounded outwards).
//! - Every query counts a tally whenever one of its actions may lie in the window (its last second
//!   after the window's start, its first no later than now). So a budget, a loop count or a
//!   cooldown on the folded history never sees fewer actions, or an earlier last one, than on the
//!   records; at level 0 a spent token returns at most one slot late.
//! - Nothing inside a window is dropped: a record or tally leaves only when its last action is
//!   older than the longest window any rule has (`KEEP_MS`, the 7 days of the budgets' bounds);
//!   a tally forgets its incident (which then matches every incident) after `INCIDENT_KEEP_MS`,
//!   the longest cooldown.
//! - When the ledger would still exceed `LEDGER_MAX_BYTES`, it coarsens instead of dropping:
//!   `level` 1 collapses the keys of tallies older than a day (their actions then count against
//!   every target, namespace, policy and incident: long budgets turn conservative), level 2 of
//!   those older than an hour, level 3 of all. Level 3 is at most 93 tallies per action
//!   (`COARSEST_MAX_BYTES`), so the ledger fits by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ActionKind;
use super::budget::{ActionRecord, History, Key};
use crate::incident::short_digest;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The longest window any rule looks back: budget windows reach 7 days (the CRD's and
/// `--cluster-budgets`' bound). Nothing younger is dropped.
pub const KEEP_MS: i64 = 7 * DAY_MS;
/// The longest look-back per incident: cooldowns reach a day (`cooldownSeconds` <= 86400), loop
/// detection an hour.
pub const INCIDENT_KEEP_MS: i64 = DAY_MS;
const _: () = assert!(super::rules::LOOP_WINDOW_MS <= INCIDENT_KEEP_MS);
/// The newest records kept exactly, in bytes of JSON.
pub const EXACT_MAX_BYTES: usize = 64 * 1024;
/// The most the ledger's JSON may take: 1 MiB is the ConfigMap's limit, the rest is margin for
/// its metadata.
pub const LEDGER_MAX_BYTES: usize = 900 * 1024;
/// Coarsening levels, 0 (every tally keeps its keys) to `LEVELS - 1` (no tally keeps them).
pub const LEVELS: usize = 4;
/// The most the tallies take at the last level, whatever came in: with no keys there are at most
/// 93 per action (one for the future, 61 minutes, 24 hours, 7 days), each under 70 bytes of JSON
/// (`["","","","",first,span,count],`), and the names of the actions.
pub const COARSEST_MAX_BYTES: usize = ActionKind::ALL.len() * (93 * 70 + 20);
const _: () = assert!(EXACT_MAX_BYTES + COARSEST_MAX_BYTES + 64 <= LEDGER_MAX_BYTES);

/// Actions folded together. On the wire a JSON array:
/// `[target, namespace, policy, incident, first second, seconds to the last, count]`, each key a
/// digest (`short_digest`), or empty for "any".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TallyWire", into = "TallyWire")]
pub struct Tally {
    pub target: String,
    pub namespace: String,
    pub policy: String,
    pub incident: String,
    /// The first action's second (rounded down) and the last action's (rounded up).
    pub first_s: i64,
    pub last_s: i64,
    pub count: u32,
}

type TallyWire = (String, String, String, String, i64, i64, u32);

impl From<TallyWire> for Tally {
    fn from((target, namespace, policy, incident, first_s, span_s, count): TallyWire) -> Self {
        Self {
            target,
            namespace,
            policy,
            incident,
            first_s,
            last_s: first_s.saturating_add(span_s.max(0)),
            count,
        }
    }
}

impl From<Tally> for TallyWire {
    fn from(t: Tally) -> Self {
        let span = t.last_s.saturating_sub(t.first_s);
        (
            t.target,
            t.namespace,
            t.policy,
            t.incident,
            t.first_s,
            span,
            t.count,
        )
    }
}

impl Tally {
    /// One record as a tally of one.
    pub fn of(r: &ActionRecord) -> Self {
        Self {
            target: short_digest(&r.target),
            namespace: short_digest(r.target_namespace()),
            policy: short_digest(&r.policy),
            incident: short_digest(&r.incident),
            first_s: r.at_ms.div_euclid(1000),
            last_s: r.at_ms.saturating_neg().div_euclid(1000).saturating_neg(),
            count: 1,
        }
    }

    pub fn first_ms(&self) -> i64 {
        self.first_s.saturating_mul(1000)
    }

    pub fn last_ms(&self) -> i64 {
        self.last_s.saturating_mul(1000)
    }

    /// Whether one of its actions may have been taken in `(since_ms, now_ms]`.
    fn may_lie_in(&self, since_ms: i64, now_ms: i64) -> bool {
        self.last_ms() > since_ms && self.first_ms() <= now_ms
    }

    fn keys(&self) -> [&str; 4] {
        [&self.target, &self.namespace, &self.policy, &self.incident]
    }

    /// Whether its actions may be under `key` (an empty key stands for any).
    fn may_be_under(&self, key: &Matcher) -> bool {
        match key {
            Matcher::Any => true,
            Matcher::Field(i, digest) => {
                let stored = self.keys()[*i];
                stored.is_empty() || stored == digest
            }
        }
    }

    fn absorb(&mut self, other: &Tally) {
        self.first_s = self.first_s.min(other.first_s);
        self.last_s = self.last_s.max(other.last_s);
        self.count = self.count.saturating_add(other.count);
    }
}

/// A `Key` as it is looked for in tallies: which field, and the digest it must have.
enum Matcher {
    Any,
    Field(usize, String),
}

impl From<Key<'_>> for Matcher {
    fn from(key: Key<'_>) -> Self {
        match key {
            Key::Target(t) => Matcher::Field(0, short_digest(t)),
            Key::Namespace(ns) => Matcher::Field(1, short_digest(ns)),
            Key::Policy(p) => Matcher::Field(2, short_digest(p)),
            Key::Incident(i) => Matcher::Field(3, short_digest(i)),
            Key::Cluster => Matcher::Any,
        }
    }
}

/// The folded part of a history: tallies per action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Folded(pub BTreeMap<ActionKind, Vec<Tally>>);

impl Folded {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(Vec::is_empty)
    }

    fn of<'a>(&'a self, actions: &'a [ActionKind]) -> impl Iterator<Item = &'a Tally> + 'a {
        actions
            .iter()
            .flat_map(|a| self.0.get(a).into_iter().flatten())
    }

    /// Actions of one of `actions` under `key` that may lie in `(since_ms, now_ms]`.
    pub fn count(&self, actions: &[ActionKind], key: Key<'_>, since_ms: i64, now_ms: i64) -> u32 {
        let key = Matcher::from(key);
        self.of(actions)
            .filter(|t| t.may_lie_in(since_ms, now_ms) && t.may_be_under(&key))
            .fold(0u32, |n, t| n.saturating_add(t.count))
    }

    /// The latest second (in ms) an action of one of `actions` under `key` may have been taken.
    pub fn last(&self, actions: &[ActionKind], key: Key<'_>) -> Option<i64> {
        let key = Matcher::from(key);
        self.of(actions)
            .filter(|t| t.may_be_under(&key))
            .map(Tally::last_ms)
            .max()
    }

    /// Every tally, with its action.
    pub fn tallies(&self) -> impl Iterator<Item = (ActionKind, &Tally)> {
        self.0
            .iter()
            .flat_map(|(a, ts)| ts.iter().map(move |t| (*a, t)))
    }

    pub(crate) fn add(&mut self, action: ActionKind, tally: Tally) {
        self.0.entry(action).or_default().push(tally);
    }
}

/// A history made to fit, its JSON, and how coarse it had to become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub history: History,
    pub json: String,
    pub level: usize,
}

/// The history to write at `now_ms`: records past every window dropped, the newest kept exactly,
/// the rest folded, coarsened no more than it takes to fit in `LEDGER_MAX_BYTES`.
pub fn compact(history: History, now_ms: i64) -> Result<Compacted, serde_json::Error> {
    let mut history = fold(history, now_ms)?;
    let mut level = 0;
    loop {
        history = coarsen(history, now_ms, level);
        let json = serde_json::to_string(&history)?;
        if json.len() <= LEDGER_MAX_BYTES || level + 1 >= LEVELS {
            return Ok(Compacted {
                history,
                json,
                level,
            });
        }
        level += 1;
    }
}

/// Drops the records past every window and folds all but the newest `EXACT_MAX_BYTES` of them
/// into one tally each (not merged yet: `coarsen` does that).
pub fn fold(history: History, now_ms: i64) -> Result<History, serde_json::Error> {
    let History {
        mut records,
        mut folded,
    } = history;
    records.retain(|r| r.at_ms > now_ms.saturating_sub(KEEP_MS));
    records.sort_by_key(|r| r.at_ms);
    let mut exact_from = records.len();
    let mut bytes = 0;
    for r in records.iter().rev() {
        bytes += serde_json::to_string(r)?.len() + 1;
        if bytes > EXACT_MAX_BYTES {
            break;
        }
        exact_from -= 1;
    }
    let exact = records.split_off(exact_from);
    for r in &records {
        folded.add(r.action, Tally::of(r));
    }
    Ok(History {
        records: exact,
        folded,
    })
}

/// Merges the tallies that share their keys and slot at `level`; drops those past every window
/// and forgets the incident of those past every cooldown. Merging only ever widens a tally's
/// span and adds its counts, so every query answers the same or more conservatively.
pub fn coarsen(history: History, now_ms: i64, level: usize) -> History {
    let History { records, folded } = history;
    let mut merged: BTreeMap<(ActionKind, [String; 4], i64, i64), Tally> = BTreeMap::new();
    for (action, tallies) in folded.0 {
        for mut t in tallies {
            let age = now_ms.saturating_sub(t.last_ms());
            if age >= KEEP_MS {
                continue;
            }
            if age >= INCIDENT_KEEP_MS {
                t.incident.clear();
            }
            if collapses(level, age) {
                t.target.clear();
                t.namespace.clear();
                t.policy.clear();
                t.incident.clear();
            }
            let (width, slot) = match slot_seconds(age) {
                Some(w) => (w, t.last_s.div_euclid(w)),
                None => (0, 0),
            };
            let keys = [
                t.target.clone(),
                t.namespace.clone(),
                t.policy.clone(),
                t.incident.clone(),
            ];
            merged
                .entry((action, keys, width, slot))
                .and_modify(|m| m.absorb(&t))
                .or_insert(t);
        }
    }
    let mut folded = Folded::default();
    for ((action, ..), t) in merged {
        folded.add(action, t);
    }
    History { records, folded }
}

/// The slot of a tally whose last action is `age_ms` old; `None` for one in the future (another
/// replica's clock ahead of ours): those all share one.
fn slot_seconds(age_ms: i64) -> Option<i64> {
    match age_ms {
        a if a < 0 => None,
        a if a < HOUR_MS => Some(60),
        a if a < DAY_MS => Some(3_600),
        _ => Some(86_400),
    }
}

/// Whether a tally whose last action is `age_ms` old loses its keys at `level`.
fn collapses(level: usize, age_ms: i64) -> bool {
    match level {
        0 => false,
        1 => age_ms >= DAY_MS,
        2 => age_ms >= HOUR_MS,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::BudgetScope;

    const NOW: i64 = 1_750_000_000_000;
    const MIN_MS: i64 = 60_000;

    /// A small deterministic pseudo-random source (no clock, no seed from outside).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    fn rec(
        at_ms: i64,
        action: ActionKind,
        target: &str,
        policy: &str,
        incident: &str,
    ) -> ActionRecord {
        ActionRecord {
            at_ms,
            action,
            target: target.into(),
            namespace: namespace_of_target(target),
            policy: policy.into(),
            incident: incident.into(),
        }
    }

    fn namespace_of_target(target: &str) -> String {
        crate::decide::budget::namespace_of(target).into()
    }

    /// A history of these records only.
    fn of(records: Vec<ActionRecord>) -> History {
        History {
            records,
            ..History::default()
        }
    }

    /// Every record folded into a tally of its own.
    fn all_folded(records: &[ActionRecord]) -> History {
        let mut folded = Folded::default();
        for r in records {
            folded.add(r.action, Tally::of(r));
        }
        History {
            records: vec![],
            folded,
        }
    }

    /// `n` records spread over the last 8 days (some past every window, a few from a clock
    /// ahead), on 30 workloads in 5 namespaces plus 4 nodes, under 4 policies.
    fn random_history(n: usize, seed: u64) -> Vec<ActionRecord> {
        let mut rng = Lcg(seed);
        let recorded = [
            ActionKind::RestartPod,
            ActionKind::BumpMemory,
            ActionKind::MirrorImage,
            ActionKind::EvictPod,
            ActionKind::CordonNode,
            ActionKind::ScaleUp,
            ActionKind::ScaleDown,
        ];
        let mut out: Vec<ActionRecord> = (0..n)
            .map(|_| {
                // Dense in the last hours, sparse further back, like a real ledger.
                let back = match rng.below(4) {
                    0 => rng.below(2 * 3_600_000),
                    1 => rng.below(26 * 3_600_000),
                    _ => rng.below(8 * 24 * 3_600_000),
                };
                let at = NOW - i64::try_from(back).unwrap_or(0) + 30_000;
                let action = recorded[rng.below(7) as usize];
                let (target, policy) =
                    if matches!(action, ActionKind::EvictPod | ActionKind::CordonNode) {
                        (format!("Node//n{}", rng.below(4)), "nodes".to_string())
                    } else {
                        let w = rng.below(30);
                        (
                            format!("Deployment/ns{}/w{w}", w % 5),
                            format!("ns{}/p{}", w % 5, rng.below(4)),
                        )
                    };
                let incident = format!("{target}/{}", rng.below(3));
                rec(at, action, &target, &policy, &incident)
            })
            .collect();
        out.sort_by_key(|r| r.at_ms);
        out
    }

    /// Every key the random histories use, and one they never use.
    fn keys() -> Vec<(BudgetScope, String, String)> {
        let mut out = vec![(BudgetScope::Cluster, String::new(), String::new())];
        for w in 0..30 {
            out.push((
                BudgetScope::Target,
                format!("Deployment/ns{}/w{w}", w % 5),
                String::new(),
            ));
        }
        for n in 0..4 {
            out.push((BudgetScope::Target, format!("Node//n{n}"), String::new()));
        }
        for ns in 0..6 {
            out.push((
                BudgetScope::Namespace,
                format!("Deployment/ns{ns}/x"),
                String::new(),
            ));
        }
        out.push((BudgetScope::Namespace, "Node//n0".into(), String::new()));
        for ns in 0..5 {
            for p in 0..5 {
                out.push((BudgetScope::Policy, String::new(), format!("ns{ns}/p{p}")));
            }
        }
        out.push((BudgetScope::Policy, String::new(), "nodes".into()));
        out
    }

    #[test]
    fn a_tally_counts_whenever_one_of_its_actions_may_lie_in_the_window() {
        let t = Tally {
            target: String::new(),
            namespace: String::new(),
            policy: String::new(),
            incident: String::new(),
            first_s: 100,
            last_s: 200,
            count: 3,
        };
        // (since_ms, now_ms, counted)
        let cases = [
            (0, 300_000, true),
            (199_999, 300_000, true),
            // The window starts at the last action: none of them is inside.
            (200_000, 300_000, false),
            (150_000, 160_000, true),
            (0, 100_000, true),
            // Now is before the first action.
            (0, 99_999, false),
        ];
        for (since, now, want) in cases {
            assert_eq!(t.may_lie_in(since, now), want, "({since}, {now}]");
        }
        // Merged, it counts wherever either part would (a clock behind ours asks before the
        // later part).
        let later = Tally {
            first_s: 500,
            last_s: 600,
            count: 2,
            ..t.clone()
        };
        for (a, b) in [(&t, &later), (&later, &t)] {
            let mut merged = a.clone();
            merged.absorb(b);
            assert_eq!((merged.first_s, merged.last_s, merged.count), (100, 600, 5));
            for since in (0..700_000).step_by(50_000) {
                for now in (since..700_000).step_by(50_000) {
                    if a.may_lie_in(since, now) || b.may_lie_in(since, now) {
                        assert!(merged.may_lie_in(since, now), "({since}, {now}]");
                    }
                }
            }
        }
        // Rounded outwards: an action at 1.5 s lies in the second 1..2.
        let one = Tally::of(&rec(
            1_500,
            ActionKind::RestartPod,
            "Deployment/a/b",
            "a/p",
            "i",
        ));
        assert_eq!((one.first_s, one.last_s), (1, 2));
        let whole = Tally::of(&rec(
            -2_000,
            ActionKind::RestartPod,
            "Deployment/a/b",
            "a/p",
            "i",
        ));
        assert_eq!((whole.first_s, whole.last_s), (-2, -2));
    }

    #[test]
    fn a_tally_is_a_json_array_and_reads_back() {
        let t = Tally::of(&rec(
            NOW,
            ActionKind::ScaleUp,
            "Deployment/prod/api",
            "prod/p",
            "i",
        ));
        let mut folded = Folded::default();
        folded.add(ActionKind::ScaleUp, t.clone());
        let json = serde_json::to_string(&folded).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"ScaleUp":[["{}","{}","{}","{}",{},0,1]]}}"#,
                short_digest("Deployment/prod/api"),
                short_digest("prod"),
                short_digest("prod/p"),
                short_digest("i"),
                NOW / 1000
            )
        );
        let back: Folded = serde_json::from_str(&json).unwrap();
        assert_eq!(back, folded);
    }

    #[test]
    fn a_ledger_of_the_previous_version_loads_and_compacts() {
        // The previous version wrote records only, some without a namespace.
        let json = r#"{"records":[
            {"at_ms":1750000000000,"action":"RestartPod","target":"Deployment/prod/api","policy":"prod/p","incident":"i"},
            {"at_ms":1750000001000,"action":"ScaleUp","target":"Deployment/prod/api","namespace":"prod","policy":"prod/p","incident":"s"}
        ]}"#;
        let old: History = serde_json::from_str(json).unwrap();
        assert_eq!(old.records.len(), 2);
        assert!(old.folded.is_empty());
        let now = 1_750_000_002_000;
        let compacted = compact(old.clone(), now).unwrap();
        assert_eq!(compacted.history, old, "small ledgers stay records only");
        assert_eq!(compacted.level, 0);
        // Written in the same shape: no "folded" until something is folded.
        assert!(!compacted.json.contains("folded"), "{}", compacted.json);
        let again: History = serde_json::from_str(&compacted.json).unwrap();
        assert_eq!(again, old);
        // Its folded form counts the old record's namespace from its target.
        let folded = all_folded(&old.records);
        let prod = BudgetLimit {
            action: ActionKind::RestartPod,
            scope: BudgetScope::Namespace,
            max: 1,
            window_ms: 3_600_000,
        };
        assert_eq!(folded.used(&prod, "Deployment/prod/web", "x/y", now), 1);
        assert_eq!(folded.used(&prod, "Deployment/dev/web", "x/y", now), 0);
    }

    use crate::decide::BudgetLimit;

    /// What every rule asks of a history at `now`: budget counts per action, window and key,
    /// whether a target's or an incident's cooldown runs, and loop counts.
    fn answers(h: &History, now: i64, incidents: &[&str]) -> Vec<(String, i64)> {
        let windows = [
            MIN_MS,
            MIN_MS + 1_000,
            3_600_000,
            2 * 3_600_000 + 17_000,
            DAY_MS,
            3 * DAY_MS,
            KEEP_MS,
        ];
        let cooldowns = [1_000, 300_000, 3_600_000, DAY_MS];
        let runs =
            |last: Option<i64>, cooldown: i64| i64::from(last.is_some_and(|l| now - l < cooldown));
        let mut out = Vec::new();
        for action in ActionKind::ALL {
            for (scope, target, policy) in keys() {
                for window_ms in windows {
                    let limit = BudgetLimit {
                        action,
                        scope,
                        max: 0,
                        window_ms,
                    };
                    let used = h.used(&limit, &target, &policy, now);
                    out.push((format!("{limit:?} {target}{policy}"), i64::from(used)));
                }
                // Scaling cooldowns look at the workload's last action.
                if scope == BudgetScope::Target {
                    let last = h.last(&[action], Key::Target(&target));
                    for c in cooldowns {
                        out.push((format!("{action:?} {target} cooldown {c}"), runs(last, c)));
                    }
                }
            }
            for incident in incidents {
                let loops = h.repeats(incident, action, now - 3_600_000);
                out.push((format!("{action:?} {incident} loops"), i64::from(loops)));
            }
        }
        for incident in incidents {
            let last = h.last_for_incident(incident);
            for c in cooldowns {
                out.push((format!("{incident} cooldown {c}"), runs(last, c)));
            }
        }
        out
    }

    #[test]
    fn compaction_never_counts_fewer_actions_than_the_records() {
        for seed in [1, 2] {
            let records = random_history(800, seed);
            let incidents: std::collections::BTreeSet<&str> =
                records.iter().map(|r| r.incident.as_str()).collect();
            let incidents: Vec<&str> = incidents.into_iter().collect();
            let full = of(records.clone());
            // What `compact` writes (the newest records exact), and every record folded at
            // every level.
            let mut variants = vec![(
                "written".to_string(),
                coarsen(fold(full.clone(), NOW).unwrap(), NOW, 0),
            )];
            for level in 0..LEVELS {
                variants.push((
                    format!("level {level}"),
                    coarsen(all_folded(&records), NOW, level),
                ));
            }
            // Decisions come at the compaction and later, on what it wrote.
            for later in [0, 45 * MIN_MS, DAY_MS] {
                let now = NOW + later;
                let want = answers(&full, now, &incidents);
                for (how, c) in &variants {
                    let got = answers(c, now, &incidents);
                    for ((what, want), (_, got)) in want.iter().zip(&got) {
                        assert!(
                            got >= want,
                            "seed {seed}, {how}, {later} ms later: {what}: {got} < {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_inside_a_window_is_dropped() {
        let mut records = random_history(3_000, 7);
        // Right at both edges of the longest window.
        records.insert(
            0,
            rec(
                NOW - KEEP_MS,
                ActionKind::RestartPod,
                "Deployment/a/b",
                "a/p",
                "i",
            ),
        );
        records.insert(
            1,
            rec(
                NOW - KEEP_MS + 1,
                ActionKind::RestartPod,
                "Deployment/a/b",
                "a/p",
                "i",
            ),
        );
        let inside = records.iter().filter(|r| r.at_ms > NOW - KEEP_MS).count();
        assert!(inside < records.len(), "some records are past every window");
        let folded = fold(of(records.clone()), NOW).unwrap();
        for level in 0..LEVELS {
            let c = coarsen(folded.clone(), NOW, level);
            let total: u64 = c.records.len() as u64
                + c.folded
                    .tallies()
                    .map(|(_, t)| u64::from(t.count))
                    .sum::<u64>();
            assert_eq!(
                total, inside as u64,
                "level {level}: every action inside the window is kept"
            );
            // Each action of the longest window still counts in it, cluster-wide.
            let everything = c.count(&ActionKind::ALL, Key::Cluster, NOW - KEEP_MS, i64::MAX);
            assert_eq!(everything as usize, inside, "level {level}");
            // The one just inside still counts for its workload (alone while it keeps its keys).
            let its = c.count(
                &[ActionKind::RestartPod],
                Key::Target("Deployment/a/b"),
                NOW - KEEP_MS,
                NOW - KEEP_MS + DAY_MS,
            );
            assert!(its >= 1, "level {level}");
            assert!(level > 0 || its == 1, "level {level}: {its}");
        }
        // A day later the oldest day is gone, and only that.
        let later = NOW + DAY_MS;
        let c = coarsen(folded, later, 0);
        let kept: u64 = c.records.len() as u64
            + c.folded
                .tallies()
                .map(|(_, t)| u64::from(t.count))
                .sum::<u64>();
        let slot = 86_400_000;
        let lower = records.iter().filter(|r| r.at_ms > later - KEEP_MS).count() as u64;
        let upper = records
            .iter()
            .filter(|r| r.at_ms > later - KEEP_MS - slot)
            .count() as u64;
        assert!(
            (lower..=upper).contains(&kept),
            "{lower} <= {kept} <= {upper}"
        );
    }

    #[test]
    fn level_zero_returns_a_token_at_most_one_slot_late() {
        let records = random_history(2_000, 11);
        let full = of(records.clone());
        let c = coarsen(all_folded(&records), NOW, 0);
        // (window, the slot of the actions at its start)
        let cases = [
            (MIN_MS, MIN_MS),
            (10 * MIN_MS + 500, MIN_MS),
            (3_600_000 - 1_000, MIN_MS),
            (2 * 3_600_000, 3_600_000),
            (DAY_MS - 1_000, 3_600_000),
            (2 * DAY_MS, DAY_MS),
            (KEEP_MS - DAY_MS, DAY_MS),
        ];
        for (window, slot) in cases {
            for action in ActionKind::ALL {
                for (scope, target, policy) in keys() {
                    let limit = |w| BudgetLimit {
                        action,
                        scope,
                        max: 0,
                        window_ms: w,
                    };
                    let got = c.used(&limit(window), &target, &policy, NOW);
                    let bound = full.used(&limit(window + slot), &target, &policy, NOW);
                    assert!(
                        got <= bound,
                        "{action:?} {scope:?} {target}{policy} over {window}: {got} > {bound}"
                    );
                }
            }
        }
        // Tallies merge.
        assert!(c.folded.tallies().count() < records.len());
    }

    #[test]
    fn each_level_collapses_the_keys_of_older_tallies_only() {
        // (level, age, keys kept, incident kept)
        let cases = [
            (0, 0, true, true),
            (0, DAY_MS, true, false),
            (0, KEEP_MS - 1_000, true, false),
            (1, DAY_MS - 1_000, true, true),
            (1, DAY_MS, false, false),
            (2, 3_600_000 - 1_000, true, true),
            (2, 3_600_000, false, false),
            (3, 0, false, false),
            (3, -5_000, false, false),
            (1, -5_000, true, true),
        ];
        for (level, age, keys_kept, incident_kept) in cases {
            let r = rec(
                NOW - age,
                ActionKind::RestartPod,
                "Deployment/a/b",
                "a/p",
                "i",
            );
            let c = coarsen(all_folded(&[r]), NOW, level);
            let tallies: Vec<_> = c.folded.tallies().collect();
            assert_eq!(tallies.len(), 1, "level {level} age {age}");
            let t = tallies[0].1;
            assert_eq!(!t.target.is_empty(), keys_kept, "level {level} age {age}");
            assert_eq!(!t.policy.is_empty(), keys_kept, "level {level} age {age}");
            assert_eq!(
                !t.incident.is_empty(),
                incident_kept,
                "level {level} age {age}"
            );
            // Kept or collapsed, it still counts for its own workload and incident.
            let target = Key::Target("Deployment/a/b");
            assert_eq!(
                c.count(
                    &[ActionKind::RestartPod],
                    target,
                    NOW - age - 1,
                    NOW + 10_000
                ),
                1
            );
            let other = Key::Target("Deployment/a/c");
            let for_other = c.count(
                &[ActionKind::RestartPod],
                other,
                NOW - age - 1,
                NOW + 10_000,
            );
            assert_eq!(for_other == 1, !keys_kept, "level {level} age {age}");
        }
        // Past the longest window, gone.
        let r = rec(
            NOW - KEEP_MS,
            ActionKind::RestartPod,
            "Deployment/a/b",
            "a/p",
            "i",
        );
        assert!(coarsen(all_folded(&[r]), NOW, 0).folded.is_empty());
    }

    #[test]
    fn the_ledger_fits_by_construction() {
        // Far more actions than any budget allows, each on its own target, namespace, policy and
        // incident with the longest names Kubernetes allows, spread over the whole window and
        // some from a clock an hour ahead.
        let long = |c: char, n: usize, i: usize| format!("{i}{}", c.to_string().repeat(n - 6));
        let mut rng = Lcg(3);
        let records: Vec<ActionRecord> = (0..20_000)
            .map(|i| {
                let ns = long('n', 63, i);
                let name = long('w', 253, i);
                // Most in the last hour (or the next), the rest over the whole window.
                let range = if i % 4 == 0 { KEEP_MS } else { 3_600_000 };
                let back = i64::try_from(rng.below((range + 3_600_000) as u64)).unwrap_or(0);
                rec(
                    NOW + 3_600_000 - back,
                    ActionKind::ALL[i % 8],
                    &format!("StatefulSet/{ns}/{name}"),
                    &format!("{ns}/{}", long('p', 253, i)),
                    &format!("pod/{ns}/StatefulSet/{name}/CrashLoopBackOff"),
                )
            })
            .collect();
        let c = compact(of(records), NOW).unwrap();
        assert!(c.json.len() <= LEDGER_MAX_BYTES, "{} bytes", c.json.len());
        assert_eq!(c.level, LEVELS - 1);
        // The coarsest level is the exact records and at most 93 slots per action (one for the
        // future, 61 minutes, 24 hours, 7 days), whatever came in.
        let tallies = c.history.folded.tallies().count();
        assert!(tallies <= 8 * 93, "{tallies} tallies");
        let folded_bytes = serde_json::to_string(&c.history.folded).unwrap().len();
        assert!(folded_bytes <= COARSEST_MAX_BYTES, "{folded_bytes}");
        let exact_bytes = serde_json::to_string(&c.history.records).unwrap().len();
        assert!(exact_bytes <= EXACT_MAX_BYTES + 2, "{exact_bytes}");
        let back: History = serde_json::from_str(&c.json).unwrap();
        assert_eq!(back, c.history);
    }

    #[test]
    fn compact_stays_as_fine_as_fits() {
        let records = random_history(3_000, 5);
        let c = compact(of(records), NOW).unwrap();
        assert_eq!(c.level, 0);
        assert!(!c.history.folded.is_empty());
        let exact = serde_json::to_string(&c.history.records).unwrap().len();
        assert!(exact <= EXACT_MAX_BYTES + 2, "{exact}");
        assert!(
            exact > EXACT_MAX_BYTES - 1_000,
            "the exact part is used: {exact}"
        );
        assert_eq!(c.json, serde_json::to_string(&c.history).unwrap());
        // The newest are the exact ones.
        let oldest_exact = c.history.records.first().map(|r| r.at_ms).unwrap();
        assert!(
            c.history
                .folded
                .tallies()
                .all(|(_, t)| t.first_ms() <= oldest_exact)
        );
    }
}
