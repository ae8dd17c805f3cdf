//! Who is calling: the account and region of a request, read from its SigV4 `Authorization`
//! header (`AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...`).
//! Signatures are accepted, not verified: this service stands in for AWS on a developer's
//! machine. The account is the access key id when it is 12 digits, else the default account.

use actix_web::http::header::HeaderMap;

use crate::config::is_account_id;
use crate::domain::Scope;

/// The caller's scope.
pub fn scope_of(headers: &HeaderMap, default_account: &str, default_region: &str) -> Scope {
    let credential = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .map(|c| c.split([',', ' ']).next().unwrap_or_default());
    let mut parts = credential.unwrap_or_default().split('/');
    let access_key = parts.next().filter(|s| !s.is_empty());
    let region = parts
        .nth(1)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    let account = access_key.filter(|k| is_account_id(k)).unwrap_or(default_account);
    Scope::new(account, region.unwrap_or(default_region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn account_and_region_come_from_the_credential_scope() {
        let h = headers(
            "AWS4-HMAC-SHA256 Credential=111122223333/20261126/eu-west-1/sms-voice/aws4_request, SignedHeaders=host, Signature=abc",
        );
        assert_eq!(scope_of(&h, "000000000000", "us-east-1"), Scope::new("111122223333", "eu-west-1"));
    }

    #[test]
    fn other_access_keys_use_the_default_account() {
        let h = headers("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-west-2/sms-voice/aws4_request, Signature=x");
        assert_eq!(scope_of(&h, "000000000000", "us-east-1"), Scope::new("000000000000", "us-west-2"));
        assert_eq!(
            scope_of(&HeaderMap::new(), "000000000000", "us-east-1"),
            Scope::new("000000000000", "us-east-1")
        );
        assert_eq!(
            scope_of(&headers("garbage"), "000000000000", "us-east-1"),
            Scope::new("000000000000", "us-east-1")
        );
    }
}
