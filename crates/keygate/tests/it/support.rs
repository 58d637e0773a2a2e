//! Helpers shared by the test modules.

use keygate::{Reason, Verifier};
use keygate_test_support::{TestKey, TokenBuilder, typical_claims};
use serde_json::json;

/// Every reason code the verifier documents ([`Reason::ALL`] as strings).
pub(crate) fn reason_codes() -> [&'static str; Reason::ALL.len()] {
    Reason::ALL.map(Reason::as_str)
}

/// What verifying `token` gives: `"valid"`, or the reason code of the refusal.
pub(crate) async fn outcome(verifier: &Verifier, token: &str) -> &'static str {
    match verifier.verify(token).await {
        Ok(_) => "valid",
        Err(e) => e.reason().as_str(),
    }
}

/// A fresh token (new `jti`, so never a token-cache hit) of `iss` for `aud`, issued at
/// `now`, signed by `key`.
pub(crate) fn token(key: &TestKey, iss: &str, aud: &str, now: i64) -> String {
    TokenBuilder::new(key)
        .claims(typical_claims(iss, aud, now))
        .sign()
}

/// A token of `iss` for `aud` naming `kid`, signed by the key `attacker` names, which
/// nobody publishes.
pub(crate) fn token_naming(attacker: &str, kid: &str, iss: &str, aud: &str, now: i64) -> String {
    TokenBuilder::new(TestKey::shared_p256(attacker))
        .header("kid", json!(kid))
        .claims(typical_claims(iss, aud, now))
        .sign()
}
