//! The GitOps stage (leader only): each proposal becomes one branch and one pull request per
//! incident key, delivered off the action path with retries, its record kept in the cluster so a
//! new leader carries on and an outage loses nothing.
//!
//! A delivery: the incident's branch (created from the base when missing), the file read on it,
//! the plan (`auto_agent_gitops::proposal::plan`), one commit when the file must change, then
//! the pull request found by its branch: opened, or described again with a comment on a repeat.
//! A merged pull request ends the record; one closed by a human is respected (declined) and not
//! reopened; one whose change the cluster already runs is closed with a comment. The agent never
//! merges.

use std::collections::BTreeMap;
use std::time::Duration;

use auto_agent_forge::{Forge, ForgeError, PullState};
use auto_agent_gitops::proposal::{self, Plan, Proposal};
use auto_agent_gitops::target::Change;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Request;
use super::route::{Provider, Route};
use crate::platform::events::EventSink;
use crate::platform::leader::Leadership;
use crate::platform::metrics::ControllerMetrics;
use crate::platform::records::{Keyed, Store, Stored};
use crate::policies::recent::{Entry, PolicyRef};
use auto_agent_shared::crd::ActionOutcome;

/// Longest wait between attempts of a proposal a retry can fix.
const MAX_BACKOFF_MS: i64 = 300_000;
/// Wait after a failure a human must fix (token, file, key, protected branch).
const PERMANENT_BACKOFF_MS: i64 = 600_000;
/// Merged or declined records are kept this long (a recurrence meanwhile is not proposed again).
const RETENTION_MS: i64 = 86_400_000;
/// Records kept at most; the oldest finished ones make room first.
const MAX_RECORDS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// Being proposed (or open).
    Open,
    /// Merged by a human: done.
    Merged,
    /// Closed by a human: respected, not reopened.
    Declined,
    /// Closed by the agent: the cluster runs the change already.
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullRef {
    pub number: u64,
    pub url: String,
}

/// One incident's proposal, as kept in its ConfigMap.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProposalRecord {
    pub key: String,
    pub route: Route,
    /// The changes of the incident's latest plan (a memory bump may change the limit and the
    /// request): one commit, one pull request.
    pub proposals: Vec<Proposal>,
    pub event_on: ObjectReference,
    pub status: Status,
    /// Occurrences seen; `delivered` below it means a delivery is owed.
    pub seen: u32,
    pub delivered: u32,
    pub pull: Option<PullRef>,
    /// The diff of the last commit, for the description.
    pub diff: String,
    pub attempts: u32,
    pub next_at_ms: i64,
    pub last_error: Option<String>,
    pub updated_ms: i64,
    /// Which branch of the incident this proposal uses: a merged or declined pull request keeps
    /// its branch, so the next proposal of the same incident takes the next one.
    #[serde(default)]
    pub generation: u32,
    /// The policy whose status shows the outcomes.
    #[serde(default)]
    pub policy: super::Shown,
}

/// Branches tried past finished pull requests of earlier proposals, at most, per delivery.
const MAX_GENERATIONS_PER_DELIVERY: u32 = 20;

/// The incident's branch for a generation: `auto-agent/<hash>`, then `auto-agent/<hash>-1`, ...
pub fn branch_of(key: &str, generation: u32) -> String {
    match generation {
        0 => proposal::branch(key),
        n => format!("{}-{n}", proposal::branch(key)),
    }
}

impl Keyed for ProposalRecord {
    fn key(&self) -> &str {
        &self.key
    }
}

/// The clients per forge (the installation's tokens).
#[derive(Clone, Debug, Default)]
pub struct Forges {
    pub github: Option<Forge>,
    pub gitlab: Option<Forge>,
    pub gitea: Option<Forge>,
}

impl Forges {
    fn get(&self, p: Provider) -> Option<&Forge> {
        match p {
            Provider::GitHub => self.github.as_ref(),
            Provider::GitLab => self.gitlab.as_ref(),
            Provider::Gitea => self.gitea.as_ref(),
        }
    }
}

pub struct Stage {
    pub client: Client,
    pub store: Store<ProposalRecord>,
    pub leadership: Leadership,
    pub metrics: ControllerMetrics,
    pub events: EventSink,
    /// The policies' `status.recentActions`.
    pub recent: crate::policies::recent::RecentActions,
    pub forges: Forges,
    /// How often open proposals are compared with what the cluster runs.
    pub check_every: Duration,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").finish_non_exhaustive()
    }
}

type Records = BTreeMap<String, Stored<ProposalRecord>>;

fn now_ms() -> i64 {
    auto_agent_shared::clock::now_ms()
}

/// Why a delivery stopped, and when to try again.
struct Failure {
    category: &'static str,
    reason: String,
    retry_in_ms: i64,
    /// A human must act (an Event says what).
    permanent: bool,
}

impl Failure {
    fn forge(e: &ForgeError, attempts: u32) -> Self {
        let retry_in_ms = if e.retryable() {
            e.retry_after()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(MAX_BACKOFF_MS))
                .unwrap_or_else(|| 1000i64.saturating_mul(1 << attempts.min(9)))
                .min(MAX_BACKOFF_MS)
        } else {
            PERMANENT_BACKOFF_MS
        };
        Self {
            category: e.category(),
            reason: e.to_string(),
            retry_in_ms,
            permanent: !e.retryable(),
        }
    }

    fn plan(reason: String) -> Self {
        Self {
            category: "plan",
            reason,
            retry_in_ms: PERMANENT_BACKOFF_MS,
            permanent: true,
        }
    }
}

impl Stage {
    pub async fn run(self, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
        let mut leadership = self.leadership.clone();
        let mut records: Option<Records> = None;
        let mut waiting: Vec<Request> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = leadership.changed() => {
                    if !leadership.is_leader() && records.is_some() {
                        tracing::info!("Not leading: GitOps proposals are the next leader's");
                        records = None;
                    }
                }
                request = rx.recv() => {
                    let Some(request) = request else { break };
                    if waiting.len() < 4096 {
                        waiting.push(request);
                    } else {
                        self.metrics.gitops_proposals.with_label_values(&["dropped"]).inc();
                    }
                }
                _ = tick.tick() => {}
            }
            if !self.load(&mut records).await {
                continue;
            }
            let Some(recs) = records.as_mut() else {
                continue;
            };
            for request in std::mem::take(&mut waiting) {
                self.on_request(recs, request).await;
            }
            if last_check.elapsed() >= self.check_every {
                last_check = tokio::time::Instant::now();
                self.check(recs).await;
            }
            self.deliver_due(recs).await;
            self.metrics.gitops_pending.set(
                recs.values()
                    .filter(|s| {
                        s.record.status == Status::Open && s.record.delivered < s.record.seen
                    })
                    .count() as i64,
            );
        }
    }

    async fn load(&self, records: &mut Option<Records>) -> bool {
        if !self.leadership.is_leader() {
            return false;
        }
        if records.is_some() {
            return true;
        }
        match self.store.load_all().await {
            Ok(loaded) => {
                tracing::info!(records = loaded.len(), "GitOps proposals loaded");
                *records = Some(loaded);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "Loading GitOps proposals failed; trying again");
                false
            }
        }
    }

    async fn on_request(&self, recs: &mut Records, request: Request) {
        let now = now_ms();
        let Some(key) = request.proposals.first().map(|p| p.incident.clone()) else {
            return;
        };
        let stored = match recs.remove(&key) {
            Some(mut s) => {
                let r = &mut s.record;
                match r.status {
                    Status::Open => {
                        r.seen = r.seen.saturating_add(1);
                    }
                    // The change landed and the incident came back: a new proposal, on the
                    // incident's next branch.
                    Status::Merged | Status::Resolved => {
                        r.status = Status::Open;
                        r.generation = r.generation.saturating_add(1);
                        r.seen = 1;
                        r.delivered = 0;
                        r.pull = None;
                        r.diff.clear();
                        r.attempts = 0;
                        r.last_error = None;
                    }
                    Status::Declined => {
                        tracing::info!(incident = %key, "A human closed this incident's pull request; not proposing again");
                    }
                }
                if r.status == Status::Open {
                    r.proposals = request.proposals;
                    r.route = request.route;
                    r.event_on = request.event_on;
                    r.policy = request.policy;
                    // A new occurrence is delivered now, not after an earlier failure's wait.
                    r.next_at_ms = now;
                }
                r.updated_ms = now;
                s
            }
            None => {
                if recs.len() >= MAX_RECORDS && !self.evict_one(recs).await {
                    self.metrics
                        .gitops_proposals
                        .with_label_values(&["dropped"])
                        .inc();
                    tracing::warn!(incident = %key, "Too many GitOps proposals kept; this one is dropped");
                    return;
                }
                Stored {
                    record: ProposalRecord {
                        key: key.clone(),
                        route: request.route,
                        proposals: request.proposals,
                        event_on: request.event_on,
                        status: Status::Open,
                        seen: 1,
                        delivered: 0,
                        pull: None,
                        diff: String::new(),
                        attempts: 0,
                        next_at_ms: now,
                        last_error: None,
                        updated_ms: now,
                        generation: 0,
                        policy: request.policy,
                    },
                    version: None,
                }
            }
        };
        self.keep(recs, stored).await;
    }

    /// Makes room: the oldest finished record goes.
    async fn evict_one(&self, recs: &mut Records) -> bool {
        let oldest = recs
            .values()
            .filter(|s| s.record.status != Status::Open)
            .min_by_key(|s| s.record.updated_ms)
            .map(|s| s.record.key.clone());
        match oldest {
            Some(key) => {
                recs.remove(&key);
                let _ = self.store.delete(&key).await;
                true
            }
            None => false,
        }
    }

    /// Writes a record; on a conflict the stored copy wins and the work is redone from it.
    async fn keep(&self, recs: &mut Records, mut stored: Stored<ProposalRecord>) {
        let key = stored.record.key.clone();
        match self.store.save(&stored).await {
            Ok(version) => stored.version = Some(version),
            Err(e) => {
                tracing::warn!(incident = %key, error = %e, "Writing the GitOps proposal failed; kept in memory and tried again");
                if let Ok(Some(theirs)) = self.store.get(&key).await {
                    stored.version = theirs.version;
                }
            }
        }
        recs.insert(key, stored);
    }

    async fn deliver_due(&self, recs: &mut Records) {
        let now = now_ms();
        let due: Vec<String> = recs
            .values()
            .filter(|s| {
                s.record.status == Status::Open
                    && s.record.delivered < s.record.seen
                    && s.record.next_at_ms <= now
            })
            .map(|s| s.record.key.clone())
            .take(8)
            .collect();
        for key in due {
            let Some(mut stored) = recs.remove(&key) else {
                continue;
            };
            let started = std::time::Instant::now();
            match self.deliver(&mut stored.record).await {
                Ok(outcome) => {
                    let r = &mut stored.record;
                    r.delivered = r.seen;
                    r.attempts = 0;
                    r.last_error = None;
                    r.updated_ms = now_ms();
                    self.metrics
                        .gitops_proposals
                        .with_label_values(&[outcome])
                        .inc();
                    self.metrics
                        .gitops_delivery_latency
                        .observe(started.elapsed().as_secs_f64());
                    let shown = match (outcome, &r.pull) {
                        ("opened" | "updated", Some(p)) => {
                            Some(format!("pull request {} (incident {})", p.url, r.key))
                        }
                        ("not_needed", _) => Some(format!(
                            "{} already asks for it (incident {})",
                            r.route.file, r.key
                        )),
                        _ => None,
                    };
                    if let Some(message) = shown {
                        let reason = match outcome {
                            "opened" => "ProposalOpened",
                            "updated" => "ProposalUpdated",
                            _ => "ProposalNotNeeded",
                        };
                        self.show(r, ActionOutcome::Proposed, reason, &message);
                    }
                }
                Err(f) => {
                    let r = &mut stored.record;
                    r.attempts = r.attempts.saturating_add(1);
                    r.next_at_ms = now_ms() + f.retry_in_ms;
                    self.metrics
                        .gitops_proposals
                        .with_label_values(&[f.category])
                        .inc();
                    // One Event (and status entry) per distinct reason a human must act on.
                    if f.permanent && r.last_error.as_deref() != Some(f.reason.as_str()) {
                        self.show(
                            r,
                            ActionOutcome::Failed,
                            "ProposalFailed",
                            &format!("{} (incident {})", f.reason, r.key),
                        );
                        self.events
                            .publish(
                                &r.event_on,
                                EventType::Warning,
                                "ProposalFailed",
                                format!(
                                    "GitOps proposal for incident {} not delivered to {}:{} ({}): {}; kept and tried again in {} s",
                                    r.key,
                                    r.route.provider.as_str(),
                                    r.route.project,
                                    f.category,
                                    f.reason,
                                    f.retry_in_ms / 1000
                                ),
                            )
                            .await;
                    }
                    tracing::warn!(incident = %r.key, category = f.category, error = %f.reason, retry_in_ms = f.retry_in_ms, "GitOps proposal not delivered");
                    r.last_error = Some(f.reason);
                }
            }
            self.keep(recs, stored).await;
        }
    }

    /// A Normal Event on the workload.
    async fn note(&self, on: &ObjectReference, reason: &str, note: String) {
        self.events
            .publish(on, EventType::Normal, reason, note)
            .await;
    }

    /// The outcome in the policy's `status.recentActions`.
    fn show(&self, r: &ProposalRecord, outcome: ActionOutcome, reason: &str, message: &str) {
        let (Some(kind), false) = (r.policy.action, r.policy.name.is_empty()) else {
            return;
        };
        let target = r.proposals.first().map_or_else(String::new, |p| {
            format!("{}/{}/{}", p.workload.kind, p.namespace, p.workload.name)
        });
        self.recent.record(
            &PolicyRef::Namespaced {
                namespace: r.policy.namespace.clone(),
                name: r.policy.name.clone(),
            },
            &Entry {
                kind,
                outcome,
                target: &target,
                reason,
                message,
            },
        );
    }

    /// One delivery: branch, commit, pull request. Returns the metric outcome.
    async fn deliver(&self, r: &mut ProposalRecord) -> Result<&'static str, Failure> {
        let Some(forge) = self.forges.get(r.route.provider) else {
            return Err(Failure {
                category: "not_configured",
                reason: format!(
                    "no {} token is configured (the chart's tickets.{}.token)",
                    r.route.provider.as_str(),
                    r.route.provider.as_str()
                ),
                retry_in_ms: PERMANENT_BACKOFF_MS,
                permanent: true,
            });
        };
        let (project, base, file) = (
            r.route.project.clone(),
            r.route.base.clone(),
            r.route.file.clone(),
        );
        let (project, base, file) = (&project, &base, &file);
        let label = proposal::label(&r.key);
        let attempts = r.attempts;
        let forge_err = |e: ForgeError| Failure::forge(&e, attempts);
        // The pull request first: one this record made that a human merged or closed ends it;
        // a finished one of an earlier proposal moves this one to the next branch.
        let mut found = None;
        for _ in 0..MAX_GENERATIONS_PER_DELIVERY {
            let branch = branch_of(&r.key, r.generation);
            match forge
                .find_pull(project, &branch, base)
                .await
                .map_err(forge_err)?
            {
                Some(pull) if pull.state != PullState::Open => {
                    let ours = r.pull.as_ref().is_some_and(|p| p.number == pull.number);
                    if ours && pull.state == PullState::Closed {
                        return Ok(self.finished(r, &pull).await);
                    }
                    if ours {
                        // Merged, and the incident is back (a delivery is owed): the next
                        // proposal starts from the merged file on a new branch.
                        self.finished(r, &pull).await;
                        self.metrics
                            .gitops_proposals
                            .with_label_values(&["merged"])
                            .inc();
                        r.status = Status::Open;
                        r.pull = None;
                        r.diff.clear();
                    }
                    r.generation = r.generation.saturating_add(1);
                }
                other => {
                    found = Some(other);
                    break;
                }
            }
        }
        let Some(found) = found else {
            return Err(Failure::plan(format!(
                "{MAX_GENERATIONS_PER_DELIVERY} branches of this incident have finished pull requests"
            )));
        };
        let branch = branch_of(&r.key, r.generation);
        if forge
            .branch_head(project, &branch)
            .await
            .map_err(forge_err)?
            .is_none()
        {
            forge
                .create_branch(project, &branch, base)
                .await
                .map_err(forge_err)?;
        }
        let at = forge
            .read_file(project, file, &branch)
            .await
            .map_err(forge_err)?;
        // Each change on the text the previous one left: one commit for all of them.
        let mut text = at.content.clone();
        let (mut diff, mut messages) = (String::new(), Vec::new());
        for p in &r.proposals {
            match proposal::plan(file, &text, p, &r.route.paths) {
                Ok(Plan::Commit { edited, message }) => {
                    diff.push_str(&edited.diff(file));
                    messages.push(message);
                    text = edited.text;
                }
                Ok(Plan::Unchanged { .. }) => {}
                Err(e) => return Err(Failure::plan(e.to_string())),
            }
        }
        let committed = text != at.content;
        if committed {
            forge
                .write_file(
                    project,
                    file,
                    &branch,
                    &text,
                    &at.version,
                    &messages.join("\n\n"),
                )
                .await
                .map_err(forge_err)?;
            r.diff = diff;
        }
        let Some(first) = r.proposals.first().cloned() else {
            return Ok("empty");
        };
        let body = proposal::body(&first, file, &r.diff, r.seen);
        match found {
            None if !committed && r.diff.is_empty() => {
                // The file already asks for this: nothing to propose.
                self.note(
                    &r.event_on,
                    "ProposalNotNeeded",
                    format!(
                        "{}:{} {file} already asks for {}; no pull request for incident {}",
                        r.route.provider.as_str(),
                        project,
                        first.to,
                        r.key
                    ),
                )
                .await;
                Ok("not_needed")
            }
            None => {
                let pull = forge
                    .open_pull(
                        project,
                        &branch,
                        base,
                        &proposal::title(&first),
                        &body,
                        &label,
                    )
                    .await
                    .map_err(forge_err)?;
                self.note(
                    &r.event_on,
                    "ProposalOpened",
                    format!(
                        "Pull request {} proposes {} (incident {})",
                        pull.url, first.to, r.key
                    ),
                )
                .await;
                tracing::info!(incident = %r.key, url = %pull.url, "GitOps pull request opened");
                r.pull = Some(PullRef {
                    number: pull.number,
                    url: pull.url,
                });
                Ok("opened")
            }
            Some(pull) => {
                r.pull = Some(PullRef {
                    number: pull.number,
                    url: pull.url.clone(),
                });
                match pull.state {
                    PullState::Merged | PullState::Closed => Ok(self.finished(r, &pull).await),
                    PullState::Open => {
                        forge
                            .describe_pull(project, pull.number, &body)
                            .await
                            .map_err(forge_err)?;
                        if !committed {
                            let at = crate::evidence::bundle::rfc3339_ms(now_ms());
                            forge
                                .comment_pull(
                                    project,
                                    pull.number,
                                    &proposal::repeat_comment(&first, &at),
                                )
                                .await
                                .map_err(forge_err)?;
                        }
                        self.note(
                            &r.event_on,
                            "ProposalUpdated",
                            format!(
                                "Pull request {} updated: seen {} times (incident {})",
                                pull.url, r.seen, r.key
                            ),
                        )
                        .await;
                        Ok("updated")
                    }
                }
            }
        }
    }

    /// This record's pull request was merged or closed by a human.
    async fn finished(
        &self,
        r: &mut ProposalRecord,
        pull: &auto_agent_forge::PullRequest,
    ) -> &'static str {
        if pull.state == PullState::Merged {
            r.status = Status::Merged;
            return "merged";
        }
        r.status = Status::Declined;
        let note = format!(
            "Pull request {} was closed without merging; incident {} is not proposed again while its record is kept",
            pull.url, r.key
        );
        self.note(&r.event_on, "ProposalDeclined", note).await;
        "declined"
    }

    /// Open proposals whose change the cluster already runs are closed; merged or declined
    /// pull requests end their records; finished records go after the retention.
    async fn check(&self, recs: &mut Records) {
        let now = now_ms();
        let keys: Vec<String> = recs.keys().cloned().collect();
        for key in keys {
            let Some(mut stored) = recs.remove(&key) else {
                continue;
            };
            let r = &mut stored.record;
            if r.status != Status::Open {
                if now - r.updated_ms > RETENTION_MS {
                    let _ = self.store.delete(&key).await;
                } else {
                    recs.insert(key, stored);
                }
                continue;
            }
            let (Some(pull), Some(forge)) = (r.pull.clone(), self.forges.get(r.route.provider))
            else {
                recs.insert(key, stored);
                continue;
            };
            let mut runs = !r.proposals.is_empty();
            for p in &r.proposals {
                runs = runs && self.cluster_runs(p).await;
            }
            if !runs {
                recs.insert(key, stored);
                continue;
            }
            let why = "the cluster already runs the proposed change".to_owned();
            let closed = forge
                .comment_pull(
                    &r.route.project,
                    pull.number,
                    &proposal::closing_comment(&r.key, &why),
                )
                .await
                .and(forge.close_pull(&r.route.project, pull.number).await);
            match closed {
                Ok(()) => {
                    r.status = Status::Resolved;
                    r.updated_ms = now;
                    self.note(
                        &r.event_on,
                        "ProposalResolved",
                        format!(
                            "Pull request {} closed: {why} (incident {})",
                            pull.url, r.key
                        ),
                    )
                    .await;
                    self.metrics
                        .gitops_proposals
                        .with_label_values(&["resolved"])
                        .inc();
                    self.keep(recs, stored).await;
                }
                Err(e) => {
                    tracing::debug!(incident = %key, error = %e, "Closing a resolved proposal failed; tried again later");
                    recs.insert(key, stored);
                }
            }
        }
    }

    /// Whether the workload's template already has the proposed value (merged and synced, or
    /// changed by other means).
    async fn cluster_runs(&self, p: &Proposal) -> bool {
        let Ok(Some(w)) = crate::cluster::workloads::fetch(
            &self.client,
            &p.namespace,
            &p.workload.kind,
            &p.workload.name,
        )
        .await
        else {
            return false;
        };
        let containers = w
            .template
            .and_then(|t| t.spec)
            .map(|s| s.containers)
            .unwrap_or_default();
        let find = |name: &str| containers.iter().find(|c| c.name == name);
        let bytes = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            q.and_then(|q| auto_agent_engine::quantity::parse_bytes(&q.0))
        };
        let want = auto_agent_engine::quantity::parse_bytes(&p.to);
        match &p.change {
            Change::MemoryLimit { container } => find(container)
                .and_then(|c| bytes(c.resources.as_ref()?.limits.as_ref()?.get("memory")))
                .zip(want)
                .is_some_and(|(have, want)| have >= want),
            Change::MemoryRequest { container } => find(container)
                .and_then(|c| bytes(c.resources.as_ref()?.requests.as_ref()?.get("memory")))
                .zip(want)
                .is_some_and(|(have, want)| have >= want),
            Change::Image { container, .. } => {
                find(container).and_then(|c| c.image.as_deref()) == Some(p.to.as_str())
            }
            Change::Replicas => p.to.parse::<i32>().is_ok_and(|to| w.desired == to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_generation_of_an_incident_has_its_own_branch() {
        let key = "pod/shop/Deployment/api/OOMKilled";
        assert_eq!(branch_of(key, 0), proposal::branch(key));
        assert_eq!(branch_of(key, 2), format!("{}-2", proposal::branch(key)));
        assert_ne!(branch_of(key, 1), branch_of(key, 2));
    }

    #[test]
    fn retryable_failures_back_off_and_permanent_ones_wait_for_a_human() {
        let busy = ForgeError::Retry {
            provider: "Gitea",
            status: 503,
            after: None,
        };
        assert_eq!(Failure::forge(&busy, 0).retry_in_ms, 1000);
        assert_eq!(Failure::forge(&busy, 3).retry_in_ms, 8000);
        assert_eq!(Failure::forge(&busy, 30).retry_in_ms, MAX_BACKOFF_MS);
        assert!(!Failure::forge(&busy, 0).permanent);
        let limited = ForgeError::Retry {
            provider: "GitHub",
            status: 429,
            after: Some(Duration::from_secs(42)),
        };
        assert_eq!(Failure::forge(&limited, 5).retry_in_ms, 42_000);
        let denied = ForgeError::Unauthorized {
            provider: "GitHub",
            status: 401,
        };
        let f = Failure::forge(&denied, 0);
        assert!(f.permanent);
        assert_eq!(f.retry_in_ms, PERMANENT_BACKOFF_MS);
        assert_eq!(f.category, "unauthorized");
    }
}
