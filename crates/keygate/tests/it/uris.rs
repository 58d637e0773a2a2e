//! Providers with several JWKS URLs (`jwks_uris`): the union of their keys, a `kid` two
//! documents share, one URL failing while the other serves, forced refetches, per-URL status
//! and adopting a peer's documents.

use std::sync::Arc;
use std::time::Duration;

use keygate::{
    CacheSettings, HttpFetcher, ProviderConfig, ProviderId, ProviderState, PublishedDocument,
    PublishedKeySet, RetrySettings, Verifier,
};
use keygate_test_support::{ManualClock, StubIdp, StubResponse, TestKey, jwks};

const T0: u64 = 1_800_000_000;
const AUD: &str = "api";

/// One issuer whose keys are split across two stub IdPs' `/jwks`.
struct TwoUrls {
    a: StubIdp,
    b: StubIdp,
    clock: Arc<ManualClock>,
    verifier: Verifier,
}

fn quick_retry() -> RetrySettings {
    let mut r = RetrySettings::default();
    r.attempts = 1;
    r.attempt_timeout = Duration::from_millis(300);
    r.deadline = Duration::from_millis(500);
    r
}

async fn two_urls(a_keys: &[&TestKey], b_keys: &[&TestKey], cache: CacheSettings) -> TwoUrls {
    let (a, b) = (StubIdp::start().await, StubIdp::start().await);
    a.set_jwks(jwks(a_keys));
    b.set_jwks(jwks(b_keys));
    let clock = Arc::new(ManualClock::at_unix(T0));
    let provider = ProviderConfig::builder("acme", "idp", a.issuer())
        .audiences([AUD])
        .jwks_uris([a.jwks_url(), b.jwks_url()])
        .cache(cache)
        .retry(quick_retry())
        .build()
        .unwrap();
    let fetcher = HttpFetcher::builder()
        .danger_allow_http_loopback(true)
        .build()
        .unwrap();
    let verifier = crate::support::verifier_of(provider, clock.clone(), Arc::new(fetcher));
    TwoUrls {
        a,
        b,
        clock,
        verifier,
    }
}

impl TwoUrls {
    fn token(&self, key: &TestKey) -> String {
        crate::support::token(key, &self.a.issuer(), AUD, self.clock.now_unix())
    }

    async fn reason(&self, key: &TestKey) -> &'static str {
        crate::support::outcome(&self.verifier, &self.token(key)).await
    }

    fn requests(&self) -> (usize, usize) {
        (self.a.requests("/jwks"), self.b.requests("/jwks"))
    }

    fn status(&self) -> keygate::ProviderStatus {
        self.verifier.status().remove(0)
    }

    fn id() -> ProviderId {
        ProviderId::new("acme", "idp")
    }
}

fn no_jitter() -> CacheSettings {
    let mut cache = CacheSettings::default();
    cache.refresh_jitter = Duration::ZERO;
    cache
}

#[tokio::test]
async fn a_kid_two_documents_share_verifies_under_either_key_and_no_other() {
    // Same kid, different keys (and key types): neither document shadows the other.
    let (in_a, in_b) = (TestKey::p256("shared"), TestKey::ed25519("shared"));
    let (also_b, shadowed_b, neither) = (
        TestKey::p256("shared"),
        TestKey::p256("shared"),
        TestKey::p256("shared"),
    );
    let f = two_urls(&[&in_a], &[&also_b, &in_b, &shadowed_b], no_jitter()).await;
    assert_eq!(f.reason(&in_a).await, "valid");
    assert_eq!(f.reason(&in_b).await, "valid");
    // ES256 under `shared`: A's key fails, B's first P-256 key verifies.
    assert_eq!(f.reason(&also_b).await, "valid");
    assert_eq!(f.requests(), (1, 1), "no refetch: the keys were all cached");

    // Inside one document the first fitting key is the one, as for a single URL: B's
    // second P-256 `shared` key verifies nothing (after one refetch of both URLs, which
    // finds nothing new).
    assert_eq!(f.reason(&shadowed_b).await, "bad_signature");
    assert_eq!(f.requests(), (2, 2));
    // A key neither document has under that kid: a bad signature, not a pass.
    assert_eq!(f.reason(&neither).await, "bad_signature");
    assert_eq!(f.requests(), (3, 3));

    let status = f.status();
    assert_eq!(status.jwks_uri, None);
    assert_eq!(status.state, ProviderState::Fresh);
    assert_eq!(status.sources.len(), 2);
    assert_eq!(status.sources[0].url, f.a.jwks_url());
    assert_eq!(status.sources[0].kids, ["shared"]);
    assert_eq!(status.sources[1].kids, ["shared"; 3]);
    assert_eq!(status.kids.len(), 4, "the union");
}

#[tokio::test]
async fn one_url_timing_out_never_takes_down_the_others_or_its_own_cached_keys() {
    let (k1, k2) = (TestKey::shared_p256("k1"), TestKey::shared_ed25519("k2"));
    let mut cache = no_jitter();
    cache.stale_window = Duration::from_secs(3600);
    let f = two_urls(&[k1], &[k2], cache).await;
    f.a.set_default_headers([("Cache-Control", "max-age=300")]);
    f.b.set_default_headers([("Cache-Control", "max-age=300")]);
    assert_eq!(f.reason(k1).await, "valid");
    assert_eq!(f.reason(k2).await, "valid");

    // B stops answering in time; A rotates in k3.
    f.b.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[k2])).delay(Duration::from_secs(30)),
    );
    f.clock.advance(Duration::from_secs(400));
    f.verifier.refresh(&TwoUrls::id()).await.unwrap();
    let status = f.status();
    assert_eq!(status.state, ProviderState::Failing);
    assert_eq!(status.sources[0].state, ProviderState::Fresh);
    assert_eq!(status.sources[1].state, ProviderState::Failing);
    let err = status.sources[1].last_error.as_ref().unwrap();
    assert_eq!(err.reason, "timeout");
    assert!(status.sources[0].last_error.is_none());
    assert_eq!(status.sources[1].refresh_errors, 1);
    // B's keys are past their freshness but inside their stale window: still served.
    assert_eq!(f.reason(k1).await, "valid");
    assert_eq!(f.reason(k2).await, "valid");

    // A rotation on A: the forced refetch asks A and skips B, which is backing off, so the
    // new key verifies at once instead of after B's timeout.
    let k3 = TestKey::shared_p384("k3");
    f.a.set_jwks(jwks(&[k1, k3]));
    let before = f.requests();
    let started = tokio::time::Instant::now();
    assert_eq!(f.reason(k3).await, "valid");
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(f.requests(), (before.0 + 1, before.1));
    assert_eq!(f.reason(k2).await, "valid");

    // Past B's own stale window (A stays fresh), B's keys leave the union at the next
    // install; A's keys are untouched.
    f.clock.advance(Duration::from_secs(3700));
    f.verifier.refresh(&TwoUrls::id()).await.unwrap();
    let status = f.status();
    assert_eq!(status.sources[1].state, ProviderState::Unavailable);
    assert!(status.sources[1].kids.is_empty());
    assert_eq!(status.kids, ["k1", "k3"]);
    assert_eq!(f.reason(k1).await, "valid");
    assert_eq!(f.reason(k3).await, "valid");
    assert_eq!(f.reason(k2).await, "unknown_kid");

    // B recovers: its keys come back, A's stay.
    f.b.clear_responses("/jwks");
    f.verifier.refresh(&TwoUrls::id()).await.unwrap();
    let status = f.status();
    assert_eq!(status.state, ProviderState::Fresh);
    assert_eq!(status.sources[1].state, ProviderState::Fresh);
    assert_eq!(f.reason(k2).await, "valid");
}

#[tokio::test]
async fn a_provider_fails_only_when_no_url_has_usable_keys() {
    let (k1, k2) = (TestKey::shared_p256("k1"), TestKey::shared_ed25519("k2"));
    let f = two_urls(&[k1], &[k2], no_jitter()).await;
    f.a.set_response("/jwks", StubResponse::status(503));
    // A is down from the start: B's keys serve, A's state says why it has none.
    assert_eq!(f.reason(k2).await, "valid");
    assert_eq!(f.reason(k1).await, "unknown_kid");
    let status = f.status();
    assert_eq!(status.state, ProviderState::Failing);
    assert!(status.state.has_usable_keys());
    assert_eq!(status.sources[0].state, ProviderState::Unavailable);
    assert_eq!(
        status.sources[0].last_error.as_ref().unwrap().reason,
        "http_status"
    );

    // Both down on a fresh verifier: keys unavailable.
    let g = two_urls(&[k1], &[k2], no_jitter()).await;
    g.a.set_response("/jwks", StubResponse::status(503));
    g.b.set_response("/jwks", StubResponse::status(500));
    assert_eq!(g.reason(k1).await, "keys_unavailable");
    assert_eq!(g.status().state, ProviderState::Empty);
}

#[tokio::test]
async fn a_rotation_on_one_url_costs_the_other_a_revalidation_within_the_budget() {
    let (k1, k2) = (TestKey::shared_p256("k1"), TestKey::shared_ed25519("k2"));
    let mut cache = no_jitter();
    cache.unknown_kid_burst = 2;
    cache.negative_ttl = Duration::from_secs(60);
    let f = two_urls(&[k1], &[k2], cache).await;
    f.a.set_default_headers([("Cache-Control", "max-age=300"), ("ETag", "\"a1\"")]);
    f.b.set_default_headers([("Cache-Control", "max-age=3600"), ("ETag", "\"b1\"")]);
    assert_eq!(f.reason(k1).await, "valid");

    // A rotates in k3. One forced refetch: A answers with the new set, B (the unknown kid
    // could be in either document) is asked conditionally and answers 304.
    let k3 = TestKey::shared_p384("k3");
    f.a.set_jwks(jwks(&[k1, k3]));
    f.a.set_default_headers([("Cache-Control", "max-age=300"), ("ETag", "\"a2\"")]);
    assert_eq!(f.reason(k3).await, "valid");
    assert_eq!(f.requests(), (2, 2));
    let conditional = f.b.last_request_headers("/jwks").unwrap();
    assert_eq!(conditional.get("if-none-match").unwrap(), "\"b1\"");
    assert_eq!(f.status().sources[1].kids, ["k2"]);
    assert_eq!(f.status().sources[1].refreshes, 2);

    // Random kids: the second token of the burst proves one absent, then the budget is
    // spent and nothing more reaches either URL.
    let ghosts: Vec<TestKey> = (0..4).map(|i| TestKey::p256(format!("ghost{i}"))).collect();
    for ghost in &ghosts {
        assert_eq!(f.reason(ghost).await, "unknown_kid");
    }
    assert_eq!(
        f.requests(),
        (3, 3),
        "one refetch of each URL: the burst left"
    );
    // The kid proven absent by that refetch (both URLs answered) is remembered for a second
    // at first (a late publication costs little), then for longer at each further miss: once
    // the bucket has refilled, asking again costs one round, and right after it none.
    assert_eq!(f.reason(&ghosts[0]).await, "unknown_kid");
    assert_eq!(f.requests(), (3, 3));
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(f.reason(&ghosts[0]).await, "unknown_kid");
    assert_eq!(f.requests(), (4, 4));
    assert_eq!(f.reason(&ghosts[0]).await, "unknown_kid");
    assert_eq!(f.requests(), (4, 4));
}

#[tokio::test]
async fn adopting_a_peers_document_for_one_url_keeps_the_others() {
    let (k1, k2, k3) = (
        TestKey::shared_p256("k1"),
        TestKey::shared_ed25519("k2"),
        TestKey::shared_p384("k3"),
    );
    let f = two_urls(&[k1], &[k2], no_jitter()).await;
    assert_eq!(f.reason(k1).await, "valid");
    let published = f.verifier.key_sets().remove(0).1;
    assert_eq!(published.documents.len(), 2);
    assert!(published.jwks.is_empty());
    assert_eq!(published.documents[1].url, f.b.jwks_url());

    // A peer fetched A later and found k3; it never fetched B.
    f.clock.advance(Duration::from_secs(10));
    let later = published.fetched_at + Duration::from_secs(10);
    let doc = jwks(&[k1, k3]).to_string();
    let set = PublishedKeySet::from_documents(vec![PublishedDocument::new(
        f.a.jwks_url(),
        doc.as_str(),
        later,
        later + Duration::from_secs(300),
        None,
    )]);
    assert_eq!(f.verifier.adopt(&TwoUrls::id(), set.clone()), Ok(true));
    assert_eq!(f.verifier.adopt(&TwoUrls::id(), set), Ok(false), "held");
    let before = f.requests();
    for key in [k1, k2, k3] {
        assert_eq!(f.reason(key).await, "valid");
    }
    assert_eq!(f.requests(), before, "adopted, not fetched");
    let status = f.status();
    assert_eq!(status.sources[0].kids, ["k1", "k3"]);
    assert_eq!(status.sources[1].kids, ["k2"]);

    // A peer's set with both documents: its A is newer than ours (k3 withdrawn), its B older
    // (and different). We take its A and keep our own B.
    let newer = later + Duration::from_secs(20);
    let set = PublishedKeySet::from_documents(vec![
        PublishedDocument::new(
            f.a.jwks_url(),
            jwks(&[k1]).to_string(),
            newer,
            newer + Duration::from_secs(300),
            None,
        ),
        PublishedDocument::new(
            f.b.jwks_url(),
            jwks(&[k3]).to_string(),
            published.documents[1].fetched_at - Duration::from_secs(60),
            newer + Duration::from_secs(300),
            None,
        ),
    ]);
    f.clock.advance(Duration::from_secs(20));
    assert_eq!(f.verifier.adopt(&TwoUrls::id(), set), Ok(true));
    let status = f.status();
    assert_eq!(status.sources[0].kids, ["k1"]);
    assert_eq!(status.sources[1].kids, ["k2"], "our newer B stays");
    assert_eq!(f.reason(k2).await, "valid");

    // A document for a URL this provider does not list is no set at all.
    let stray = PublishedKeySet::from_documents(vec![PublishedDocument::new(
        "https://elsewhere.example/jwks",
        doc.as_str(),
        later + Duration::from_secs(5),
        later + Duration::from_secs(300),
        None,
    )]);
    assert!(f.verifier.adopt(&TwoUrls::id(), stray).is_err());
}

#[tokio::test]
async fn a_flush_drops_every_documents_keys_and_refetches_every_url() {
    let (k1, k2) = (TestKey::shared_p256("k1"), TestKey::shared_ed25519("k2"));
    let f = two_urls(&[k1], &[k2], no_jitter()).await;
    f.b.set_default_headers([("Cache-Control", "max-age=3600"), ("ETag", "\"b1\"")]);
    assert_eq!(f.reason(k1).await, "valid");
    let k3 = TestKey::shared_p384("k3");
    f.b.set_jwks(jwks(&[k3]));
    f.verifier.flush(&TwoUrls::id()).unwrap();
    // The refetch starts at once and asks both URLs unconditionally: nothing is held.
    for _ in 0..100 {
        if f.status().sources.iter().all(|s| s.fetched_at.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.requests(), (2, 2));
    assert!(
        f.b.last_request_headers("/jwks")
            .unwrap()
            .get("if-none-match")
            .is_none()
    );
    assert_eq!(f.reason(k3).await, "valid");
    // k2, withdrawn by B's new document, is refused without a fetch.
    assert_eq!(f.reason(k2).await, "unknown_kid");
    assert_eq!(f.requests(), (2, 2));
}

#[test]
fn jwks_uris_are_validated() {
    let build = |urls: Vec<&str>| {
        ProviderConfig::builder("t", "p", "https://issuer.example")
            .audiences(["x"])
            .jwks_uris(urls)
            .build()
    };
    let two = build(vec!["https://a.example/jwks", "https://b.example/jwks"]).unwrap();
    assert_eq!(two.jwks_uris().len(), 2);
    assert_eq!(two.jwks_uri(), None);
    // One URL is a plain jwks_uri.
    let one = build(vec!["https://a.example/jwks"]).unwrap();
    assert_eq!(one.jwks_uri().unwrap().as_str(), "https://a.example/jwks");
    for (urls, problem) in [
        (vec!["https://a.example/jwks", "not a url"], "entry 1"),
        (vec!["https://a.example/j", "https://a.example/j"], "twice"),
        (vec!["https://a.example/j"; 9], "at most 8"),
    ] {
        let err = build(urls).unwrap_err();
        assert_eq!(err.field, "jwks_uris");
        assert!(err.problem.contains(problem), "{}", err.problem);
    }
    let both = ProviderConfig::builder("t", "p", "https://issuer.example")
        .audiences(["x"])
        .jwks_uri("https://a.example/jwks")
        .jwks_uris(["https://b.example/jwks", "https://c.example/jwks"])
        .build()
        .unwrap_err();
    assert_eq!(both.field, "jwks_uris");
}
