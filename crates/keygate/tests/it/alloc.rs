//! The verified-token cache hit allocates nothing: the answer is the cached `Arc` cloned.
//!
//! `allocation-counter` installs a counting global allocator in this test binary and counts
//! per thread, so tests running in parallel on other threads do not disturb the count.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use keygate::{Algorithm, ProviderConfig, Verifier};
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, jwks, typical_claims};

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("verify awaited although its keys were warm"),
    }
}

#[test]
fn a_cache_hit_allocates_nothing_and_a_miss_does() {
    const NOW: i64 = 1_800_000_000;
    let issuer = "https://alloc.test";
    for (key, alg) in [
        (TestKey::shared_p256("alloc-p256"), Algorithm::ES256),
        (TestKey::shared_rsa("alloc-rsa"), Algorithm::RS256),
        (TestKey::shared_ed25519("alloc-ed"), Algorithm::EdDSA),
    ] {
        let provider = ProviderConfig::builder("t", "p", issuer)
            .static_jwks(serde_json::to_vec(&jwks(&[key])).unwrap())
            .audiences(["api"])
            .build()
            .unwrap();
        let verifier = Verifier::builder()
            .provider(provider)
            .clock(Arc::new(ManualClock::at_unix(u64::try_from(NOW).unwrap())))
            .token_cache(1024)
            .build()
            .unwrap();
        let token = TokenBuilder::new(key)
            .alg(alg)
            .claims(typical_claims(issuer, "api", NOW))
            .sign();
        // A miss parses claims and stores them: it allocates, so the counter works.
        let miss = allocations(|| drop(ready(verifier.verify(&token)).unwrap()));
        assert!(miss > 0, "{alg:?}: the counting allocator saw nothing");
        let hits = allocations(|| {
            for _ in 0..100 {
                let verified = ready(verifier.verify(&token)).unwrap();
                assert_eq!(verified.algorithm(), Some(alg));
                let narrowed = ready(verifier.verify_for_tenant("t", &token)).unwrap();
                assert!(Arc::ptr_eq(&verified, &narrowed));
            }
        });
        assert_eq!(hits, 0, "{alg:?}: 200 cache hits allocated {hits} times");
        assert_eq!(verifier.status()[0].counters.token_cache_hits, 200);
    }
}
