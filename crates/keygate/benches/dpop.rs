//! What DPoP adds to a verify (RFC 9449).
//!
//! Group `dpop`, ES256 access token bound to an ES256 proof key, provider in mode `allowed`,
//! the verified-token cache on (as the sidecar runs):
//! - `verify_cached`: the plain verify of the bound token, answered from the cache.
//! - `verify_and_proof`: the same verify, then `Verifier::check_dpop` of a fresh proof (a
//!   new `jti` each iteration, made outside the timing): parsing the proof, its key and
//!   thumbprint, the proof's signature, `htm`/`htu`/`iat`/`ath`, and the in-memory replay
//!   store. The Redis replay store adds one round trip instead of the memory store: see
//!   `cargo bench -p keygate-cluster --bench replay`.
//! - `proof_only`: `check_dpop` alone.
//!
//! `cargo bench -p keygate --bench dpop`; BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keygate::dpop::{DpopMode, DpopRequest, MemoryReplayGuard, jwk_thumbprint};
use keygate::{ProviderConfig, Scheme, Verifier};
use keygate_test_support::bench::ready;
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, b64url, jwks, typical_claims};
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://idp.bench.example/";
const AUD: &str = "https://api.bench.example";
const URL: &str = "https://api.bench.example/orders/17";

fn sha256_b64(text: &str) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

fn dpop(c: &mut Criterion) {
    let idp = TestKey::shared_p256("bench-idp");
    let client = TestKey::shared_p256("bench-client");
    let jwk = client.jwk_without_alg();
    let jkt = jwk_thumbprint(&jwk.to_string()).unwrap();
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("bench", "idp", ISS)
                .static_jwks(jwks(&[idp]).to_string())
                .audiences([AUD])
                .dpop(DpopMode::Allowed)
                .build()
                .unwrap(),
        )
        .clock(Arc::new(ManualClock::at_unix(NOW.unsigned_abs())))
        .replay_guard(Arc::new(MemoryReplayGuard::default()))
        .token_cache(10_000)
        .build()
        .unwrap();
    let token = TokenBuilder::new(idp)
        .claims(typical_claims(ISS, AUD, NOW))
        .claim("cnf", json!({ "jkt": jkt }))
        .sign();
    let ath = sha256_b64(&token);
    let mut n = 0_u64;
    let mut proof = || {
        n += 1;
        let Value::Object(claims) =
            json!({"jti": format!("bench-{n}"), "htm": "GET", "htu": URL, "iat": NOW, "ath": ath})
        else {
            unreachable!()
        };
        TokenBuilder::new(client)
            .remove_header("kid")
            .header("typ", json!("dpop+jwt"))
            .header("jwk", jwk.clone())
            .claims(claims)
            .sign()
    };
    let verified = ready(verifier.verify(&token)).unwrap();

    let mut group = c.benchmark_group("dpop");
    group.bench_function("verify_cached", |b| {
        b.iter(|| {
            drop(black_box(
                ready(verifier.verify(black_box(&token))).unwrap(),
            ))
        });
    });
    // The proof check alone, or after the verify that precedes it in `/verify`.
    let check = |p: String, verify_first: bool| {
        let verified = if verify_first {
            ready(verifier.verify(&token)).unwrap()
        } else {
            Arc::clone(&verified)
        };
        let proofs = [p.as_str()];
        let request = DpopRequest {
            method: "GET",
            url: URL,
            proofs: &proofs,
        };
        ready(verifier.check_dpop(&verified, &token, Scheme::Dpop, &request)).unwrap();
    };
    group.bench_function("verify_and_proof", |b| {
        b.iter_batched(&mut proof, |p| check(p, true), BatchSize::SmallInput);
    });
    group.bench_function("proof_only", |b| {
        b.iter_batched(&mut proof, |p| check(p, false), BatchSize::SmallInput);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = keygate_test_support::bench::criterion();
    targets = dpop
}
criterion_main!(benches);
