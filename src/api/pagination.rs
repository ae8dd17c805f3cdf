//! Opaque `NextToken`s: `base64url(payload).base64url(HMAC-SHA256(secret, payload))`, where the
//! payload names the operation, the caller's scope and the last key returned. The secret belongs
//! to the data directory, so tokens survive restarts; a token that was altered, forged, or
//! issued for another operation or account is a `ValidationException` (`INVALID_NEXT_TOKEN`).
//!
//! At the edge each token is also bound to the rest of the request that got it ([`bind`]): the
//! same filters, ids and pool or list, whatever the page size. A token used with another request
//! would resume after a key of a different listing, skipping or repeating items without a word;
//! it is refused instead.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::Scope;

#[derive(Serialize, Deserialize)]
struct Payload {
    op: String,
    account: String,
    region: String,
    after: String,
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(payload);
    m.finalize().into_bytes().to_vec()
}

/// A token to resume `operation` for `scope` after `after`.
pub fn issue(secret: &[u8], operation: &str, scope: &Scope, after: &str) -> String {
    let payload = Payload {
        op: operation.into(),
        account: scope.account.clone(),
        region: scope.region.clone(),
        after: after.into(),
    };
    // Serializing a struct of strings cannot fail.
    let bytes = serde_json::to_vec(&payload).unwrap_or_default();
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&bytes), URL_SAFE_NO_PAD.encode(mac(secret, &bytes)))
}

/// The key to resume after, if the token is one this service issued for this call.
pub fn redeem(secret: &[u8], operation: &str, scope: &Scope, token: &str) -> Option<String> {
    let (payload, tag) = token.split_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    m.update(&bytes);
    m.verify_slice(&tag).ok()?;
    let p: Payload = serde_json::from_slice(&bytes).ok()?;
    (p.op == operation && p.account == scope.account && p.region == scope.region).then_some(p.after)
}

/// Members that may differ between the pages of one listing.
const PAGE_MEMBERS: [&str; 2] = ["NextToken", "MaxResults"];

/// What identifies a listing: the request's members but the page's own, canonically encoded
/// (object members in name order), computed once per request.
pub struct Listing(Vec<u8>);

impl Listing {
    pub fn of(request: &serde_json::Value) -> Listing {
        let members: std::collections::BTreeMap<&String, &serde_json::Value> = request
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(name, _)| !PAGE_MEMBERS.contains(&name.as_str()))
            .collect();
        // Serializing JSON values cannot fail.
        Listing(serde_json::to_vec(&members).unwrap_or_default())
    }
}

/// Separates a bound token from the binding's tag (neither base64url alphabet nor the inner
/// token's `.` use it).
const BINDING: char = '~';

/// `token`, bound to `listing`.
pub fn bind(secret: &[u8], token: &str, listing: &Listing) -> String {
    let tag = binding_tag(secret, token, listing);
    format!("{token}{BINDING}{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The token inside `bound`, if it was bound to `listing`.
pub fn unbind<'t>(secret: &[u8], bound: &'t str, listing: &Listing) -> Option<&'t str> {
    let (token, tag) = bound.rsplit_once(BINDING)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok().filter(|t| t.len() == BINDING_TAG_BYTES)?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    binding_input(&mut m, token, listing);
    m.verify_truncated_left(&tag).ok()?;
    Some(token)
}

/// Bytes of the binding's tag: 128 bits of HMAC-SHA256.
const BINDING_TAG_BYTES: usize = 16;

fn binding_tag(secret: &[u8], token: &str, listing: &Listing) -> Vec<u8> {
    // HMAC accepts keys of any length; the error case cannot happen.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    binding_input(&mut m, token, listing);
    m.finalize().into_bytes()[..BINDING_TAG_BYTES].to_vec()
}

fn binding_input(m: &mut Hmac<Sha256>, token: &str, listing: &Listing) {
    // A domain of its own, so that a binding tag is never a token's tag.
    m.update(b"phone-ledger listing binding\0");
    m.update(token.as_bytes());
    m.update(b"\0");
    m.update(&listing.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_only_where_issued() {
        let scope = Scope::new("111122223333", "us-east-1");
        let t = issue(b"secret", "DescribePools", &scope, "pool-1");
        assert_eq!(redeem(b"secret", "DescribePools", &scope, &t).as_deref(), Some("pool-1"));
        assert_eq!(redeem(b"other", "DescribePools", &scope, &t), None);
        assert_eq!(redeem(b"secret", "DescribePhoneNumbers", &scope, &t), None);
        assert_eq!(
            redeem(b"secret", "DescribePools", &Scope::new("444455556666", "us-east-1"), &t),
            None
        );
        // Same payload shape, other key: a client cannot mint tokens.
        let (payload, _) = t.split_once('.').expect("two parts");
        let forged = format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(redeem(b"secret", "DescribePools", &scope, &forged), None);
        assert_eq!(redeem(b"secret", "DescribePools", &scope, "garbage"), None);
    }

    #[test]
    fn a_bound_token_serves_only_the_listing_it_was_given_for() {
        use serde_json::json;
        let request = json!({"PoolId": "pool-a", "Filters": [{"Name": "status", "Values": ["ACTIVE"]}], "MaxResults": 5});
        let bound = bind(b"secret", "inner.token", &Listing::of(&request));
        // The next page of the same listing, whatever its size.
        let mut next = request.clone();
        next["NextToken"] = json!(bound);
        next["MaxResults"] = json!(50);
        assert_eq!(unbind(b"secret", &bound, &Listing::of(&next)), Some("inner.token"));
        // Another pool, other filters, another secret, a forged or cut tag: refused.
        let mut other = next.clone();
        other["PoolId"] = json!("pool-b");
        assert_eq!(unbind(b"secret", &bound, &Listing::of(&other)), None);
        other = next.clone();
        other["Filters"] = json!([]);
        assert_eq!(unbind(b"secret", &bound, &Listing::of(&other)), None);
        assert_eq!(unbind(b"other", &bound, &Listing::of(&next)), None);
        assert_eq!(unbind(b"secret", "inner.token", &Listing::of(&next)), None);
        let (token, tag) = bound.rsplit_once(BINDING).expect("bound");
        assert_eq!(
            unbind(b"secret", &format!("{token}{BINDING}{}", &tag[..4]), &Listing::of(&next)),
            None
        );
        assert_eq!(unbind(b"secret", &format!("{token}x{BINDING}{tag}"), &Listing::of(&next)), None);
    }
}
