//! The cost of one verify, next to the cost of the signature check alone.
//!
//! Group `verify`, per algorithm:
//! - `floor/<ALG>`: aws-lc-rs checking the token's signature with a key parsed once, over the
//!   same signing input, the signature bytes decoded beforehand. Nothing can beat this.
//! - `keygate/<ALG>`: `Verifier::verify` of the same token (eleven typical claims), keys warm
//!   (a static key set), the verified-token cache off: split, base64, header and claims
//!   parsing, provider and key lookup, the signature, claim checks, the result.
//! - `cached/<ALG>`: the same with `.token_cache(10_000)`, answered from the cache.
//! - `overhead/<ALG>`: keygate's time minus the floor's, the two timed alternately call by
//!   call so that the VM's drift in speed (often larger than the overhead itself between two
//!   benchmarks seconds apart) cancels out. Divide by `floor/<ALG>` for the overhead ratio.
//!   Not for ES384, whose floor varies by more than the whole overhead. ES512's runs, but its
//!   0.7 ms floor makes the figure mostly noise on a busy machine (see BENCHMARKS.md).
//!
//! Group `contention`, ES256: `cached_2_threads` and `keygate_2_threads` run the cached and
//! the uncached verify on two threads at once over the same verifier (key snapshot lookup,
//! token cache shards and counters shared); the time is per verify per thread, so perfect
//! scaling shows the single-thread figure. `cold/ES256` flushes the provider and verifies, so
//! every iteration fetches the JWKS from a stub IdP on loopback over HTTP.
//!
//! Group `hostile`, ES256: a forged token packed with distinct claim names up to the size cap
//! next to an ordinary forged token, both refused (`bad_signature`) before any key is
//! trusted: what parsing the worst payload costs.
//!
//! Group `executor`: what driving an already-ready future costs, to show the driver used
//! here (one poll with a no-op waker) charges keygate next to nothing.
//!
//! `cargo bench -p keygate --bench verify`; BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use keygate::{Algorithm, Clock as _, ProviderConfig, Verifier};
use keygate_test_support::bench::ready;
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, typical_claims};
use serde_json::json;
use tokio::time::Instant;

/// A fixed instant: tokens minted for it never expire during a run.
const NOW: u64 = 1_700_000_000;
const AUDIENCE: &str = "https://api.bench.example";

/// Everything one algorithm's three benchmarks need.
struct Case {
    alg: Algorithm,
    token: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    floor: ParsedPublicKey,
    uncached: Verifier,
    cached: Verifier,
}

impl Case {
    fn new(alg: Algorithm, key: &TestKey) -> Self {
        let issuer = format!("https://{}.idp.bench.example/", alg.as_str().to_lowercase());
        let claims = typical_claims(&issuer, AUDIENCE, i64::try_from(NOW).unwrap());
        let token = TokenBuilder::new(key).alg(alg).claims(claims).sign();
        let (signing_input, sig_b64) = token.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(sig_b64).unwrap();

        let floor = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                let (n, e) = key.rsa_public_components().unwrap();
                let params = if alg == Algorithm::RS256 {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .unwrap()
            }
            Algorithm::ES256 => {
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, key.public_key_bytes())
                    .unwrap()
            }
            Algorithm::ES384 => {
                ParsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, key.public_key_bytes())
                    .unwrap()
            }
            Algorithm::ES512 => {
                ParsedPublicKey::new(&signature::ECDSA_P521_SHA512_FIXED, key.public_key_bytes())
                    .unwrap()
            }
            Algorithm::EdDSA => {
                ParsedPublicKey::new(&signature::ED25519, key.public_key_bytes()).unwrap()
            }
            other => unreachable!("no bench case for {other:?}"),
        };

        let mut jwk = key.jwk();
        jwk["alg"] = json!(alg.as_str());
        let jwks = json!({ "keys": [jwk] }).to_string();
        let verifier = |token_cache: Option<usize>| {
            let provider = ProviderConfig::builder("bench", alg.as_str(), &issuer)
                .static_jwks(jwks.clone().into_bytes())
                .audiences([AUDIENCE])
                .algorithms([alg])
                .build()
                .unwrap();
            let mut builder = Verifier::builder()
                .provider(provider)
                .clock(Arc::new(ManualClock::at_unix(NOW)));
            if let Some(capacity) = token_cache {
                builder = builder.token_cache(capacity);
            }
            builder.build().unwrap()
        };

        let case = Case {
            alg,
            signing_input: signing_input.as_bytes().to_vec(),
            signature,
            floor,
            uncached: verifier(None),
            cached: verifier(Some(10_000)),
            token,
        };
        case.check();
        case
    }

    /// Each benchmark measures what its name says: the floor accepts the signature, the
    /// uncached verifier succeeds without caching, the cached one answers from its cache.
    fn check(&self) {
        self.floor
            .verify_sig(&self.signing_input, &self.signature)
            .unwrap();
        let verified = ready(self.uncached.verify(&self.token)).unwrap();
        assert_eq!(verified.algorithm(), Some(self.alg));
        assert_eq!(self.uncached.cached_tokens(), 0);
        for _ in 0..2 {
            ready(self.cached.verify(&self.token)).unwrap();
        }
        assert_eq!(self.cached.cached_tokens(), 1);
        assert_eq!(self.cached.status()[0].counters.token_cache_hits, 1);
    }
}

fn cases() -> Vec<Case> {
    let rsa = TestKey::shared_rsa("bench-rsa");
    vec![
        Case::new(Algorithm::RS256, rsa),
        Case::new(Algorithm::ES256, TestKey::shared_p256("bench-p256")),
        Case::new(Algorithm::EdDSA, TestKey::shared_ed25519("bench-ed25519")),
        Case::new(Algorithm::PS256, rsa),
        Case::new(Algorithm::ES384, TestKey::shared_p384("bench-p384")),
        Case::new(Algorithm::ES512, TestKey::shared_p521("bench-p521")),
    ]
}

fn verify(c: &mut Criterion) {
    let cases = cases();
    let mut group = c.benchmark_group("verify");
    for case in &cases {
        let alg = case.alg.as_str();
        group.bench_function(format!("floor/{alg}"), |b| {
            b.iter(|| {
                case.floor
                    .verify_sig(black_box(&case.signing_input), black_box(&case.signature))
                    .unwrap();
            });
        });
        group.bench_function(format!("keygate/{alg}"), |b| {
            b.iter(|| ready(case.uncached.verify(black_box(&case.token))).unwrap());
        });
        group.bench_function(format!("cached/{alg}"), |b| {
            b.iter(|| ready(case.cached.verify(black_box(&case.token))).unwrap());
        });
        // ES384's floor (~0.25 ms here) swings by more than keygate's whole overhead, so
        // the difference would be noise, and criterion refuses samples that come out zero.
        if case.alg == Algorithm::ES384 {
            continue;
        }
        group.bench_function(format!("overhead/{alg}"), |b| {
            b.iter_custom(|iters| {
                let (mut floor, mut keygate) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    let start = Instant::now();
                    case.floor
                        .verify_sig(black_box(&case.signing_input), black_box(&case.signature))
                        .unwrap();
                    let mid = Instant::now();
                    drop(black_box(
                        ready(case.uncached.verify(black_box(&case.token))).unwrap(),
                    ));
                    let end = Instant::now();
                    floor += mid - start;
                    keygate += end - mid;
                }
                // A sample where noise outweighed the overhead counts as 1 ns per batch rather
                // than zero, which criterion refuses; this biases the figure up, never down.
                keygate.saturating_sub(floor).max(Duration::from_nanos(1))
            });
        });
    }
    group.finish();
}

/// A forged token (an ES256 signature of sevens) whose payload is the claims of `token`
/// padded with as many distinct short claim names as fit in `limit` bytes: the worst a
/// token can make keygate parse before its signature is checked.
fn wide_forgery(token: &str, limit: usize) -> (String, usize) {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let mut payload =
        String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    payload.pop();
    let forged_sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
    let mut names = 0;
    loop {
        let next = format!(r#","{names:x}":0"#);
        let len =
            header.len() + (payload.len() + next.len() + 1).div_ceil(3) * 4 + forged_sig.len() + 2;
        if len > limit {
            break;
        }
        payload.push_str(&next);
        names += 1;
    }
    payload.push('}');
    let forged = format!("{header}.{}.{forged_sig}", URL_SAFE_NO_PAD.encode(payload));
    (forged, names)
}

/// Group `hostile`, ES256: a forged token packed with distinct claim names up to the size
/// cap (`wide_forgery/ES256`) next to an ordinary forged token (`forgery/ES256`). Both are
/// refused with `bad_signature`; the first must not cost more than its size explains (the
/// duplicate-name check over ~1,500 names was once quadratic: 22 ms).
fn hostile(c: &mut Criterion) {
    let case = Case::new(Algorithm::ES256, TestKey::shared_p256("bench-p256"));
    let (wide, names) = wide_forgery(&case.token, keygate::DEFAULT_MAX_TOKEN_BYTES);
    assert!(names > 1_000, "{names} names");
    let (ordinary, _) = wide_forgery(&case.token, 0);
    for token in [&wide, &ordinary] {
        let err = ready(case.uncached.verify(token)).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
    }
    let mut group = c.benchmark_group("hostile");
    group.bench_function("wide_forgery/ES256", |b| {
        b.iter(|| ready(case.uncached.verify(black_box(&wide))).unwrap_err());
    });
    group.bench_function("forgery/ES256", |b| {
        b.iter(|| ready(case.uncached.verify(black_box(&ordinary))).unwrap_err());
    });
    group.finish();
}

/// Runs `f` `iters` times on each of two threads at once; returns the slower thread's time,
/// i.e. the time per call per thread when divided by `iters`.
fn on_two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let run = || {
            start.wait();
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed()
        };
        let other = scope.spawn(run);
        let mine = run();
        mine.max(other.join().unwrap())
    })
}

fn contention(c: &mut Criterion) {
    let case = Case::new(Algorithm::ES256, TestKey::shared_p256("bench-p256"));
    let mut group = c.benchmark_group("contention");
    group.bench_function("cached_2_threads/ES256", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                drop(black_box(
                    ready(case.cached.verify(black_box(&case.token))).unwrap(),
                ));
            })
        });
    });
    group.bench_function("keygate_2_threads/ES256", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, || {
                drop(black_box(
                    ready(case.uncached.verify(black_box(&case.token))).unwrap(),
                ));
            })
        });
    });
    group.finish();
}

fn cold(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = TestKey::shared_p256("bench-cold");
    let (verifier, token, id) = runtime.block_on(async {
        let idp = keygate_test_support::StubIdp::start().await;
        idp.set_jwks(keygate_test_support::jwks(&[key]));
        let fetcher = keygate::HttpFetcher::builder()
            .danger_allow_http_loopback(true)
            .build()
            .unwrap();
        let provider = ProviderConfig::builder("bench", "cold", idp.issuer())
            .jwks_uri(idp.jwks_url())
            .audiences([AUDIENCE])
            .algorithms([Algorithm::ES256])
            .build()
            .unwrap();
        let verifier = Verifier::builder()
            .provider(provider)
            .fetcher(Arc::new(fetcher))
            .build()
            .unwrap();
        let now = i64::try_from(
            keygate::SystemClock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let token = TokenBuilder::new(key)
            .claims(typical_claims(&idp.issuer(), AUDIENCE, now))
            .sign();
        let id = verifier.providers().next().unwrap();
        // The stub lives as long as the runtime's tasks; leak the handle so it keeps serving.
        std::mem::forget(idp);
        (verifier, token, id)
    });
    let mut group = c.benchmark_group("cold");
    group.bench_function("ES256", |b| {
        b.iter(|| {
            runtime.block_on(async {
                verifier.flush(&id).unwrap();
                drop(black_box(verifier.verify(black_box(&token)).await.unwrap()));
            });
        });
    });
    group.finish();
}

fn executor(c: &mut Criterion) {
    let mut group = c.benchmark_group("executor");
    group.bench_function("noop_waker_poll", |b| {
        b.iter(|| ready(std::future::ready(black_box(1_u64))));
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function("tokio_current_thread_block_on", |b| {
        b.iter(|| runtime.block_on(std::future::ready(black_box(1_u64))));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = keygate_test_support::bench::criterion();
    targets = verify, contention, cold, hostile, executor
}
criterion_main!(benches);
