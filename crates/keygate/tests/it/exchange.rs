//! Sharing key sets between replicas: sets from a key exchange instead of fetches, publishing
//! what was fetched, adopting pushed sets, and handing sets over for a warm start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate::fetch::BoxFuture;
use keygate::{
    AdoptError, FlushId, JwksError, KeyExchange, ProviderConfig, ProviderId, ProviderState,
    PublishedKeySet, Verifier,
};
use keygate_test_support::{TestKey, jwks};
use serde_json::json;

use crate::memidp::{AUD, Rig, T0, exact_cache};

/// Offers a set (once, or every time) and records what it is asked (the fetch time of the
/// set held, and the flush asked under) and handed. Shared with the flush tests.
#[derive(Debug, Default)]
pub(crate) struct TestExchange {
    offer: Mutex<Option<PublishedKeySet>>,
    offer_every_time: AtomicBool,
    asked: Mutex<Vec<(Option<SystemTime>, Option<FlushId>)>>,
    published: Mutex<Vec<PublishedKeySet>>,
}

impl TestExchange {
    fn offering(set: PublishedKeySet) -> Arc<Self> {
        let exchange = Arc::new(TestExchange::default());
        exchange.offer(set);
        exchange
    }

    /// Offers `set` to the next fetch only.
    fn offer(&self, set: PublishedKeySet) {
        *self.offer.lock().unwrap() = Some(set);
    }

    /// Offers `set` to every fetch from now on.
    pub(crate) fn offer_every_time(&self, set: PublishedKeySet) {
        self.offer_every_time.store(true, Ordering::SeqCst);
        self.offer(set);
    }

    fn asked(&self) -> Vec<Option<SystemTime>> {
        let asked = self.asked.lock().unwrap();
        asked.iter().map(|(held, _)| *held).collect()
    }

    /// The flush each fetch asked under, in order.
    pub(crate) fn asked_under(&self) -> Vec<Option<FlushId>> {
        let asked = self.asked.lock().unwrap();
        asked.iter().map(|(_, flush)| flush.clone()).collect()
    }

    fn published(&self) -> Vec<PublishedKeySet> {
        self.published.lock().unwrap().clone()
    }
}

impl KeyExchange for TestExchange {
    fn before_fetch<'a>(
        &'a self,
        _: &'a ProviderId,
        held: Option<SystemTime>,
        flush: Option<&'a FlushId>,
    ) -> BoxFuture<'a, Option<PublishedKeySet>> {
        self.asked.lock().unwrap().push((held, flush.cloned()));
        let mut offer = self.offer.lock().unwrap();
        let offer = if self.offer_every_time.load(Ordering::SeqCst) {
            offer.clone()
        } else {
            offer.take()
        };
        Box::pin(async move { offer })
    }

    fn fetched(&self, _: &ProviderId, set: &PublishedKeySet) {
        self.published.lock().unwrap().push(set.clone());
    }
}

fn at(offset_secs: i64) -> SystemTime {
    let t0 = UNIX_EPOCH + Duration::from_secs(T0);
    let by = Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs < 0 { t0 - by } else { t0 + by }
}

/// A set of `keys` a peer fetched at `T0 + fetched` and holds fresh for five minutes.
fn peer_set(keys: &[&TestKey], fetched: i64) -> PublishedKeySet {
    PublishedKeySet::new(jwks(keys).to_string(), at(fetched), at(fetched + 300), None)
}

/// A rig whose IdP serves `k1` and that asks an exchange, offering nothing yet, before each
/// fetch; the exchange is returned to script it.
fn exchanging_rig() -> (Arc<TestExchange>, Rig) {
    let exchange = Arc::new(TestExchange::default());
    let rig = Rig::new(&[k1()], exact_cache(), Some(exchange.clone()));
    (exchange, rig)
}

/// [`exchanging_rig`] once a `k1` token verified, its keys fetched from the IdP.
async fn exchanging_rig_after_k1() -> (Arc<TestExchange>, Rig) {
    let (exchange, rig) = exchanging_rig();
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    (exchange, rig)
}

fn k1() -> &'static TestKey {
    TestKey::shared_p256("k1")
}

fn k2() -> &'static TestKey {
    TestKey::shared_ed25519("k2")
}

#[tokio::test]
async fn a_set_from_the_exchange_is_used_instead_of_fetching_and_not_published_again() {
    let exchange = TestExchange::offering(peer_set(&[k1()], -10));
    let rig = Rig::new(&[k1()], exact_cache(), Some(exchange.clone()));
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    assert_eq!(rig.idp.requests(), 0);
    assert_eq!(exchange.asked(), vec![None]);
    assert!(exchange.published().is_empty());
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Fresh);
    assert_eq!(status.counters.adopted, 1);
    assert_eq!(status.counters.refreshes, 0);
    // The publisher's times, under our policy.
    assert_eq!(status.fetched_at, Some(at(-10)));
    assert_eq!(status.expires_at, Some(at(290)));
}

#[tokio::test]
async fn a_set_from_the_exchange_that_cannot_be_used_falls_back_to_the_issuer() {
    let too_many: Vec<_> = (0..101)
        .map(|i| TestKey::shared_p256(&format!("n{i}")))
        .collect();
    let unusable = [
        (
            "not json",
            PublishedKeySet::new("<html>", at(0), at(300), None),
        ),
        ("no usable key", peer_set(&[], 0)),
        ("too many keys", peer_set(&too_many, 0)),
        (
            "too large",
            PublishedKeySet::new(" ".repeat(2 << 20), at(0), at(300), None),
        ),
        ("no longer fresh", peer_set(&[k1()], -400)),
    ];
    for (what, set) in unusable {
        let exchange = TestExchange::offering(set);
        let rig = Rig::new(&[k1()], exact_cache(), Some(exchange.clone()));
        assert_eq!(rig.reason(&rig.token(k1())).await, "valid", "{what}");
        assert_eq!(rig.idp.requests(), 1, "{what}");
        let status = rig.status();
        assert_eq!(
            (status.counters.adopted, status.counters.refreshes),
            (0, 1),
            "{what}"
        );
        assert_eq!(exchange.published().len(), 1, "{what}");
    }
}

#[tokio::test]
async fn a_set_no_newer_than_the_one_held_is_not_used() {
    let (exchange, rig) = exchanging_rig_after_k1().await;
    rig.clock.advance(Duration::from_secs(10));
    exchange.offer(peer_set(&[k1(), k2()], 0));
    rig.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(exchange.asked(), vec![None, Some(at(0))]);
    assert_eq!(rig.idp.requests(), 2);
    assert_eq!(rig.status().counters.adopted, 0);
}

#[tokio::test]
async fn fetched_is_called_once_per_fetch_from_the_issuer_and_never_for_adopted_sets() {
    let (exchange, rig) = exchanging_rig();
    rig.idp.set_etag("\"v1\"");
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    let published = exchange.published();
    assert_eq!(
        published,
        vec![PublishedKeySet::new(
            rig.idp.document(),
            at(0),
            at(300),
            Some("\"v1\"".into())
        )]
    );

    // A 304 extends the freshness: published too, with the document it confirmed.
    rig.clock.advance(Duration::from_secs(100));
    rig.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(rig.idp.requests(), 2);
    let published = exchange.published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[1].jwks, published[0].jwks);
    assert_eq!(
        (published[1].fetched_at, published[1].fresh_until),
        (at(100), at(400))
    );

    // A set adopted from the exchange is neither fetched nor published.
    rig.clock.advance(Duration::from_secs(100));
    exchange.offer(peer_set(&[k1(), k2()], 150));
    rig.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(rig.idp.requests(), 2);
    assert_eq!(exchange.published().len(), 2);
    let counters = rig.status().counters;
    assert_eq!((counters.refreshes, counters.adopted), (2, 1));
}

#[tokio::test]
async fn a_forced_refetch_looks_the_kid_up_in_the_set_from_the_exchange() {
    let (exchange, rig) = exchanging_rig_after_k1().await;
    // A peer saw the rotation; this IdP would still answer with the old set.
    rig.clock.advance(Duration::from_secs(10));
    exchange.offer(peer_set(&[k1(), k2()], 5));
    assert_eq!(rig.reason(&rig.token(k2())).await, "valid");
    assert_eq!(rig.idp.requests(), 1);
    let counters = rig.status().counters;
    assert_eq!(counters.adopted, 1);
    assert_eq!(counters.unknown_kid_rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn adopting_identical_keys_keeps_verified_tokens_and_pushes_the_next_refresh_out() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let token = rig.token(k1());
    assert_eq!(rig.reason(&token).await, "valid");
    assert_eq!(rig.reason(&token).await, "valid");
    assert_eq!(rig.status().counters.token_cache_hits, 1);
    // Fetched at T0, fresh for the default five minutes: refreshed at T0 + 270 s.

    rig.advance(200).await;
    let same = PublishedKeySet::new(rig.idp.document(), at(200), at(500), None);
    assert_eq!(rig.verifier.adopt(&Rig::id(), same), Ok(true));
    assert_eq!(rig.reason(&token).await, "valid");
    assert_eq!(rig.status().counters.token_cache_hits, 2, "same generation");
    assert_eq!(rig.status().expires_at, Some(at(500)));

    // Past the old refresh time: nothing. Past the adopted one (T0 + 470 s): one fetch.
    for (secs, requests) in [(80, 1), (185, 1), (10, 2)] {
        rig.advance(secs).await;
        assert_eq!(rig.idp.requests(), requests, "{secs} s later");
    }
}

#[tokio::test]
async fn adopting_other_keys_replaces_them_like_a_fetched_set() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let token = rig.token(k1());
    assert_eq!(rig.reason(&token).await, "valid");
    rig.clock.advance(Duration::from_secs(10));
    let rotated = peer_set(&[k1(), k2()], 10);
    assert_eq!(rig.verifier.adopt(&Rig::id(), rotated), Ok(true));
    // The verified token was dropped with the old generation (verified again, not a hit),
    // and the new key verifies without a fetch.
    assert_eq!(rig.reason(&token).await, "valid");
    assert_eq!(rig.reason(&rig.token(k2())).await, "valid");
    let status = rig.status();
    assert_eq!(status.counters.token_cache_hits, 0);
    assert_eq!(status.kids, vec!["k1".to_owned(), "k2".to_owned()]);
    assert_eq!(rig.idp.requests(), 1);
}

#[tokio::test]
async fn adopting_clears_a_failure_like_a_successful_fetch() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    rig.idp.serve_document(json!({"keys": []}));
    rig.clock.advance(Duration::from_secs(10));
    assert!(rig.verifier.refresh(&Rig::id()).await.is_err());
    assert_eq!(rig.status().state, ProviderState::Failing);
    let peer = peer_set(&[k1()], 10);
    assert_eq!(rig.verifier.adopt(&Rig::id(), peer), Ok(true));
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Fresh);
    assert!(status.last_error.is_none());
}

#[tokio::test]
async fn adopt_ignores_older_sets_and_refuses_what_it_cannot_use() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let id = Rig::id();
    // Nothing held yet: a set past this provider's stale window is of no use.
    let ancient = peer_set(&[k1()], -2 * 3600);
    assert_eq!(rig.verifier.adopt(&id, ancient), Ok(false));
    assert_eq!(rig.status().state, ProviderState::Empty);

    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    for older in [0, -1] {
        let set = peer_set(&[k1(), k2()], older);
        assert_eq!(rig.verifier.adopt(&id, set), Ok(false), "{older}");
    }
    let garbage = PublishedKeySet::new("<html>", at(1), at(301), None);
    let err = rig.verifier.adopt(&id, garbage).unwrap_err();
    assert_eq!(err, AdoptError::MalformedJwks(JwksError::NotAJwkSet));
    assert_eq!(err.reason(), "malformed_jwks");
    let empty = peer_set(&[], 1);
    assert_eq!(
        rig.verifier.adopt(&id, empty),
        Err(AdoptError::MalformedJwks(JwksError::Empty))
    );
    assert_eq!(rig.status().kids, vec!["k1".to_owned()]);

    let nobody = ProviderId::new("acme", "nobody");
    let err = rig
        .verifier
        .adopt(&nobody, peer_set(&[k1()], 1))
        .unwrap_err();
    assert!(matches!(err, AdoptError::UnknownProvider(_)), "{err}");
    assert_eq!(err.reason(), "unknown_provider");

    let fixed = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "fixed", "https://fixed.test")
                .static_jwks(jwks(&[k1()]).to_string())
                .audiences([AUD])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let id = ProviderId::new("acme", "fixed");
    let err = fixed.adopt(&id, peer_set(&[k2()], 1)).unwrap_err();
    assert_eq!(err, AdoptError::Static(id));
    assert_eq!(err.reason(), "static_provider");
    assert!(fixed.key_sets().is_empty());
}

#[tokio::test]
async fn key_sets_hand_what_each_provider_holds_to_a_warm_start() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    assert!(rig.verifier.key_sets().is_empty());
    rig.idp.set_etag("\"v1\"");
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    let held = rig.verifier.key_sets();
    assert_eq!(
        held,
        vec![(
            Rig::id(),
            PublishedKeySet::new(rig.idp.document(), at(0), at(300), Some("\"v1\"".into()))
        )]
    );

    // Another process starts from those sets: it verifies without a fetch, and revalidates
    // with the validator it was handed.
    let warm = Rig::new(&[k1()], exact_cache(), None);
    warm.idp.set_etag("\"v1\"");
    warm.clock.advance(Duration::from_secs(60));
    for (id, set) in held {
        assert_eq!(warm.verifier.adopt(&id, set), Ok(true));
    }
    assert_eq!(warm.reason(&warm.token(k1())).await, "valid");
    assert_eq!(warm.idp.requests(), 0);
    assert_eq!(warm.status().state, ProviderState::Fresh);
    warm.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(warm.status().fetched_at, Some(at(60)), "renewed by a 304");
    assert_eq!(
        warm.verifier.key_sets()[0].1.jwks,
        rig.idp.document().into()
    );
}

#[test]
fn a_set_adopted_before_the_runtime_starts_is_still_refreshed_ahead_of_expiry() {
    // A warm start may adopt before any runtime exists to run the background refresher.
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let persisted = peer_set(&[k1()], 0);
    assert_eq!(rig.verifier.adopt(&Rig::id(), persisted), Ok(true));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
        assert_eq!(rig.idp.requests(), 0);
        rig.advance(271).await;
        assert_eq!(rig.idp.requests(), 1);
    });
}
