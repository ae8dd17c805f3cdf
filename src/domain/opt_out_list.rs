//! The opt-out list aggregate: a named list of destination numbers that must not be sent to, per
//! account and region. Rules as AWS documents them:
//! - CreateOptOutList: "If the opt-out list name already exists, an error is returned."
//! - DeleteOptOutList: "All opted out phone numbers in the opt-out list are deleted. If the
//!   specified opt-out list name doesn't exist or is in-use by an origination phone number or
//!   pool, an error is returned." The account's `Default` list is not deleted.
//! - PutOptedOutNumber: "If the destination phone number isn't valid or if the specified opt-out
//!   list doesn't exist, an error is returned."
//! - DeleteOptedOutNumber: "Each destination phone number can only be deleted once every 30 days.
//!   If the specified destination phone number doesn't exist or if the opt-out list doesn't
//!   exist, an error is returned."
//!
//! Whether a number or pool uses the list is not in this aggregate: the shell tells the decider
//! what it saw (`Delete { in_use }`), and the log's counter limits make the race between a
//! deletion and a number joining the list exact (see `service::opt_out_lists`).

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use super::ids::ResourceKind;
use super::tags::{self, edited, TagEdit};
use super::types::{ConflictReason, QuotaReason, Tag};
use super::{ActionName, Aggregate, Command, Rejection};

/// The name of the list every account has, used by numbers and pools that name no other.
pub const DEFAULT_LIST: &str = "Default";

/// How long after an opted-out number is deleted from a list it cannot be deleted again.
pub const DELETE_AGAIN_AFTER_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// One opted-out destination (`OptedOutNumberInformation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptedOut {
    pub opted_out_timestamp_ms: u64,
    /// True when the end user opted out (a STOP keyword), false when the account put it.
    pub end_user_opted_out: bool,
}

/// Everything known about one opt-out list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OptOutList {
    pub opt_out_list_name: String,
    pub opt_out_list_arn: String,
    pub account: String,
    pub region: String,
    pub created_timestamp_ms: u64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Set by `OptOutListDeleted`: gone for every command until created again.
    #[serde(default)]
    pub deleted: bool,
    /// Opted-out destinations by E.164 number. A persistent map: the actor keeps the state
    /// before and after each write, and a copy shares all but the changed path, so a write to
    /// a list of 50,000 numbers costs what it does on a list of 1,000 (same serialized form as
    /// a `BTreeMap`: a JSON object in key order).
    #[serde(default)]
    pub opted_out: OrdMap<String, OptedOut>,
    /// When each number was last deleted from the list (the 30-day rule).
    #[serde(default, skip_serializing_if = "OrdMap::is_empty")]
    pub deleted_at: OrdMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// How many times a list of this name was created (1 for the first): opt-outs of an earlier
    /// list of the same name are not this one's.
    #[serde(default)]
    pub incarnation: u64,
}

impl OptOutList {
    /// A new, empty list.
    pub fn new(name: &str, arn: String, account: &str, region: &str, at_ms: u64, tags: Vec<Tag>, client_token: Option<String>) -> Self {
        OptOutList {
            opt_out_list_name: name.to_string(),
            opt_out_list_arn: arn,
            account: account.to_string(),
            region: region.to_string(),
            created_timestamp_ms: at_ms,
            tags,
            deleted: false,
            opted_out: OrdMap::new(),
            deleted_at: OrdMap::new(),
            client_token,
            incarnation: 1,
        }
    }
}

/// The state of one opt-out list stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutListState(pub Option<OptOutList>);

impl OptOutListState {
    /// The list, if it exists now.
    pub fn live(&self) -> Option<&OptOutList> {
        self.0.as_ref().filter(|l| !l.deleted)
    }
}

/// What can be asked of an opt-out list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Input", rename_all_fields = "PascalCase")]
pub enum OptOutListAction {
    /// Create the list (again, after a deletion). `lists_held`: how many lists the account
    /// holds, with `quota` the most it may (checked again by the log's counter limit).
    Create {
        list: Box<OptOutList>,
        lists_held: u64,
        quota: u64,
    },
    /// Delete it; `in_use` is whether a number or pool named it when the shell looked.
    Delete {
        in_use: bool,
    },
    /// Create the account's `Default` list unless it exists (no events then): it is made the
    /// first time the account works with opt-out lists, outside the quota.
    EnsureDefault {
        list: Box<OptOutList>,
    },
    PutOptedOutNumber {
        number: String,
        end_user_opted_out: bool,
    },
    DeleteOptedOutNumber {
        number: String,
    },
    /// The end user sent an opt-in keyword: off the list, whenever it is (the 30-day rule is
    /// the account's, not the end user's).
    EndUserOptedIn {
        number: String,
    },
    Tag {
        tags: Vec<Tag>,
    },
    Untag {
        keys: Vec<String>,
    },
}

impl ActionName for OptOutListAction {
    fn name(&self) -> &'static str {
        match self {
            OptOutListAction::Create { .. } => "Create",
            OptOutListAction::Delete { .. } => "Delete",
            OptOutListAction::EnsureDefault { .. } => "EnsureDefault",
            OptOutListAction::PutOptedOutNumber { .. } => "PutOptedOutNumber",
            OptOutListAction::DeleteOptedOutNumber { .. } => "DeleteOptedOutNumber",
            OptOutListAction::EndUserOptedIn { .. } => "EndUserOptedIn",
            OptOutListAction::Tag { .. } => "Tag",
            OptOutListAction::Untag { .. } => "Untag",
        }
    }
}

/// What happened to an opt-out list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", content = "Payload", rename_all_fields = "PascalCase")]
pub enum OptOutListEvent {
    OptOutListCreated(Box<OptOutList>),
    /// The list is gone, with the `opted_out` numbers it held.
    OptOutListDeleted {
        opted_out: u64,
    },
    NumberOptedOut {
        number: String,
        #[serde(flatten)]
        entry: OptedOut,
    },
    /// The end user opted back in (an opt-in keyword): off the list, with no 30-day mark.
    EndUserOptedIn {
        number: String,
    },
    OptedOutNumberDeleted {
        number: String,
        at_ms: u64,
    },
    /// The list's tags after a TagResource or UntagResource.
    TagsChanged {
        tags: Vec<Tag>,
    },
    CommandRejected {
        command: String,
        #[serde(rename = "Rejection")]
        reason: Rejection,
    },
}

const KIND: ResourceKind = ResourceKind::OptOutList;

impl OptOutListState {
    fn existing<'a>(&'a self, command: &Command<OptOutListAction>) -> Result<&'a OptOutList, Rejection> {
        match (self.live(), &self.0) {
            (Some(l), _) if l.account == command.meta.scope.account && l.region == command.meta.scope.region => Ok(l),
            // A list is known by its name, not its stream id.
            (_, Some(l)) => Err(Rejection::not_found(KIND, &l.opt_out_list_name)),
            (_, None) => Err(Rejection::not_found(KIND, &command.target)),
        }
    }
}

/// The opted-out number `number` of `list` is not there.
fn number_not_found(number: &str, list: &OptOutList) -> Rejection {
    Rejection::NotFound {
        resource_type: super::types::ResourceType::OptedOutNumber,
        resource_id: number.to_string(),
        message: format!("{number} is not in opt-out list {}", list.opt_out_list_name),
    }
}

impl Aggregate for OptOutListState {
    type Action = OptOutListAction;
    type Event = OptOutListEvent;
    const KIND: ResourceKind = KIND;

    fn decide(&self, command: &Command<OptOutListAction>) -> Result<Vec<OptOutListEvent>, Rejection> {
        let conflict = |reason, name: &str, why: &str| Err(Rejection::conflict(reason, KIND, name, why));
        match &command.action {
            OptOutListAction::Create { list, lists_held, quota } => {
                if let Some(l) = self.live() {
                    return conflict(ConflictReason::ResourceAlreadyExists, &l.opt_out_list_name, "already exists");
                }
                if lists_held >= quota {
                    return Err(Rejection::QuotaExceeded {
                        reason: QuotaReason::OptOutListsPerAccount,
                        message: format!("account {} already holds {quota} opt-out lists in {}", list.account, list.region),
                    });
                }
                // "Tag keys must be unique per resource": as TagResource would put them.
                let tags = tags::tagged(&[], &list.tags, &list.opt_out_list_arn)?;
                Ok(vec![OptOutListEvent::OptOutListCreated(Box::new(OptOutList {
                    tags,
                    ..(**list).clone()
                }))])
            }
            OptOutListAction::EnsureDefault { list } => Ok(match self.live() {
                Some(_) => vec![],
                None => vec![OptOutListEvent::OptOutListCreated(list.clone())],
            }),
            OptOutListAction::Delete { in_use } => {
                let l = self.existing(command)?;
                if l.opt_out_list_name == DEFAULT_LIST {
                    return conflict(
                        ConflictReason::ResourceDeletionNotAllowed,
                        &l.opt_out_list_name,
                        "is the account's default opt-out list and cannot be deleted",
                    );
                }
                if *in_use {
                    return conflict(
                        ConflictReason::ResourceDeletionNotAllowed,
                        &l.opt_out_list_name,
                        "is in use by a phone number or pool",
                    );
                }
                Ok(vec![OptOutListEvent::OptOutListDeleted {
                    opted_out: l.opted_out.len() as u64,
                }])
            }
            OptOutListAction::PutOptedOutNumber {
                number,
                end_user_opted_out,
            } => {
                let l = self.existing(command)?;
                // Already there: the entry stands as it is (the call answers it).
                if l.opted_out.contains_key(number) {
                    return Ok(vec![]);
                }
                Ok(vec![OptOutListEvent::NumberOptedOut {
                    number: number.clone(),
                    entry: OptedOut {
                        opted_out_timestamp_ms: command.meta.at_ms,
                        end_user_opted_out: *end_user_opted_out,
                    },
                }])
            }
            OptOutListAction::DeleteOptedOutNumber { number } => {
                let l = self.existing(command)?;
                if !l.opted_out.contains_key(number) {
                    return Err(number_not_found(number, l));
                }
                if let Some(last) = l.deleted_at.get(number) {
                    if command.meta.at_ms < last.saturating_add(DELETE_AGAIN_AFTER_MS) {
                        return Err(Rejection::Conflict {
                            reason: ConflictReason::ResourceModificationNotAllowed,
                            resource_type: super::types::ResourceType::OptedOutNumber,
                            resource_id: number.clone(),
                            message: format!(
                                "{number} was deleted from opt-out list {} less than 30 days ago; each number can be deleted once every 30 days",
                                l.opt_out_list_name
                            ),
                        });
                    }
                }
                Ok(vec![OptOutListEvent::OptedOutNumberDeleted {
                    number: number.clone(),
                    at_ms: command.meta.at_ms,
                }])
            }
            OptOutListAction::EndUserOptedIn { number } => {
                let l = self.existing(command)?;
                Ok(match l.opted_out.contains_key(number) {
                    true => vec![OptOutListEvent::EndUserOptedIn { number: number.clone() }],
                    false => vec![],
                })
            }
            OptOutListAction::Tag { tags } => {
                let l = self.existing(command)?;
                edited(&l.tags, TagEdit::Put(tags), &l.opt_out_list_arn, |tags| {
                    OptOutListEvent::TagsChanged { tags }
                })
            }
            OptOutListAction::Untag { keys } => {
                let l = self.existing(command)?;
                edited(&l.tags, TagEdit::Remove(keys), &l.opt_out_list_arn, |tags| {
                    OptOutListEvent::TagsChanged { tags }
                })
            }
        }
    }

    fn entries(&self) -> u64 {
        self.0.as_ref().map_or(0, |l| (l.opted_out.len() + l.deleted_at.len()) as u64)
    }

    fn evolve(self, event: &OptOutListEvent) -> Self {
        if let OptOutListEvent::OptOutListCreated(list) = event {
            let mut list = (**list).clone();
            list.incarnation = self.0.map_or(0, |before| before.incarnation) + 1;
            return OptOutListState(Some(list));
        }
        let Some(mut l) = self.0 else { return OptOutListState(None) };
        match event {
            OptOutListEvent::OptOutListCreated(_) => {}
            OptOutListEvent::OptOutListDeleted { .. } => {
                l.deleted = true;
                l.opted_out.clear();
                l.deleted_at.clear();
            }
            OptOutListEvent::NumberOptedOut { number, entry } => {
                l.opted_out.insert(number.clone(), entry.clone());
            }
            OptOutListEvent::OptedOutNumberDeleted { number, at_ms } => {
                l.opted_out.remove(number);
                l.deleted_at.insert(number.clone(), *at_ms);
            }
            OptOutListEvent::EndUserOptedIn { number } => {
                l.opted_out.remove(number);
            }
            OptOutListEvent::TagsChanged { tags } => l.tags = tags.clone(),
            OptOutListEvent::CommandRejected { .. } => {}
        }
        OptOutListState(Some(l))
    }

    fn rejected(action: &OptOutListAction, rejection: &Rejection) -> OptOutListEvent {
        OptOutListEvent::CommandRejected {
            command: action.name().to_string(),
            reason: rejection.clone(),
        }
    }

    fn rejection_in(event: &OptOutListEvent) -> Option<&Rejection> {
        match event {
            OptOutListEvent::CommandRejected { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Given/when/then tests of the opt-out list rules, each quoting the AWS reference.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{given, ACCOUNT, REGION};
    use crate::domain::types::ResourceType;

    fn list(name: &str) -> OptOutList {
        OptOutList::new(
            name,
            format!("arn:aws:sms-voice:{REGION}:{ACCOUNT}:opt-out-list/{name}"),
            ACCOUNT,
            REGION,
            1,
            vec![],
            None,
        )
    }

    fn created(name: &str) -> OptOutListEvent {
        OptOutListEvent::OptOutListCreated(Box::new(list(name)))
    }

    fn create(name: &str, lists_held: u64) -> OptOutListAction {
        OptOutListAction::Create {
            list: Box::new(list(name)),
            lists_held,
            quota: 3,
        }
    }

    fn put(number: &str) -> OptOutListAction {
        OptOutListAction::PutOptedOutNumber {
            number: number.into(),
            end_user_opted_out: false,
        }
    }

    fn opted_out(number: &str, at: u64) -> OptOutListEvent {
        OptOutListEvent::NumberOptedOut {
            number: number.into(),
            entry: OptedOut {
                opted_out_timestamp_ms: at,
                end_user_opted_out: false,
            },
        }
    }

    const AT: u64 = 1_700_000_000_000;
    const ID: &str = "optout-00000000000000000000000000000001";

    fn conflict(reason: ConflictReason) -> impl Fn(&Rejection) -> bool {
        move |r| matches!(r, Rejection::Conflict { reason: got, .. } if *got == reason)
    }

    /// CreateOptOutList: "If the opt-out list name already exists, an error is returned."
    #[test]
    fn a_name_is_created_once() {
        given::<OptOutListState>(ID, &[])
            .when(create("marketing", 0))
            .then(&[created("marketing")]);
        given::<OptOutListState>(ID, &[created("marketing")])
            .when(create("marketing", 1))
            .then_reject(conflict(ConflictReason::ResourceAlreadyExists));
    }

    /// The account's quota of opt-out lists (OPT_OUT_LISTS_PER_ACCOUNT).
    #[test]
    fn the_quota_of_lists_holds() {
        given::<OptOutListState>(ID, &[]).when(create("marketing", 3)).then_reject(|r| {
            matches!(
                r,
                Rejection::QuotaExceeded {
                    reason: QuotaReason::OptOutListsPerAccount,
                    ..
                }
            )
        });
    }

    /// DeleteOptOutList: "All opted out phone numbers in the opt-out list are deleted", and the
    /// name can be created again, empty.
    #[test]
    fn deleting_takes_the_numbers_with_it_and_the_name_can_come_back() {
        let history = [created("marketing"), opted_out("+12065550100", AT)];
        let s = given::<OptOutListState>(ID, &history)
            .when(OptOutListAction::Delete { in_use: false })
            .then(&[OptOutListEvent::OptOutListDeleted { opted_out: 1 }]);
        assert!(s.live().is_none());
        let deleted = [
            created("marketing"),
            opted_out("+12065550100", AT),
            OptOutListEvent::OptOutListDeleted { opted_out: 1 },
        ];
        given::<OptOutListState>(ID, &deleted).when(put("+12065550100")).then_reject(|r| {
            matches!(
                r,
                Rejection::NotFound {
                    resource_type: ResourceType::OptOutList,
                    ..
                }
            )
        });
        let again = given::<OptOutListState>(ID, &deleted)
            .when(create("marketing", 0))
            .then(&[created("marketing")]);
        assert!(again.live().is_some_and(|l| l.opted_out.is_empty()));
    }

    /// DeleteOptOutList: "If the specified opt-out list name ... is in-use by an origination
    /// phone number or pool, an error is returned."; and the Default list stays.
    #[test]
    fn a_list_in_use_and_the_default_list_are_not_deleted() {
        given::<OptOutListState>(ID, &[created("marketing")])
            .when(OptOutListAction::Delete { in_use: true })
            .then_reject(conflict(ConflictReason::ResourceDeletionNotAllowed));
        given::<OptOutListState>(ID, &[created(DEFAULT_LIST)])
            .when(OptOutListAction::Delete { in_use: false })
            .then_reject(conflict(ConflictReason::ResourceDeletionNotAllowed));
        given::<OptOutListState>(ID, &[])
            .when(OptOutListAction::Delete { in_use: false })
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
    }

    /// PutOptedOutNumber adds the number once; putting it again changes nothing.
    #[test]
    fn a_number_is_opted_out_once() {
        let s = given::<OptOutListState>(ID, &[created("marketing")])
            .when(put("+12065550100"))
            .then(&[opted_out("+12065550100", AT)]);
        assert_eq!(s.live().map(|l| l.opted_out.len()), Some(1));
        given::<OptOutListState>(ID, &[created("marketing"), opted_out("+12065550100", AT)])
            .when(put("+12065550100"))
            .then(&[]);
    }

    /// KeywordAction `OPT_IN`: an end user who sends an opt-in keyword is taken off the list,
    /// with no 30-day mark (that rule is the account's DeleteOptedOutNumber's); one not on it
    /// changes nothing.
    #[test]
    fn an_end_user_opts_back_in() {
        let opt_in = || OptOutListAction::EndUserOptedIn {
            number: "+12065550100".into(),
        };
        let s = given::<OptOutListState>(ID, &[created("marketing"), opted_out("+12065550100", AT)])
            .when(opt_in())
            .then(&[OptOutListEvent::EndUserOptedIn {
                number: "+12065550100".into(),
            }]);
        assert!(s.live().is_some_and(|l| l.opted_out.is_empty() && l.deleted_at.is_empty()));
        given::<OptOutListState>(ID, &[created("marketing")]).when(opt_in()).then(&[]);
    }

    /// DeleteOptedOutNumber: "If the specified destination phone number doesn't exist ... an
    /// error is returned", and "Each destination phone number can only be deleted once every 30
    /// days."
    #[test]
    fn a_number_is_deleted_once_every_thirty_days() {
        let delete = || OptOutListAction::DeleteOptedOutNumber {
            number: "+12065550100".into(),
        };
        given::<OptOutListState>(ID, &[created("marketing")])
            .when(delete())
            .then_reject(|r| {
                matches!(
                    r,
                    Rejection::NotFound {
                        resource_type: ResourceType::OptedOutNumber,
                        ..
                    }
                )
            });
        let deleted_yesterday = AT - 24 * 60 * 60 * 1000;
        let history = [
            created("marketing"),
            opted_out("+12065550100", 1),
            OptOutListEvent::OptedOutNumberDeleted {
                number: "+12065550100".into(),
                at_ms: deleted_yesterday,
            },
            opted_out("+12065550100", 2),
        ];
        given::<OptOutListState>(ID, &history)
            .when(delete())
            .then_reject(conflict(ConflictReason::ResourceModificationNotAllowed));
        let long_ago = [
            created("marketing"),
            opted_out("+12065550100", 1),
            OptOutListEvent::OptedOutNumberDeleted {
                number: "+12065550100".into(),
                at_ms: AT - DELETE_AGAIN_AFTER_MS,
            },
            opted_out("+12065550100", 2),
        ];
        given::<OptOutListState>(ID, &long_ago)
            .when(delete())
            .then(&[OptOutListEvent::OptedOutNumberDeleted {
                number: "+12065550100".into(),
                at_ms: AT,
            }]);
    }

    /// Another account's list of the same stream is not found (ids are per account anyway).
    #[test]
    fn another_accounts_list_is_not_found() {
        given::<OptOutListState>(ID, &[created("marketing")])
            .by_account("444455556666")
            .when(put("+12065550100"))
            .then_reject(|r| matches!(r, Rejection::NotFound { .. }));
    }

    /// TagResource and UntagResource on a list.
    #[test]
    fn tags_change_and_unchanged_tags_record_nothing() {
        let tag = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        let s = given::<OptOutListState>(ID, &[created("marketing")])
            .when(OptOutListAction::Tag {
                tags: vec![tag("team", "growth")],
            })
            .then(&[OptOutListEvent::TagsChanged {
                tags: vec![tag("team", "growth")],
            }]);
        assert_eq!(s.live().map(|l| l.tags.len()), Some(1));
        let history = [
            created("marketing"),
            OptOutListEvent::TagsChanged {
                tags: vec![tag("team", "growth")],
            },
        ];
        given::<OptOutListState>(ID, &history)
            .when(OptOutListAction::Tag {
                tags: vec![tag("team", "growth")],
            })
            .then(&[]);
        given::<OptOutListState>(ID, &history)
            .when(OptOutListAction::Untag { keys: vec!["team".into()] })
            .then(&[OptOutListEvent::TagsChanged { tags: vec![] }]);
    }

    /// Snapshots hold the state as JSON: the persistent maps read and write the form the
    /// earlier `BTreeMap`s wrote (an object in key order, `DeletedAt` left out when empty), so
    /// snapshots written before the change still load, and new ones read the same.
    #[test]
    fn a_list_reads_and_writes_the_json_its_snapshots_hold() {
        let written = concat!(
            r#"{"OptOutListName":"marketing","OptOutListArn":"arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/marketing","#,
            r#""Account":"111122223333","Region":"us-east-1","CreatedTimestampMs":1,"Tags":[],"Deleted":false,"#,
            r#""OptedOut":{"+12065550100":{"OptedOutTimestampMs":7,"EndUserOptedOut":true},"#,
            r#""+12065550199":{"OptedOutTimestampMs":5,"EndUserOptedOut":false}},"#,
            r#""DeletedAt":{"+12065550142":3},"Incarnation":1}"#
        );
        let mut expected = list("marketing");
        expected.account = "111122223333".into();
        expected.region = "us-east-1".into();
        expected.opt_out_list_arn = "arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/marketing".into();
        // Inserted out of order: the map, not the insertion, orders the JSON.
        let entry = |at: u64, end_user: bool| OptedOut {
            opted_out_timestamp_ms: at,
            end_user_opted_out: end_user,
        };
        expected.opted_out.insert("+12065550199".into(), entry(5, false));
        expected.opted_out.insert("+12065550100".into(), entry(7, true));
        expected.deleted_at.insert("+12065550142".into(), 3);
        let read: OptOutList = serde_json::from_str(written).expect("an earlier snapshot's list");
        assert_eq!(read, expected);
        assert_eq!(serde_json::to_string(&expected).expect("encode"), written);
        expected.deleted_at.clear();
        let without = serde_json::to_string(&expected).expect("encode");
        assert!(!without.contains("DeletedAt"), "{without}");
    }
}
