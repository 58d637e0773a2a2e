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
//! [`Verifier::refresh`]: crate::Verifier::refresh

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use url::Url;

use crate::cache::{Counters, FlushId, Provider, Snapshot, next_generation};
use crate::config::{CacheSettings, KeySource};
use crate::error::{JwksError, KeysUnavailable};
use crate::exchange::PublishedKeySet;
use crate::fetch::{
    BoxFuture, DEFAULT_MAX_BODY_BYTES, FetchError, FetchRequest, FetchResponse, retry_after,
};
use crate::freshness::Freshness;
use crate::jwk::KeySet;

pub(crate) mod sources;
use sources::{Document, Why};

/// The result of one refresh, shared by everyone who waited for it.
pub(crate) type Outcome = Result<Arc<Snapshot>, KeysUnavailable>;

/// A refresh in flight, or finished, that callers join.
type Inflight = Shared<BoxFuture<'static, Outcome>>;

/// Most withdrawn `kid`s a set carries (and an adopter remembers) per install.
const MAX_WITHDRAWN: usize = 64;
/// Longest `kid` remembered in the negative cache; real `kid`s are far shorter.
const MAX_NEGATIVE_KID_LEN: usize = 256;
/// Most `kid`s remembered per provider; past it, expired entries go, then all of them.
const MAX_NEGATIVE_ENTRIES: usize = 1024;
/// How long a `kid` is first remembered as missing; each further miss doubles it, up to
/// `negative_ttl`. Withdrawn `kid`s get the whole `negative_ttl` at once.
const FIRST_NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// The background refresher never sleeps less than this between refreshes.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// After failures, cycles of refreshes back off up to this long while usable keys are
/// cached (and never past the last chance to refresh them, see [`last_chance`]).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// With no usable keys, cycles of refreshes back off up to this long: every verification
/// fails meanwhile and readiness waits for the next cycle, so recovery must be prompt.
const NO_KEYS_FAILURE_BACKOFF: Duration = Duration::from_secs(4);
/// A token counts as there once this close to whole, so that float rounding cannot make the
/// deferred refetch miss the very moment it was scheduled for.
const TOKEN_EPSILON: f64 = 1e-9;

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

/// A `kid` remembered as missing: refused without a refetch until `until`. `period` is how
/// long it was remembered for, which the next miss of the same `kid` doubles.
#[derive(Debug, Clone, Copy)]
struct Negative {
    until: SystemTime,
    period: Duration,
}

/// The forced-refetch budget: a token bucket measured against the provider's clock, and the
/// one refetch deferred until its next token.
struct Bucket {
    tokens: f64,
    burst: f64,
    refill: Duration,
    last: SystemTime,
    /// When the deferred refetch is due, if one is scheduled.
    deferred: Option<SystemTime>,
}

impl Bucket {
    fn top_up(&mut self, now: SystemTime) {
        let elapsed = now.duration_since(self.last).unwrap_or_default();
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.burst);
        self.last = self.last.max(now);
    }

    fn try_take(&mut self, now: SystemTime) -> bool {
        self.top_up(now);
        if self.tokens >= 1.0 - TOKEN_EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// When the next whole token is there; `None` if never (a burst below one).
    fn next_token_at(&mut self, now: SystemTime) -> Option<SystemTime> {
        if self.burst < 1.0 {
            return None;
        }
        self.top_up(now);
        let missing = (1.0 - self.tokens).max(0.0);
        Some(self.last + self.refill.mul_f64(missing))
    }
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

    fn is_negative(&self, kid: &str, now: SystemTime) -> bool {
        lock(&self.negative).get(kid).is_some_and(|n| now < n.until)
    }

    /// Remembers that the IdP's answer to a refetch begun after `kid` was asked for lacked it:
    /// for [`FIRST_NEGATIVE_TTL`] the first time, then twice as long as the last time at each
    /// miss that follows within `cap` of the last entry's end, up to `cap` (`negative_ttl`).
    ///
    /// A new key the IdP (or the CDN in front of it) publishes a moment after the first tokens
    /// it signed is then refused for about as long as the lag, not for the whole
    /// `negative_ttl`. A `kid` nobody will ever publish soon costs one refetch per period,
    /// paid from the bucket like any other, so the IdP's load stays within the budget.
    fn remember_missing_growing(&self, kid: &str, now: SystemTime, cap: Duration) {
        let period = {
            let neg = lock(&self.negative);
            match neg.get(kid) {
                Some(last) if now <= last.until + cap => last.period.saturating_mul(2),
                _ => FIRST_NEGATIVE_TTL,
            }
        };
        self.remember_missing(kid, now, period.min(cap));
    }

    /// Remembers `kid` as missing for `ttl`.
    fn remember_missing(&self, kid: &str, now: SystemTime, ttl: Duration) {
        if kid.len() > MAX_NEGATIVE_KID_LEN || ttl.is_zero() {
            return;
        }
        let mut neg = lock(&self.negative);
        if neg.len() >= MAX_NEGATIVE_ENTRIES {
            neg.retain(|_, n| now < n.until);
            if neg.len() >= MAX_NEGATIVE_ENTRIES {
                neg.clear();
            }
        }
        neg.insert(
            kid.into(),
            Negative {
                until: now + ttl,
                period: ttl,
            },
        );
    }
}

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

impl Provider {
    /// Applies flush `id`: drops the cached keys and everything learnt from them (failures,
    /// remembered `kid`s, a deferred refetch, the IdP's `Retry-After`), detaches the refresh
    /// in flight (its keys, fetched before the flush, will not be installed) and starts the
    /// refetch at once, in the background, so that the provider is not left empty until
    /// some verification happens to ask. Returns `false`, changing nothing, when `id` is the
    /// flush already applied (a replayed or echoed flush).
    pub(crate) fn flush(self: &Arc<Self>, id: FlushId) -> bool {
        if self.is_static() {
            return false;
        }
        let now = self.clock.now();
        {
            // Under the lock that serialises installs: a set fetched before the flush either
            // landed before this (and is dropped here) or is refused after it.
            let mut s = lock(&self.refresher.state);
            if s.flush.as_ref() == Some(&id) {
                return false;
            }
            s.flush = Some(id);
            if let Some(dropped) = self.snapshot.swap(None) {
                s.flushed_kids = dropped.keys.kids().map(str::to_owned).collect();
            }
            s.last_failure = None;
            s.consecutive_failures = 0;
            s.next_attempt_at = now;
            s.quiet_until = None;
        }
        self.sources.reset();
        lock(&self.refresher.negative).clear();
        lock(&self.refresher.bucket).deferred = None;
        {
            let mut inflight = lock(&self.refresher.inflight);
            *inflight = None;
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(self.start(&mut inflight, Why::All));
            }
        }
        self.refresher.reschedule.notify_one();
        tracing::info!(provider = %self.id, "jwks flushed; refetching");
        true
    }

    /// Refetches now, joining a refresh already in flight.
    pub(crate) fn refresh(self: &Arc<Self>) -> Inflight {
        self.refresh_for(Why::Due)
    }

    /// Refetches now, joining a refresh already in flight; for a provider with several JWKS
    /// URLs, asks every one of them (an operator's explicit refresh).
    pub(crate) fn refresh_all(self: &Arc<Self>) -> Inflight {
        self.refresh_for(Why::All)
    }

    fn refresh_for(self: &Arc<Self>, why: Why) -> Inflight {
        let mut inflight = lock(&self.refresher.inflight);
        if let Some(running) = running(&inflight) {
            return running;
        }
        self.start(&mut inflight, why)
    }

    /// Starts a refresh on its own task, so it completes (and updates the cache) even if every
    /// caller gives up waiting. The caller holds the in-flight lock and found none running.
    fn start(self: &Arc<Self>, inflight: &mut Option<Inflight>, why: Why) -> Inflight {
        let seq = self.refresher.started.fetch_add(1, Ordering::AcqRel) + 1;
        // This refresh begins after every unknown `kid` refused so far: it does the deferred
        // refetch's job, whatever started it.
        lock(&self.refresher.bucket).deferred = None;
        let provider = Arc::clone(self);
        // What the starter held: a set installed between now and the task running (adopted
        // from the log, say) is then found in the exchange and used, not fetched again.
        let held = self.snapshot.load().as_ref().map(|s| s.fetched_at);
        let task = tokio::spawn(async move { provider.run_refresh(seq, held, why).await });
        let fut: BoxFuture<'static, Outcome> = Box::pin(task.map(|joined| {
            joined.unwrap_or_else(|_| {
                Err(KeysUnavailable::Fetch(Some(Arc::new(
                    FetchError::Transport("refresh task failed".into()),
                ))))
            })
        }));
        let shared = fut.shared();
        // `running` asks the shared future whether it finished, which it only knows once
        // polled to the end: drive it here, so a refresh whose callers all gave up (or that
        // nobody awaited, like a flush's refetch) is never joined again after it finished.
        tokio::spawn(shared.clone().map(drop));
        *inflight = Some(shared.clone());
        shared
    }

    /// A refetch because a token named a `kid` we lack (`missing_kid`), or failed under a key
    /// of `seen` (`None`). See the module docs for the policy.
    ///
    /// Returns `None` without waiting when the `kid` is in the negative cache or the bucket
    /// is empty: the caller refuses the token at once rather than queueing behind a limit.
    /// A returned set may still lack the `kid`; the caller refuses the token then too.
    pub(crate) async fn forced_refresh(
        self: &Arc<Self>,
        missing_kid: Option<&str>,
        seen: &Snapshot,
    ) -> Option<Outcome> {
        if self.is_static() {
            return None;
        }
        // Refreshes numbered above this begin after the caller found its key missing: only
        // their answers can prove a `kid` absent.
        let asked = self.refresher.started.load(Ordering::Acquire);
        let now = self.clock.now();
        // Keys changed since the caller looked (another request's refetch finished in
        // between): retry on those rather than spend a refetch, so a burst of tokens signed by
        // a new key costs one fetch and none of them is refused for an empty bucket.
        if let Some(current) = self.snapshot.load_full()
            && current.generation != seen.generation
            && current.is_usable(now)
            && self.settles(&current, missing_kid, seen, asked)
        {
            return Some(Ok(current));
        }
        if let Some(kid) = missing_kid {
            if kid.len() > MAX_NEGATIVE_KID_LEN || self.refresher.is_negative(kid, now) {
                return None;
            }
        }
        // At most two rounds: a joined refetch may have begun before the caller asked, and
        // then a second, begun after, is needed to settle the question.
        let mut inconclusive = None;
        for _ in 0..2 {
            let now = self.clock.now();
            // Read before taking the in-flight lock: the state lock is never held under it.
            let quiet = self.refresher.quiet_until(now);
            let refresh = {
                let mut inflight = lock(&self.refresher.inflight);
                match running(&inflight) {
                    // Joining costs the IdP nothing, even while it asked for quiet.
                    Some(running) => running,
                    None => {
                        let mut bucket = lock(&self.refresher.bucket);
                        if quiet.is_none() && bucket.try_take(now) {
                            drop(bucket);
                            self.start(&mut inflight, Why::Forced)
                        } else {
                            if missing_kid.is_some() {
                                self.defer(&mut bucket, now, quiet);
                            }
                            return inconclusive;
                        }
                    }
                }
            };
            let outcome = refresh.await;
            match &outcome {
                Ok(snap) if !self.settles(snap, missing_kid, seen, asked) => {
                    inconclusive = Some(outcome);
                }
                _ => return Some(outcome),
            }
        }
        inconclusive
    }

    /// Whether `snap` settles a forced refetch: it has the missing `kid`, or (for a bad
    /// signature under `seen`) other keys; or it is the IdP's own answer to a refetch begun
    /// after the caller asked, which proves the `kid` absent. That proof, and only it, puts
    /// the `kid` in the negative cache.
    fn settles(
        &self,
        snap: &Snapshot,
        missing_kid: Option<&str>,
        seen: &Snapshot,
        asked: u64,
    ) -> bool {
        let answered_after = snap.fetch_seq.is_some_and(|seq| seq > asked);
        match missing_kid {
            None => answered_after || snap.generation != seen.generation,
            Some(kid) if snap.keys.has_kid(kid) => true,
            Some(kid) => {
                if answered_after {
                    self.refresher.remember_missing_growing(
                        kid,
                        self.clock.now(),
                        self.config.cache.negative_ttl,
                    );
                }
                answered_after
            }
        }
    }

    /// Schedules the deferred refetch for when the next token is due (and the IdP's quiet
    /// period, if any, is over), unless one is scheduled.
    fn defer(&self, bucket: &mut Bucket, now: SystemTime, quiet: Option<SystemTime>) {
        if bucket.deferred.is_some() {
            return;
        }
        if let Some(due) = bucket.next_token_at(now) {
            bucket.deferred = Some(quiet.map_or(due, |until| due.max(until)));
            tracing::debug!(provider = %self.id, "forced-refetch budget spent; one refetch deferred");
            self.refresher.reschedule.notify_one();
        }
    }

    /// Keys for verification: the cached snapshot when usable, else a (single-flight) fetch,
    /// unless a recent failure says to wait.
    pub(crate) async fn usable_snapshot(self: &Arc<Self>) -> Outcome {
        let now = self.clock.now();
        if let Some(snap) = self.snapshot.load_full() {
            if snap.is_usable(now) {
                // Keys adopted outside a runtime (say, a warm start) had no background
                // refresher started; the first verification starts it.
                self.ensure_background();
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

    /// Installs a set another replica pushed, if its `fetched_at` is newer than the held set's
    /// and it is still usable under this provider's policy. `Ok(false)` when ignored.
    ///
    /// # Errors
    /// The set does not parse into a usable key set under this provider's limits.
    pub(crate) fn adopt(self: &Arc<Self>, set: &PublishedKeySet) -> Result<bool, JwksError> {
        // Checked first so that replaying old entries of a log costs no parse.
        if self.holds_published(set) || set.flush != self.refresher.flush_id() {
            return Ok(false);
        }
        let candidate = self.candidate_from(set)?;
        let usable_until = candidate.usable_until(self.config.cache.stale_window);
        if self.clock.now() > usable_until {
            return Ok(false);
        }
        let installed = self.install_if_newer(candidate).is_some();
        if installed {
            Counters::bump(&self.counters.adopted);
            tracing::debug!(provider = %self.id, "adopted a key set from another replica");
        }
        Ok(installed)
    }

    /// Starts the background refresher once; it stops when the provider is dropped.
    pub(crate) fn ensure_background(self: &Arc<Self>) {
        // A plain load first: this runs on every verification, which must not contend for
        // the cache line with a read-modify-write.
        if self.refresher.background_started.load(Ordering::Relaxed)
            || self.is_static()
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
                    Some(p) => p.next_wake(),
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
                let due = provider.due_refresh();
                drop(provider);
                if let Some(refresh) = due {
                    let _ = refresh.await;
                }
            }
        });
    }

    /// How long the background refresher may sleep: until the scheduled refresh or the
    /// deferred refetch, whichever is first.
    fn next_wake(&self) -> Duration {
        let now = self.clock.now();
        let deferred = lock(&self.refresher.bucket).deferred;
        match self.scheduled_at().into_iter().chain(deferred).min() {
            Some(at) => at.duration_since(now).unwrap_or_default(),
            // Flushed: the next verification fetches; nothing to refresh ahead of. A flush or
            // a new set notifies this task, so the long sleep is cut short.
            None => Duration::from_secs(3600),
        }
    }

    /// When the next scheduled refresh is due; `None` when there is nothing to refresh ahead
    /// of (flushed, or never fetched).
    fn scheduled_at(&self) -> Option<SystemTime> {
        let state = lock(&self.refresher.state);
        if self.snapshot.load().is_none() && state.last_failure.is_none() {
            return None;
        }
        // Never before the end of a `Retry-After`, even for a set adopted meanwhile.
        Some(state.quiet_until.map_or(state.next_attempt_at, |quiet| {
            quiet.max(state.next_attempt_at)
        }))
    }

    /// The refresh the background refresher runs now: the scheduled one or the deferred
    /// refetch, whichever is due by the provider's clock.
    fn due_refresh(self: &Arc<Self>) -> Option<Inflight> {
        let now = self.clock.now();
        if self.scheduled_at().is_some_and(|at| at <= now) {
            return Some(self.refresh());
        }
        let quiet = self.refresher.quiet_until(now);
        let mut inflight = lock(&self.refresher.inflight);
        if running(&inflight).is_some() {
            // Started after the deferral (starting one clears it), so it does its job.
            return None;
        }
        let mut bucket = lock(&self.refresher.bucket);
        if bucket.deferred.is_none_or(|due| due > now) {
            return None;
        }
        if let Some(until) = quiet {
            // Asked for quiet after the refetch was deferred: it waits for the end of it.
            bucket.deferred = Some(until);
            return None;
        }
        if bucket.try_take(now) {
            drop(bucket);
            tracing::debug!(provider = %self.id, "running the deferred refetch");
            return Some(self.start(&mut inflight, Why::Forced));
        }
        // The token is not there yet after all (the clock stepped back): look again later.
        bucket.deferred = bucket
            .next_token_at(now)
            .map(|due| due.max(now + MIN_REFRESH_INTERVAL));
        None
    }

    async fn run_refresh(self: Arc<Self>, seq: u64, held: Option<SystemTime>, why: Why) -> Outcome {
        let flush = self.refresher.flush_id();
        if let Some(adopted) = self.from_exchange(held, flush.as_ref()).await {
            // With several URLs, a peer's set may bring some documents and not the one due.
            if !self.still_due(why) {
                return Ok(adopted);
            }
        }
        let fetched = if self.is_multi() {
            self.fetch_documents(seq, flush.clone(), why).await
        } else {
            self.fetch_and_parse(seq, flush.clone()).await
        };
        match fetched {
            Ok(candidate) => {
                Counters::bump(&self.counters.refreshes);
                let Some(snap) = self.install(candidate) else {
                    // Flushed while this fetch was under way: its keys predate the flush.
                    // The flush started a refresh of its own; wait for that one.
                    tracing::debug!(provider = %self.id, "fetch overtaken by a flush; joining the refetch");
                    return self.refresh().await;
                };
                if let Some(exchange) = &self.exchange
                    && let Some(set) = snap.published()
                {
                    exchange.fetched(&self.id, &set);
                }
                Ok(snap)
            }
            Err((err, retry_after)) => {
                if self.refresher.flush_id() != flush {
                    // A failure of a fetch a flush overtook says nothing about the refetch.
                    return self.refresh().await;
                }
                self.record_failure(&err, retry_after);
                // Nothing may be cached (a first fetch that failed) and so no refresher
                // running yet: start it, so the next attempt does not wait for traffic.
                self.ensure_background();
                Err(err)
            }
        }
    }

    /// Asks the key exchange for a set a peer fetched and installs it if it is newer than the
    /// held one and still fresh. `None`: fetch from the IdP.
    async fn from_exchange(
        self: &Arc<Self>,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<Arc<Snapshot>> {
        let exchange = self.exchange.as_ref()?;
        // A peer's fetch is worth waiting for about as long as one of our own attempts.
        let wait = self.config.retry.attempt_timeout;
        let asked = exchange.before_fetch(&self.id, held, flush);
        let set = match tokio::time::timeout(wait, asked).await {
            Ok(set) => set?,
            Err(_) => {
                tracing::debug!(provider = %self.id, "key exchange did not answer in time");
                return None;
            }
        };
        if held.is_some_and(|held| set.fetched_at <= held) {
            tracing::debug!(provider = %self.id, "key set from the exchange is not newer than ours");
            return None;
        }
        if set.flush.as_ref() != flush {
            tracing::debug!(provider = %self.id, "key set from the exchange predates a flush");
            return None;
        }
        let candidate = match self.candidate_from(&set) {
            Ok(candidate) => candidate,
            Err(e) => {
                tracing::warn!(
                    provider = %self.id,
                    error = %e,
                    "key set from the exchange refused; fetching from the issuer"
                );
                return None;
            }
        };
        if !candidate.freshness.is_fresh(self.clock.now()) {
            tracing::debug!(provider = %self.id, "key set from the exchange is no longer fresh");
            return None;
        }
        let Some(snap) = self.install_if_newer(candidate) else {
            // The same set arrived meanwhile by the push path (`Verifier::adopt`): use it
            // rather than asking the IdP for what we already hold.
            return self
                .snapshot
                .load_full()
                .filter(|held| held.fetched_at >= set.fetched_at && held.flush == set.flush);
        };
        Counters::bump(&self.counters.adopted);
        Some(snap)
    }

    fn record_failure(&self, err: &KeysUnavailable, retry_after: Option<Duration>) {
        Counters::bump(&self.counters.refresh_errors);
        let now = self.clock.now();
        // Serving ends here, if anything is served.
        let usable_until = self
            .snapshot
            .load()
            .as_ref()
            .filter(|s| s.is_usable(now))
            .map(|s| s.usable_until);
        {
            let mut state = lock(&self.refresher.state);
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_failure = Some((now, err.clone()));
            let backoff = failure_backoff(
                state.consecutive_failures,
                usable_until.is_some(),
                fastrand::f64(),
            );
            let mut next = now + backoff.max(retry_after.unwrap_or_default());
            let mut quiet = retry_after.map(|wait| now + wait);
            // Neither the backoff nor the IdP's `Retry-After` may let usable keys run out
            // untried: one more attempt starts early enough to end before they do.
            if let Some(Some(until)) = usable_until {
                let last_chance = last_chance(now, until, self.config.retry.deadline);
                next = next.min(last_chance);
                quiet = quiet.map(|q| q.min(last_chance));
            }
            state.next_attempt_at = next;
            state.quiet_until = quiet;
        }
        tracing::warn!(
            provider = %self.id,
            reason = err.cause_reason(),
            error = %err,
            "jwks refresh failed; keeping cached keys"
        );
        self.refresher.reschedule.notify_one();
    }

    /// Whether a refresh already failed and no usable keys are cached.
    fn retrying_without_keys(&self) -> bool {
        let now = self.clock.now();
        lock(&self.refresher.state).consecutive_failures > 0
            && !self
                .snapshot
                .load()
                .as_ref()
                .is_some_and(|s| s.is_usable(now))
    }

    /// Whether the held set was fetched at or after `at`.
    fn holds_newer_than(&self, at: SystemTime) -> bool {
        self.snapshot
            .load()
            .as_ref()
            .is_some_and(|held| at <= held.fetched_at)
    }

    /// Installs a set fetched from the IdP, since it is the IdP's latest word, unless a flush
    /// came after its fetch began (`None`).
    fn install(self: &Arc<Self>, candidate: Candidate) -> Option<Arc<Snapshot>> {
        let mut state = lock(&self.refresher.state);
        if state.flush != candidate.flush {
            return None;
        }
        let (snap, changed) = self.install_locked(&mut state, candidate);
        drop(state);
        self.installed(&snap, changed);
        Some(snap)
    }

    /// Installs a set from another replica if it is newer than the held one and was fetched
    /// under the flush in force, checked under the lock that serialises installs so that two
    /// adoptions cannot reorder and no flush slips in between.
    fn install_if_newer(self: &Arc<Self>, candidate: Candidate) -> Option<Arc<Snapshot>> {
        let mut state = lock(&self.refresher.state);
        if state.flush != candidate.flush || self.holds_candidate(&candidate) {
            return None;
        }
        let (snap, changed) = self.install_locked(&mut state, candidate);
        drop(state);
        self.installed(&snap, changed);
        Some(snap)
    }

    /// Swaps `candidate` in, keeping the generation (and so the verified tokens) when its keys
    /// are the ones held; records the success and schedules the next refresh ahead of the new
    /// expiry. Returns the snapshot and whether the keys changed.
    fn install_locked(&self, state: &mut State, candidate: Candidate) -> (Arc<Snapshot>, bool) {
        let now = self.clock.now();
        let cache = &self.config.cache;
        let current = self.snapshot.load_full();
        let candidate = self.merge_documents(candidate, current.as_deref(), now);
        let fetched_at = candidate.fetched_at();
        let usable_until = candidate.usable_until(cache.stale_window);
        let (keys, generation, changed) = match &current {
            Some(cur)
                if Arc::ptr_eq(&cur.keys, &candidate.keys)
                    || cur.keys.same_keys(&candidate.keys) =>
            {
                (Arc::clone(&cur.keys), cur.generation, false)
            }
            _ => (candidate.keys, next_generation(), true),
        };
        // What the keys before these had and these lack (or what the publisher says its set
        // withdrew): the IdP's answer, after those `kid`s were known, no longer has them.
        let before: Vec<String> = match &current {
            Some(cur) => cur.keys.kids().map(str::to_owned).collect(),
            None => std::mem::take(&mut state.flushed_kids),
        };
        let mut withdrawn: Vec<String> = before
            .into_iter()
            .chain(candidate.withdrawn)
            .filter(|kid| !keys.has_kid(kid))
            .collect();
        withdrawn.sort_unstable();
        withdrawn.dedup();
        withdrawn.truncate(MAX_WITHDRAWN);
        let expires = candidate.freshness.fetched_at() + candidate.freshness.ttl();
        state.last_failure = None;
        state.consecutive_failures = 0;
        if candidate.fetch_seq.is_some() {
            // The IdP answered again. (A peer's set says nothing about our own requests.)
            state.quiet_until = None;
        }
        let ttl = expires.duration_since(now).unwrap_or_default();
        let ahead = refresh_ahead_of_expiry(cache, ttl, fastrand::f64());
        // An adopted set already past its lifetime refreshes after the minimum interval.
        state.next_attempt_at = expires
            .checked_sub(ahead)
            .unwrap_or(now)
            .max(now + MIN_REFRESH_INTERVAL);
        if let Some(retry) = self.next_url_retry() {
            // A failing URL of several is asked again at its own time.
            state.next_attempt_at = state
                .next_attempt_at
                .min(retry.max(now + MIN_REFRESH_INTERVAL));
        }
        let snap = Arc::new(Snapshot {
            keys,
            generation,
            fetched_at,
            freshness: Some(candidate.freshness),
            usable_until: Some(usable_until),
            url: candidate.url,
            jwks: candidate.jwks,
            etag: candidate.etag,
            fetch_seq: candidate.fetch_seq,
            flush: candidate.flush,
            withdrawn,
            documents: candidate.documents,
        });
        // Before the keys are visible: a verification that sees them must also see the misses
        // judged against the old keys gone and the `kid`s these withdrew remembered, or it
        // could spend a refetch on a withdrawn `kid` in between.
        if changed {
            lock(&self.refresher.negative).clear();
        }
        for kid in &snap.withdrawn {
            self.refresher
                .remember_missing(kid, now, self.config.cache.negative_ttl);
        }
        self.snapshot.store(Some(Arc::clone(&snap)));
        (snap, changed)
    }

    fn installed(self: &Arc<Self>, snap: &Snapshot, changed: bool) {
        if changed {
            tracing::info!(provider = %self.id, keys = ?snap.keys, "jwks updated");
        }
        self.refresher.reschedule.notify_one();
        self.ensure_background();
    }

    /// Parses a set from another replica exactly like a fetched body, under this provider's
    /// limits and TTL policy.
    fn candidate_from(&self, set: &PublishedKeySet) -> Result<Candidate, JwksError> {
        if self.is_multi() {
            return self.candidate_from_documents(set);
        }
        if set.jwks.len() > DEFAULT_MAX_BODY_BYTES {
            return Err(JwksError::TooLarge(DEFAULT_MAX_BODY_BYTES));
        }
        let keys = self.parse(set.jwks.as_bytes())?;
        let url = self.known_jwks_url();
        let freshness = Freshness::adopted(
            url.as_ref(),
            set.fetched_at,
            set.fresh_until,
            set.etag.as_deref(),
            &self.config.cache.ttl,
        );
        Ok(Candidate {
            keys: Arc::new(keys),
            freshness,
            url,
            jwks: Some(Arc::clone(&set.jwks)),
            etag: set.etag.clone(),
            fetch_seq: None,
            flush: set.flush.clone(),
            withdrawn: set.withdrawn.clone(),
            documents: Vec::new(),
        })
    }

    fn parse(&self, document: &[u8]) -> Result<KeySet, JwksError> {
        let keys = KeySet::parse(
            document,
            &self.config.algorithms,
            self.config.cache.max_keys,
        )?;
        if keys.usable() == 0 {
            // An empty set never replaces a non-empty one, and is no use as a first set.
            return Err(JwksError::Empty);
        }
        Ok(keys)
    }

    /// Fetches and parses, as refresh number `seq`, begun under `flush`.
    async fn fetch_and_parse(
        &self,
        seq: u64,
        flush: Option<FlushId>,
    ) -> Result<Candidate, (KeysUnavailable, Option<Duration>)> {
        let url = self
            .jwks_url()
            .await
            .map_err(|e| (KeysUnavailable::Fetch(Some(Arc::new(e))), None))?;
        // What we hold from that URL, to revalidate (`If-None-Match`, 304).
        let held = self
            .snapshot
            .load_full()
            .filter(|s| s.url.as_ref() == Some(&url))
            .and_then(|s| {
                Some(Arc::new(sources::Document {
                    url: url.clone(),
                    keys: Arc::clone(&s.keys),
                    jwks: Arc::clone(s.jwks.as_ref()?),
                    etag: s.etag.clone(),
                    freshness: s.freshness.clone()?,
                    fetch_seq: s.fetch_seq,
                }))
            });
        let document = self.fetch_document(&url, held.as_ref(), seq).await?;
        Ok(Candidate {
            keys: document.keys,
            freshness: document.freshness,
            url: Some(document.url),
            jwks: Some(document.jwks),
            etag: document.etag,
            fetch_seq: document.fetch_seq,
            flush,
            withdrawn: Vec::new(),
            documents: Vec::new(),
        })
    }

    /// The JWKS URL if known without a request: configured, or discovered earlier.
    fn known_jwks_url(&self) -> Option<Url> {
        match &self.config.source {
            KeySource::Url(url) => Some(url.clone()),
            KeySource::Discovery(_) => lock(&self.refresher.state).discovered.clone(),
            KeySource::Static(_) | KeySource::Urls(_) => None,
        }
    }

    /// The JWKS URL: configured, or discovered from the issuer (OpenID Connect Discovery 1.0).
    async fn jwks_url(&self) -> Result<Url, FetchError> {
        let discovery = match &self.config.source {
            KeySource::Url(url) => return Ok(url.clone()),
            // Fetched per URL by `sources.rs`, never through here.
            KeySource::Urls(urls) => return Ok(urls[0].clone()),
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
        // After a failed refresh with nothing usable cached, refreshes come every 2 to 4 s
        // (see `failure_backoff`): that cadence is the retry, so each makes one attempt and a
        // down IdP sees one request per cycle, not `attempts` of them.
        let attempts = if self.retrying_without_keys() {
            1
        } else {
            retry.attempts
        };
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
            self.counters.count_request(match &result {
                Ok(resp) => resp.status.as_str(),
                Err(FetchError::Status { status, .. }) => status.as_str(),
                Err(FetchError::Timeout) => "timeout",
                Err(_) => "error",
            });
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
            if !err.is_retryable() || attempt >= attempts {
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

/// The wait before the next cycle of refreshes after `failures` failed ones in a row.
///
/// With usable keys cached: full jitter (`draw` in `[0, 1)`) over 1 s doubling per failure up
/// to [`MAX_FAILURE_BACKOFF`], at least [`MIN_REFRESH_INTERVAL`]. Without: "equal jitter"
/// over 1 s doubling up to [`NO_KEYS_FAILURE_BACKOFF`], i.e. between half of that ceiling and
/// all of it (2 to 4 s once the ceiling is reached), so replicas spread out but a recovered
/// IdP is seen within a few seconds.
fn failure_backoff(failures: u32, has_usable_keys: bool, draw: f64) -> Duration {
    let cap = if has_usable_keys {
        MAX_FAILURE_BACKOFF
    } else {
        NO_KEYS_FAILURE_BACKOFF
    };
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << failures.min(10))
        .min(cap);
    let wait = if has_usable_keys {
        ceiling.mul_f64(draw)
    } else {
        ceiling / 2 + (ceiling / 2).mul_f64(draw)
    };
    wait.max(MIN_REFRESH_INTERVAL)
}

/// The latest moment, after a failure at `now`, to start a refresh that should end before
/// keys usable until `until` stop being served: a whole refresh `deadline` before it, or
/// halfway there if less time is left, and never sooner than [`MIN_REFRESH_INTERVAL`].
fn last_chance(now: SystemTime, until: SystemTime, deadline: Duration) -> SystemTime {
    let left = until.duration_since(now).unwrap_or_default();
    let start = until - deadline.min(left / 2);
    start.max(now + MIN_REFRESH_INTERVAL)
}

/// How long before expiry a set with `ttl` left refreshes: `refresh_ahead` plus `jitter`
/// (a draw in `[0, 1)`) times `refresh_jitter`, scaled down in proportion when the two reach
/// past half of `ttl`, so a short-lived set is refreshed no sooner than halfway through its
/// lifetime, still spread by the jitter, whatever the settings say.
fn refresh_ahead_of_expiry(cache: &CacheSettings, ttl: Duration, jitter: f64) -> Duration {
    let ahead = cache.refresh_ahead + cache.refresh_jitter.mul_f64(jitter);
    let most = cache.refresh_ahead + cache.refresh_jitter;
    let half = ttl / 2;
    if most <= half {
        ahead
    } else {
        // `most` is above `half`, so it is positive; `min` guards against float rounding.
        ahead
            .mul_f64(half.as_secs_f64() / most.as_secs_f64())
            .min(half)
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the
/// protected data consistent, so a panic elsewhere must not take the cache down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
mod tests {
    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::config::{CacheSettings, ProviderConfig};
    use crate::exchange::KeyExchange;
    use crate::fetch::{Fetch, FetchError, FetchRequest, FetchResponse};
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

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

    fn provider_with(
        cache: CacheSettings,
        fetch: &Arc<ScriptedJwks>,
        clock: Arc<dyn Clock>,
        exchange: Option<Arc<dyn KeyExchange>>,
    ) -> Arc<Provider> {
        let config = ProviderConfig::builder("t", "p", "https://issuer.test")
            .audiences(["x"])
            .jwks_uri("https://issuer.test/jwks")
            .cache(cache)
            .build()
            .unwrap();
        Provider::new(config, fetch.clone(), clock, exchange).unwrap()
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
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let provider = provider_with(one_token_budget(), &fetch, Arc::new(SystemClock), None);
        let old = provider.refresh().await.unwrap();
        // The IdP rotates; one request's forced refetch (the whole budget) finds the new key.
        fetch.serve(&[&a, &b]);
        let new = provider
            .forced_refresh(Some("b"), &old)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(new.generation, old.generation);
        assert_eq!(fetch.requests(), 2);
        // A request that looked at the old keys before that refetch landed gets the new ones,
        // although the budget is spent, and costs the IdP nothing.
        let late = provider
            .forced_refresh(Some("b"), &old)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.generation, new.generation);
        assert_eq!(fetch.requests(), 2);
        // A kid missing from the newest keys still gets no refetch without budget.
        assert!(provider.forced_refresh(Some("c"), &new).await.is_none());
        assert_eq!(fetch.requests(), 2);
    }

    #[tokio::test]
    async fn a_refetch_begun_before_the_kid_was_asked_for_proves_nothing() {
        let (a, b) = (ed25519_jwk("a"), ed25519_jwk("b"));
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let clock = Arc::new(SystemClock);
        let provider = provider_with(one_token_budget(), &fetch, clock, None);
        let old = provider.refresh().await.unwrap();

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
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let clock = Arc::new(TestClock(Mutex::new(t0())));
        let provider = provider_with(one_token_budget(), &fetch, clock.clone(), None);
        let old = provider.refresh().await.unwrap();
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
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let provider = provider_with(one_token_budget(), &fetch, Arc::new(SystemClock), None);
        let seen = provider.refresh().await.unwrap();
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
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let clock = Arc::new(TestClock(Mutex::new(t0())));
        let provider = provider_with(one_token_budget(), &fetch, clock.clone(), None);
        let snap = provider.refresh().await.unwrap();
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
        let fetch = Arc::new(ScriptedJwks::default());
        fetch.serve(&[&a]);
        let clock = Arc::new(TestClock(Mutex::new(t0())));
        let provider = provider_with(one_token_budget(), &fetch, clock.clone(), None);
        let fetched = provider.refresh().await.unwrap();
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
}
