//! Opaque `NextToken`s: `base64url(payload).base64url(HMAC-SHA256(secret, payload))`, where the
//! payload names the operation, the caller's scope and the last key returned. The secret belongs
//! to the data directory, so tokens survive restarts; a token that was altered, forged, or
//! issued for another operation or account is a `ValidationException` (`INVALID_NEXT_TOKEN`).

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
}
