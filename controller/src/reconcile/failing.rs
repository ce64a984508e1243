//! The pods of each workload with a failure the leader knows of, from the findings themselves
//! (pure; the clock is an input). The disruption breaker reads the count, because the workload's
//! `readyReplicas` lags: when every pod of a workload fails within milliseconds, the first decision
//! must already see the storm. Entries age out, since a sensor does not report a pod that is
//! deleted while failing.

use std::collections::HashMap;

/// How long a failing pod counts without a new finding (a crash-looping pod reports every restart,
/// at most five minutes apart).
pub const FAILING_TTL_MS: i64 = 10 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    first_ms: i64,
    last_ms: i64,
}

/// Workload id (`Kind/namespace/name`) -> pod uid -> when it was seen failing.
#[derive(Debug, Default)]
pub struct FailingPods {
    by_workload: HashMap<String, HashMap<String, Seen>>,
}

impl FailingPods {
    /// A pod reported failing (`failing`) or recovered.
    pub fn observe(&mut self, workload: &str, pod_uid: &str, failing: bool, now_ms: i64) {
        if failing {
            let pods = self.by_workload.entry(workload.to_owned()).or_default();
            pods.entry(pod_uid.to_owned())
                .and_modify(|s| s.last_ms = now_ms)
                .or_insert(Seen {
                    first_ms: now_ms,
                    last_ms: now_ms,
                });
        } else {
            self.forget(workload, pod_uid);
        }
    }

    /// The pod is gone (the agent deleted it).
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
                "fail" => f.observe(W, s.pod, true, s.at),
                "recover" => f.observe(W, s.pod, false, s.at),
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
        f.observe(W, "a", true, 100);
        f.observe(W, "a", true, 900);
        assert_eq!(f.age_ms(W, "a", 1_100), 1_000);
        assert_eq!(f.age_ms(W, "b", 1_100), 0);
    }

    #[test]
    fn prune_drops_only_stale_entries() {
        let mut f = FailingPods::default();
        f.observe(W, "a", true, 0);
        f.observe(W, "b", true, FAILING_TTL_MS);
        f.prune(FAILING_TTL_MS + 1);
        assert_eq!(f.count(W, FAILING_TTL_MS + 1), 1);
        assert_eq!(f.age_ms(W, "a", FAILING_TTL_MS + 1), 0);
    }
}
