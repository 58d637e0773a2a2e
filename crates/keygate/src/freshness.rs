//! HTTP caching headers to freshness.
//!
//! A key set is cached for as long as the identity provider's caching headers allow, clamped to
//! a [`TtlPolicy`]. Everything here is a pure function of the `now` it is given: no clock is
//! read, so callers (and tests) decide what time it is.
//!
//! The header semantics (RFC 9111: `Cache-Control`, `Expires`, `Date`, `Age`, validators and
//! the 304 header merge) come from [`http_cache_semantics`], evaluated as a *private* cache:
//! keygate is a private cache of a public document. It stores the key set for its own use (and
//! its replicas', which are the same party) and never serves the response on to anyone, so
//! `max-age` beats `Expires`, and `s-maxage` and `proxy-revalidate`, which RFC 9111 (sections
//! 5.2.2.8 and 5.2.2.10) addresses to shared caches only (a CDN in front of the IdP), are
//! ignored. On top of it keygate makes these choices, because it caches *keys*, never
//! responses:
//!
//! - **Never refetch on every request.** `no-store`, `no-cache`, `max-age=0`, an `Expires` in
//!   the past or an unparsable lifetime all mean a lifetime of zero, which the policy raises to
//!   [`TtlPolicy::min_ttl`]. So does `Vary: *`. `must-revalidate` changes nothing: it forbids
//!   serving stale, and whether a stale key set may still be used is not decided here.
//! - **No heuristics.** A response without an explicit lifetime (no `max-age`, `s-maxage` or
//!   `Expires`) that does not forbid caching either gets [`TtlPolicy::default_ttl`], counted from
//!   when the response was generated (its `Age` is subtracted). `Last-Modified` is never used
//!   to guess a lifetime and `immutable` extends nothing.
//! - **User-scoping is irrelevant.** `private`, `Set-Cookie` and a request `Authorization` exist
//!   so a shared cache does not replay one user's response to another. A private cache may
//!   store a `private` response (RFC 9111 section 5.2.2.7), keygate never replays the
//!   response, and a key set is public, so they are ignored: `private, max-age=600` lives
//!   600 s (and a load balancer's sticky cookie must not turn a day-long `max-age` into
//!   `min_ttl`).
//! - **`Pragma` is ignored.** RFC 9111 defines it for requests only.
//! - **Directive names are case-insensitive** (`Max-Age=600` counts), as RFC 9111 requires.
//! - **Overflow is 2^31 seconds** (RFC 9111 section 1.2.2): a `max-age` or `Age` of digits too
//!   large to represent (beyond 2^31, even beyond `u64`) is read as 2147483648. So an enormous
//!   `max-age` is a long lifetime, clamped to [`TtlPolicy::max_ttl`] like any other, and an
//!   enormous `Age` means the response is already stale (lifetime raised to `min_ttl`).
//! - **Garbage is handled as the RFC (and the crate) say:** an unparsable `max-age` value (not
//!   digits) is a lifetime of zero; an unparsable `Expires` (such as `0`) is already expired;
//!   an unparsable `Age` or `Date` is absent; conflicting duplicate directives keep the first
//!   value. Unknown directives are ignored.
//!
//! For revalidation, [`Freshness::revalidation_headers`] gives `If-None-Match` (from `ETag`) and
//! `If-Modified-Since` (from `Last-Modified`) for the next fetch, and
//! [`Freshness::not_modified`] turns a 304 into the refreshed freshness while the caller keeps
//! its parsed key set.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};
use url::Url;

use crate::error::ConfigError;

/// Clamp and default for key-set lifetimes.
///
/// Whatever the identity provider's caching headers say, a key set lives at least `min_ttl` and
/// at most `max_ttl`; when they say nothing about its lifetime it lives `default_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// The shortest lifetime, also used for responses that forbid caching. Default 5 minutes.
    pub min_ttl: Duration,
    /// The longest lifetime. Default 24 hours.
    pub max_ttl: Duration,
    /// The lifetime when the response has no explicit one. Default 5 minutes.
    pub default_ttl: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            default_ttl: Duration::from_secs(5 * 60),
        }
    }
}

impl TtlPolicy {
    /// Checks that `0 < min_ttl <= default_ttl <= max_ttl`.
    ///
    /// # Errors
    /// A stable reason naming the first violated bound.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.check().map_err(|(_, problem)| problem)
    }

    /// Like [`validate`](Self::validate), naming the member at fault (`min_ttl`, `max_ttl` or
    /// `default_ttl`) in [`ConfigError::field`].
    ///
    /// # Errors
    /// A [`ConfigError`] for the first violated bound.
    pub fn validate_fields(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|(field, problem)| ConfigError::new(field.name(), problem))
    }

    /// The first violated bound: the member at fault and what is wrong with it.
    pub(crate) fn check(&self) -> Result<(), (TtlField, &'static str)> {
        if self.min_ttl.is_zero() {
            return Err((TtlField::Min, "min_ttl must be positive"));
        }
        if self.min_ttl > self.max_ttl {
            return Err((TtlField::Min, "min_ttl must not exceed max_ttl"));
        }
        if self.default_ttl < self.min_ttl || self.default_ttl > self.max_ttl {
            return Err((
                TtlField::Default,
                "default_ttl must lie between min_ttl and max_ttl",
            ));
        }
        Ok(())
    }

    /// Raises `ttl` to `min_ttl`, then caps it at `max_ttl`: never panics, and on a policy that
    /// fails [`validate`](Self::validate) `max_ttl` wins.
    fn clamp(&self, ttl: Duration) -> Duration {
        ttl.max(self.min_ttl).min(self.max_ttl)
    }
}

/// A member of [`TtlPolicy`], as a config error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtlField {
    Min,
    Default,
}

impl TtlField {
    /// The member's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TtlField::Min => "min_ttl",
            TtlField::Default => "default_ttl",
        }
    }

    /// The member's name under a provider's settings.
    pub(crate) fn in_cache(self) -> &'static str {
        match self {
            TtlField::Min => "cache.ttl.min_ttl",
            TtlField::Default => "cache.ttl.default_ttl",
        }
    }
}

/// How long one fetched key set stays fresh, and how to revalidate it.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The request as evaluated: GET, the key-set URL, the caller's headers minus conditionals.
    request: http::request::Parts,
    /// The provider's response headers as evaluated (normalised, see the module docs).
    policy: CachePolicy,
    fetched_at: SystemTime,
    /// The clamped lifetime, counted from `fetched_at`.
    ttl: Duration,
}

impl Freshness {
    /// Freshness of a key set fetched at `now` with a GET of `url` carrying `request_headers`,
    /// answered with `status` (callers pass 200) and `response_headers`.
    pub fn from_response(
        url: &Url,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
        now: SystemTime,
        ttl: &TtlPolicy,
    ) -> Self {
        Self::evaluate(
            request_parts(url, request_headers),
            status,
            response_headers.clone(),
            now,
            ttl,
        )
    }

    /// Freshness of a key set another replica fetched at `fetched_at` and held fresh until
    /// `fresh_until`: that lifetime clamped to `ttl`, counted from `fetched_at`. The peer's
    /// `etag`, if any, is the validator of the next revalidation against `url`.
    ///
    /// The peer's response headers are not known, so the stored response is taken to have said
    /// `max-age` of the peer's lifetime: a later 304 without caching headers renews that.
    pub fn adopted(
        url: Option<&Url>,
        fetched_at: SystemTime,
        fresh_until: SystemTime,
        etag: Option<&str>,
        ttl: &TtlPolicy,
    ) -> Self {
        let lifetime = fresh_until.duration_since(fetched_at).unwrap_or_default();
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::try_from(format!("max-age={}", lifetime.as_secs())) {
            headers.insert(header::CACHE_CONTROL, value);
        }
        if let Some(value) = etag.and_then(|e| HeaderValue::try_from(e).ok()) {
            headers.insert(header::ETAG, value);
        }
        let request = match url {
            Some(url) => request_parts(url, &HeaderMap::new()),
            None => {
                let (mut parts, ()) = Request::new(()).into_parts();
                parts.method = Method::GET;
                parts
            }
        };
        let mut adopted = Self::evaluate(request, StatusCode::OK, headers, fetched_at, ttl);
        // The peer's lifetime to the nanosecond, not the whole seconds of the header.
        adopted.ttl = ttl.clamp(lifetime);
        adopted
    }

    /// `If-None-Match` (from the `ETag`) and `If-Modified-Since` (from the `Last-Modified`) for
    /// the next fetch, whichever validators the response had; empty if it had none or forbade
    /// storing (`no-store`): what was never stored is never revalidated.
    pub fn revalidation_headers(&self) -> HeaderMap {
        let mut probe = self.request.clone();
        // Force the "stale" path: the conditional headers are wanted even for a forced refresh
        // of a still-fresh key set (say, a token naming an unknown `kid`).
        probe
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let mut out = HeaderMap::new();
        if let BeforeRequest::Stale {
            request,
            matches: true,
        } = self.policy.before_request(&probe, self.fetched_at)
        {
            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                if let Some(value) = request.headers.get(&name) {
                    out.insert(name, value.clone());
                }
            }
        }
        out
    }

    /// The refreshed freshness after a 304 with `response_headers` received at `now`, in answer
    /// to a request carrying [`revalidation_headers`](Self::revalidation_headers).
    ///
    /// The 304's headers replace the stored ones (RFC 9111 §4.3.4; `Date` and `Age` describe the
    /// 304 itself), so a 304 without caching headers renews the stored lifetime from `now`.
    /// A 304 without any validator is taken to confirm the one response this was built from.
    ///
    /// `None` when the 304 names a different validator than the stored response: the caller
    /// should treat it as a failed revalidation and fetch without conditions.
    pub fn not_modified(
        &self,
        response_headers: &HeaderMap,
        now: SystemTime,
        ttl: &TtlPolicy,
    ) -> Option<Self> {
        let conditionals = self.revalidation_headers();
        let mut request = self.request.clone();
        request.headers.extend(conditionals.clone());

        let mut res_304 = response_headers.clone();
        if !res_304.contains_key(header::ETAG) && !res_304.contains_key(header::LAST_MODIFIED) {
            for (from, to) in [
                (header::IF_NONE_MATCH, header::ETAG),
                (header::IF_MODIFIED_SINCE, header::LAST_MODIFIED),
            ] {
                if let Some(value) = conditionals.get(&from) {
                    res_304.insert(to, value.clone());
                }
            }
        }
        let res_304 = response_parts(StatusCode::NOT_MODIFIED, res_304);

        let AfterResponse::NotModified(_, merged) =
            self.policy.after_response(&request, &res_304, now)
        else {
            return None;
        };
        let (status, mut headers) = (merged.status, merged.headers);
        // The crate only updates header fields the stored response already had; RFC 9111 §3.2
        // adds the 304's new fields too (say, a `Cache-Control` the 200 lacked).
        for name in response_headers.keys() {
            if !headers.contains_key(name) && !NOT_UPDATED_BY_304.contains(name) {
                for value in response_headers.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        // `Date` and `Age` describe the 304, not the stored 200: the crate dated the merged
        // headers `now`, which is right when the 304 has no `Date`; keep the server's otherwise,
        // so `Expires` stays relative to the server's clock.
        if let Some(date) = response_headers.get(header::DATE) {
            headers.insert(header::DATE, date.clone());
        }
        let age = response_headers.get(header::AGE).cloned();
        headers.insert(header::AGE, age.unwrap_or(HeaderValue::from_static("0")));
        Some(Self::evaluate(
            self.request.clone(),
            status,
            headers,
            now,
            ttl,
        ))
    }

    /// When the key set was fetched (or last revalidated).
    pub fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// The clamped lifetime, counted from [`fetched_at`](Self::fetched_at).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How much of the lifetime is left at `now`; zero once stale. A clock that went back
    /// before `fetched_at` counts as no time elapsed.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.ttl
            .saturating_sub(now.duration_since(self.fetched_at).unwrap_or_default())
    }

    /// Whether the key set is still fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        !self.remaining(now).is_zero()
    }

    fn evaluate(
        mut request: http::request::Parts,
        status: StatusCode,
        response_headers: HeaderMap,
        now: SystemTime,
        ttl: &TtlPolicy,
    ) -> Self {
        for name in [header::AUTHORIZATION, header::PROXY_AUTHORIZATION] {
            request.headers.remove(name);
        }
        let headers = normalize(response_headers);
        let policy = CachePolicy::new_options(
            &request,
            &response_parts(status, headers.clone()),
            now,
            OPTIONS,
        );

        let lifetime = if headers.contains_key(header::EXPIRES) {
            policy.time_to_live(now)
        } else {
            // The default lifetime, as if the provider had sent it: an appended `max-age`
            // loses to one already there (the crate keeps a directive's first value) and to
            // `s-maxage`, and `no-store`/`no-cache` still win, so it only fills the gap.
            let mut defaulted = headers;
            let directive = format!("max-age={}", ttl.default_ttl.as_secs());
            if let Ok(value) = HeaderValue::try_from(directive) {
                defaulted.append(header::CACHE_CONTROL, value);
            }
            CachePolicy::new_options(&request, &response_parts(status, defaulted), now, OPTIONS)
                .time_to_live(now)
        };

        Self {
            request,
            policy,
            fetched_at: now,
            ttl: ttl.clamp(lifetime),
        }
    }
}

/// A private cache (see the module docs) with no heuristic lifetimes.
const OPTIONS: CacheOptions = CacheOptions {
    shared: false,
    cache_heuristic: 0.0,
    immutable_min_time_to_live: Duration::ZERO,
    ignore_cargo_cult: false,
};

/// Header fields a 304 does not update (the stored body is kept), as in the crate.
const NOT_UPDATED_BY_304: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::TRANSFER_ENCODING,
    header::CONTENT_RANGE,
];

/// The response headers as keygate evaluates them (see the module docs): `Cache-Control`
/// directives lower-cased and without `private`, no `Set-Cookie`, no `Pragma`, and
/// delta-seconds too large to represent read as 2^31 (RFC 9111 section 1.2.2) in
/// `max-age`, `s-maxage` and `Age`.
///
/// This only rewrites the field for the crate, splitting on commas exactly as the crate does;
/// interpreting the directives is left to it.
fn normalize(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(header::SET_COOKIE);
    headers.remove(header::PRAGMA);
    let ages: Vec<HeaderValue> = headers.get_all(header::AGE).iter().cloned().collect();
    if !ages.is_empty() {
        headers.remove(header::AGE);
        for age in ages {
            let capped = age.to_str().ok().and_then(overflowing_delta_seconds);
            headers.append(header::AGE, capped.unwrap_or(age));
        }
    }
    let values: Vec<HeaderValue> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::CACHE_CONTROL);
    for value in values {
        let Ok(text) = value.to_str() else {
            // Not visible ASCII: the crate ignores it anyway.
            continue;
        };
        let directives: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|directive| {
                let name = directive.split('=').next().unwrap_or_default().trim();
                !name.is_empty() && !name.eq_ignore_ascii_case("private")
            })
            .map(|directive| {
                let directive = directive.to_ascii_lowercase();
                match directive.split_once('=') {
                    Some((name, value))
                        if matches!(name.trim(), "max-age" | "s-maxage")
                            && overflowing_delta_seconds(value).is_some() =>
                    {
                        format!("{}={DELTA_SECONDS_CAP}", name.trim())
                    }
                    _ => directive,
                }
            })
            .collect();
        if let Ok(value) = HeaderValue::try_from(directives.join(", ")) {
            if !value.is_empty() {
                headers.append(header::CACHE_CONTROL, value);
            }
        }
    }
    headers
}

/// The largest delta-seconds a cache must represent; a larger value is read as this one
/// (RFC 9111 section 1.2.2).
const DELTA_SECONDS_CAP: u64 = 1 << 31;

/// `DELTA_SECONDS_CAP` as a header value when `value` is delta-seconds (digits only, possibly
/// quoted, as the crate accepts) greater than it; `None` otherwise, the value left as it is.
/// The crate would read a value beyond `u64` as garbage: a lifetime of zero for `max-age`,
/// no `Age` at all, both the opposite of what the IdP said.
fn overflowing_delta_seconds(value: &str) -> Option<HeaderValue> {
    let digits = value.trim().trim_matches('"');
    let huge = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits
            .parse::<u64>()
            .map_or(true, |n| n > DELTA_SECONDS_CAP);
    huge.then(|| HeaderValue::from(DELTA_SECONDS_CAP))
}

/// A GET of `url` with `headers`, minus any conditional headers (they belong to one fetch).
fn request_parts(url: &Url, headers: &HeaderMap) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    // A `Url` is always a valid URI in practice; should one ever not be, every evaluation of
    // this key set uses the same fallback, so revalidation still matches.
    parts.uri = Uri::try_from(url.as_str()).unwrap_or_default();
    parts.headers = headers.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        parts.headers.remove(name);
    }
    parts
}

fn response_parts(status: StatusCode, headers: HeaderMap) -> http::response::Parts {
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    parts
}

#[cfg(test)]
mod tests;
