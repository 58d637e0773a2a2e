//! Identity-provider faults, end to end through the verifier: down at start, down mid-run,
//! flapping, `429`/`503` with `Retry-After`, hanging, and empty, unusable or shrunk key sets.
//!
//! The IdP is an in-memory fake whose every answer the test scripts and whose requests it
//! counts and timestamps. Tokio time is paused and moved together with the manual clock, so an
//! hour of outage takes milliseconds and each figure is exact for the run. Figures that the
//! reliability report quotes are printed on lines starting with `FIGURE` (`--nocapture`).
//!
//! Bounds on request counts under failure are not exact: the failure backoff has jitter. Each
//! bound below is derived from the backoff's ceilings (with usable keys cached: full jitter
//! over 1 s doubling to 60 s, at least 0.5 s; with none: 1 to 2 s, then 2 to 4 s) with a
//! margin of many standard deviations, and its derivation is written next to it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use keygate::fetch::{BoxFuture, FetchRequest, FetchResponse};
use keygate::{Fetch, FetchError, ProviderId, ProviderState, Verifier};
use keygate_test_support::{ManualClock, TestKey, jwks};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::memidp::{T0, exact_cache, provider};
use crate::support::{self, Harness};

fn k1() -> &'static TestKey {
    TestKey::shared_p256("faults-k1")
}

fn k2() -> &'static TestKey {
    TestKey::shared_ed25519("faults-k2")
}

/// What the fake IdP does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 with the document it serves.
    Keys,
    /// The connection is refused.
    Refused,
    /// This status, with `Retry-After: <secs>` when given.
    Status(u16, Option<u64>),
    /// Never answers: only the per-attempt timeout ends the request.
    Hang,
}

#[derive(Debug)]
struct Script {
    /// One-shot answers, used first, in order.
    queued: VecDeque<Answer>,
    /// The answer when nothing is queued.
    normal: Answer,
    /// Alternates refusing and answering, request by request, starting with a refusal.
    flapping: bool,
    served: usize,
}

/// An identity provider that fails on cue.
#[derive(Debug)]
struct FaultyIdp {
    document: Mutex<Value>,
    script: Mutex<Script>,
    /// When each request arrived, in tokio time.
    requests: Mutex<Vec<Instant>>,
}

impl FaultyIdp {
    fn new(keys: &[&TestKey], normal: Answer) -> Arc<Self> {
        Arc::new(FaultyIdp {
            document: Mutex::new(jwks(keys)),
            script: Mutex::new(Script {
                queued: VecDeque::new(),
                normal,
                flapping: false,
                served: 0,
            }),
            requests: Mutex::new(Vec::new()),
        })
    }

    /// Answers this way from now on.
    fn set(&self, answer: Answer) {
        let mut s = lock(&self.script);
        s.normal = answer;
        s.flapping = false;
    }

    /// Answers the next request this way, once.
    fn push(&self, answer: Answer) {
        lock(&self.script).queued.push_back(answer);
    }

    /// Alternates refusals and key sets from now on.
    fn flap(&self) {
        lock(&self.script).flapping = true;
    }

    fn serve(&self, keys: &[&TestKey]) {
        *lock(&self.document) = jwks(keys);
    }

    fn serve_document(&self, document: Value) {
        *lock(&self.document) = document;
    }

    fn requests(&self) -> usize {
        lock(&self.requests).len()
    }

    fn request_times(&self) -> Vec<Instant> {
        lock(&self.requests).clone()
    }
}

impl Fetch for FaultyIdp {
    fn fetch(&self, _: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        lock(&self.requests).push(Instant::now());
        let answer = {
            let mut s = lock(&self.script);
            s.served += 1;
            match s.queued.pop_front() {
                Some(answer) => answer,
                None if s.flapping && s.served % 2 == 1 => Answer::Refused,
                None if s.flapping => Answer::Keys,
                None => s.normal,
            }
        };
        let body = lock(&self.document).to_string();
        Box::pin(async move {
            let (status, retry_after) = match answer {
                Answer::Keys => (200, None),
                Answer::Status(status, retry_after) => (status, retry_after),
                Answer::Refused => {
                    return Err(FetchError::Connect("connection refused".into()));
                }
                Answer::Hang => std::future::pending().await,
            };
            let mut headers = HeaderMap::new();
            if let Some(secs) = retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(FetchResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers,
                body: if status == 200 {
                    body.into()
                } else {
                    Default::default()
                },
            })
        })
    }
}

/// A verifier of one provider over a [`FaultyIdp`], with the default cache settings minus
/// jitter: keys are fresh for 5 minutes (the IdP sends no caching headers), refreshed 30 s
/// ahead, served stale for an hour; three attempts per refresh within 15 s.
type Rig = support::Rig<Arc<FaultyIdp>>;

impl Rig {
    fn new(keys: &[&TestKey], normal: Answer) -> Rig {
        let idp = FaultyIdp::new(keys, normal);
        let clock = Arc::new(ManualClock::at_unix(T0));
        let verifier = Verifier::builder()
            .provider(provider(exact_cache()))
            .clock(clock.clone())
            .fetcher(idp.clone())
            .token_cache(1000)
            .build()
            .unwrap();
        Rig {
            idp,
            harness: Harness::new(clock, verifier, "faults-attacker"),
        }
    }

    /// Advances a second at a time until a fresh `key` token verifies; returns the seconds
    /// waited, failing past `limit`.
    async fn until_valid(&self, key: &TestKey, limit: u64) -> u64 {
        for waited in 1..=limit {
            self.advance(1).await;
            if self.check(key).await == "valid" {
                return waited;
            }
        }
        panic!(
            "no valid verification within {limit} s: {:?}",
            self.status()
        );
    }
}

fn id() -> ProviderId {
    ProviderId::new("acme", "idp")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[tokio::test(start_paused = true)]
async fn an_idp_down_at_start_gives_keys_unavailable_then_recovers_with_bounded_attempts() {
    let rig = Rig::new(&[k1()], Answer::Refused);
    assert_eq!(rig.check(k1()).await, "keys_unavailable");
    // One refresh: its three attempts, then the failure is remembered.
    assert_eq!(rig.idp.requests(), 3);
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Empty);
    assert!(!status.state.has_usable_keys(), "not ready");
    assert_eq!(status.last_error.unwrap().reason, "connect");

    // Two minutes of traffic, a token a second: every one refused as keys_unavailable, never
    // waiting, and the IdP sees one request per retry cycle, not per verification. With no
    // usable keys the cycles come 1 to 2 s after the first failure, then every 2 to 4 s
    // (equal jitter), one attempt each: at most 1 + 119 / 2 cycles in 120 s, whatever the
    // draws, and about 120 / 3 on average.
    for second in 1..=120 {
        rig.advance(1).await;
        assert_eq!(rig.check(k1()).await, "keys_unavailable", "at {second} s");
    }
    let outage = rig.idp.requests() - 3;
    assert!(outage <= 61, "{outage} IdP requests in a 2-minute outage");
    assert!(outage >= 30, "{outage} IdP requests: retries stopped?");
    let times = rig.idp.request_times();
    for pair in times[3..].windows(2).skip(1) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(2), "requests {gap:?} apart");
        assert!(gap <= Duration::from_secs(5), "requests {gap:?} apart");
    }

    // The IdP comes back: the next attempt is at most 4 s away.
    rig.idp.set(Answer::Keys);
    let waited = rig.until_valid(k1(), 5).await;
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Fresh);
    assert!(status.last_error.is_none());
    println!(
        "FIGURE idp_down_at_start: 120 verifications all keys_unavailable; IdP requests in 120 s: \
         {outage} after the first refresh's 3; recovered {waited} s after the IdP came back; \
         total requests {}",
        rig.idp.requests()
    );
}

/// Readiness must not wait for traffic: a load balancer sends none to a replica that is not
/// ready, so a provider whose first fetch failed has to retry on its own.
#[tokio::test(start_paused = true)]
async fn a_provider_whose_first_fetch_failed_recovers_without_any_traffic() {
    let rig = Rig::new(&[k1()], Answer::Refused);
    rig.verifier.warm_up().await;
    assert_eq!(rig.status().state, ProviderState::Empty);
    let failed = rig.idp.requests();
    assert_eq!(failed, 3);

    rig.idp.set(Answer::Keys);
    let mut waited = 0;
    while rig.status().state != ProviderState::Fresh {
        assert!(
            waited < 61,
            "still {:?} {waited} s after the IdP came back, with {} requests",
            rig.status().state,
            rig.idp.requests()
        );
        rig.advance(1).await;
        waited += 1;
    }
    // The first retry cycle after a failure is at most 2 s away; it succeeds at once.
    assert!(waited <= 2, "recovered after {waited} s");
    assert_eq!(rig.idp.requests(), failed + 1);
    assert_eq!(rig.check(k1()).await, "valid");
    // Recovered, it refreshes on the normal schedule again: nothing more for 4 minutes.
    rig.advance(240).await;
    assert_eq!(rig.idp.requests(), failed + 1);
}

#[tokio::test(start_paused = true)]
async fn an_idp_down_mid_run_is_ridden_out_through_the_stale_window_then_keys_unavailable() {
    let rig = Rig::new(&[k1()], Answer::Keys);
    assert_eq!(rig.check(k1()).await, "valid");
    assert_eq!(rig.idp.requests(), 1);
    rig.idp.set(Answer::Refused);

    // Keys fetched at 0 s: fresh until 300 s, served stale until 300 + 3600 s. A fresh token
    // every 10 s: every one verifies, and none of them waits for (or triggers) a fetch.
    let mut t = 0;
    let mut verified = 0;
    while t < 3900 {
        rig.advance(10).await;
        t += 10;
        let before = rig.idp.requests();
        assert_eq!(rig.check(k1()).await, "valid", "at {t} s");
        assert_eq!(
            rig.idp.requests(),
            before,
            "a verification fetched at {t} s"
        );
        verified += 1;
    }
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Failing);
    assert_eq!(status.kids, ["faults-k1"]);
    // Past expiry + stale window: refused, and not ready.
    rig.advance(1).await;
    assert_eq!(rig.check(k1()).await, "keys_unavailable");
    assert_eq!(rig.status().state, ProviderState::Unavailable);
    assert!(!rig.status().state.has_usable_keys());

    // The background refresher retried from 270 s on: three attempts per cycle, cycles a
    // jittered 1-60 s apart (30 s on average once at the ceiling): about 125 cycles in
    // 3630 s. 200 cycles would need 190 draws of U(0, 60 s) to sum under 3630 s (9 sd).
    let outage = rig.idp.requests() - 1;
    assert!(outage <= 600, "{outage} IdP requests in a 65-minute outage");

    rig.idp.set(Answer::Keys);
    let waited = rig.until_valid(k1(), 61).await;
    assert_eq!(rig.status().state, ProviderState::Fresh);
    println!(
        "FIGURE idp_down_mid_run: {verified} verifications over 3900 s of outage, 0 refused; \
         keys_unavailable from 3901 s; IdP requests during the outage: {outage}; recovered \
         {waited} s after the IdP came back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flapping_idp_never_gets_a_valid_token_refused_and_sees_bounded_requests() {
    // Request by request: refused, answered, refused, answered...
    let rig = Rig::new(&[k1()], Answer::Keys);
    rig.idp.flap();
    assert_eq!(rig.check(k1()).await, "valid");
    // The refresh's first attempt was refused; its second, after a backoff, answered.
    assert_eq!(rig.idp.requests(), 2);
    let mut verified = 0;
    for step in 1..=720 {
        rig.advance(10).await;
        if step == 360 {
            // The IdP rotates halfway through the two hours.
            rig.idp.serve(&[k1(), k2()]);
        }
        assert_eq!(rig.check(k1()).await, "valid", "k1 at {} s", step * 10);
        verified += 1;
        if step >= 360 {
            assert_eq!(rig.check(k2()).await, "valid", "k2 at {} s", step * 10);
            verified += 1;
        }
    }
    // A refresh every 270 s (each: one refusal, one answer), plus the first fetch and the
    // rotation's forced refetch: 2 * (1 + 26 + 1) = 56.
    let flapping = rig.idp.requests();
    assert!(flapping <= 60, "{flapping} IdP requests in 2 h of flapping");

    // Minute by minute: down four, up one, for two more hours.
    rig.idp.set(Answer::Keys);
    let start = rig.idp.requests();
    for step in 1..=720 {
        let minute = (step - 1) / 6;
        rig.idp.set(if minute % 5 == 4 {
            Answer::Keys
        } else {
            Answer::Refused
        });
        rig.advance(10).await;
        assert_eq!(rig.check(k1()).await, "valid", "k1 at {} s", step * 10);
        assert_eq!(rig.check(k2()).await, "valid", "k2 at {} s", step * 10);
        verified += 2;
    }
    // Each success resets the backoff, so every down window starts with short cycles (ceilings
    // 2, 4, 8, 16, 32 s) before reaching 60 s: about 11 cycles, 33 requests, per 4-minute
    // window on average, 24 windows. At most one request per 4 s on average is far outside.
    let windowed = rig.idp.requests() - start;
    assert!(windowed <= 7200 / 4, "{windowed} IdP requests in 2 h");
    println!(
        "FIGURE flapping: {verified} verifications, 0 refused; per-request flapping for 2 h with \
         a rotation: {flapping} IdP requests; 4-min-down/1-min-up for 2 h: {windowed} requests"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_and_503_is_honoured_and_retries_are_bounded() {
    // At start: a 429 asking for 30 s, longer than a refresh's 15 s deadline. The refresh gives
    // up at once, and nobody asks again before the 30 s are over.
    let rig = Rig::new(&[k1()], Answer::Keys);
    rig.idp.push(Answer::Status(429, Some(30)));
    assert_eq!(rig.check(k1()).await, "keys_unavailable");
    assert_eq!(rig.idp.requests(), 1);
    for second in 1..30 {
        rig.advance(1).await;
        assert_eq!(rig.check(k1()).await, "keys_unavailable", "at {second} s");
    }
    assert_eq!(rig.idp.requests(), 1, "a request before Retry-After");
    rig.advance(1).await;
    assert_eq!(rig.check(k1()).await, "valid");
    let times = rig.idp.request_times();
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_secs(30));

    // Within a refresh: a 503 asking for 2 s is retried after 2 s, within the deadline.
    let rig = Rig::new(&[k1()], Answer::Keys);
    rig.idp.push(Answer::Status(503, Some(2)));
    assert_eq!(rig.check(k1()).await, "valid");
    let times = rig.idp.request_times();
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= Duration::from_secs(2));

    // Mid-run: the scheduled refresh (at 270 s) gets a 429 asking for 120 s. Meanwhile tokens
    // with kids the cache lacks arrive: an attacker's, and a real new key the IdP publishes.
    // The bucket has budget for forced refetches, but the IdP asked for quiet: none is sent.
    let rig = Rig::new(&[k1()], Answer::Keys);
    assert_eq!(rig.check(k1()).await, "valid");
    rig.idp.set(Answer::Status(429, Some(120)));
    rig.idp.serve(&[k1(), k2()]);
    rig.advance(270).await;
    assert_eq!(rig.idp.requests(), 2, "the scheduled refresh ran");
    let limited_at = rig.idp.request_times()[1];
    for step in 0..11 {
        assert_eq!(rig.check(k1()).await, "valid");
        let forged = rig.token_naming(&format!("forged-{step}"));
        assert_eq!(rig.reason(&forged).await, "unknown_kid");
        let rotated = rig.check(k2()).await;
        assert_eq!(rotated, "unknown_kid", "the new key cannot be fetched yet");
        rig.advance(10).await;
    }
    let early: Vec<_> = rig
        .idp
        .request_times()
        .into_iter()
        .filter(|&t| t > limited_at && t - limited_at < Duration::from_secs(120))
        .collect();
    assert!(
        early.is_empty(),
        "{} requests within the 120 s the IdP asked for",
        early.len()
    );
    // The IdP answers again once the 120 s are over: the refresh then (at 390 s) brings the
    // new key, and the stale keys served k1 throughout.
    rig.idp.set(Answer::Keys);
    let waited = rig.until_valid(k2(), 30).await;
    assert_eq!(rig.status().kids, ["faults-k1", "faults-k2"]);
    println!(
        "FIGURE retry_after: 429 Retry-After 30 at start: 1 request, next at +30 s; 503 \
         Retry-After 2 inside a refresh: retried at +2 s; 429 Retry-After 120 mid-run with \
         forged and rotated kids arriving: 0 requests within 120 s, new key valid {waited} s \
         after; total requests {}",
        rig.idp.requests()
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_or_unusable_set_never_replaces_a_good_one_and_a_shrunk_set_does() {
    // At start an empty set is no use: malformed_jwks, which the sidecar answers with 503.
    let cold = Rig::new(&[], Answer::Keys);
    assert_eq!(cold.check(k1()).await, "malformed_jwks");
    assert_eq!(cold.status().state, ProviderState::Empty);

    let rig = Rig::new(&[k1()], Answer::Keys);
    assert_eq!(rig.check(k1()).await, "valid");
    let documents = [
        json!({ "keys": [] }),
        // Only a symmetric key: never a verification key.
        json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" }] }),
        json!({ "not": "a jwks" }),
    ];
    for document in documents {
        rig.idp.serve_document(document.clone());
        let refreshed = rig.verifier.refresh(&id()).await;
        assert!(refreshed.is_err(), "{document}");
        let status = rig.status();
        assert_eq!(status.kids, ["faults-k1"], "{document}");
        assert_eq!(status.state, ProviderState::Failing);
        assert_eq!(status.last_error.unwrap().reason, "malformed_jwks");
        assert_eq!(rig.check(k1()).await, "valid", "{document}");
    }

    // The IdP drops the current kid and publishes only a new one: a non-empty set is the IdP's
    // word and replaces the held one, so k1 tokens are refused from then on.
    rig.idp.serve(&[k2()]);
    rig.verifier.refresh(&id()).await.unwrap();
    let status = rig.status();
    assert_eq!(status.kids, ["faults-k2"]);
    assert_eq!(status.state, ProviderState::Fresh);
    assert_eq!(rig.check(k2()).await, "valid");
    // The shrunk set itself is the IdP's word that k1 is gone (withdrawn): a burst of 100 k1
    // tokens is refused from the negative cache without asking the IdP again.
    let before = rig.idp.requests();
    for _ in 0..100 {
        assert_eq!(rig.check(k1()).await, "unknown_kid");
    }
    assert_eq!(rig.idp.requests(), before);
    println!(
        "FIGURE key_sets: empty / oct-only / not-a-JWKS refreshes: refused, k1 kept and \
         verifying; shrunk set {{k2}}: installed, 100 k1 tokens unknown_kid for 0 IdP requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_idp_never_delays_verification_with_cached_keys_and_bounds_a_cold_one() {
    let rig = Rig::new(&[k1()], Answer::Keys);
    assert_eq!(rig.check(k1()).await, "valid");
    rig.idp.set(Answer::Hang);
    // Through the refreshes that hang (from 270 s), a token every 5 s verifies without paused
    // time moving during the verification: nothing on the way waits for the network.
    for _ in 0..120 {
        rig.advance(5).await;
        let started = Instant::now();
        assert_eq!(rig.check(k1()).await, "valid");
        assert_eq!(Instant::now(), started);
    }
    assert!(rig.idp.requests() > 1, "the refresher did try");

    // With no keys at all, a hanging IdP costs the first caller one refresh: three attempts,
    // ended by the 15 s deadline.
    let cold = Rig::new(&[k1()], Answer::Hang);
    let started = Instant::now();
    assert_eq!(cold.check(k1()).await, "keys_unavailable");
    let waited = Instant::now() - started;
    assert!(waited <= Duration::from_secs(15), "{waited:?}");
    assert_eq!(cold.idp.requests(), 3);
    assert_eq!(cold.status().last_error.unwrap().reason, "timeout");
    println!(
        "FIGURE hang: 120 verifications with cached keys while the IdP hangs, each 0 s of \
         (paused) time; cold start: keys_unavailable after {waited:?}, 3 attempts"
    );
}
