//! Sharing fetched key sets between replicas, so that a cluster fetches a JWKS once per
//! rotation rather than once per replica.
//!
//! A [`KeyExchange`] sits between a provider's refresher and its identity provider. Right
//! before a replica would call the IdP (cold start, scheduled refresh, forced refetch for an
//! unknown `kid` or a bad signature, explicit refresh) the refresher asks the exchange for a
//! set a peer fetched; after fetching one itself it hands the set over for publishing. Sets
//! that arrive unasked go through [`Verifier::adopt`](crate::Verifier::adopt), and
//! [`Verifier::key_sets`](crate::Verifier::key_sets) returns what every provider holds, e.g.
//! to persist it for a warm start. The library holds no transport: the server implements the
//! trait over its log.
//!
//! A set from a peer is trusted as much as a fetched body and no more: it is parsed and limited
//! exactly like one (size, `max_keys`, algorithms, `kid` rules, an empty set never replaces a
//! non-empty one). It is fresh until the publisher's `fresh_until`, clamped to this provider's
//! own [`TtlPolicy`](crate::TtlPolicy) and counted from the publisher's `fetched_at`; it is
//! served stale for this provider's own stale window; and it is never published again, so two
//! replicas cannot bounce a set between them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::JwksError;
use crate::fetch::BoxFuture;
use crate::provider::{FlushId, ProviderId};
use crate::verify::UnknownProvider;

/// A key set as one replica fetched it, to be adopted by others.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedKeySet {
    /// The JWKS document exactly as the identity provider served it.
    pub jwks: Arc<str>,
    /// When the publishing replica got it (a 200, or a 304 that confirmed it).
    pub fetched_at: SystemTime,
    /// Until when the publisher considers it fresh: its expiry under the publisher's policy.
    pub fresh_until: SystemTime,
    /// The response's `ETag`, which becomes the validator of the adopter's next revalidation.
    pub etag: Option<Arc<str>>,
    /// The last flush the publisher had applied to this provider when its fetch began. A
    /// replica adopts the set only under that same flush: a set fetched before a flush is
    /// never adopted after it.
    pub flush: Option<FlushId>,
    /// `kid`s the set no longer has that the publisher's previous set (or the set a flush
    /// dropped) had: the IdP withdrew them. Adopters refuse them without a refetch for their
    /// negative-cache lifetime, like the publisher does, so a withdrawn key costs the cluster
    /// no fetch per replica.
    pub withdrawn: Vec<String>,
    /// For a provider with several JWKS URLs, each URL's document as the publisher holds it
    /// (then `jwks` is empty, `fetched_at` is the newest document's and `fresh_until` the
    /// latest). Empty for a provider with one URL, whose set is `jwks` alone.
    ///
    /// An adopter takes each document only if it is newer than the one it holds for that URL
    /// and keeps the others: adopting a peer's fetch of one URL never drops its keys of
    /// another.
    pub documents: Vec<PublishedDocument>,
}

/// One JWKS URL's document inside a [`PublishedKeySet`] of a provider with several URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedDocument {
    /// The configured JWKS URL it was fetched from.
    pub url: String,
    /// The JWKS document exactly as served.
    pub jwks: Arc<str>,
    /// When the publisher got it (a 200, or a 304 that confirmed it).
    pub fetched_at: SystemTime,
    /// Until when the publisher considers it fresh.
    pub fresh_until: SystemTime,
    /// The response's `ETag`.
    pub etag: Option<Arc<str>>,
}

impl PublishedDocument {
    /// The document `jwks` fetched from `url` at `fetched_at`, fresh until `fresh_until`.
    pub fn new(
        url: impl Into<String>,
        jwks: impl Into<Arc<str>>,
        fetched_at: SystemTime,
        fresh_until: SystemTime,
        etag: Option<Arc<str>>,
    ) -> Self {
        PublishedDocument {
            url: url.into(),
            jwks: jwks.into(),
            fetched_at,
            fresh_until,
            etag,
        }
    }
}

impl PublishedKeySet {
    /// A set fetched at `fetched_at` and fresh until `fresh_until`.
    pub fn new(
        jwks: impl Into<Arc<str>>,
        fetched_at: SystemTime,
        fresh_until: SystemTime,
        etag: Option<Arc<str>>,
    ) -> Self {
        PublishedKeySet {
            jwks: jwks.into(),
            fetched_at,
            fresh_until,
            etag,
            flush: None,
            withdrawn: Vec::new(),
            documents: Vec::new(),
        }
    }

    /// The set of a provider with several JWKS URLs: one document per URL (see
    /// [`PublishedKeySet::documents`]). `fetched_at` and `fresh_until` are derived from them.
    #[must_use]
    pub fn from_documents(documents: Vec<PublishedDocument>) -> Self {
        let fetched_at = documents.iter().map(|d| d.fetched_at).max();
        let fresh_until = documents.iter().map(|d| d.fresh_until).max();
        PublishedKeySet {
            jwks: Arc::from(""),
            fetched_at: fetched_at.unwrap_or(SystemTime::UNIX_EPOCH),
            fresh_until: fresh_until.unwrap_or(SystemTime::UNIX_EPOCH),
            etag: None,
            flush: None,
            withdrawn: Vec::new(),
            documents,
        }
    }

    /// The same set, naming the `kid`s it withdrew (see [`PublishedKeySet::withdrawn`]).
    #[must_use]
    pub fn withdrawing(mut self, kids: Vec<String>) -> Self {
        self.withdrawn = kids;
        self
    }

    /// The same set, marked as fetched after `flush` (see [`PublishedKeySet::flush`]).
    #[must_use]
    pub fn after_flush(mut self, flush: Option<FlushId>) -> Self {
        self.flush = flush;
        self
    }
}

/// The hooks through which replicas share key sets. See the [module docs](self).
///
/// Both methods are called from the refresher, never from the verification hot path.
pub trait KeyExchange: Send + Sync + fmt::Debug + 'static {
    /// Called right before this replica would call the identity provider for `id`, whatever
    /// the cause: cold start, scheduled refresh ahead of expiry, forced refetch for an unknown
    /// `kid` or a bad signature, [`Verifier::refresh`](crate::Verifier::refresh). `held` is
    /// the `fetched_at` of the set this replica holds, if any; `flush` the last flush this
    /// replica applied to the provider: only a set published under that same flush
    /// ([`PublishedKeySet::flush`]) may be returned, and a peer's fetch in progress is worth
    /// waiting for only if it began under it too.
    ///
    /// Return `Some(set)` to use a set a peer fetched instead of calling the IdP; `None` means
    /// "fetch it yourself". The exchange may wait for a peer's fetch in progress, but the
    /// refresher stops waiting after the provider's
    /// [`attempt_timeout`](crate::RetrySettings::attempt_timeout) and fetches itself.
    ///
    /// A set is used only if it is newer than `held`, published under `flush` and still fresh
    /// under this provider's policy; one that fails to parse is logged and ignored. In either case the replica
    /// fetches from the IdP itself, so a bad peer cannot keep it from its keys.
    fn before_fetch<'a>(
        &'a self,
        id: &'a ProviderId,
        held: Option<SystemTime>,
        flush: Option<&'a FlushId>,
    ) -> BoxFuture<'a, Option<PublishedKeySet>>;

    /// Called after this replica fetched a set successfully from the identity provider (a 200,
    /// or a 304 that extended its freshness), with the set as it now holds it. Never called
    /// for a set that came from the exchange or from [`Verifier::adopt`](crate::Verifier::adopt).
    ///
    /// Called on the refresher's task: it must not block (queue the set and return).
    fn fetched(&self, id: &ProviderId, set: &PublishedKeySet);
}

/// Why [`Verifier::adopt`](crate::Verifier::adopt) refused a key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// No such provider.
    #[error(transparent)]
    UnknownProvider(#[from] UnknownProvider),
    /// The provider's keys are fixed and never replaced.
    #[error("provider {0} has a static key set")]
    Static(ProviderId),
    /// The document is not a usable key set for this provider.
    #[error("key set is malformed: {0}")]
    MalformedJwks(JwksError),
}

impl AdoptError {
    /// A stable, machine-readable reason code.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            AdoptError::UnknownProvider(_) => "unknown_provider",
            AdoptError::Static(_) => "static_provider",
            AdoptError::MalformedJwks(_) => "malformed_jwks",
        }
    }
}
