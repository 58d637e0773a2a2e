//! How real issuers behave, ridden out: short lifetimes with revalidation, a new key published
//! a moment after its first tokens, a `Retry-After` longer than the stale window, and the
//! requests an IdP actually sees, counted by outcome.
//!
//! The IdP is an in-memory fake that sends `Cache-Control: max-age` (and an `ETag`, answering
//! a matching `If-None-Match` with a 304) and whose requests are timestamped in tokio time.
//! Tokio time is paused and moved together with the manual clock in small steps.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use keygate::fetch::{BoxFuture, FetchRequest, FetchResponse};
use keygate::{
    CacheSettings, Fetch, FetchError, ProviderConfig, ProviderState, RetrySettings, TtlPolicy,
};
use keygate_test_support::{ManualClock, TestKey, jwks};
use serde_json::Value;
use tokio::time::Instant;

use crate::memidp::{AUD, ISSUER, JWKS_URI, T0, settle};
use crate::support::{self, Harness};

fn k1() -> &'static TestKey {
    TestKey::shared_p256("issuers-k1")
}

fn k2() -> &'static TestKey {
    TestKey::shared_ed25519("issuers-k2")
}

/// A one-shot answer, used before the normal one.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status, with `Retry-After: <secs>` when given.
    Status(u16, Option<u64>),
    /// The connection is refused.
    Refused,
    /// Never answers.
    Hang,
}

#[derive(Debug)]
struct Idp {
    document: Mutex<Value>,
    max_age: Option<u64>,
    etag: bool,
    queued: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<Instant>>,
}

impl Idp {
    fn new(max_age: Option<u64>, etag: bool) -> Arc<Self> {
        Arc::new(Idp {
            document: Mutex::new(jwks(&[k1()])),
            max_age,
            etag,
            queued: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        })
    }

    fn serve(&self, keys: &[&TestKey]) {
        *lock(&self.document) = jwks(keys);
    }

    fn push(&self, answer: Answer) {
        lock(&self.queued).push_back(answer);
    }

    fn request_times(&self) -> Vec<Instant> {
        lock(&self.requests).clone()
    }

    fn requests(&self) -> usize {
        lock(&self.requests).len()
    }
}

impl Fetch for Idp {
    fn fetch(
        &self,
        request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        lock(&self.requests).push(Instant::now());
        let queued = lock(&self.queued).pop_front();
        let document = lock(&self.document).to_string();
        // The document's own text is its validator.
        let etag = format!("\"{:x}\"", fxhash(&document));
        let mut headers = HeaderMap::new();
        if let Some(secs) = self.max_age {
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("max-age={secs}")).unwrap(),
            );
        }
        let matched = self.etag
            && request
                .headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
        if self.etag {
            headers.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
        }
        Box::pin(async move {
            let status = match queued {
                Some(Answer::Refused) => {
                    return Err(FetchError::Connect("connection refused".into()));
                }
                Some(Answer::Hang) => std::future::pending().await,
                Some(Answer::Status(status, retry_after)) => {
                    let mut headers = HeaderMap::new();
                    if let Some(secs) = retry_after {
                        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    }
                    return Ok(FetchResponse {
                        status: StatusCode::from_u16(status).unwrap(),
                        headers,
                        body: Default::default(),
                    });
                }
                None if matched => StatusCode::NOT_MODIFIED,
                None => StatusCode::OK,
            };
            Ok(FetchResponse {
                status,
                headers,
                body: if status == StatusCode::OK {
                    document.into()
                } else {
                    Default::default()
                },
            })
        })
    }
}

/// A cheap, stable hash of a string (FNV-1a), for the fake `ETag`.
fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

type Rig = support::Rig<()>;

impl Rig {
    fn new(idp: Arc<Idp>, cache: CacheSettings) -> Rig {
        let clock = Arc::new(ManualClock::at_unix(T0));
        let provider = ProviderConfig::builder("acme", "idp", ISSUER)
            .jwks_uri(JWKS_URI)
            .audiences([AUD])
            .cache(cache)
            .build()
            .unwrap();
        let verifier = crate::support::verifier_of(provider, clock.clone(), idp);
        Rig {
            idp: (),
            harness: Harness::new(clock, verifier, "issuers-attacker"),
        }
    }

    /// Moves the manual clock and paused tokio time together by `ms`, then lets woken tasks
    /// run.
    async fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        tokio::time::advance(Duration::from_millis(ms)).await;
        settle().await;
    }

    fn requests_by_outcome(&self) -> BTreeMap<String, u64> {
        self.verifier.status().remove(0).counters.requests
    }
}

fn cache(min_ttl: u64, ahead_ms: u64, jitter_ms: u64) -> CacheSettings {
    let mut cache = CacheSettings::default();
    let mut ttl = TtlPolicy::default();
    ttl.min_ttl = Duration::from_secs(min_ttl);
    ttl.default_ttl = ttl.default_ttl.max(ttl.min_ttl);
    cache.ttl = ttl;
    cache.refresh_ahead = Duration::from_millis(ahead_ms);
    cache.refresh_jitter = Duration::from_millis(jitter_ms);
    cache
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The issue's case (`max-age=6` with an `ETag`, `min_ttl = 2s`, `refresh_ahead = 1s`, the
/// default 10 s jitter) and its neighbours: whatever the headers and settings, a set is
/// refreshed no sooner than halfway through its lifetime (so at most one request per half
/// lifetime), and early enough that it never expires while the IdP answers.
#[tokio::test(start_paused = true)]
async fn short_lifetimes_are_refreshed_no_sooner_than_halfway() {
    // (max-age sent, min_ttl, refresh_ahead ms, refresh_jitter ms)
    let cases: &[(Option<u64>, u64, u64, u64)] = &[
        (Some(6), 2, 1_000, 10_000),
        (Some(6), 2, 1_000, 0),
        (Some(6), 2, 5_000, 5_000),
        (Some(1), 2, 1_000, 10_000),
        (Some(0), 3, 2_000, 30_000),
        (Some(10), 3, 0, 10_000),
        (Some(30), 5, 4_000, 10_000),
        (Some(60), 5, 30_000, 10_000),
        (Some(300), 60, 30_000, 10_000),
        (None, 4, 3_000, 10_000),
    ];
    let mut figures = Vec::new();
    for &(max_age, min_ttl, ahead, jitter) in cases {
        for etag in [true, false] {
            // Several runs: the jitter is random.
            for _ in 0..3 {
                let idp = Idp::new(max_age, etag);
                let rig = Rig::new(idp.clone(), cache(min_ttl, ahead, jitter));
                assert_eq!(rig.check(k1()).await, "valid");
                let lifetime = max_age
                    .map_or(Duration::from_secs(300), Duration::from_secs)
                    .max(Duration::from_secs(min_ttl));
                let span = (lifetime * 10).max(Duration::from_secs(25));
                let step = (lifetime.as_millis() as u64 / 40).max(50);
                let start = Instant::now();
                while start.elapsed() < span {
                    rig.advance_ms(step).await;
                    let state = rig.verifier.status().remove(0).state;
                    assert_eq!(
                        state,
                        ProviderState::Fresh,
                        "{max_age:?}/{min_ttl}/{ahead}/{jitter} etag {etag}: expired"
                    );
                }
                let times = idp.request_times();
                let half = lifetime / 2;
                for pair in times.windows(2) {
                    assert!(
                        pair[1] - pair[0] >= half,
                        "max-age {max_age:?}, min_ttl {min_ttl} s, ahead {ahead} ms, jitter \
                         {jitter} ms, etag {etag}: requests {:?} apart, lifetime {lifetime:?}",
                        pair[1] - pair[0]
                    );
                }
                let most = 1 + span.as_millis() / half.as_millis();
                assert!(times.len() as u128 <= most);
                let outcomes = rig.requests_by_outcome();
                if etag {
                    assert_eq!(outcomes.get("200"), Some(&1), "{outcomes:?}");
                }
                if (max_age, min_ttl, etag) == (Some(6), 2, true) && ahead == 1_000 {
                    figures.push(format!("{} requests in {span:?}", times.len()));
                }
            }
        }
    }
    println!(
        "FIGURE short_lifetime: max-age=6 + ETag, min_ttl 2 s, refresh_ahead 1 s, jitter 10 s: {}",
        figures.join(", ")
    );
}

/// The IdP signs with a new key one second before it publishes it. Tokens of that key are
/// refused for about that second, not for the whole `negative_ttl`, within the default budget.
#[tokio::test(start_paused = true)]
async fn a_key_published_a_second_late_verifies_within_two_seconds_of_publication() {
    let idp = Idp::new(Some(300), true);
    let mut settings = CacheSettings::default();
    settings.refresh_jitter = Duration::ZERO;
    let rig = Rig::new(idp.clone(), settings);
    assert_eq!(rig.check(k1()).await, "valid");
    rig.advance_ms(10_000).await;

    // From 0 ms, ten k2 tokens a second; k2 published at 1,000 ms.
    let mut refused = 0;
    let mut first_valid = None;
    for step in 0..=50u64 {
        let at = step * 100;
        if at == 1_000 {
            idp.serve(&[k1(), k2()]);
        }
        match rig.check(k2()).await {
            "valid" => {
                first_valid.get_or_insert(at);
            }
            "unknown_kid" => {
                assert!(first_valid.is_none(), "refused again at {at} ms");
                refused += 1;
            }
            other => panic!("{other} at {at} ms"),
        }
        rig.advance_ms(100).await;
    }
    let first_valid = first_valid.expect("k2 never verified");
    assert!(first_valid <= 3_000, "k2 valid from {first_valid} ms");
    // The first fetch, the forced refetch at 0 ms and the one at 1,000 ms.
    assert_eq!(idp.requests(), 3);
    println!(
        "FIGURE publication_lag: key published 1 s after its first token: valid from \
         {first_valid} ms, {refused} tokens refused (was 151 at 10/s), {} IdP requests",
        idp.requests()
    );
}

/// The negative cache grows per `kid`, but the bucket still bounds what tokens cost the IdP:
/// random `kid`s, and one `kid` asked for over and over, cost at most burst + elapsed / refill.
#[tokio::test(start_paused = true)]
async fn a_kid_flood_costs_no_more_than_the_budget() {
    for same_kid in [false, true] {
        let idp = Idp::new(Some(3600), true);
        let rig = Rig::new(idp.clone(), cache(300, 30_000, 0));
        assert_eq!(rig.check(k1()).await, "valid");
        let before = idp.requests();
        let secs = 120u64;
        for i in 0..secs * 10 {
            let kid = if same_kid {
                "ghost".to_owned()
            } else {
                format!("random-{i}")
            };
            let token = rig.token_naming(&kid);
            assert_eq!(rig.reason(&token).await, "unknown_kid");
            rig.advance_ms(100).await;
        }
        let forced = idp.requests() - before;
        let bound = 2 + secs / 15;
        assert!(
            forced as u64 <= bound,
            "{forced} refetches in {secs} s (same kid: {same_kid})"
        );
        assert_eq!(rig.check(k1()).await, "valid");
        println!(
            "FIGURE kid_flood (same kid {same_kid}): {forced} refetches in {secs} s, bound {bound}"
        );
    }
}

/// A single 503 with `Retry-After: 40` while the keys have a 15 s stale window: the IdP is
/// healthy again long before the 40 s are over, and the keys must not run out untried.
#[tokio::test(start_paused = true)]
async fn retry_after_never_lets_usable_keys_expire_without_one_more_attempt() {
    let idp = Idp::new(Some(300), true);
    let mut settings = cache(300, 10_000, 0);
    settings.stale_window = Duration::from_secs(15);
    let rig = Rig::new(idp.clone(), settings);
    assert_eq!(rig.check(k1()).await, "valid");
    // The refresh due at 290 s gets one 503 asking for 40 s of quiet (until 330 s); the keys
    // expire at 300 s and are usable until 315 s. Honouring the whole 40 s refused every
    // token from 315 s to 330 s.
    idp.push(Answer::Status(503, Some(40)));
    for second in 1..=400 {
        rig.advance_ms(1_000).await;
        assert_eq!(rig.check(k1()).await, "valid", "at {second} s");
    }
    let times = idp.request_times();
    let start = times[0];
    let secs: Vec<u64> = times.iter().map(|t| (*t - start).as_secs()).collect();
    // 290 s: the 503; then one attempt early enough to end before 315 s: halfway between
    // the failure and then (25 s left, under a whole 15 s retry deadline), i.e. at 302.5 s,
    // seen at the next 1 s step; answered; then the normal schedule.
    assert_eq!(secs[1], 290, "{secs:?}");
    assert_eq!(secs[2], 303, "{secs:?}");
    println!("FIGURE retry_after_vs_stale_window: requests at {secs:?} s, 0 refused");
}

/// Every HTTP request is counted by outcome, retries included, while refreshes count cycles.
#[tokio::test(start_paused = true)]
async fn every_request_is_counted_by_outcome_retries_included() {
    let idp = Idp::new(Some(60), true);
    let mut settings = cache(60, 10_000, 0);
    settings.stale_window = Duration::from_secs(3600);
    let clock = Arc::new(ManualClock::at_unix(T0));
    let mut retry = RetrySettings::default();
    retry.attempts = 4;
    retry.attempt_timeout = Duration::from_secs(2);
    let provider = ProviderConfig::builder("acme", "idp", ISSUER)
        .jwks_uri(JWKS_URI)
        .audiences([AUD])
        .cache(settings)
        .retry(retry)
        .build()
        .unwrap();
    let verifier = crate::support::verifier_of(provider, clock.clone(), idp.clone());
    let rig = Rig {
        idp: (),
        harness: Harness::new(clock, verifier, "issuers-attacker"),
    };
    // One refresh, four attempts: a 503, a refused connection, a hang cut at 2 s, a 200.
    idp.push(Answer::Status(503, None));
    idp.push(Answer::Refused);
    idp.push(Answer::Hang);
    assert_eq!(rig.check(k1()).await, "valid");
    // A revalidation 50 s later: 304.
    for _ in 0..50 {
        rig.advance_ms(1_000).await;
    }
    let status = rig.verifier.status().remove(0);
    let expected: BTreeMap<String, u64> = [
        ("200", 1),
        ("304", 1),
        ("503", 1),
        ("error", 1),
        ("timeout", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(status.counters.requests, expected);
    assert_eq!(idp.requests(), 5);
    assert_eq!(status.counters.refreshes, 2);
    assert_eq!(status.counters.refresh_errors, 0);
}
