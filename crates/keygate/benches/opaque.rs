//! What an opaque token costs (RFC 7662 introspection).
//!
//! Group `introspection`:
//! - `cached_hit`: `Verifier::verify` of an opaque token whose answer is cached: the token's
//!   SHA-256, the cache lookup and the revocation check. Never awaits.
//! - `miss_loopback`: a token never seen before, each iteration, so every verify posts to a
//!   stub introspection endpoint on loopback over HTTP (keep-alive connection) and judges the
//!   answer: the floor of a cache miss against an IdP on the same machine.
//! - `jwt_cached`: for scale, a cached JWT verify on the same machine in the same run.
//!
//! `cargo bench -p keygate --bench opaque`; BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::introspect::{ClientSecret, IntrospectionConfig, IntrospectionEndpoint};
use keygate::{ProviderConfig, Verifier};
use keygate_test_support::bench::ready;
use keygate_test_support::{StubIdp, StubResponse, TestKey, TokenBuilder, jwks, loopback_fetcher};
use serde_json::json;

const AUDIENCE: &str = "https://api.bench.example";

fn introspection(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = TestKey::shared_p256("bench");
    let (verifier, jwt) = runtime.block_on(async {
        let idp = StubIdp::start().await;
        idp.set_jwks(jwks(&[key]));
        // Far-future expiry: the system clock judges here.
        let answer = json!({"active": true, "iss": idp.issuer(), "aud": AUDIENCE,
            "sub": "bench-user", "scope": "read write", "client_id": "bench",
            "exp": 4_000_000_000_i64, "iat": 1_700_000_000_i64});
        idp.set_response("/introspect", StubResponse::json(200, answer));
        let provider = ProviderConfig::builder("bench", "idp", idp.issuer())
            .static_jwks(jwks(&[key]).to_string().into_bytes())
            .audiences([AUDIENCE])
            .introspection(
                IntrospectionConfig::new(
                    IntrospectionEndpoint::Url(idp.url("/introspect").parse().unwrap()),
                    "rs",
                    ClientSecret::new("secret"),
                )
                .rate_limit(1_000_000, 1_000_000)
                .cache_entries(1_000_000),
            )
            .build()
            .unwrap();
        let verifier = Verifier::builder()
            .provider(provider)
            .fetcher(loopback_fetcher(Duration::from_secs(5)))
            .token_cache(10_000)
            .build()
            .unwrap();
        let jwt = TokenBuilder::new(key)
            .claims(keygate_test_support::typical_claims(
                &idp.issuer(),
                AUDIENCE,
                1_700_000_000,
            ))
            .claim("exp", json!(4_000_000_000_i64))
            .sign();
        verifier.verify("warm-opaque-token").await.unwrap();
        verifier.verify(&jwt).await.unwrap();
        // The stub serves as long as the runtime runs.
        std::mem::forget(idp);
        (verifier, jwt)
    });
    let mut group = c.benchmark_group("introspection");
    group.bench_function("cached_hit", |b| {
        b.iter(|| {
            drop(black_box(
                ready(verifier.verify(black_box("warm-opaque-token"))).unwrap(),
            ))
        });
    });
    group.bench_function("jwt_cached", |b| {
        b.iter(|| drop(black_box(ready(verifier.verify(black_box(&jwt))).unwrap())));
    });
    let mut n = 0_u64;
    group.bench_function("miss_loopback", |b| {
        b.iter(|| {
            n += 1;
            let token = format!("fresh-opaque-token-{n:016}");
            runtime.block_on(async {
                drop(black_box(verifier.verify(&token).await.unwrap()));
            });
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = keygate_test_support::bench::criterion();
    targets = introspection
}
criterion_main!(benches);
