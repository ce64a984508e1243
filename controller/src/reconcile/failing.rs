//! The pods of each workload with a failure the leader knows of, from the findings themselves
//! (pure; the clock is an input). The disruption breaker reads the count, because the workload's
//! `readyReplicas` lags: when every pod of a workload fails within milliseconds, the first decision
//! must already see the storm. Entries age out, since a sensor does not report a pod that is
//! deleted while failing; before the count can trip the breaker, the reconcile asks the apiserver
//! whether the other pods still exist (`unconfirmed`, `confirmed`, `forget`), so a failing pod
//! that someone else deleted does not hold the breaker for the whole time to live.

use std::collections::HashMap;

/// How long a failing pod counts without a new finding (a crash-looping pod reports every restart,
/// at most five minutes apart).
pub const FAILING_TTL_MS: i64 = 10 * 60 * 1000;

/// How long the apiserver's word that a failing pod still exists holds: within a storm, every
/// decision on the workload would otherwise read the same pods again.
pub const CONFIRMED_TTL_MS: i64 = 15 * 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    name: String,
    first_ms: i64,
    last_ms: i64,
    /// When the apiserver last showed the pod alive (not deleted, not terminating).
    confirmed_ms: Option<i64>,
}

/// Workload id (`Kind/namespace/name`) -> pod uid -> when it was seen failing.
#[derive(Debug, Default)]
pub struct FailingPods {
    by_workload: HashMap<String, HashMap<String, Seen>>,
}

impl FailingPods {
    /// A pod (`uid`, `name`) reported failing (`failing`) or recovered.
    pub fn observe(&mut self, workload: &str, pod: (&str, &str), failing: bool, now_ms: i64) {
        let (pod_uid, name) = pod;
        if failing {
            let pods = self.by_workload.entry(workload.to_owned()).or_default();
            pods.entry(pod_uid.to_owned())
                .and_modify(|s| s.last_ms = now_ms)
                .or_insert(Seen {
                    name: name.to_owned(),
                    first_ms: now_ms,
                    last_ms: now_ms,
                    confirmed_ms: None,
                });
        } else {
            self.forget(workload, pod_uid);
        }
    }

    /// The workload's counted pods other than `except` (uid, name) whose existence the apiserver
    /// has not confirmed within `CONFIRMED_TTL_MS`.
    pub fn unconfirmed(&self, workload: &str, except: &str, now_ms: i64) -> Vec<(String, String)> {
        let Some(pods) = self.by_workload.get(workload) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = pods
            .iter()
            .filter(|(uid, s)| {
                uid.as_str() != except
                    && now_ms - s.last_ms < FAILING_TTL_MS
                    && s.confirmed_ms
                        .is_none_or(|at| now_ms - at >= CONFIRMED_TTL_MS)
            })
            .map(|(uid, s)| (uid.clone(), s.name.clone()))
            .collect();
        out.sort();
        out
    }

    /// The apiserver showed the pod alive at `now_ms`.
    pub fn confirmed(&mut self, workload: &str, pod_uid: &str, now_ms: i64) {
        if let Some(s) = self
            .by_workload
            .get_mut(workload)
            .and_then(|pods| pods.get_mut(pod_uid))
        {
            s.confirmed_ms = Some(now_ms);
        }
    }

    /// The pod is gone (the agent deleted it, or the apiserver no longer has it).
    pub fn forget(&mut self, workload: &str, pod_uid: &str) {
        if let Some(pods) = self.by_workload.get_mut(workload) {
            pods.remove(pod_uid);
            if pods.is_empty() {
                self.by_workload.remove(workload);
            }
        }
    }

    /// Pods of the workload failing now.
    pub fn count(&self, workload: &str, now_ms: i64) -> u32 {
        self.by_workload.get(workload).map_or(0, |pods| {
            pods.values()
                .filter(|s| now_ms - s.last_ms < FAILING_TTL_MS)
                .count() as u32
        })
    }

    /// How long this pod's failure has been known; 0 when unknown.
    pub fn age_ms(&self, workload: &str, pod_uid: &str, now_ms: i64) -> i64 {
        self.by_workload
            .get(workload)
            .and_then(|pods| pods.get(pod_uid))
            .map_or(0, |s| (now_ms - s.first_ms).max(0))
    }

    /// Drops entries past their time.
    pub fn prune(&mut self, now_ms: i64) {
        self.by_workload.retain(|_, pods| {
            pods.retain(|_, s| now_ms - s.last_ms < FAILING_TTL_MS);
            !pods.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "Deployment/prod/api";

    #[test]
    fn counts_each_failing_pod_once_until_it_recovers_is_deleted_or_ages_out() {
        struct Step {
            op: &'static str,
            pod: &'static str,
            at: i64,
            count: u32,
        }
        let steps = [
            Step {
                op: "fail",
                pod: "a",
                at: 0,
                count: 1,
            },
            Step {
                op: "fail",
                pod: "a",
                at: 10,
                count: 1,
            },
            Step {
                op: "fail",
                pod: "b",
                at: 20,
                count: 2,
            },
            Step {
                op: "fail",
                pod: "c",
                at: 30,
                count: 3,
            },
            Step {
                op: "recover",
                pod: "b",
                at: 40,
                count: 2,
            },
            Step {
                op: "forget",
                pod: "a",
                at: 50,
                count: 1,
            },
            Step {
                op: "none",
                pod: "",
                at: 30 + FAILING_TTL_MS - 1,
                count: 1,
            },
            Step {
                op: "none",
                pod: "",
                at: 30 + FAILING_TTL_MS,
                count: 0,
            },
        ];
        let mut f = FailingPods::default();
        for s in steps {
            match s.op {
                "fail" => f.observe(W, (s.pod, s.pod), true, s.at),
                "recover" => f.observe(W, (s.pod, s.pod), false, s.at),
                "forget" => f.forget(W, s.pod),
                _ => {}
            }
            assert_eq!(
                f.count(W, s.at),
                s.count,
                "after {} {} at {}",
                s.op,
                s.pod,
                s.at
            );
        }
        assert_eq!(f.count("Deployment/prod/other", 0), 0);
    }

    #[test]
    fn age_is_from_the_first_finding_of_the_pod() {
        let mut f = FailingPods::default();
        f.observe(W, ("a", "a"), true, 100);
        f.observe(W, ("a", "a"), true, 900);
        assert_eq!(f.age_ms(W, "a", 1_100), 1_000);
        assert_eq!(f.age_ms(W, "b", 1_100), 0);
    }

    #[test]
    fn prune_drops_only_stale_entries() {
        let mut f = FailingPods::default();
        f.observe(W, ("a", "a"), true, 0);
        f.observe(W, ("b", "b"), true, FAILING_TTL_MS);
        f.prune(FAILING_TTL_MS + 1);
        assert_eq!(f.count(W, FAILING_TTL_MS + 1), 1);
        assert_eq!(f.age_ms(W, "a", FAILING_TTL_MS + 1), 0);
    }

    #[test]
    fn only_other_live_pods_not_confirmed_lately_are_asked_about() {
        struct Case {
            name: &'static str,
            confirm: &'static [(&'static str, i64)],
            at: i64,
            asked: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "never confirmed: every other pod",
                confirm: &[],
                at: 100,
                asked: &["u2", "u3"],
            },
            Case {
                name: "confirmed just now: not again",
                confirm: &[("u2", 100)],
                at: 100,
                asked: &["u3"],
            },
            Case {
                name: "confirmation expired",
                confirm: &[("u2", 100)],
                at: 100 + CONFIRMED_TTL_MS,
                asked: &["u2", "u3"],
            },
            Case {
                name: "confirming an unknown pod changes nothing",
                confirm: &[("u9", 100)],
                at: 100,
                asked: &["u2", "u3"],
            },
            Case {
                name: "aged out: no longer counted, not asked",
                confirm: &[],
                at: 10 + FAILING_TTL_MS,
                asked: &["u3"],
            },
        ];
        for c in cases {
            let mut f = FailingPods::default();
            f.observe(W, ("u1", "api-1"), true, 0);
            f.observe(W, ("u2", "api-2"), true, 10);
            f.observe(W, ("u3", "api-3"), true, 20);
            for (uid, at) in c.confirm {
                f.confirmed(W, uid, *at);
            }
            let asked: Vec<String> = f
                .unconfirmed(W, "u1", c.at)
                .into_iter()
                .map(|(uid, name)| {
                    assert_eq!(name, format!("api-{}", &uid[1..]), "{}", c.name);
                    uid
                })
                .collect();
            assert_eq!(asked, c.asked, "{}", c.name);
        }
        assert!(FailingPods::default().unconfirmed(W, "u1", 0).is_empty());
    }
}
