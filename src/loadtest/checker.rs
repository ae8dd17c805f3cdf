//! The correctness verdict of a load run: what the clients saw, checked against the event log.
//!
//! Pure over its inputs (the log as envelopes in feed order, and the clients' operations with
//! their real-time start/end), so tests can feed it doctored logs and watch each check fail.
//!
//! 1. every 2xx has exactly its effect in the log (by request id), every refusal its rejection
//!    and none of its effects (but a request into a pool refused after it made its number, which
//!    it must have withdrawn; an opt-out that may have found its destination on the list
//!    already has none); every event has its operation, or is the service's own, or may be
//!    one that got no usable answer;
//! 2. versions gap-free per stream, positions unique and increasing;
//! 3. at most one `Released` per number, and nothing changes a number (nor is sent from it)
//!    after it (nor after `RequestWithdrawn`, the end of a number whose request failed); a
//!    sender id changes after its `Released` only by being leased again;
//! 4. no `Released` (of a number or a sender id) while protected, pooled, or changing pools;
//!    no `RequestWithdrawn` while pooled or changing pools;
//! 5. pool and member views of membership agree, and no change of them is left unfinished (nor
//!    a request for a number into a pool); no pool holds a released number or sender id; none
//!    is empty;
//! 6. the writes are linearizable: per stream, log order respects real time, and re-deciding
//!    the recorded commands in log order gives the events (or refusal) the log holds and
//!    reproduces every response the clients saw. Reads are not checked: with several nodes each
//!    answers them from its own view of the log, which promises read-your-writes only;
//! 7. no message is accepted to a destination on the opt-out list in force at that point of
//!    the log (the pool's when sent through a pool, else the number's), unless the number
//!    manages its opt-outs itself;
//! 8. no opt-out list is deleted while a live number or pool names it, and no number or pool
//!    takes up a list that does not exist at that point of the log;
//! 9. enough was checked for the verdict to mean something: a write of the load acknowledged, and
//!    its answers not mostly throttling or server errors.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::audit::recheck::signature;
use crate::codec::{decode_event, kind_of_stream, recorded_commands};
use crate::domain::membership::Member;
use crate::domain::opt_out_list::OptOutListState;
use crate::domain::phone_number::{PhoneNumberEvent, PhoneNumberState};
use crate::domain::pool::{PoolEvent, PoolState};
use crate::domain::sender_id::{SenderIdEvent, SenderIdState};
use crate::domain::types::NumberStatus;
use crate::domain::{Aggregate, Rejection, ResourceKind};
use crate::store::EventEnvelope;

/// What a client did, and what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    Request,
    /// RequestPhoneNumber into a pool (a released number's replacement, at times): the number
    /// joins the pool, or the request is refused and the number it made is withdrawn.
    RequestIntoPool,
    Release,
    Update,
    Associate,
    Disassociate,
    Describe,
    /// SendTextMessage from the number.
    Send,
    /// PutOptedOutNumber of a destination (on the load test's list or `Default`).
    OptOut,
    /// UpdatePhoneNumber to the load test's list or back to `Default`.
    JoinList,
    /// UpdatePool to the load test's list or back to `Default` (so its members' lists and its
    /// own differ, and numbers on either are refused joining it: `OPT_OUT_LIST_MISMATCH`).
    PoolList,
    /// DeleteOptOutList of the load test's list (which the client then creates again).
    DeleteList,
    CreateList,
    /// RequestSenderId of one of the load test's sender ids (after its release).
    RequestSender,
    /// ReleaseSenderId, racing its association with a pool.
    ReleaseSender,
    AssociateSender,
    DisassociateSender,
    /// CreatePool with one of the numbers (the set-up's).
    CreatePool,
}

impl Op {
    pub const ALL: [Op; 18] = [
        Op::Request,
        Op::RequestIntoPool,
        Op::Release,
        Op::Update,
        Op::Associate,
        Op::Disassociate,
        Op::Describe,
        Op::Send,
        Op::OptOut,
        Op::JoinList,
        Op::PoolList,
        Op::DeleteList,
        Op::CreateList,
        Op::RequestSender,
        Op::ReleaseSender,
        Op::AssociateSender,
        Op::DisassociateSender,
        Op::CreatePool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Request => "request",
            Op::RequestIntoPool => "request-into-pool",
            Op::Release => "release",
            Op::Update => "update",
            Op::Associate => "associate",
            Op::Disassociate => "disassociate",
            Op::Describe => "describe",
            Op::Send => "send",
            Op::OptOut => "opt-out",
            Op::JoinList => "join-list",
            Op::PoolList => "pool-list",
            Op::DeleteList => "delete-list",
            Op::CreateList => "create-list",
            Op::RequestSender => "request-sender",
            Op::ReleaseSender => "release-sender",
            Op::AssociateSender => "associate-sender",
            Op::DisassociateSender => "disassociate-sender",
            Op::CreatePool => "create-pool",
        }
    }

    /// Whether the load's clients choose this operation (by `--mix`), rather than the set-up or
    /// a client after a success (a replacement number, the list created again, ...).
    pub fn scheduled(self) -> bool {
        !matches!(
            self,
            Op::Request | Op::RequestIntoPool | Op::CreateList | Op::RequestSender | Op::CreatePool
        )
    }

    /// The kind of resource `ClientOp::number` names: a phone number, an opt-out list's stream
    /// (the list operations), a sender id's stream (the sender-id operations) or a pool (its
    /// `pool` too). A list is named by its stream, not its name: lists of one name in other
    /// accounts or regions are others.
    fn target(self) -> ResourceKind {
        match self {
            Op::PoolList => ResourceKind::Pool,
            Op::OptOut | Op::DeleteList | Op::CreateList => ResourceKind::OptOutList,
            Op::RequestSender | Op::ReleaseSender | Op::AssociateSender | Op::DisassociateSender => ResourceKind::SenderId,
            _ => ResourceKind::PhoneNumber,
        }
    }

    /// Event types a success of this operation must leave, each exactly once, with the stream
    /// kind they belong to.
    fn effects(self) -> &'static [(ResourceKind, &'static str)] {
        match self {
            Op::Request => &[(ResourceKind::PhoneNumber, "PhoneNumberRequested")],
            Op::RequestIntoPool => &[
                (ResourceKind::PhoneNumber, "PhoneNumberRequested"),
                (ResourceKind::PhoneNumber, "AssociatedWithPool"),
                (ResourceKind::Pool, "OriginationIdentityAssociated"),
            ],
            Op::Release => &[(ResourceKind::PhoneNumber, "Released")],
            Op::Update => &[(ResourceKind::PhoneNumber, "PhoneNumberUpdated")],
            Op::Associate => &[
                (ResourceKind::PhoneNumber, "AssociatedWithPool"),
                (ResourceKind::Pool, "OriginationIdentityAssociated"),
            ],
            Op::Disassociate => &[
                (ResourceKind::PhoneNumber, "DisassociatedFromPool"),
                (ResourceKind::Pool, "OriginationIdentityDisassociated"),
            ],
            Op::Send => &[(ResourceKind::PhoneNumber, "MessageSent")],
            // Unless the destination was on the list already (see `opted_out_earlier`).
            Op::OptOut => &[(ResourceKind::OptOutList, "NumberOptedOut")],
            Op::JoinList => &[(ResourceKind::PhoneNumber, "PhoneNumberUpdated")],
            Op::PoolList => &[(ResourceKind::Pool, "PoolUpdated")],
            Op::DeleteList => &[(ResourceKind::OptOutList, "OptOutListDeleted")],
            Op::CreateList => &[(ResourceKind::OptOutList, "OptOutListCreated")],
            Op::RequestSender => &[(ResourceKind::SenderId, "SenderIdRequested")],
            Op::ReleaseSender => &[(ResourceKind::SenderId, "Released")],
            Op::AssociateSender => &[
                (ResourceKind::SenderId, "AssociatedWithPool"),
                (ResourceKind::Pool, "OriginationIdentityAssociated"),
            ],
            Op::DisassociateSender => &[
                (ResourceKind::SenderId, "DisassociatedFromPool"),
                (ResourceKind::Pool, "OriginationIdentityDisassociated"),
            ],
            Op::CreatePool => &[
                (ResourceKind::Pool, "PoolCreated"),
                (ResourceKind::PhoneNumber, "AssociatedWithPool"),
            ],
            Op::Describe => &[],
        }
    }
}

/// One operation as a client saw it. Times are nanoseconds since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientOp {
    pub op: Op,
    /// What the operation is on: see [`Op::target`].
    pub number: String,
    pub pool: Option<String>,
    pub started_ns: u64,
    pub finished_ns: u64,
    pub status: u16,
    /// `__type` of an error response.
    pub error: Option<String>,
    /// `Reason` of an error response, if any.
    pub reason: Option<String>,
    pub request_id: Option<String>,
    /// The destination an opt-out put on its list.
    #[serde(default)]
    pub destination: Option<String>,
}

impl ClientOp {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether this operation may have written to the log under a request id its client never
    /// saw: a write that reached a server (not refused at connect) and got no usable answer (none,
    /// or a 5xx: a request forwarded to another node is carried out under that node's id).
    fn may_have_written_unseen(&self) -> bool {
        self.op != Op::Describe && (self.status >= 500 || (self.status == 0 && self.error.as_deref() != Some(super::CONNECT_ERROR)))
    }

    /// Errors the service may answer without recording anything (back-pressure, faults).
    fn unrecorded_error(&self) -> bool {
        matches!(self.error.as_deref(), Some("ThrottlingException" | "InternalServerException")) || self.outcome_unknown()
    }

    /// No answer, or one saying the request may or may not have been carried out: the storage
    /// failing under it, or the server's deadline passing first (`ServiceUnavailableException`,
    /// which the SDKs retry). Its effect may be in the log, or not, and may land after the answer.
    fn outcome_unknown(&self) -> bool {
        self.status == 0 || self.error.as_deref() == Some("ServiceUnavailableException")
    }

    /// When the operation's effect was settled, as far as the client knows: never, for an
    /// unknown outcome (its work may still commit after the answer).
    fn settled_ns(&self) -> u64 {
        if self.outcome_unknown() {
            u64::MAX
        } else {
            self.finished_ns
        }
    }
}

/// One check and what it found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckResult {
    pub name: String,
    pub checked: u64,
    pub violations: Vec<String>,
}

/// All checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Verdict {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

/// Keep reports readable: the first few violations of a check are listed, then a count.
const MAX_LISTED: usize = 20;

struct Check {
    result: CheckResult,
}

impl Check {
    fn new(name: &str) -> Self {
        Check {
            result: CheckResult {
                name: name.into(),
                checked: 0,
                violations: vec![],
            },
        }
    }
    fn count(&mut self) {
        self.result.checked += 1;
    }
    fn violation(&mut self, message: String) {
        if self.result.violations.len() < MAX_LISTED {
            self.result.violations.push(message);
        } else if self.result.violations.len() == MAX_LISTED {
            self.result.violations.push("... (more violations not listed)".into());
        }
    }
}

fn is_refusal(event_type: &str) -> bool {
    event_type.ends_with("Rejected") || event_type.ends_with("Aborted")
}

/// Runs every check over a load run: `log` is written by `ops` alone (set-up included), and by
/// the service finishing what they left half done.
pub fn check(log: &[EventEnvelope], ops: &[ClientOp]) -> Verdict {
    verdict(log, ops, Some(0))
}

/// [`check`] of a run against a log that held events before it: those up to position `after`
/// were written by others.
pub fn check_after(log: &[EventEnvelope], ops: &[ClientOp], after: u64) -> Verdict {
    verdict(log, ops, Some(after))
}

/// The log's own invariants, for a log whose writers' operations are not known (an old
/// fixture): what the clients saw is not checked, nor that each event has its operation.
pub fn check_invariants(log: &[EventEnvelope]) -> Verdict {
    verdict(log, &[], None)
}

/// Runs every check; events from position `claimed_after` on must each have their operation in
/// `ops` (`None`: no event need).
fn verdict(log: &[EventEnvelope], ops: &[ClientOp], claimed_after: Option<u64>) -> Verdict {
    let mut by_stream: BTreeMap<&str, Vec<&EventEnvelope>> = BTreeMap::new();
    for e in log {
        by_stream.entry(e.stream_id.as_str()).or_default().push(e);
    }
    let mut by_request: HashMap<&str, Vec<&EventEnvelope>> = HashMap::new();
    for e in log {
        by_request.entry(e.request_id.as_str()).or_default().push(e);
    }
    let op_of: HashMap<&str, &ClientOp> = ops.iter().filter_map(|o| o.request_id.as_deref().map(|r| (r, o))).collect();
    let mut checks = vec![
        acknowledged_effects(log, ops, &by_request, &by_stream, &op_of, claimed_after),
        ordering(log, &by_stream),
        single_release(&by_stream),
        release_preconditions(&by_stream),
        membership(&by_stream),
        linearizable(ops, &by_stream, &by_request, &op_of, claimed_after.unwrap_or(0)),
        no_message_to_opted_out(log),
        lists_in_use(log),
    ];
    if claimed_after.is_some() {
        checks.push(enough_checked(ops));
    }
    let ok = checks.iter().all(|c| c.violations.is_empty());
    Verdict { ok, checks }
}

/// The least share of the load's answered writes that must have an outcome the other checks
/// judge: below it, a run that was mostly throttled or failing would pass on the little that was
/// checked.
const MIN_CHECKED_SHARE: f64 = 0.05;

/// Check 9: the run was checked, not mostly skipped: at least one write of the load (the operations
/// `--mix` schedules) acknowledged, and at least [`MIN_CHECKED_SHARE`] of its answered writes
/// neither throttled nor a server error. Operations that got no answer are not held against the
/// share: a server that dies mid-run (tests/crash.rs kills it on purpose) leaves most of a run
/// unanswered, while what it answered before is still checked; one that never answers leaves no
/// acknowledged write.
fn enough_checked(ops: &[ClientOp]) -> CheckResult {
    let mut c = Check::new(&format!(
        "9. enough was checked: an acknowledged write, and at least {:.0}% of the load's answered writes neither throttled nor a server error",
        MIN_CHECKED_SHARE * 100.0
    ));
    // Writes only: reads are not checked (check 6), so they cannot make up the share.
    let load = || ops.iter().filter(|o| o.op.scheduled() && o.op != Op::Describe);
    let answered = load().filter(|o| o.status != 0).count();
    let checked = load().filter(|o| !o.unrecorded_error()).count();
    let writes = load().filter(|o| o.ok()).count();
    c.result.checked = checked as u64;
    if writes == 0 {
        c.violation(format!(
            "none of the load's {} operations was an acknowledged write ({answered} answered): nothing was checked",
            load().count()
        ));
    }
    if (checked as f64) < MIN_CHECKED_SHARE * answered as f64 {
        c.violation(format!(
            "only {checked} of the load's {answered} answered writes had an outcome to check; the rest were throttled or server errors"
        ));
    }
    c.result
}

/// Check 1: nothing acknowledged was lost, nothing applied twice, every refusal recorded;
/// nothing written that no operation answers for.
fn acknowledged_effects(
    log: &[EventEnvelope],
    ops: &[ClientOp],
    by_request: &HashMap<&str, Vec<&EventEnvelope>>,
    by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>,
    op_of: &HashMap<&str, &ClientOp>,
    claimed_after: Option<u64>,
) -> CheckResult {
    let mut c = Check::new("1. every 2xx has exactly one effect in the log; every refusal is recorded; every event has its operation");
    if let Some(after) = claimed_after {
        unclaimed_writes(&mut c, log, ops, op_of, after);
    }
    let on_lists = on_lists(by_stream);
    for op in ops {
        c.count();
        let Some(rid) = op.request_id.as_deref() else {
            if !op.unrecorded_error() {
                c.violation(format!("{} on {}: response without x-amzn-RequestId", op.op.name(), op.number));
            }
            continue;
        };
        let events = by_request.get(rid).map(Vec::as_slice).unwrap_or_default();
        let on = |kind: ResourceKind| -> Option<&str> {
            match kind {
                ResourceKind::PhoneNumber => Some(op.number.as_str()),
                ResourceKind::Pool => op.pool.as_deref(),
                ResourceKind::OptOutList => Some(op.number.as_str()),
                ResourceKind::SenderId => Some(op.number.as_str()),
            }
        };
        if op.ok() {
            for (kind, effect) in op.op.effects() {
                let mut n = events
                    .iter()
                    .filter(|e| e.event_type == *effect && Some(e.stream_id.as_str()) == on(*kind))
                    .count();
                if n == 0 {
                    n = joined_by_reconciler(op, by_stream, effect);
                }
                let already_there = || {
                    op.op == Op::OptOut
                        && on(*kind)
                            .is_some_and(|list| opted_out_earlier(op, list, &on_lists, op_of, ops, claimed_after.unwrap_or(u64::MAX)))
                };
                if n != 1 && !(n == 0 && already_there()) {
                    c.violation(format!(
                        "{} {rid} on {}: acknowledged, but the log holds {n} {effect} events for it",
                        op.op.name(),
                        op.number
                    ));
                }
            }
            if op.op == Op::Describe && !events.is_empty() {
                c.violation(format!("describe {rid} wrote {} events", events.len()));
            }
        } else {
            // A request into a pool refused after it made its number withdrew that number (or a
            // reconciler did, carrying the request on beside it): the number it made, and
            // nothing else, is no effect of a refusal.
            let withdrawn = |made: &EventEnvelope| {
                op.op == Op::RequestIntoPool
                    && made.event_type == "PhoneNumberRequested"
                    && by_stream
                        .get(made.stream_id.as_str())
                        .is_some_and(|stream| stream.iter().any(|e| e.event_type == "RequestWithdrawn"))
            };
            let effects: Vec<&&EventEnvelope> = events
                .iter()
                .filter(|e| op.op.effects().iter().any(|(_, t)| e.event_type == *t) && !withdrawn(e))
                .collect();
            if !effects.is_empty() && !op.outcome_unknown() {
                c.violation(format!(
                    "{} {rid} on {}: answered {} but applied {}",
                    op.op.name(),
                    op.number,
                    op.error.as_deref().unwrap_or("?"),
                    effects[0].event_type
                ));
            }
            let exists = on(op.op.target()).is_some_and(|s| by_stream.contains_key(s));
            let recorded = events.iter().any(|e| is_refusal(&e.event_type));
            if exists && !recorded && !op.unrecorded_error() && op.op != Op::Describe {
                c.violation(format!(
                    "{} {rid} on {}: refused with {} but no rejection event was recorded",
                    op.op.name(),
                    op.number,
                    op.error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    c.result
}

/// How many of the join's `effect` events of a request into a pool (`op`) a reconciler wrote in
/// its stead (under its own `recovery-` request id): once a request has been left alone for
/// long, a reconciler carries it on, and one of its attempts still on its way then waits for
/// that join and answers it. The pool's event counts if the reconciler's request that joined
/// the number wrote it.
fn joined_by_reconciler(op: &ClientOp, by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>, effect: &str) -> usize {
    use crate::service::RECOVERY_REQUEST_PREFIX;
    let (Op::RequestIntoPool, Some(pool)) = (op.op, op.pool.as_deref()) else {
        return 0;
    };
    let stream_of = |id: &str| by_stream.get(id).map(Vec::as_slice).unwrap_or_default();
    let joined_by: HashSet<&str> = stream_of(&op.number)
        .iter()
        .filter(|e| e.event_type == "AssociatedWithPool" && e.request_id.starts_with(RECOVERY_REQUEST_PREFIX))
        .filter(|e| e.payload.get("PoolId").and_then(serde_json::Value::as_str) == Some(pool))
        .map(|e| e.request_id.as_str())
        .collect();
    let stream = if effect == "OriginationIdentityAssociated" {
        pool
    } else {
        op.number.as_str()
    };
    stream_of(stream)
        .iter()
        .filter(|e| e.event_type == effect && joined_by.contains(e.request_id.as_str()))
        .count()
}

/// Whether a reconciler carried on the request into a pool `op` (request id `rid`) beside it:
/// wrote on the number it made under its own request id. The request's own steps may then have
/// been refused (a join under way, the number withdrawn) while it answered the outcome of the
/// reconciler's, so its response is not the re-decision of its own commands.
fn carried_on_by_reconciler(
    op: &ClientOp,
    rid: &str,
    by_request: &HashMap<&str, Vec<&EventEnvelope>>,
    by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>,
) -> bool {
    use crate::service::RECOVERY_REQUEST_PREFIX;
    let made = by_request.get(rid).map(Vec::as_slice).unwrap_or_default();
    op.op == Op::RequestIntoPool
        && made.iter().filter(|e| e.event_type == "PhoneNumberRequested").any(|made| {
            by_stream
                .get(made.stream_id.as_str())
                .is_some_and(|stream| stream.iter().any(|e| e.request_id.starts_with(RECOVERY_REQUEST_PREFIX)))
        })
}

/// Requests that wrote to the log after position `after` though no operation of `ops` answers for
/// them, beyond what the operations without a usable answer may account for: a write nobody
/// asked for (or one whose answer was lost and the operation with it).
///
/// The service writes under request ids of its own only when it finishes what a request left
/// half done (`recovery-…`). A request that got no answer (status 0) never learnt its request
/// id; one answered 5xx may still be carried out by the node it was forwarded to, under that
/// node's request id (its answer then names the first node's). Request ids are the server's
/// (the client cannot send its own), so such writes are matched by count, not by id.
fn unclaimed_writes(c: &mut Check, log: &[EventEnvelope], ops: &[ClientOp], op_of: &HashMap<&str, &ClientOp>, after: u64) {
    use crate::service::RECOVERY_REQUEST_PREFIX;
    // Each unclaimed request with its first event, in log order.
    let mut unclaimed: Vec<&EventEnvelope> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let written: HashSet<&str> = log.iter().map(|e| e.request_id.as_str()).collect();
    for e in log.iter().filter(|e| e.position > after) {
        let rid = e.request_id.as_str();
        if op_of.contains_key(rid) || rid.starts_with(RECOVERY_REQUEST_PREFIX) {
            continue;
        }
        if seen.insert(rid) {
            unclaimed.push(e);
        }
    }
    // Only writes may write, and only those that reached a server and whose own request id
    // wrote nothing can have written under another.
    let unanswered = ops
        .iter()
        .filter(|o| o.may_have_written_unseen())
        .filter(|o| o.request_id.as_deref().is_none_or(|r| !written.contains(r)))
        .count();
    c.result.checked += unclaimed.len() as u64;
    if unclaimed.len() > unanswered {
        const SHOWN: usize = 5;
        let shown: Vec<String> = unclaimed
            .iter()
            .take(SHOWN)
            .map(|e| format!("{} ({} on {} at position {})", e.request_id, e.event_type, e.stream_id, e.position))
            .collect();
        c.violation(format!(
            "{} requests wrote to the log that no operation answers for, and only {unanswered} operations went without a usable answer: {}{}",
            unclaimed.len(),
            shown.join(", "),
            if unclaimed.len() > SHOWN { ", ..." } else { "" }
        ));
    }
}

/// A stretch of an opt-out list's stream in which a destination was on the list: the request
/// that put it there, and the one that took it off (removed it, or deleted the list), if any.
struct OnList<'a> {
    put_by: &'a str,
    /// Log position of the event that put it there.
    put_at: u64,
    taken_off_by: Option<&'a str>,
}

/// Every stretch in which each destination was on each list, by list stream and destination.
fn on_lists<'a>(by_stream: &BTreeMap<&'a str, Vec<&'a EventEnvelope>>) -> HashMap<(&'a str, String), Vec<OnList<'a>>> {
    use crate::domain::opt_out_list::OptOutListEvent;
    let mut stretches: HashMap<(&str, String), Vec<OnList>> = HashMap::new();
    let lists = by_stream
        .iter()
        .filter(|(stream, _)| kind_of_stream(stream) == Some(ResourceKind::OptOutList));
    for (stream, events) in lists {
        // Destinations on the list now, with the request that put each there and its position.
        let mut on: HashMap<String, (&str, u64)> = HashMap::new();
        let mut close = |destination: String, (put_by, put_at): (&'a str, u64), taken_off_by: Option<&'a str>| {
            stretches.entry((*stream, destination)).or_default().push(OnList {
                put_by,
                put_at,
                taken_off_by,
            });
        };
        for e in events {
            let rid = (e.request_id.as_str(), e.position);
            // An event that does not decode is reported by check 6, which replays the stream.
            let Ok(event) = decode_event::<OptOutListEvent>(e) else { continue };
            match event {
                OptOutListEvent::OptOutListCreated(list) => {
                    for destination in list.opted_out.keys().cloned() {
                        on.entry(destination).or_insert(rid);
                    }
                }
                OptOutListEvent::NumberOptedOut { number, .. } => {
                    on.entry(number).or_insert(rid);
                }
                OptOutListEvent::OptedOutNumberDeleted { number, .. } | OptOutListEvent::EndUserOptedIn { number } => {
                    if let Some(put_by) = on.remove(&number) {
                        close(number, put_by, Some(rid.0));
                    }
                }
                OptOutListEvent::OptOutListDeleted { .. } => {
                    for (destination, put_by) in on.drain() {
                        close(destination, put_by, Some(rid.0));
                    }
                }
                OptOutListEvent::TagsChanged { .. } | OptOutListEvent::CommandRejected { .. } => {}
            }
        }
        for (destination, put_by) in on {
            close(destination, put_by, None);
        }
    }
    stretches
}

/// Whether an opt-out answered 2xx without an event may have found its destination on the list
/// already, which the service answers without writing anything (`OptOutListState::decide`): some
/// stretch in which the destination was on the list can hold the moment the opt-out was decided,
/// being put there by a request begun before the opt-out ended, and not taken off by one settled
/// before it began. A put written before the run (at or before position `after`) was there from
/// its start; one during the run that no operation answers for was written under an id its client
/// never saw, so by an opt-out of that destination to that list whose outcome is unknown: begun
/// no earlier than the first of those.
fn opted_out_earlier(
    op: &ClientOp,
    list: &str,
    on_lists: &HashMap<(&str, String), Vec<OnList>>,
    op_of: &HashMap<&str, &ClientOp>,
    ops: &[ClientOp],
    after: u64,
) -> bool {
    let Some(destination) = op.destination.clone() else { return false };
    let unknown_from = || {
        ops.iter()
            .filter(|o| o.op == Op::OptOut && o.number == list && o.destination == op.destination && o.may_have_written_unseen())
            .map(|o| o.started_ns)
            .min()
            .unwrap_or(u64::MAX)
    };
    on_lists.get(&(list, destination)).is_some_and(|stretches| {
        stretches.iter().any(|s| {
            let put_from = match op_of.get(s.put_by) {
                Some(o) => o.started_ns,
                None if s.put_at <= after => 0,
                None => unknown_from(),
            };
            let off_at = s.taken_off_by.and_then(|r| op_of.get(r)).map_or(u64::MAX, |o| o.settled_ns());
            put_from < op.finished_ns && off_at > op.started_ns
        })
    })
}

/// 2. Versions gap-free per stream; positions unique and increasing.
fn ordering(log: &[EventEnvelope], by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>) -> CheckResult {
    let mut c = Check::new("2. versions gap-free per stream; positions unique and increasing");
    for pair in log.windows(2) {
        c.count();
        if pair[1].position <= pair[0].position {
            c.violation(format!("position {} follows {}", pair[1].position, pair[0].position));
        }
    }
    for (stream, events) in by_stream {
        for (i, e) in events.iter().enumerate() {
            c.count();
            if e.version != i as u64 + 1 {
                c.violation(format!("{stream}: event {} has version {} (gap or duplicate)", i + 1, e.version));
                break;
            }
        }
    }
    c.result
}

/// 3. At most one `Released`, and nothing changes a number after it.
fn single_release(by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>) -> CheckResult {
    let mut c = Check::new("3. at most one Released per number, nothing changes it (or is sent from it) afterwards");
    for (stream, events) in by_stream.iter() {
        // A sender id can be leased again once released; a number never comes back.
        let leased_again = match kind_of_stream(stream) {
            Some(ResourceKind::PhoneNumber) => None,
            Some(ResourceKind::SenderId) => Some("SenderIdRequested"),
            _ => continue,
        };
        c.count();
        // The event that ended it (`Released`, or `RequestWithdrawn` for a number whose request
        // failed), while it stays ended.
        let mut ended: Option<&str> = None;
        for e in events {
            if ended.is_some() && leased_again == Some(e.event_type.as_str()) {
                ended = None;
                continue;
            }
            if let (Some(end), false) = (ended, is_refusal(&e.event_type)) {
                c.violation(format!("{stream}: {} at version {} after {end}", e.event_type, e.version));
                break;
            }
            if e.event_type == "Released" || e.event_type == "RequestWithdrawn" {
                ended = Some(e.event_type.as_str());
            }
        }
    }
    c.result
}

fn replay_stream<A: Aggregate>(events: &[&EventEnvelope], mut visit: impl FnMut(&A, &A::Event, &EventEnvelope)) -> Result<A, String> {
    let mut state = A::default();
    for e in events {
        let event: A::Event = decode_event(e).map_err(|err| err.to_string())?;
        visit(&state, &event, e);
        state = state.evolve(&event);
    }
    Ok(state)
}

/// 4. No release (of a number or a sender id) while protected, pooled, or changing pools.
fn release_preconditions(by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>) -> CheckResult {
    let mut c = Check::new("4. no Released while protected, in a pool, or changing pools");
    /// Why `m` (protected or not) must not be released, if it must not.
    fn unreleasable<M: Member>(m: &M, protected: bool) -> Option<String> {
        (protected || !m.standings().is_empty()).then(|| format!("protection={protected} pools={:?} status={}", m.standings(), m.status()))
    }
    for (stream, events) in by_stream {
        let mut bad = Vec::new();
        let mut note = |why: Option<String>, e: &EventEnvelope| {
            if let Some(why) = why {
                bad.push(format!("{stream} v{}: released with {why}", e.version));
            }
        };
        let replayed = match kind_of_stream(stream) {
            Some(ResourceKind::PhoneNumber) => replay_stream::<PhoneNumberState>(events, |state, event, e| {
                match (event, &state.0) {
                    (PhoneNumberEvent::Released { .. }, Some(n)) => note(unreleasable(n, n.deletion_protection_enabled), e),
                    // The request that made it failed: its protection was never the caller's.
                    (PhoneNumberEvent::RequestWithdrawn { .. }, Some(n)) => note(unreleasable(n, false), e),
                    _ => {}
                }
            })
            .map(drop),
            Some(ResourceKind::SenderId) => replay_stream::<SenderIdState>(events, |state, event, e| {
                if let (SenderIdEvent::Released { .. }, Some(s)) = (event, &state.0) {
                    note(unreleasable(s, s.deletion_protection_enabled), e);
                }
            })
            .map(drop),
            _ => continue,
        };
        c.count();
        if let Err(err) = replayed {
            c.violation(format!("{stream}: {err}"));
        }
        for b in bad {
            c.violation(b);
        }
    }
    c.result
}

/// Check 5: pool and member (number or sender id) views agree; no released member, no empty live
/// pool, no half-done change.
fn membership(by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>) -> CheckResult {
    let mut c = Check::new("5. pool and member views of membership agree; no released member; no empty pool");
    // Each member as the log leaves it: whether it is live, its pools (a sender id's may be
    // several), the pools it is joining or leaving.
    type Said = (bool, Vec<String>, Vec<String>);
    let mut members_say: BTreeMap<&str, Said> = BTreeMap::new();
    fn said<M: Member>(m: &M) -> Said {
        let changing = m.standings().into_iter().filter(|(_, s)| s.is_changing());
        (
            m.status() != NumberStatus::Deleted,
            m.pools().into_iter().map(String::from).collect(),
            changing.map(|(p, s)| format!("{s:?} {p}")).collect(),
        )
    }
    let mut pools = BTreeMap::new();
    for (stream, events) in by_stream {
        match kind_of_stream(stream) {
            Some(ResourceKind::PhoneNumber) => match replay_stream::<PhoneNumberState>(events, |_, _, _| {}) {
                Ok(s) => {
                    if let Some(n) = &s.0 {
                        members_say.insert(*stream, said(n));
                        // A request into a pool stopped between its steps (its node killed) is
                        // finished by a reconciler: the number joins or is withdrawn.
                        if let Some(pool) = n.unfinished_request() {
                            c.violation(format!(
                                "{stream}: left outside {pool}, which its request named, after the load stopped"
                            ));
                        }
                    }
                }
                Err(e) => c.violation(format!("{stream}: {e}")),
            },
            Some(ResourceKind::SenderId) => match replay_stream::<SenderIdState>(events, |_, _, _| {}) {
                Ok(s) => {
                    if let Some(n) = &s.0 {
                        members_say.insert(*stream, said(n));
                    }
                }
                Err(e) => c.violation(format!("{stream}: {e}")),
            },
            Some(ResourceKind::Pool) => match replay_stream::<PoolState>(events, |_, _: &PoolEvent, _| {}) {
                Ok(s) => {
                    pools.insert(*stream, s);
                }
                Err(e) => c.violation(format!("{stream}: {e}")),
            },
            Some(ResourceKind::OptOutList) => {}
            None => c.violation(format!("{stream}: unknown stream kind")),
        }
    }
    let mut said_by_numbers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, (_, pools, changing)) in &members_say {
        c.count();
        if !changing.is_empty() {
            c.violation(format!("{id}: left {} after the load stopped", changing.join(", ")));
        }
        for p in pools {
            said_by_numbers.entry(p.clone()).or_default().insert(id.to_string());
        }
    }
    for (id, s) in &pools {
        c.count();
        let Some(p) = &s.0 else { continue };
        if p.deleted {
            continue;
        }
        let members: BTreeSet<String> = p.members.keys().cloned().collect();
        if members.is_empty() {
            c.violation(format!("{id}: live pool with no member"));
        }
        for m in &members {
            if members_say.get(m.as_str()).is_none_or(|(live, ..)| !live) {
                c.violation(format!("{id}: holds {m}, which is released or unknown"));
            }
        }
        let said = said_by_numbers.remove(*id).unwrap_or_default();
        if said != members {
            c.violation(format!("{id}: the pool says {members:?}, its members say {said:?}"));
        }
    }
    for (pool, said) in said_by_numbers {
        c.violation(format!("{said:?} say they are in {pool}, which is not a live pool"));
    }
    c.result
}

fn reason_code(r: &Rejection) -> (String, Option<String>) {
    match r {
        Rejection::NotFound { .. } => ("ResourceNotFoundException".into(), None),
        Rejection::Conflict { reason, .. } => ("ConflictException".into(), Some(reason.to_string())),
        Rejection::Validation { reason, .. } => ("ValidationException".into(), Some(reason.to_string())),
        Rejection::QuotaExceeded { reason, .. } => ("ServiceQuotaExceededException".into(), Some(reason.to_string())),
    }
}

/// What re-deciding one recorded command gives.
enum Redecided {
    Effect,
    Refused(String, Option<String>),
    Unknown,
}

/// Decides every recorded command of one stream again, on the state it saw: notes the outcome
/// by request id in `decisions`, and in `diverged` each command whose events (or refusal) come
/// out other than the log holds them.
fn redecide<A: Aggregate>(
    events: &[&EventEnvelope],
    decisions: &mut HashMap<String, Vec<Redecided>>,
    diverged: &mut Vec<String>,
    after: u64,
) -> Result<(), String> {
    let mut state = A::default();
    for recorded in recorded_commands::<A>(events.iter().copied()) {
        let first = recorded.events[0];
        let written: Vec<A::Event> = recorded
            .events
            .iter()
            .map(|e| decode_event(e).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?;
        let outcome = match &recorded.command {
            Some(command) => {
                let today = state.decide(command);
                // As the audit's re-check compares them: a lone rejection event is the refusal.
                let logged = match written.as_slice() {
                    [only] => A::rejection_in(only).map_or_else(|| Ok(written.clone()), |r| Err(r.clone())),
                    _ => Ok(written.clone()),
                };
                let (was, now) = (signature(&logged), signature(&today));
                // Commands decided before the run (perhaps by an older build) are not its.
                if was != now && first.position > after {
                    diverged.push(format!(
                        "{} v{} ({} {}): the log holds {was}, re-deciding gives {now}",
                        first.stream_id, first.version, first.command, first.request_id
                    ));
                }
                match today {
                    Ok(_) if recorded.events.iter().any(|e| e.event_type.ends_with("Aborted")) => {
                        Redecided::Refused("Aborted".into(), None)
                    }
                    Ok(_) => Redecided::Effect,
                    Err(r) => {
                        let (code, reason) = reason_code(&r);
                        Redecided::Refused(code, reason)
                    }
                }
            }
            None => Redecided::Unknown,
        };
        decisions.entry(first.request_id.clone()).or_default().push(outcome);
        for event in &written {
            state = state.evolve(event);
        }
    }
    Ok(())
}

/// Check 6: log order respects real time, and re-deciding in log order gives the logged events and
/// reproduces every response (of the writes: reads are not checked).
fn linearizable(
    ops: &[ClientOp],
    by_stream: &BTreeMap<&str, Vec<&EventEnvelope>>,
    by_request: &HashMap<&str, Vec<&EventEnvelope>>,
    op_of: &HashMap<&str, &ClientOp>,
    after: u64,
) -> CheckResult {
    let mut c = Check::new("6. writes linearizable: log order respects real time; re-deciding gives the logged events and every response");
    // Real time: an operation that finished before another started must come first in each
    // stream both touched.
    for (stream, events) in by_stream {
        let mut spans: Vec<(u64, u64, &ClientOp)> = Vec::new(); // (first version, last version, op)
        let mut index: HashMap<&str, usize> = HashMap::new();
        for e in events {
            let Some(op) = op_of.get(e.request_id.as_str()) else { continue };
            match index.get(e.request_id.as_str()) {
                Some(&i) => spans[i].1 = e.version,
                None => {
                    index.insert(e.request_id.as_str(), spans.len());
                    spans.push((e.version, e.version, op));
                }
            }
        }
        // Going backwards in log order, remember the earliest finish seen; an operation that
        // started after some later-logged operation had already finished is out of order.
        let mut earliest_finish_after: Option<(u64, &ClientOp)> = None;
        for (first, _, op) in spans.iter().rev() {
            c.count();
            if let Some((finish, later)) = earliest_finish_after {
                if finish < op.started_ns {
                    c.violation(format!(
                        "{stream}: {} {} (v{first}) is logged before {} {}, which had finished before it started",
                        op.op.name(),
                        op.request_id.as_deref().unwrap_or("?"),
                        later.op.name(),
                        later.request_id.as_deref().unwrap_or("?")
                    ));
                }
            }
            if earliest_finish_after.is_none_or(|(f, _)| op.settled_ns() < f) {
                earliest_finish_after = Some((op.settled_ns(), op));
            }
        }
    }
    // Responses: re-decide every recorded command on the state it saw.
    let mut decisions: HashMap<String, Vec<Redecided>> = HashMap::new();
    let mut diverged = Vec::new();
    for (stream, events) in by_stream {
        let (decisions, diverged) = (&mut decisions, &mut diverged);
        let result = match kind_of_stream(stream) {
            Some(ResourceKind::PhoneNumber) => redecide::<PhoneNumberState>(events, decisions, diverged, after),
            Some(ResourceKind::Pool) => redecide::<PoolState>(events, decisions, diverged, after),
            Some(ResourceKind::OptOutList) => redecide::<OptOutListState>(events, decisions, diverged, after),
            Some(ResourceKind::SenderId) => redecide::<SenderIdState>(events, decisions, diverged, after),
            None => Err("unknown stream kind".into()),
        };
        if let Err(e) = result {
            c.violation(format!("{stream}: {e}"));
        }
    }
    for d in diverged {
        c.violation(d);
    }
    for op in ops.iter().filter(|o| o.op != Op::Describe && !o.unrecorded_error()) {
        let Some(rid) = op.request_id.as_deref() else { continue };
        if !by_request.contains_key(rid) || carried_on_by_reconciler(op, rid, by_request, by_stream) {
            continue; // nothing recorded (checked by 1.), or answered what a reconciler did
        }
        c.count();
        let outcomes = decisions.get(rid).map(Vec::as_slice).unwrap_or_default();
        if outcomes.iter().any(|o| matches!(o, Redecided::Unknown)) {
            continue;
        }
        let refusals: Vec<(&String, &Option<String>)> = outcomes
            .iter()
            .filter_map(|o| match o {
                Redecided::Refused(code, reason) if code != "Aborted" => Some((code, reason)),
                _ => None,
            })
            .collect();
        let aborted = outcomes
            .iter()
            .any(|o| matches!(o, Redecided::Refused(code, _) if code == "Aborted"));
        let reproduced = if op.ok() {
            refusals.is_empty() && !aborted
        } else {
            refusals
                .iter()
                .any(|(code, reason)| Some(code.as_str()) == op.error.as_deref() && (reason.is_none() || **reason == op.reason))
        };
        if !reproduced {
            c.violation(format!(
                "{} {rid} on {}: the client saw {} {}, re-deciding the log gives {:?}",
                op.op.name(),
                op.number,
                op.status,
                op.error.as_deref().unwrap_or(""),
                refusals
            ));
        }
    }
    c.result
}

/// The states of every aggregate as the log stands at each position, for the checks that span
/// aggregates (7 and 8): each event is applied to its stream's state in feed order.
#[derive(Default)]
struct World {
    numbers: HashMap<String, PhoneNumberState>,
    pools: HashMap<String, PoolState>,
    lists: HashMap<String, OptOutListState>,
    sender_ids: HashMap<String, SenderIdState>,
    /// How many live numbers and pools name each list, by account, region and list name: kept
    /// as they change, so a list's deletion need not look at every number and pool.
    users: HashMap<(String, String, String), usize>,
}

/// What checks 7 and 8 look at of a number, pool, list or sender id at one point of the log:
/// taken from its state there, so no state (a list's grows with every opt-out) is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    account: String,
    region: String,
    /// The opt-out list it names: a list its own name, a sender id `Default` (it names none).
    list: String,
    self_managed_opt_outs: bool,
    /// Neither released nor deleted.
    live: bool,
}

impl Named {
    fn number(s: &PhoneNumberState) -> Option<Named> {
        s.0.as_ref().map(|n| Named {
            account: n.account.clone(),
            region: n.region.clone(),
            list: n.opt_out_list_name.clone(),
            self_managed_opt_outs: n.self_managed_opt_outs_enabled,
            live: n.status != NumberStatus::Deleted,
        })
    }

    fn pool(s: &PoolState) -> Option<Named> {
        s.0.as_ref().map(|p| Named {
            account: p.account.clone(),
            region: p.region.clone(),
            list: p.opt_out_list_name.clone(),
            self_managed_opt_outs: p.self_managed_opt_outs_enabled,
            live: !p.deleted,
        })
    }

    /// A list, while it exists.
    fn list(s: &OptOutListState) -> Option<Named> {
        s.live().map(|l| Named {
            account: l.account.clone(),
            region: l.region.clone(),
            list: l.opt_out_list_name.clone(),
            self_managed_opt_outs: false,
            live: true,
        })
    }

    fn sender_id(s: &SenderIdState) -> Option<Named> {
        s.0.as_ref().map(|s| Named {
            account: s.account.clone(),
            region: s.region.clone(),
            list: crate::domain::opt_out_list::DEFAULT_LIST.to_string(),
            self_managed_opt_outs: false,
            live: s.status() != NumberStatus::Deleted,
        })
    }

    /// The key of the list a live number or pool names.
    fn users_key(&self) -> Option<(String, String, String)> {
        self.live.then(|| (self.account.clone(), self.region.clone(), self.list.clone()))
    }
}

/// One step of the world: the event's stream before it (and after it, for the list users), and
/// (where a check looks at it) the event.
enum Step {
    Number {
        before: Option<Named>,
        after: Option<Named>,
        event: PhoneNumberEvent,
    },
    Pool {
        before: Option<Named>,
        after: Option<Named>,
    },
    List(Option<Named>, crate::domain::opt_out_list::OptOutListEvent),
    SenderId(Option<Named>, SenderIdEvent),
}

/// What [`step`] gives: the stream before the event, after it, and the event.
type Applied<E> = (Option<Named>, Option<Named>, E);

/// Applies `e` to its stream's state in `states`; returns the event and what `named` makes of
/// the state before and after it.
fn step<A: Aggregate>(
    states: &mut HashMap<String, A>,
    e: &EventEnvelope,
    named: fn(&A) -> Option<Named>,
) -> Result<Applied<A::Event>, String> {
    let event: A::Event = decode_event(e).map_err(|err| format!("{} v{}: {err}", e.stream_id, e.version))?;
    let state = match states.get_mut(&e.stream_id) {
        Some(state) => state,
        None => states.entry(e.stream_id.clone()).or_default(),
    };
    let before = std::mem::take(state);
    let was = named(&before);
    *state = before.evolve(&event);
    Ok((was, named(state), event))
}

impl World {
    fn apply(&mut self, e: &EventEnvelope) -> Result<Step, String> {
        let step = match kind_of_stream(&e.stream_id) {
            Some(ResourceKind::PhoneNumber) => {
                step(&mut self.numbers, e, Named::number).map(|(before, after, event)| Step::Number { before, after, event })?
            }
            Some(ResourceKind::Pool) => step(&mut self.pools, e, Named::pool).map(|(before, after, _)| Step::Pool { before, after })?,
            Some(ResourceKind::OptOutList) => step(&mut self.lists, e, Named::list).map(|(before, _, event)| Step::List(before, event))?,
            Some(ResourceKind::SenderId) => {
                step(&mut self.sender_ids, e, Named::sender_id).map(|(before, _, event)| Step::SenderId(before, event))?
            }
            None => return Err(format!("{}: unknown stream kind", e.stream_id)),
        };
        if let Step::Number { before, after, .. } | Step::Pool { before, after } = &step {
            if before != after {
                if let Some(key) = before.as_ref().and_then(Named::users_key) {
                    if let Some(n) = self.users.get_mut(&key) {
                        *n = n.saturating_sub(1);
                    }
                }
                if let Some(key) = after.as_ref().and_then(Named::users_key) {
                    *self.users.entry(key).or_default() += 1;
                }
            }
        }
        Ok(step)
    }

    /// The live list `name` of the account and region, if it exists now.
    fn list(&self, account: &str, region: &str, name: &str) -> Option<&crate::domain::opt_out_list::OptOutList> {
        let id = ResourceKind::opt_out_list_id(&crate::domain::Scope::new(account, region), name);
        self.lists.get(&id).and_then(|l| l.live())
    }

    /// Live numbers and pools of the account and region that name the list `name`.
    fn users_of(&self, list: &Named) -> usize {
        list.users_key().and_then(|key| self.users.get(&key).copied()).unwrap_or(0)
    }
}

/// Runs check `name` over the log in feed order: `visit` sees each event with its stream before
/// (and after) it, and every aggregate's state after it.
fn walk(log: &[EventEnvelope], name: &str, mut visit: impl FnMut(&mut Check, &World, &EventEnvelope, Step)) -> CheckResult {
    let mut c = Check::new(name);
    let mut world = World::default();
    for e in log {
        match world.apply(e) {
            Ok(step) => visit(&mut c, &world, e, step),
            Err(err) => c.violation(err),
        }
    }
    c.result
}

/// 7. No message accepted to a destination on the opt-out list in force at that point.
fn no_message_to_opted_out(log: &[EventEnvelope]) -> CheckResult {
    let name = "7. no message accepted to a destination on the opt-out list in force at that point of the log";
    walk(log, name, |c, world, e, step| {
        // The sender as it was: its account and region, the list it names itself (a sender id
        // names none: the account's Default is in force) and whether it manages opt-outs itself.
        let (m, sender) = match step {
            Step::Number {
                before,
                event: PhoneNumberEvent::MessageSent(m),
                ..
            } => (m, before),
            Step::SenderId(before, SenderIdEvent::MessageSent(m)) => (m, before),
            _ => return,
        };
        c.count();
        let Some(sender) = sender else {
            c.violation(format!(
                "{} v{}: a message from an origination identity that does not exist",
                e.stream_id, e.version
            ));
            return;
        };
        let list = match &m.pool_id {
            Some(pool) => world
                .pools
                .get(pool)
                .and_then(|p| p.0.as_ref())
                .map(|p| p.opt_out_list_name.as_str()),
            None => Some(sender.list.as_str()),
        };
        let Some(list) = list else { return };
        let opted_out = world
            .list(&sender.account, &sender.region, list)
            .is_some_and(|l| l.opted_out.contains_key(&m.destination_phone_number));
        if opted_out && !sender.self_managed_opt_outs {
            c.violation(format!(
                "{} v{} (position {}): message {} accepted to {}, which is on opt-out list {list}",
                e.stream_id, e.version, e.position, m.message_id, m.destination_phone_number
            ));
        }
    })
}

/// 8. No list deleted while in use; no number or pool takes up a list that is not there.
fn lists_in_use(log: &[EventEnvelope]) -> CheckResult {
    use crate::domain::opt_out_list::{OptOutListEvent, DEFAULT_LIST};
    let name = "8. no opt-out list deleted while a number or pool names it; none named that does not exist";
    walk(log, name, |c, world, e, step| {
        // A list a live number or pool names after this event, where it named another (or none).
        let taken_up = match &step {
            Step::Number { before, after, .. } | Step::Pool { before, after } => after.as_ref().filter(|now| {
                let was = before.as_ref().filter(|b| b.live).map(|b| b.list.as_str());
                now.live && was != Some(now.list.as_str())
            }),
            Step::List(before, OptOutListEvent::OptOutListDeleted { .. }) => {
                c.count();
                if let Some(l) = before {
                    let users = world.users_of(l);
                    if users > 0 {
                        c.violation(format!(
                            "{} v{} (position {}): opt-out list {} deleted while {users} numbers or pools name it",
                            e.stream_id, e.version, e.position, l.list
                        ));
                    }
                }
                None
            }
            Step::List(..) | Step::SenderId(..) => None,
        };
        if let Some(user) = taken_up.filter(|u| u.list != DEFAULT_LIST) {
            c.count();
            if world.list(&user.account, &user.region, &user.list).is_none() {
                c.violation(format!(
                    "{} v{} (position {}): takes up opt-out list {}, which does not exist",
                    e.stream_id, e.version, e.position, user.list
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptedOut};
    use crate::domain::{event_to_parts, Scope};
    use crate::store::CURRENT_SCHEMA_VERSION;

    const ACCOUNT: &str = "111122223333";
    const REGION: &str = "us-east-1";
    const DESTINATION: &str = "+12065550100";

    /// A history written by hand: the log, and what the clients did and saw.
    #[derive(Default)]
    struct History {
        log: Vec<EventEnvelope>,
        ops: Vec<ClientOp>,
    }

    impl History {
        /// Appends `event` to `stream`, written by request `request` (the command is not recorded,
        /// so check 6 does not decide it again).
        fn append<E: Serialize>(&mut self, stream: &str, request: &str, event: &E) {
            let (event_type, payload) = event_to_parts(event).expect("an event serializes");
            self.log.push(EventEnvelope {
                event_id: uuid::Uuid::new_v4(),
                stream_id: stream.into(),
                version: self.log.iter().filter(|e| e.stream_id == stream).count() as u64 + 1,
                position: self.log.len() as u64 + 1,
                event_type,
                schema_version: CURRENT_SCHEMA_VERSION,
                timestamp_ms: 0,
                account: ACCOUNT.into(),
                region: REGION.into(),
                request_id: request.into(),
                command_id: uuid::Uuid::new_v4(),
                command: "Test/Test".into(),
                command_input: serde_json::Value::Null,
                payload,
                hash: String::new(),
            });
        }

        /// A client's operation `request` on `target`, from `ms.0` to `ms.1` milliseconds.
        fn op(&mut self, op: Op, target: &str, request: &str, ms: (u64, u64), status: u16) -> &mut ClientOp {
            let ok = (200..300).contains(&status);
            self.ops.push(ClientOp {
                op,
                number: target.into(),
                pool: None,
                started_ns: ms.0 * 1_000_000,
                finished_ns: ms.1 * 1_000_000,
                status,
                error: (!ok).then(|| "ConflictException".into()),
                reason: None,
                request_id: Some(request.into()),
                destination: None,
            });
            self.ops.last_mut().expect("just pushed")
        }

        /// The violations check `number` (as "1.") finds.
        fn violations(&self, number: &str) -> Vec<String> {
            let verdict = check(&self.log, &self.ops);
            let found = verdict.checks.into_iter().find(|c| c.name.starts_with(number));
            found.expect("the check ran").violations
        }
    }

    /// The stream of list `name` of `account`.
    fn list_stream(account: &str, name: &str) -> String {
        ResourceKind::opt_out_list_id(&Scope::new(account, REGION), name)
    }

    fn list(account: &str, name: &str) -> OptOutListEvent {
        let arn = format!("arn:aws:sms-voice:{REGION}:{account}:opt-out-list/{name}");
        OptOutListEvent::OptOutListCreated(Box::new(OptOutList::new(name, arn, account, REGION, 1, vec![], None)))
    }

    fn opted_out(destination: &str) -> OptOutListEvent {
        OptOutListEvent::NumberOptedOut {
            number: destination.into(),
            entry: OptedOut {
                opted_out_timestamp_ms: 1,
                end_user_opted_out: false,
            },
        }
    }

    /// The load test's list, created by request `create` (answered at 1 ms).
    fn with_list() -> (History, String) {
        let mut h = History::default();
        let stream = list_stream(ACCOUNT, "loadtest");
        h.append(&stream, "create", &list(ACCOUNT, "loadtest"));
        h.op(Op::CreateList, &stream, "create", (0, 1), 200);
        (h, stream)
    }

    /// An opt-out of `DESTINATION` on the load test's list, by request `request`.
    fn opt_out(h: &mut History, request: &str, ms: (u64, u64)) {
        let list = list_stream(ACCOUNT, "loadtest");
        h.op(Op::OptOut, &list, request, ms, 200).destination = Some(DESTINATION.into());
    }

    #[test]
    fn an_opt_out_acknowledged_without_its_event_is_caught() {
        let (mut h, stream) = with_list();
        opt_out(&mut h, "put", (2, 3));
        let lost = h.violations("1.");
        assert!(
            lost.len() == 1 && lost[0].starts_with("opt-out put on optout-") && lost[0].contains("0 NumberOptedOut"),
            "{lost:?}"
        );
        h.append(&stream, "put", &opted_out(DESTINATION));
        assert_eq!(h.violations("1."), Vec::<String>::new());
    }

    /// A destination already on the list: the service answers the opt-out without writing
    /// anything, which is no loss; once a deletion of the list was answered, it is.
    #[test]
    fn an_opt_out_without_an_event_passes_only_while_its_destination_is_on_the_list() {
        let (mut h, stream) = with_list();
        h.append(&stream, "first", &opted_out(DESTINATION));
        opt_out(&mut h, "first", (2, 3));
        opt_out(&mut h, "again", (4, 5));
        // Concurrent with the put that writes the entry: it may have come second.
        opt_out(&mut h, "racing", (1, 3));
        assert_eq!(h.violations("1."), Vec::<String>::new());

        // An opt-out that ended before the entry's put began cannot have found it there.
        opt_out(&mut h, "before", (0, 1));
        let early = h.violations("1.");
        assert!(early.len() == 1 && early[0].contains("before"), "{early:?}");
        h.ops.pop();

        // The list is deleted (answered at 7 ms) and created again: the entry went with it.
        h.append(&stream, "delete", &OptOutListEvent::OptOutListDeleted { opted_out: 1 });
        h.op(Op::DeleteList, &stream, "delete", (6, 7), 200);
        h.append(&stream, "create-again", &list(ACCOUNT, "loadtest"));
        h.op(Op::CreateList, &stream, "create-again", (8, 9), 200);
        opt_out(&mut h, "after", (10, 11));
        let gone = h.violations("1.");
        assert!(gone.len() == 1 && gone[0].contains("after"), "{gone:?}");
    }

    /// Lists of one name in two accounts are two lists: an opt-out on one is found on its own.
    #[test]
    fn lists_of_one_name_in_two_accounts_are_not_confused() {
        let (mut h, stream) = with_list();
        h.append(&stream, "put", &opted_out(DESTINATION));
        opt_out(&mut h, "put", (2, 3));
        let other = list_stream("444455556666", "loadtest");
        assert_ne!(other, stream);
        h.append(&other, "other", &list("444455556666", "loadtest"));
        h.op(Op::CreateList, &other, "other", (4, 5), 200);
        assert_eq!(h.violations("1."), Vec::<String>::new());
    }

    /// Check 6 decides each recorded command again and compares the events it gives with the
    /// logged ones, not only success with success.
    #[test]
    fn a_command_logged_with_other_events_than_its_decision_is_caught() {
        use crate::domain::opt_out_list::OptOutListAction;
        let (mut h, stream) = with_list();
        let put = OptOutListAction::PutOptedOutNumber {
            number: DESTINATION.into(),
            end_user_opted_out: false,
        };
        // Decided at the envelope's timestamp (0), as the log records it.
        let entry = |number: &str| OptOutListEvent::NumberOptedOut {
            number: number.into(),
            entry: OptedOut {
                opted_out_timestamp_ms: 0,
                end_user_opted_out: false,
            },
        };
        h.append(&stream, "put", &entry(DESTINATION));
        let logged = h.log.len() - 1;
        h.log[logged].command_input = serde_json::to_value(&put).expect("an action serializes");
        opt_out(&mut h, "put", (2, 3));
        assert_eq!(h.violations("6."), Vec::<String>::new());

        // The log says another destination opted out than the command put.
        h.log[logged].payload = event_to_parts(&entry("+12065550199")).expect("an event serializes").1;
        let diverged = h.violations("6.");
        assert!(
            diverged.len() == 1 && diverged[0].contains("+12065550199") && diverged[0].contains("re-deciding gives"),
            "{diverged:?}"
        );
    }

    /// A run whose load was mostly throttled, failing or unanswered does not pass on the little
    /// that was checked.
    #[test]
    fn a_run_that_checked_next_to_nothing_does_not_pass() {
        let (mut h, _) = with_list();
        let throttled = |h: &mut History, n: usize| {
            for i in 0..n {
                h.op(Op::Update, "phone-1", &format!("throttled-{i}"), (2, 3), 400).error = Some("ThrottlingException".into());
            }
        };
        // Set-up only, and the load all throttled: no acknowledged write.
        throttled(&mut h, 3);
        let nothing = h.violations("9.");
        assert!(
            nothing.len() == 2 && nothing[0].starts_with("none of the load's 3") && nothing[1].starts_with("only 0 of the load's 3"),
            "{nothing:?}"
        );
        assert!(!check(&h.log, &h.ops).ok);

        // One acknowledged write in 20 answers is the least that passes.
        h.op(Op::Update, "phone-1", "updated", (2, 3), 200);
        throttled(&mut h, 16);
        assert_eq!(h.violations("9."), Vec::<String>::new());
        throttled(&mut h, 1);
        let little = h.violations("9.");
        assert!(
            little.len() == 1 && little[0].starts_with("only 1 of the load's 21 answered"),
            "{little:?}"
        );

        // Operations without an answer are not held against the share (a server killed mid-run).
        h.ops.retain(|o| o.request_id.as_deref() != Some("throttled-0"));
        for _ in 0..100 {
            h.op(Op::Update, "phone-1", "", (2, 3), 0).request_id = None;
        }
        assert_eq!(h.violations("9."), Vec::<String>::new());
    }

    /// A write under a request id no operation of the run knows is a violation, unless it is the
    /// service's own (`recovery-…`), precedes the run, or an operation without a usable answer
    /// may account for it.
    #[test]
    fn a_write_no_operation_answers_for_is_caught() {
        let (mut h, stream) = with_list();
        h.append(&stream, "phantom", &opted_out(DESTINATION));
        let phantom = h.violations("1.");
        assert!(
            phantom.len() == 1 && phantom[0].contains("phantom (NumberOptedOut on optout-"),
            "{phantom:?}"
        );
        // Events up to position 2 were there before the run.
        assert!(check_after(&h.log, &h.ops, 2).checks[0].violations.is_empty());
        assert!(check_invariants(&h.log).checks[0].violations.is_empty());

        // The reconciler's writes are the service's own.
        h.log[1].request_id = format!("{}1", crate::service::RECOVERY_REQUEST_PREFIX);
        assert_eq!(h.violations("1."), Vec::<String>::new());

        // Two phantoms; one operation that got no answer may account for one of them, not both.
        h.append(&stream, "phantom-2", &opted_out("+12065550101"));
        h.append(&stream, "phantom-3", &opted_out("+12065550102"));
        let unanswered = h.op(Op::OptOut, &stream, "", (2, 3), 0);
        (unanswered.request_id, unanswered.error) = (None, Some("ClientError".into()));
        let two = h.violations("1.");
        assert!(two.len() == 1 && two[0].starts_with("2 requests wrote"), "{two:?}");
        // A 5xx answer too: the node the request was forwarded to may have carried it out.
        h.op(Op::OptOut, &stream, "forwarded", (2, 3), 500).error = Some("InternalServerException".into());
        assert_eq!(h.violations("1."), Vec::<String>::new());
    }

    /// Only an unanswered write that reached a server and wrote nothing under its own id can
    /// have written under another: not a read, not a request that never connected, not one whose
    /// own events are in the log.
    #[test]
    fn operations_that_cannot_have_written_excuse_no_write() {
        let (mut h, stream) = with_list();
        h.append(&stream, "phantom", &opted_out(DESTINATION));
        let read = h.op(Op::Describe, "phone-0", "", (2, 3), 0);
        (read.request_id, read.error) = (None, Some("ClientError".into()));
        let refused = h.op(Op::OptOut, &stream, "", (2, 3), 0);
        (refused.request_id, refused.error) = (None, Some(super::super::CONNECT_ERROR.into()));
        h.append(&stream, "own", &opted_out("+12065550101"));
        h.op(Op::OptOut, &stream, "own", (2, 3), 503).error = Some("ServiceUnavailableException".into());
        let phantom = h.violations("1.");
        assert!(phantom.len() == 1 && phantom[0].starts_with("1 requests wrote"), "{phantom:?}");
        let lost = h.op(Op::OptOut, &stream, "", (2, 3), 0);
        (lost.request_id, lost.error) = (None, Some("ClientError".into()));
        assert_eq!(h.violations("1."), Vec::<String>::new());
    }

    /// An entry put during the run under an id no client saw was put by an opt-out whose answer
    /// was lost: it excuses an acknowledged opt-out with no event only if that one ended after
    /// the lost one began.
    #[test]
    fn an_entry_of_a_lost_answer_excuses_only_opt_outs_it_may_have_preceded() {
        let (mut h, stream) = with_list();
        opt_out(&mut h, "acknowledged", (2, 3));
        h.append(&stream, "unseen", &opted_out(DESTINATION));
        let list = stream.clone();
        let lost = h.op(Op::OptOut, &list, "", (5, 6), 0);
        (lost.request_id, lost.error, lost.destination) = (None, Some("ClientError".into()), Some(DESTINATION.into()));
        let late = h.violations("1.");
        assert!(late.len() == 1 && late[0].contains("acknowledged"), "{late:?}");
        // Begun before the acknowledged one ended: it may have been first; not if it never
        // reached a server.
        h.ops.last_mut().expect("lost").started_ns = 2_500_000;
        assert_eq!(h.violations("1."), Vec::<String>::new());
        h.ops.last_mut().expect("lost").error = Some(super::super::CONNECT_ERROR.into());
        assert!(h.violations("1.").iter().any(|v| v.contains("acknowledged")));
        h.ops.last_mut().expect("lost").error = Some("ClientError".into());
        // Put before the run: there from its start.
        h.ops.pop();
        assert!(check_after(&h.log, &h.ops, 2).checks[0].violations.is_empty());
    }

    /// Check 5 with a sender id in two pools (as AWS allows): it agrees with both pools; a pool
    /// that no longer holds it, while the sender id says it is its member, is caught by name.
    #[test]
    fn a_sender_id_in_two_pools_agrees_with_both() {
        use crate::domain::membership::MembershipEvent as M;
        use crate::domain::pool::{Pool, PoolEvent};
        use crate::domain::sender_id::SenderId;
        let scope = Scope::new(ACCOUNT, REGION);
        let sender = SenderId::example("Shop", "GB", &scope);
        let pools = ["pool-00000000000000000000000000000001", "pool-00000000000000000000000000000002"];
        let member = crate::domain::pool::PoolMember {
            origination_identity: sender.id.clone(),
            origination_identity_arn: sender.sender_id_arn.clone(),
            iso_country_code: "GB".into(),
            number_capabilities: crate::domain::sender_id::CAPABILITIES.to_vec(),
            phone_number: String::new(),
            message_type: crate::domain::types::MessageType::Transactional,
            sender_id: Some("Shop".into()),
            shared_settings: None,
        };
        let history = |second_holds_it: bool| {
            let mut h = History::default();
            h.append(&sender.id, "lease", &SenderIdEvent::SenderIdRequested(Box::new(sender.clone())));
            for (i, pool) in pools.into_iter().enumerate() {
                let held = i == 0 || second_holds_it;
                let created = Pool::example(pool, &scope, held.then(|| member.clone()).into_iter().collect());
                h.append(pool, "create", &PoolEvent::PoolCreated(Box::new(created)));
                for step in [
                    M::PoolAssociationStarted { pool_id: pool.into() },
                    M::AssociatedWithPool { pool_id: pool.into() },
                ] {
                    h.append(&sender.id, "join", &SenderIdEvent::Membership(step));
                }
            }
            h
        };
        assert_eq!(history(true).violations("5."), Vec::<String>::new());
        let forgotten = history(false).violations("5.");
        assert!(
            forgotten.len() == 2 && forgotten.iter().any(|v| v.contains(pools[1]) && v.contains(&sender.id)),
            "{forgotten:?}"
        );
    }

    /// A number withdrawn because its request's join was refused ends like a released one
    /// (check 3: nothing changes it afterwards), and may be withdrawn under deletion protection
    /// but not while in a pool (check 4).
    #[test]
    fn a_withdrawn_request_ends_the_number_and_is_not_taken_from_a_pool() {
        use crate::domain::membership::MembershipEvent as M;
        use crate::domain::phone_number::{PhoneNumber, PhoneNumberChanges};
        let id = "phone-00000000000000000000000000000001";
        let pool = "pool-00000000000000000000000000000001";
        let withdrawn = PhoneNumberEvent::RequestWithdrawn {
            phone_number: "+12065550100".into(),
            pool_id: pool.into(),
            reason: Rejection::not_found(ResourceKind::Pool, pool),
        };
        let history = |steps: &[M], after: Option<PhoneNumberEvent>| {
            let mut h = History::default();
            let mut number = PhoneNumber::example(id, ACCOUNT, REGION);
            number.deletion_protection_enabled = true;
            h.append(id, "request", &PhoneNumberEvent::PhoneNumberRequested(Box::new(number)));
            for step in steps {
                h.append(id, "request", &PhoneNumberEvent::Membership(step.clone()));
            }
            h.append(id, "request", &withdrawn);
            if let Some(event) = after {
                h.append(id, "later", &event);
            }
            h
        };
        let refused = [
            M::PoolAssociationStarted { pool_id: pool.into() },
            M::PoolAssociationAborted {
                pool_id: pool.into(),
                reason: Rejection::not_found(ResourceKind::Pool, pool),
            },
        ];
        let fine = history(&refused, None);
        assert_eq!((fine.violations("3."), fine.violations("4.")), (vec![], vec![]));
        let changed = PhoneNumberEvent::PhoneNumberUpdated(PhoneNumberChanges {
            deletion_protection_enabled: Some(false),
            ..Default::default()
        });
        assert_eq!(history(&refused, Some(changed)).violations("3.").len(), 1);
        assert_eq!(
            history(&refused[..1], None).violations("4.").len(),
            1,
            "withdrawn while joining a pool"
        );
    }

    /// The number `id` made by request `request` into `pool`.
    fn requested_into(h: &mut History, id: &str, pool: &str) {
        let number = crate::domain::phone_number::PhoneNumber {
            requested_into_pool: Some(pool.into()),
            ..crate::domain::phone_number::PhoneNumber::example(id, ACCOUNT, REGION)
        };
        h.append(id, "request", &PhoneNumberEvent::PhoneNumberRequested(Box::new(number)));
    }

    /// A request into a pool refused after it made its number passes check 1 only if it
    /// withdrew that number (and check 5 finds the request unfinished if not); one acknowledged
    /// must have joined the pool.
    #[test]
    fn a_refused_request_into_a_pool_must_have_withdrawn_its_number() {
        use crate::domain::membership::MembershipEvent as M;
        let id = "phone-00000000000000000000000000000002";
        let pool = "pool-00000000000000000000000000000002";
        let refusal = Rejection::conflict(
            crate::domain::types::ConflictReason::OptOutListMismatch,
            ResourceKind::Pool,
            pool,
            "names another opt-out list",
        );
        let history = |withdraw: bool| {
            let mut h = History::default();
            requested_into(&mut h, id, pool);
            let rejected = M::AssociationRejected {
                pool_id: pool.into(),
                reason: refusal.clone(),
            };
            h.append(id, "request", &PhoneNumberEvent::Membership(rejected));
            if withdraw {
                let withdrawn = PhoneNumberEvent::RequestWithdrawn {
                    phone_number: "+12065550100".into(),
                    pool_id: pool.into(),
                    reason: refusal.clone(),
                };
                h.append(id, "request", &withdrawn);
            }
            h.op(Op::RequestIntoPool, "", "request", (0, 1), 409).pool = Some(pool.into());
            h
        };
        let fine = history(true);
        assert_eq!((fine.violations("1."), fine.violations("5.")), (vec![], vec![]));
        let kept = history(false);
        let (kept, unfinished) = (kept.violations("1."), kept.violations("5."));
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].contains("applied PhoneNumberRequested"), "{kept:?}");
        assert_eq!(unfinished.len(), 1, "{unfinished:?}");
        assert!(unfinished[0].contains("which its request named"), "{unfinished:?}");

        // Acknowledged, but the number never joined the pool.
        let mut h = History::default();
        requested_into(&mut h, id, pool);
        h.op(Op::RequestIntoPool, id, "request", (0, 1), 200).pool = Some(pool.into());
        assert_eq!(
            h.violations("1.").len(),
            2,
            "neither AssociatedWithPool nor OriginationIdentityAssociated"
        );
    }

    /// A request into a pool that a reconciler carried on beside it (its join, or the number's
    /// withdrawal, written under the reconciler's request id while the request's own step was
    /// refused as a join under way) is judged by what the reconciler wrote: check 1 finds the
    /// join's effects (the pool's only if the reconciler's request wrote it), or the withdrawal;
    /// check 6 does not hold the request's own refused step against its answer.
    #[test]
    fn a_request_into_a_pool_carried_on_by_a_reconciler_is_judged_by_what_it_wrote() {
        use crate::domain::membership::MembershipEvent as M;
        use crate::domain::pool::{PoolEvent, PoolMember};
        let id = "phone-00000000000000000000000000000003";
        let pool = "pool-00000000000000000000000000000003";
        let under_way = Rejection::conflict(
            crate::domain::types::ConflictReason::ResourceModificationNotAllowed,
            ResourceKind::PhoneNumber,
            id,
            "is joining a pool",
        );
        let started = |h: &mut History| {
            requested_into(h, id, pool);
            let begin = M::PoolAssociationStarted { pool_id: pool.into() };
            h.append(id, "recovery-1", &PhoneNumberEvent::Membership(begin));
            let refused = M::AssociationRejected {
                pool_id: pool.into(),
                reason: under_way.clone(),
            };
            h.append(id, "request", &PhoneNumberEvent::Membership(refused));
        };
        let joined = |pool_event_by: &str| {
            let mut h = History::default();
            started(&mut h);
            let member = PoolMember {
                origination_identity: id.into(),
                origination_identity_arn: format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{id}"),
                iso_country_code: "US".into(),
                number_capabilities: vec![],
                phone_number: "+12065550100".into(),
                message_type: crate::domain::types::MessageType::Transactional,
                sender_id: None,
                shared_settings: None,
            };
            h.append(pool, pool_event_by, &PoolEvent::OriginationIdentityAssociated(member));
            let associated = M::AssociatedWithPool { pool_id: pool.into() };
            h.append(id, "recovery-1", &PhoneNumberEvent::Membership(associated));
            h.op(Op::RequestIntoPool, id, "request", (0, 1), 200).pool = Some(pool.into());
            h
        };
        let fine = joined("recovery-1");
        assert_eq!((fine.violations("1."), fine.violations("6.")), (vec![], vec![]));
        assert_eq!(
            joined("recovery-2").violations("1.").len(),
            1,
            "the pool's event of another request"
        );

        let mut h = History::default();
        started(&mut h);
        let aborted = M::PoolAssociationAborted {
            pool_id: pool.into(),
            reason: Rejection::not_found(ResourceKind::Pool, pool),
        };
        h.append(id, "recovery-1", &PhoneNumberEvent::Membership(aborted));
        let withdrawn = PhoneNumberEvent::RequestWithdrawn {
            phone_number: "+12065550100".into(),
            pool_id: pool.into(),
            reason: Rejection::not_found(ResourceKind::Pool, pool),
        };
        h.append(id, "recovery-1", &withdrawn);
        let refused = h.op(Op::RequestIntoPool, "", "request", (0, 1), 404);
        (refused.pool, refused.error) = (Some(pool.into()), Some("ResourceNotFoundException".into()));
        assert_eq!((h.violations("1."), h.violations("6.")), (vec![], vec![]));
    }
}
