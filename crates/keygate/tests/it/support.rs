//! Helpers shared by the test modules.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use std::time::Duration;

use keygate::{Clock, Fetch, ProviderConfig, ProviderStatus, Reason, Verifier};
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, typical_claims};
use serde_json::json;

use crate::memidp::{AUD, ISSUER, settle};

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

/// `der` as PEM with `label`, in 64-character lines.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A verifier of `provider` that reads `clock` and fetches through `fetcher`.
pub(crate) fn verifier_of(
    provider: ProviderConfig,
    clock: Arc<dyn Clock>,
    fetcher: Arc<dyn Fetch>,
) -> Verifier {
    Verifier::builder()
        .provider(provider)
        .clock(clock)
        .fetcher(fetcher)
        .build()
        .unwrap()
}

/// A test rig: the IdP it drives and a [`Harness`], which it derefs to. Each test module adds
/// its own constructor and helpers for its IdP type.
pub(crate) struct Rig<I> {
    pub(crate) idp: I,
    pub(crate) harness: Harness,
}

impl<I> std::ops::Deref for Rig<I> {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        &self.harness
    }
}

/// A verifier judged by a manual clock, with the token helpers every rig over the in-memory
/// IdP's issuer uses.
pub(crate) struct Harness {
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) verifier: Verifier,
    /// Names the key that signs tokens for `kid`s nobody publishes.
    attacker: &'static str,
}

impl Harness {
    pub(crate) fn new(clock: Arc<ManualClock>, verifier: Verifier, attacker: &'static str) -> Self {
        Harness {
            clock,
            verifier,
            attacker,
        }
    }

    /// A fresh token (new `jti`, so never a token-cache hit) signed by `key`.
    pub(crate) fn token(&self, key: &TestKey) -> String {
        token(key, ISSUER, AUD, self.clock.now_unix())
    }

    /// A token naming `kid`, signed by a key nobody publishes.
    pub(crate) fn token_naming(&self, kid: &str) -> String {
        token_naming(self.attacker, kid, ISSUER, AUD, self.clock.now_unix())
    }

    pub(crate) async fn reason(&self, token: &str) -> &'static str {
        outcome(&self.verifier, token).await
    }

    /// Verifies a fresh token of `key` and returns the reason.
    pub(crate) async fn check(&self, key: &TestKey) -> &'static str {
        let token = self.token(key);
        self.reason(&token).await
    }

    pub(crate) fn status(&self) -> ProviderStatus {
        self.verifier.status().remove(0)
    }

    /// Moves the manual clock and (paused) tokio time together, then lets woken tasks run.
    pub(crate) async fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        tokio::time::advance(Duration::from_secs(secs)).await;
        settle().await;
    }
}
