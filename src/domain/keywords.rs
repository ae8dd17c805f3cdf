//! Keywords on an origination identity (a phone number or a pool): words an end user can send to
//! it, each with a response message and an action. Rules as AWS documents them:
//! - PutKeyword "creates or updates a keyword configuration"; the number of keywords is limited
//!   (`KEYWORDS_PER_PHONE_NUMBER`, `KEYWORDS_PER_POOL`);
//! - DeleteKeyword: "Keywords "HELP" and "STOP" can't be deleted or modified."; deleting a keyword
//!   that is not there is "not found".
//!
//! Keywords are matched without regard to case, so `stop` is the `STOP` keyword.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{ConflictReason, QuotaReason, ResourceType};
use super::Rejection;

super::types::wire_enum!(
    /// `KeywordAction`.
    KeywordAction { AutomaticResponse = "AUTOMATIC_RESPONSE", OptOut = "OPT_OUT", OptIn = "OPT_IN" }
);

/// One keyword's configuration (`KeywordInformation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Keyword {
    pub keyword: String,
    pub keyword_message: String,
    pub keyword_action: KeywordAction,
}

/// The keywords every origination identity has, which cannot be changed.
pub fn defaults() -> [Keyword; 2] {
    [
        Keyword {
            keyword: "HELP".into(),
            keyword_message: "Reply STOP to stop receiving messages from this number.".into(),
            keyword_action: KeywordAction::AutomaticResponse,
        },
        Keyword {
            keyword: "STOP".into(),
            keyword_message: "You have been unsubscribed and will receive no more messages from this number.".into(),
            keyword_action: KeywordAction::OptOut,
        },
    ]
}

/// The key a keyword is kept under (keywords are matched without regard to case).
pub fn key_of(keyword: &str) -> String {
    keyword.to_uppercase()
}

fn is_default(keyword: &str) -> bool {
    defaults().iter().any(|d| d.keyword == key_of(keyword))
}

/// Every keyword of an identity that holds `custom`: the defaults, then its own, by keyword.
pub fn all(custom: &BTreeMap<String, Keyword>) -> Vec<Keyword> {
    let mut all: Vec<Keyword> = defaults().into_iter().chain(custom.values().cloned()).collect();
    all.sort_by_key(|k| key_of(&k.keyword));
    all
}

/// The keyword an end user's message is, if it is one: its body, trimmed, matched without regard
/// to case against the number's own keywords, then those it has from its pool (`inherited`),
/// then HELP and STOP.
pub fn matching(body: &str, own: &BTreeMap<String, Keyword>, inherited: &BTreeMap<String, Keyword>) -> Option<Keyword> {
    let key = key_of(body.trim());
    own.get(&key)
        .or_else(|| inherited.get(&key))
        .cloned()
        .or_else(|| defaults().into_iter().find(|d| d.keyword == key))
}

/// `PutKeyword` on an identity holding `custom`, at most `quota` of its own: the keyword as it
/// will be, or `None` when it is already exactly that.
pub fn put(custom: &BTreeMap<String, Keyword>, wanted: &Keyword, quota: u64, on_pool: bool) -> Result<Option<Keyword>, Rejection> {
    if is_default(&wanted.keyword) {
        return Err(Rejection::Conflict {
            reason: ConflictReason::ResourceModificationNotAllowed,
            resource_type: ResourceType::Keyword,
            resource_id: key_of(&wanted.keyword),
            message: format!("keyword {} cannot be deleted or modified", key_of(&wanted.keyword)),
        });
    }
    match custom.get(&key_of(&wanted.keyword)) {
        Some(have) if have == wanted => Ok(None),
        Some(_) => Ok(Some(wanted.clone())),
        None if custom.len() as u64 >= quota => Err(Rejection::QuotaExceeded {
            reason: if on_pool {
                QuotaReason::KeywordsPerPool
            } else {
                QuotaReason::KeywordsPerPhoneNumber
            },
            message: format!("an origination identity holds at most {quota} keywords of its own"),
        }),
        None => Ok(Some(wanted.clone())),
    }
}

/// `DeleteKeyword`: the keyword that goes.
pub fn delete(custom: &BTreeMap<String, Keyword>, keyword: &str) -> Result<Keyword, Rejection> {
    if is_default(keyword) {
        return Err(Rejection::Conflict {
            reason: ConflictReason::ResourceDeletionNotAllowed,
            resource_type: ResourceType::Keyword,
            resource_id: key_of(keyword),
            message: format!("keyword {} cannot be deleted or modified", key_of(keyword)),
        });
    }
    custom.get(&key_of(keyword)).cloned().ok_or_else(|| Rejection::NotFound {
        resource_type: ResourceType::Keyword,
        resource_id: keyword.to_string(),
        message: format!("keyword {keyword} does not exist"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(k: &str, m: &str) -> Keyword {
        Keyword {
            keyword: k.into(),
            keyword_message: m.into(),
            keyword_action: KeywordAction::AutomaticResponse,
        }
    }

    /// PutKeyword "creates or updates"; the same configuration again changes nothing.
    #[test]
    fn a_keyword_is_created_then_updated() {
        let mut custom = BTreeMap::new();
        let info = put(&custom, &kw("INFO", "hours: 9-5"), 5, false).expect("create").expect("changed");
        custom.insert(key_of("INFO"), info);
        assert_eq!(put(&custom, &kw("INFO", "hours: 9-5"), 5, false).expect("same"), None);
        assert!(
            put(&custom, &kw("info", "hours: 8-6"), 5, false).expect("update").is_some(),
            "matched without case"
        );
    }

    /// An end user's message is a keyword when its body is one, in any case; the number's own
    /// keywords come before its pool's, and HELP and STOP are always there.
    #[test]
    fn an_inbound_message_matches_a_keyword() {
        let own: BTreeMap<String, Keyword> = [(key_of("INFO"), kw("INFO", "ours"))].into_iter().collect();
        let pool: BTreeMap<String, Keyword> = [(key_of("INFO"), kw("INFO", "pool's")), (key_of("JOIN"), kw("JOIN", "joined"))]
            .into_iter()
            .collect();
        assert_eq!(matching(" info ", &own, &pool).map(|k| k.keyword_message), Some("ours".into()));
        assert_eq!(matching("join", &own, &pool).map(|k| k.keyword_message), Some("joined".into()));
        assert_eq!(matching("Stop", &own, &pool).map(|k| k.keyword_action), Some(KeywordAction::OptOut));
        assert_eq!(matching("stop please", &own, &pool), None);
    }

    /// "Keywords "HELP" and "STOP" can't be deleted or modified."
    #[test]
    fn help_and_stop_stay() {
        assert!(matches!(
            put(&BTreeMap::new(), &kw("stop", "bye"), 5, false),
            Err(Rejection::Conflict {
                reason: ConflictReason::ResourceModificationNotAllowed,
                ..
            })
        ));
        assert!(matches!(
            delete(&BTreeMap::new(), "HELP"),
            Err(Rejection::Conflict {
                reason: ConflictReason::ResourceDeletionNotAllowed,
                ..
            })
        ));
        assert_eq!(all(&BTreeMap::new()).len(), 2);
    }

    /// The keyword quota (KEYWORDS_PER_PHONE_NUMBER / KEYWORDS_PER_POOL), and deleting what is
    /// not there.
    #[test]
    fn the_quota_holds_and_unknown_keywords_are_not_found() {
        let custom: BTreeMap<String, Keyword> = [(key_of("A"), kw("A", "a"))].into_iter().collect();
        assert!(matches!(
            put(&custom, &kw("B", "b"), 1, true),
            Err(Rejection::QuotaExceeded {
                reason: QuotaReason::KeywordsPerPool,
                ..
            })
        ));
        assert!(put(&custom, &kw("A", "changed"), 1, true).is_ok(), "updating is not adding");
        assert!(matches!(
            delete(&custom, "B"),
            Err(Rejection::NotFound {
                resource_type: ResourceType::Keyword,
                ..
            })
        ));
        assert_eq!(delete(&custom, "a").expect("deleted").keyword, "A");
    }
}
