//! The pool aggregate: a named group of origination identities (here, phone numbers) sharing a
//! message type. Rules as AWS has them: a pool is created with one identity, identities must
//! match its message type, the last one cannot leave (`LAST_PHONE_NUMBER`), and deletion honours
//! deletion protection and lets every member go.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::{ResourceKind, Scope};
use super::keywords::{self, Keyword};
use super::tags::{self, edited, TagEdit};
use super::types::{ConflictReason, MessageType, NumberCapability, PoolStatus, Tag};
use super::{changed, changed_optional, ActionName, Aggregate, Command, Rejection};

/// One origination identity in a pool (`OriginationIdentityMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolMember {
    pub origination_identity: String,
    pub origination_identity_arn: String,
    pub iso_country_code: String,
    pub number_capabilities: Vec<NumberCapability>,
    pub phone_number: String,
    pub message_type: MessageType,
    /// The sender id's string, for a member that is a sender id (`phone_number` is empty then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// A joining phone number's settings, carried by its `AddMember` step for the pool to check
    /// against its own as they are when it records the member (the joining request read the
    /// pool's earlier, from a view that may lag). Not kept in the pool's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_settings: Option<SharedSettings>,
}

/// The settings a pool's phone numbers share with it: "The configuration of every phone number
/// that you add to a pool has to match the configuration of the first phone number that you
/// specified when you created the pool. For example, if you create a pool that contains a phone
/// number that has two-way messaging enabled, the other numbers that you add to the pool must
/// also have two-way messaging enabled." A number joining a pool is compared with the pool's
/// settings as they are then (`UpdatePool` may have changed them since its first number).
/// (Keywords are part of that configuration too, but a pool's keywords change with
/// `PutKeyword` as its numbers' do not; they are not compared.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SharedSettings {
    pub opt_out_list_name: String,
    pub self_managed_opt_outs_enabled: bool,
    pub two_way_enabled: bool,
    /// The two-way channel, compared only while two-way messaging is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_arn: Option<String>,
}

impl SharedSettings {
    /// How a joining number's settings (`number`) differ from these, the pool's: the reason the
    /// join is refused, and what differs. `None` when they match.
    pub fn mismatch(&self, number: &SharedSettings) -> Option<(ConflictReason, String)> {
        let pool = self;
        if number.opt_out_list_name != pool.opt_out_list_name {
            let why = format!(
                "uses opt-out list {}, the pool {}",
                number.opt_out_list_name, pool.opt_out_list_name
            );
            return Some((ConflictReason::OptOutListMismatch, why));
        }
        if number.self_managed_opt_outs_enabled != pool.self_managed_opt_outs_enabled {
            let why = format!(
                "has self-managed opt-outs {}, the pool {}",
                on_off(number.self_managed_opt_outs_enabled),
                on_off(pool.self_managed_opt_outs_enabled)
            );
            return Some((ConflictReason::SelfManagedOptOutsMismatch, why));
        }
        let two_way = |s: &SharedSettings| match (s.two_way_enabled, &s.two_way_channel_arn) {
            (false, _) => "off".to_string(),
            (true, channel) => format!("on ({})", channel.as_deref().unwrap_or("no channel")),
        };
        (two_way(number) != two_way(pool)).then(|| {
            let why = format!("has two-way messaging {}, the pool {}", two_way(number), two_way(pool));
            (ConflictReason::TwoWayConfigMismatch, why)
        })
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// Everything known about one pool (`PoolInformation` plus its members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pool {
    pub pool_id: String,
    pub pool_arn: String,
    pub account: String,
    pub region: String,
    pub message_type: MessageType,
    pub opt_out_list_name: String,
    pub self_managed_opt_outs_enabled: bool,
    pub shared_routes_enabled: bool,
    pub two_way_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_role: Option<String>,
    pub deletion_protection_enabled: bool,
    pub status: PoolStatus,
    /// Set by `PoolDeleted`: the pool is gone for every command but its history stays.
    #[serde(default)]
    pub deleted: bool,
    /// Members by origination identity (phone number id).
    pub members: BTreeMap<String, PoolMember>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Keywords of its own (HELP and STOP are every pool's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keywords: BTreeMap<String, Keyword>,
    pub created_timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Per number: a reconciler gave up (finished or undid) its pool changes begun at or before
    /// this time, so a late step of one of them is refused (see `PoolAction::Fence`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fenced: BTreeMap<String, u64>,
    /// Never created: a fence found no pool (see [`PoolEvent::CreationForeclosed`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreclosed: bool,
}

impl Pool {
    /// The settings its phone numbers share with it.
    pub fn shared_settings(&self) -> SharedSettings {
        SharedSettings {
            opt_out_list_name: self.opt_out_list_name.clone(),
            self_managed_opt_outs_enabled: self.self_managed_opt_outs_enabled,
            two_way_enabled: self.two_way_enabled,
            two_way_channel_arn: self.two_way_channel_arn.clone(),
        }
    }

    /// The record of a pool that was never created (see [`PoolEvent::CreationForeclosed`]):
    /// foreclosed and deleted, with no members; only its id, account and region (and the fence)
    /// are real, the rest are placeholders no command reads (every command finds it deleted).
    fn foreclosed(pool_id: &str, account: &str, region: &str, origination_identity: &str, begun_before_ms: u64) -> Pool {
        Pool {
            opt_out_list_name: String::new(),
            status: PoolStatus::Deleting,
            deleted: true,
            created_timestamp_ms: 0,
            fenced: [(origination_identity.to_string(), begun_before_ms)].into_iter().collect(),
            foreclosed: true,
            ..Pool::example(pool_id, &Scope::new(account, region), vec![])
        }
    }

    /// A live transactional pool of `scope` holding `members`, with a new pool's defaults (for
    /// tests and documentation examples).
    pub fn example(pool_id: &str, scope: &Scope, members: Vec<PoolMember>) -> Pool {
        Pool {
            pool_id: pool_id.to_string(),
            pool_arn: scope.arn(KIND, pool_id),
            account: scope.account.clone(),
            region: scope.region.clone(),
            message_type: MessageType::Transactional,
            opt_out_list_name: "Default".into(),
            self_managed_opt_outs_enabled: false,
            shared_routes_enabled: false,
            two_way_enabled: false,
            two_way_channel_arn: None,
            two_way_channel_role: None,
            deletion_protection_enabled: false,
            status: PoolStatus::Active,
            deleted: false,
            members: members.into_iter().map(|m| (m.origination_identity.clone(), m)).collect(),
            tags: Vec::new(),
            keywords: BTreeMap::new(),
            created_timestamp_ms: 1,
            client_token: None,
            fenced: BTreeMap::new(),
            foreclosed: false,
        }
    }
}

/// The members `UpdatePool` may change; `None` leaves a member as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_list_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_managed_opt_outs_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_routes_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_channel_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way_enabled: Option<bool>,
}

/// The state of one pool stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState(pub Option<Pool>);

/// What can be asked of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Input", rename_all_fields = "PascalCase")]
pub enum PoolAction {
    /// Start the stream; the pool holds exactly one member, inherited settings filled in by the shell.
    Create(Box<Pool>),
    AddMember(PoolMember),
    RemoveMember {
        origination_identity: String,
    },
    Delete,
    /// A reconciler is about to settle a pool change of `origination_identity` that was left
    /// alone: steps of that number's changes begun at or before `begun_before_ms` (the time of
    /// the request that began them) are refused from now on. The reconciler then decides from
    /// this pool's state after the fence, which no late step of the given-up change can alter.
    Fence {
        origination_identity: String,
        begun_before_ms: u64,
    },
    /// `UpdatePool`: the given members change.
    Update(PoolChanges),
    /// An update naming an opt-out list other than `Default`, with whether the shell found the
    /// list (the log's counter bound keeps that exact; a list found gone is refused, recorded).
    UpdateNamingList {
        changes: PoolChanges,
        list_exists: bool,
    },
    /// `TagResource`: put these tags (an existing key takes the new value).
    Tag {
        tags: Vec<Tag>,
    },
    /// `UntagResource`: remove the tags with these keys.
    Untag {
        keys: Vec<String>,
    },
    /// `PutKeyword`, with the most keywords of its own the pool may hold.
    PutKeyword {
        keyword: Keyword,
        quota: u64,
    },
    /// `DeleteKeyword`.
    DeleteKeyword {
        keyword: String,
    },
}

impl ActionName for PoolAction {
    fn name(&self) -> &'static str {
        match self {
            PoolAction::Create(_) => "Create",
            PoolAction::AddMember(_) => "AddMember",
            PoolAction::RemoveMember { .. } => "RemoveMember",
            PoolAction::Delete => "Delete",
            PoolAction::Fence { .. } => "Fence",
            PoolAction::Update(_) | PoolAction::UpdateNamingList { .. } => "Update",
            PoolAction::Tag { .. } => "Tag",
            PoolAction::Untag { .. } => "Untag",
            PoolAction::PutKeyword { .. } => "PutKeyword",
            PoolAction::DeleteKeyword { .. } => "DeleteKeyword",
        }
    }
}

/// What happened to a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum PoolEvent {
    PoolCreated(Box<Pool>),
    OriginationIdentityAssociated(PoolMember),
    OriginationIdentityDisassociated {
        origination_identity: String,
    },
    /// The pool is gone; `members` were in it at that moment and are let go.
    PoolDeleted {
        members: Vec<String>,
    },
    AssociationRejected {
        origination_identity: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    DisassociationRejected {
        origination_identity: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    DeletionRejected {
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    CommandRejected {
        command: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
    /// Late steps of the number's changes begun at or before `begun_before_ms` are refused.
    ChangesFenced {
        origination_identity: String,
        begun_before_ms: u64,
    },
    /// A fence on a pool that was never created: a `CreatePool` whose member's first step was
    /// given up. The stream now exists, as a deleted pool of `account` and `region` with no
    /// members, so the late creation is refused instead of making a pool that holds a member
    /// which is no longer joining it.
    CreationForeclosed {
        pool_id: String,
        account: String,
        region: String,
        origination_identity: String,
        begun_before_ms: u64,
    },
    /// The pool's tags after a TagResource or UntagResource.
    TagsChanged {
        tags: Vec<Tag>,
    },
    PoolUpdated(PoolChanges),
    /// A keyword of its own created or changed.
    KeywordPut(Keyword),
    KeywordDeleted {
        keyword: String,
    },
}

const KIND: ResourceKind = ResourceKind::Pool;

impl PoolState {
    fn live<'a>(&'a self, command: &Command<PoolAction>) -> Result<&'a Pool, Rejection> {
        match &self.0 {
            Some(p) if !p.deleted && p.account == command.meta.scope.account && p.region == command.meta.scope.region => Ok(p),
            _ => Err(Rejection::not_found(KIND, &command.target)),
        }
    }

    /// Refuses a step of a pool change of `number` that a reconciler gave up: one whose request
    /// began (`at_ms`) at or before the fence.
    fn not_fenced(p: &Pool, number: &str, command: &Command<PoolAction>) -> Result<(), Rejection> {
        match p.fenced.get(number) {
            Some(fence) if command.meta.at_ms <= *fence => Err(Rejection::conflict(
                ConflictReason::ResourceModificationNotAllowed,
                ResourceKind::of_member(number),
                number,
                &format!(
                    "has a change of pool {} that was left unfinished and has been settled; send the request again",
                    p.pool_id
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `UpdatePool`: the given members change; two-way messaging needs a channel.
    fn decide_update(&self, command: &Command<PoolAction>, changes: &PoolChanges) -> Result<Vec<PoolEvent>, Rejection> {
        let p = self.live(command)?;
        // "By default this is set to false. When set to true you can receive incoming
        // text messages": two-way needs a channel to deliver them to.
        let two_way = changes.two_way_enabled.unwrap_or(p.two_way_enabled);
        let channel = changes.two_way_channel_arn.as_ref().or(p.two_way_channel_arn.as_ref());
        if two_way && channel.is_none() {
            return Err(Rejection::validation(
                super::types::ValidationReason::TwoWayChannelNotPresent,
                "TwoWayChannelArn",
                "TwoWayEnabled requires a TwoWayChannelArn",
            ));
        }
        Ok(vec![PoolEvent::PoolUpdated(changes.clone())])
    }
}

impl Aggregate for PoolState {
    type Action = PoolAction;
    type Event = PoolEvent;
    const KIND: ResourceKind = KIND;

    fn decide(&self, command: &Command<PoolAction>) -> Result<Vec<PoolEvent>, Rejection> {
        let conflict = |reason, id: &str, why: &str| Err(Rejection::conflict(reason, KIND, id, why));
        match &command.action {
            PoolAction::Create(pool) => match &self.0 {
                None => {
                    // "Tag keys must be unique per resource": as TagResource would put them.
                    let tags = tags::tagged(&[], &pool.tags, &pool.pool_arn)?;
                    Ok(vec![PoolEvent::PoolCreated(Box::new(Pool { tags, ..(**pool).clone() }))])
                }
                Some(p) if p.foreclosed => conflict(
                    ConflictReason::ResourceNotActive,
                    &p.pool_id,
                    "was given up before it was created: the request took too long",
                ),
                Some(p) => conflict(ConflictReason::ResourceAlreadyExists, &p.pool_id, "already exists"),
            },
            PoolAction::AddMember(member) => {
                let p = self.live(command)?;
                Self::not_fenced(p, &member.origination_identity, command)?;
                if p.members.contains_key(&member.origination_identity) {
                    return conflict(
                        ConflictReason::ResourceAlreadyAssociated,
                        &p.pool_id,
                        &format!("already holds {}", member.origination_identity),
                    );
                }
                if p.message_type != member.message_type {
                    return conflict(
                        ConflictReason::MessageTypeMismatch,
                        &p.pool_id,
                        &format!(
                            "has message type {} but {} has {}",
                            p.message_type, member.origination_identity, member.message_type
                        ),
                    );
                }
                let mismatch = member.shared_settings.as_ref().and_then(|s| p.shared_settings().mismatch(s));
                if let Some((reason, why)) = mismatch {
                    return conflict(
                        reason,
                        &p.pool_id,
                        &format!("does not match {}: it {why}", member.origination_identity),
                    );
                }
                Ok(vec![PoolEvent::OriginationIdentityAssociated(member.clone())])
            }
            PoolAction::RemoveMember { origination_identity } => {
                let p = self.live(command)?;
                Self::not_fenced(p, origination_identity, command)?;
                if !p.members.contains_key(origination_identity) {
                    return Err(Rejection::conflict(
                        ConflictReason::PhoneNumberNotAssociatedToPool,
                        ResourceKind::of_member(origination_identity),
                        origination_identity,
                        &format!("is not associated with pool {}", p.pool_id),
                    ));
                }
                if p.members.len() == 1 {
                    return conflict(
                        ConflictReason::LastPhoneNumber,
                        &p.pool_id,
                        &format!("would be left empty: {origination_identity} is its last phone number"),
                    );
                }
                Ok(vec![PoolEvent::OriginationIdentityDisassociated {
                    origination_identity: origination_identity.clone(),
                }])
            }
            PoolAction::Delete => {
                let p = self.live(command)?;
                if p.deletion_protection_enabled {
                    return conflict(
                        ConflictReason::DeletionProtectionEnabled,
                        &p.pool_id,
                        "has deletion protection enabled",
                    );
                }
                Ok(vec![PoolEvent::PoolDeleted {
                    members: p.members.keys().cloned().collect(),
                }])
            }
            PoolAction::Fence {
                origination_identity,
                begun_before_ms,
            } => match &self.0 {
                // A pool that is gone takes no step anyway.
                Some(p) if !p.deleted && p.fenced.get(origination_identity).is_none_or(|f| f < begun_before_ms) => {
                    Ok(vec![PoolEvent::ChangesFenced {
                        origination_identity: origination_identity.clone(),
                        begun_before_ms: *begun_before_ms,
                    }])
                }
                // A pool never created is foreclosed: its late creation is refused.
                None => Ok(vec![PoolEvent::CreationForeclosed {
                    pool_id: command.target.clone(),
                    account: command.meta.scope.account.clone(),
                    region: command.meta.scope.region.clone(),
                    origination_identity: origination_identity.clone(),
                    begun_before_ms: *begun_before_ms,
                }]),
                _ => Ok(vec![]),
            },
            PoolAction::UpdateNamingList { changes, list_exists } => {
                self.live(command)?;
                match (list_exists, &changes.opt_out_list_name) {
                    (false, Some(list)) => Err(Rejection::not_found(ResourceKind::OptOutList, list)),
                    _ => self.decide_update(command, changes),
                }
            }
            PoolAction::Update(changes) => self.decide_update(command, changes),
            PoolAction::PutKeyword { keyword, quota } => {
                let p = self.live(command)?;
                Ok(keywords::put(&p.keywords, keyword, *quota, true)?
                    .map(PoolEvent::KeywordPut)
                    .into_iter()
                    .collect())
            }
            PoolAction::DeleteKeyword { keyword } => {
                let p = self.live(command)?;
                let gone = keywords::delete(&p.keywords, keyword)?;
                Ok(vec![PoolEvent::KeywordDeleted { keyword: gone.keyword }])
            }
            PoolAction::Tag { tags } => {
                let p = self.live(command)?;
                edited(&p.tags, TagEdit::Put(tags), &p.pool_arn, |tags| PoolEvent::TagsChanged { tags })
            }
            PoolAction::Untag { keys } => {
                let p = self.live(command)?;
                edited(&p.tags, TagEdit::Remove(keys), &p.pool_arn, |tags| PoolEvent::TagsChanged { tags })
            }
        }
    }

    fn entries(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.members.len() as u64)
    }

    fn evolve(self, event: &PoolEvent) -> Self {
        let Some(mut p) = self.0 else {
            return match event {
                PoolEvent::PoolCreated(pool) => PoolState(Some((**pool).clone())),
                PoolEvent::CreationForeclosed {
                    pool_id,
                    account,
                    region,
                    origination_identity,
                    begun_before_ms,
                } => PoolState(Some(Pool::foreclosed(
                    pool_id,
                    account,
                    region,
                    origination_identity,
                    *begun_before_ms,
                ))),
                _ => PoolState(None),
            };
        };
        match event {
            PoolEvent::PoolCreated(pool) => p = (**pool).clone(),
            PoolEvent::OriginationIdentityAssociated(m) => {
                let record = PoolMember {
                    shared_settings: None,
                    ..m.clone()
                };
                p.members.insert(m.origination_identity.clone(), record);
            }
            PoolEvent::OriginationIdentityDisassociated { origination_identity } => {
                p.members.remove(origination_identity);
            }
            PoolEvent::PoolDeleted { .. } => {
                p.deleted = true;
                p.status = PoolStatus::Deleting;
                p.members.clear();
            }
            PoolEvent::ChangesFenced {
                origination_identity,
                begun_before_ms,
            } => {
                let fence = p.fenced.entry(origination_identity.clone()).or_default();
                *fence = (*fence).max(*begun_before_ms);
            }
            PoolEvent::TagsChanged { tags } => p.tags = tags.clone(),
            PoolEvent::KeywordPut(k) => {
                p.keywords.insert(keywords::key_of(&k.keyword), k.clone());
            }
            PoolEvent::KeywordDeleted { keyword } => {
                p.keywords.remove(&keywords::key_of(keyword));
            }
            PoolEvent::PoolUpdated(c) => {
                changed(&mut p.deletion_protection_enabled, &c.deletion_protection_enabled);
                changed(&mut p.opt_out_list_name, &c.opt_out_list_name);
                changed(&mut p.self_managed_opt_outs_enabled, &c.self_managed_opt_outs_enabled);
                changed(&mut p.shared_routes_enabled, &c.shared_routes_enabled);
                changed_optional(&mut p.two_way_channel_arn, &c.two_way_channel_arn);
                changed_optional(&mut p.two_way_channel_role, &c.two_way_channel_role);
                changed(&mut p.two_way_enabled, &c.two_way_enabled);
            }
            // Decided only where there is no pool.
            PoolEvent::CreationForeclosed { .. }
            | PoolEvent::AssociationRejected { .. }
            | PoolEvent::DisassociationRejected { .. }
            | PoolEvent::DeletionRejected { .. }
            | PoolEvent::CommandRejected { .. } => {}
        }
        PoolState(Some(p))
    }

    fn rejection_in(event: &PoolEvent) -> Option<&Rejection> {
        match event {
            PoolEvent::AssociationRejected { reason, .. }
            | PoolEvent::DisassociationRejected { reason, .. }
            | PoolEvent::DeletionRejected { reason }
            | PoolEvent::CommandRejected { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn rejected(action: &PoolAction, rejection: &Rejection) -> PoolEvent {
        let reason = rejection.clone();
        match action {
            PoolAction::AddMember(m) => PoolEvent::AssociationRejected {
                origination_identity: m.origination_identity.clone(),
                reason,
            },
            PoolAction::RemoveMember { origination_identity } => PoolEvent::DisassociationRejected {
                origination_identity: origination_identity.clone(),
                reason,
            },
            PoolAction::Delete => PoolEvent::DeletionRejected { reason },
            other => PoolEvent::CommandRejected {
                command: other.name().to_string(),
                reason,
            },
        }
    }
}

/// Given/when/then tests of the pool rules.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{given, ACCOUNT, REGION};
    use crate::domain::types::ResourceType;

    const POOL: &str = "pool-0123456789abcdef0123456789abcdef";

    fn member(n: u8, message_type: MessageType) -> PoolMember {
        let id = format!("phone-{:032x}", n);
        PoolMember {
            origination_identity_arn: format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:phone-number/{id}"),
            origination_identity: id,
            iso_country_code: "US".into(),
            number_capabilities: vec![NumberCapability::Sms],
            phone_number: format!("+1206555010{n}"),
            message_type,
            sender_id: None,
            shared_settings: None,
        }
    }

    fn pool(protected: bool) -> Pool {
        Pool {
            deletion_protection_enabled: protected,
            ..Pool::example(POOL, &Scope::new(ACCOUNT, REGION), vec![member(1, MessageType::Transactional)])
        }
    }

    fn created(protected: bool) -> PoolEvent {
        PoolEvent::PoolCreated(Box::new(pool(protected)))
    }

    fn is_conflict(reason: ConflictReason) -> impl Fn(&Rejection) -> bool {
        move |r| matches!(r, Rejection::Conflict { reason: got, .. } if *got == reason)
    }

    /// CreatePool: "you must specify an origination identity": a pool starts with one member.
    #[test]
    fn a_pool_is_created_with_its_first_member() {
        let s = given::<PoolState>(POOL, &[])
            .when(PoolAction::Create(Box::new(pool(false))))
            .then(&[created(false)]);
        assert_eq!(s.0.map(|p| p.members.len()), Some(1));
    }

    #[test]
    fn a_pool_is_created_once() {
        given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::Create(Box::new(pool(true))))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyExists));
    }

    #[test]
    fn members_must_share_the_message_type() {
        given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::AddMember(member(2, MessageType::Promotional)))
            .then_reject(is_conflict(ConflictReason::MessageTypeMismatch));
        let m = member(2, MessageType::Transactional);
        let s = given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::AddMember(m.clone()))
            .then(&[PoolEvent::OriginationIdentityAssociated(m)]);
        assert_eq!(s.0.map(|p| p.members.len()), Some(2));
    }

    /// The phone-pool guide: "The configuration of every phone number that you add to a pool
    /// has to match the configuration of the first phone number ...". The pool checks the
    /// joining number's settings against its own as they are when it records the member (the
    /// request read them earlier, perhaps from a lagging view, perhaps before an `UpdatePool`),
    /// and keeps no copy of them.
    #[test]
    fn a_joining_numbers_settings_must_match_the_pools_now() {
        let settings = pool(false).shared_settings();
        type Edit = fn(&mut SharedSettings);
        let joining = |edit: Edit| {
            let mut own = settings.clone();
            edit(&mut own);
            PoolMember {
                shared_settings: Some(own),
                ..member(2, MessageType::Transactional)
            }
        };
        let cases: [(Edit, ConflictReason); 3] = [
            (|s| s.opt_out_list_name = "Other".into(), ConflictReason::OptOutListMismatch),
            (
                |s| s.self_managed_opt_outs_enabled = true,
                ConflictReason::SelfManagedOptOutsMismatch,
            ),
            (|s| s.two_way_enabled = true, ConflictReason::TwoWayConfigMismatch),
        ];
        for (edit, reason) in cases {
            given::<PoolState>(POOL, &[created(false)])
                .when(PoolAction::AddMember(joining(edit)))
                .then_reject(is_conflict(reason));
        }
        let matching = joining(|_| {});
        let s = given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::AddMember(matching.clone()))
            .then(&[PoolEvent::OriginationIdentityAssociated(matching.clone())]);
        let kept = s.0.and_then(|p| p.members.get(&matching.origination_identity).cloned());
        assert_eq!(kept.map(|m| m.shared_settings), Some(None));
    }

    #[test]
    fn a_member_cannot_join_twice() {
        given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::AddMember(member(1, MessageType::Transactional)))
            .then_reject(is_conflict(ConflictReason::ResourceAlreadyAssociated));
    }

    /// DisassociateOriginationIdentity: the last phone number of a pool cannot leave it.
    #[test]
    fn the_last_member_cannot_leave() {
        let id = member(1, MessageType::Transactional).origination_identity;
        given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::RemoveMember {
                origination_identity: id.clone(),
            })
            .then_reject(is_conflict(ConflictReason::LastPhoneNumber));
        let second = member(2, MessageType::Transactional);
        given::<PoolState>(POOL, &[created(false), PoolEvent::OriginationIdentityAssociated(second)])
            .when(PoolAction::RemoveMember {
                origination_identity: id.clone(),
            })
            .then(&[PoolEvent::OriginationIdentityDisassociated { origination_identity: id }]);
    }

    /// A reconciler settles a pool change that was left alone: it fences the pool, and a step of
    /// that change arriving later (its request began before the fence) is refused, so the pool
    /// cannot change under the reconciler's decision. Changes begun after it go through.
    #[test]
    fn a_fenced_change_takes_no_late_step() {
        let second = member(2, MessageType::Transactional);
        let id = second.origination_identity.clone();
        let at = crate::domain::testing::meta(ACCOUNT).at_ms;
        let history = [created(false), PoolEvent::OriginationIdentityAssociated(second.clone())];
        let fenced = PoolEvent::ChangesFenced {
            origination_identity: id.clone(),
            begun_before_ms: at,
        };
        given::<PoolState>(POOL, &history)
            .when(PoolAction::Fence {
                origination_identity: id.clone(),
                begun_before_ms: at,
            })
            .then(std::slice::from_ref(&fenced));
        let after_fence = [history[0].clone(), history[1].clone(), fenced.clone()];
        // The late step of the given-up change (its request began at `at`) is refused.
        given::<PoolState>(POOL, &after_fence)
            .when(PoolAction::RemoveMember {
                origination_identity: id.clone(),
            })
            .then_reject(is_conflict(ConflictReason::ResourceModificationNotAllowed));
        // Fencing again at the same time or earlier changes nothing.
        given::<PoolState>(POOL, &after_fence)
            .when(PoolAction::Fence {
                origination_identity: id.clone(),
                begun_before_ms: at - 5,
            })
            .then(&[]);
        // A change begun after the fence goes through, and other numbers are not fenced.
        let earlier_fence = PoolEvent::ChangesFenced {
            origination_identity: id.clone(),
            begun_before_ms: at - 1,
        };
        given::<PoolState>(POOL, &[history[0].clone(), history[1].clone(), earlier_fence])
            .when(PoolAction::RemoveMember {
                origination_identity: id.clone(),
            })
            .then(&[PoolEvent::OriginationIdentityDisassociated { origination_identity: id }]);
        // A join fenced before it reached the pool is refused too, naming the member's kind.
        let joining = member(3, MessageType::Transactional);
        let sender = PoolMember {
            origination_identity: format!("senderid-{:032x}", 4),
            ..member(4, MessageType::Transactional)
        };
        for (m, kind) in [(joining, ResourceType::PhoneNumber), (sender, ResourceType::SenderId)] {
            let fence = PoolEvent::ChangesFenced {
                origination_identity: m.origination_identity.clone(),
                begun_before_ms: at,
            };
            given::<PoolState>(POOL, &[history[0].clone(), fence])
                .when(PoolAction::AddMember(m.clone()))
                .then_reject(|r| {
                    matches!(r, Rejection::Conflict { reason: ConflictReason::ResourceModificationNotAllowed, resource_type, resource_id, .. }
                        if *resource_type == kind && *resource_id == m.origination_identity)
                });
        }
        given::<PoolState>(POOL, &after_fence)
            .when(PoolAction::AddMember(member(3, MessageType::Transactional)))
            .then(&[PoolEvent::OriginationIdentityAssociated(member(3, MessageType::Transactional))]);
        // A deleted pool takes no step anyway: nothing to fence.
        let deleted = PoolEvent::PoolDeleted {
            members: vec![
                member(1, MessageType::Transactional).origination_identity,
                second.origination_identity.clone(),
            ],
        };
        given::<PoolState>(POOL, &[history[0].clone(), history[1].clone(), deleted])
            .when(PoolAction::Fence {
                origination_identity: second.origination_identity,
                begun_before_ms: at,
            })
            .then(&[]);
    }

    /// A fence on a pool that was never created (a `CreatePool` given up between its member's
    /// first step and the pool's creation) forecloses it: the stream records a deleted pool with
    /// no members, its late creation is refused, and nothing else is taken there.
    #[test]
    fn a_pool_never_created_is_foreclosed() {
        let at = crate::domain::testing::meta(ACCOUNT).at_ms;
        let foreclosed = PoolEvent::CreationForeclosed {
            pool_id: POOL.into(),
            account: ACCOUNT.into(),
            region: REGION.into(),
            origination_identity: "phone-1".into(),
            begun_before_ms: at,
        };
        let state = given::<PoolState>(POOL, &[])
            .when(PoolAction::Fence {
                origination_identity: "phone-1".into(),
                begun_before_ms: at,
            })
            .then(std::slice::from_ref(&foreclosed));
        let pool = state.0.expect("a record of the pool");
        assert!(pool.deleted && pool.foreclosed && pool.members.is_empty());
        let PoolEvent::PoolCreated(creation) = created(false) else {
            panic!("a creation")
        };
        given::<PoolState>(POOL, std::slice::from_ref(&foreclosed))
            .when(PoolAction::Create(creation))
            .then_reject(is_conflict(ConflictReason::ResourceNotActive));
        given::<PoolState>(POOL, std::slice::from_ref(&foreclosed))
            .when(PoolAction::AddMember(member(2, MessageType::Transactional)))
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
        given::<PoolState>(POOL, std::slice::from_ref(&foreclosed))
            .when(PoolAction::Fence {
                origination_identity: "phone-1".into(),
                begun_before_ms: at,
            })
            .then(&[]);
    }

    /// The refusal names the resource that is not a member, by its own kind.
    #[test]
    fn removing_a_non_member_is_a_conflict() {
        let sender = format!("senderid-{:032x}", 9);
        for (id, kind) in [
            (
                member(9, MessageType::Transactional).origination_identity,
                ResourceType::PhoneNumber,
            ),
            (sender, ResourceType::SenderId),
        ] {
            given::<PoolState>(POOL, &[created(false)])
                .when(PoolAction::RemoveMember {
                    origination_identity: id.clone(),
                })
                .then_reject(|r| {
                    matches!(r, Rejection::Conflict { reason: ConflictReason::PhoneNumberNotAssociatedToPool, resource_type, resource_id, .. }
                        if *resource_type == kind && *resource_id == id)
                });
        }
    }

    /// DeletePool: "If the pool has deletion protection enabled an error is returned."
    #[test]
    fn deletion_honours_protection_and_lists_members() {
        given::<PoolState>(POOL, &[created(true)])
            .when(PoolAction::Delete)
            .then_reject(is_conflict(ConflictReason::DeletionProtectionEnabled));
        let members = vec![member(1, MessageType::Transactional).origination_identity];
        let s = given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::Delete)
            .then(&[PoolEvent::PoolDeleted { members }]);
        assert!(s.0.is_some_and(|p| p.deleted && p.members.is_empty()));
    }

    #[test]
    fn a_deleted_or_foreign_pool_is_not_found() {
        let deleted = [created(false), PoolEvent::PoolDeleted { members: vec![] }];
        given::<PoolState>(POOL, &deleted)
            .when(PoolAction::AddMember(member(2, MessageType::Transactional)))
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::NotFound {
                        resource_type: ResourceType::Pool,
                        ..
                    }
                )
            });
        given::<PoolState>(POOL, &[created(false)])
            .by_account("444455556666")
            .when(PoolAction::Delete)
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::NotFound {
                        resource_type: ResourceType::Pool,
                        ..
                    }
                )
            });
    }

    /// UpdatePool changes only the members given; deletion protection then guards DeletePool.
    #[test]
    fn an_update_changes_the_given_members() {
        let changes = PoolChanges {
            deletion_protection_enabled: Some(true),
            opt_out_list_name: Some("vip".into()),
            ..Default::default()
        };
        let s = given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::Update(changes.clone()))
            .then(&[PoolEvent::PoolUpdated(changes.clone())]);
        let p = s.0.expect("pool");
        assert!(p.deletion_protection_enabled);
        assert_eq!(p.opt_out_list_name, "vip");
        assert!(!p.two_way_enabled, "untouched");
        given::<PoolState>(POOL, &[created(false), PoolEvent::PoolUpdated(changes)])
            .when(PoolAction::Delete)
            .then_reject(is_conflict(ConflictReason::DeletionProtectionEnabled));
    }

    /// "TwoWayEnabled ... you can receive incoming text messages": not without a channel.
    #[test]
    fn two_way_needs_a_channel() {
        given::<PoolState>(POOL, &[created(false)])
            .when(PoolAction::Update(PoolChanges {
                two_way_enabled: Some(true),
                ..Default::default()
            }))
            .then_reject(|r| matches!(r, Rejection::Validation { field, .. } if field == "TwoWayChannelArn"));
        given::<PoolState>(POOL, &[])
            .when(PoolAction::Update(PoolChanges::default()))
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
    }
}
