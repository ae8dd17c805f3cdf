//! Resource identifiers and ARNs: `phone-` / `pool-` followed by 32 lowercase hex digits, and
//! `arn:aws:sms-voice:REGION:ACCOUNT:phone-number/ID` (`pool/ID`), as the real service issues them.
//! Commands accept either form; an ARN naming another account or region resolves to nothing, so
//! it is reported exactly like an id that does not exist.
//!
//! An opt-out list is named by its caller (`arn:...:opt-out-list/NAME`), unique per account and
//! region. Its stream id, `optout-` and 32 hex digits of a hash of account, region and name, is
//! derived from the name, so two requests creating the same list race for one stream.
//!
//! A sender id is named the same way, by its string and country
//! (`arn:...:sender-id/SENDERID/COUNTRY`); its stream id is `senderid-` and a hash of account,
//! region, sender id and country.

use uuid::Uuid;

use super::types::ResourceType;

/// Whether `s` is a `SenderId` as `RequestSenderId` takes it: 1 to 11 letters, digits, `_` or
/// `-` (the model's pattern), at least one letter, not starting or ending with a hyphen (the
/// reference: "must contain at least one letter and cannot start or end with a hyphen").
pub fn is_sender_id(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is an `OptOutListName` (the model's pattern and length).
pub fn is_list_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a resource lives: the caller's account and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Scope {
            account: account.into(),
            region: region.into(),
        }
    }

    /// The ARN of a resource of this scope.
    pub fn arn(&self, kind: ResourceKind, id: &str) -> String {
        format!("arn:aws:sms-voice:{}:{}:{}/{}", self.region, self.account, kind.arn_segment(), id)
    }
}

/// The kinds of aggregate this service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    PhoneNumber,
    Pool,
    OptOutList,
    SenderId,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::PhoneNumber,
        ResourceKind::Pool,
        ResourceKind::OptOutList,
        ResourceKind::SenderId,
    ];

    /// Prefix of the id (`phone-`, `pool-`).
    pub fn id_prefix(self) -> &'static str {
        match self {
            ResourceKind::PhoneNumber => "phone-",
            ResourceKind::Pool => "pool-",
            ResourceKind::OptOutList => "optout-",
            ResourceKind::SenderId => "senderid-",
        }
    }

    /// Resource segment of the ARN.
    pub fn arn_segment(self) -> &'static str {
        match self {
            ResourceKind::PhoneNumber => "phone-number",
            ResourceKind::Pool => "pool",
            ResourceKind::OptOutList => "opt-out-list",
            ResourceKind::SenderId => "sender-id",
        }
    }

    /// `ResourceType` reported in errors.
    pub fn resource_type(self) -> ResourceType {
        match self {
            ResourceKind::PhoneNumber => ResourceType::PhoneNumber,
            ResourceKind::Pool => ResourceType::Pool,
            ResourceKind::OptOutList => ResourceType::OptOutList,
            ResourceKind::SenderId => ResourceType::SenderId,
        }
    }

    /// A fresh id: prefix + 32 hex digits of a random UUID.
    pub fn new_id(self) -> String {
        format!("{}{}", self.id_prefix(), Uuid::new_v4().simple())
    }

    /// Whether `s` has the shape of an id of this kind.
    pub fn is_id(self, s: &str) -> bool {
        s.strip_prefix(self.id_prefix())
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    }

    /// The stream id of the opt-out list `name` of `scope`.
    pub fn opt_out_list_id(scope: &Scope, name: &str) -> String {
        ResourceKind::OptOutList.named_id(scope, name)
    }

    /// The stream id of the sender id `sender_id` in `iso_country_code`, of `scope`.
    pub fn sender_id_id(scope: &Scope, sender_id: &str, iso_country_code: &str) -> String {
        ResourceKind::SenderId.named_id(scope, &format!("{sender_id}/{iso_country_code}"))
    }

    /// The stream id of a resource its caller names: the prefix and 32 hex digits of a hash of
    /// account, region and name.
    fn named_id(self, scope: &Scope, name: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(scope.account.as_bytes())
            .chain_update(b"/")
            .chain_update(scope.region.as_bytes())
            .chain_update(b"/")
            .chain_update(name.as_bytes())
            .finalize();
        format!("{}{}", self.id_prefix(), hex::encode(&digest[..16]))
    }

    /// Resolves a `SenderIdOrArn` (with the request's `IsoCountryCode`) to the sender id's
    /// stream id and its sender id and country. An ARN names its own country, which must be the
    /// request's when both are given.
    pub fn resolve_sender_id(scope: &Scope, sender_id_or_arn: &str, iso_country_code: Option<&str>) -> Option<(String, String, String)> {
        let (sender_id, iso) = match ResourceKind::SenderId.name_in(scope, sender_id_or_arn) {
            Some(name) => {
                let (sender_id, iso) = name.split_once('/')?;
                if iso_country_code.is_some_and(|asked| asked != iso) {
                    return None;
                }
                (sender_id, iso)
            }
            None if !sender_id_or_arn.starts_with("arn:") => (sender_id_or_arn, iso_country_code?),
            None => return None,
        };
        let well_formed = is_sender_id(sender_id) && iso.len() == 2 && iso.bytes().all(|b| b.is_ascii_uppercase());
        well_formed.then(|| (Self::sender_id_id(scope, sender_id, iso), sender_id.to_string(), iso.to_string()))
    }

    /// Resolves an id or ARN given by a caller of `scope` to an id of this kind, or `None` when it
    /// cannot name a resource of that caller (malformed, other account or region, other kind).
    /// For an opt-out list, a name or ARN resolves to the list's stream id.
    pub fn resolve(self, scope: &Scope, id_or_arn: &str) -> Option<String> {
        if self == ResourceKind::OptOutList {
            let name = self.name_in(scope, id_or_arn).filter(|n| is_list_name(n))?;
            return Some(Self::opt_out_list_id(scope, name));
        }
        if self == ResourceKind::SenderId {
            // Only an ARN names the country too; a bare sender id needs the request's.
            if self.is_id(id_or_arn) {
                return Some(id_or_arn.to_string());
            }
            if !id_or_arn.starts_with("arn:") {
                return None;
            }
            return Self::resolve_sender_id(scope, id_or_arn, None).map(|(id, _, _)| id);
        }
        if self.is_id(id_or_arn) {
            return Some(id_or_arn.to_string());
        }
        let id = self.name_in(scope, id_or_arn)?;
        self.is_id(id).then(|| id.to_string())
    }

    /// The resource part of an ARN of this kind in `scope` (or `name_or_arn` itself when it is no
    /// ARN and this kind is named by its callers).
    pub fn name_in<'a>(self, scope: &Scope, name_or_arn: &'a str) -> Option<&'a str> {
        let Some(rest) = name_or_arn.strip_prefix("arn:") else {
            return (self == ResourceKind::OptOutList).then_some(name_or_arn);
        };
        let mut parts = rest.splitn(5, ':');
        let (partition, service, region, account, resource) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (segment, id) = resource.split_once('/')?;
        let matches = partition.starts_with("aws")
            && service == "sms-voice"
            && region == scope.region
            && account == scope.account
            && segment == self.arn_segment()
            && !id.is_empty();
        matches.then_some(id)
    }

    /// The kind of resource an `OriginationIdentity` names: a pool (by id or ARN), a sender id
    /// (by ARN, or by its string), else a phone number (by id, ARN or E.164 number). One rule for
    /// the node that decides a send and the router that picks that node.
    pub fn of_origination_identity(identity: &str) -> ResourceKind {
        if identity.starts_with("pool-") || identity.contains(":pool/") {
            ResourceKind::Pool
        } else if ResourceKind::of_arn(identity) == Some(ResourceKind::SenderId) || is_sender_id(identity) {
            ResourceKind::SenderId
        } else {
            ResourceKind::PhoneNumber
        }
    }

    /// The kind of member a pool member's stream id is: a sender id or a phone number, the only
    /// kinds a pool holds.
    pub fn of_member(id: &str) -> ResourceKind {
        match ResourceKind::SenderId.is_id(id) {
            true => ResourceKind::SenderId,
            false => ResourceKind::PhoneNumber,
        }
    }

    /// The kind an ARN names (by its resource segment), if any this service keeps.
    pub fn of_arn(arn: &str) -> Option<ResourceKind> {
        let resource = arn.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
        let (segment, _) = resource.split_once('/')?;
        ResourceKind::ALL.into_iter().find(|k| k.arn_segment() == segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RequestSenderId: "The sender ID can be 1-11 alphanumeric characters including letters
    /// (A-Z, a-z), numbers (0-9), or hyphens (-). The sender ID must contain at least one letter
    /// and cannot start or end with a hyphen."
    #[test]
    fn sender_ids_follow_the_reference() {
        for good in ["MyBrand", "A", "Shop-24", "abc_DEF-123"] {
            assert!(is_sender_id(good), "{good}");
        }
        for bad in ["", "123456", "-Brand", "Brand-", "TwelveLetter", "my brand"] {
            assert!(!is_sender_id(bad), "{bad}");
        }
        let scope = Scope::new("111122223333", "us-east-1");
        let (id, sender, iso) = ResourceKind::resolve_sender_id(&scope, "MyBrand", Some("GB")).expect("resolves");
        assert_eq!((sender.as_str(), iso.as_str()), ("MyBrand", "GB"));
        let arn = scope.arn(ResourceKind::SenderId, "MyBrand/GB");
        assert_eq!(arn, "arn:aws:sms-voice:us-east-1:111122223333:sender-id/MyBrand/GB");
        assert_eq!(ResourceKind::SenderId.resolve(&scope, &arn), Some(id.clone()));
        assert_eq!(
            ResourceKind::resolve_sender_id(&scope, &arn, Some("GB")).map(|r| r.0),
            Some(id.clone())
        );
        assert_eq!(ResourceKind::resolve_sender_id(&scope, &arn, Some("FR")), None);
        assert_ne!(
            ResourceKind::resolve_sender_id(&scope, "MyBrand", Some("FR")).map(|r| r.0),
            Some(id)
        );
        assert_eq!(ResourceKind::resolve_sender_id(&scope, "MyBrand", None), None);
        assert_eq!(ResourceKind::of_arn(&arn), Some(ResourceKind::SenderId));
    }

    #[test]
    fn ids_look_like_the_real_ones() {
        let id = ResourceKind::PhoneNumber.new_id();
        assert!(id.starts_with("phone-") && id.len() == 38, "{id}");
        assert!(ResourceKind::PhoneNumber.is_id(&id));
        assert!(!ResourceKind::Pool.is_id(&id));
        assert!(ResourceKind::Pool.is_id(&ResourceKind::Pool.new_id()));
        assert!(!ResourceKind::PhoneNumber.is_id("phone-ABCDEF0123456789abcdef0123456789"));
    }

    #[test]
    fn arns_resolve_only_in_their_own_scope() {
        let scope = Scope::new("111122223333", "us-east-1");
        let id = ResourceKind::PhoneNumber.new_id();
        let arn = scope.arn(ResourceKind::PhoneNumber, &id);
        assert_eq!(arn, format!("arn:aws:sms-voice:us-east-1:111122223333:phone-number/{id}"));
        assert_eq!(ResourceKind::PhoneNumber.resolve(&scope, &arn), Some(id.clone()));
        assert_eq!(ResourceKind::PhoneNumber.resolve(&scope, &id), Some(id.clone()));
        let other = Scope::new("444455556666", "us-east-1");
        assert_eq!(ResourceKind::PhoneNumber.resolve(&other, &arn), None);
        let other_region = Scope::new("111122223333", "eu-west-1");
        assert_eq!(ResourceKind::PhoneNumber.resolve(&other_region, &arn), None);
        assert_eq!(ResourceKind::Pool.resolve(&scope, &arn), None);
        assert_eq!(ResourceKind::PhoneNumber.resolve(&scope, "+15550100"), None);
        assert_eq!(ResourceKind::PhoneNumber.resolve(&scope, "arn:aws:sms-voice"), None);
    }

    #[test]
    fn opt_out_lists_are_named_and_their_stream_follows_the_name() {
        let scope = Scope::new("111122223333", "us-east-1");
        let id = ResourceKind::OptOutList.resolve(&scope, "marketing").expect("a name");
        assert!(ResourceKind::OptOutList.is_id(&id), "{id}");
        let arn = scope.arn(ResourceKind::OptOutList, "marketing");
        assert_eq!(arn, "arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/marketing");
        assert_eq!(ResourceKind::OptOutList.resolve(&scope, &arn), Some(id.clone()));
        assert_eq!(ResourceKind::of_arn(&arn), Some(ResourceKind::OptOutList));
        let other = Scope::new("444455556666", "us-east-1");
        assert_ne!(ResourceKind::OptOutList.resolve(&other, "marketing"), Some(id));
        assert_eq!(ResourceKind::OptOutList.resolve(&other, &arn), None);
        assert_eq!(ResourceKind::OptOutList.resolve(&scope, "no spaces"), None);
        assert_eq!(
            ResourceKind::OptOutList.resolve(&scope, "arn:aws:sms-voice:us-east-1:111122223333:opt-out-list/a b"),
            None
        );
    }
}
