//! Arbitrary bytes as a JWKS document, through every public way in:
//!
//! - `keygate::jwk::KeySet::parse`, with every algorithm and with one, under two key limits;
//! - a static provider (`static_jwks`) built into a verifier, which then verifies fixed
//!   well-signed tokens against the fuzzer's keys (key lookup by `kid`, without `kid`, `alg`
//!   and `use` rules, weak keys);
//! - `Verifier::adopt` of a `PublishedKeySet` into a fetching provider, as a set from a peer.
//!
//! Checks besides "no panic": parsing is deterministic; an adopted set is the one
//! `Verifier::key_sets` then reports.

#![no_main]

use std::sync::{Arc, OnceLock};

use keygate::jwk::{DEFAULT_MAX_KEYS, KeySet};
use keygate::{Algorithm, ProviderConfig, ProviderId, PublishedKeySet, Verifier};
use keygate_fuzz::{AUDIENCE, FixedClock, ISSUER, JWKS_URL, NoFetch, Signer, at_offset, ready};
use libfuzzer_sys::fuzz_target;

/// Well-signed tokens for `acme/main`'s audience, one per fixture key and one without `kid`.
fn tokens() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let payload = format!(
            r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{}}}"#,
            keygate_fuzz::NOW_UNIX + 3600
        );
        [
            (r#"{"alg":"RS256","kid":"rsa-1"}"#, Signer::Rs256),
            (r#"{"alg":"PS256","kid":"rsa-noalg"}"#, Signer::Ps256),
            (r#"{"alg":"ES256","kid":"p256-1"}"#, Signer::Es256),
            (r#"{"alg":"EdDSA","kid":"ed-1"}"#, Signer::EdDsa),
            (r#"{"alg":"ES256"}"#, Signer::Es256),
        ]
        .iter()
        .map(|(header, signer)| keygate_fuzz::mint(header, &payload, *signer))
        .collect()
    })
}

fn summary(set: &KeySet) -> (usize, usize, Vec<String>) {
    (
        set.usable(),
        set.skipped(),
        set.kids().map(str::to_owned).collect(),
    )
}

fuzz_target!(|data: &[u8]| {
    for (allowed, max_keys) in [
        (&Algorithm::ALL[..], DEFAULT_MAX_KEYS),
        (&[Algorithm::ES256][..], DEFAULT_MAX_KEYS),
        (&Algorithm::ALL[..], 2),
    ] {
        let first = KeySet::parse(data, allowed, max_keys);
        let again = KeySet::parse(data, allowed, max_keys);
        match (&first, &again) {
            (Ok(a), Ok(b)) => {
                assert_eq!(summary(a), summary(b), "parsing is not deterministic");
                let _ = format!("{a:?}");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "parsing is not deterministic"),
            _ => panic!("parsing is not deterministic"),
        }
    }

    // A static provider over the document: building parses it with the provider's limits.
    let built = ProviderConfig::builder("acme", "main", ISSUER)
        .static_jwks(data.to_vec())
        .audiences([AUDIENCE])
        .build()
        .ok()
        .and_then(|p| {
            Verifier::builder()
                .provider(p)
                .clock(Arc::new(FixedClock))
                .fetcher(Arc::new(NoFetch))
                .build()
                .ok()
        });
    if let Some(verifier) = built {
        for token in tokens() {
            let _ = ready(verifier.verify(token));
        }
    }

    // The same document as a key set another replica fetched.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let provider = ProviderConfig::builder("acme", "fetched", ISSUER)
        .jwks_uri(JWKS_URL)
        .audiences([AUDIENCE])
        .build()
        .expect("a valid provider");
    let id = ProviderId::new("acme", "fetched");
    let verifier = Verifier::builder()
        .provider(provider)
        .clock(Arc::new(FixedClock))
        .fetcher(Arc::new(NoFetch))
        .build()
        .expect("a valid verifier");
    let set = PublishedKeySet::new(
        text,
        at_offset(-60),
        at_offset(600),
        Some(Arc::from("\"v1\"")),
    );
    if let Ok(true) = verifier.adopt(&id, set) {
        let held = verifier.key_sets();
        assert_eq!(held.len(), 1, "an adopted set is not held");
        assert_eq!(
            &*held[0].1.jwks, text,
            "the held set is not the adopted one"
        );
        let _ = verifier.status();
    }
});
