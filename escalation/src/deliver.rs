//! One delivery at a time from a record's outbox: summarize (model or template), then post to
//! Slack or change the ticket, in an order that makes a retry safe: idempotent steps (find,
//! reopen, close, update the root message) before the one that is not (a new message or comment),
//! so a failure part-way repeats nothing people see.

use std::future::Future;
use std::time::Duration;

use crate::doc::Doc;
use crate::record::{Channel, Record, SlackThread, Summary, TicketRef, TicketRoute, What};
use crate::render::{self, SlackText};

/// Why a channel call failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelError {
    pub retryable: bool,
    /// How long the server asked to wait (429 `Retry-After`).
    pub after: Option<Duration>,
    /// A short metric label (`rate_limited`, `unreachable`, `unauthorized`, ...).
    pub category: &'static str,
    /// Safe to log: never a credential or a webhook URL.
    pub message: String,
}

impl ChannelError {
    pub fn not_configured(what: &str) -> Self {
        Self {
            retryable: false,
            after: None,
            category: "not_configured",
            message: format!("{what} is not configured in this installation"),
        }
    }
}

/// A ticket as a tracker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketInfo {
    pub id: String,
    pub url: String,
    pub open: bool,
}

/// Ticket trackers (GitHub, GitLab, Gitea, Jira) behind one face.
pub trait Tickets: Sync {
    fn find(
        &self,
        route: &TicketRoute,
        label: &str,
    ) -> impl Future<Output = Result<Option<TicketInfo>, ChannelError>> + Send;
    fn create(
        &self,
        route: &TicketRoute,
        title: &str,
        body: &Doc,
        label: &str,
    ) -> impl Future<Output = Result<TicketInfo, ChannelError>> + Send;
    fn comment(
        &self,
        route: &TicketRoute,
        id: &str,
        body: &Doc,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
    fn set_open(
        &self,
        route: &TicketRoute,
        id: &str,
        open: bool,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
}

/// Slack (bot token: threads; webhook: single messages).
pub trait SlackApi: Sync {
    /// Whether messages can form a thread (a bot token); a webhook cannot start one.
    fn threads(&self) -> bool;
    fn post(
        &self,
        channel: &str,
        msg: &SlackText,
        thread: Option<&SlackThread>,
    ) -> impl Future<Output = Result<Option<SlackThread>, ChannelError>> + Send;
    fn update(
        &self,
        thread: &SlackThread,
        msg: &SlackText,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
}

/// An incident summarizer (an OpenAI-compatible model).
pub trait Summarizer: Sync {
    /// `(text, model)`.
    fn summarize(
        &self,
        input: &str,
    ) -> impl Future<Output = Result<(String, String), ChannelError>> + Send;
}

/// What one delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub channel: Channel,
    pub what: What,
    pub queued_at_ms: i64,
    pub result: Result<(), ChannelError>,
    /// Where the summary came from when one was made for this attempt (`llm`, `template`,
    /// `template_fallback`).
    pub summary_source: Option<&'static str>,
}

/// The channels an installation has; any may be missing.
#[derive(Debug)]
pub struct Deliverer<S, T, L> {
    pub slack: Option<S>,
    pub tickets: T,
    pub llm: Option<L>,
    /// Wait after the n-th failure when the server named no time: 2^n s, at most this.
    pub max_backoff: Duration,
    /// Wait after a failure retrying cannot fix soon (credentials, a missing project).
    pub permanent_backoff: Duration,
}

impl<S: SlackApi, T: Tickets, L: Summarizer> Deliverer<S, T, L> {
    /// Makes sure the record has a summary of its current revision: the model's when it answers,
    /// else the template. Cached per revision, so retries and the other channel reuse it.
    pub async fn ensure_summary(&self, r: &mut Record) -> Option<&'static str> {
        if r.summary.as_ref().is_some_and(|s| s.revision == r.revision) {
            return None;
        }
        let (text, source, tag) = match &self.llm {
            Some(llm) => match llm.summarize(&render::llm_input(r)).await {
                Ok((text, model)) => (text, format!("llm:{model}"), "llm"),
                Err(e) => {
                    tracing::info!(incident = %r.key, category = e.category, "Model summary unavailable; using the template");
                    (
                        render::template_summary(r),
                        "template".to_owned(),
                        "template_fallback",
                    )
                }
            },
            None => (
                render::template_summary(r),
                "template".to_owned(),
                "template",
            ),
        };
        r.summary = Some(Summary {
            revision: r.revision,
            text,
            source,
        });
        Some(tag)
    }

    /// Delivers the first due item of the record's outbox and records the result in it: removed
    /// when done, pushed back (Retry-After, else exponential backoff) when not.
    pub async fn deliver_one(&self, r: &mut Record, now_ms: i64) -> Option<Attempt> {
        let due = r.due(now_ms)?.clone();
        let summary_source = self.ensure_summary(r).await;
        let summary = r
            .summary
            .as_ref()
            .map(|s| s.text.clone())
            .unwrap_or_default();
        let result = match due.channel {
            Channel::Slack => self.slack_step(r, due.what, &summary).await,
            Channel::Ticket => self.ticket_step(r, due.what, &summary).await,
        };
        match &result {
            Ok(()) => r.delivered(due.channel, due.what),
            Err(e) => {
                let wait = e.after.unwrap_or_else(|| {
                    if e.retryable {
                        let exp = 2u64.saturating_pow(due.attempts.min(16));
                        Duration::from_secs(exp).min(self.max_backoff)
                    } else {
                        self.permanent_backoff
                    }
                });
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                r.failed(due.channel, due.what, now_ms + wait_ms, &e.message);
            }
        }
        Some(Attempt {
            channel: due.channel,
            what: due.what,
            queued_at_ms: due.queued_at_ms,
            result,
            summary_source,
        })
    }

    async fn slack_step(
        &self,
        r: &mut Record,
        what: What,
        summary: &str,
    ) -> Result<(), ChannelError> {
        let slack = self
            .slack
            .as_ref()
            .ok_or_else(|| ChannelError::not_configured("Slack"))?;
        let channel = r
            .routes
            .slack_channel
            .clone()
            .ok_or_else(|| ChannelError::not_configured("a Slack channel in the policy"))?;
        let ticket_url = r.ticket.as_ref().map(|t| t.url.clone());
        if !slack.threads() {
            // A webhook: every delivery is a message of its own, the first with the full facts.
            let msg = match what {
                What::Open => render::slack_root(r, summary, ticket_url.as_deref()),
                _ => render::slack_reply(r, what, summary),
            };
            slack.post(&channel, &msg, None).await?;
            return Ok(());
        }
        match r.slack.clone() {
            None => {
                // The thread's root. (A reply or resolve before any root: the root says it all.)
                let root = render::slack_root(r, summary, ticket_url.as_deref());
                if let Some(thread) = slack.post(&channel, &root, None).await? {
                    r.slack = Some(thread);
                }
                Ok(())
            }
            Some(thread) => {
                // The root shows the current status; a failed edit only leaves it stale.
                let root = render::slack_root(r, summary, ticket_url.as_deref());
                if let Err(e) = slack.update(&thread, &root).await {
                    tracing::info!(incident = %r.key, category = e.category, "Could not update the thread's first message");
                }
                let reply = render::slack_reply(r, what, summary);
                slack.post(&thread.channel, &reply, Some(&thread)).await?;
                Ok(())
            }
        }
    }

    async fn ticket_step(
        &self,
        r: &mut Record,
        what: What,
        summary: &str,
    ) -> Result<(), ChannelError> {
        let route = r
            .routes
            .ticket
            .clone()
            .ok_or_else(|| ChannelError::not_configured("a ticket route in the policy"))?;
        let label = render::label(&r.key);
        let existing = match r.ticket.clone() {
            Some(t) if t.provider == route.provider && t.project == route.project => Some(t),
            // The policy moved the incident to another tracker: start there.
            _ => None,
        };
        match (existing, what) {
            (None, What::Resolve) => Ok(()),
            (None, _) => {
                // Found by its label first: a leader that died after filing it must not make a
                // second one. A closed one belongs to an earlier incident (the record would
                // still have it within the reopen window), so a new one is filed.
                let info = match self.tickets.find(&route, &label).await? {
                    Some(info) if info.open => info,
                    _ => {
                        let body = render::ticket_body(r, summary);
                        self.tickets
                            .create(&route, &render::ticket_title(r), &body, &label)
                            .await?
                    }
                };
                r.ticket = Some(TicketRef {
                    provider: route.provider,
                    project: route.project.clone(),
                    id: info.id,
                    url: info.url,
                });
                Ok(())
            }
            (Some(t), What::Open | What::Update) => {
                if what == What::Open {
                    self.tickets.set_open(&route, &t.id, true).await?;
                }
                let body = render::ticket_comment(r, what, summary);
                self.tickets.comment(&route, &t.id, &body).await
            }
            (Some(t), What::Resolve) => {
                self.tickets.set_open(&route, &t.id, false).await?;
                let body = render::ticket_comment(r, What::Resolve, summary);
                self.tickets.comment(&route, &t.id, &body).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::record::{Facts, Routes, Rules, Signal, SignalKind, Status, TicketProvider, apply};

    /// Records every call; fails the next `fail` calls with `error`.
    #[derive(Default)]
    struct Log {
        calls: Mutex<Vec<String>>,
        fail: Mutex<Vec<ChannelError>>,
        tickets: Mutex<Vec<TicketInfo>>,
    }

    impl Log {
        fn call(&self, what: String) -> Result<(), ChannelError> {
            self.calls.lock().unwrap().push(what);
            match self.fail.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    struct FakeTickets<'a>(&'a Log);
    impl Tickets for FakeTickets<'_> {
        async fn find(
            &self,
            _: &TicketRoute,
            label: &str,
        ) -> Result<Option<TicketInfo>, ChannelError> {
            self.0.call(format!("find {label}"))?;
            Ok(self.0.tickets.lock().unwrap().last().cloned())
        }
        async fn create(
            &self,
            _: &TicketRoute,
            title: &str,
            body: &Doc,
            _: &str,
        ) -> Result<TicketInfo, ChannelError> {
            self.0.call(format!(
                "create {title} | {}",
                body.to_plain().lines().next().unwrap_or("")
            ))?;
            let mut t = self.0.tickets.lock().unwrap();
            let info = TicketInfo {
                id: (t.len() + 1).to_string(),
                url: format!("http://t/{}", t.len() + 1),
                open: true,
            };
            t.push(info.clone());
            Ok(info)
        }
        async fn comment(&self, _: &TicketRoute, id: &str, body: &Doc) -> Result<(), ChannelError> {
            self.0.call(format!(
                "comment {id} | {}",
                body.to_plain().lines().next().unwrap_or("")
            ))
        }
        async fn set_open(
            &self,
            _: &TicketRoute,
            id: &str,
            open: bool,
        ) -> Result<(), ChannelError> {
            self.0.call(format!("set_open {id} {open}"))
        }
    }

    struct FakeSlack<'a>(&'a Log, bool);
    impl SlackApi for FakeSlack<'_> {
        fn threads(&self) -> bool {
            self.1
        }
        async fn post(
            &self,
            channel: &str,
            msg: &SlackText,
            thread: Option<&SlackThread>,
        ) -> Result<Option<SlackThread>, ChannelError> {
            self.0.call(format!(
                "post {channel} thread={:?} {}",
                thread.map(|t| &t.ts),
                msg.text
            ))?;
            Ok(self.1.then(|| SlackThread {
                channel: "C1".into(),
                ts: "1.1".into(),
            }))
        }
        async fn update(&self, thread: &SlackThread, msg: &SlackText) -> Result<(), ChannelError> {
            self.0.call(format!("update {} {}", thread.ts, msg.text))
        }
    }

    struct FakeLlm<'a>(&'a Log);
    impl Summarizer for FakeLlm<'_> {
        async fn summarize(&self, input: &str) -> Result<(String, String), ChannelError> {
            self.0.call(format!("summarize {}", input.len()))?;
            Ok(("model summary".into(), "smollm2".into()))
        }
    }

    fn busy(after: Option<u64>) -> ChannelError {
        ChannelError {
            retryable: true,
            after: after.map(Duration::from_secs),
            category: "rate_limited",
            message: "429".into(),
        }
    }

    fn record() -> Record {
        let s = Signal {
            incident: "pod/shop/Deployment/api/CrashLoopBackOff".into(),
            at_ms: 0,
            kind: SignalKind::Refused {
                reason: "BudgetExhausted".into(),
            },
            note: "not acting".into(),
            facts: Facts {
                target: "Deployment/shop/api".into(),
                failure: "CrashLoopBackOff".into(),
                policy: "shop/p".into(),
                ..Facts::default()
            },
            routes: Routes {
                slack_channel: Some("#prod".into()),
                ticket: Some(TicketRoute {
                    provider: TicketProvider::Gitea,
                    project: "ops/inc".into(),
                }),
                after_seconds: None,
            },
        };
        apply(None, &s, &Rules::default()).0.unwrap()
    }

    fn deliverer<'a>(
        log: &'a Log,
        threads: bool,
        llm: bool,
    ) -> Deliverer<FakeSlack<'a>, FakeTickets<'a>, FakeLlm<'a>> {
        Deliverer {
            slack: Some(FakeSlack(log, threads)),
            tickets: FakeTickets(log),
            llm: llm.then_some(FakeLlm(log)),
            max_backoff: Duration::from_secs(300),
            permanent_backoff: Duration::from_secs(600),
        }
    }

    async fn drain<S: SlackApi, T: Tickets, L: Summarizer>(
        d: &Deliverer<S, T, L>,
        r: &mut Record,
        now: i64,
    ) {
        while d
            .deliver_one(r, now)
            .await
            .is_some_and(|a| a.result.is_ok())
        {}
    }

    #[tokio::test]
    async fn one_thread_and_one_ticket_then_replies_comments_and_resolve() {
        let log = Log::default();
        let d = deliverer(&log, true, true);
        let mut r = record();
        drain(&d, &mut r, 0).await;
        assert!(r.outbox.is_empty());
        assert_eq!(
            r.slack,
            Some(SlackThread {
                channel: "C1".into(),
                ts: "1.1".into()
            })
        );
        assert_eq!(r.ticket.as_ref().map(|t| t.id.as_str()), Some("1"));
        let calls = log.calls();
        // one summary for both channels (cached per revision), a root, a find, one create
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("summarize")).count(),
            1
        );
        assert!(calls[1].starts_with("post #prod thread=None Needs a human"));
        assert!(calls[2].starts_with("find auto-agent-"));
        assert!(calls[3].starts_with(
            "create [auto-agent] CrashLoopBackOff on Deployment/shop/api | model summary"
        ));
        assert_eq!(
            r.summary.as_ref().map(|s| s.source.as_str()),
            Some("llm:smollm2")
        );

        let again = Signal {
            at_ms: 10,
            ..signal_like(
                &r,
                SignalKind::Refused {
                    reason: "BudgetExhausted".into(),
                },
            )
        };
        r = apply(Some(r), &again, &Rules::default()).0.unwrap();
        drain(&d, &mut r, 10).await;
        let resolved = signal_like(&r, SignalKind::Resolved);
        r = apply(Some(r), &resolved, &Rules::default()).0.unwrap();
        drain(&d, &mut r, 20).await;
        assert_eq!(r.status, Status::Resolved);
        let calls = log.calls();
        let tail: Vec<&str> = calls[4..].iter().map(|s| s.as_str()).collect();
        assert!(tail[1].starts_with("update 1.1 Needs a human"), "{tail:?}");
        assert!(
            tail[2].starts_with("post C1 thread=Some(\"1.1\") Update"),
            "{tail:?}"
        );
        assert!(
            tail[3].starts_with("comment 1 | Update on incident"),
            "{tail:?}"
        );
        assert!(
            tail.iter().any(|c| c.starts_with("update 1.1 Resolved")),
            "{tail:?}"
        );
        assert!(
            tail.iter()
                .any(|c| c.starts_with("post C1 thread=Some(\"1.1\") Resolved")),
            "{tail:?}"
        );
        let close = tail.iter().position(|c| *c == "set_open 1 false").unwrap();
        assert!(
            tail[close + 1].starts_with("comment 1 | Resolved"),
            "{tail:?}"
        );
        assert_eq!(calls.iter().filter(|c| c.starts_with("create")).count(), 1);
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("post #prod")).count(),
            1
        );
    }

    fn signal_like(r: &Record, kind: SignalKind) -> Signal {
        Signal {
            incident: r.key.clone(),
            at_ms: r.last_at_ms + 1,
            kind,
            note: "again".into(),
            facts: r.facts.clone(),
            routes: r.routes.clone(),
        }
    }

    #[tokio::test]
    async fn a_ticket_filed_before_a_crash_is_adopted_not_duplicated() {
        let log = Log::default();
        log.tickets.lock().unwrap().push(TicketInfo {
            id: "9".into(),
            url: "http://t/9".into(),
            open: true,
        });
        let d = deliverer(&log, true, false);
        let mut r = record();
        r.outbox.retain(|x| x.channel == Channel::Ticket);
        drain(&d, &mut r, 0).await;
        assert_eq!(r.ticket.as_ref().map(|t| t.id.as_str()), Some("9"));
        assert!(!log.calls().iter().any(|c| c.starts_with("create")));
        // a closed one found by label is an earlier incident: a new ticket
        let log = Log::default();
        log.tickets.lock().unwrap().push(TicketInfo {
            id: "9".into(),
            url: "u".into(),
            open: false,
        });
        let d = deliverer(&log, true, false);
        let mut r = record();
        r.outbox.retain(|x| x.channel == Channel::Ticket);
        drain(&d, &mut r, 0).await;
        assert_eq!(r.ticket.as_ref().map(|t| t.id.as_str()), Some("2"));
    }

    #[tokio::test]
    async fn failures_wait_for_retry_after_or_back_off_and_nothing_is_sent_twice() {
        let log = Log::default();
        let d = deliverer(&log, true, false);
        let mut r = record();
        log.fail.lock().unwrap().push(busy(Some(30)));
        let a = d.deliver_one(&mut r, 1000).await.unwrap();
        assert_eq!(a.channel, Channel::Slack);
        assert!(a.result.is_err());
        assert_eq!(a.summary_source, Some("template"));
        assert_eq!(r.outbox[0].not_before_ms, 31_000);
        // the ticket is not held up by Slack
        let a = d.deliver_one(&mut r, 1000).await.unwrap();
        assert_eq!(a.channel, Channel::Ticket);
        assert!(a.result.is_ok());
        assert!(d.deliver_one(&mut r, 30_999).await.is_none());
        // without Retry-After: 2^attempts seconds
        log.fail.lock().unwrap().push(busy(None));
        d.deliver_one(&mut r, 31_000).await.unwrap();
        assert_eq!(r.outbox[0].not_before_ms, 31_000 + 2_000);
        assert_eq!(r.outbox[0].attempts, 2);
        // a credentials problem waits the long backoff
        log.fail.lock().unwrap().push(ChannelError {
            retryable: false,
            after: None,
            category: "unauthorized",
            message: "401".into(),
        });
        d.deliver_one(&mut r, 40_000).await.unwrap();
        assert_eq!(r.outbox[0].not_before_ms, 40_000 + 600_000);
        drain(&d, &mut r, 640_000).await;
        assert!(r.outbox.is_empty());
        assert_eq!(
            log.calls().iter().filter(|c| c.starts_with("post")).count(),
            4
        );
        assert_eq!(
            log.calls()
                .iter()
                .filter(|c| c.starts_with("create"))
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_failing_model_falls_back_to_the_template() {
        let log = Log::default();
        let d = deliverer(&log, true, true);
        let mut r = record();
        log.fail.lock().unwrap().push(ChannelError {
            retryable: true,
            after: None,
            category: "timeout",
            message: "slow".into(),
        });
        let a = d.deliver_one(&mut r, 0).await.unwrap();
        assert_eq!(a.summary_source, Some("template_fallback"));
        assert_eq!(
            r.summary.as_ref().map(|s| s.source.as_str()),
            Some("template")
        );
        assert!(r.summary.as_ref().unwrap().text.contains("needs a human"));
    }

    #[tokio::test]
    async fn a_webhook_posts_messages_without_a_thread() {
        let log = Log::default();
        let d = deliverer(&log, false, false);
        let mut r = record();
        r.outbox.retain(|x| x.channel == Channel::Slack);
        drain(&d, &mut r, 0).await;
        assert!(r.slack.is_none());
        let resolved = signal_like(&r, SignalKind::Resolved);
        r = apply(Some(r), &resolved, &Rules::default()).0.unwrap();
        r.outbox.retain(|x| x.channel == Channel::Slack);
        drain(&d, &mut r, 5).await;
        let calls = log.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[1].starts_with("post #prod thread=None Resolved"));
    }

    #[tokio::test]
    async fn an_unconfigured_channel_is_kept_and_retried_slowly() {
        let log = Log::default();
        let d: Deliverer<FakeSlack, FakeTickets, FakeLlm> = Deliverer {
            slack: None,
            ..deliverer(&log, true, false)
        };
        let mut r = record();
        let a = d.deliver_one(&mut r, 0).await.unwrap();
        assert_eq!(a.result.unwrap_err().category, "not_configured");
        assert_eq!(r.outbox.len(), 2);
        assert_eq!(r.outbox[0].not_before_ms, 600_000);
    }
}
