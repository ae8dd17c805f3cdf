//! Sending messages: the origination identity the caller names (a phone number by id, ARN or
//! E.164 number, a sender id by ARN or by its string in the destination's country, or a pool,
//! from which a member with the channel's capability is picked) is resolved here; the opt-out
//! list in force (the pool's when sent through a pool, else the number's, else the account's
//! `Default` for a sender id) is looked up; the sender's decider makes every other check. An
//! accepted message is an event on the sender's stream. Its append requires the destination's
//! opted-out counter on that list to be 0, so a `PutOptedOutNumber` racing the send is ordered
//! by the log: a message is never accepted to a destination on the list in force at that point
//! of the log. That the list read is still the one in force is checked where it is cheapest to
//! be exact: a number's own list by its actor, on the state the send is decided on (a premise,
//! so a stale send is never published, and never voids the commands pipelined behind it on a
//! busy number); a pool's list by a bound on the pool's names-list counter.

use super::error::not_found;
use super::{Activation, LifecycleService, ServiceError};
use crate::actors::{Execute, ExecuteError, Premise};
use crate::domain::message::{Channel, OutboundMessage};
use crate::domain::opt_out_list::DEFAULT_LIST;
use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberState};
use crate::domain::sender_id::{SenderId, SenderIdAction};
use crate::domain::types::{ConflictReason, MessageType, NumberStatus, ResourceType};
use crate::domain::{Aggregate, CommandMeta, Rejection, ResourceKind, Scope};
use crate::projection::{names_list_key, number_claim_key, opt_out_list_incarnation_key, opted_out_key, view_key, OptOutListView};
use crate::store::{stored_counter, AppendError, CounterLimit};

/// How many times a send is decided again because its number or pool moved to another opt-out
/// list between the look and the append (each time, it is read again).
const STALE_SENDS: usize = 8;

impl LifecycleService {
    /// Sends `message` (its `origination_identity` names where from); the message id.
    pub async fn send_message(&self, meta: &CommandMeta, message: OutboundMessage) -> Result<String, ServiceError> {
        for _ in 0..STALE_SENDS {
            if let Some(id) = self.try_send(meta, message.clone()).await? {
                return Ok(id);
            }
        }
        Err(ServiceError::Throttled(format!(
            "{} keeps changing its opt-out list; retry",
            message.origination_identity
        )))
    }

    /// One attempt: the message id, or `None` when what was read went stale before the append.
    async fn try_send(&self, meta: &CommandMeta, mut message: OutboundMessage) -> Result<Option<String>, ServiceError> {
        let scope = &meta.scope;
        let capability = message.channel.capability();
        // What the list in force was read from: the number, or the pool it is sent through (a
        // sender id names no list: the account's Default, which it cannot move off, is in force).
        // A number's own list is checked by its actor (a premise on its state, see `send_from`);
        // a pool's, by a bound on the pool's names-list counter.
        let (sender, list, named_by) = match self.origination(scope, &message).await? {
            Origination::Number(n) => {
                let list = n.opt_out_list_name.clone();
                (Origination::Number(n), list, None)
            }
            sender @ Origination::SenderId(_) => (sender, DEFAULT_LIST.to_string(), None),
            Origination::Pool(pool_id) => {
                let pool = self.live_pool(scope, &pool_id).await?;
                let member = pool
                    .members
                    .values()
                    .find(|m| m.number_capabilities.contains(&capability))
                    .ok_or_else(|| {
                        ServiceError::Rejected(Rejection::conflict(
                            ConflictReason::NoOriginationIdentitiesFound,
                            ResourceKind::Pool,
                            &pool_id,
                            &format!("has no origination identity with the {capability} capability"),
                        ))
                    })?;
                let sender = match member.sender_id {
                    Some(_) => Origination::SenderId(Box::new(self.current_sender_id(&member.origination_identity).await?)),
                    None => Origination::Number(Box::new(self.current_number(&member.origination_identity).await?)),
                };
                let named_by = names_list_key(scope, &pool_id, &pool.opt_out_list_name, false);
                message.pool_id = Some(pool_id);
                (sender, pool.opt_out_list_name.clone(), Some(named_by))
            }
        };
        // Where the destination's opt-out would be counted: the list's current incarnation (a
        // list not made yet, only ever `Default`, will be the first).
        let incarnation = match self
            .store
            .index_get(&view_key(
                scope,
                ResourceKind::OptOutList,
                &ResourceKind::opt_out_list_id(scope, &list),
            ))
            .await?
        {
            Some(bytes) => serde_json::from_slice::<OptOutListView>(&bytes).map_or(1, |v| v.incarnation.max(1)),
            None => 1,
        };
        let key = opted_out_key(scope, &list, incarnation, &message.destination_phone_number);
        let opted_out = stored_counter(&key, self.store.index_get(&key).await?.as_deref())? > 0;
        let message_id = message.message_id.clone();
        let destination = message.destination_phone_number.clone();
        // The list in force must still be the one read when the append commits (else the send is
        // decided again); a number that manages its own opt-outs sends whatever the list says.
        let self_managed = matches!(&sender, Origination::Number(n) if n.self_managed_opt_outs_enabled);
        let limits = send_bounds(scope, &list, incarnation, &destination, named_by.clone(), self_managed);
        let premise = named_by.is_none().then(|| names_what_was_read(&sender)).flatten();
        // Should the destination opt out first, the log refuses the send in its place (the
        // destination's bound is the last).
        let refused_if_opted_out = (!self_managed && !opted_out).then(|| (limits.len() - 1, list.clone()));
        let attempt = |opted_out: bool, limits: Vec<CounterLimit>, refused_if_opted_out| Attempt {
            message: Box::new(message.clone()),
            opted_out_on: opted_out.then(|| list.clone()),
            limits,
            premise: premise.clone(),
            refused_if_opted_out,
        };
        let sent = self
            .send_from(meta, &sender, attempt(opted_out, limits, refused_if_opted_out))
            .await;
        match sent {
            Ok(_) => Ok(Some(message_id)),
            Err(e) if read_went_stale(&e) => Ok(None),
            // The destination opted out between the look and the append: the refusal the
            // decider gives an opted-out destination, recorded.
            Err(ServiceError::Execute {
                source: ExecuteError::Append(AppendError::LimitReached(_)),
                ..
            }) => match self.send_from(meta, &sender, attempt(true, vec![], None)).await {
                Ok(_) => Err(ServiceError::Invariant(format!(
                    "a message to opted-out {destination} was accepted"
                ))),
                Err(e) if read_went_stale(&e) => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// A live number of the caller that can send on `channel` (and `message_type`), for a send
    /// that names no origination identity.
    pub async fn any_sender(&self, scope: &Scope, channel: Channel, message_type: Option<MessageType>) -> Result<String, ServiceError> {
        let fits = |n: &PhoneNumber| {
            n.status == NumberStatus::Active
                && n.number_capabilities.contains(&channel.capability())
                && message_type.is_none_or(|t| t == n.message_type)
        };
        let page = self.scan_views(scope, ResourceKind::PhoneNumber, None, 1, fits).await?;
        page.items
            .into_iter()
            .next()
            .map(|n: PhoneNumber| n.phone_number_id)
            .ok_or_else(|| {
                ServiceError::Rejected(Rejection::Conflict {
                    reason: ConflictReason::NoOriginationIdentitiesFound,
                    resource_type: ResourceType::Account,
                    resource_id: scope.account.clone(),
                    message: format!(
                        "account {} has no phone number in {} that can send this {channel} message",
                        scope.account, scope.region
                    ),
                })
            })
    }

    /// Runs one attempt at a send on the sender.
    async fn send_from(&self, meta: &CommandMeta, sender: &Origination, mut attempt: Attempt) -> Result<(), ServiceError> {
        match sender {
            Origination::Number(n) => {
                let premise = attempt.premise.take();
                let send = attempt.command(meta, premise, |message, opted_out_on| PhoneNumberAction::SendMessage {
                    message,
                    opted_out_on,
                });
                self.execute_command(&self.numbers, &n.phone_number_id, Activation::Existing, send)
                    .await
                    .map(drop)
            }
            Origination::SenderId(s) => {
                let send = attempt.command(meta, None, |message, opted_out_on| SenderIdAction::SendMessage {
                    message,
                    opted_out_on,
                });
                self.execute_command(&self.sender_ids, &s.id, Activation::Existing, send)
                    .await
                    .map(drop)
            }
            Origination::Pool(pool) => Err(ServiceError::Invariant(format!(
                "a message is sent from a member of {pool}, not the pool"
            ))),
        }
    }

    /// The number, sender id or pool an `OriginationIdentity` names.
    async fn origination(&self, scope: &Scope, message: &OutboundMessage) -> Result<Origination, ServiceError> {
        let identity = message.origination_identity.as_str();
        let kind = ResourceKind::of_origination_identity(identity);
        if kind == ResourceKind::Pool {
            return Ok(Origination::Pool(self.owned(ResourceKind::Pool, scope, identity).await?));
        }
        if kind == ResourceKind::SenderId {
            // A sender id by its string is the one leased in the destination's country.
            let country = crate::numbering::country_of(&message.destination_phone_number);
            // An ARN names its own country.
            let country = country.filter(|_| !identity.starts_with("arn:"));
            let id = self.member_stream(scope, identity, country.as_deref()).await?;
            // A released sender id is the decider's to refuse, so the refusal is recorded.
            return Ok(Origination::SenderId(Box::new(self.current_sender_id(&id).await?)));
        }
        let id = if identity.starts_with('+') {
            // An E.164 number: the number that holds it, if the caller's.
            let holder = self.store.index_get(&number_claim_key(identity)).await?;
            let id = holder.map(|h| String::from_utf8_lossy(&h).into_owned());
            self.owned(ResourceKind::PhoneNumber, scope, id.as_deref().unwrap_or(identity))
                .await
                .map_err(|_| not_found(ResourceKind::PhoneNumber, identity))?
        } else {
            self.owned(ResourceKind::PhoneNumber, scope, identity).await?
        };
        // A released number is the decider's to refuse, so the refusal is recorded. Read as its
        // next command will see it, without waiting for its appends in flight: the send
        // re-checks the list it read on the state it is decided on (its premise), and the log
        // checks the rest, so a state that never becomes durable costs only a retry.
        Ok(Origination::Number(Box::new(self.number_as_decided(&id).await?)))
    }
}

/// The bounds a send's append carries, so that what was read before it still holds when it
/// commits: the pool still names `list` (`named_by`, its names-list counter; a number's own list
/// is its actor's premise instead), and,
/// unless the number manages its own opt-outs, `list` is still the `incarnation` read (its
/// creations counter has not grown: a list deleted and made again between the look and the
/// append, with the sender back on it, would otherwise pass every other bound) and the
/// destination is not on it. Listed in that order: the first bound broken is the one reported.
fn send_bounds(
    scope: &Scope,
    list: &str,
    incarnation: u64,
    destination: &str,
    named_by: Option<Vec<u8>>,
    self_managed: bool,
) -> Vec<CounterLimit> {
    let mut limits: Vec<CounterLimit> = named_by.into_iter().map(|k| CounterLimit::at_least(k, 1)).collect();
    if !self_managed {
        let incarnation_now = i64::try_from(incarnation).unwrap_or(i64::MAX);
        limits.push(CounterLimit::at_most(opt_out_list_incarnation_key(scope, list), incarnation_now));
        limits.push(CounterLimit::at_most(opted_out_key(scope, list, incarnation, destination), 0));
    }
    limits
}

/// That the number sent from still names the opt-out list it named when the send read it, and
/// leaves its opt-outs to the same party: the list whose opt-outs the send was decided on is the
/// one in force. (A released number is left to the decider, which refuses it on the record.)
fn names_what_was_read(sender: &Origination) -> Option<Premise<PhoneNumberState>> {
    let Origination::Number(read) = sender else {
        return None;
    };
    let (list, self_managed) = (read.opt_out_list_name.clone(), read.self_managed_opt_outs_enabled);
    Some(std::sync::Arc::new(move |now: &PhoneNumberState, _version| {
        now.0.as_ref().is_none_or(|n| {
            n.status == NumberStatus::Deleted || (n.opt_out_list_name == list && n.self_managed_opt_outs_enabled == self_managed)
        })
    }))
}

/// Whether a send failed because what it read went stale before it committed: the number named
/// another list (or changed who manages opt-outs), the pool did, or the list was made again.
/// Nothing was sent; it is read and decided again.
fn read_went_stale(e: &ServiceError) -> bool {
    match e {
        ServiceError::Execute {
            source: ExecuteError::Stale,
            ..
        } => true,
        ServiceError::Execute {
            source: ExecuteError::Append(AppendError::LimitReached(key)),
            ..
        } => key.starts_with("nl/") || key.starts_with("li/"),
        _ => false,
    }
}

/// One attempt at a send, as the sender's actor is asked it.
struct Attempt {
    message: Box<OutboundMessage>,
    /// The list the destination was found on, if it was (the decider refuses the send).
    opted_out_on: Option<String>,
    /// What was read must still hold when the append commits.
    limits: Vec<CounterLimit>,
    /// The number still names the list read (see [`names_what_was_read`]).
    premise: Option<Premise<PhoneNumberState>>,
    /// The index among `limits` of the destination's bound, and the list: if the destination has
    /// opted out of it by the send's place in the log, the log refuses the send there instead.
    refused_if_opted_out: Option<(usize, String)>,
}

impl Attempt {
    /// The attempt as the command of the sender's actor, whose send action `send` makes.
    fn command<A: Aggregate>(
        self,
        meta: &CommandMeta,
        premise: Option<Premise<A>>,
        send: fn(Box<OutboundMessage>, Option<String>) -> A::Action,
    ) -> Execute<A> {
        Execute {
            meta: meta.clone(),
            otherwise: self
                .refused_if_opted_out
                .map(|(limit, list)| (limit, send(self.message.clone(), Some(list)))),
            action: send(self.message, self.opted_out_on),
            counter_limits: self.limits,
            premise,
        }
    }
}

/// Where a message leaves from.
enum Origination {
    Number(Box<PhoneNumber>),
    SenderId(Box<SenderId>),
    Pool(String),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptOutListState, OptedOut};
    use crate::domain::phone_number::PhoneNumberState;
    use crate::domain::Aggregate;
    use crate::projection::Projected;
    use crate::store::{broken_limit, IndexOp};

    /// The counters of an index, kept by the projection's own changes.
    #[derive(Default)]
    struct Counters(HashMap<Vec<u8>, i64>);

    impl Counters {
        fn step<A: Projected>(&mut self, before: &A, after: &A) {
            for op in A::index_ops(before, after) {
                if let IndexOp::Add(key, by) = op {
                    *self.0.entry(key).or_default() += by;
                }
            }
        }

        fn broken(&self, bounds: &[CounterLimit]) -> Option<String> {
            let read = |key: &[u8]| Ok::<_, std::convert::Infallible>(self.0.get(key).copied().unwrap_or(0));
            let broken = broken_limit(&[], bounds, read).unwrap_or_else(|never| match never {});
            broken.map(|key| String::from_utf8_lossy(key).into_owned())
        }
    }

    /// A send reads the list its number names and that list's incarnation, then appends bounded
    /// by what it read. Between the two, the number leaves the list, the list is deleted and made
    /// again, the destination opts out of the new list and the number joins it: every bound on
    /// names and on the incarnation read still holds, only the incarnation's own bound does not.
    #[test]
    fn a_send_read_before_its_list_was_made_again_is_stale() {
        let scope = Scope::new("111122223333", "us-east-1");
        let (name, destination) = ("Quiet", "+12065550142");
        let mut index = Counters::default();
        let event = |state: &OptOutListState, event: OptOutListEvent| state.clone().evolve(&event);
        let created = || {
            let arn = scope.arn(ResourceKind::OptOutList, name);
            OptOutListEvent::OptOutListCreated(Box::new(OptOutList::new(name, arn, &scope.account, &scope.region, 1, vec![], None)))
        };
        let naming = |list: &str| {
            let mut n = PhoneNumber::example("phone-0123456789abcdef0123456789abcdef", &scope.account, &scope.region);
            n.opt_out_list_name = list.to_string();
            PhoneNumberState(Some(n))
        };

        let list = event(&OptOutListState::default(), created());
        index.step(&OptOutListState::default(), &list);
        let number = naming(name);
        index.step(&PhoneNumberState::default(), &number);

        // The send's look.
        let id = &number.0.as_ref().expect("number").phone_number_id;
        let incarnation = list.0.as_ref().expect("list").incarnation;
        let named_by = names_list_key(&scope, id, name, false);
        let bounds = send_bounds(&scope, name, incarnation, destination, Some(named_by), false);
        assert_eq!(index.broken(&bounds), None, "what was read holds");

        // What happens before its append commits.
        let elsewhere = naming(DEFAULT_LIST);
        index.step(&number, &elsewhere);
        let deleted = event(&list, OptOutListEvent::OptOutListDeleted { opted_out: 0 });
        index.step(&list, &deleted);
        let again = event(&deleted, created());
        index.step(&deleted, &again);
        let entry = OptedOut {
            opted_out_timestamp_ms: 1,
            end_user_opted_out: false,
        };
        let opted_out = event(
            &again,
            OptOutListEvent::NumberOptedOut {
                number: destination.into(),
                entry,
            },
        );
        index.step(&again, &opted_out);
        index.step(&elsewhere, &number);

        let broken = index.broken(&bounds).expect("the send is stale");
        assert!(broken.starts_with("li/"), "{broken}");
        let without_incarnation: Vec<CounterLimit> = bounds.iter().filter(|b| !b.key.starts_with(b"li/")).cloned().collect();
        assert_eq!(index.broken(&without_incarnation), None, "the other bounds alone let it through");
        // Read again, the send sees the destination on the list.
        let incarnation = opted_out.0.as_ref().expect("list").incarnation;
        let key = opted_out_key(&scope, name, incarnation, destination);
        assert_eq!(index.0.get(&key), Some(&1));
    }
}
