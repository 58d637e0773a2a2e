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
pub mod dpop;
mod error;
pub mod exchange;
pub mod fetch;
mod freshness;
pub mod introspect;
pub mod jwk;
mod provider;
mod reason;
mod refresh;
mod revoke;
mod token;
mod token_cache;
mod verify;

pub use alg::{Algorithm, UnknownAlgorithm};
pub use bearer::Scheme;
pub use clock::{Clock, SystemClock};
pub use config::{
    CacheSettings, MAX_JWKS_URIS, ProviderConfig, ProviderConfigBuilder, RetrySettings,
};
pub use dpop::{DpopMode, DpopRequest, MemoryReplayGuard, ReplayGuard};
pub use error::{
    ClaimsError, ConfigError, HeaderError, JwksError, KeyError, KeysUnavailable, Malformed,
    RevokedBy, VerifyError,
};
pub use exchange::{AdoptError, KeyExchange, PublishedDocument, PublishedKeySet};
pub use fetch::{Fetch, FetchError, HttpFetcher, PostRequest};
pub use freshness::TtlPolicy;
pub use provider::{
    CounterSnapshot, FlushId, LastError, ProviderId, ProviderState, ProviderStatus, SourceStatus,
};
pub use reason::{Reason, ReasonClass};
pub use revoke::{
    Revocation, RevocationCheck, Revocations, TokenFacts, is_token_sha256, token_sha256,
};
pub use verify::{
    DEFAULT_MAX_TOKEN_BYTES, ReconfigureReport, RefreshError, UnknownProvider, VerifiedToken,
    Verifier, VerifierBuilder,
};

/// Entry points for the fuzz targets in `fuzz/` (outside the workspace), and for nothing else:
/// not part of the API, no stability promise. They expose internals that have no public path
/// (the freshness computation and `Retry-After` parsing) without changing their behaviour.
#[doc(hidden)]
pub mod __fuzz {
    use std::time::{Duration, SystemTime};

    use http::HeaderMap;

    /// The freshness of one fetched key set, exactly as the refresher computes it.
    pub use crate::freshness::Freshness;

    /// The delay a `Retry-After` header asks for, as the refresher reads it.
    #[must_use]
    pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        crate::fetch::retry_after(headers, now)
    }
}
