//! Per-provider state: the snapshot of parsed keys readers load without locks, the counters,
//! and the status report built from them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use url::Url;

use crate::clock::Clock;
use crate::config::{KeySource, ProviderConfig};
use crate::exchange::{KeyExchange, PublishedKeySet};
use crate::fetch::Fetch;
use crate::freshness::Freshness;
use crate::introspect::Introspector;
use crate::jwk::KeySet;
use crate::refresh::Refresher;
use crate::refresh::sources::{Document, Sources};

/// Identifies a provider: a tenant and the provider's name within it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId {
    tenant: Arc<str>,
    name: Arc<str>,
}

impl ProviderId {
    /// The id of provider `name` in `tenant`.
    #[must_use]
    pub fn new(tenant: &str, name: &str) -> Self {
        ProviderId {
            tenant: tenant.into(),
            name: name.into(),
        }
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The provider's name within its tenant.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// Names one flush of a provider's keys, so that replicas can tell a key set fetched after it
/// from one fetched before.
///
/// Every flush gets a new id ([`FlushId::random`] where it starts,
/// [`Verifier::apply_flush`](crate::Verifier::apply_flush) where it is replayed). A provider
/// remembers the last flush it applied; a fetch records the flush in force when it *began*,
/// and a key set is installed, adopted or published only under that same flush. So nothing
/// fetched before a flush is ever served after it, whatever clocks say.
///
/// Ids are 1 to 64 characters of `[A-Za-z0-9_-]`: opaque, compared for equality only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlushId(Arc<str>);

impl FlushId {
    /// The longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// A new, unique id (128 random bits, hex).
    #[must_use]
    pub fn random() -> Self {
        FlushId(format!("{:032x}", fastrand::u128(..)).into())
    }

    /// `id` if it is 1 to 64 characters of `[A-Za-z0-9_-]`.
    #[must_use]
    pub fn new(id: &str) -> Option<Self> {
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| FlushId(id.into()))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FlushId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlushId({})", self.0)
    }
}

impl fmt::Display for FlushId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An immutable view of one provider's keys. Replaced whole, never mutated.
pub(crate) struct Snapshot {
    pub(crate) keys: Arc<KeySet>,
    /// Changes whenever the keys change (or are flushed); verified tokens remember it.
    pub(crate) generation: u64,
    pub(crate) fetched_at: SystemTime,
    /// `None` for static key sets, which never expire.
    pub(crate) freshness: Option<Freshness>,
    /// Serving ends here: expiry plus the stale window.
    pub(crate) usable_until: Option<SystemTime>,
    /// The URL the keys came from, for revalidation.
    pub(crate) url: Option<Url>,
    /// The JWKS document as served, to hand to other replicas; `None` for static key sets.
    pub(crate) jwks: Option<Arc<str>>,
    /// The `ETag` the document was served with.
    pub(crate) etag: Option<Arc<str>>,
    /// The sequence number of the refresh whose own request to the identity provider produced
    /// (or, with a 304, confirmed) these keys. `None` for static sets and sets adopted from
    /// another replica: nobody knows when *their* fetch began.
    pub(crate) fetch_seq: Option<u64>,
    /// The flush in force when the fetch that produced these keys began (see [`FlushId`]).
    pub(crate) flush: Option<FlushId>,
    /// `kid`s the keys before these had and these lack: withdrawn by the IdP.
    pub(crate) withdrawn: Vec<String>,
    /// For a provider with several JWKS URLs, the document of each URL that has a usable one,
    /// in configuration order; `keys` is their union. Empty otherwise.
    pub(crate) documents: Vec<Arc<Document>>,
}

impl Snapshot {
    pub(crate) fn is_usable(&self, now: SystemTime) -> bool {
        self.usable_until.is_none_or(|until| now <= until)
    }

    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        self.freshness.as_ref().is_none_or(|f| f.is_fresh(now))
    }

    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        self.freshness.as_ref().map(|f| f.fetched_at() + f.ttl())
    }

    /// The set as another replica would adopt it; `None` for static sets.
    pub(crate) fn published(&self) -> Option<PublishedKeySet> {
        if !self.documents.is_empty() {
            return self.published_documents();
        }
        Some(
            PublishedKeySet::new(
                Arc::clone(self.jwks.as_ref()?),
                self.fetched_at,
                self.expires_at()?,
                self.etag.clone(),
            )
            .after_flush(self.flush.clone())
            .withdrawing(self.withdrawn.clone()),
        )
    }
}

/// A process-wide source of snapshot generations, so that a generation is never reused,
/// even across a flush.
pub(crate) fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Event counters of one provider.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_errors: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) unknown_kid_rejections: AtomicU64,
    pub(crate) token_cache_hits: AtomicU64,
    /// HTTP requests to the identity provider by outcome (see
    /// [`CounterSnapshot::requests`]). Requests are off the hot path, so a small map under a
    /// mutex does; its keys are status codes and two words, so it stays small.
    pub(crate) requests: Mutex<BTreeMap<Box<str>, u64>>,
    /// Calls to the introspection endpoint by outcome, as `requests` counts key fetches.
    pub(crate) introspections: Mutex<BTreeMap<Box<str>, u64>>,
    /// Opaque tokens answered from the introspection cache.
    pub(crate) introspection_cache_hits: AtomicU64,
    /// Opaque tokens refused unchecked because the introspection budget was spent.
    pub(crate) introspections_over_budget: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request to the identity provider that ended with `outcome`.
    pub(crate) fn count_request(&self, outcome: &str) {
        Counters::count_in(&self.requests, outcome);
    }

    pub(crate) fn count_in(map: &Mutex<BTreeMap<Box<str>, u64>>, outcome: &str) {
        let mut requests = map.lock().unwrap_or_else(PoisonError::into_inner);
        match requests.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                requests.insert(outcome.into(), 1);
            }
        }
    }

    fn requests(map: &Mutex<BTreeMap<Box<str>, u64>>) -> BTreeMap<String, u64> {
        map.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(outcome, n)| (outcome.to_string(), *n))
            .collect()
    }
}

/// One configured issuer and the live state of its keys.
pub(crate) struct Provider {
    pub(crate) id: ProviderId,
    pub(crate) config: ProviderConfig,
    pub(crate) snapshot: ArcSwapOption<Snapshot>,
    pub(crate) refresher: Refresher,
    pub(crate) counters: Counters,
    pub(crate) fetcher: Arc<dyn Fetch>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) exchange: Option<Arc<dyn KeyExchange>>,
    /// Per-URL refresh state of a provider with several JWKS URLs.
    pub(crate) sources: Sources,
    /// The introspection state of a provider that accepts opaque tokens.
    pub(crate) introspector: Option<Arc<Introspector>>,
}

impl Provider {
    pub(crate) fn new(
        config: ProviderConfig,
        fetcher: Arc<dyn Fetch>,
        clock: Arc<dyn Clock>,
        exchange: Option<Arc<dyn KeyExchange>>,
    ) -> Result<Arc<Self>, crate::error::JwksError> {
        let id = config.id.clone();
        let snapshot = match &config.source {
            KeySource::Static(doc) => {
                let keys = KeySet::parse(doc, &config.algorithms, config.cache.max_keys)?;
                Some(Arc::new(Snapshot {
                    keys: Arc::new(keys),
                    generation: next_generation(),
                    fetched_at: clock.now(),
                    freshness: None,
                    usable_until: None,
                    url: None,
                    jwks: None,
                    etag: None,
                    fetch_seq: None,
                    flush: None,
                    withdrawn: Vec::new(),
                    documents: Vec::new(),
                }))
            }
            KeySource::Url(_) | KeySource::Urls(_) | KeySource::Discovery(_) => None,
        };
        let fetcher = config.fetcher.clone().unwrap_or(fetcher);
        let introspector = config
            .introspection
            .clone()
            .map(|c| Arc::new(Introspector::new(c)));
        Ok(Arc::new(Provider {
            introspector,
            id,
            sources: Sources::new(config.jwks_uris().len()),
            refresher: Refresher::new(&config.cache, clock.now()),
            config,
            snapshot: ArcSwapOption::new(snapshot),
            counters: Counters::default(),
            fetcher,
            clock,
            exchange,
        }))
    }

    pub(crate) fn is_static(&self) -> bool {
        matches!(self.config.source, KeySource::Static(_))
    }

    pub(crate) fn status(&self) -> ProviderStatus {
        let now = self.clock.now();
        let snap = self.snapshot.load_full();
        let (failure, flush) = self.refresher.failure_and_flush();
        let state = match &snap {
            None => ProviderState::Empty,
            Some(s) if !s.is_usable(now) => ProviderState::Unavailable,
            Some(_) if failure.is_some() || self.sources.any_failing() => ProviderState::Failing,
            Some(s) if s.is_fresh(now) => ProviderState::Fresh,
            Some(_) => ProviderState::Stale,
        };
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProviderStatus {
            id: self.id.clone(),
            issuer: self.config.issuer.to_string(),
            jwks_uri: snap
                .as_ref()
                .and_then(|s| s.url.as_ref())
                .or(self.config.jwks_uri())
                .map(Url::to_string),
            state,
            kids: snap
                .as_ref()
                .map(|s| s.keys.kids().map(str::to_owned).collect())
                .unwrap_or_default(),
            skipped_keys: snap.as_ref().map_or(0, |s| s.keys.skipped()),
            fetched_at: snap.as_ref().map(|s| s.fetched_at),
            expires_at: snap.as_ref().and_then(|s| s.expires_at()),
            usable_until: snap.as_ref().and_then(|s| s.usable_until),
            refetching_after_flush: snap.is_none() && flush.is_some() && failure.is_none(),
            sources: self.source_statuses(snap.as_deref()),
            flush,
            last_error: failure.map(|(at, e)| LastError {
                at,
                reason: e.cause_reason(),
                message: e.to_string(),
            }),
            counters: CounterSnapshot {
                hits: load(&c.hits),
                misses: load(&c.misses),
                refreshes: load(&c.refreshes),
                refresh_errors: load(&c.refresh_errors),
                adopted: load(&c.adopted),
                unknown_kid_rejections: load(&c.unknown_kid_rejections),
                token_cache_hits: load(&c.token_cache_hits),
                requests: Counters::requests(&c.requests),
                introspections: Counters::requests(&c.introspections),
                introspection_cache_hits: load(&c.introspection_cache_hits),
                introspections_over_budget: load(&c.introspections_over_budget),
            },
        }
    }
}

/// The state of a provider's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderState {
    /// Keys are cached and within their freshness lifetime.
    Fresh,
    /// Keys are past their freshness lifetime but still served (within the stale window).
    Stale,
    /// The last refresh failed; cached keys are still served.
    Failing,
    /// Keys are past the stale window: verification fails with `keys_unavailable`.
    Unavailable,
    /// No keys have been fetched yet (or they were flushed and the refetch has not landed).
    Empty,
}

impl ProviderState {
    /// A stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Fresh => "fresh",
            ProviderState::Stale => "stale",
            ProviderState::Failing => "failing",
            ProviderState::Unavailable => "unavailable",
            ProviderState::Empty => "empty",
        }
    }

    /// Whether tokens can be verified right now without fetching.
    #[must_use]
    pub fn has_usable_keys(self) -> bool {
        matches!(
            self,
            ProviderState::Fresh | ProviderState::Stale | ProviderState::Failing
        )
    }
}

/// A provider's state, for operators.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderStatus {
    /// Which provider.
    pub id: ProviderId,
    /// Its issuer.
    pub issuer: String,
    /// The JWKS URL (configured or discovered), if known.
    pub jwks_uri: Option<String>,
    /// The state of its keys.
    pub state: ProviderState,
    /// The `kid`s of the cached keys.
    pub kids: Vec<String>,
    /// Entries of the cached set that were skipped as broken or unsupported.
    pub skipped_keys: usize,
    /// When the cached set was fetched.
    pub fetched_at: Option<SystemTime>,
    /// When it stops being fresh.
    pub expires_at: Option<SystemTime>,
    /// When it stops being served at all.
    pub usable_until: Option<SystemTime>,
    /// The last refresh failure, cleared by a success.
    pub last_error: Option<LastError>,
    /// The last flush applied to this provider, if any.
    pub flush: Option<FlushId>,
    /// The keys were flushed and the refetch that replaces them is under way and has not
    /// failed: verifications wait for it (bounded by the fetch timeout), so the provider
    /// still counts as ready.
    pub refetching_after_flush: bool,
    /// Event counters.
    pub counters: CounterSnapshot,
    /// For a provider with several JWKS URLs (`jwks_uris`), each URL's state, in
    /// configuration order. The provider's own fields then sum them up: `jwks_uri` is `None`,
    /// `kids` is the union, `state` is `failing` while any URL fails, `fetched_at` is the
    /// newest document's, `expires_at` the first document's expiry and `usable_until` the
    /// last document's. Empty for a provider with one URL.
    pub sources: Vec<SourceStatus>,
}

/// The state of one JWKS URL of a provider with several.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceStatus {
    /// The URL.
    pub url: String,
    /// The state of its document: `empty` before its first success, `failing` while its last
    /// attempt failed (its cached keys still served), `unavailable` past its stale window.
    pub state: ProviderState,
    /// The `kid`s of its document.
    pub kids: Vec<String>,
    /// Entries of its document that were skipped as broken or unsupported.
    pub skipped_keys: usize,
    /// When its document was fetched.
    pub fetched_at: Option<SystemTime>,
    /// When its document stops being fresh.
    pub expires_at: Option<SystemTime>,
    /// When its keys stop being served.
    pub usable_until: Option<SystemTime>,
    /// Its last failure, cleared by a success.
    pub last_error: Option<LastError>,
    /// Successful fetches (200 or 304) of this URL.
    pub refreshes: u64,
    /// Failed fetches of this URL.
    pub refresh_errors: u64,
}

/// A refresh failure.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LastError {
    /// When it happened.
    pub at: SystemTime,
    /// Its stable reason code.
    pub reason: &'static str,
    /// A human-readable description.
    pub message: String,
}

/// Counter values at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Verifications that found their key in the cache.
    pub hits: u64,
    /// Verifications whose key was not cached.
    pub misses: u64,
    /// Successful refreshes from the identity provider (ending in a 200 or 304). A refresh
    /// may take several requests (retries, discovery): see [`requests`](Self::requests).
    pub refreshes: u64,
    /// Failed refreshes (each after all its attempts).
    pub refresh_errors: u64,
    /// Key sets adopted from other replicas (through a
    /// [`KeyExchange`](crate::KeyExchange) or [`Verifier::adopt`](crate::Verifier::adopt))
    /// instead of fetched.
    pub adopted: u64,
    /// Tokens refused with `unknown_kid`.
    pub unknown_kid_rejections: u64,
    /// Verifications answered from the verified-token cache.
    pub token_cache_hits: u64,
    /// Every HTTP request made to the identity provider (JWKS and discovery, retries
    /// included), by outcome: the status code as text (`"200"`, `"304"`, `"503"`, ...),
    /// `"timeout"` when no answer came in time, or `"error"` when none came at all
    /// (connection refused, TLS, a body over the cap, a refused redirect).
    pub requests: BTreeMap<String, u64>,
    /// Every call to the introspection endpoint, by outcome as in
    /// [`requests`](Self::requests).
    pub introspections: BTreeMap<String, u64>,
    /// Opaque tokens answered from the introspection cache.
    pub introspection_cache_hits: u64,
    /// Opaque tokens answered 503 unchecked because the introspection budget was spent.
    pub introspections_over_budget: u64,
}
