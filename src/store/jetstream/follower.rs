//! How a node's view follows the events stream: an ordered consumer feeds it ([`follow`]), and
//! [`ViewWatch`] decides when that consumer is to be given up for a new one.
//!
//! The consumer lives on one server of the stream. When that server dies, the client notices only
//! after missing heartbeats for seconds, or not at all. So a view that has not moved for a second
//! while a reader waits for it, or while the stream has more, follows the stream anew from where
//! it is. Right after a new leader of the stream is elected (the servers announce it, and the old
//! leader may have died with this consumer on it), the view is watched closely for a while: one
//! that a reader waits for and that does not move for a moment follows the stream anew at once.
//! One whose consumer lives on a server that is still up goes on: creating another needs the
//! cluster's metadata leader, which may have died too and be elected seconds later. Until a new
//! consumer can be created, the commits readers wait for are read one by one ([`bridge`]). A
//! message no consumer can deliver is read the same way ([`pass_undeliverable`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::wire::{untoken, HEADER_EVENTS};
use super::{header, stored, Shared};

/// A view that has not moved for this long while a reader waits for it follows the stream anew.
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// After a new leader of the events stream is elected, a view that a reader waits for and that
/// has not moved for this long follows the stream anew ...
const WATCH_CLOSELY_EVERY: Duration = Duration::from_millis(200);
/// ... for this long after the election.
const WATCH_CLOSELY_FOR: Duration = Duration::from_secs(5);
/// How long the read of the next commit is waited for when the consumer stopped delivering.
const PASS_UNDELIVERABLE_WITHIN: Duration = Duration::from_millis(250);
/// How long the first request to create the view's consumer is waited for before it is sent
/// again; each further one is waited for twice as long, up to the maximum.
const CREATE_CONSUMER_WITHIN_MIN: Duration = Duration::from_millis(250);
const CREATE_CONSUMER_WITHIN_MAX: Duration = Duration::from_secs(2);

/// What to do with the view's consumer, at a tick of the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It follows (or nothing is known against it).
    Keep,
    /// Give it up and follow the stream anew, for this reason (`stalled`, `new-leader`).
    FollowAnew(&'static str),
    /// The view has not moved and no reader waits: whether the stream has more decides.
    AskTheStream,
}

/// Decides when the view's consumer is given up, from what the view has applied and what its
/// readers wait for at each tick (times are given: no clock, no I/O).
#[derive(Debug)]
pub(super) struct ViewWatch {
    /// What the view had applied at the last watchdog tick.
    applied_at_watchdog: u64,
    /// After an election: until when the view is watched closely, and what it had applied at
    /// the last close look.
    closely: Option<(Instant, u64)>,
}

impl ViewWatch {
    pub(super) fn new(applied: u64) -> Self {
        ViewWatch {
            applied_at_watchdog: applied,
            closely: None,
        }
    }

    /// A new leader of the stream was announced at `now`.
    pub(super) fn heard_election(&mut self, now: Instant, applied: u64) {
        self.closely = Some((now + WATCH_CLOSELY_FOR, applied));
    }

    pub(super) fn watching_closely(&self) -> bool {
        self.closely.is_some()
    }

    /// A close look (every [`WATCH_CLOSELY_EVERY`] after an election).
    pub(super) fn close_look(&mut self, now: Instant, applied: u64, wanted: u64) -> Verdict {
        let Some((until, before)) = self.closely else {
            return Verdict::Keep;
        };
        if applied == before && wanted > applied {
            return Verdict::FollowAnew("new-leader");
        }
        self.closely = (now < until).then_some((until, applied));
        Verdict::Keep
    }

    /// A watchdog tick (every [`STALLED_AFTER`]).
    pub(super) fn watchdog(&mut self, applied: u64, wanted: u64) -> Verdict {
        let before = std::mem::replace(&mut self.applied_at_watchdog, applied);
        if applied != before {
            Verdict::Keep
        } else if wanted > applied {
            Verdict::FollowAnew("stalled")
        } else {
            Verdict::AskTheStream
        }
    }
}

/// The connection the view's consumer and the announcements of elections come over: one of its
/// own. What a consumer delivers is whatever was published, and the client library's connection
/// panics on a header value with a lone carriage return (async-nats 0.51): that takes down this
/// connection only, never the one appends and reads use, and a new one is made.
struct Feed {
    client: async_nats::Client,
    events: async_nats::jetstream::stream::Stream<()>,
    /// The new leader of the stream announces itself (an advisory, published the moment it is
    /// elected). Waiting for the watchdog alone cost up to two seconds more after an election,
    /// on top of the election itself.
    elected: Option<async_nats::Subscriber>,
}

impl Feed {
    async fn connect(shared: &Shared) -> Result<Feed, async_nats::Error> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(shared.servers.clone())
            .await?;
        let events = async_nats::jetstream::new(client.clone())
            .get_stream_no_info(&shared.names.events)
            .await?;
        let advisory = format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{}", shared.names.events);
        let elected = match client.subscribe(advisory).await {
            Ok(elected) => Some(elected),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hear of the events stream's leader elections; relying on the watchdog");
                None
            }
        };
        Ok(Feed { client, events, elected })
    }

    /// Whether the connection is gone for good (its task ended): a flush that fails at once.
    /// One that is only slow (a server changing) is not.
    async fn is_dead(&self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_millis(250), self.client.flush()).await,
            Ok(Err(_))
        )
    }
}

/// Feeds the view from an ordered consumer of the events stream; follows it anew (after the last
/// applied sequence) when [`ViewWatch`] says so, or when the consumer fails.
pub(super) async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut feed: Option<Feed> = None;
    let mut why = "start";
    let mut create_within = CREATE_CONSUMER_WITHIN_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(f) = &feed {
            if f.is_dead().await {
                tracing::warn!("the view's connection is gone; connecting again");
                feed = None;
            }
        }
        let f = match feed.as_mut() {
            Some(f) => f,
            None => match Feed::connect(&shared).await {
                Ok(connected) => feed.insert(connected),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to follow the events stream; retrying");
                    bridge(&shared).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let (events, elected) = (&f.events, &mut f.elected);
        // Announcements heard until now are of elections this new consumer already follows.
        drain_elections(elected);
        metrics::counter!(crate::telemetry::VIEW_FOLLOWS, "reason" => why).increment(1);
        why = "failed";
        let config = push::OrderedConfig {
            deliver_subject: f.client.new_inbox(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: shared.mirror.applied() + 1,
            },
            ..Default::default()
        };
        // Right after an election, the first requests to create one can go unanswered for a
        // while: asked again sooner than a whole request timeout, then less and less often (a
        // consumer created for a request given up on has no one listening to it, and the server
        // removes it).
        let waited = create_within;
        let created = tokio::time::timeout(waited, events.create_consumer(config)).await;
        create_within = (waited * 2).min(CREATE_CONSUMER_WITHIN_MAX);
        let consumer = match created {
            Ok(Ok(consumer)) => consumer,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot follow the events stream; retrying");
                bridge(&shared).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(?waited, "cannot follow the events stream: no answer yet; asking again");
                bridge(&shared).await;
                continue;
            }
        };
        create_within = CREATE_CONSUMER_WITHIN_MIN;
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the events stream; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut watch = ViewWatch::new(shared.mirror.applied());
        let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + STALLED_AFTER, STALLED_AFTER);
        let mut close_look = tokio::time::interval(WATCH_CLOSELY_EVERY);
        loop {
            let mut election = false;
            let verdict = tokio::select! {
                _ = stop.changed() => return,
                Some(_) = next_election(elected) => {
                    election = true;
                    Verdict::Keep
                }
                _ = close_look.tick(), if watch.watching_closely() => {
                    watch.close_look(Instant::now(), shared.mirror.applied(), shared.mirror.wanted())
                }
                _ = watchdog.tick() => {
                    let applied = shared.mirror.applied();
                    match watch.watchdog(applied, shared.mirror.wanted()) {
                        // Asking the stream takes up to a request timeout while it has no
                        // leader: an announcement arriving meanwhile is not left waiting.
                        Verdict::AskTheStream => tokio::select! {
                            info = shared.events.get_info() => match info {
                                Ok(info) if info.state.last_sequence > applied => Verdict::FollowAnew("stalled"),
                                _ => Verdict::Keep,
                            },
                            Some(_) = next_election(elected) => {
                                election = true;
                                Verdict::Keep
                            }
                        },
                        verdict => verdict,
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        if let Ok(info) = message.info() {
                            apply(&shared, info.stream_sequence, &message.subject, message.headers.as_ref(), &message.payload);
                        }
                        Verdict::Keep
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "following the events stream failed; resuming");
                        Verdict::FollowAnew("failed")
                    }
                    None => Verdict::FollowAnew("failed"),
                },
            };
            if let Verdict::FollowAnew(reason) = verdict {
                tracing::warn!(
                    applied = shared.mirror.applied(),
                    reason,
                    "the view does not follow the events stream; following it anew"
                );
                why = reason;
                if reason != "new-leader" {
                    pass_undeliverable(&shared).await;
                }
                break;
            }
            if election {
                metrics::counter!(crate::telemetry::LEADER_ELECTIONS_HEARD, "stream" => shared.names.events.clone()).increment(1);
                tracing::info!(
                    applied = shared.mirror.applied(),
                    "the events stream has a new leader; watching the view closely"
                );
                watch.heard_election(Instant::now(), shared.mirror.applied());
                close_look.reset();
            }
        }
    }
}

/// While no consumer can be created (after a failover, until the cluster's metadata leader is
/// elected again, which can be seconds after the stream's leader), applies the commits that
/// readers wait for by reading them one by one from the stream's leader, so that appends it has
/// acknowledged are answered meanwhile. The view is still applied in order, by this task alone;
/// the next consumer starts after what this applied. Stops at the first read that fails.
async fn bridge(shared: &Shared) {
    let bridged = apply_read(shared, shared.mirror.wanted()).await;
    if bridged > 0 {
        tracing::info!(
            bridged,
            applied = shared.mirror.applied(),
            "applied commits read one by one while no consumer can be created"
        );
    }
}

/// Applies the next commit after the view, read from the stream's leader, when the consumer has
/// stopped delivering: a message that no consumer can deliver (its header block is malformed,
/// see [`stored`]) is passed this way, and the next consumer starts after it. Given up on after
/// a moment: during a failover the stream may have no leader to answer.
async fn pass_undeliverable(shared: &Shared) {
    let _ = tokio::time::timeout(PASS_UNDELIVERABLE_WITHIN, apply_read(shared, shared.mirror.applied() + 1)).await;
}

/// Reads the commits after the view up to `to` from the stream's leader (a few at once) and
/// applies them in order; stops at the first that cannot be read. How many it applied.
async fn apply_read(shared: &Shared, to: u64) -> u64 {
    let from = shared.mirror.applied() + 1;
    let reads = futures_util::stream::iter((from..=to).map(|sequence| async move {
        (
            sequence,
            stored::get(&shared.js, &shared.names.events, stored::Which::Sequence(sequence)).await,
        )
    }));
    let mut reads = reads.buffered(32);
    let mut applied = 0u64;
    while let Some((sequence, read)) = reads.next().await {
        match read {
            Ok(None) => break,
            Ok(Some(message)) => {
                apply(shared, sequence, &message.subject, Some(&message.headers), &message.payload);
                applied += 1;
            }
            Err(e) => {
                tracing::debug!(sequence, error = %crate::error_chain(&e), "cannot read the stream's commits one by one");
                break;
            }
        }
    }
    applied
}

/// Applies the commit stored at `sequence` under `subject` to the view, however it was read.
fn apply(shared: &Shared, sequence: u64, subject: &str, headers: Option<&async_nats::HeaderMap>, payload: &[u8]) {
    let announced = header(headers, HEADER_EVENTS).and_then(|v| v.parse().ok());
    // The aggregate whose subject it is, exactly as its writers spell it (none, "", when the
    // subject is not one: another spelling of an id is another subject to the server, whose
    // per-subject sequence for the aggregate's own it does not move).
    let filed_under = subject
        .strip_prefix(shared.names.events_subject.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|token| untoken(token).filter(|id| super::wire::token(id) == token))
        .and_then(|id| String::from_utf8(id).ok())
        .unwrap_or_default();
    shared.mirror.apply_filed(sequence, announced, payload, Some(&filed_under));
}

/// The next announcement of a new leader, or never without a subscription to them.
async fn next_election(elected: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match elected {
        Some(elected) => elected.next().await,
        None => std::future::pending().await,
    }
}

/// Forgets the announcements of leader elections already received.
fn drain_elections(elected: &mut Option<async_nats::Subscriber>) {
    use futures_util::FutureExt;
    if let Some(elected) = elected {
        while let Some(Some(_)) = elected.next().now_or_never() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_that_moves_keeps_its_consumer() {
        let mut watch = ViewWatch::new(10);
        assert_eq!(watch.watchdog(12, 15), Verdict::Keep);
        assert_eq!(watch.watchdog(15, 15), Verdict::Keep);
    }

    #[test]
    fn a_view_stalled_for_a_watchdog_tick_while_a_reader_waits_follows_anew() {
        let mut watch = ViewWatch::new(10);
        assert_eq!(watch.watchdog(10, 11), Verdict::FollowAnew("stalled"));
    }

    #[test]
    fn a_still_view_nobody_waits_for_asks_the_stream() {
        let mut watch = ViewWatch::new(10);
        assert_eq!(watch.watchdog(10, 10), Verdict::AskTheStream);
    }

    #[test]
    fn after_an_election_a_view_a_reader_waits_for_follows_anew_at_the_first_close_look() {
        let start = Instant::now();
        let mut watch = ViewWatch::new(10);
        watch.heard_election(start, 10);
        assert!(watch.watching_closely());
        // An append acknowledged by the new leader waits for the view, which does not move.
        assert_eq!(
            watch.close_look(start + WATCH_CLOSELY_EVERY, 10, 11),
            Verdict::FollowAnew("new-leader")
        );
    }

    #[test]
    fn after_an_election_a_view_whose_consumer_survived_keeps_it() {
        let start = Instant::now();
        let mut watch = ViewWatch::new(10);
        watch.heard_election(start, 10);
        // Nothing waited for yet (the new leader has taken nothing): no reason to give it up.
        assert_eq!(watch.close_look(start + WATCH_CLOSELY_EVERY, 10, 10), Verdict::Keep);
        // Then it moves as appends are taken.
        assert_eq!(watch.close_look(start + 2 * WATCH_CLOSELY_EVERY, 14, 15), Verdict::Keep);
        assert_eq!(watch.close_look(start + 3 * WATCH_CLOSELY_EVERY, 15, 15), Verdict::Keep);
    }

    #[test]
    fn the_close_watch_ends_a_while_after_the_election() {
        let start = Instant::now();
        let mut watch = ViewWatch::new(10);
        watch.heard_election(start, 10);
        assert_eq!(watch.close_look(start + WATCH_CLOSELY_FOR, 11, 11), Verdict::Keep);
        assert!(!watch.watching_closely());
        // From then on only the watchdog judges it (a second without moving).
        assert_eq!(watch.close_look(start + WATCH_CLOSELY_FOR * 2, 11, 12), Verdict::Keep);
    }
}
