//! The escalation record of one incident and how signals change it (pure; the clock is an input).
//!
//! A record is what the cluster keeps per incident key: whether the incident is escalated, the
//! routes its policy chose, the facts shown to people, the Slack thread and ticket it already has,
//! and an outbox of deliveries still owed. The controller persists it (one ConfigMap per key), so
//! a new leader finds the same thread and ticket and delivers what the old one still owed.

use serde::{Deserialize, Serialize};

/// Where a policy sends an incident. Empty routes mean no escalation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketRoute>,
    /// Escalate an incident still open this long after the agent acted on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seconds: Option<u32>,
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.slack_channel.is_none() && self.ticket.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TicketProvider {
    GitHub,
    GitLab,
    Gitea,
    Jira,
}

impl TicketProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
            Self::Jira => "jira",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRoute {
    pub provider: TicketProvider,
    /// `owner/name` (GitHub, Gitea), a project path or id (GitLab), a project key (Jira).
    pub project: String,
}

/// What happened to an incident, as the reconcile stages report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// The agent refused an action for a reason a human should look at (`LoopDetected`, ...).
    Refused { reason: String },
    /// An action was tried and failed (`category` is the error's metric label).
    Failed { action: String, category: String },
    /// An action was carried out; the incident is watched for `after_seconds`.
    Acted { action: String },
    /// Another failure of the incident was seen.
    Seen,
    /// The incident is over (a node condition cleared, or a pod workload healthy and quiet).
    Resolved,
}

/// One report about an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    pub incident: String,
    pub at_ms: i64,
    pub kind: SignalKind,
    /// What the agent said about it (the Event note).
    pub note: String,
    pub facts: Facts,
    pub routes: Routes,
}

/// What people are shown about an incident; all of it comes from the API server and the agent's
/// own decisions, never from free text a sensor sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    /// `Deployment/shop/api`, `Node/node-1`.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `namespace/name` or `name` of the policy that chose the routes.
    pub policy: String,
    /// The failure (`CrashLoopBackOff`, `OOMKilled`, `MemoryPressure`, ...).
    pub failure: String,
    /// The evidence bundle's key or URL, when one was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The last lines of the failing container's log, already redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// The object the incident's Events are written on (a workload or a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectRef>,
}

/// A Kubernetes object reference, as far as Events need one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The agent acted; escalate if the incident is still open at `escalate_at_ms`.
    Watching,
    /// People were (or are being) told.
    Escalated,
    /// Over; kept for the reopen window so a recurrence reuses the thread and ticket.
    Resolved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    Slack,
    Ticket,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Ticket => "ticket",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    /// Start the thread / file (or find, or reopen) the ticket.
    Open,
    /// The incident happened again or changed: reply in the thread, comment on the ticket.
    Update,
    /// The incident is over: say so and close the ticket.
    Resolve,
}

/// A message or ticket change still owed to a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub channel: Channel,
    pub what: What,
    /// When it was queued (for the delivery latency).
    pub queued_at_ms: i64,
    /// Not before this time (backoff, Retry-After).
    pub not_before_ms: i64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The Slack thread of an incident (bot token only; webhooks cannot start threads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlackThread {
    pub channel: String,
    pub ts: String,
}

/// The ticket of an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRef {
    pub provider: TicketProvider,
    pub project: String,
    /// The issue number (GitHub, Gitea), iid (GitLab) or key (Jira).
    pub id: String,
    pub url: String,
}

/// An incident summary for one revision of the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub revision: u32,
    pub text: String,
    /// `llm:<model>` or `template`.
    pub source: String,
}

/// A line of the incident's history shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    pub at_ms: i64,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub key: String,
    pub status: Status,
    /// Grows with each change people should hear about; summaries are cached per revision.
    pub revision: u32,
    pub routes: Routes,
    pub facts: Facts,
    /// Why it escalated (`BudgetExhausted`, `ActionFailed`, `StillOpen`, ...).
    #[serde(default)]
    pub reason: String,
    pub opened_at_ms: i64,
    pub last_at_ms: i64,
    /// The last failure seen (for the quiet period before a pod incident counts as resolved).
    pub last_failure_ms: i64,
    /// The last action the agent carried out on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_acted_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<i64>,
    /// Failures seen since the escalation.
    #[serde(default)]
    pub repeats: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Line>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackThread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Delivery>,
}

/// Settings of the pure rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// A recurrence this soon after resolving reopens the same thread and ticket.
    pub reopen_window_ms: i64,
    /// History lines kept per record.
    pub max_history: usize,
    /// Characters kept per history line and per log line.
    pub max_line_chars: usize,
    /// Log lines kept.
    pub max_log_lines: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            reopen_window_ms: 24 * 3600 * 1000,
            max_history: 20,
            max_line_chars: 300,
            max_log_lines: 20,
        }
    }
}

/// What applying a signal did, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to keep (no routes, or a signal about an incident that was never escalated).
    Ignored,
    /// The record changed but nobody needs to hear yet.
    Recorded,
    /// Deliveries were queued.
    Queued,
    /// The record is over and can be deleted.
    Forget,
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

impl Record {
    fn new(signal: &Signal) -> Self {
        Self {
            key: signal.incident.clone(),
            status: Status::Watching,
            revision: 0,
            routes: signal.routes.clone(),
            facts: signal.facts.clone(),
            reason: String::new(),
            opened_at_ms: signal.at_ms,
            last_at_ms: signal.at_ms,
            last_failure_ms: signal.at_ms,
            last_acted_ms: None,
            escalate_at_ms: None,
            resolved_at_ms: None,
            repeats: 0,
            history: Vec::new(),
            summary: None,
            slack: None,
            ticket: None,
            outbox: Vec::new(),
        }
    }

    /// The channels this record's routes name.
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.routes.slack_channel.is_some() {
            out.push(Channel::Slack);
        }
        if self.routes.ticket.is_some() {
            out.push(Channel::Ticket);
        }
        out
    }

    /// Deliveries owed, for the queue-depth gauge.
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// The first delivery that may go now.
    pub fn due(&self, now_ms: i64) -> Option<&Delivery> {
        self.outbox.iter().find(|d| d.not_before_ms <= now_ms)
    }

    /// The earliest time a delivery may go.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.outbox.iter().map(|d| d.not_before_ms).min()
    }

    fn note(&mut self, at_ms: i64, text: &str, rules: &Rules) {
        self.history.push(Line {
            at_ms,
            text: clip(text, rules.max_line_chars),
        });
        if self.history.len() > rules.max_history {
            let extra = self.history.len() - rules.max_history;
            self.history.drain(..extra);
        }
    }

    fn take_facts(&mut self, signal: &Signal, rules: &Rules) {
        // A bare "seen again" from the ingest carries no facts or routes: keep what is known.
        if signal.facts.target.is_empty() {
            return;
        }
        let evidence = signal
            .facts
            .evidence
            .clone()
            .or_else(|| self.facts.evidence.take());
        let log_tail = if signal.facts.log_tail.is_empty() {
            std::mem::take(&mut self.facts.log_tail)
        } else {
            let lines = &signal.facts.log_tail;
            lines[lines.len().saturating_sub(rules.max_log_lines)..]
                .iter()
                .map(|l| clip(l, rules.max_line_chars))
                .collect()
        };
        self.facts = Facts {
            evidence,
            log_tail,
            ..signal.facts.clone()
        };
        // A policy edit changes where later messages go; a thread or ticket already made stays.
        self.routes = signal.routes.clone();
    }

    /// Queue `what` for every routed channel. An update already waiting absorbs another (it is
    /// rendered from the record when it goes, so it carries the newest state); an open still
    /// waiting makes an update pointless.
    fn queue(&mut self, what: What, at_ms: i64) {
        for channel in self.channels() {
            let waiting = |w: What| {
                self.outbox
                    .iter()
                    .any(|d| d.channel == channel && d.what == w)
            };
            let skip = match what {
                What::Open => waiting(What::Open),
                What::Update => waiting(What::Open) || waiting(What::Update),
                What::Resolve => waiting(What::Resolve),
            };
            if !skip {
                self.outbox.push(Delivery {
                    channel,
                    what,
                    queued_at_ms: at_ms,
                    not_before_ms: at_ms,
                    attempts: 0,
                    last_error: None,
                });
            }
        }
    }

    fn escalate(&mut self, reason: &str, at_ms: i64) {
        self.status = Status::Escalated;
        self.reason = reason.to_owned();
        self.revision += 1;
        self.escalate_at_ms = None;
        self.resolved_at_ms = None;
        self.repeats = 0;
        // Open is idempotent per channel: an existing thread gets a reply, an existing ticket a
        // comment (reopened if closed), so a recurrence reuses both.
        self.queue(What::Open, at_ms);
    }

    /// Marks a delivery done (removes it from the outbox).
    pub fn delivered(&mut self, channel: Channel, what: What) {
        if let Some(i) = self
            .outbox
            .iter()
            .position(|d| d.channel == channel && d.what == what)
        {
            self.outbox.remove(i);
        }
    }

    /// Marks a delivery failed: it goes again at `retry_at_ms`.
    pub fn failed(&mut self, channel: Channel, what: What, retry_at_ms: i64, error: &str) {
        if let Some(d) = self
            .outbox
            .iter_mut()
            .find(|d| d.channel == channel && d.what == what)
        {
            d.attempts += 1;
            d.not_before_ms = retry_at_ms;
            d.last_error = Some(clip(error, 300));
        }
    }
}

/// Applies a signal to an incident's record (`None`: no record yet). Returns the record to keep
/// (or `None`) and what happened.
pub fn apply(record: Option<Record>, signal: &Signal, rules: &Rules) -> (Option<Record>, Applied) {
    let now = signal.at_ms;
    match (record, &signal.kind) {
        // Nothing routed and nothing started: nobody to tell.
        (None, _) if signal.routes.is_empty() => (None, Applied::Ignored),
        (None, SignalKind::Seen | SignalKind::Resolved) => (None, Applied::Ignored),
        (None, SignalKind::Acted { action }) => {
            let Some(after) = signal.routes.after_seconds else {
                return (None, Applied::Ignored);
            };
            let mut r = Record::new(signal);
            r.take_facts(signal, rules);
            r.last_acted_ms = Some(now);
            r.escalate_at_ms = Some(now + i64::from(after) * 1000);
            r.note(now, &format!("{action}: {}", signal.note), rules);
            (Some(r), Applied::Recorded)
        }
        (None, SignalKind::Refused { reason }) => {
            let mut r = Record::new(signal);
            r.take_facts(signal, rules);
            r.note(now, &signal.note, rules);
            r.escalate(reason, now);
            (Some(r), Applied::Queued)
        }
        (None, SignalKind::Failed { action, category }) => {
            let mut r = Record::new(signal);
            r.take_facts(signal, rules);
            r.note(now, &signal.note, rules);
            r.escalate(&format!("{action}Failed({category})"), now);
            (Some(r), Applied::Queued)
        }
        (Some(mut r), kind) => {
            r.last_at_ms = now;
            let applied = match (r.status, kind) {
                (_, SignalKind::Seen) => {
                    r.last_failure_ms = now;
                    match r.status {
                        Status::Escalated => {
                            r.repeats += 1;
                            Applied::Recorded
                        }
                        Status::Resolved => {
                            return recur(r, signal, "Recurred", rules);
                        }
                        Status::Watching => Applied::Recorded,
                    }
                }
                (Status::Resolved, SignalKind::Acted { .. }) => Applied::Recorded,
                (Status::Resolved, SignalKind::Refused { reason }) => {
                    return recur(r, signal, reason, rules);
                }
                (Status::Resolved, SignalKind::Failed { action, category }) => {
                    return recur(r, signal, &format!("{action}Failed({category})"), rules);
                }
                (Status::Resolved, SignalKind::Resolved) => Applied::Ignored,
                (Status::Watching, SignalKind::Acted { action }) => {
                    r.last_acted_ms = Some(now);
                    r.take_facts(signal, rules);
                    r.note(now, &format!("{action}: {}", signal.note), rules);
                    // The deadline counts from the first action: repeated actions that do not
                    // cure the incident must not postpone telling anyone.
                    if r.escalate_at_ms.is_none() {
                        r.escalate_at_ms = signal
                            .routes
                            .after_seconds
                            .map(|a| now + i64::from(a) * 1000);
                    }
                    Applied::Recorded
                }
                (Status::Watching, SignalKind::Resolved) => return (None, Applied::Forget),
                (Status::Watching, SignalKind::Refused { reason }) => {
                    r.take_facts(signal, rules);
                    r.note(now, &signal.note, rules);
                    r.escalate(reason, now);
                    Applied::Queued
                }
                (Status::Watching, SignalKind::Failed { action, category }) => {
                    r.take_facts(signal, rules);
                    r.note(now, &signal.note, rules);
                    r.escalate(&format!("{action}Failed({category})"), now);
                    Applied::Queued
                }
                (Status::Escalated, SignalKind::Acted { action }) => {
                    r.take_facts(signal, rules);
                    r.note(now, &format!("{action}: {}", signal.note), rules);
                    Applied::Recorded
                }
                (Status::Escalated, SignalKind::Refused { .. } | SignalKind::Failed { .. }) => {
                    r.take_facts(signal, rules);
                    r.note(now, &signal.note, rules);
                    r.revision += 1;
                    r.queue(What::Update, now);
                    Applied::Queued
                }
                (Status::Escalated, SignalKind::Resolved) => {
                    r.status = Status::Resolved;
                    r.resolved_at_ms = Some(now);
                    r.revision += 1;
                    r.note(now, "resolved", rules);
                    // An open nobody received needs no resolve; drop what is still owed for
                    // channels that were never reached.
                    let reached: Vec<Channel> = r
                        .channels()
                        .into_iter()
                        .filter(|c| {
                            !r.outbox
                                .iter()
                                .any(|d| d.channel == *c && d.what == What::Open)
                        })
                        .collect();
                    r.outbox.retain(|d| reached.contains(&d.channel));
                    r.outbox.retain(|d| d.what != What::Update);
                    for channel in reached {
                        if !r
                            .outbox
                            .iter()
                            .any(|d| d.channel == channel && d.what == What::Resolve)
                        {
                            r.outbox.push(Delivery {
                                channel,
                                what: What::Resolve,
                                queued_at_ms: now,
                                not_before_ms: now,
                                attempts: 0,
                                last_error: None,
                            });
                        }
                    }
                    Applied::Queued
                }
            };
            (Some(r), applied)
        }
    }
}

fn recur(mut r: Record, signal: &Signal, reason: &str, rules: &Rules) -> (Option<Record>, Applied) {
    let now = signal.at_ms;
    let within = r
        .resolved_at_ms
        .is_some_and(|at| now - at <= rules.reopen_window_ms);
    if !within {
        // A bare "seen again" names no routes: the old record is done, and the decision on the
        // new failure (a refusal or an action) starts a new one.
        if signal.routes.is_empty() {
            return (None, Applied::Forget);
        }
        // Too long ago: a new incident with a new thread and ticket.
        let mut fresh = Record::new(signal);
        fresh.take_facts(signal, rules);
        fresh.note(now, &signal.note, rules);
        fresh.escalate(reason, now);
        return (Some(fresh), Applied::Queued);
    }
    r.take_facts(signal, rules);
    r.note(now, &format!("recurred: {}", signal.note), rules);
    r.outbox.retain(|d| d.what != What::Resolve);
    r.escalate(reason, now);
    (Some(r), Applied::Queued)
}

/// Time passing: a watched incident whose deadline passed escalates as `StillOpen`; a resolved
/// record past the reopen window can be forgotten once nothing is owed.
pub fn tick(record: Record, now_ms: i64, rules: &Rules) -> (Option<Record>, Applied) {
    let mut r = record;
    match r.status {
        Status::Watching if r.escalate_at_ms.is_some_and(|at| at <= now_ms) => {
            r.last_at_ms = now_ms;
            r.note(now_ms, "still open after the agent acted", rules);
            r.escalate("StillOpen", now_ms);
            (Some(r), Applied::Queued)
        }
        Status::Resolved
            if r.outbox.is_empty()
                && r.resolved_at_ms
                    .is_some_and(|at| now_ms - at > rules.reopen_window_ms) =>
        {
            (None, Applied::Forget)
        }
        _ => (Some(r), Applied::Ignored),
    }
}

/// Whether a failure was seen after the agent's last action: a watched incident at its deadline
/// escalates if so (or if its workload is not healthy); otherwise the action worked.
pub fn failed_since_acting(record: &Record) -> bool {
    record
        .last_acted_ms
        .is_none_or(|acted| record.last_failure_ms > acted)
}

/// Whether an escalated pod incident may count as resolved: no failure for `quiet_ms` (the caller
/// also checks the workload is healthy).
pub fn quiet_since(record: &Record, now_ms: i64, quiet_ms: i64) -> bool {
    record.status == Status::Escalated && now_ms - record.last_failure_ms >= quiet_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pod/shop/Deployment/api/CrashLoopBackOff";

    fn routes() -> Routes {
        Routes {
            slack_channel: Some("#prod".into()),
            ticket: Some(TicketRoute {
                provider: TicketProvider::Gitea,
                project: "ops/incidents".into(),
            }),
            after_seconds: Some(600),
        }
    }

    fn signal(at_ms: i64, kind: SignalKind) -> Signal {
        Signal {
            incident: KEY.into(),
            at_ms,
            kind,
            note: "note".into(),
            facts: Facts {
                target: "Deployment/shop/api".into(),
                namespace: Some("shop".into()),
                policy: "shop/restart".into(),
                failure: "CrashLoopBackOff".into(),
                evidence: None,
                log_tail: vec![],
                subject: None,
            },
            routes: routes(),
        }
    }

    fn refused(at: i64) -> Signal {
        signal(
            at,
            SignalKind::Refused {
                reason: "BudgetExhausted".into(),
            },
        )
    }
    fn acted(at: i64) -> Signal {
        signal(
            at,
            SignalKind::Acted {
                action: "RestartPod".into(),
            },
        )
    }
    fn failed(at: i64) -> Signal {
        signal(
            at,
            SignalKind::Failed {
                action: "BumpMemory".into(),
                category: "api".into(),
            },
        )
    }

    fn owed(r: &Record) -> Vec<(Channel, What)> {
        r.outbox.iter().map(|d| (d.channel, d.what)).collect()
    }

    fn run(signals: &[Signal]) -> (Option<Record>, Vec<Applied>) {
        let rules = Rules::default();
        let mut rec = None;
        let mut applied = Vec::new();
        for s in signals {
            let (r, a) = apply(rec, s, &rules);
            rec = r;
            applied.push(a);
        }
        (rec, applied)
    }

    #[test]
    fn table_of_signal_sequences() {
        use Applied::*;
        use Channel::*;
        use What::*;
        let resolved = |at| signal(at, SignalKind::Resolved);
        let seen = |at| signal(at, SignalKind::Seen);
        struct Case {
            name: &'static str,
            signals: Vec<Signal>,
            applied: Vec<Applied>,
            status: Option<Status>,
            owed: Vec<(Channel, What)>,
            revision: u32,
        }
        let cases = vec![
            Case {
                name: "a refusal opens both channels",
                signals: vec![refused(0)],
                applied: vec![Queued],
                status: Some(Status::Escalated),
                owed: vec![(Slack, Open), (Ticket, Open)],
                revision: 1,
            },
            Case {
                name: "a failed action escalates",
                signals: vec![failed(0)],
                applied: vec![Queued],
                status: Some(Status::Escalated),
                owed: vec![(Slack, Open), (Ticket, Open)],
                revision: 1,
            },
            Case {
                name: "an action only starts watching",
                signals: vec![acted(0)],
                applied: vec![Recorded],
                status: Some(Status::Watching),
                owed: vec![],
                revision: 0,
            },
            Case {
                name: "a watched incident that resolves is forgotten without a word",
                signals: vec![acted(0), resolved(1000)],
                applied: vec![Recorded, Forget],
                status: None,
                owed: vec![],
                revision: 0,
            },
            Case {
                name: "failures and resolves of unknown incidents are ignored",
                signals: vec![seen(0), resolved(1)],
                applied: vec![Ignored, Ignored],
                status: None,
                owed: vec![],
                revision: 0,
            },
            Case {
                name: "repeats before delivery coalesce into the open",
                signals: vec![refused(0), refused(1000), refused(2000)],
                applied: vec![Queued, Queued, Queued],
                status: Some(Status::Escalated),
                owed: vec![(Slack, Open), (Ticket, Open)],
                revision: 3,
            },
            Case {
                name: "resolve before anything was delivered owes nothing",
                signals: vec![refused(0), resolved(1000)],
                applied: vec![Queued, Queued],
                status: Some(Status::Resolved),
                owed: vec![],
                revision: 2,
            },
            Case {
                name: "a seen failure after escalation only counts",
                signals: vec![refused(0), seen(1000)],
                applied: vec![Queued, Recorded],
                status: Some(Status::Escalated),
                owed: vec![(Slack, Open), (Ticket, Open)],
                revision: 1,
            },
            Case {
                name: "a refusal while watching escalates at once",
                signals: vec![acted(0), refused(1000)],
                applied: vec![Recorded, Queued],
                status: Some(Status::Escalated),
                owed: vec![(Slack, Open), (Ticket, Open)],
                revision: 1,
            },
        ];
        for c in cases {
            let (rec, applied) = run(&c.signals);
            assert_eq!(applied, c.applied, "{}", c.name);
            assert_eq!(rec.as_ref().map(|r| r.status), c.status, "{}", c.name);
            if let Some(r) = &rec {
                assert_eq!(owed(r), c.owed, "{}", c.name);
                assert_eq!(r.revision, c.revision, "{}", c.name);
            }
        }
    }

    #[test]
    fn after_delivery_a_repeat_is_one_update_and_resolve_replaces_it() {
        let rules = Rules::default();
        let (mut r, _) = apply(None, &refused(0), &rules);
        let rec = r.as_mut().unwrap();
        rec.delivered(Channel::Slack, What::Open);
        rec.delivered(Channel::Ticket, What::Open);
        rec.slack = Some(SlackThread {
            channel: "C1".into(),
            ts: "1.2".into(),
        });
        let (r, a) = apply(r, &refused(1000), &rules);
        assert_eq!(a, Applied::Queued);
        let (r, _) = apply(r, &refused(2000), &rules);
        let rec = r.unwrap();
        assert_eq!(
            owed(&rec),
            vec![
                (Channel::Slack, What::Update),
                (Channel::Ticket, What::Update)
            ]
        );
        assert_eq!(rec.revision, 3);
        let (r, _) = apply(Some(rec), &signal(3000, SignalKind::Resolved), &rules);
        let rec = r.unwrap();
        assert_eq!(
            owed(&rec),
            vec![
                (Channel::Slack, What::Resolve),
                (Channel::Ticket, What::Resolve)
            ]
        );
        assert_eq!(rec.status, Status::Resolved);
        assert_eq!(rec.resolved_at_ms, Some(3000));
        // the thread survives for a recurrence
        assert!(rec.slack.is_some());
    }

    #[test]
    fn a_recurrence_within_the_window_reuses_the_record_after_it_starts_anew() {
        let rules = Rules {
            reopen_window_ms: 10_000,
            ..Rules::default()
        };
        let (r, _) = apply(None, &refused(0), &rules);
        let mut rec = r.unwrap();
        rec.outbox.clear();
        rec.ticket = Some(TicketRef {
            provider: TicketProvider::Gitea,
            project: "ops/incidents".into(),
            id: "7".into(),
            url: "u".into(),
        });
        let (r, _) = apply(Some(rec), &signal(1000, SignalKind::Resolved), &rules);
        let mut rec = r.unwrap();
        rec.outbox.clear();
        let (again, a) = apply(Some(rec.clone()), &refused(5000), &rules);
        let again = again.unwrap();
        assert_eq!(a, Applied::Queued);
        assert_eq!(again.status, Status::Escalated);
        assert_eq!(again.ticket.as_ref().map(|t| t.id.as_str()), Some("7"));
        assert_eq!(
            owed(&again),
            vec![(Channel::Slack, What::Open), (Channel::Ticket, What::Open)]
        );
        assert!(again.history.iter().any(|l| l.text.starts_with("recurred")));
        // a failure seen (not only a refusal) also brings it back
        let (seen_again, _) = apply(Some(rec.clone()), &signal(5000, SignalKind::Seen), &rules);
        assert_eq!(seen_again.unwrap().status, Status::Escalated);
        // past the window: a new record, no ticket or thread carried over
        let (fresh, _) = apply(Some(rec), &refused(20_000), &rules);
        let fresh = fresh.unwrap();
        assert!(fresh.ticket.is_none());
        assert_eq!(fresh.opened_at_ms, 20_000);
    }

    #[test]
    fn watching_escalates_at_the_first_deadline_and_not_later() {
        let rules = Rules::default();
        let (r, _) = apply(None, &acted(0), &rules);
        // another action later must not move the deadline
        let (r, _) = apply(r, &acted(300_000), &rules);
        let rec = r.unwrap();
        assert_eq!(rec.escalate_at_ms, Some(600_000));
        let (r, a) = tick(rec.clone(), 599_999, &rules);
        assert_eq!(a, Applied::Ignored);
        assert_eq!(r.unwrap().status, Status::Watching);
        let (r, a) = tick(rec, 600_000, &rules);
        assert_eq!(a, Applied::Queued);
        let r = r.unwrap();
        assert_eq!(r.status, Status::Escalated);
        assert_eq!(r.reason, "StillOpen");
        assert_eq!(r.outbox.len(), 2);
    }

    #[test]
    fn a_failure_after_the_last_action_means_it_did_not_work() {
        let rules = Rules::default();
        let (r, _) = apply(None, &acted(1_000), &rules);
        let rec = r.clone().unwrap();
        assert_eq!(rec.last_acted_ms, Some(1_000));
        assert!(!failed_since_acting(&rec));
        let (r, _) = apply(r, &signal(2_000, SignalKind::Seen), &rules);
        assert!(failed_since_acting(r.as_ref().unwrap()));
        // acting again after that failure: not failing since
        let (r, _) = apply(r, &acted(3_000), &rules);
        assert!(!failed_since_acting(r.as_ref().unwrap()));
    }

    #[test]
    fn no_routes_or_no_deadline_keeps_nothing() {
        let rules = Rules::default();
        let mut s = refused(0);
        s.routes = Routes::default();
        assert_eq!(apply(None, &s, &rules), (None, Applied::Ignored));
        let mut s = acted(0);
        s.routes.after_seconds = None;
        assert_eq!(apply(None, &s, &rules), (None, Applied::Ignored));
    }

    #[test]
    fn resolved_records_are_forgotten_after_the_window_once_nothing_is_owed() {
        let rules = Rules {
            reopen_window_ms: 1000,
            ..Rules::default()
        };
        let (r, _) = apply(None, &refused(0), &rules);
        let mut r = r.unwrap();
        r.delivered(Channel::Slack, What::Open);
        r.delivered(Channel::Ticket, What::Open);
        let (r, _) = apply(Some(r), &signal(10, SignalKind::Resolved), &rules);
        let rec = r.unwrap();
        // still owes the resolve messages: kept whatever its age
        assert!(!rec.outbox.is_empty());
        assert_eq!(tick(rec.clone(), 5000, &rules).1, Applied::Ignored);
        let mut done = rec;
        done.outbox.clear();
        assert_eq!(tick(done.clone(), 500, &rules).1, Applied::Ignored);
        assert_eq!(tick(done, 5000, &rules), (None, Applied::Forget));
    }

    #[test]
    fn only_one_channel_when_only_one_is_routed() {
        let rules = Rules::default();
        let mut s = refused(0);
        s.routes.ticket = None;
        let (r, _) = apply(None, &s, &rules);
        assert_eq!(owed(&r.unwrap()), vec![(Channel::Slack, What::Open)]);
    }

    #[test]
    fn history_and_logs_are_bounded_and_failures_back_off() {
        let rules = Rules {
            max_history: 3,
            max_line_chars: 10,
            max_log_lines: 2,
            ..Rules::default()
        };
        let mut s = refused(0);
        s.note = "x".repeat(50);
        s.facts.log_tail = vec!["a".into(), "b".into(), "c".repeat(40)];
        let mut rec = None;
        for i in 0..10 {
            let mut s = s.clone();
            s.at_ms = i;
            rec = apply(rec, &s, &rules).0;
        }
        let mut rec = rec.unwrap();
        assert_eq!(rec.history.len(), 3);
        assert!(rec.history.iter().all(|l| l.text.chars().count() <= 10));
        assert_eq!(rec.facts.log_tail.len(), 2);
        assert_eq!(rec.facts.log_tail[0], "b");
        assert_eq!(rec.facts.log_tail[1].chars().count(), 10);
        rec.failed(Channel::Slack, What::Open, 5000, "429");
        assert_eq!(rec.due(100).map(|d| d.channel), Some(Channel::Ticket));
        rec.delivered(Channel::Ticket, What::Open);
        assert!(rec.due(100).is_none());
        assert_eq!(rec.next_due_ms(), Some(5000));
        assert_eq!(rec.outbox[0].attempts, 1);
        assert!(quiet_since(&rec, 1000, 500));
        assert!(!quiet_since(&rec, 100, 500));
    }
}
