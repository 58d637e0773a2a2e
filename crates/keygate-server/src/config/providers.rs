//! `[[providers]]`: the trusted issuers, where their keys come from, how they are cached and
//! fetched, and which claims become response headers (introspection and DPoP in
//! `introspection.rs`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use keygate::{Algorithm, CacheSettings, HttpFetcher, ProviderConfig, RetrySettings, TtlPolicy};
use url::Url;

use super::file::FileProvider;
use super::introspection::SecretVars;
use super::names::check_name;
use super::{ConfigError, DevIssuerConfig, ProviderSpec, refused_claim_header};

/// Checks every provider, in file order: each valid, none configured twice, no issuer twice
/// in a tenant, and none that is also the development issuer's.
pub(super) fn validate_all(
    entries: Vec<FileProvider>,
    tenant_header: &HeaderName,
    dev_issuer: Option<&DevIssuerConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ProviderSpec>, ConfigError> {
    let mut fetchers = Fetchers::default();
    let mut secret_vars = SecretVars::default();
    let mut seen = HashSet::new();
    let mut issuers = HashSet::new();
    let mut providers = Vec::with_capacity(entries.len());
    for (i, p) in entries.into_iter().enumerate() {
        let key = format!("providers[{i}]");
        let spec = p.validate(&key, &mut fetchers, tenant_header, env)?;
        if spec.config.introspection().is_some() {
            secret_vars.check(&key, spec.config.tenant(), spec.config.name())?;
        }
        let id = (
            spec.config.tenant().to_owned(),
            spec.config.name().to_owned(),
        );
        if !seen.insert(id.clone()) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!("provider {}/{} is configured twice", id.0, id.1),
            ));
        }
        if !issuers.insert((id.0.clone(), spec.config.issuer().to_owned())) {
            return Err(ConfigError::new(
                format!("{key}.issuer"),
                format!(
                    "issuer {} appears twice in tenant {}: a token could not say which provider it belongs to",
                    spec.config.issuer(),
                    id.0
                ),
            ));
        }
        providers.push(spec);
    }
    if let Some(dev) = dev_issuer
        && seen.contains(&(dev.tenant.clone(), dev.provider.clone()))
    {
        return Err(ConfigError::new(
            "dev_issuer.provider",
            format!(
                "provider {}/{} is also configured in [[providers]]",
                dev.tenant, dev.provider
            ),
        ));
    }
    Ok(providers)
}

/// The two shared fetchers: strict, and loopback-http-allowed. Providers with their own
/// limits (`allowed_hosts`, `max_jwks_bytes`, `fetch_timeout`) get their own.
#[derive(Default)]
pub(super) struct Fetchers {
    strict: Option<Arc<HttpFetcher>>,
    loopback: Option<Arc<HttpFetcher>>,
}

impl Fetchers {
    fn shared(&mut self, key: &str, allow_http: bool) -> Result<Arc<HttpFetcher>, ConfigError> {
        let slot = if allow_http {
            &mut self.loopback
        } else {
            &mut self.strict
        };
        if let Some(f) = slot {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(
            HttpFetcher::builder()
                .danger_allow_http_loopback(allow_http)
                .build()
                .map_err(|e| ConfigError::new(key, e.to_string()))?,
        );
        *slot = Some(Arc::clone(&f));
        Ok(f)
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl FileProvider {
    /// Checks one URL keys are fetched from (`at` is its key path): https, or plain http
    /// to loopback with `allow_insecure_http`.
    pub(super) fn check_fetch_url(
        &self,
        at: &str,
        fetch_url: &str,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let url = Url::parse(fetch_url)
            .map_err(|e| ConfigError::new(at, format!("{fetch_url:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http && is_loopback_host(&url) => {}
            "http" if self.allow_insecure_http => {
                return Err(ConfigError::new(
                    k("allow_insecure_http"),
                    format!(
                        "plain http is honoured only for loopback addresses, not {}",
                        url.host_str().unwrap_or("")
                    ),
                ));
            }
            "http" => {
                return Err(ConfigError::new(
                    at,
                    "plain http is refused; use https (or allow_insecure_http = true for a loopback test issuer)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    at,
                    format!("scheme {other:?} is not supported; use https"),
                ));
            }
        }
        Ok(())
    }

    fn validate(
        self,
        key: &str,
        fetchers: &mut Fetchers,
        tenant_header: &HeaderName,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderSpec, ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        check_name(&k("tenant"), &self.tenant)?;
        check_name(&k("name"), &self.name)?;
        for (at, fetch_url) in &self.fetch_from(&k)? {
            self.check_fetch_url(at, fetch_url, &k)?;
        }
        if self.audiences.is_empty() && !self.skip_audience_check {
            return Err(ConfigError::new(
                k("audiences"),
                "at least one audience is required (or skip_audience_check = true, for issuers that mint tokens for this service alone)",
            ));
        }
        let algorithms = self.algorithms(key)?;
        let cache = self.cache(&k)?;
        let retry = self.retry(&k)?;
        let fetcher = self.fetcher(key, &k, fetchers)?;
        let claims_to_headers = self.claims_to_headers(key, tenant_header)?;
        let introspection = self.introspection(&k, env)?;
        let (dpop, dpop_iat_window) = self.dpop(&k)?;

        let mut b = ProviderConfig::builder(&self.tenant, &self.name, &self.issuer)
            .audiences(self.audiences)
            .algorithms(algorithms)
            .cache(cache)
            .retry(retry)
            .fetcher(fetcher)
            .dpop(dpop)
            .dpop_iat_window(dpop_iat_window);
        if let Some(introspection) = introspection {
            b = b.introspection(introspection);
        }
        if self.skip_audience_check {
            b = b.dangerous_skip_audience_check();
        }
        if let Some(uri) = &self.jwks_uri {
            b = b.jwks_uri(uri);
        }
        if let Some(uris) = &self.jwks_uris {
            b = b.jwks_uris(uris.iter().cloned());
        }
        if let Some(l) = self.leeway {
            if l.0 > Duration::from_secs(300) {
                return Err(ConfigError::new(k("leeway"), "must be at most 5 minutes"));
            }
            b = b.leeway(l.0);
        }
        if let Some(r) = self.require_exp {
            b = b.require_exp(r);
        }
        if let Some(t) = self.required_typ {
            b = b.required_typ(t);
        }
        b = b.refuse_embedded_keys(self.refuse_embedded_keys);
        let config = b
            .build()
            .map_err(|e| ConfigError::new(k(e.field), e.problem))?;
        Ok(ProviderSpec {
            config,
            claims_to_headers,
        })
    }

    /// Where keys will be fetched from, each with its key path: the JWKS URL(s), or the
    /// issuer for discovery.
    fn fetch_from(&self, k: &dyn Fn(&str) -> String) -> Result<Vec<(String, &str)>, ConfigError> {
        match (&self.jwks_uri, &self.jwks_uris) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                k("jwks_uris"),
                "set either jwks_uri or jwks_uris, not both",
            )),
            (None, Some(uris)) if uris.is_empty() || uris.len() > keygate::MAX_JWKS_URIS => {
                Err(ConfigError::new(
                    k("jwks_uris"),
                    format!("list 1 to {} URLs", keygate::MAX_JWKS_URIS),
                ))
            }
            (None, Some(uris)) => {
                let mut seen = HashSet::new();
                let mut each = Vec::with_capacity(uris.len());
                for (j, u) in uris.iter().enumerate() {
                    let at = k(&format!("jwks_uris[{j}]"));
                    if !seen.insert(u.as_str()) {
                        return Err(ConfigError::new(at, format!("{u:?} is listed twice")));
                    }
                    each.push((at, u.as_str()));
                }
                Ok(each)
            }
            (Some(u), None) => Ok(vec![(k("jwks_uri"), u.as_str())]),
            (None, None) => Ok(vec![(k("issuer"), self.issuer.as_str())]),
        }
    }

    /// `algorithms`, parsed; HMAC names are refused with the reason (key confusion), not as a
    /// typo.
    fn algorithms(&self, key: &str) -> Result<Vec<Algorithm>, ConfigError> {
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for (j, name) in self.algorithms.iter().enumerate() {
            let alg = name.parse::<Algorithm>().map_err(|e| {
                let all = Algorithm::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let problem = if e.is_hmac() {
                    format!("{e}; use one of {all}")
                } else {
                    format!("{name:?} is not a supported algorithm; use one of {all}")
                };
                ConfigError::new(format!("{key}.algorithms[{j}]"), problem)
            })?;
            algorithms.push(alg);
        }
        Ok(algorithms)
    }

    /// The key cache: TTL bounds, refresh timing and the unknown-`kid` budget.
    fn cache(&self, k: &dyn Fn(&str) -> String) -> Result<CacheSettings, ConfigError> {
        let d = CacheSettings::default();
        let ttl_default = TtlPolicy::default();
        let mut ttl = TtlPolicy::default();
        ttl.min_ttl = self.min_ttl.map_or(ttl_default.min_ttl, |v| v.0);
        ttl.max_ttl = self.max_ttl.map_or(ttl_default.max_ttl, |v| v.0);
        ttl.default_ttl = self.default_ttl.map_or(
            ttl_default
                .default_ttl
                .clamp(ttl.min_ttl, ttl.max_ttl.max(ttl.min_ttl)),
            |v| v.0,
        );
        if let Err(e) = ttl.validate_fields() {
            // The library names the member at fault (`min_ttl`, `default_ttl`).
            return Err(ConfigError::new(k(e.field), e.problem));
        }
        let mut cache = CacheSettings::default();
        cache.ttl = ttl;
        cache.refresh_ahead = self.refresh_ahead.map_or(d.refresh_ahead, |v| v.0);
        cache.refresh_jitter = self.refresh_jitter.map_or(d.refresh_jitter, |v| v.0);
        cache.stale_window = self.stale_window.map_or(d.stale_window, |v| v.0);
        cache.unknown_kid_burst = self.unknown_kid_burst.unwrap_or(d.unknown_kid_burst);
        cache.unknown_kid_refill = self
            .unknown_kid_refill
            .map_or(d.unknown_kid_refill, |v| v.0);
        cache.negative_ttl = self.negative_ttl.map_or(d.negative_ttl, |v| v.0);
        cache.max_keys = self.max_keys.unwrap_or(d.max_keys);
        if cache.unknown_kid_burst == 0 {
            return Err(ConfigError::new(
                k("unknown_kid_burst"),
                "must be at least 1: with 0, tokens of a new key are refused until the next \
                 scheduled refresh; to call the IdP less often, lengthen unknown_kid_refill",
            ));
        }
        if cache.unknown_kid_refill.is_zero() {
            return Err(ConfigError::new(
                k("unknown_kid_refill"),
                "must be positive",
            ));
        }
        if cache.max_keys == 0 {
            return Err(ConfigError::new(k("max_keys"), "must be positive"));
        }
        if cache.refresh_ahead >= ttl.min_ttl {
            return Err(ConfigError::new(
                k("refresh_ahead"),
                "must be shorter than min_ttl, or every refresh would be due at once",
            ));
        }
        Ok(cache)
    }

    /// The retry loop. `fetch_timeout` bounds each attempt twice, in the HTTP client and in
    /// the retry loop; both get it, or the shorter one would win whatever the file says.
    fn retry(&self, k: &dyn Fn(&str) -> String) -> Result<RetrySettings, ConfigError> {
        let mut retry = RetrySettings::default();
        if let Some(t) = self.fetch_timeout {
            retry.attempt_timeout = t.0;
            retry.deadline = retry.deadline.max(t.0);
        }
        if let Some(n) = self.fetch_attempts {
            if n == 0 {
                return Err(ConfigError::new(k("fetch_attempts"), "must be at least 1"));
            }
            retry.attempts = n;
        }
        if let Some(d) = self.fetch_deadline {
            if d.0 < retry.attempt_timeout {
                return Err(ConfigError::new(
                    k("fetch_deadline"),
                    format!(
                        "must be at least fetch_timeout ({:?}), or no attempt could take all of it",
                        retry.attempt_timeout
                    ),
                ));
            }
            retry.deadline = d.0;
        }
        Ok(retry)
    }

    /// A fetcher of the provider's own when it sets fetch limits, else a shared one.
    fn fetcher(
        &self,
        key: &str,
        k: &dyn Fn(&str) -> String,
        fetchers: &mut Fetchers,
    ) -> Result<Arc<HttpFetcher>, ConfigError> {
        let custom_fetch = !self.allowed_hosts.is_empty()
            || self.max_jwks_bytes.is_some()
            || self.fetch_timeout.is_some();
        if custom_fetch {
            let mut b = HttpFetcher::builder().danger_allow_http_loopback(self.allow_insecure_http);
            if !self.allowed_hosts.is_empty() {
                b = b.allowed_hosts(self.allowed_hosts.iter().cloned());
            }
            if let Some(max) = self.max_jwks_bytes {
                if max == 0 {
                    return Err(ConfigError::new(k("max_jwks_bytes"), "must be positive"));
                }
                b = b.max_body_bytes(max);
            }
            if let Some(t) = self.fetch_timeout {
                if t.0.is_zero() {
                    return Err(ConfigError::new(k("fetch_timeout"), "must be positive"));
                }
                b = b.timeout(t.0);
            }
            Ok(Arc::new(
                b.build()
                    .map_err(|e| ConfigError::new(key, e.to_string()))?,
            ))
        } else {
            fetchers.shared(key, self.allow_insecure_http)
        }
    }

    /// `claims_to_headers`: valid header names, none keygate sets or reads itself, none the
    /// target of two claims.
    fn claims_to_headers(
        &self,
        key: &str,
        tenant_header: &HeaderName,
    ) -> Result<Vec<(String, HeaderName)>, ConfigError> {
        let mut claims_to_headers = Vec::with_capacity(self.claims_to_headers.len());
        let mut headers_seen = HashSet::new();
        for (claim, header) in &self.claims_to_headers {
            let hkey = format!("{key}.claims_to_headers.{claim}");
            let name = HeaderName::try_from(header.as_str()).map_err(|_| {
                ConfigError::new(&hkey, format!("{header:?} is not a valid header name"))
            })?;
            if let Some(why) = refused_claim_header(&name, tenant_header) {
                return Err(ConfigError::new(
                    &hkey,
                    format!("{header} may not carry a claim: {why}"),
                ));
            }
            if !headers_seen.insert(name.clone()) {
                return Err(ConfigError::new(
                    &hkey,
                    format!("{header} is the target of two claims"),
                ));
            }
            claims_to_headers.push((claim.clone(), name));
        }
        Ok(claims_to_headers)
    }
}
