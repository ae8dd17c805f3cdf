//! Resource identifiers and ARNs: `phone-` / `pool-` followed by 32 lowercase hex digits, and
//! `arn:aws:sms-voice:REGION:ACCOUNT:phone-number/ID` (`pool/ID`), as the real service issues them.
//! Commands accept either form; an ARN naming another account or region resolves to nothing, so
//! it is reported exactly like an id that does not exist.

use uuid::Uuid;

use super::types::ResourceType;

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

/// The two kinds of aggregate this service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    PhoneNumber,
    Pool,
}

impl ResourceKind {
    /// Prefix of the id (`phone-`, `pool-`).
    pub fn id_prefix(self) -> &'static str {
        match self {
            ResourceKind::PhoneNumber => "phone-",
            ResourceKind::Pool => "pool-",
        }
    }

    /// Resource segment of the ARN.
    pub fn arn_segment(self) -> &'static str {
        match self {
            ResourceKind::PhoneNumber => "phone-number",
            ResourceKind::Pool => "pool",
        }
    }

    /// `ResourceType` reported in errors.
    pub fn resource_type(self) -> ResourceType {
        match self {
            ResourceKind::PhoneNumber => ResourceType::PhoneNumber,
            ResourceKind::Pool => ResourceType::Pool,
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

    /// Resolves an id or ARN given by a caller of `scope` to an id of this kind, or `None` when it
    /// cannot name a resource of that caller (malformed, other account or region, other kind).
    pub fn resolve(self, scope: &Scope, id_or_arn: &str) -> Option<String> {
        if self.is_id(id_or_arn) {
            return Some(id_or_arn.to_string());
        }
        let rest = id_or_arn.strip_prefix("arn:")?;
        let mut parts = rest.splitn(5, ':');
        let (partition, service, region, account, resource) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let (segment, id) = resource.split_once('/')?;
        let matches = partition.starts_with("aws")
            && service == "sms-voice"
            && region == scope.region
            && account == scope.account
            && segment == self.arn_segment()
            && self.is_id(id);
        matches.then(|| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
