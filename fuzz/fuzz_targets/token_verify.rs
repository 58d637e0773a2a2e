//! Verifying fuzzer-made tokens against the fixed static providers (see `keygate_fuzz`).
//!
//! Input: one mode byte, then
//! - mode bit 0 clear, **raw**: the rest (UTF-8, lossily) is the token;
//! - mode bit 0 set, **structured**: a signer byte, the header JSON, `\n`, the payload JSON
//!   (and, for signer 5, `\n` and the raw signature bytes). The harness base64url-encodes
//!   both and signs them, so the fuzzer works on the JSON parsers, the key lookup, the
//!   signature check and the claim checks instead of on segmentation.
//!
//! Mode bit 1 narrows verification to tenant `acme`.
//!
//! Checks besides "no panic": a verifier with a token cache and one without agree on every
//! token, twice in a row (the second time a cache hit); a token whose signature was not made by
//! a fixture key is never accepted; an accepted token's issuer and expiry are consistent.
//!
//! `KEYGATE_FUZZ_DEBUG=1` prints each token and its verdict (to see what a seed or a crash
//! input does: run the target binary on the file).

#![no_main]

use std::sync::OnceLock;

use keygate::{VerifiedToken, Verifier, VerifyError};
use keygate_fuzz::{ISSUER, NOW_UNIX, OTHER_ISSUER, Signer, b64url, ready};
use libfuzzer_sys::fuzz_target;

struct Verifiers {
    cached: Verifier,
    uncached: Verifier,
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| Verifiers {
        cached: keygate_fuzz::verifier(256),
        uncached: keygate_fuzz::verifier(0),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tenant = (mode & 2 != 0).then_some("acme");
    let (token, forged) = if mode & 1 == 0 {
        (String::from_utf8_lossy(rest).into_owned(), false)
    } else {
        match structured(rest) {
            Some(t) => t,
            None => return,
        }
    };

    let v = verifiers();
    let verify = |verifier: &Verifier| {
        ready(async {
            match tenant {
                Some(t) => verifier.verify_for_tenant(t, &token).await,
                None => verifier.verify(&token).await,
            }
        })
    };
    let plain = verify(&v.uncached);
    let first = verify(&v.cached);
    let second = verify(&v.cached);
    if keygate_fuzz::debug() {
        eprintln!("token {token:?}: {:?}", outcome(&plain));
    }
    assert_eq!(
        outcome(&plain),
        outcome(&first),
        "token cache changed a verdict"
    );
    assert_eq!(
        outcome(&first),
        outcome(&second),
        "a cache hit changed a verdict"
    );

    if let Ok(verified) = &plain {
        assert!(!forged, "accepted a token no fixture key signed: {token:?}");
        check_accepted(verified, tenant);
    }
});

/// What a verification decided: the reason code of a refusal, or who was accepted.
fn outcome(r: &Result<std::sync::Arc<VerifiedToken>, VerifyError>) -> Result<String, &'static str> {
    match r {
        Ok(t) => Ok(format!("{}|{:?}|{:?}", t.provider(), t.subject(), t.kid())),
        Err(e) => Err(e.reason().as_str()),
    }
}

fn check_accepted(t: &VerifiedToken, tenant: Option<&str>) {
    assert!(
        t.issuer() == ISSUER || t.issuer() == OTHER_ISSUER,
        "accepted a token from issuer {:?}",
        t.issuer()
    );
    if let Some(tenant) = tenant {
        assert_eq!(t.tenant(), tenant, "tenant narrowing ignored");
    }
    let now = i64::try_from(NOW_UNIX).expect("fits");
    if let Some(exp) = t.expires_at() {
        // The largest leeway of the fixture providers is the default 30 s.
        assert!(
            exp.saturating_add(30) > now,
            "accepted a token that expired at {exp}"
        );
    }
    let claims = t.claims();
    assert!(
        claims.get("iss").and_then(|v| v.as_str()) == Some(t.issuer()),
        "claims and issuer disagree"
    );
    let _ = t.deserialize_claims::<serde_json::Value>();
    let _ = format!("{t:?}");
}

/// Builds the token of a structured input; the flag says whether its signature is forged.
fn structured(rest: &[u8]) -> Option<(String, bool)> {
    let (&signer, rest) = rest.split_first()?;
    let text = String::from_utf8_lossy(rest);
    let (header, after) = text.split_once('\n').unwrap_or((&text, ""));
    let (payload, raw_sig) = match signer % 8 {
        5 => after.split_once('\n').unwrap_or((after, "")),
        _ => (after, ""),
    };
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let keys = keygate_fuzz::Keys::get();
    let (sig, forged) = match signer % 8 {
        0 => (keys.sign(Signer::Rs256, input.as_bytes()), false),
        1 => (keys.sign(Signer::Ps256, input.as_bytes()), false),
        2 => (keys.sign(Signer::Es256, input.as_bytes()), false),
        3 => (keys.sign(Signer::EdDsa, input.as_bytes()), false),
        4 => (Vec::new(), true),
        5 => (raw_sig.as_bytes().to_vec(), true),
        6 => {
            // A real ES256 signature with one bit flipped: a bad signature under a known kid.
            let mut sig = keys.sign(Signer::Es256, input.as_bytes());
            sig[usize::from(signer) % 64] ^= 1 << (signer >> 5);
            (sig, true)
        }
        _ => {
            // A real Ed25519 signature, of another message.
            (
                keys.sign(Signer::EdDsa, format!("{input}x").as_bytes()),
                true,
            )
        }
    };
    Some((format!("{input}.{}", b64url(&sig)), forged))
}
