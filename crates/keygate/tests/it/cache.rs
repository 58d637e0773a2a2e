//! The JWKS cache against a scripted stub IdP: HTTP caching, revalidation, rotation,
//! single-flight, the unknown-`kid` budget, stale-while-error, retries and operations.

use std::sync::Arc;
use std::time::Duration;

use keygate::{
    CacheSettings, HttpFetcher, ProviderConfig, ProviderId, ProviderState, RetrySettings,
    TtlPolicy, Verifier,
};
use keygate_test_support::{
    ManualClock, StubBody, StubIdp, StubResponse, TestKey, TokenBuilder, jwks, loopback_fetcher,
    test_retry, typical_claims,
};
use serde_json::json;

const T0: u64 = 1_800_000_000;
const AUD: &str = "api";

struct Fixture {
    idp: StubIdp,
    clock: Arc<ManualClock>,
    verifier: Verifier,
}

fn fast_retry() -> RetrySettings {
    test_retry(
        3,
        Duration::from_millis(5),
        Duration::from_millis(20),
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
}

pub(crate) fn fetcher() -> Arc<HttpFetcher> {
    loopback_fetcher(Duration::from_secs(2))
}

async fn fixture_with(cache: CacheSettings, discovery: bool) -> Fixture {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256("k1")]));
    let clock = Arc::new(ManualClock::at_unix(T0));
    let mut provider = ProviderConfig::builder("acme", "idp", idp.issuer())
        .audiences([AUD])
        .cache(cache)
        .retry(fast_retry());
    if !discovery {
        provider = provider.jwks_uri(idp.jwks_url());
    }
    let verifier = Verifier::builder()
        .provider(provider.build().unwrap())
        .clock(clock.clone())
        .fetcher(fetcher())
        .token_cache(1000)
        .build()
        .unwrap();
    Fixture {
        idp,
        clock,
        verifier,
    }
}

async fn fixture() -> Fixture {
    fixture_with(CacheSettings::default(), false).await
}

impl Fixture {
    fn token(&self, key: &TestKey) -> String {
        crate::support::token(key, &self.idp.issuer(), AUD, self.clock.now_unix())
    }

    async fn reason(&self, token: &str) -> &'static str {
        crate::support::outcome(&self.verifier, token).await
    }

    /// Verifies `token` from `n` tasks at once; every one must succeed.
    async fn verify_concurrently(&self, token: &str, n: usize) {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let v = self.verifier.clone();
                let t = token.to_owned();
                tokio::spawn(async move { v.verify(&t).await.map(drop) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    fn jwks_requests(&self) -> usize {
        self.idp.requests("/jwks")
    }

    fn status(&self) -> keygate::ProviderStatus {
        self.verifier.status().remove(0)
    }

    fn id() -> ProviderId {
        ProviderId::new("acme", "idp")
    }
}

#[tokio::test]
async fn first_verify_fetches_then_serves_from_cache_until_max_age() {
    let f = fixture().await;
    f.idp
        .set_default_headers([("Cache-Control", "public, max-age=600")]);
    let key = TestKey::shared_p256("k1");
    for _ in 0..5 {
        let t = f.token(key);
        assert_eq!(f.reason(&t).await, "valid");
    }
    assert_eq!(f.jwks_requests(), 1);
    let status = f.status();
    assert_eq!(status.state, ProviderState::Fresh);
    assert_eq!(status.kids, vec!["k1".to_owned()]);
    let ttl = status
        .expires_at
        .unwrap()
        .duration_since(status.fetched_at.unwrap());
    assert_eq!(ttl.unwrap(), Duration::from_secs(600));

    // Within max-age: no fetch. Past it (but inside the stale window) the keys still serve
    // at once; the refresh happens behind the request, not in front of it.
    f.clock.advance(Duration::from_secs(599));
    assert_eq!(f.reason(&f.token(key)).await, "valid");
    assert_eq!(f.jwks_requests(), 1);
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(f.status().state, ProviderState::Stale);
    assert_eq!(f.reason(&f.token(key)).await, "valid");
}

#[tokio::test]
async fn ttl_is_clamped_and_defaulted() {
    let mut cache = CacheSettings::default();
    cache.ttl = TtlPolicy {
        min_ttl: Duration::from_secs(60),
        max_ttl: Duration::from_secs(3600),
        default_ttl: Duration::from_secs(300),
    };
    for (headers, expected) in [
        (vec![("Cache-Control", "max-age=5")], 60),
        (vec![("Cache-Control", "max-age=999999")], 3600),
        (vec![("Cache-Control", "no-store")], 60),
        (vec![("Cache-Control", "max-age=900"), ("Age", "100")], 800),
        (vec![], 300),
    ] {
        let f = fixture_with(cache, false).await;
        f.idp.set_default_headers(headers.clone());
        assert_eq!(
            f.reason(&f.token(TestKey::shared_p256("k1"))).await,
            "valid"
        );
        let s = f.status();
        let ttl = s
            .expires_at
            .unwrap()
            .duration_since(s.fetched_at.unwrap())
            .unwrap();
        assert_eq!(ttl, Duration::from_secs(expected), "{headers:?}");
    }
}

#[tokio::test]
async fn revalidation_sends_the_etag_and_a_304_keeps_the_parsed_set() {
    let f = fixture().await;
    f.idp
        .set_default_headers([("Cache-Control", "max-age=300"), ("ETag", "\"v1\"")]);
    let key = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(key)).await, "valid");
    // A verified token is cached; a 304 must not drop it (the keys did not change).
    let token = f.token(key);
    assert_eq!(f.reason(&token).await, "valid");
    let hits_before = f.status().counters.token_cache_hits;

    f.verifier.refresh(&Fixture::id()).await.unwrap();
    assert_eq!(f.jwks_requests(), 2);
    let sent = f.idp.last_request_headers("/jwks").unwrap();
    assert_eq!(sent.get("if-none-match").unwrap(), "\"v1\"");
    assert_eq!(f.status().counters.refreshes, 2);

    assert_eq!(f.reason(&token).await, "valid");
    assert_eq!(f.status().counters.token_cache_hits, hits_before + 1);
}

#[tokio::test]
async fn rotation_to_an_unknown_kid_refetches_once_and_succeeds() {
    let f = fixture().await;
    let old = TestKey::shared_p256("k1");
    let new = TestKey::shared_ed25519("k2");
    assert_eq!(f.reason(&f.token(old)).await, "valid");
    f.idp.set_jwks(jwks(&[old, new]));
    assert_eq!(f.reason(&f.token(new)).await, "valid");
    assert_eq!(f.jwks_requests(), 2);
    // The IdP drops the old key: once the cache learns it, old tokens are refused.
    f.idp.set_jwks(jwks(&[new]));
    f.verifier.refresh(&Fixture::id()).await.unwrap();
    assert_eq!(f.reason(&f.token(old)).await, "unknown_kid");
}

#[tokio::test]
async fn a_replaced_key_under_the_same_kid_is_picked_up_after_a_bad_signature() {
    let f = fixture().await;
    let before = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(before)).await, "valid");
    let after = TestKey::p256("k1");
    f.idp.set_jwks(jwks(&[&after]));
    assert_eq!(f.reason(&f.token(&after)).await, "valid");
    assert_eq!(f.jwks_requests(), 2);
    // A forgery under a known kid: one refetch finds the same key, so no retry and no more.
    let forged = TokenBuilder::new(TestKey::shared_p256("attacker"))
        .header("kid", json!("k1"))
        .claims(typical_claims(&f.idp.issuer(), AUD, f.clock.now_unix()))
        .sign();
    assert_eq!(f.reason(&forged).await, "bad_signature");
    assert_eq!(f.jwks_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_cold_callers_share_one_fetch() {
    let f = fixture().await;
    f.idp.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[TestKey::shared_p256("k1")]))
            .delay(Duration::from_millis(200)),
    );
    let token = f.token(TestKey::shared_p256("k1"));
    f.verify_concurrently(&token, 100).await;
    assert_eq!(f.jwks_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kid_callers_share_one_forced_fetch() {
    let f = fixture().await;
    let k1 = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(k1)).await, "valid");
    let k2 = TestKey::shared_ed25519("k2");
    f.idp.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[k1, k2])).delay(Duration::from_millis(200)),
    );
    let token = f.token(k2);
    f.verify_concurrently(&token, 100).await;
    assert_eq!(f.jwks_requests(), 2);
}

#[tokio::test]
async fn random_kid_flood_is_bounded_by_the_budget_and_a_rotation_still_lands() {
    let f = fixture().await;
    let k1 = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(k1)).await, "valid");
    let attacker = TestKey::shared_p256("attacker");
    for i in 0..500 {
        let forged = TokenBuilder::new(attacker)
            .header("kid", json!(format!("random-{i}")))
            .claims(typical_claims(&f.idp.issuer(), AUD, f.clock.now_unix()))
            .sign();
        assert_eq!(f.reason(&forged).await, "unknown_kid");
    }
    // The first fetch plus the bucket's burst of two.
    assert_eq!(f.jwks_requests(), 3);
    assert_eq!(f.status().counters.unknown_kid_rejections, 500);
    // Valid tokens never stopped verifying.
    assert_eq!(f.reason(&f.token(k1)).await, "valid");

    // A real rotation during the flood: refused while the bucket is empty (no blocking),
    // picked up as soon as one token refills.
    let k2 = TestKey::shared_ed25519("k2");
    f.idp.set_jwks(jwks(&[k1, k2]));
    assert_eq!(f.reason(&f.token(k2)).await, "unknown_kid");
    assert_eq!(f.jwks_requests(), 3);
    f.clock.advance(Duration::from_secs(15));
    assert_eq!(f.reason(&f.token(k2)).await, "valid");
    assert_eq!(f.jwks_requests(), 4);
}

#[tokio::test]
async fn a_kid_just_found_missing_is_refused_without_a_fetch() {
    let f = fixture().await;
    let k1 = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(k1)).await, "valid");
    let ghost = TestKey::shared_p256("ghost");
    assert_eq!(f.reason(&f.token(ghost)).await, "unknown_kid");
    assert_eq!(f.jwks_requests(), 2);
    // Same kid again inside the negative window (1 s after a first miss): no fetch, even
    // though the bucket has a token.
    f.clock.advance(Duration::from_millis(900));
    assert_eq!(f.reason(&f.token(ghost)).await, "unknown_kid");
    assert_eq!(f.jwks_requests(), 2);
    // Past it, one refetch (the bucket's second token); still missing, remembered twice as
    // long: nothing for the next 2 s.
    f.clock.advance(Duration::from_millis(100));
    assert_eq!(f.reason(&f.token(ghost)).await, "unknown_kid");
    assert_eq!(f.jwks_requests(), 3);
    f.clock.advance(Duration::from_millis(1900));
    assert_eq!(f.reason(&f.token(ghost)).await, "unknown_kid");
    assert_eq!(f.jwks_requests(), 3);
    // Once the window has passed and the bucket has a token again (15 s after the first),
    // the kid triggers one refetch again.
    f.clock.advance(Duration::from_millis(12_100));
    f.idp.set_jwks(jwks(&[k1, ghost]));
    assert_eq!(f.reason(&f.token(ghost)).await, "valid");
    assert_eq!(f.jwks_requests(), 4);
}

#[tokio::test]
async fn stale_while_error_serves_the_last_good_set_for_a_bounded_window() {
    let mut cache = CacheSettings::default();
    cache.stale_window = Duration::from_secs(3600);
    let f = fixture_with(cache, false).await;
    f.idp
        .set_default_headers([("Cache-Control", "max-age=300")]);
    let key = TestKey::shared_p256("k1");
    assert_eq!(f.reason(&f.token(key)).await, "valid");

    f.idp.set_response("/jwks", StubResponse::status(503));
    f.clock.advance(Duration::from_secs(400));
    let err = f.verifier.refresh(&Fixture::id()).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    // Three attempts: bounded retries.
    assert_eq!(f.jwks_requests(), 4);
    let status = f.status();
    assert_eq!(status.state, ProviderState::Failing);
    assert_eq!(status.last_error.unwrap().reason, "http_status");
    assert_eq!(
        status.kids,
        vec!["k1".to_owned()],
        "a failure never evicts keys"
    );
    assert_eq!(f.reason(&f.token(key)).await, "valid");

    // Past expiry plus the stale window: keys_unavailable, and the IdP is not hammered.
    f.clock.advance(Duration::from_secs(300 + 3600));
    let before = f.jwks_requests();
    for _ in 0..20 {
        assert_eq!(f.reason(&f.token(key)).await, "keys_unavailable");
    }
    assert!(f.jwks_requests() - before <= 3, "one refresh cycle at most");
    assert_eq!(f.status().state, ProviderState::Unavailable);

    // The IdP comes back: the next attempt after the backoff recovers.
    f.idp.clear_responses("/jwks");
    f.clock.advance(Duration::from_secs(120));
    assert_eq!(f.reason(&f.token(key)).await, "valid");
}

#[tokio::test]
async fn retries_honour_retry_after_within_the_deadline() {
    let f = fixture().await;
    f.idp.push_response(
        "/jwks",
        StubResponse::status(429).header("Retry-After", "0"),
    );
    f.idp.push_response("/jwks", StubResponse::status(500));
    assert_eq!(
        f.reason(&f.token(TestKey::shared_p256("k1"))).await,
        "valid"
    );
    assert_eq!(f.jwks_requests(), 3);
    // A client error is not retried.
    let g = fixture().await;
    g.idp.set_response("/jwks", StubResponse::status(404));
    assert_eq!(
        g.reason(&g.token(TestKey::shared_p256("k1"))).await,
        "keys_unavailable"
    );
    assert_eq!(g.jwks_requests(), 1);
}

#[tokio::test]
async fn broken_entries_are_skipped_and_empty_sets_never_replace_good_ones() {
    let f = fixture().await;
    let k1 = TestKey::shared_p256("k1");
    let mut doc = jwks(&[k1]);
    doc["keys"].as_array_mut().unwrap().extend([
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "n": "!"}),
    ]);
    f.idp.set_jwks(doc);
    assert_eq!(f.reason(&f.token(k1)).await, "valid");
    assert_eq!(f.status().skipped_keys, 2);

    f.idp.set_jwks(json!({"keys": []}));
    assert!(f.verifier.refresh(&Fixture::id()).await.is_err());
    f.idp.set_jwks(json!({"keys": [{"kty": "oct", "k": "AA"}]}));
    assert!(f.verifier.refresh(&Fixture::id()).await.is_err());
    assert_eq!(f.status().kids, vec!["k1".to_owned()]);
    assert_eq!(f.reason(&f.token(k1)).await, "valid");
}

#[tokio::test]
async fn a_document_that_is_not_a_jwks_is_malformed_jwks() {
    let f = fixture().await;
    f.idp
        .set_response("/jwks", StubResponse::bytes(200, "<html>login</html>"));
    assert_eq!(
        f.reason(&f.token(TestKey::shared_p256("k1"))).await,
        "malformed_jwks"
    );
    assert_eq!(f.status().last_error.unwrap().reason, "malformed_jwks");
}

#[tokio::test]
async fn limits_of_the_fetcher_surface_as_keys_unavailable() {
    let f = fixture().await;
    f.idp.set_response(
        "/jwks",
        StubResponse::status(200).body(StubBody::Huge(2 * 1024 * 1024)),
    );
    assert_eq!(
        f.reason(&f.token(TestKey::shared_p256("k1"))).await,
        "keys_unavailable"
    );
    assert_eq!(f.status().last_error.unwrap().reason, "body_too_large");
    assert_eq!(f.jwks_requests(), 1, "a size violation is not retried");
}

#[tokio::test]
async fn too_many_keys_refuses_the_whole_set() {
    let mut cache = CacheSettings::default();
    cache.max_keys = 5;
    let f = fixture_with(cache, false).await;
    let keys: Vec<_> = (0..6)
        .map(|i| TestKey::shared_p256(&format!("n{i}")))
        .collect();
    f.idp.set_jwks(jwks(&keys));
    assert_eq!(f.reason(&f.token(keys[0])).await, "malformed_jwks");
}

#[tokio::test]
async fn flush_drops_keys_and_verified_tokens_and_the_next_request_refetches() {
    let f = fixture().await;
    let key = TestKey::shared_p256("k1");
    let token = f.token(key);
    assert_eq!(f.reason(&token).await, "valid");
    assert_eq!(f.verifier.cached_tokens(), 1);
    f.verifier.flush(&Fixture::id()).unwrap();
    assert_eq!(f.verifier.cached_tokens(), 0);
    assert_eq!(f.status().state, ProviderState::Empty);
    assert_eq!(f.reason(&token).await, "valid");
    assert_eq!(f.jwks_requests(), 2);
    assert!(f.verifier.flush(&ProviderId::new("acme", "nope")).is_err());
}

#[tokio::test]
async fn verified_tokens_are_dropped_when_the_keys_change() {
    let f = fixture().await;
    let k1 = TestKey::shared_p256("k1");
    let token = f.token(k1);
    assert_eq!(f.reason(&token).await, "valid");
    assert_eq!(f.reason(&token).await, "valid");
    assert_eq!(f.status().counters.token_cache_hits, 1);
    // The IdP withdraws k1: the cached verification must not outlive the key.
    f.idp.set_jwks(jwks(&[TestKey::shared_p256("k9")]));
    f.verifier.refresh(&Fixture::id()).await.unwrap();
    assert_eq!(f.reason(&token).await, "unknown_kid");
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri_and_checks_the_issuer() {
    let f = fixture_with(CacheSettings::default(), true).await;
    assert_eq!(
        f.reason(&f.token(TestKey::shared_p256("k1"))).await,
        "valid"
    );
    assert_eq!(f.idp.requests("/.well-known/openid-configuration"), 1);
    assert_eq!(
        f.status().jwks_uri.as_deref(),
        Some(f.idp.jwks_url().as_str())
    );

    let g = fixture_with(CacheSettings::default(), true).await;
    g.idp.set_response(
        "/.well-known/openid-configuration",
        StubResponse::json(
            200,
            json!({"issuer": "https://evil.example", "jwks_uri": g.idp.jwks_url()}),
        ),
    );
    assert_eq!(
        g.reason(&g.token(TestKey::shared_p256("k1"))).await,
        "keys_unavailable"
    );
    assert_eq!(g.jwks_requests(), 0);
}

#[tokio::test]
async fn keys_are_never_shared_across_issuers() {
    let a = StubIdp::start().await;
    let b = StubIdp::start().await;
    let ka = TestKey::shared_p256("shared-kid");
    let kb = TestKey::p256("shared-kid");
    a.set_jwks(jwks(&[ka]));
    b.set_jwks(jwks(&[&kb]));
    let clock = Arc::new(ManualClock::at_unix(T0));
    let provider = |tenant: &str, idp: &StubIdp| {
        ProviderConfig::builder(tenant, "idp", idp.issuer())
            .jwks_uri(idp.jwks_url())
            .audiences([AUD])
            .retry(fast_retry())
            .build()
            .unwrap()
    };
    let v = Verifier::builder()
        .provider(provider("a", &a))
        .provider(provider("b", &b))
        .clock(clock.clone())
        .fetcher(fetcher())
        .build()
        .unwrap();
    let mint = |key: &TestKey, iss: &str| {
        TokenBuilder::new(key)
            .claims(typical_claims(iss, AUD, clock.now_unix()))
            .sign()
    };
    // Each issuer's token verifies with its own key...
    assert_eq!(
        v.verify(&mint(ka, &a.issuer())).await.unwrap().tenant(),
        "a"
    );
    assert_eq!(
        v.verify(&mint(&kb, &b.issuer())).await.unwrap().tenant(),
        "b"
    );
    // ...and B's key never verifies a token claiming A's issuer, even with the same kid.
    let cross = v.verify(&mint(&kb, &a.issuer())).await.unwrap_err();
    assert_eq!(cross.reason(), "bad_signature");
    // Tenant narrowing.
    let err = v
        .verify_for_tenant("b", &mint(ka, &a.issuer()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "bad_issuer");
}

#[tokio::test]
async fn background_refresh_runs_ahead_of_expiry_without_any_request() {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256("k1")]));
    idp.set_default_headers([("Cache-Control", "max-age=2")]);
    let mut cache = CacheSettings::default();
    cache.ttl = TtlPolicy {
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(60),
        default_ttl: Duration::from_secs(2),
    };
    cache.refresh_ahead = Duration::from_secs(1);
    cache.refresh_jitter = Duration::ZERO;
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "idp", idp.issuer())
                .jwks_uri(idp.jwks_url())
                .audiences([AUD])
                .cache(cache)
                .build()
                .unwrap(),
        )
        .fetcher(fetcher())
        .build()
        .unwrap();
    verifier.warm_up().await;
    assert_eq!(idp.requests("/jwks"), 1);
    // The refresher wakes about one second before expiry; give it ample time on a busy box.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while idp.requests("/jwks") < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        idp.requests("/jwks") >= 3,
        "refreshed ahead of expiry, repeatedly"
    );
    assert_eq!(verifier.status()[0].state, ProviderState::Fresh);

    // Dropping the last handle stops the refresher.
    drop(verifier);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = idp.requests("/jwks");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(idp.requests("/jwks"), after_drop);
}

#[tokio::test]
async fn slow_attempts_time_out_and_the_refresh_ends_by_its_deadline() {
    let idp = StubIdp::answering(
        "/jwks",
        StubResponse::json(200, jwks(&[TestKey::shared_p256("k1")])).delay(Duration::from_secs(30)),
    )
    .await;
    let mut retry = fast_retry();
    retry.attempt_timeout = Duration::from_millis(150);
    retry.deadline = Duration::from_millis(400);
    retry.attempts = 10;
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "idp", idp.issuer())
                .jwks_uri(idp.jwks_url())
                .audiences([AUD])
                .retry(retry)
                .build()
                .unwrap(),
        )
        .fetcher(fetcher())
        .build()
        .unwrap();
    let err = verifier.refresh(&Fixture::id()).await.unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    // The deadline, not the attempt count, ended it: far fewer than ten attempts.
    let attempts = idp.requests("/jwks");
    assert!((1..=3).contains(&attempts), "{attempts} attempts");
    assert_eq!(
        verifier.status()[0].last_error.as_ref().unwrap().reason,
        "timeout"
    );
}

#[tokio::test]
async fn a_provider_can_pin_its_jwks_host_key() {
    let idp = StubIdp::start_tls().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256("k1")]));
    let clock = Arc::new(ManualClock::at_unix(T0));
    let pinned = |pin: [u8; 32]| {
        Arc::new(
            HttpFetcher::builder()
                .add_root_certificate(idp.ca_cert_der())
                .spki_pins([pin])
                .build()
                .unwrap(),
        )
    };
    let verifier = |pin| {
        Verifier::builder()
            .provider(
                ProviderConfig::builder("acme", "idp", idp.issuer())
                    .jwks_uri(idp.jwks_url())
                    .audiences([AUD])
                    .retry(fast_retry())
                    .fetcher(pinned(pin))
                    .build()
                    .unwrap(),
            )
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let token = TokenBuilder::new(TestKey::shared_p256("k1"))
        .claims(typical_claims(&idp.issuer(), AUD, clock.now_unix()))
        .sign();
    let good = verifier(idp.spki_sha256());
    assert!(good.verify(&token).await.is_ok());
    let bad = verifier([7; 32]);
    assert_eq!(
        bad.verify(&token).await.unwrap_err().reason(),
        "keys_unavailable"
    );
    assert_eq!(
        bad.status()[0].last_error.as_ref().unwrap().reason,
        "pin_mismatch"
    );
}

/// A revocation source whose state changes while a verification is checking it, as when an
/// admin revokes a token at that very moment.
#[derive(Debug, Default)]
struct ChangesDuringCheck {
    generation: std::sync::atomic::AtomicU64,
}

impl keygate::RevocationCheck for ChangesDuringCheck {
    fn check(&self, _: &keygate::TokenFacts<'_>) -> Option<keygate::RevokedBy> {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        None
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_result_is_never_cached_under_revocation_state_newer_than_its_check() {
    let key = TestKey::shared_p256("k1");
    let clock = Arc::new(ManualClock::at_unix(T0));
    let revocations = Arc::new(ChangesDuringCheck::default());
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "idp", "https://issuer.example")
                .static_jwks(serde_json::to_vec(&jwks(&[key])).unwrap())
                .audiences([AUD])
                .build()
                .unwrap(),
        )
        .clock(clock.clone())
        .revocations(revocations.clone())
        .token_cache(100)
        .build()
        .unwrap();
    let token = TokenBuilder::new(key)
        .claims(typical_claims(
            "https://issuer.example",
            AUD,
            clock.now_unix(),
        ))
        .sign();
    for _ in 0..3 {
        verifier.verify(&token).await.unwrap();
    }
    // Every verification saw the state move under it, so none may be served from the cache.
    assert_eq!(verifier.status()[0].counters.token_cache_hits, 0);
    assert_eq!(keygate::RevocationCheck::generation(&*revocations), 3);
}
