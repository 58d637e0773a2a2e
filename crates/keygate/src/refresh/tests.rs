use super::*;
use crate::clock::{Clock, SystemClock};
use crate::config::{CacheSettings, ProviderConfig};
use crate::exchange::PublishedKeySet;
use crate::fetch::{Fetch, FetchError, FetchRequest, FetchResponse};
use crate::provider::Provider;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use futures_util::future::BoxFuture;
use http::StatusCode;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

/// Serves whatever key set it holds, and counts requests. While the gate is shut, answers
/// wait (with the body as it was when the request arrived).
#[derive(Debug)]
struct ScriptedJwks {
    body: Mutex<Vec<u8>>,
    requests: AtomicUsize,
    gate: watch::Sender<bool>,
}

impl Default for ScriptedJwks {
    fn default() -> Self {
        ScriptedJwks {
            body: Mutex::default(),
            requests: AtomicUsize::new(0),
            gate: watch::channel(true).0,
        }
    }
}

impl ScriptedJwks {
    fn serve(&self, keys: &[&serde_json::Value]) {
        *lock(&self.body) = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Fetch for ScriptedJwks {
    fn fetch(&self, _: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let body = lock(&self.body).clone();
        let mut gate = self.gate.subscribe();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(FetchResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: body.into(),
            })
        })
    }
}

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn advance(&self, by: Duration) {
        *lock(&self.0) += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *lock(&self.0)
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ed25519_jwk(kid: &str) -> serde_json::Value {
    let pair = Ed25519KeyPair::generate().unwrap();
    let x = base64_simd::URL_SAFE_NO_PAD.encode_to_string(pair.public_key().as_ref());
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
}

/// A provider with a one-token refetch budget ([`one_token_budget`]) whose IdP serves `keys`,
/// after its first refresh: the IdP, the provider and the keys that refresh installed.
async fn refreshed(
    keys: &[&serde_json::Value],
    clock: Arc<dyn Clock>,
) -> (Arc<ScriptedJwks>, Arc<Provider>, Arc<Snapshot>) {
    let fetch = Arc::new(ScriptedJwks::default());
    fetch.serve(keys);
    let config = ProviderConfig::builder("t", "p", "https://issuer.test")
        .audiences(["x"])
        .jwks_uri("https://issuer.test/jwks")
        .cache(one_token_budget())
        .build()
        .unwrap();
    let provider = Provider::new(config, fetch.clone(), clock, None).unwrap();
    let keys = provider.refresh().await.unwrap();
    (fetch, provider, keys)
}

/// The refetch a request that saw `seen` forces for `kid`, which runs and succeeds.
async fn refetched(provider: &Arc<Provider>, kid: &str, seen: &Snapshot) -> Arc<Snapshot> {
    provider
        .forced_refresh(Some(kid), seen)
        .await
        .unwrap()
        .unwrap()
}

fn one_token_budget() -> CacheSettings {
    CacheSettings {
        unknown_kid_burst: 1,
        negative_ttl: Duration::from_secs(60),
        refresh_jitter: Duration::ZERO,
        ..CacheSettings::default()
    }
}

/// Lets spawned tasks run without letting paused time advance on its own.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_refetch_that_already_happened_is_not_paid_for_again() {
    let (a, b) = (ed25519_jwk("a"), ed25519_jwk("b"));
    let (fetch, provider, old) = refreshed(&[&a], Arc::new(SystemClock)).await;
    // The IdP rotates; one request's forced refetch (the whole budget) finds the new key.
    fetch.serve(&[&a, &b]);
    let new = refetched(&provider, "b", &old).await;
    assert_ne!(new.generation, old.generation);
    assert_eq!(fetch.requests(), 2);
    // A request that looked at the old keys before that refetch landed gets the new ones,
    // although the budget is spent, and costs the IdP nothing.
    let late = refetched(&provider, "b", &old).await;
    assert_eq!(late.generation, new.generation);
    assert_eq!(fetch.requests(), 2);
    // A kid missing from the newest keys still gets no refetch without budget.
    assert!(provider.forced_refresh(Some("c"), &new).await.is_none());
    assert_eq!(fetch.requests(), 2);
}

#[tokio::test]
async fn a_refetch_begun_before_the_kid_was_asked_for_proves_nothing() {
    let (a, b) = (ed25519_jwk("a"), ed25519_jwk("b"));
    let clock = Arc::new(SystemClock);
    let (fetch, provider, old) = refreshed(&[&a], clock).await;

    // A refetch is under way, its request answered before the IdP rotates...
    fetch.gate.send_replace(false);
    let early = provider.refresh();
    settle().await;
    assert_eq!(fetch.requests(), 2);
    fetch.serve(&[&a, &b]);
    // ... when a token with the new kid arrives and joins it.
    let joiner = {
        let (provider, old) = (Arc::clone(&provider), Arc::clone(&old));
        tokio::spawn(async move { provider.forced_refresh(Some("b"), &old).await })
    };
    settle().await;
    assert_eq!(
        provider.refresher.started.load(Ordering::SeqCst),
        2,
        "joined"
    );
    fetch.gate.send_replace(true);
    assert!(!early.await.unwrap().keys.has_kid("b"));
    // The joined answer lacked the kid but predates the request: one refetch of its own,
    // on the budget, finds it. Nothing was remembered as missing.
    let found = joiner.await.unwrap().unwrap().unwrap();
    assert!(found.keys.has_kid("b"));
    assert_eq!(fetch.requests(), 3);
    assert!(!provider.refresher.is_negative("b", SystemClock.now()));
}

#[tokio::test]
async fn without_budget_an_inconclusive_answer_is_neither_remembered_nor_final() {
    let (a, b) = (ed25519_jwk("a"), ed25519_jwk("b"));
    let clock = Arc::new(TestClock(Mutex::new(t0())));
    let (fetch, provider, old) = refreshed(&[&a], clock.clone()).await;
    // A kid the IdP's answer to our own refetch lacked: proven missing, remembered.
    let spent = provider.forced_refresh(Some("x"), &old).await.unwrap();
    assert!(!spent.unwrap().keys.has_kid("x"));
    assert!(provider.refresher.is_negative("x", clock.now()));

    fetch.gate.send_replace(false);
    let early = provider.refresh();
    settle().await;
    fetch.serve(&[&a, &b]);
    let joiner = {
        let (provider, old) = (Arc::clone(&provider), Arc::clone(&old));
        tokio::spawn(async move { provider.forced_refresh(Some("b"), &old).await })
    };
    settle().await;
    fetch.gate.send_replace(true);
    let _ = early.await;
    // The joined answer predates the request and the bucket is empty: refused for now,
    // not remembered, and one refetch deferred to the next token.
    let answer = joiner.await.unwrap().unwrap().unwrap();
    assert!(!answer.keys.has_kid("b"));
    assert!(!provider.refresher.is_negative("b", clock.now()));
    assert_eq!(
        lock(&provider.refresher.bucket).deferred,
        Some(t0() + Duration::from_secs(15))
    );
    // Once the bucket has a token again, the kid forces a refetch and is found.
    clock.advance(Duration::from_secs(15));
    let found = provider.forced_refresh(Some("b"), &answer).await.unwrap();
    assert!(found.unwrap().keys.has_kid("b"));
}

#[tokio::test]
async fn keys_that_changed_before_the_request_do_not_prove_a_kid_missing() {
    let (a, b, c) = (ed25519_jwk("a"), ed25519_jwk("b"), ed25519_jwk("c"));
    let (fetch, provider, seen) = refreshed(&[&a], Arc::new(SystemClock)).await;
    // Another refresh lands new keys (without "b") after the request looked at `seen`.
    fetch.serve(&[&a, &c]);
    let changed = provider.refresh().await.unwrap();
    assert_ne!(changed.generation, seen.generation);
    fetch.serve(&[&a, &b, &c]);
    // Those keys began before the request asked: they settle nothing, so a refetch runs.
    let found = provider.forced_refresh(Some("b"), &seen).await.unwrap();
    assert!(found.unwrap().keys.has_kid("b"));
    assert_eq!(fetch.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_empty_bucket_defers_exactly_one_refetch_to_its_next_token() {
    let (a, new) = (ed25519_jwk("a"), ed25519_jwk("new"));
    let clock = Arc::new(TestClock(Mutex::new(t0())));
    let (fetch, provider, snap) = refreshed(&[&a], clock.clone()).await;
    assert!(provider.forced_refresh(Some("x"), &snap).await.is_some());
    assert_eq!(fetch.requests(), 2);
    for kid in ["y", "z", "w"] {
        assert!(provider.forced_refresh(Some(kid), &snap).await.is_none());
    }
    let due = t0() + Duration::from_secs(15);
    assert_eq!(lock(&provider.refresher.bucket).deferred, Some(due));

    fetch.serve(&[&a, &new]);
    let advance = |secs| {
        let clock = Arc::clone(&clock);
        async move {
            clock.advance(Duration::from_secs(secs));
            tokio::time::advance(Duration::from_secs(secs)).await;
            settle().await;
        }
    };
    advance(14).await;
    assert_eq!(fetch.requests(), 2);
    // At the refill moment the background refresher spends the token, without a request.
    advance(1).await;
    assert_eq!(fetch.requests(), 3);
    assert!(
        provider
            .snapshot
            .load()
            .as_ref()
            .unwrap()
            .keys
            .has_kid("new")
    );
    assert_eq!(lock(&provider.refresher.bucket).deferred, None);
    // Nothing more is due: the bucket is empty again and nobody asked since.
    advance(60).await;
    assert_eq!(fetch.requests(), 3);
}

#[tokio::test]
async fn an_adopted_set_is_installed_once_and_reschedules_the_refresher() {
    let a = ed25519_jwk("a");
    let clock = Arc::new(TestClock(Mutex::new(t0())));
    let (fetch, provider, fetched) = refreshed(&[&a], clock.clone()).await;
    // Default TTL five minutes, refreshed 30 s ahead (no jitter).
    let first = lock(&provider.refresher.state).next_attempt_at;
    assert_eq!(first, t0() + Duration::from_secs(270));

    clock.advance(Duration::from_secs(200));
    let later = t0() + Duration::from_secs(200);
    let set = PublishedKeySet::new(
        String::from_utf8(lock(&fetch.body).clone()).unwrap(),
        later,
        later + Duration::from_secs(300),
        None,
    );
    assert_eq!(provider.adopt(&set), Ok(true));
    let adopted = provider.snapshot.load_full().unwrap();
    assert_eq!(adopted.generation, fetched.generation, "same keys");
    assert_eq!(adopted.fetch_seq, None);
    assert_eq!(
        lock(&provider.refresher.state).next_attempt_at,
        later + Duration::from_secs(270)
    );
    // Replaying it changes nothing.
    assert_eq!(provider.adopt(&set), Ok(false));
    assert_eq!(provider.counters.adopted.load(Ordering::Relaxed), 1);
    assert_eq!(fetch.requests(), 1);
}

#[test]
fn bucket_allows_burst_then_refills_over_time() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let secs = Duration::from_secs;
    let mut b = Bucket {
        tokens: 2.0,
        burst: 2.0,
        refill: secs(15),
        last: t0,
        deferred: None,
    };
    assert!(b.try_take(t0));
    assert!(b.try_take(t0));
    assert!(!b.try_take(t0));
    assert_eq!(b.next_token_at(t0 + secs(4)), Some(t0 + secs(15)));
    assert!(!b.try_take(t0 + secs(14)));
    assert!(b.try_take(t0 + secs(15)));
    assert!(!b.try_take(t0 + secs(16)));
    assert_eq!(b.next_token_at(t0 + secs(16)), Some(t0 + secs(30)));
    // Never more than the burst, however long it rested.
    let later = t0 + secs(10_000);
    assert!(b.try_take(later));
    assert!(b.try_take(later));
    assert!(!b.try_take(later));
    // Without a burst of one, no token ever comes.
    let mut none = Bucket {
        tokens: 0.0,
        burst: 0.0,
        refill: secs(15),
        last: t0,
        deferred: None,
    };
    assert_eq!(none.next_token_at(later), None);
}
