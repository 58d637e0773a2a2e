//! Provider configuration: builders with safe defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::alg::Algorithm;
use crate::dpop::{DEFAULT_IAT_WINDOW, DpopMode};
use crate::error::ConfigError;
use crate::fetch::Fetch;
use crate::freshness::TtlPolicy;
use crate::introspect::{IntrospectionConfig, IntrospectionEndpoint};
use crate::jwk::DEFAULT_MAX_KEYS;
use crate::provider::ProviderId;

/// Where a provider's keys come from.
#[derive(Clone)]
pub(crate) enum KeySource {
    /// A JWKS URL, fetched and cached.
    Url(Url),
    /// Several JWKS URLs (2 to [`MAX_JWKS_URIS`], distinct), each fetched, cached and
    /// refreshed on its own; the provider's keys are the union (see `refresh/sources.rs`).
    Urls(Arc<[Url]>),
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery(Url),
    /// A fixed JWKS document (offline verification); never refreshed.
    Static(Arc<[u8]>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Url(u) => f.debug_tuple("Url").field(&u.as_str()).finish(),
            KeySource::Urls(us) => f
                .debug_tuple("Urls")
                .field(&us.iter().map(Url::as_str).collect::<Vec<_>>())
                .finish(),
            KeySource::Discovery(u) => f.debug_tuple("Discovery").field(&u.as_str()).finish(),
            KeySource::Static(d) => f.debug_tuple("Static").field(&d.len()).finish(),
        }
    }
}

/// The most JWKS URLs one provider may list ([`ProviderConfigBuilder::jwks_uris`]).
pub const MAX_JWKS_URIS: usize = 8;

/// How the key cache of one provider behaves. Defaults follow the field's best practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheSettings {
    /// Bounds and default for a key set's lifetime derived from HTTP caching headers.
    pub ttl: TtlPolicy,
    /// Refresh this long before expiry, in the background (default 30 s).
    ///
    /// Never sooner than halfway through a set's lifetime: when `refresh_ahead +
    /// refresh_jitter` reaches past half of it (a short `max-age` with a low `min_ttl`), both
    /// are scaled down in proportion, so the IdP sees at most one refresh per half lifetime.
    pub refresh_ahead: Duration,
    /// Up to this much random jitter is added to the refresh-ahead time (default 10 s), so
    /// replicas do not all refresh in the same second. Scaled down with `refresh_ahead` for
    /// short-lived sets (see there).
    pub refresh_jitter: Duration,
    /// After expiry, the last good set keeps serving this long while refreshes fail
    /// (default 1 h). Past it, verification fails with `keys_unavailable`.
    pub stale_window: Duration,
    /// Forced refetches for unknown `kid`s or bad signatures: the token bucket's size
    /// (default 2). At least 1: a bucket of 0 would refuse every token of a new key until the
    /// next scheduled refresh; to call the IdP less, lengthen `unknown_kid_refill`.
    pub unknown_kid_burst: u32,
    /// One forced-refetch token is added back this often (default 15 s).
    pub unknown_kid_refill: Duration,
    /// A `kid` looked for and not found is refused without a fetch for at most this long
    /// (default 15 s): 1 s after the first miss, then twice as long after each further miss
    /// of the same `kid`, up to this, so a key the IdP publishes a moment after its first
    /// tokens costs about that moment, not the whole of it. A `kid` the IdP withdrew (it was
    /// in the previous set) is refused for all of it at once.
    pub negative_ttl: Duration,
    /// At most this many keys in one set (default 100); a larger set is refused whole.
    pub max_keys: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: TtlPolicy::default(),
            refresh_ahead: Duration::from_secs(30),
            refresh_jitter: Duration::from_secs(10),
            stale_window: Duration::from_secs(3600),
            unknown_kid_burst: 2,
            unknown_kid_refill: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(15),
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Retries of a failed fetch: exponential backoff with full jitter, bounded three ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetrySettings {
    /// Attempts per refresh, the first included (default 3).
    pub attempts: u32,
    /// The first backoff's upper bound (default 200 ms); it doubles per attempt.
    pub base_delay: Duration,
    /// No single backoff exceeds this (default 5 s).
    pub max_delay: Duration,
    /// One attempt may take this long (default 5 s), and no longer than what is left of
    /// `deadline`. It bounds the attempt whatever the fetcher's own timeout says, so set both
    /// when an IdP is slow (the server's `fetch_timeout` sets both).
    pub attempt_timeout: Duration,
    /// A whole refresh, all attempts included, ends by this deadline (default 15 s). At least
    /// `attempt_timeout`, or no attempt could take all of its own.
    pub deadline: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(15),
        }
    }
}

impl RetrySettings {
    /// The backoff before attempt `attempt` (1 for the first retry): full jitter over
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// One trusted issuer: where its keys are, and what its tokens must say.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub(crate) id: ProviderId,
    pub(crate) issuer: Arc<str>,
    pub(crate) source: KeySource,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) leeway: Duration,
    pub(crate) require_exp: bool,
    pub(crate) required_typ: Option<String>,
    pub(crate) refuse_embedded_keys: bool,
    pub(crate) cache: CacheSettings,
    pub(crate) retry: RetrySettings,
    pub(crate) fetcher: Option<Arc<dyn Fetch>>,
    pub(crate) introspection: Option<IntrospectionConfig>,
    pub(crate) dpop: DpopMode,
    pub(crate) dpop_iat_window: Duration,
}

impl ProviderConfig {
    /// Starts a provider `name` of `tenant` trusting tokens whose `iss` is exactly `issuer`.
    pub fn builder(
        tenant: impl Into<String>,
        name: impl Into<String>,
        issuer: impl Into<String>,
    ) -> ProviderConfigBuilder {
        ProviderConfigBuilder {
            tenant: tenant.into(),
            name: name.into(),
            issuer: issuer.into(),
            jwks_uri: None,
            jwks_uris: Vec::new(),
            static_jwks: None,
            audiences: Vec::new(),
            skip_audience: false,
            algorithms: Vec::new(),
            leeway: Duration::from_secs(30),
            require_exp: true,
            required_typ: None,
            refuse_embedded_keys: false,
            cache: CacheSettings::default(),
            retry: RetrySettings::default(),
            fetcher: None,
            introspection: None,
            dpop: DpopMode::Off,
            dpop_iat_window: DEFAULT_IAT_WINDOW,
        }
    }

    /// How opaque tokens are introspected, if this provider accepts them.
    #[must_use]
    pub fn introspection(&self) -> Option<&IntrospectionConfig> {
        self.introspection.as_ref()
    }

    /// How DPoP-bound tokens are treated.
    #[must_use]
    pub fn dpop(&self) -> DpopMode {
        self.dpop
    }

    /// How far a DPoP proof's `iat` may be from now, either way.
    #[must_use]
    pub fn dpop_iat_window(&self) -> Duration {
        self.dpop_iat_window
    }

    /// The tenant this provider belongs to.
    #[must_use]
    pub fn tenant(&self) -> &str {
        self.id.tenant()
    }

    /// The provider's name within its tenant.
    #[must_use]
    pub fn name(&self) -> &str {
        self.id.name()
    }

    /// The exact `iss` value this provider trusts.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether tokens carrying `jwk`, `jku`, `x5u` or `x5c` are refused rather than having
    /// those members ignored (see [`ProviderConfigBuilder::refuse_embedded_keys`]).
    #[must_use]
    pub fn refuses_embedded_keys(&self) -> bool {
        self.refuse_embedded_keys
    }

    /// The cache settings.
    #[must_use]
    pub fn cache(&self) -> &CacheSettings {
        &self.cache
    }

    /// The JWKS URL, when configured rather than discovered or static.
    #[must_use]
    pub fn jwks_uri(&self) -> Option<&Url> {
        match &self.source {
            KeySource::Url(u) => Some(u),
            _ => None,
        }
    }

    /// Every configured JWKS URL: one for a provider with a `jwks_uri`, several for one
    /// configured with [`ProviderConfigBuilder::jwks_uris`], none when discovered or static.
    #[must_use]
    pub fn jwks_uris(&self) -> &[Url] {
        match &self.source {
            KeySource::Url(u) => std::slice::from_ref(u),
            KeySource::Urls(us) => us,
            _ => &[],
        }
    }
}

impl ProviderConfig {
    /// Whether `other` configures this provider exactly as `self` does, so that a
    /// reconfigured verifier may keep the provider's keys, refresher and verified tokens.
    /// Fetchers count as equal when they are the same object or report equal
    /// [`Fetch::settings`].
    pub(crate) fn same_settings(&self, other: &ProviderConfig) -> bool {
        let same_fetcher = match (&self.fetcher, &other.fetcher) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
                    || a.settings().is_some_and(|s| Some(s) == b.settings())
            }
            _ => false,
        };
        self.id == other.id
            && self.issuer == other.issuer
            && self.source.same_as(&other.source)
            && self.audiences == other.audiences
            && self.algorithms == other.algorithms
            && self.leeway == other.leeway
            && self.require_exp == other.require_exp
            && self.required_typ == other.required_typ
            && self.refuse_embedded_keys == other.refuse_embedded_keys
            && self.cache == other.cache
            && self.retry == other.retry
            && self.introspection == other.introspection
            && self.dpop == other.dpop
            && self.dpop_iat_window == other.dpop_iat_window
            && same_fetcher
    }
}

impl KeySource {
    fn same_as(&self, other: &KeySource) -> bool {
        match (self, other) {
            (KeySource::Url(a), KeySource::Url(b))
            | (KeySource::Discovery(a), KeySource::Discovery(b)) => a == b,
            (KeySource::Urls(a), KeySource::Urls(b)) => a == b,
            (KeySource::Static(a), KeySource::Static(b)) => a == b,
            _ => false,
        }
    }
}

/// The OpenID Connect Discovery document of `issuer`:
/// `{issuer}/.well-known/openid-configuration`.
pub(crate) fn discovery_url(issuer: &str) -> Result<Url, url::ParseError> {
    let base = issuer.trim_end_matches('/');
    Url::parse(&format!("{base}/.well-known/openid-configuration"))
}

/// Builds a [`ProviderConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProviderConfigBuilder {
    tenant: String,
    name: String,
    issuer: String,
    jwks_uri: Option<String>,
    jwks_uris: Vec<String>,
    static_jwks: Option<Arc<[u8]>>,
    audiences: Vec<String>,
    skip_audience: bool,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    require_exp: bool,
    required_typ: Option<String>,
    refuse_embedded_keys: bool,
    cache: CacheSettings,
    retry: RetrySettings,
    fetcher: Option<Arc<dyn Fetch>>,
    introspection: Option<IntrospectionConfig>,
    dpop: DpopMode,
    dpop_iat_window: Duration,
}

impl ProviderConfigBuilder {
    /// Accepts opaque tokens (anything that is not a compact JWS) by introspecting them
    /// (RFC 7662). Without it, such tokens are refused as `malformed` and never sent anywhere.
    pub fn introspection(mut self, introspection: IntrospectionConfig) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// How DPoP-bound tokens are treated (default [`DpopMode::Off`]: not checked).
    pub fn dpop(mut self, mode: DpopMode) -> Self {
        self.dpop = mode;
        self
    }

    /// How far a DPoP proof's `iat` may be from now, either way (default
    /// [`DEFAULT_IAT_WINDOW`]); a proof is remembered for twice this.
    pub fn dpop_iat_window(mut self, window: Duration) -> Self {
        self.dpop_iat_window = window;
        self
    }

    /// Fetches keys from this JWKS URL. Without it (and without a static set), the URL is
    /// discovered from `{issuer}/.well-known/openid-configuration`.
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }

    /// Fetches keys from several JWKS URLs (at most [`MAX_JWKS_URIS`], distinct), e.g. during
    /// an IdP migration or for an issuer that splits its signing keys across documents.
    ///
    /// Each URL is fetched, cached, revalidated and refreshed on its own, and a failing URL
    /// never takes down the keys of the others. The provider's keys are the union; when two
    /// documents use the same `kid` for different keys, a token naming it verifies if any of
    /// those keys verifies it. A single URL here is the same as [`Self::jwks_uri`]; setting
    /// both is an error.
    pub fn jwks_uris<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.jwks_uris = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Uses a fixed JWKS document instead of fetching one.
    pub fn static_jwks(mut self, document: impl Into<Vec<u8>>) -> Self {
        self.static_jwks = Some(document.into().into());
        self
    }

    /// Accepts tokens whose `aud` contains any of these. At least one is required.
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts any audience. Only for issuers that mint tokens for this service alone.
    pub fn dangerous_skip_audience_check(mut self) -> Self {
        self.skip_audience = true;
        self
    }

    /// The algorithms this provider may use (default: all supported asymmetric ones).
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Whether `exp` is required (default true).
    pub fn require_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    /// Requires the header's `typ` to be this media type (e.g. `at+jwt`, RFC 9068), compared
    /// case-insensitively with or without the `application/` prefix.
    pub fn required_typ(mut self, typ: impl Into<String>) -> Self {
        self.required_typ = Some(typ.into());
        self
    }

    /// Refuses (`untrusted_embedded_key`) every token whose header carries a key of its own
    /// (`jwk`, `jku`, `x5u` or `x5c`), however it is signed (default false).
    ///
    /// By default such members are ignored, never trusted: the key is chosen from this
    /// provider's key set exactly as for any other token, nothing is fetched from a `jku` or
    /// `x5u`, and a token signed with the key it brings fails as `bad_signature` or
    /// `unknown_kid` (RFC 8725 section 3.10). Refusing them is for issuers known never to
    /// send them, where one arriving can only be a probe.
    pub fn refuse_embedded_keys(mut self, refuse: bool) -> Self {
        self.refuse_embedded_keys = refuse;
        self
    }

    /// Cache behaviour.
    pub fn cache(mut self, cache: CacheSettings) -> Self {
        self.cache = cache;
        self
    }

    /// Fetch retry behaviour.
    pub fn retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Fetches this provider's keys with its own fetcher instead of the verifier's, e.g. an
    /// [`HttpFetcher`](crate::HttpFetcher) with SPKI pins or a host allow-list for this IdP.
    pub fn fetcher(mut self, fetcher: Arc<dyn Fetch>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting at fault.
    pub fn build(self) -> Result<ProviderConfig, ConfigError> {
        if self.tenant.is_empty() {
            return Err(ConfigError::new("tenant", "must not be empty"));
        }
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.issuer.is_empty() {
            return Err(ConfigError::new("issuer", "must not be empty"));
        }
        if self.audiences.is_empty() && !self.skip_audience {
            return Err(ConfigError::new(
                "audiences",
                "at least one audience is required",
            ));
        }
        if self.jwks_uri.is_some() && !self.jwks_uris.is_empty() {
            return Err(ConfigError::new(
                "jwks_uris",
                "set either jwks_uri or jwks_uris, not both",
            ));
        }
        let mut jwks_uri = self.jwks_uri;
        if self.jwks_uris.len() > MAX_JWKS_URIS {
            return Err(ConfigError::new(
                "jwks_uris",
                format!("at most {MAX_JWKS_URIS} URLs"),
            ));
        }
        let mut several = None;
        if self.jwks_uris.len() == 1 {
            jwks_uri = self.jwks_uris.into_iter().next();
        } else if !self.jwks_uris.is_empty() {
            let mut urls: Vec<Url> = Vec::with_capacity(self.jwks_uris.len());
            for (i, uri) in self.jwks_uris.iter().enumerate() {
                let url = Url::parse(uri)
                    .map_err(|e| ConfigError::new("jwks_uris", format!("entry {i}: {e}")))?;
                if urls.contains(&url) {
                    return Err(ConfigError::new(
                        "jwks_uris",
                        format!("entry {i}: listed twice"),
                    ));
                }
                urls.push(url);
            }
            several = Some(KeySource::Urls(urls.into()));
        }
        let source = match (self.static_jwks, jwks_uri, several) {
            (Some(doc), _, _) => KeySource::Static(doc),
            (None, _, Some(several)) => several,
            (None, Some(uri), None) => KeySource::Url(
                Url::parse(&uri).map_err(|e| ConfigError::new("jwks_uri", e.to_string()))?,
            ),
            (None, None, None) => {
                KeySource::Discovery(discovery_url(&self.issuer).map_err(|e| {
                    ConfigError::new("issuer", format!("not a URL for discovery: {e}"))
                })?)
            }
        };
        let mut algorithms = if self.algorithms.is_empty() {
            Algorithm::ALL.to_vec()
        } else {
            self.algorithms
        };
        algorithms.sort();
        algorithms.dedup();
        let c = &self.cache;
        c.ttl
            .check()
            .map_err(|(field, problem)| ConfigError::new(field.in_cache(), problem))?;
        if c.unknown_kid_burst == 0 {
            return Err(ConfigError::new(
                "cache.unknown_kid_burst",
                "must be at least 1: with 0, tokens of a new key are refused until the next \
                 scheduled refresh; to call the IdP less often, lengthen unknown_kid_refill",
            ));
        }
        if c.unknown_kid_refill.is_zero() {
            return Err(ConfigError::new(
                "cache.unknown_kid_refill",
                "must be positive",
            ));
        }
        if c.max_keys == 0 {
            return Err(ConfigError::new("cache.max_keys", "must be positive"));
        }
        let r = &self.retry;
        if r.attempts == 0 {
            return Err(ConfigError::new("retry.attempts", "must be at least 1"));
        }
        if r.attempt_timeout.is_zero() {
            return Err(ConfigError::new(
                "retry.attempt_timeout",
                "must be positive",
            ));
        }
        if r.deadline.is_zero() {
            return Err(ConfigError::new("retry.deadline", "must be positive"));
        }
        if let Some(introspection) = &self.introspection {
            introspection.validate()?;
            if let IntrospectionEndpoint::Url(url) = &introspection.endpoint
                && !matches!(url.scheme(), "https" | "http")
            {
                return Err(ConfigError::new(
                    "introspection_endpoint",
                    "must be an http(s) URL",
                ));
            }
        }
        if self.dpop != DpopMode::Off && self.dpop_iat_window.is_zero() {
            return Err(ConfigError::new("dpop_iat_window", "must be positive"));
        }
        if r.deadline < r.attempt_timeout {
            return Err(ConfigError::new(
                "retry.deadline",
                "must be at least retry.attempt_timeout, or no attempt could take all of it",
            ));
        }
        Ok(ProviderConfig {
            id: ProviderId::new(&self.tenant, &self.name),
            issuer: self.issuer.into(),
            source,
            audiences: self.audiences,
            algorithms,
            leeway: self.leeway,
            require_exp: self.require_exp,
            required_typ: self.required_typ,
            refuse_embedded_keys: self.refuse_embedded_keys,
            cache: self.cache,
            retry: self.retry,
            fetcher: self.fetcher,
            introspection: self.introspection,
            dpop: self.dpop,
            dpop_iat_window: self.dpop_iat_window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn backoff_stays_within_its_bounds(
            attempt in 0u32..100,
            base_ms in 1u64..10_000,
            max_ms in 1u64..60_000,
        ) {
            let r = RetrySettings {
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(max_ms),
                ..RetrySettings::default()
            };
            let ceiling = Duration::from_millis(base_ms)
                .saturating_mul(1 << attempt.saturating_sub(1).min(20))
                .min(Duration::from_millis(max_ms));
            let wait = r.backoff(attempt);
            prop_assert!(wait <= ceiling);
            prop_assert!(wait <= r.max_delay);
        }
    }

    #[test]
    fn builder_refuses_unsafe_or_broken_settings() {
        let base = || ProviderConfig::builder("t", "p", "https://issuer.example");
        let refused = |builder: ProviderConfigBuilder| builder.build().unwrap_err().field;
        assert_eq!(refused(base()), "audiences");
        assert!(base().dangerous_skip_audience_check().build().is_ok());
        assert_eq!(
            refused(base().audiences(["a"]).jwks_uri("not a url")),
            "jwks_uri"
        );
        assert_eq!(
            refused(ProviderConfig::builder("", "p", "i").audiences(["a"])),
            "tenant"
        );
        let retry = RetrySettings {
            attempts: 0,
            ..RetrySettings::default()
        };
        assert_eq!(
            refused(base().audiences(["a"]).retry(retry)),
            "retry.attempts"
        );
        let cache = CacheSettings {
            unknown_kid_burst: 0,
            ..CacheSettings::default()
        };
        let err = base().audiences(["a"]).cache(cache).build().unwrap_err();
        assert_eq!(err.field, "cache.unknown_kid_burst");
        assert!(err.to_string().contains("unknown_kid_refill"), "{err}");
        let retry = RetrySettings {
            attempt_timeout: Duration::from_secs(10),
            ..RetrySettings::default()
        };
        assert!(base().audiences(["a"]).retry(retry).build().is_ok());
        let retry = RetrySettings {
            attempt_timeout: Duration::from_secs(20),
            ..RetrySettings::default()
        };
        assert_eq!(
            refused(base().audiences(["a"]).retry(retry)),
            "retry.deadline"
        );
        let discovered = base().audiences(["a"]).build().unwrap();
        assert!(matches!(&discovered.source, KeySource::Discovery(u)
            if u.as_str() == "https://issuer.example/.well-known/openid-configuration"));
    }
}
