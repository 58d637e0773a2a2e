//! Opaque access tokens, checked by OAuth 2.0 Token Introspection (RFC 7662).
//!
//! A provider with an [`IntrospectionConfig`] accepts tokens that are not compact JWSs by
//! asking its introspection endpoint, with the client credentials configured.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::error::ConfigError;

mod call;
mod client_key;
mod introspector;

pub use client_key::{ClientKey, ClientKeyError};

pub(crate) use call::Said;
pub(crate) use introspector::{Answer, Introspector, Lookup};

/// The default upper bound on how long an `active: true` result is reused.
pub const DEFAULT_POSITIVE_TTL: Duration = Duration::from_secs(60);
/// The default time an `active: false` result is reused.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The default budget of introspection calls per second per provider.
pub const DEFAULT_RATE_LIMIT: u32 = 50;
/// The default number of introspection calls in flight at once per provider.
pub const DEFAULT_MAX_CONCURRENT: usize = 16;
/// The default number of cached results per provider.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Where a provider's introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntrospectionEndpoint {
    /// This URL.
    Url(Url),
    /// The `introspection_endpoint` of the issuer's discovery document.
    Discovered,
}

/// A client secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> ClientSecret {
        ClientSecret(secret.into())
    }

    /// The secret itself, for the `Authorization` header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

/// How the client authenticates to the introspection endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic` (RFC 6749 section 2.3.1): id and secret in `Authorization`.
    SecretBasic(ClientSecret),
    /// `private_key_jwt` (OpenID Connect Core 1.0 section 9, RFC 7523): a one-minute JWT
    /// signed with this key, its `aud` the issuer, sent as `client_assertion`.
    PrivateKeyJwt(ClientKey),
}

/// How a provider's opaque tokens are introspected.
#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    pub(crate) endpoint: IntrospectionEndpoint,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) positive_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) rate_limit: u32,
    pub(crate) burst: u32,
    pub(crate) max_concurrent: usize,
    pub(crate) cache_entries: usize,
}

impl IntrospectionConfig {
    /// Introspects at `endpoint` as client `client_id` (`client_secret_basic`), with the
    /// default bounds.
    #[must_use]
    pub fn new(
        endpoint: IntrospectionEndpoint,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> IntrospectionConfig {
        IntrospectionConfig::authenticated(
            endpoint,
            client_id,
            ClientAuth::SecretBasic(client_secret),
        )
    }

    /// Introspects at `endpoint` as client `client_id`, authenticated by `auth`, with the
    /// default bounds.
    #[must_use]
    pub fn authenticated(
        endpoint: IntrospectionEndpoint,
        client_id: impl Into<String>,
        auth: ClientAuth,
    ) -> IntrospectionConfig {
        IntrospectionConfig {
            endpoint,
            client_id: client_id.into(),
            auth,
            positive_ttl: DEFAULT_POSITIVE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            rate_limit: DEFAULT_RATE_LIMIT,
            burst: DEFAULT_RATE_LIMIT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }

    /// The longest an `active: true` result is reused (it never outlives the token's `exp`).
    #[must_use]
    pub fn positive_ttl(mut self, ttl: Duration) -> Self {
        self.positive_ttl = ttl;
        self
    }

    /// How long an `active: false` result is reused.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Calls per second to the endpoint (a token bucket), and the bucket's size.
    #[must_use]
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.rate_limit = per_second;
        self.burst = burst;
        self
    }

    /// Calls in flight at once.
    #[must_use]
    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = max;
        self
    }

    /// Cached results at most.
    #[must_use]
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries;
        self
    }

    /// Where the endpoint is.
    #[must_use]
    pub fn endpoint(&self) -> &IntrospectionEndpoint {
        &self.endpoint
    }

    /// The client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// How the client authenticates.
    #[must_use]
    pub fn auth(&self) -> &ClientAuth {
        &self.auth
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.client_id.is_empty() {
            return Err(ConfigError::new(
                "introspection_client_id",
                "must not be empty",
            ));
        }
        if let ClientAuth::SecretBasic(secret) = &self.auth
            && secret.0.is_empty()
        {
            return Err(ConfigError::new(
                "introspection_client_secret",
                "must not be empty",
            ));
        }
        let at_least_one = [
            (
                self.rate_limit == 0,
                "introspection_rate_limit",
                "must be at least 1 call per second",
            ),
            (self.burst == 0, "introspection_burst", "must be at least 1"),
            (
                self.max_concurrent == 0,
                "introspection_max_concurrent",
                "must be at least 1",
            ),
            (
                self.cache_entries == 0,
                "introspection_cache_entries",
                "must be at least 1",
            ),
        ];
        if let Some((_, field, problem)) = at_least_one.into_iter().find(|(zero, ..)| *zero) {
            return Err(ConfigError::new(field, problem));
        }
        if self.positive_ttl.is_zero() {
            return Err(ConfigError::new(
                "introspection_cache_ttl",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// Why an opaque token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectionError {
    /// The endpoint answered `active: false` (or the result failed the claim checks the
    /// verifier makes of an active token: those are reported as claim errors instead).
    #[error("token not active")]
    Inactive,
    /// The call budget (rate or concurrency) is spent: the token was not checked.
    #[error("introspection budget spent; retry in {retry_after:?}")]
    Busy {
        /// When a call is likely to be allowed again.
        retry_after: Duration,
    },
    /// The endpoint could not be asked, or did not answer usably: the token was not checked.
    #[error("introspection endpoint unavailable; retry in {retry_after:?}")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// Several tenants introspect opaque tokens and the request named none: the token is sent
    /// to no one.
    #[error("an opaque token needs a tenant to choose its introspecting provider")]
    TenantRequired,
}

impl IntrospectionError {
    /// The stable reason code.
    #[must_use]
    pub fn reason(&self) -> crate::Reason {
        match self {
            IntrospectionError::Inactive => crate::Reason::Inactive,
            IntrospectionError::Busy { .. } => crate::Reason::IntrospectionBusy,
            IntrospectionError::Unavailable { .. } => crate::Reason::IntrospectionUnavailable,
            IntrospectionError::TenantRequired => crate::Reason::TenantRequired,
        }
    }
}
