//! Getting keys: cold fetches, forced refetches on rotation, and the background refresher.
//!
//! Every path funnels into [`Provider::refresh`], which is single-flight: concurrent callers
//! share one upstream request and its result (one `Arc`'d error, not one retry each). Forced
//! refetches (unknown `kid`, bad signature) spend a token from a per-provider bucket and never
//! wait for one; a `kid` that a refetch did not find is remembered for a short while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use url::Url;

use crate::cache::{Counters, Provider, Snapshot, next_generation};
use crate::config::{CacheSettings, KeySource};
use crate::error::{JwksError, KeysUnavailable};
use crate::fetch::{BoxFuture, FetchError, FetchRequest, FetchResponse, retry_after};
use crate::freshness::Freshness;
use crate::jwk::KeySet;

/// The result of one refresh, shared by everyone who waited for it.
pub(crate) type Outcome = Result<Arc<Snapshot>, KeysUnavailable>;

/// Longest `kid` remembered in the negative cache; real `kid`s are far shorter.
const MAX_NEGATIVE_KID_LEN: usize = 256;
/// Most `kid`s remembered per provider; past it, expired entries go, then all of them.
const MAX_NEGATIVE_ENTRIES: usize = 1024;
/// The background refresher never sleeps less than this between refreshes.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// After failures, cycles of refreshes back off up to this long.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(60);

/// Refresh bookkeeping of one provider.
pub(crate) struct Refresher {
    inflight: Mutex<Option<Shared<BoxFuture<'static, Outcome>>>>,
    bucket: Mutex<Bucket>,
    negative: Mutex<HashMap<Box<str>, SystemTime>>,
    state: Mutex<State>,
    background_started: AtomicBool,
    reschedule: Arc<Notify>,
    /// Dropped with the provider, which stops its background task.
    shutdown: watch::Sender<()>,
}

struct State {
    last_failure: Option<(SystemTime, KeysUnavailable)>,
    consecutive_failures: u32,
    /// No refresh before this, except forced and explicit ones.
    next_attempt_at: SystemTime,
    discovered: Option<Url>,
}

/// A token bucket measured against the provider's clock.
struct Bucket {
    tokens: f64,
    burst: f64,
    refill: Duration,
    last: SystemTime,
}

impl Bucket {
    fn try_take(&mut self, now: SystemTime) -> bool {
        let elapsed = now.duration_since(self.last).unwrap_or_default();
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.burst);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Refresher {
    pub(crate) fn new(cache: &CacheSettings, now: SystemTime) -> Self {
        Refresher {
            inflight: Mutex::new(None),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(cache.unknown_kid_burst),
                burst: f64::from(cache.unknown_kid_burst),
                refill: cache.unknown_kid_refill,
                last: now,
            }),
            negative: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                last_failure: None,
                consecutive_failures: 0,
                next_attempt_at: now,
                discovered: None,
            }),
            background_started: AtomicBool::new(false),
            reschedule: Arc::new(Notify::new()),
            shutdown: watch::channel(()).0,
        }
    }

    pub(crate) fn last_failure(&self) -> Option<(SystemTime, KeysUnavailable)> {
        lock(&self.state).last_failure.clone()
    }

    /// Forgets failures and remembered `kid`s, e.g. after a flush.
    pub(crate) fn reset(&self, now: SystemTime) {
        {
            let mut s = lock(&self.state);
            s.last_failure = None;
            s.consecutive_failures = 0;
            s.next_attempt_at = now;
        }
        lock(&self.negative).clear();
        self.reschedule.notify_one();
    }

    fn is_negative(&self, kid: &str, now: SystemTime) -> bool {
        lock(&self.negative)
            .get(kid)
            .is_some_and(|&until| now < until)
    }

    /// Remembers that `kid` was looked for right after a refetch and not found.
    pub(crate) fn remember_missing(&self, kid: &str, now: SystemTime, ttl: Duration) {
        if kid.len() > MAX_NEGATIVE_KID_LEN || ttl.is_zero() {
            return;
        }
        let mut neg = lock(&self.negative);
        if neg.len() >= MAX_NEGATIVE_ENTRIES {
            neg.retain(|_, until| now < *until);
            if neg.len() >= MAX_NEGATIVE_ENTRIES {
                neg.clear();
            }
        }
        neg.insert(kid.into(), now + ttl);
    }
}

impl Provider {
    /// Refetches now, joining a refresh already in flight. The fetch runs on its own task, so
    /// it completes (and updates the cache) even if every caller gives up waiting.
    pub(crate) fn refresh(self: &Arc<Self>) -> Shared<BoxFuture<'static, Outcome>> {
        let mut inflight = lock(&self.refresher.inflight);
        if let Some(running) = inflight.as_ref() {
            if running.peek().is_none() {
                return running.clone();
            }
        }
        let provider = Arc::clone(self);
        let task = tokio::spawn(async move { provider.run_refresh().await });
        let fut: BoxFuture<'static, Outcome> = Box::pin(task.map(|joined| {
            joined.unwrap_or_else(|_| {
                Err(KeysUnavailable::Fetch(Some(Arc::new(
                    FetchError::Transport("refresh task failed".into()),
                ))))
            })
        }));
        let shared = fut.shared();
        *inflight = Some(shared.clone());
        shared
    }

    /// A refetch because a token named a `kid` we lack, or failed under a known key.
    ///
    /// Returns `None` without waiting when the `kid` is in the negative cache or the bucket
    /// is empty: the caller refuses the token at once rather than queueing behind a limit.
    pub(crate) async fn forced_refresh(
        self: &Arc<Self>,
        missing_kid: Option<&str>,
        seen: &Snapshot,
    ) -> Option<Outcome> {
        if self.is_static() {
            return None;
        }
        let now = self.clock.now();
        // Keys changed since the caller looked (another request's refetch finished in
        // between): retry on those rather than spend a refetch, so a burst of tokens signed by
        // a new key costs one fetch and none of them is refused for an empty bucket.
        if let Some(current) = self.snapshot.load_full()
            && current.generation != seen.generation
            && current.is_usable(now)
        {
            return Some(Ok(current));
        }
        if let Some(kid) = missing_kid {
            if kid.len() > MAX_NEGATIVE_KID_LEN || self.refresher.is_negative(kid, now) {
                return None;
            }
        }
        let joined = {
            let inflight = lock(&self.refresher.inflight);
            inflight.as_ref().filter(|r| r.peek().is_none()).cloned()
        };
        let fut = match joined {
            Some(running) => running,
            None if lock(&self.refresher.bucket).try_take(now) => self.refresh(),
            None => return None,
        };
        Some(fut.await)
    }

    /// Keys for verification: the cached snapshot when usable, else a (single-flight) fetch,
    /// unless a recent failure says to wait.
    pub(crate) async fn usable_snapshot(self: &Arc<Self>) -> Outcome {
        let now = self.clock.now();
        if let Some(snap) = self.snapshot.load_full() {
            if snap.is_usable(now) {
                return Ok(snap);
            }
        }
        {
            let state = lock(&self.refresher.state);
            if let Some((_, err)) = &state.last_failure {
                if now < state.next_attempt_at {
                    return Err(err.clone());
                }
            }
        }
        let snap = self.refresh().await?;
        if snap.is_usable(self.clock.now()) {
            Ok(snap)
        } else {
            Err(KeysUnavailable::Fetch(None))
        }
    }

    /// Starts the background refresher once; it stops when the provider is dropped.
    pub(crate) fn ensure_background(self: &Arc<Self>) {
        if self.is_static()
            || self
                .refresher
                .background_started
                .swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.refresher
                .background_started
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        let notify = Arc::clone(&self.refresher.reschedule);
        let mut shutdown = self.refresher.shutdown.subscribe();
        handle.spawn(async move {
            loop {
                let delay = match weak.upgrade() {
                    Some(p) => p.next_refresh_delay(),
                    None => return,
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = notify.notified() => continue,
                    _ = shutdown.changed() => return,
                }
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                let refresh = provider.refresh();
                drop(provider);
                let _ = refresh.await;
            }
        });
    }

    fn next_refresh_delay(&self) -> Duration {
        let now = self.clock.now();
        let state = lock(&self.refresher.state);
        if self.snapshot.load().is_none() && state.last_failure.is_none() {
            // Flushed: the next verification fetches; nothing to refresh ahead of. A flush
            // notifies this task, so the long sleep is cut short by the next refresh.
            return Duration::from_secs(3600);
        }
        state
            .next_attempt_at
            .duration_since(now)
            .unwrap_or_default()
    }

    async fn run_refresh(self: Arc<Self>) -> Outcome {
        let result = self.fetch_and_parse().await;
        let now = self.clock.now();
        let cache = &self.config.cache;
        let mut state = lock(&self.refresher.state);
        match &result {
            Ok((snap, _)) => {
                Counters::bump(&self.counters.refreshes);
                state.last_failure = None;
                state.consecutive_failures = 0;
                let expires = snap.expires_at().unwrap_or(now);
                let ahead = cache.refresh_ahead + cache.refresh_jitter.mul_f64(fastrand::f64());
                let target = expires.checked_sub(ahead).unwrap_or(now);
                let ttl = expires.duration_since(now).unwrap_or_default();
                state.next_attempt_at = target.max(now + MIN_REFRESH_INTERVAL.min(ttl / 2));
            }
            Err((err, retry_after)) => {
                Counters::bump(&self.counters.refresh_errors);
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                state.last_failure = Some((now, err.clone()));
                let ceiling = Duration::from_secs(1)
                    .saturating_mul(1 << state.consecutive_failures.min(10))
                    .min(MAX_FAILURE_BACKOFF);
                let backoff = ceiling.mul_f64(fastrand::f64()).max(MIN_REFRESH_INTERVAL);
                state.next_attempt_at = now + backoff.max(retry_after.unwrap_or_default());
                tracing::warn!(
                    provider = %self.id,
                    reason = err.cause_reason(),
                    error = %err,
                    "jwks refresh failed; keeping cached keys"
                );
            }
        }
        drop(state);
        self.refresher.reschedule.notify_one();
        match result {
            Ok((snap, changed)) => {
                self.snapshot.store(Some(Arc::clone(&snap)));
                if changed {
                    tracing::info!(provider = %self.id, keys = ?snap.keys, "jwks updated");
                }
                self.ensure_background();
                Ok(snap)
            }
            Err((err, _)) => Err(err),
        }
    }

    /// Fetches and parses; returns the new snapshot and whether the keys changed.
    async fn fetch_and_parse(
        &self,
    ) -> Result<(Arc<Snapshot>, bool), (KeysUnavailable, Option<Duration>)> {
        let fetch_err = |e: FetchError| {
            let ra = match &e {
                FetchError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            (KeysUnavailable::Fetch(Some(Arc::new(e))), ra)
        };
        let url = self.jwks_url().await.map_err(fetch_err)?;
        let current = self.snapshot.load_full();
        let revalidate = current
            .as_ref()
            .filter(|s| s.url.as_ref() == Some(&url))
            .and_then(|s| s.freshness.as_ref().map(|f| (s, f)));
        let headers = revalidate
            .map(|(_, f)| f.revalidation_headers())
            .unwrap_or_default();
        let mut response = self
            .fetch_with_retries(&url, headers.clone())
            .await
            .map_err(fetch_err)?;
        let ttl = &self.config.cache.ttl;
        let stale = self.config.cache.stale_window;
        if response.status == StatusCode::NOT_MODIFIED {
            let now = self.clock.now();
            let renewed = revalidate
                .and_then(|(snap, f)| Some((snap, f.not_modified(&response.headers, now, ttl)?)));
            if let Some((snap, freshness)) = renewed {
                let usable_until = freshness.fetched_at() + freshness.ttl() + stale;
                return Ok((
                    Arc::new(Snapshot {
                        keys: Arc::clone(&snap.keys),
                        generation: snap.generation,
                        fetched_at: now,
                        freshness: Some(freshness),
                        usable_until: Some(usable_until),
                        url: Some(url),
                    }),
                    false,
                ));
            }
            // A 304 we cannot match to what we hold: fetch the whole set unconditionally.
            response = self
                .fetch_with_retries(&url, HeaderMap::new())
                .await
                .map_err(fetch_err)?;
            if response.status != StatusCode::OK {
                return Err(fetch_err(FetchError::Status {
                    status: response.status,
                    retry_after: None,
                }));
            }
        }
        let now = self.clock.now();
        let keys = KeySet::parse(
            &response.body,
            &self.config.algorithms,
            self.config.cache.max_keys,
        )
        .map_err(|e| (KeysUnavailable::MalformedJwks(e), None))?;
        if keys.usable() == 0 {
            // An empty set never replaces a non-empty one, and is no use as a first set.
            return Err((KeysUnavailable::MalformedJwks(JwksError::Empty), None));
        }
        let freshness =
            Freshness::from_response(&url, &headers, response.status, &response.headers, now, ttl);
        let usable_until = freshness.fetched_at() + freshness.ttl() + stale;
        let (generation, changed) = match current.as_ref() {
            Some(cur) if cur.keys.same_keys(&keys) => (cur.generation, false),
            _ => (next_generation(), true),
        };
        Ok((
            Arc::new(Snapshot {
                keys: Arc::new(keys),
                generation,
                fetched_at: now,
                freshness: Some(freshness),
                usable_until: Some(usable_until),
                url: Some(url),
            }),
            changed,
        ))
    }

    /// The JWKS URL: configured, or discovered from the issuer (OpenID Connect Discovery 1.0).
    async fn jwks_url(&self) -> Result<Url, FetchError> {
        let discovery = match &self.config.source {
            KeySource::Url(url) => return Ok(url.clone()),
            KeySource::Discovery(url) => url,
            KeySource::Static(_) => {
                return Err(FetchError::Config("static key sets are not fetched".into()));
            }
        };
        if let Some(url) = lock(&self.refresher.state).discovered.clone() {
            return Ok(url);
        }
        let response = self.fetch_with_retries(discovery, HeaderMap::new()).await?;
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let meta: Metadata = serde_json::from_slice(&response.body).map_err(|_| {
            FetchError::InvalidDocument("discovery document lacks issuer or jwks_uri".into())
        })?;
        // OpenID Connect Discovery section 4.3: the issuer must be exactly the one configured.
        if meta.issuer != *self.config.issuer {
            return Err(FetchError::InvalidDocument(
                "discovery document names a different issuer".into(),
            ));
        }
        let url = Url::parse(&meta.jwks_uri)
            .map_err(|_| FetchError::InvalidDocument("jwks_uri is not a URL".into()))?;
        lock(&self.refresher.state).discovered = Some(url.clone());
        Ok(url)
    }

    /// GET with bounded attempts, per-attempt timeout, overall deadline and full-jitter
    /// backoff. Returns a 200 or 304 response, or the last error.
    async fn fetch_with_retries(
        &self,
        url: &Url,
        headers: HeaderMap,
    ) -> Result<FetchResponse, FetchError> {
        let retry = &self.config.retry;
        let deadline = tokio::time::Instant::now() + retry.deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let request = FetchRequest {
                url: url.clone(),
                headers: headers.clone(),
            };
            let result = match tokio::time::timeout(
                retry.attempt_timeout.min(remaining),
                self.fetcher.fetch(request),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout),
            };
            let err = match result {
                Ok(resp)
                    if resp.status == StatusCode::OK || resp.status == StatusCode::NOT_MODIFIED =>
                {
                    return Ok(resp);
                }
                Ok(resp) => FetchError::Status {
                    status: resp.status,
                    retry_after: retry_after(&resp.headers, self.clock.now()),
                },
                Err(e) => e,
            };
            tracing::debug!(provider = %self.id, attempt, reason = err.reason(), "fetch attempt failed");
            if !err.is_retryable() || attempt >= retry.attempts {
                return Err(err);
            }
            let mut wait = retry.backoff(attempt);
            if let FetchError::Status {
                retry_after: Some(ra),
                ..
            } = &err
            {
                wait = wait.max(*ra);
            }
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the
/// protected data consistent, so a panic elsewhere must not take the cache down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::{CacheSettings, ProviderConfig};
    use crate::fetch::{Fetch, FetchError, FetchRequest, FetchResponse};
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// Serves whatever key set it holds, and counts requests.
    #[derive(Debug, Default)]
    struct ScriptedJwks {
        body: Mutex<Vec<u8>>,
        requests: AtomicUsize,
    }

    impl Fetch for ScriptedJwks {
        fn fetch(&self, _: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let body = lock(&self.body).clone();
            Box::pin(async move {
                Ok(FetchResponse {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: body.into(),
                })
            })
        }
    }

    fn ed25519_jwk(kid: &str) -> serde_json::Value {
        let pair = Ed25519KeyPair::generate().unwrap();
        let x = base64_simd::URL_SAFE_NO_PAD.encode_to_string(pair.public_key().as_ref());
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid})
    }

    #[tokio::test]
    async fn a_refetch_that_already_happened_is_not_paid_for_again() {
        let (a, b) = (ed25519_jwk("a"), ed25519_jwk("b"));
        let fetch = Arc::new(ScriptedJwks::default());
        *lock(&fetch.body) = serde_json::to_vec(&serde_json::json!({"keys": [a]})).unwrap();
        let cache = CacheSettings {
            unknown_kid_burst: 1,
            ..CacheSettings::default()
        };
        let config = ProviderConfig::builder("t", "p", "https://issuer.test")
            .audiences(["x"])
            .jwks_uri("https://issuer.test/jwks")
            .cache(cache)
            .build()
            .unwrap();
        let provider = Provider::new(config, fetch.clone(), Arc::new(SystemClock)).unwrap();
        let old = provider.refresh().await.unwrap();
        // The IdP rotates; one request's forced refetch (the whole budget) finds the new key.
        *lock(&fetch.body) = serde_json::to_vec(&serde_json::json!({"keys": [a, b]})).unwrap();
        let new = provider
            .forced_refresh(Some("b"), &old)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(new.generation, old.generation);
        assert_eq!(fetch.requests.load(Ordering::SeqCst), 2);
        // A request that looked at the old keys before that refetch landed gets the new ones,
        // although the budget is spent, and costs the IdP nothing.
        let late = provider
            .forced_refresh(Some("b"), &old)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.generation, new.generation);
        assert_eq!(fetch.requests.load(Ordering::SeqCst), 2);
        // A kid missing from the newest keys still gets no refetch without budget.
        assert!(provider.forced_refresh(Some("c"), &new).await.is_none());
        assert_eq!(fetch.requests.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn bucket_allows_burst_then_refills_over_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = Bucket {
            tokens: 2.0,
            burst: 2.0,
            refill: Duration::from_secs(15),
            last: t0,
        };
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(14)));
        assert!(b.try_take(t0 + Duration::from_secs(15)));
        assert!(!b.try_take(t0 + Duration::from_secs(16)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(10_000);
        assert!(b.try_take(later));
        assert!(b.try_take(later));
        assert!(!b.try_take(later));
    }
}
