//! Providers with several JWKS URLs (`jwks_uris`): per-URL documents and refresh state, and
//! how they merge into the provider's one [`Snapshot`].
//!
//! Each URL has its own [`Document`] (parsed keys, the text as served, `ETag`, freshness, the
//! refresh that fetched it) and its own failure state ([`Sources`]: last error, backoff,
//! `Retry-After`). The provider keeps **one** snapshot, as for a single URL, whose keys are
//! the union of the documents ([`KeySet::union`]); so the hot path, generations, flushes, the
//! negative cache and the token bucket work unchanged, and the snapshot carries the documents
//! it was built from.
//!
//! What a refresh asks ([`Why`]):
//!
//! - **Scheduled** (`Due`): only the URLs whose document is due (within `refresh_ahead` of its
//!   own expiry), missing, or whose failure backoff is over. A URL with a longer lifetime is
//!   not fetched because another expires.
//! - **Forced** (unknown `kid`, bad signature): every URL not in its failure backoff or
//!   `Retry-After` period, with conditional requests (`If-None-Match`), so an unchanged
//!   document costs a 304. The unknown `kid` may be in any of the documents, and only an
//!   answer from every URL proves it absent (negative cache): asking only some would let a
//!   flood of random `kid`s spend the whole budget without ever proving anything. One token
//!   of the provider's bucket pays for the round. A URL in its backoff is skipped so that a
//!   down URL does not make every rotation wait for its timeouts; the refresh's answer then
//!   proves nothing about a missing `kid` (its `fetch_seq` is the oldest of its documents').
//! - **Explicit or flush** (`All`): every URL, whatever its backoff or `Retry-After`.
//!
//! URLs are fetched concurrently. A URL's failure keeps its last good document, which is
//! served until its own `usable_until` (expiry plus the stale window) and dropped from the
//! union at the first install after that (the failing URL's backoff, at most a minute, brings
//! one). A refresh in which every URL asked failed is a failed refresh (the provider's
//! backoff, `last_error`); the provider is unavailable only when no document is usable.
//!
//! Documents are merged under the install lock, each URL taking the newer of the held
//! document and the incoming one, so a peer's set that carries a newer document for one URL
//! never replaces a newer one this replica holds for another.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use url::Url;

use super::backoff::MAX_FAILURE_BACKOFF;
use super::{Candidate, MIN_REFRESH_INTERVAL, etag, lock};
use crate::config::KeySource;
use crate::error::{JwksError, KeysUnavailable};
use crate::exchange::{PublishedDocument, PublishedKeySet};
use crate::fetch::{DEFAULT_MAX_BODY_BYTES, FetchError};
use crate::freshness::Freshness;
use crate::jwk::KeySet;
use crate::provider::{FlushId, LastError, Provider, ProviderState, Snapshot, SourceStatus};

/// Why a refresh runs, which decides which URLs of a provider with several it asks. Ignored
/// for a provider with one URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Scheduled, cold, or after a flush overtook a fetch: URLs due or without a document.
    Due,
    /// A forced refetch (unknown `kid`, bad signature): every URL not backing off.
    Forced,
    /// An explicit refresh or a flush: every URL.
    All,
}

/// One URL's last good document.
pub(crate) struct Document {
    pub(crate) url: Url,
    pub(crate) keys: Arc<KeySet>,
    /// The document as served, to hand to other replicas.
    pub(crate) jwks: Arc<str>,
    pub(crate) etag: Option<Arc<str>>,
    pub(crate) freshness: Freshness,
    /// See [`Snapshot::fetch_seq`].
    pub(crate) fetch_seq: Option<u64>,
}

impl Document {
    fn fetched_at(&self) -> SystemTime {
        self.freshness.fetched_at()
    }

    pub(crate) fn expires_at(&self) -> SystemTime {
        self.freshness.fetched_at() + self.freshness.ttl()
    }

    pub(crate) fn usable_until(&self, stale_window: Duration) -> SystemTime {
        self.expires_at() + stale_window
    }

    pub(crate) fn published(&self) -> PublishedDocument {
        PublishedDocument::new(
            self.url.as_str(),
            Arc::clone(&self.jwks),
            self.fetched_at(),
            self.expires_at(),
            self.etag.clone(),
        )
    }
}

/// Failure state of each configured URL, in configuration order.
pub(crate) struct Sources {
    state: Mutex<Vec<UrlState>>,
}

#[derive(Default)]
struct UrlState {
    last_failure: Option<(SystemTime, KeysUnavailable)>,
    consecutive_failures: u32,
    /// While failing: not asked again before this, except by an explicit refresh or a flush.
    retry_at: Option<SystemTime>,
    /// The URL's `Retry-After`.
    quiet_until: Option<SystemTime>,
    refreshes: u64,
    refresh_errors: u64,
}

impl UrlState {
    fn blocked(&self, now: SystemTime) -> bool {
        self.retry_at.is_some_and(|at| now < at) || self.quiet_until.is_some_and(|at| now < at)
    }
}

impl Sources {
    pub(crate) fn new(urls: usize) -> Self {
        Sources {
            state: Mutex::new((0..urls).map(|_| UrlState::default()).collect()),
        }
    }

    /// Forgets every failure, backoff and `Retry-After` (a flush).
    pub(crate) fn reset(&self) {
        for s in lock(&self.state).iter_mut() {
            s.last_failure = None;
            s.consecutive_failures = 0;
            s.retry_at = None;
            s.quiet_until = None;
        }
    }

    /// Whether some URL's last attempt failed.
    pub(crate) fn any_failing(&self) -> bool {
        lock(&self.state).iter().any(|s| s.last_failure.is_some())
    }

    /// The earliest moment a failing URL is to be asked again.
    fn next_retry(&self) -> Option<SystemTime> {
        lock(&self.state).iter().filter_map(|s| s.retry_at).min()
    }

    fn succeeded(&self, i: usize) {
        if let Some(s) = lock(&self.state).get_mut(i) {
            s.refreshes += 1;
            s.last_failure = None;
            s.consecutive_failures = 0;
            s.retry_at = None;
            s.quiet_until = None;
        }
    }

    /// Records a failure: the URL is asked again after a jittered, growing backoff (the same
    /// as a provider's, see `record_failure`) and never before its `Retry-After`.
    fn failed(
        &self,
        i: usize,
        now: SystemTime,
        err: &KeysUnavailable,
        retry_after: Option<Duration>,
    ) {
        if let Some(s) = lock(&self.state).get_mut(i) {
            s.refresh_errors += 1;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.last_failure = Some((now, err.clone()));
            let ceiling = Duration::from_secs(1)
                .saturating_mul(1 << s.consecutive_failures.min(10))
                .min(MAX_FAILURE_BACKOFF);
            let backoff = ceiling.mul_f64(fastrand::f64()).max(MIN_REFRESH_INTERVAL);
            s.retry_at = Some(now + backoff.max(retry_after.unwrap_or_default()));
            s.quiet_until = retry_after.map(|wait| now + wait);
        }
    }
}

impl Candidate {
    /// An update of some URLs' documents; the held documents of the others are merged in at
    /// install time ([`Provider::merge_documents`]).
    fn from_documents(
        documents: Vec<Arc<Document>>,
        flush: Option<FlushId>,
        withdrawn: Vec<String>,
    ) -> Option<Candidate> {
        let earliest = documents.iter().min_by_key(|d| d.expires_at())?;
        Some(Candidate {
            keys: Arc::new(KeySet::union(documents.iter().map(|d| &*d.keys))),
            freshness: earliest.freshness.clone(),
            url: None,
            jwks: None,
            etag: None,
            fetch_seq: documents.iter().map(|d| d.fetch_seq).min().flatten(),
            flush,
            withdrawn,
            documents,
        })
    }

    /// When the set was fetched: its newest document's time for several URLs.
    pub(super) fn fetched_at(&self) -> SystemTime {
        self.documents
            .iter()
            .map(|d| d.fetched_at())
            .max()
            .unwrap_or_else(|| self.freshness.fetched_at())
    }

    /// When the set stops being served: the last of its documents' for several URLs (each
    /// document's keys leave the union at its own).
    pub(super) fn usable_until(&self, stale_window: Duration) -> SystemTime {
        self.documents
            .iter()
            .map(|d| d.usable_until(stale_window))
            .max()
            .unwrap_or_else(|| self.expires_at() + stale_window)
    }
}

impl Snapshot {
    /// The set as another replica would adopt it, for a provider with several URLs.
    pub(crate) fn published_documents(&self) -> Option<PublishedKeySet> {
        if self.documents.is_empty() {
            return None;
        }
        Some(
            PublishedKeySet::from_documents(self.documents.iter().map(|d| d.published()).collect())
                .after_flush(self.flush.clone())
                .withdrawing(self.withdrawn.clone()),
        )
    }
}

impl Provider {
    /// Whether the provider has several JWKS URLs.
    pub(crate) fn is_multi(&self) -> bool {
        matches!(self.config.source, KeySource::Urls(_))
    }

    /// Whether a `Due` refresh still has a URL to ask after adopting a peer's set.
    pub(super) fn still_due(&self, why: Why) -> bool {
        self.is_multi() && why == Why::Due && !self.selected(why).is_empty()
    }

    /// The URLs (indices into the configuration) a refresh for `why` asks.
    fn selected(&self, why: Why) -> Vec<usize> {
        let now = self.clock.now();
        let ahead = self.config.cache.refresh_ahead;
        let current = self.snapshot.load_full();
        let state = lock(&self.sources.state);
        self.config
            .jwks_uris()
            .iter()
            .enumerate()
            .filter(|&(i, url)| {
                let blocked = state.get(i).is_some_and(|s| s.blocked(now));
                let failing = state.get(i).is_some_and(|s| s.last_failure.is_some());
                match why {
                    Why::All => true,
                    Why::Forced => !blocked,
                    // A failing URL is due again once its backoff is over, even while its
                    // last good document is fresh.
                    Why::Due => {
                        let held = current.as_deref().and_then(|s| s.document(url));
                        !blocked
                            && (failing
                                || held.is_none_or(|d| {
                                    d.expires_at().checked_sub(ahead).is_none_or(|t| t <= now)
                                }))
                    }
                }
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// A refresh of a provider with several URLs, as refresh number `seq` begun under
    /// `flush`: fetches the URLs `why` selects, concurrently, and returns their documents.
    /// Fails only when no URL answered and no usable document is held.
    pub(super) async fn fetch_documents(
        self: &Arc<Self>,
        seq: u64,
        flush: Option<FlushId>,
        why: Why,
    ) -> Result<Candidate, (KeysUnavailable, Option<Duration>)> {
        let urls = self.config.jwks_uris();
        let current = self.snapshot.load_full();
        let mut chosen = self.selected(why);
        if chosen.is_empty() && why == Why::Due && current.is_none() {
            // Nothing held and every URL backing off: a cold start still asks, like a
            // provider with one URL whose failure cooldown is over.
            chosen = (0..urls.len()).collect();
        }
        let fetches = chosen.iter().map(|&i| {
            let held = current.as_deref().and_then(|s| s.document(&urls[i]));
            self.fetch_document(&urls[i], held, seq)
        });
        let results = futures_util::future::join_all(fetches).await;
        let now = self.clock.now();
        let mut updates = Vec::new();
        let mut first_error = None;
        for (&i, result) in chosen.iter().zip(results) {
            match result {
                Ok(document) => {
                    self.sources.succeeded(i);
                    updates.push(Arc::new(document));
                }
                Err((err, retry_after)) => {
                    tracing::warn!(
                        provider = %self.id,
                        url = %urls[i],
                        reason = err.cause_reason(),
                        error = %err,
                        "jwks refresh of one url failed; keeping its cached keys"
                    );
                    self.sources.failed(i, now, &err, retry_after);
                    first_error.get_or_insert((err, retry_after));
                }
            }
        }
        let held = current.map(|s| s.documents.clone()).unwrap_or_default();
        if updates.is_empty() {
            let stale = self.config.cache.stale_window;
            if let Some((err, _)) = first_error {
                // No URL answered: a failed refresh, as for one URL. The held documents stay,
                // but one past its own window leaves the union now, not at the next success.
                if held.iter().any(|d| now > d.usable_until(stale))
                    && let Some(held) = Candidate::from_documents(held, flush, Vec::new())
                {
                    let _ = self.install(held);
                }
                // Each URL's `Retry-After` is its own: none becomes the provider's.
                return Err((err, None));
            }
            // Nothing was due: the held documents, re-merged (one past its window drops out).
            updates = held;
        }
        Candidate::from_documents(updates, flush, Vec::new())
            .ok_or((KeysUnavailable::Fetch(None), None))
    }

    /// Fetches one URL's document, revalidating `held` when there is one (a 304 renews it; a
    /// 304 that matches nothing held is followed by an unconditional fetch).
    pub(super) async fn fetch_document(
        &self,
        url: &Url,
        held: Option<&Arc<Document>>,
        seq: u64,
    ) -> Result<Document, (KeysUnavailable, Option<Duration>)> {
        let fetch_err = |e: FetchError| {
            let ra = match &e {
                FetchError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            (KeysUnavailable::Fetch(Some(Arc::new(e))), ra)
        };
        let headers = held
            .map(|d| d.freshness.revalidation_headers())
            .unwrap_or_default();
        let mut response = self
            .fetch_with_retries(url, headers.clone())
            .await
            .map_err(fetch_err)?;
        let ttl = &self.config.cache.ttl;
        if response.status == StatusCode::NOT_MODIFIED {
            let now = self.clock.now();
            let renewed = held
                .and_then(|d| Some((d, d.freshness.not_modified(&response.headers, now, ttl)?)));
            if let Some((d, freshness)) = renewed {
                return Ok(Document {
                    url: url.clone(),
                    keys: Arc::clone(&d.keys),
                    jwks: Arc::clone(&d.jwks),
                    etag: etag(&response.headers).or_else(|| d.etag.clone()),
                    freshness,
                    fetch_seq: Some(seq),
                });
            }
            response = self
                .fetch_with_retries(url, HeaderMap::new())
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
        let malformed = |e| (KeysUnavailable::MalformedJwks(e), None);
        let keys = self.parse(&response.body).map_err(malformed)?;
        let jwks =
            std::str::from_utf8(&response.body).map_err(|_| malformed(JwksError::NotAJwkSet))?;
        let freshness =
            Freshness::from_response(url, &headers, response.status, &response.headers, now, ttl);
        Ok(Document {
            url: url.clone(),
            keys: Arc::new(keys),
            jwks: jwks.into(),
            etag: etag(&response.headers),
            freshness,
            fetch_seq: Some(seq),
        })
    }

    /// Parses a peer's set for a provider with several URLs: each document for a configured
    /// URL exactly like a fetched body, under this provider's limits and TTL policy. A
    /// document that is refused, past its usable window or for a URL not configured here is
    /// left out (this replica keeps its own for that URL); the set is refused when nothing is
    /// left.
    pub(super) fn candidate_from_documents(
        &self,
        set: &PublishedKeySet,
    ) -> Result<Candidate, JwksError> {
        let now = self.clock.now();
        let mut documents = Vec::new();
        let mut refused = None;
        for doc in &set.documents {
            let Some(url) = self
                .config
                .jwks_uris()
                .iter()
                .find(|u| u.as_str() == doc.url)
            else {
                continue;
            };
            if doc.jwks.len() > DEFAULT_MAX_BODY_BYTES {
                refused.get_or_insert(JwksError::TooLarge(DEFAULT_MAX_BODY_BYTES));
                continue;
            }
            let keys = match self.parse(doc.jwks.as_bytes()) {
                Ok(keys) => keys,
                Err(e) => {
                    refused.get_or_insert(e);
                    continue;
                }
            };
            let freshness = Freshness::adopted(
                Some(url),
                doc.fetched_at,
                doc.fresh_until,
                doc.etag.as_deref(),
                &self.config.cache.ttl,
            );
            let document = Document {
                url: url.clone(),
                keys: Arc::new(keys),
                jwks: Arc::clone(&doc.jwks),
                etag: doc.etag.clone(),
                freshness,
                fetch_seq: None,
            };
            if now <= document.usable_until(self.config.cache.stale_window) {
                documents.push(Arc::new(document));
            }
        }
        Candidate::from_documents(documents, set.flush.clone(), set.withdrawn.clone())
            .ok_or_else(|| refused.unwrap_or(JwksError::NotAJwkSet))
    }

    /// Whether the held keys are at least as new as `set`, document by document for a
    /// provider with several URLs (then a set is news if any of its documents is).
    pub(super) fn holds_published(&self, set: &PublishedKeySet) -> bool {
        if !self.is_multi() {
            return self.holds_newer_than(set.fetched_at);
        }
        let current = self.snapshot.load();
        set.documents.iter().all(|doc| {
            current.as_deref().is_some_and(|s| {
                s.documents
                    .iter()
                    .any(|d| d.url.as_str() == doc.url && doc.fetched_at <= d.fetched_at())
            })
        })
    }

    /// [`Provider::holds_published`] for a parsed candidate.
    pub(super) fn holds_candidate(&self, candidate: &Candidate) -> bool {
        if !self.is_multi() {
            return self.holds_newer_than(candidate.fetched_at());
        }
        let current = self.snapshot.load();
        candidate.documents.iter().all(|doc| {
            current
                .as_deref()
                .and_then(|s| s.document(&doc.url))
                .is_some_and(|d| doc.fetched_at() <= d.fetched_at())
        })
    }

    /// Merges `candidate`'s documents with the held ones (under the install lock): per URL
    /// the newer document, the held one if the candidate has none, dropped once past its
    /// usable window. Unchanged for a provider with one URL.
    pub(super) fn merge_documents(
        &self,
        mut candidate: Candidate,
        current: Option<&Snapshot>,
        now: SystemTime,
    ) -> Candidate {
        if !self.is_multi() {
            return candidate;
        }
        let stale = self.config.cache.stale_window;
        let mut merged: Vec<Arc<Document>> = Vec::new();
        for url in self.config.jwks_uris() {
            let incoming = candidate.documents.iter().find(|d| d.url == *url);
            let held = current.and_then(|s| s.document(url));
            let newer = match (incoming, held) {
                (Some(i), Some(h)) if h.fetched_at() > i.fetched_at() => Some(h),
                (Some(i), _) => Some(i),
                (None, h) => h,
            };
            if let Some(d) = newer.filter(|d| now <= d.usable_until(stale)) {
                merged.push(Arc::clone(d));
            }
        }
        if merged.is_empty() {
            return candidate;
        }
        let flush = candidate.flush.take();
        let withdrawn = std::mem::take(&mut candidate.withdrawn);
        Candidate::from_documents(merged, flush, withdrawn).unwrap_or(candidate)
    }

    /// When a failing URL is due to be asked again, if one is.
    pub(super) fn next_url_retry(&self) -> Option<SystemTime> {
        if !self.is_multi() {
            return None;
        }
        self.sources.next_retry()
    }

    /// Each URL's state, for a provider with several (empty otherwise).
    pub(crate) fn source_statuses(&self, snap: Option<&Snapshot>) -> Vec<SourceStatus> {
        if !self.is_multi() {
            return Vec::new();
        }
        let now = self.clock.now();
        let stale = self.config.cache.stale_window;
        let state = lock(&self.sources.state);
        self.config
            .jwks_uris()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let doc = snap.and_then(|s| s.document(url));
                let s = state.get(i);
                let failure = s.and_then(|s| s.last_failure.as_ref());
                let state = match doc {
                    None if failure.is_some() => ProviderState::Unavailable,
                    None => ProviderState::Empty,
                    Some(d) if now > d.usable_until(stale) => ProviderState::Unavailable,
                    Some(_) if failure.is_some() => ProviderState::Failing,
                    Some(d) if d.freshness.is_fresh(now) => ProviderState::Fresh,
                    Some(_) => ProviderState::Stale,
                };
                SourceStatus {
                    url: url.to_string(),
                    state,
                    kids: doc
                        .map(|d| d.keys.kids().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    skipped_keys: doc.map_or(0, |d| d.keys.skipped()),
                    fetched_at: doc.map(|d| d.fetched_at()),
                    expires_at: doc.map(|d| d.expires_at()),
                    usable_until: doc.map(|d| d.usable_until(stale)),
                    last_error: failure.map(|(at, e)| LastError {
                        at: *at,
                        reason: e.cause_reason(),
                        message: e.to_string(),
                    }),
                    refreshes: s.map_or(0, |s| s.refreshes),
                    refresh_errors: s.map_or(0, |s| s.refresh_errors),
                }
            })
            .collect()
    }
}

impl Snapshot {
    /// The document held for `url`, for a provider with several URLs.
    pub(crate) fn document(&self, url: &Url) -> Option<&Arc<Document>> {
        self.documents.iter().find(|d| d.url == *url)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use http::header::{CACHE_CONTROL, HeaderValue};

    use super::*;
    use crate::clock::Clock;
    use crate::config::{CacheSettings, ProviderConfig};
    use crate::fetch::{BoxFuture, Fetch, FetchRequest, FetchResponse};

    const A: &str = "https://a.test/jwks";
    const B: &str = "https://b.test/jwks";

    /// Serves one document per URL with its own `max-age`, and counts requests per URL.
    #[derive(Debug, Default)]
    struct PerUrl {
        served: Mutex<HashMap<String, (Vec<u8>, u64)>>,
        a: AtomicUsize,
        b: AtomicUsize,
    }

    impl PerUrl {
        fn serve(&self, url: &str, kid: &str, max_age: u64) {
            let pair = Ed25519KeyPair::generate().unwrap();
            let x = base64_simd::URL_SAFE_NO_PAD.encode_to_string(pair.public_key().as_ref());
            let doc =
                serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid}]});
            lock(&self.served).insert(url.to_owned(), (serde_json::to_vec(&doc).unwrap(), max_age));
        }

        fn counts(&self) -> (usize, usize) {
            (self.a.load(Ordering::SeqCst), self.b.load(Ordering::SeqCst))
        }
    }

    impl Fetch for PerUrl {
        fn fetch(
            &self,
            request: FetchRequest,
        ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
            let url = request.url.as_str();
            if url == A { &self.a } else { &self.b }.fetch_add(1, Ordering::SeqCst);
            let (body, max_age) = lock(&self.served).get(url).cloned().unwrap();
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("max-age={max_age}")).unwrap();
            headers.insert(CACHE_CONTROL, value);
            Box::pin(async move {
                Ok(FetchResponse {
                    status: StatusCode::OK,
                    headers,
                    body: body.into(),
                })
            })
        }
    }

    #[derive(Debug)]
    struct TestClock(Mutex<SystemTime>);

    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *lock(&self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduled_refresh_asks_only_the_urls_that_are_due() {
        let fetch = Arc::new(PerUrl::default());
        fetch.serve(A, "a", 300);
        fetch.serve(B, "b", 3600);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = Arc::new(TestClock(Mutex::new(t0)));
        let cache = CacheSettings {
            refresh_jitter: Duration::ZERO,
            ..CacheSettings::default()
        };
        let config = ProviderConfig::builder("t", "p", "https://issuer.test")
            .audiences(["x"])
            .jwks_uris([A, B])
            .cache(cache)
            .build()
            .unwrap();
        let provider = Provider::new(config, fetch.clone(), clock.clone(), None).unwrap();
        let snap = provider.refresh().await.unwrap();
        assert_eq!(fetch.counts(), (1, 1));
        assert_eq!(snap.documents.len(), 2);
        let advance = |secs: u64| {
            let clock = Arc::clone(&clock);
            async move {
                for _ in 0..secs {
                    *lock(&clock.0) += Duration::from_secs(1);
                    tokio::time::advance(Duration::from_secs(1)).await;
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        };
        // A is due 30 s before its 300 s expire; B, with an hour, is not asked along.
        advance(269).await;
        assert_eq!(fetch.counts(), (1, 1));
        advance(2).await;
        assert_eq!(fetch.counts(), (2, 1));
        advance(270).await;
        assert_eq!(fetch.counts(), (3, 1));
        // Both documents are still in the union, B's untouched.
        let snap = provider.snapshot.load_full().unwrap();
        assert!(snap.keys.has_kid("a") && snap.keys.has_kid("b"));
        assert_eq!(
            snap.document(&Url::parse(B).unwrap()).unwrap().fetch_seq,
            Some(1)
        );
    }
}
