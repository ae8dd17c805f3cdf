//! The derived index: keys computed from each state change and committed atomically with its
//! events (see the store's append guarantees), all derivable from the log, so [`rebuild_index`]
//! can recreate them:
//! - `v/{account}/{region}/{phone-number|pool}/{id}` → JSON of the live resource (Describe views;
//!   removed when the resource is released or deleted);
//! - `t/{account}/{region}/{operation}/{client token}` → resource id, a unique claim: a token is
//!   bound to the one resource its first request created, however many requests race with it;
//! - `n/{E.164 number}` → phone number id, a unique claim: a number is never handed out twice;
//! - `c/{account}/{region}/{phone-number|pool|opt-out-list}` → how many are live (quotas read it);
//! - `l/{account}/{region}/{list name}` → 1 while that opt-out list exists, and
//!   `u/{account}/{region}/{list name}` → how many live numbers and pools name it: a deletion
//!   requires no user, a new user requires the list, both by the log's counter limits.

use std::collections::{BTreeMap, HashMap};

use imbl::ordmap::DiffItem;

use crate::codec::{decode_event, kind_of_stream};
use crate::domain::opt_out_list::OptOutListState;
use crate::domain::phone_number::PhoneNumberState;
use crate::domain::pool::PoolState;
use crate::domain::sender_id::SenderIdState;
use crate::domain::types::NumberStatus;
use crate::domain::{Aggregate, ResourceKind, Scope};
use crate::store::{decode_counter, EventEnvelope, EventStore, IndexOp, StoreError};

/// Key of a live resource's view.
pub fn view_key(scope: &Scope, kind: ResourceKind, id: &str) -> Vec<u8> {
    let mut k = view_prefix(scope, kind);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Prefix of all views of one kind in one scope.
pub fn view_prefix(scope: &Scope, kind: ResourceKind) -> Vec<u8> {
    format!("v/{}/{}/{}/", scope.account, scope.region, kind.arn_segment()).into_bytes()
}

/// Layout version of the index; a log whose index was built with another one is re-indexed on
/// start. 2: live-resource counters. 3: owner keys. 4: opt-out lists and their users. 5: which
/// list each number and pool names. 6: each list's incarnation. 7: a sender id's pools (a set,
/// where views of layout 6 hold one `PoolId`).
pub const INDEX_LAYOUT_VERSION: u64 = 7;

/// Key that says a resource was created in a scope (kept when it is released or deleted):
/// commands are checked against it before they reach the resource's actor, so a caller of
/// another account or region is told "not found" exactly as for an id that never existed, and
/// nothing is written to that resource's stream.
pub fn owner_key(scope: &Scope, kind: ResourceKind, id: &str) -> Vec<u8> {
    format!("o/{}/{}/{}/{id}", scope.account, scope.region, kind.arn_segment()).into_bytes()
}

/// The owner key of a resource created by this transition.
fn owner_op(before_exists: bool, scope: &Scope, kind: ResourceKind, id: &str) -> Option<IndexOp> {
    (!before_exists).then(|| IndexOp::Put(owner_key(scope, kind, id), Vec::new()))
}

/// Key of the counter of live resources of one kind in one scope (quotas read it).
pub fn live_count_key(scope: &Scope, kind: ResourceKind) -> Vec<u8> {
    format!("c/{}/{}/{}", scope.account, scope.region, kind.arn_segment()).into_bytes()
}

/// +1 when a resource comes to life, -1 when it goes.
fn live_count_op(scope: &Scope, kind: ResourceKind, was_live: bool, is_live: bool) -> Option<IndexOp> {
    match (was_live, is_live) {
        (false, true) => Some(IndexOp::Add(live_count_key(scope, kind), 1)),
        (true, false) => Some(IndexOp::Add(live_count_key(scope, kind), -1)),
        _ => None,
    }
}

/// Key of the counter that is 1 while the opt-out list `name` exists.
pub fn opt_out_list_alive_key(scope: &Scope, name: &str) -> Vec<u8> {
    format!("{OPT_OUT_LIST_ALIVE_PREFIX}{}/{}/{name}", scope.account, scope.region).into_bytes()
}

/// What every [`opt_out_list_alive_key`] starts with: a scan of it lists each list ever created
/// (a deleted one's counter stays, at 0).
pub const OPT_OUT_LIST_ALIVE_PREFIX: &str = "l/";

/// The scope and name an [`opt_out_list_alive_key`] was made of.
pub fn opt_out_list_of_alive_key(key: &[u8]) -> Option<(Scope, String)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(OPT_OUT_LIST_ALIVE_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (account, region, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some((Scope::new(account, region), name.to_string()))
}

/// Key of the counter of the creations of the opt-out list `name`: its current incarnation. It
/// only grows, so a send bounding it to the incarnation it read (at most that) is refused once
/// the list has been deleted and made again, whatever else came back as it was.
pub fn opt_out_list_incarnation_key(scope: &Scope, name: &str) -> Vec<u8> {
    format!("li/{}/{}/{name}", scope.account, scope.region).into_bytes()
}

/// Key of the counter of live numbers and pools that name the opt-out list `name`.
pub fn opt_out_list_users_key(scope: &Scope, name: &str) -> Vec<u8> {
    format!("u/{}/{}/{name}", scope.account, scope.region).into_bytes()
}

/// Key of the counter that is 1 while `number` is on the opt-out list `name` (its
/// `incarnation`-th creation): a message to it appends requiring 0 there.
pub fn opted_out_key(scope: &Scope, name: &str, incarnation: u64, number: &str) -> Vec<u8> {
    format!("x/{}/{}/{name}/{incarnation}/{number}", scope.account, scope.region).into_bytes()
}

/// Key of the counter that is 1 while the live phone number or pool `id` names the opt-out list
/// `list` (and, for a number, manages its opt-outs itself or not, `self_managed`): a message sent
/// on the strength of what its sender named requires it, so a change of list between the look
/// and the append is caught by the log.
pub fn names_list_key(scope: &Scope, id: &str, list: &str, self_managed: bool) -> Vec<u8> {
    format!("nl/{}/{}/{id}/{list}/{self_managed}", scope.account, scope.region).into_bytes()
}

/// The names-list counter of a resource moving from `before` to `after` (each `None` when not
/// live).
fn names_list_ops(scope: &Scope, id: &str, before: Option<(&str, bool)>, after: Option<(&str, bool)>) -> Vec<IndexOp> {
    if before == after {
        return vec![];
    }
    let mut ops = Vec::new();
    if let Some((list, own)) = before {
        ops.push(IndexOp::Add(names_list_key(scope, id, list, own), -1));
    }
    if let Some((list, own)) = after {
        ops.push(IndexOp::Add(names_list_key(scope, id, list, own), 1));
    }
    ops
}

/// A resource that named the list `before` (while live) names `after` now.
fn list_user_ops(scope: &Scope, before: Option<&str>, after: Option<&str>) -> Vec<IndexOp> {
    if before == after {
        return vec![];
    }
    let mut ops = Vec::new();
    if let Some(b) = before {
        ops.push(IndexOp::Add(opt_out_list_users_key(scope, b), -1));
    }
    if let Some(a) = after {
        ops.push(IndexOp::Add(opt_out_list_users_key(scope, a), 1));
    }
    ops
}

/// Key of an idempotency token.
pub fn token_key(scope: &Scope, operation: &str, token: &str) -> Vec<u8> {
    format!("t/{}/{}/{}/{}", scope.account, scope.region, operation, token).into_bytes()
}

/// Key of the claim on an E.164 number.
pub fn number_claim_key(e164: &str) -> Vec<u8> {
    format!("n/{e164}").into_bytes()
}

/// An aggregate whose state changes feed the index.
pub trait Projected: Aggregate {
    /// Index changes for a transition from `before` to `after`.
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp>;
    /// Keys that must be free for the transition to happen, with their values.
    fn unique_claims(_before: &Self, _after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

fn view_ops<T: serde::Serialize>(key: Vec<u8>, live: bool, value: &T) -> Vec<IndexOp> {
    if !live {
        return vec![IndexOp::Delete(key)];
    }
    match serde_json::to_vec(value) {
        Ok(bytes) => vec![IndexOp::Put(key, bytes)],
        Err(e) => {
            // Serializing our own plain structs cannot fail; if it ever did, a stale view is
            // better than a lost event, and a rebuild repairs it.
            tracing::error!(error = %e, "cannot serialize view");
            vec![]
        }
    }
}

impl Projected for PhoneNumberState {
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(n) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&n.account, &n.region);
        let live = n.status != NumberStatus::Deleted;
        let was_live = before.0.as_ref().is_some_and(|b| b.status != NumberStatus::Deleted);
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, live).into_iter().collect();
        let list_before = before.0.as_ref().filter(|_| was_live).map(|b| b.opt_out_list_name.as_str());
        ops.extend(list_user_ops(&scope, list_before, live.then_some(n.opt_out_list_name.as_str())));
        let names_before = before
            .0
            .as_ref()
            .filter(|_| was_live)
            .map(|b| (b.opt_out_list_name.as_str(), b.self_managed_opt_outs_enabled));
        let names_after = live.then_some((n.opt_out_list_name.as_str(), n.self_managed_opt_outs_enabled));
        ops.extend(names_list_ops(&scope, &n.phone_number_id, names_before, names_after));
        ops.extend(owner_op(before.0.is_some(), &scope, Self::KIND, &n.phone_number_id));
        ops.extend(view_ops(view_key(&scope, Self::KIND, &n.phone_number_id), live, n));
        ops
    }

    fn unique_claims(before: &Self, after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (None, Some(n)) = (&before.0, &after.0) else { return vec![] };
        let id = n.phone_number_id.clone().into_bytes();
        let scope = Scope::new(&n.account, &n.region);
        let mut claims = vec![(number_claim_key(&n.phone_number), id.clone())];
        if let Some(token) = &n.client_token {
            claims.push((token_key(&scope, "RequestPhoneNumber", token), id));
        }
        claims
    }
}

impl Projected for PoolState {
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(p) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&p.account, &p.region);
        let was_live = before.0.as_ref().is_some_and(|b| !b.deleted);
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, !p.deleted).into_iter().collect();
        let list_before = before.0.as_ref().filter(|_| was_live).map(|b| b.opt_out_list_name.as_str());
        ops.extend(list_user_ops(
            &scope,
            list_before,
            (!p.deleted).then_some(p.opt_out_list_name.as_str()),
        ));
        let names_before = list_before.map(|l| (l, false));
        let names_after = (!p.deleted).then_some((p.opt_out_list_name.as_str(), false));
        ops.extend(names_list_ops(&scope, &p.pool_id, names_before, names_after));
        ops.extend(owner_op(before.0.is_some(), &scope, Self::KIND, &p.pool_id));
        ops.extend(view_ops(view_key(&scope, Self::KIND, &p.pool_id), !p.deleted, p));
        ops
    }

    fn unique_claims(before: &Self, after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match (&before.0, &after.0) {
            (None, Some(p)) => p
                .client_token
                .iter()
                .map(|token| {
                    let scope = Scope::new(&p.account, &p.region);
                    (token_key(&scope, "CreatePool", token), p.pool_id.clone().into_bytes())
                })
                .collect(),
            _ => vec![],
        }
    }
}

/// What Describe shows of an opt-out list (its opted-out numbers stay in its stream).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptOutListView {
    pub opt_out_list_name: String,
    pub opt_out_list_arn: String,
    pub created_timestamp_ms: u64,
    #[serde(default)]
    pub tags: Vec<crate::domain::types::Tag>,
    #[serde(default)]
    pub incarnation: u64,
}

impl Projected for OptOutListState {
    fn unique_claims(before: &Self, after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match (before.live(), after.live()) {
            (None, Some(l)) => l
                .client_token
                .iter()
                .map(|token| {
                    let scope = Scope::new(&l.account, &l.region);
                    let stream = ResourceKind::opt_out_list_id(&scope, &l.opt_out_list_name);
                    (token_key(&scope, "CreateOptOutList", token), stream.into_bytes())
                })
                .collect(),
            _ => vec![],
        }
    }

    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(l) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&l.account, &l.region);
        let (was_live, live) = (before.live().is_some(), !l.deleted);
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, live).into_iter().collect();
        let alive = opt_out_list_alive_key(&scope, &l.opt_out_list_name);
        match (was_live, live) {
            (false, true) => {
                ops.push(IndexOp::Add(alive, 1));
                ops.push(IndexOp::Add(opt_out_list_incarnation_key(&scope, &l.opt_out_list_name), 1));
            }
            (true, false) => ops.push(IndexOp::Add(alive, -1)),
            _ => {}
        }
        // Each opted-out number of this incarnation: +1 when it joins, -1 when it leaves. A
        // deleted list's numbers are left as they were, under an incarnation nothing names again.
        // The persistent maps' diff skips the structure the two states share: a write's cost
        // follows what it changed, not the list's size.
        if let (Some(b), false) = (before.live().filter(|b| b.incarnation == l.incarnation), l.deleted) {
            for change in b.opted_out.diff(&l.opted_out) {
                let (number, by) = match change {
                    DiffItem::Add(number, _) => (number, 1),
                    DiffItem::Remove(number, _) => (number, -1),
                    DiffItem::Update { .. } => continue,
                };
                ops.push(IndexOp::Add(opted_out_key(&scope, &l.opt_out_list_name, l.incarnation, number), by));
            }
        }
        // The view changes only with what it shows, not with each opted-out number.
        let shown = |s: &Self| {
            s.live().map(|l| OptOutListView {
                opt_out_list_name: l.opt_out_list_name.clone(),
                opt_out_list_arn: l.opt_out_list_arn.clone(),
                created_timestamp_ms: l.created_timestamp_ms,
                tags: l.tags.clone(),
                incarnation: l.incarnation,
            })
        };
        let (view_before, view_after) = (shown(before), shown(after));
        if view_before != view_after {
            let key = view_key(&scope, Self::KIND, &ResourceKind::opt_out_list_id(&scope, &l.opt_out_list_name));
            match &view_after {
                Some(v) => ops.extend(view_ops(key, true, v)),
                None => ops.push(IndexOp::Delete(key)),
            }
        }
        ops
    }
}

impl Projected for SenderIdState {
    fn index_ops(before: &Self, after: &Self) -> Vec<IndexOp> {
        let Some(s) = after.0.as_ref().filter(|_| before != after) else {
            return vec![];
        };
        let scope = Scope::new(&s.account, &s.region);
        let (was_live, live) = (before.live().is_some(), s.is_live());
        let mut ops: Vec<IndexOp> = live_count_op(&scope, Self::KIND, was_live, live).into_iter().collect();
        ops.extend(owner_op(before.0.is_some(), &scope, Self::KIND, &s.id));
        ops.extend(view_ops(view_key(&scope, Self::KIND, &s.id), live, s));
        ops
    }

    fn unique_claims(before: &Self, after: &Self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match (before.live(), after.live()) {
            (None, Some(s)) => s
                .client_token
                .iter()
                .map(|token| {
                    let scope = Scope::new(&s.account, &s.region);
                    (token_key(&scope, "RequestSenderId", token), s.id.clone().into_bytes())
                })
                .collect(),
            _ => vec![],
        }
    }
}

/// Folds the whole feed into the index it implies, and writes it in place of the current one.
pub async fn rebuild_index(store: &dyn EventStore) -> Result<usize, StoreError> {
    rebuild_index_showing(store, &crate::progress::Progress::none()).await
}

/// [`rebuild_index`], showing how far through the log it is on `progress`.
pub async fn rebuild_index_showing(store: &dyn EventStore, progress: &crate::progress::Progress) -> Result<usize, StoreError> {
    let mut numbers: HashMap<String, PhoneNumberState> = HashMap::new();
    let mut pools: HashMap<String, PoolState> = HashMap::new();
    let mut lists: HashMap<String, OptOutListState> = HashMap::new();
    let mut sender_ids: HashMap<String, SenderIdState> = HashMap::new();
    let mut index: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut after = 0;
    // With a shared log other nodes append while this one rebuilds: the store brings the index
    // up to date with the commits after `after`, as long as it still has them at hand; if not,
    // the fold goes on from where it was and the index is handed over again.
    let mut attempts = 0;
    loop {
        let chunk = store.read_feed(after, 4096).await?;
        let Some(last) = chunk.last() else {
            attempts += 1;
            match store
                .replace_index(index.clone().into_iter().collect(), INDEX_LAYOUT_VERSION, after)
                .await
            {
                Ok(()) => break,
                Err(e) if attempts < 5 => {
                    tracing::warn!(error = %crate::error_chain(&e), "the log moved on too far during the rebuild; folding on");
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        after = last.position;
        progress.set(after);
        for envelope in &chunk {
            match kind_of_stream(&envelope.stream_id) {
                Some(ResourceKind::PhoneNumber) => step(&mut numbers, &mut index, envelope)?,
                Some(ResourceKind::Pool) => step(&mut pools, &mut index, envelope)?,
                Some(ResourceKind::OptOutList) => step(&mut lists, &mut index, envelope)?,
                Some(ResourceKind::SenderId) => step(&mut sender_ids, &mut index, envelope)?,
                None => {
                    return Err(StoreError::Corrupt {
                        key: envelope.stream_id.clone(),
                        message: "unknown stream kind".into(),
                    })
                }
            }
        }
    }
    Ok(index.len())
}

fn step<A: Projected>(
    states: &mut HashMap<String, A>,
    index: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    envelope: &EventEnvelope,
) -> Result<(), StoreError> {
    let before = states.remove(&envelope.stream_id).unwrap_or_default();
    let event: A::Event = decode_event(envelope)?;
    let after = before.clone().evolve(&event);
    for (k, v) in A::unique_claims(&before, &after) {
        index.insert(k, v);
    }
    for op in A::index_ops(&before, &after) {
        match op {
            IndexOp::Put(k, v) => {
                index.insert(k, v);
            }
            IndexOp::Delete(k) => {
                index.remove(&k);
            }
            IndexOp::Add(k, delta) => {
                let current = decode_counter(index.get(&k).map(Vec::as_slice));
                index.insert(k, current.saturating_add(delta).to_be_bytes().to_vec());
            }
        }
    }
    states.insert(envelope.stream_id.clone(), after);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::opt_out_list::{OptOutList, OptOutListEvent, OptedOut};

    const NAME: &str = "Quiet";

    fn scope() -> Scope {
        Scope::new("111122223333", "us-east-1")
    }

    fn created() -> OptOutListEvent {
        let scope = scope();
        let arn = scope.arn(ResourceKind::OptOutList, NAME);
        OptOutListEvent::OptOutListCreated(Box::new(OptOutList::new(NAME, arn, &scope.account, &scope.region, 1, vec![], None)))
    }

    fn opted_out(number: &str, at_ms: u64) -> OptOutListEvent {
        OptOutListEvent::NumberOptedOut {
            number: number.into(),
            entry: OptedOut {
                opted_out_timestamp_ms: at_ms,
                end_user_opted_out: false,
            },
        }
    }

    /// The opted-out counters of a list's index, kept by its `index_ops`.
    #[derive(Default)]
    struct OptedOutCounters(HashMap<Vec<u8>, i64>);

    impl OptedOutCounters {
        fn step(&mut self, before: &OptOutListState, after: &OptOutListState) {
            for op in OptOutListState::index_ops(before, after) {
                if let IndexOp::Add(key, by) = op {
                    *self.0.entry(key).or_default() += by;
                }
            }
        }

        fn of(&self, incarnation: u64, number: &str) -> i64 {
            self.0
                .get(&opted_out_key(&scope(), NAME, incarnation, number))
                .copied()
                .unwrap_or(0)
        }
    }

    /// Given a list's history, when each event is projected, then each number's counter is 1
    /// exactly while it is on the list of the incarnation it was put on.
    #[test]
    fn an_opted_out_counter_follows_its_number_on_and_off_the_list() {
        let (a, b) = ("+12065550100", "+12065550101");
        let mut counters = OptedOutCounters::default();
        let mut state = OptOutListState::default();
        let mut apply = |event: OptOutListEvent, counters: &mut OptedOutCounters| {
            let after = state.clone().evolve(&event);
            counters.step(&state, &after);
            state = after;
        };
        apply(created(), &mut counters);
        apply(opted_out(a, 1), &mut counters);
        apply(opted_out(b, 2), &mut counters);
        assert_eq!((counters.of(1, a), counters.of(1, b)), (1, 1));
        // Put again (another entry): still once on the list.
        apply(opted_out(a, 3), &mut counters);
        assert_eq!(counters.of(1, a), 1);
        apply(
            OptOutListEvent::OptedOutNumberDeleted {
                number: a.into(),
                at_ms: 4,
            },
            &mut counters,
        );
        apply(OptOutListEvent::EndUserOptedIn { number: b.into() }, &mut counters);
        assert_eq!((counters.of(1, a), counters.of(1, b)), (0, 0));
        apply(opted_out(a, 5), &mut counters);
        assert_eq!(counters.of(1, a), 1);
        // A deleted list's numbers stay as they were, under an incarnation nothing names again;
        // the list made again starts empty.
        apply(OptOutListEvent::OptOutListDeleted { opted_out: 1 }, &mut counters);
        apply(created(), &mut counters);
        assert_eq!((counters.of(1, a), counters.of(2, a)), (1, 0));
        apply(opted_out(a, 6), &mut counters);
        assert_eq!(counters.of(2, a), 1);
    }

    /// The diff of two states that share no structure (each read from its own bytes, as after
    /// a snapshot) finds the same changes as one between a state and its evolved copy.
    #[test]
    fn index_ops_of_unshared_states_are_those_of_shared_ones() {
        let mut before = OptOutListState::default().evolve(&created());
        for i in 0..500 {
            before = before.evolve(&opted_out(&format!("+1206555{i:04}"), i));
        }
        let after = before
            .clone()
            .evolve(&OptOutListEvent::EndUserOptedIn {
                number: "+12065550250".into(),
            })
            .evolve(&opted_out("+12065559999", 1_000))
            .evolve(&opted_out("+12065550007", 1_001));
        let read_back =
            |s: &OptOutListState| -> OptOutListState { serde_json::from_slice(&serde_json::to_vec(s).expect("encode")).expect("decode") };
        let shared = OptOutListState::index_ops(&before, &after);
        let unshared = OptOutListState::index_ops(&read_back(&before), &read_back(&after));
        assert_eq!(shared, unshared);
        let scope = scope();
        assert_eq!(
            shared,
            vec![
                IndexOp::Add(opted_out_key(&scope, NAME, 1, "+12065550250"), -1),
                IndexOp::Add(opted_out_key(&scope, NAME, 1, "+12065559999"), 1),
            ]
        );
    }
}
