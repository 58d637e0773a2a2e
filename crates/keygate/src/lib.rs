//! keygate: a multi-tenant JWKS cache and a strict JWT verifier.
//!
//! A [`Verifier`] holds a registry of providers keyed by (tenant, provider). A token's `iss`
//! selects the provider; its key is looked up only in that provider's key set, which is
//! fetched, cached according to HTTP caching headers, refreshed ahead of expiry, refetched
//! (single-flight, rate-limited) on rotation, and served stale for a bounded time while the
//! issuer is down. Verification follows RFC 7515/7517/7518/7519 and RFC 8725 strictly.
//! Replicas can share the key sets they fetch through a [`KeyExchange`] (see [`exchange`]), so
//! that a cluster fetches a JWKS once per rotation rather than once per replica.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use keygate::{Algorithm, ProviderConfig, Verifier};
//!
//! let verifier = Verifier::builder()
//!     .provider(
//!         ProviderConfig::builder("acme", "auth0", "https://acme.eu.auth0.com/")
//!             .audiences(["https://api.acme.example"])
//!             .algorithms([Algorithm::RS256])
//!             .build()?,
//!     )
//!     .token_cache(10_000)
//!     .build()?;
//! let token = verifier.verify("eyJ...").await?;
//! println!("hello {:?}", token.subject());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod alg;
pub mod bearer;
pub mod clock;
mod config;
mod error;
pub mod exchange;
pub mod fetch;
mod freshness;
pub mod jwk;
mod provider;
mod reason;
mod refresh;
mod revoke;
mod token;
mod token_cache;
mod verify;

pub use alg::{Algorithm, UnknownAlgorithm};
pub use clock::{Clock, SystemClock};
pub use config::{
    CacheSettings, MAX_JWKS_URIS, ProviderConfig, ProviderConfigBuilder, RetrySettings,
};
pub use error::{
    ClaimsError, ConfigError, HeaderError, JwksError, KeyError, KeysUnavailable, Malformed,
    RevokedBy, VerifyError,
};
pub use exchange::{AdoptError, KeyExchange, PublishedDocument, PublishedKeySet};
pub use fetch::{Fetch, FetchError, HttpFetcher};
pub use freshness::TtlPolicy;
pub use provider::{
    CounterSnapshot, FlushId, LastError, ProviderId, ProviderState, ProviderStatus, SourceStatus,
};
pub use reason::{Reason, ReasonClass};
pub use revoke::{Revocation, RevocationCheck, Revocations, TokenFacts};
pub use verify::{
    DEFAULT_MAX_TOKEN_BYTES, RefreshError, UnknownProvider, VerifiedToken, Verifier,
    VerifierBuilder,
};

/// Entry points for the fuzz targets in `fuzz/` (outside the workspace), and for nothing else:
/// not part of the API, no stability promise. They expose internals that have no public path
/// (the freshness computation and `Retry-After` parsing) without changing their behaviour.
#[doc(hidden)]
pub mod __fuzz {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, StatusCode};
    use url::Url;

    use crate::freshness::{Freshness as Inner, TtlPolicy};

    /// The freshness of one fetched key set: a thin wrapper over the crate's own.
    #[derive(Debug, Clone)]
    pub struct Freshness(Inner);

    impl Freshness {
        /// As the refresher computes it for a fetched response.
        #[must_use]
        pub fn from_response(
            url: &Url,
            request_headers: &HeaderMap,
            status: StatusCode,
            response_headers: &HeaderMap,
            now: SystemTime,
            ttl: &TtlPolicy,
        ) -> Self {
            Freshness(Inner::from_response(
                url,
                request_headers,
                status,
                response_headers,
                now,
                ttl,
            ))
        }

        /// As an adopted peer set gets it.
        #[must_use]
        pub fn adopted(
            url: Option<&Url>,
            fetched_at: SystemTime,
            fresh_until: SystemTime,
            etag: Option<&str>,
            ttl: &TtlPolicy,
        ) -> Self {
            Freshness(Inner::adopted(url, fetched_at, fresh_until, etag, ttl))
        }

        /// The conditional headers of the next fetch.
        #[must_use]
        pub fn revalidation_headers(&self) -> HeaderMap {
            self.0.revalidation_headers()
        }

        /// The freshness after a 304 with `response_headers` at `now`.
        #[must_use]
        pub fn not_modified(
            &self,
            response_headers: &HeaderMap,
            now: SystemTime,
            ttl: &TtlPolicy,
        ) -> Option<Self> {
            self.0
                .not_modified(response_headers, now, ttl)
                .map(Freshness)
        }

        /// When the set was fetched or last revalidated.
        #[must_use]
        pub fn fetched_at(&self) -> SystemTime {
            self.0.fetched_at()
        }

        /// The clamped lifetime.
        #[must_use]
        pub fn ttl(&self) -> Duration {
            self.0.ttl()
        }

        /// The lifetime left at `now`.
        #[must_use]
        pub fn remaining(&self, now: SystemTime) -> Duration {
            self.0.remaining(now)
        }

        /// Whether the set is fresh at `now`.
        #[must_use]
        pub fn is_fresh(&self, now: SystemTime) -> bool {
            self.0.is_fresh(now)
        }
    }

    /// The delay a `Retry-After` header asks for, as the refresher reads it.
    #[must_use]
    pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        crate::fetch::retry_after(headers, now)
    }
}
