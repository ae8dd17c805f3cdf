//! `ListAvailablePhoneNumbers`, `RequestPhoneNumber` (with the withdrawal of a number whose
//! join to the pool the request named was refused), `UpdatePhoneNumber`, `ReleasePhoneNumber`.

use super::error::not_found;
use super::members::decided_at;
use super::opt_out_lists::list_gone;
use super::quota::{over_quota, quota_limit};
use super::tokens::lost_token_race;
use super::{Activation, LifecycleService, ServiceError};
use crate::actors::ExecuteError;
use crate::codec::decode_event;
use crate::domain::membership::{Member, MembershipEvent, Standing};
use crate::domain::opt_out_list::DEFAULT_LIST;
use crate::domain::phone_number::{PhoneNumber, PhoneNumberAction, PhoneNumberChanges, PhoneNumberEvent, PhoneNumberState, PoolToJoin};
use crate::domain::pool::{Pool, SharedSettings};
use crate::domain::tags::same_tags;
use crate::domain::types::{ConflictReason, MessageType, NumberCapability, NumberStatus, NumberType, Tag, ValidationReason};
use crate::domain::{Aggregate, CommandMeta, Rejection, ResourceKind, Scope};
use crate::numbering::{is_valid_for, Listing, ListingCursor, NumberPreference};
use crate::projection::number_claim_key;
use crate::store::AppendError;

/// The most numbers `ListAvailablePhoneNumbers` looks at for one page.
pub const LOOK_AT_PER_PAGE: u64 = 2_000;
/// The most numbers one listing of `ListAvailablePhoneNumbers` lists, over all its pages.
pub const LISTING_LIMIT: u64 = 100;
/// The most numbers one listing looks at, over all its pages.
pub const LOOK_AT_PER_LISTING: u64 = 20_000;

/// The refusal of a country and number type the configured supply does not offer.
fn not_offered(iso_country_code: &str, number_type: NumberType) -> ServiceError {
    ServiceError::Rejected(Rejection::validation(
        ValidationReason::InvalidParameter,
        "NumberType",
        format!("{number_type} numbers are not available in {iso_country_code}"),
    ))
}

/// What became of the join a `RequestPhoneNumber` into a pool asked for, as the number's
/// history tells it.
#[derive(Debug, Clone, PartialEq)]
enum RequestedJoin {
    /// Refused, and the number withdrawn: the request answered this refusal (the first
    /// withdrawal's).
    Withdrawn(Rejection),
    /// The number joined the pool (and may have left it since).
    Joined,
    /// Refused or undone (the latest refusal), the number kept: the attempt stopped before
    /// withdrawing it, or its outcome was unknown to its caller.
    Refused(Rejection),
    /// No pool change at all: the attempt stopped before its join began.
    NotBegun,
    /// Only changes of other pools.
    Other,
}

/// The history of a number a request into a pool made, read in order up to some version: the
/// number as it stood then and what had become of the request's join, from the same events,
/// so the two always agree (two reads could straddle another attempt's step).
struct JoinHistory {
    pool_id: String,
    state: PhoneNumberState,
    /// The next version to read.
    from: u64,
    withdrawn: Option<Rejection>,
    joined: bool,
    refusal: Option<Rejection>,
    any_pool_change: bool,
    /// When the latest step of the request began: the number made, or a step (or refusal) of a
    /// join of the pool. An event bears the time its request began, so this is the latest
    /// beginning of an attempt (or of another request about the pool's membership).
    last_step_ms: u64,
    /// The number was taken up as if handed over: updated, tagged, given keywords, or sent
    /// from (its caller found it, though the request failed).
    taken_up: bool,
}

impl JoinHistory {
    fn new(pool_id: &str) -> Self {
        JoinHistory {
            pool_id: pool_id.to_string(),
            state: PhoneNumberState::default(),
            from: 1,
            withdrawn: None,
            joined: false,
            refusal: None,
            any_pool_change: false,
            last_step_ms: 0,
            taken_up: false,
        }
    }

    /// Reads the events of `id` written since the last read.
    async fn read_on(&mut self, service: &LifecycleService, id: &str) -> Result<(), ServiceError> {
        const CHUNK: usize = 256;
        loop {
            let chunk = service.store.read_stream(id, self.from, CHUNK).await?;
            for e in &chunk {
                self.from = e.version.saturating_add(1);
                let event: PhoneNumberEvent = decode_event(e)?;
                let joining = self.is_joining();
                let step = match &event {
                    PhoneNumberEvent::PhoneNumberRequested(_) => true,
                    PhoneNumberEvent::Membership(change) => change.pool_id() == self.pool_id,
                    _ => false,
                };
                if step {
                    self.last_step_ms = self.last_step_ms.max(e.timestamp_ms);
                }
                self.taken_up |= matches!(
                    &event,
                    PhoneNumberEvent::PhoneNumberUpdated(_)
                        | PhoneNumberEvent::TagsChanged { .. }
                        | PhoneNumberEvent::KeywordPut(_)
                        | PhoneNumberEvent::KeywordDeleted { .. }
                        | PhoneNumberEvent::MessageSent(_)
                );
                match &event {
                    PhoneNumberEvent::RequestWithdrawn { reason, .. } if self.withdrawn.is_none() => self.withdrawn = Some(reason.clone()),
                    PhoneNumberEvent::Membership(change) => {
                        self.any_pool_change = true;
                        match change {
                            MembershipEvent::AssociatedWithPool { pool_id } if *pool_id == self.pool_id => self.joined = true,
                            MembershipEvent::PoolAssociationAborted { pool_id, reason } if *pool_id == self.pool_id => {
                                self.refusal = Some(reason.clone())
                            }
                            // Refused while a join of the pool was under way: it only says so;
                            // that join's own end is the refusal that counts.
                            MembershipEvent::AssociationRejected { pool_id, reason } if *pool_id == self.pool_id && !joining => {
                                self.refusal = Some(reason.clone())
                            }
                            // The pool was deleted under the join: the pool is gone.
                            MembershipEvent::DetachedFromDeletedPool { pool_id } if *pool_id == self.pool_id && joining => {
                                self.refusal = Some(Rejection::not_found(ResourceKind::Pool, pool_id))
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
                self.state = std::mem::take(&mut self.state).evolve(&event);
            }
            if chunk.len() < CHUNK {
                return Ok(());
            }
        }
    }

    /// The version of the number the history has been read up to.
    fn version(&self) -> u64 {
        self.from.saturating_sub(1)
    }

    /// Whether a join of the number into the pool is under way.
    fn is_joining(&self) -> bool {
        self.state
            .0
            .as_ref()
            .is_some_and(|n| n.standing(&self.pool_id) == Some(Standing::Associating))
    }

    /// Whether the number is live and in no pool, nor joining or leaving one.
    fn is_outside(&self) -> bool {
        self.state
            .0
            .as_ref()
            .is_some_and(|n| n.status == NumberStatus::Active && n.standings().is_empty())
    }

    fn outcome(&self) -> RequestedJoin {
        match (&self.withdrawn, self.joined, &self.refusal) {
            (Some(first), _, _) => RequestedJoin::Withdrawn(first.clone()),
            (None, true, _) => RequestedJoin::Joined,
            (None, false, Some(latest)) => RequestedJoin::Refused(latest.clone()),
            (None, false, None) if !self.any_pool_change => RequestedJoin::NotBegun,
            (None, false, None) => RequestedJoin::Other,
        }
    }

    /// The number as the history leaves it.
    fn into_number(self, id: &str) -> Result<PhoneNumber, ServiceError> {
        self.state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, id))
    }
}

/// What `RequestPhoneNumber` asks for (already validated against the model).
#[derive(Debug, Clone)]
pub struct NewNumber {
    pub iso_country_code: String,
    pub message_type: MessageType,
    pub number_capabilities: Vec<NumberCapability>,
    pub number_type: NumberType,
    /// The name of one of the caller's lists (the edge resolves an ARN); absent: the default list.
    pub opt_out_list_name: Option<String>,
    pub pool_id: Option<String>,
    pub registration_id: Option<String>,
    pub deletion_protection_enabled: bool,
    pub international_sending_enabled: bool,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
    pub preference: Option<NumberPreference>,
}

impl NewNumber {
    /// The opt-out list the number is created on: the one asked for, else the pool's it is
    /// requested into (`pool`: the settings the pool's numbers share with it), else `Default`.
    fn opt_out_list_name(&self, pool: Option<&SharedSettings>) -> String {
        let inherited = pool.map(|p| p.opt_out_list_name.as_str());
        self.opt_out_list_name.as_deref().or(inherited).unwrap_or(DEFAULT_LIST).to_string()
    }

    /// Whether this request asks for the number `number` was created as (joining `into_pool`):
    /// the same members, sets compared as sets, names and ARNs as what they name.
    fn asked_for(&self, scope: &Scope, number: &PhoneNumber, into_pool: Option<&PoolToJoin>) -> bool {
        let sorted = |v: &[NumberCapability]| -> Vec<String> {
            let mut v: Vec<String> = v.iter().map(|c| c.to_string()).collect();
            v.sort();
            v.dedup();
            v
        };
        let pool = self
            .pool_id
            .as_deref()
            .map(|p| ResourceKind::Pool.resolve(scope, p).unwrap_or_else(|| p.to_string()));
        self.iso_country_code == number.iso_country_code
            && self.message_type == number.message_type
            && sorted(&self.number_capabilities) == sorted(&number.number_capabilities)
            && self.number_type == number.number_type
            && self.opt_out_list_name(into_pool.and_then(|p| p.settings.as_ref())) == number.opt_out_list_name
            && pool.as_deref() == into_pool.map(|p| p.pool_id.as_str())
            && self.registration_id == number.registration_id
            && self.deletion_protection_enabled == number.deletion_protection_enabled
            && self.international_sending_enabled == number.international_sending_enabled
            && same_tags(&self.tags, &number.tags)
    }
}

impl LifecycleService {
    /// `RequestPhoneNumber`.
    pub async fn request_phone_number(&self, meta: &CommandMeta, spec: NewNumber) -> Result<PhoneNumber, ServiceError> {
        let scope = &meta.scope;
        let (_same_token, earlier) = self.client_token(scope, "RequestPhoneNumber", spec.client_token.as_deref()).await?;
        if let Some(id) = earlier {
            return self.earlier_number(meta, &spec, &id).await;
        }
        // Refused before anything is reserved or looked up (the number's decider decides it too).
        PhoneNumber::simulator_is_transactional(spec.number_type, spec.message_type).map_err(ServiceError::Rejected)?;
        let _reserved = self
            .reserve(scope, ResourceKind::PhoneNumber, self.quotas.phone_numbers_per_account)
            .await?;
        let pool = match &spec.pool_id {
            Some(p) => Some(self.live_pool(scope, &self.owned(ResourceKind::Pool, scope, p).await?).await?),
            None => None,
        };

        let supply = self
            .picker
            .supply(&spec.iso_country_code, spec.number_type)
            .ok_or_else(|| not_offered(&spec.iso_country_code, spec.number_type))?;
        let price = supply.price.clone();
        // A number requested into a pool takes the settings it must share with the pool ("The
        // configuration of every phone number that you add to a pool has to match ..."): its
        // self-managed opt-outs and two-way configuration, which the request cannot name, and
        // its opt-out list unless the request names one (another than the pool's is refused).
        let shared = pool.as_ref().map(Pool::shared_settings);
        let opt_out_list_name = spec.opt_out_list_name(shared.as_ref());
        // The list must exist, now and when the number's first event commits.
        let list_limit = self.list_to_name(meta, &opt_out_list_name).await?;
        // A candidate can collide with a number some account already holds (the store's
        // unique claim says so); try a few fresh candidates before giving up.
        for _ in 0..8 {
            let candidate = {
                let mut rng = rand::thread_rng();
                self.picker
                    .candidate(&spec.iso_country_code, spec.number_type, spec.preference.as_ref(), &mut rng)
            };
            let Some(e164) = candidate else { break };
            let id = ResourceKind::PhoneNumber.new_id();
            let number = PhoneNumber {
                phone_number_arn: scope.arn(ResourceKind::PhoneNumber, &id),
                phone_number_id: id.clone(),
                account: scope.account.clone(),
                region: scope.region.clone(),
                phone_number: e164,
                iso_country_code: spec.iso_country_code.clone(),
                message_type: spec.message_type,
                number_capabilities: spec.number_capabilities.clone(),
                number_type: spec.number_type,
                monthly_leasing_price: price.clone(),
                opt_out_list_name: opt_out_list_name.clone(),
                registration_id: spec.registration_id.clone(),
                self_managed_opt_outs_enabled: shared.as_ref().is_some_and(|s| s.self_managed_opt_outs_enabled),
                two_way_enabled: shared.as_ref().is_some_and(|s| s.two_way_enabled),
                two_way_channel_arn: shared.as_ref().and_then(|s| s.two_way_channel_arn.clone()),
                two_way_channel_role: pool.as_ref().and_then(|p| p.two_way_channel_role.clone()),
                deletion_protection_enabled: spec.deletion_protection_enabled,
                international_sending_enabled: spec.international_sending_enabled,
                status: NumberStatus::Active,
                pool_id: None,
                pending_pool_id: None,
                tags: spec.tags.clone(),
                keywords: Default::default(),
                created_timestamp_ms: meta.at_ms,
                client_token: spec.client_token.clone(),
                // The decider records the pool of `into_pool` here.
                requested_into_pool: None,
            };
            // The number's decider refuses a pool of another message type (MESSAGE_TYPE_MISMATCH).
            let request = PhoneNumberAction::request(number, pool.as_ref().map(PoolToJoin::of));
            let quota = self.quotas.phone_numbers_per_account;
            let limits: Vec<_> = std::iter::once(quota_limit(scope, ResourceKind::PhoneNumber, quota))
                .chain(list_limit.clone())
                .collect();
            let created = self
                .execute_within(&self.numbers, &id, Activation::Fresh, meta, request, &limits)
                .await;
            let created = created.map_err(|e| list_gone(over_quota(e, scope, ResourceKind::PhoneNumber, quota), &opt_out_list_name));
            match created {
                Ok(state) => {
                    let number = state
                        .0
                        .ok_or_else(|| ServiceError::Invariant(format!("requested number {id} has no state")))?;
                    return match pool {
                        Some(pool) => self.join_requested(meta, &id, &pool, spec.client_token.as_deref()).await,
                        None => Ok(number),
                    };
                }
                Err(e) if lost_token_race(&e) => {
                    let token = spec.client_token.as_deref().unwrap_or_default();
                    let earlier = self
                        .token_race_winner(scope, "RequestPhoneNumber", ResourceKind::PhoneNumber, token)
                        .await?;
                    return self.earlier_number(meta, &spec, &earlier).await;
                }
                // The E.164 number is held by another resource: try another candidate.
                Err(ServiceError::Execute {
                    source: ExecuteError::Append(AppendError::UniqueViolation(_)),
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::Rejected(Rejection::validation(
            ValidationReason::InvalidParameter,
            "NumberPreference",
            format!(
                "no available {} {} number matches the request",
                spec.iso_country_code, spec.number_type
            ),
        )))
    }

    /// `ListAvailablePhoneNumbers`: up to `limit` numbers nobody holds, valid numbers of the
    /// country and type, matching the preference, going on from `from` (a new listing begins
    /// at a random place of the supply's order, so that callers are not all offered the same
    /// numbers, and the numbers taken do not pile up where every listing begins); and where to
    /// go on from when more may follow. A page looks at [`LOOK_AT_PER_PAGE`] numbers at most (it can
    /// come back short, with a cursor); a listing ends after [`LISTING_LIMIT`] numbers, or
    /// [`LOOK_AT_PER_LISTING`] looked at, so that an SDK's paginator comes to an end.
    pub async fn available_numbers(
        &self,
        iso_country_code: &str,
        number_type: NumberType,
        preference: Option<&NumberPreference>,
        from: ListingCursor,
        limit: usize,
    ) -> Result<(Vec<String>, Option<ListingCursor>), ServiceError> {
        let supply = self
            .picker
            .supply(iso_country_code, number_type)
            .ok_or_else(|| not_offered(iso_country_code, number_type))?;
        let mut listing = Listing::new(&supply.templates, preference, from);
        let page_ends_at = from.index.saturating_add(LOOK_AT_PER_PAGE).min(LOOK_AT_PER_LISTING);
        let mut page = Vec::new();
        let mut listed = from.listed;
        while page.len() < limit && listed < LISTING_LIMIT && listing.cursor().index < page_ends_at {
            let Some(made) = listing.next() else { break };
            let Some(number) = made.filter(|n| is_valid_for(n, iso_country_code, number_type)) else {
                continue;
            };
            if self.store.index_get(&number_claim_key(&number)).await?.is_none() {
                page.push(number);
                listed += 1;
            }
        }
        let cursor = ListingCursor {
            listed,
            ..listing.cursor()
        };
        let more = !listing.is_done() && listed < LISTING_LIMIT && cursor.index < LOOK_AT_PER_LISTING;
        Ok((page, more.then_some(cursor)))
    }

    /// The number an earlier request with the same client token created, if this request asks
    /// for the same number.
    async fn earlier_number(&self, meta: &CommandMeta, spec: &NewNumber, earlier: &str) -> Result<PhoneNumber, ServiceError> {
        let scope = &meta.scope;
        self.check_token_reuse::<PhoneNumberState>(earlier, |action| match action {
            PhoneNumberAction::Request { number, into_pool } => Some((
                number.client_token == spec.client_token,
                spec.asked_for(scope, number, into_pool.as_ref()),
            )),
            _ => None,
        })
        .await?;
        // A request into a pool reads the number from its history below, with the join's outcome.
        let Some(pool) = spec.pool_id.as_deref() else {
            return self.current_number(earlier).await;
        };
        let pool_id = self.owned(ResourceKind::Pool, scope, pool).await?;
        // What the request's attempts have done with the number, once no join of theirs is
        // under way (the answer waits for it, so that it never tells of a join that is then
        // refused): a number withdrawn after its join was refused, so the first attempt
        // answered that refusal, and so does the retry; a number that joined the pool (and is
        // not put back into it after it left). Otherwise the join was refused or undone (after
        // a failure: the first attempt's outcome was unknown to its caller) and the number kept,
        // or the first attempt stopped before its join began: the retry carries out what was
        // asked. Joining is safe even if the first attempt is still on its way: the number's
        // actor takes one join at a time, and a join refused because another is under way waits
        // for that one's outcome ([`Self::refused_join`]).
        let history = self.settled_join(earlier, &pool_id).await?;
        self.carry_on_request(meta, earlier, &pool_id, spec.client_token.as_deref(), history)
            .await
    }

    /// Carries a request into `pool_id` that made the number `id` on from where its attempts
    /// left it (`history`, with no join of theirs under way), and answers its outcome: the
    /// refusal a withdrawal recorded; the number, if it joined; the latest refusal, if the
    /// number is kept by something else (released, or put into another pool). Otherwise, the
    /// number outside the pool and its join refused, undone or never begun, it joins (refused
    /// at once, with no withdrawal tried, if the number was released or put into another pool
    /// meanwhile), and is withdrawn if the pool refuses it.
    async fn carry_on_request(
        &self,
        meta: &CommandMeta,
        id: &str,
        pool_id: &str,
        client_token: Option<&str>,
        history: JoinHistory,
    ) -> Result<PhoneNumber, ServiceError> {
        match (&history.outcome(), history.is_outside()) {
            (RequestedJoin::Withdrawn(refusal), _) => return Err(ServiceError::Rejected(refusal.clone())),
            (RequestedJoin::Joined, _) => return history.into_number(id),
            (RequestedJoin::Refused(refusal), false) => return Err(ServiceError::Rejected(refusal.clone())),
            _ => {}
        }
        match self.live_pool(&meta.scope, pool_id).await {
            Ok(pool) => self.join_requested(meta, id, &pool, client_token).await,
            Err(ServiceError::Rejected(refusal)) => self.refused_join(meta, id, pool_id, refusal).await,
            Err(e) => Err(e),
        }
    }

    /// Finishes the request into a pool that made `number` (as a view had it), if it stopped
    /// between its steps ([`PhoneNumber::unfinished_request`] of the number as the log has it)
    /// and took its last step at or before
    /// `last_step_before_ms` (a request still on its way is left to itself): as a retry of it
    /// would, under `meta` (the reconciler's, in the number's account and region). Answers
    /// whether it did: the number joined the pool, or was withdrawn. A number its caller has
    /// taken up meanwhile (found it, and updated it, tagged it or sent from it) is left as it
    /// is: only the request's own retry may still join or withdraw it.
    ///
    /// Carrying the request on beside one of its attempts still on its way (slower than the
    /// reconciler waits) is safe: the two are attempts of one request, whose joins take turns in
    /// the number's actor and share its client token, and whose withdrawal follows a refusal.
    pub(super) async fn finish_unfinished_request(
        &self,
        meta: &CommandMeta,
        number: &PhoneNumber,
        last_step_before_ms: u64,
    ) -> Result<bool, ServiceError> {
        let Some(pool_id) = number.requested_into_pool.as_deref() else {
            return Ok(false);
        };
        let id = &number.phone_number_id;
        // Read from the log: this node's view may lag behind a step another node just took.
        let mut history = JoinHistory::new(pool_id);
        history.read_on(self, id).await?;
        let still_unfinished = history.state.0.as_ref().and_then(PhoneNumber::unfinished_request) == Some(pool_id);
        if !still_unfinished || history.taken_up || history.last_step_ms > last_step_before_ms {
            return Ok(false);
        }
        tracing::warn!(phone_number_id = %id, pool_id = %pool_id, "finishing a request into a pool that stopped between its steps");
        match self
            .carry_on_request(meta, id, pool_id, number.client_token.as_deref(), history)
            .await
        {
            Ok(n) => Ok(n.is_in_pool(pool_id)),
            // The pool refused it: withdrawn (or kept by something else meanwhile).
            Err(ServiceError::Rejected(_)) => Ok(self.current_number(id).await?.status == NumberStatus::Deleted),
            Err(e) => Err(e),
        }
    }

    /// The join a request into `pool` asks for, of the number `id` it made. With the request's
    /// client token: a retry's join that got there first makes this one a no-op, not a
    /// refusal. A refused join fails the request, which then leaves no number leased.
    pub(super) async fn join_requested(
        &self,
        meta: &CommandMeta,
        id: &str,
        pool: &Pool,
        client_token: Option<&str>,
    ) -> Result<PhoneNumber, ServiceError> {
        match self.join_pool(meta, id, pool, None, client_token).await {
            Ok((super::Identity::Number(n), _)) => Ok(*n),
            Ok((super::Identity::SenderId(_), _)) => Err(ServiceError::Invariant(format!("{id} is a phone number"))),
            Err(ServiceError::Rejected(refusal)) => self.refused_join(meta, id, &pool.pool_id, refusal).await,
            Err(e) => Err(e),
        }
    }

    /// The answer to a request into `pool_id` whose join was refused (`refusal`) after it made
    /// the number `id`: the number is withdrawn, so that the failed request leaves nothing
    /// leased, and the refusal is answered — the one the first withdrawal recorded, so that
    /// every attempt of the request answers the same. A join of another attempt of the request
    /// (its retry, with the same client token) that is under way is waited for first: if it
    /// joins, the number is the answer; if it is refused, its refusal (the latest the number
    /// records for the pool) is the one withdrawn with, not this attempt's (which may only say
    /// that the other join was under way). A number put into another pool meanwhile, or
    /// released, is left as it is (the refusal is answered all the same). If the withdrawal
    /// cannot be written, that error is the answer: the request's outcome is then unknown to
    /// its caller, whose retry (with the same client token, as the SDKs send it) tries the join
    /// again and withdraws the number if it is refused.
    pub(super) async fn refused_join(
        &self,
        meta: &CommandMeta,
        id: &str,
        pool_id: &str,
        refusal: Rejection,
    ) -> Result<PhoneNumber, ServiceError> {
        // A round ends with a withdrawal written, or refused because a join began meanwhile:
        // the next reads what became of it. There are only so many attempts of one request.
        for _ in 0..4 {
            let history = self.settled_join(id, pool_id).await?;
            let reason = match history.outcome() {
                RequestedJoin::Withdrawn(first) => return Err(ServiceError::Rejected(first)),
                RequestedJoin::Joined => return history.into_number(id),
                RequestedJoin::Refused(latest) => latest,
                RequestedJoin::NotBegun | RequestedJoin::Other => refusal.clone(),
            };
            if !history.is_outside() {
                return Err(ServiceError::Rejected(reason));
            }
            // Decided on the number as read: if another attempt joined it since, the history
            // is read again rather than the number taken from the pool it is now in.
            let withdraw = PhoneNumberAction::WithdrawRequest {
                pool_id: pool_id.to_string(),
                reason,
            };
            let command = decided_at::<PhoneNumberState>(meta, withdraw, history.version());
            match self.execute_command(&self.numbers, id, Activation::Existing, command).await {
                Ok(_) | Err(ServiceError::Rejected(_)) => continue,
                Err(ServiceError::Execute {
                    source: ExecuteError::Stale,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Attempts of this request kept changing the number: its outcome is not known yet.
        Err(ServiceError::Rejected(Rejection::conflict(
            ConflictReason::ResourceModificationNotAllowed,
            ResourceKind::PhoneNumber,
            id,
            "is being changed by other attempts of this request; send this request again",
        )))
    }

    /// The history of the number `id` a request into `pool_id` made, once no join of it into
    /// that pool is under way: waited for up to [`JOIN_WAIT`], after which the request is
    /// refused as one still in progress (`ConflictException`), to be sent again.
    async fn settled_join(&self, id: &str, pool_id: &str) -> Result<JoinHistory, ServiceError> {
        /// As long as a creation racing a client token is waited for: beyond the longest an
        /// append is resent.
        const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(10);
        let mut history = JoinHistory::new(pool_id);
        loop {
            history.read_on(self, id).await?;
            if !history.is_joining() {
                return Ok(history);
            }
            if started.elapsed() >= JOIN_WAIT {
                return Err(ServiceError::Rejected(Rejection::conflict(
                    ConflictReason::ResourceModificationNotAllowed,
                    ResourceKind::PhoneNumber,
                    id,
                    "is still joining the pool for another attempt of this request; send this request again",
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
        }
    }

    /// `UpdatePhoneNumber`.
    pub async fn update_phone_number(
        &self,
        meta: &CommandMeta,
        id_or_arn: &str,
        changes: PhoneNumberChanges,
    ) -> Result<PhoneNumber, ServiceError> {
        let id = self.owned(ResourceKind::PhoneNumber, &meta.scope, id_or_arn).await?;
        let Some(list) = changes.opt_out_list_name.clone().filter(|l| l != DEFAULT_LIST) else {
            return self.number(meta, &id, PhoneNumberAction::Update(changes)).await;
        };
        // The list must exist, now and when the change commits; a list found gone either way is
        // the number's refusal, recorded on its stream.
        let state = self
            .update_naming_list(meta, &list, |list_exists, limits| {
                let update = PhoneNumberAction::UpdateNamingList {
                    changes: changes.clone(),
                    list_exists,
                };
                let id = &id;
                async move {
                    self.execute_within(&self.numbers, id, Activation::Existing, meta, update, &limits)
                        .await
                }
            })
            .await?;
        state.0.ok_or_else(|| not_found(ResourceKind::PhoneNumber, &id))
    }

    /// `ReleasePhoneNumber`.
    pub async fn release_phone_number(&self, meta: &CommandMeta, id_or_arn: &str) -> Result<PhoneNumber, ServiceError> {
        let id = self.owned(ResourceKind::PhoneNumber, &meta.scope, id_or_arn).await?;
        self.number(meta, &id, PhoneNumberAction::Release).await
    }
}
