//! Getting keys: cold fetches, forced refetches on rotation, the background refresher, and key
//! sets shared with other replicas.
//!
//! Every path funnels into [`Provider::refresh`], which is single-flight: concurrent callers
//! share one upstream request and its result (one `Arc`'d error, not one retry each). With a
//! [`KeyExchange`](crate::KeyExchange), a refresh first asks it for a set a peer fetched and
//! publishes what it fetched itself; [`Provider::adopt`] installs a set a peer pushed.
//!
//! # Forced refetches
//!
//! A token whose `kid` is not in the set (or whose signature fails under a known key) may force
//! a refetch, under this policy:
//!
//! - **Budget.** A per-provider token bucket (`unknown_kid_burst`, one token back per
//!   `unknown_kid_refill`) pays for every forced refetch, so the IdP sees at most
//!   burst + elapsed / refill of them whatever the tokens say. A request never waits for
//!   budget: with the bucket empty it is refused at once.
//! - **Free riders.** Joining a refetch in flight, or using keys that changed since the request
//!   looked, costs nothing. A joined refetch that began before the request asked and lacks its
//!   `kid` proves nothing, so the request then tries one refetch of its own, within the budget.
//! - **Negative cache.** A `kid` is remembered as missing only when the IdP's own answer (200
//!   or 304) to a refetch that *began after* the request asked for it did not contain it: for
//!   1 s the first time, then twice as long at each further miss, up to `negative_ttl`. An IdP
//!   (or the CDN in front of it) often publishes a new key a moment after the first tokens it
//!   signed; that moment, not the whole `negative_ttl`, is what it costs. The bucket still pays
//!   for every refetch, so the bound above holds whatever the `kid`s. A `kid` withdrawn by a new
//!   set is remembered for the whole `negative_ttl` at once. A refetch already running, a set adopted from a peer or an empty bucket
//!   proves nothing and is not remembered, so a real new `kid` is never locked out by an
//!   answer that predates it.
//! - **Deferred refetch.** When the bucket is empty and an unknown `kid` is refused, one
//!   refetch is scheduled for the moment the next token is due; the background refresher runs
//!   it, spending that token, and any refetch that starts earlier replaces it. There is at most
//!   one at a time. So a flood of random `kid`s cannot starve a real rotation: the new `kid`
//!   verifies within `unknown_kid_refill` of its first refusal, even if no request happens to
//!   arrive when the token is back.
//! - **`Retry-After`.** When the IdP answered a failed refresh with `Retry-After`, no request
//!   goes to it before that time, forced refetches included: a `kid` missing meanwhile is
//!   refused as if the bucket were empty (not remembered as missing), and the deferred refetch
//!   waits for the end of the quiet period. Only an explicit [`Verifier::refresh`] (an
//!   operator's call), a flush, or usable keys about to run out (see below) override it. A
//!   `Retry-After` is capped at one hour.
//!
//! # Failures
//!
//! A failed refresh keeps the cached keys and schedules the next cycle after a jittered,
//! growing backoff (and any `Retry-After`). The background refresher makes those attempts
//! whether or not anything is cached, so a provider whose first fetch failed recovers on its
//! own once the IdP is back, without waiting for traffic (a load balancer sends none to a
//! replica that is not ready).
//!
//! - **With usable keys** (fresh or within the stale window): full jitter over 1 s doubling
//!   per failure, up to 60 s, at least 0.5 s; each cycle makes up to `attempts` requests. But
//!   never past the *last chance*: a cycle starts a whole retry `deadline` before the keys stop
//!   being usable (or halfway there when less time is left), even if the backoff or the IdP's
//!   `Retry-After` asked for longer, so usable keys never run out untried.
//! - **With no usable keys** (never fetched, or past the stale window): every verification
//!   fails and the replica is not ready, so recovery must be prompt: cycles 1 to 2 s after the
//!   first failure, then every 2 to 4 s (half the 4 s ceiling plus jitter over the other half),
//!   one request each; `Retry-After` is still honoured.
//!
//! # Scheduled refreshes
//!
//! A set is refreshed `refresh_ahead` plus up to `refresh_jitter` before it expires, but never
//! sooner than halfway through its lifetime: when the two reach past half of it (a short
//! `max-age` with a low `min_ttl`), both are scaled down in proportion, so the IdP sees at most
//! one scheduled request per half lifetime, 304 revalidations included.
//!
//! # Layout
//!
//! This file holds the per-provider bookkeeping ([`Refresher`]); each concern is an
//! `impl Provider` block in its own file:
//!
//! - `flight.rs`: single flight, flushes, and the keys a verification waits for;
//! - `budget.rs`: the forced-refetch budget and the deferred refetch;
//! - `negative.rs`: the negative cache of missing `kid`s;
//! - `backoff.rs`: retries within a refresh and the backoff between failed ones;
//! - `discovery.rs`: the JWKS URL, configured or discovered;
//! - `background.rs`: the background refresher and its schedule;
//! - `install.rs`: turning a fetched or adopted set into the snapshot readers load;
//! - `sources.rs`: providers with several JWKS URLs.
//!
//! [`Verifier::refresh`]: crate::Verifier::refresh

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::future::Shared;
use http::{HeaderMap, header};
use tokio::sync::{Notify, watch};
use url::Url;

use crate::config::CacheSettings;
use crate::error::KeysUnavailable;
use crate::fetch::BoxFuture;
use crate::freshness::Freshness;
use crate::jwk::KeySet;
use crate::provider::{FlushId, Snapshot};

mod background;
mod backoff;
mod budget;
mod discovery;
pub(crate) use discovery::Endpoint;
mod flight;
mod install;
mod negative;
pub(crate) mod sources;

use budget::Bucket;
use negative::Negative;
use sources::Document;

/// The result of one refresh, shared by everyone who waited for it.
pub(crate) type Outcome = Result<Arc<Snapshot>, KeysUnavailable>;

/// A refresh in flight, or finished, that callers join.
type Inflight = Shared<BoxFuture<'static, Outcome>>;

/// The background refresher never sleeps less than this between refreshes.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// A key set ready to install, from the IdP or from a peer. Its generation is decided when it
/// is installed, against the keys held then.
struct Candidate {
    keys: Arc<KeySet>,
    freshness: Freshness,
    url: Option<Url>,
    jwks: Option<Arc<str>>,
    etag: Option<Arc<str>>,
    /// See [`Snapshot::fetch_seq`].
    fetch_seq: Option<u64>,
    /// See [`Snapshot::flush`].
    flush: Option<FlushId>,
    /// What the publisher says its set withdrew (sets from peers only).
    withdrawn: Vec<String>,
    /// For a provider with several JWKS URLs, the documents this candidate brings (see
    /// `sources.rs`); `keys` and `freshness` are derived from them.
    documents: Vec<Arc<Document>>,
}

impl Candidate {
    fn expires_at(&self) -> SystemTime {
        self.freshness.fetched_at() + self.freshness.ttl()
    }
}

/// Refresh bookkeeping of one provider.
pub(crate) struct Refresher {
    inflight: Mutex<Option<Inflight>>,
    /// How many refreshes have started. A refresh's sequence number is this count just after it
    /// started, so a refresh numbered above an earlier reading began after that reading.
    started: AtomicU64,
    bucket: Mutex<Bucket>,
    negative: Mutex<HashMap<Box<str>, Negative>>,
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
    /// The IdP's `Retry-After`: no request before this, forced ones included. Cleared by the
    /// IdP's next good answer and by a flush.
    quiet_until: Option<SystemTime>,
    discovered: Option<Url>,
    /// The last flush applied. A fetch remembers the one in force when it began, and its
    /// keys are installed only if that is still the one in force.
    flush: Option<FlushId>,
    /// The `kid`s of the keys the last flush dropped, until a set is installed: what that set
    /// lacks of them, the IdP withdrew.
    flushed_kids: Vec<String>,
}

impl Refresher {
    pub(crate) fn new(cache: &CacheSettings, now: SystemTime) -> Self {
        Refresher {
            inflight: Mutex::new(None),
            started: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(cache.unknown_kid_burst),
                burst: f64::from(cache.unknown_kid_burst),
                refill: cache.unknown_kid_refill,
                last: now,
                deferred: None,
            }),
            negative: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                last_failure: None,
                consecutive_failures: 0,
                next_attempt_at: now,
                quiet_until: None,
                discovered: None,
                flush: None,
                flushed_kids: Vec::new(),
            }),
            background_started: AtomicBool::new(false),
            reschedule: Arc::new(Notify::new()),
            shutdown: watch::channel(()).0,
        }
    }

    /// Stops the background task now, not only when the provider is dropped: a provider a
    /// reconfiguration removed must not keep fetching while a verification that began before
    /// still holds it.
    pub(crate) fn stop(&self) {
        self.shutdown.send_replace(());
    }

    /// Whether the background task is running (it holds a receiver of `shutdown`).
    #[cfg(test)]
    pub(crate) fn background_running(&self) -> bool {
        self.shutdown.receiver_count() > 0
    }

    /// The last failure and the last flush applied, read together.
    pub(crate) fn failure_and_flush(
        &self,
    ) -> (Option<(SystemTime, KeysUnavailable)>, Option<FlushId>) {
        let s = lock(&self.state);
        (s.last_failure.clone(), s.flush.clone())
    }

    /// The last flush applied.
    pub(crate) fn flush_id(&self) -> Option<FlushId> {
        lock(&self.state).flush.clone()
    }

    /// Until when the IdP asked not to be called (`Retry-After`), if that is still ahead.
    fn quiet_until(&self, now: SystemTime) -> Option<SystemTime> {
        lock(&self.state).quiet_until.filter(|&until| now < until)
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the
/// protected data consistent, so a panic elsewhere must not take the cache down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The refresh in flight, if one is still running.
fn running(inflight: &Option<Inflight>) -> Option<Inflight> {
    inflight.as_ref().filter(|r| r.peek().is_none()).cloned()
}

/// The response's `ETag`, if it is text.
fn etag(headers: &HeaderMap) -> Option<Arc<str>> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(Arc::from)
}

#[cfg(test)]
mod tests;
