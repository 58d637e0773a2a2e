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
pub(crate) struct Freshness {
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
    pub(crate) fn from_response(
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
    pub(crate) fn adopted(
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
    pub(crate) fn revalidation_headers(&self) -> HeaderMap {
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
    pub(crate) fn not_modified(
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
    pub(crate) fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// The clamped lifetime, counted from [`fetched_at`](Self::fetched_at).
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How much of the lifetime is left at `now`; zero once stale. A clock that went back
    /// before `fetched_at` counts as no time elapsed.
    pub(crate) fn remaining(&self, now: SystemTime) -> Duration {
        self.ttl
            .saturating_sub(now.duration_since(self.fetched_at).unwrap_or_default())
    }

    /// Whether the key set is still fresh at `now`.
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2023-11-14T22:13:20Z, i.e. `Tue, 14 Nov 2023 22:13:20 GMT`.
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    const T0_DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
    const T0_MINUS_1H: &str = "Tue, 14 Nov 2023 21:13:20 GMT";
    const T0_PLUS_1H: &str = "Tue, 14 Nov 2023 23:13:20 GMT";
    const T0_PLUS_2H: &str = "Wed, 15 Nov 2023 00:13:20 GMT";

    /// Header fields as written in a test table.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn url() -> Url {
        Url::parse("https://idp.example/.well-known/jwks.json").unwrap()
    }

    /// A policy whose bounds do not hide what the headers say.
    fn policy() -> TtlPolicy {
        TtlPolicy {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(86_400),
            default_ttl: Duration::from_secs(120),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn fetch(response: &[(&str, &str)]) -> Freshness {
        Freshness::from_response(
            &url(),
            &HeaderMap::new(),
            StatusCode::OK,
            &headers(response),
            t0(),
            &policy(),
        )
    }

    fn check(response: &[(&str, &str)], expected_secs: u64) {
        assert_eq!(
            fetch(response).ttl(),
            Duration::from_secs(expected_secs),
            "response headers: {response:?}"
        );
    }

    #[test]
    fn headers_to_ttl() {
        let cases: &[(Headers<'_>, u64)] = &[
            // Explicit lifetimes.
            (&[("cache-control", "max-age=600")], 600),
            (&[("cache-control", "public, max-age=600")], 600),
            // keygate is a private cache: `s-maxage` is for shared ones.
            (&[("cache-control", "max-age=600, s-maxage=900")], 600),
            (&[("cache-control", "max-age=600, s-maxage=300")], 600),
            (&[("cache-control", "s-maxage=900")], 120),
            (&[("cache-control", "Max-Age=600")], 600),
            (
                &[
                    ("cache-control", "max-age=600"),
                    ("date", T0_DATE),
                    ("expires", T0_PLUS_2H),
                ],
                600,
            ),
            (&[("date", T0_DATE), ("expires", T0_PLUS_1H)], 3600),
            // Expires counts from the server's Date, not our clock.
            (&[("date", T0_MINUS_1H), ("expires", T0_DATE)], 3600),
            // Without Date, from the response time.
            (&[("expires", T0_PLUS_1H)], 3600),
            // Age is subtracted.
            (&[("cache-control", "max-age=600"), ("age", "100")], 500),
            (&[("cache-control", "s-maxage=600"), ("age", "30")], 90),
            (&[("cache-control", "max-age=600"), ("age", "600")], 60),
            // Forbidding caching: lifetime zero, raised to min_ttl.
            (&[("cache-control", "no-cache")], 60),
            (&[("cache-control", "no-cache, max-age=600")], 60),
            (&[("cache-control", "no-store")], 60),
            (&[("cache-control", "no-store, max-age=600")], 60),
            (&[("cache-control", "max-age=0")], 60),
            (&[("date", T0_DATE), ("expires", T0_MINUS_1H)], 60),
            // `proxy-revalidate` is for shared caches too.
            (&[("cache-control", "max-age=600, proxy-revalidate")], 600),
            (&[("cache-control", "max-age=600"), ("vary", "*")], 60),
            // must-revalidate does not change the lifetime.
            (&[("cache-control", "max-age=600, must-revalidate")], 600),
            // No lifetime at all: the default, never a heuristic.
            (&[], 120),
            (&[("last-modified", "Mon, 01 Jan 2001 00:00:00 GMT")], 120),
            (&[("cache-control", "public")], 120),
            (&[("cache-control", "immutable")], 120),
            (&[("cache-control", "must-revalidate")], 120),
            (&[("age", "30")], 90),
            (&[("age", "100")], 60),
            // Ignored: private, Set-Cookie, Pragma.
            (&[("cache-control", "private, max-age=600")], 600),
            (&[("cache-control", "private")], 120),
            (
                &[("cache-control", "max-age=600"), ("set-cookie", "lb=abc")],
                600,
            ),
            (&[("pragma", "no-cache")], 120),
            (
                &[
                    ("pragma", "no-cache"),
                    ("date", T0_DATE),
                    ("expires", T0_PLUS_1H),
                ],
                3600,
            ),
            // Clamping at both ends.
            (&[("cache-control", "max-age=5")], 60),
            (&[("cache-control", "max-age=31536000")], 86_400),
            (&[("cache-control", "s-maxage=31536000")], 120),
            // A `max-age` too large to represent is 2^31 s (RFC 9111 section 1.2.2), then
            // clamped; it is not garbage.
            (&[("cache-control", "max-age=18446744073709551616")], 86_400),
            (
                &[("cache-control", "max-age=99999999999999999999999999")],
                86_400,
            ),
            (
                &[("cache-control", "Max-Age=\"18446744073709551616\"")],
                86_400,
            ),
            (&[("cache-control", "max-age=2147483649")], 86_400),
            // A huge `Age` (even beyond u64) means stale, whatever the lifetime.
            (
                &[
                    ("cache-control", "max-age=18446744073709551616"),
                    ("age", "18446744073709551617"),
                ],
                60,
            ),
            (
                &[
                    ("cache-control", "max-age=600"),
                    ("age", "99999999999999999999"),
                ],
                60,
            ),
            (
                &[("cache-control", "max-age=600"), ("age", "4294967296")],
                60,
            ),
            (&[("age", "18446744073709551616")], 60),
            (
                &[
                    ("date", T0_DATE),
                    ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
                ],
                86_400,
            ),
            // Garbage.
            (&[("cache-control", "max-age=abc")], 60),
            (&[("cache-control", "max-age=-5")], 60),
            (&[("cache-control", "max-age=1e99")], 60),
            (&[("cache-control", "s-maxage=soon, max-age=600")], 600),
            (&[("cache-control", "max-age")], 60),
            (&[("cache-control", "max-age=600, max-age=60")], 600),
            (
                &[
                    ("cache-control", "max-age=600"),
                    ("cache-control", "max-age=60"),
                ],
                600,
            ),
            (&[("cache-control", "max-age=\"600\"")], 600),
            (&[("cache-control", "fresh for a while please")], 120),
            (&[("cache-control", ",,, ;")], 120),
            (&[("expires", "0")], 60),
            (&[("expires", "tomorrow")], 60),
            (&[("cache-control", "max-age=600"), ("age", "old")], 600),
            (&[("date", "yesterday"), ("expires", T0_PLUS_1H)], 3600),
        ];
        for (response, expected) in cases {
            check(response, *expected);
        }
    }

    #[test]
    fn defaults_and_validation() {
        let default = TtlPolicy::default();
        assert_eq!(default.validate(), Ok(()));
        assert_eq!(
            (default.min_ttl, default.max_ttl, default.default_ttl),
            (
                Duration::from_secs(300),
                Duration::from_secs(86_400),
                Duration::from_secs(300)
            )
        );
        // With the defaults, "don't cache" still means five minutes, not every request.
        let fetched = Freshness::from_response(
            &url(),
            &HeaderMap::new(),
            StatusCode::OK,
            &headers(&[("cache-control", "no-store")]),
            t0(),
            &default,
        );
        assert_eq!(fetched.ttl(), Duration::from_secs(300));

        let secs = Duration::from_secs;
        let bad = |min, default_ttl, max| TtlPolicy {
            min_ttl: secs(min),
            max_ttl: secs(max),
            default_ttl: secs(default_ttl),
        };
        assert_eq!(bad(0, 10, 20).validate(), Err("min_ttl must be positive"));
        assert_eq!(
            bad(30, 25, 20).validate(),
            Err("min_ttl must not exceed max_ttl")
        );
        assert_eq!(
            bad(10, 5, 20).validate(),
            Err("default_ttl must lie between min_ttl and max_ttl")
        );
        assert_eq!(
            bad(10, 25, 20).validate(),
            Err("default_ttl must lie between min_ttl and max_ttl")
        );
        assert_eq!(bad(10, 10, 10).validate(), Ok(()));
        // An invalid policy does not panic; max_ttl wins.
        assert_eq!(bad(30, 25, 20).clamp(secs(0)), secs(20));
    }

    #[test]
    fn fresh_until_ttl_elapses() {
        let fetched = fetch(&[("cache-control", "max-age=600"), ("age", "100")]);
        assert_eq!(fetched.fetched_at(), t0());
        assert!(fetched.is_fresh(t0()));
        assert!(fetched.is_fresh(t0() + Duration::from_secs(499)));
        assert_eq!(
            fetched.remaining(t0() + Duration::from_secs(499)),
            Duration::from_secs(1)
        );
        assert!(!fetched.is_fresh(t0() + Duration::from_secs(500)));
        assert_eq!(
            fetched.remaining(t0() + Duration::from_secs(900)),
            Duration::ZERO
        );
        // A clock that went back counts as no time elapsed.
        assert!(fetched.is_fresh(t0() - Duration::from_secs(3600)));
    }

    #[test]
    fn an_adopted_set_keeps_the_peers_lifetime_within_our_policy() {
        let secs = Duration::from_secs;
        let adopted = |lifetime: Duration, etag| {
            Freshness::adopted(Some(&url()), t0(), t0() + lifetime, etag, &policy())
        };
        // Within [60, 86400]: the peer's lifetime, to the millisecond, from the peer's fetch.
        let kept = adopted(Duration::from_millis(600_500), None);
        assert_eq!(kept.fetched_at(), t0());
        assert_eq!(kept.ttl(), Duration::from_millis(600_500));
        assert_eq!(adopted(secs(5), None).ttl(), secs(60));
        assert_eq!(adopted(secs(10 * 86_400), None).ttl(), secs(86_400));
        // A `fresh_until` before `fetched_at` is a lifetime of zero, raised to the minimum.
        let backwards = Freshness::adopted(None, t0(), t0() - secs(5), None, &policy());
        assert_eq!(backwards.ttl(), secs(60));
        // The peer's validator is what the next revalidation sends.
        let tagged = adopted(secs(600), Some("\"v7\""));
        assert_eq!(
            tagged
                .revalidation_headers()
                .get(header::IF_NONE_MATCH)
                .unwrap(),
            "\"v7\""
        );
        assert!(kept.revalidation_headers().is_empty());
        let renewed = tagged
            .not_modified(&HeaderMap::new(), t0() + secs(700), &policy())
            .unwrap();
        assert_eq!(renewed.fetched_at(), t0() + secs(700));
        assert_eq!(renewed.ttl(), secs(600));
    }

    #[test]
    fn revalidation_headers_from_validators() {
        let cases: &[(Headers<'_>, Headers<'_>)] = &[
            (
                &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
                &[("if-none-match", "\"v1\"")],
            ),
            (&[("etag", "W/\"v1\"")], &[("if-none-match", "W/\"v1\"")]),
            (
                &[("last-modified", T0_MINUS_1H)],
                &[("if-modified-since", T0_MINUS_1H)],
            ),
            (
                &[("etag", "\"v1\""), ("last-modified", T0_MINUS_1H)],
                &[
                    ("if-none-match", "\"v1\""),
                    ("if-modified-since", T0_MINUS_1H),
                ],
            ),
            (&[("cache-control", "max-age=600")], &[]),
            // Still offered for a response that forbids reuse without revalidation ...
            (
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
                &[("if-none-match", "\"v1\"")],
            ),
            (
                &[("cache-control", "private"), ("etag", "\"v1\"")],
                &[("if-none-match", "\"v1\"")],
            ),
            // ... but not for one that must not be stored.
            (&[("cache-control", "no-store"), ("etag", "\"v1\"")], &[]),
        ];
        for (response, expected) in cases {
            assert_eq!(
                fetch(response).revalidation_headers(),
                headers(expected),
                "response headers: {response:?}"
            );
        }
    }

    #[test]
    fn conditional_headers_of_the_fetch_are_not_carried_over() {
        // A conditional fetch that got a 200 (the set changed): only the new ETag counts.
        let fetched = Freshness::from_response(
            &url(),
            &headers(&[("if-none-match", "\"v1\""), ("user-agent", "keygate")]),
            StatusCode::OK,
            &headers(&[("etag", "\"v2\"")]),
            t0(),
            &policy(),
        );
        assert_eq!(
            fetched.revalidation_headers(),
            headers(&[("if-none-match", "\"v2\"")])
        );
    }

    #[test]
    fn vary_does_not_hide_validators() {
        let fetched = Freshness::from_response(
            &url(),
            &headers(&[("accept-encoding", "gzip")]),
            StatusCode::OK,
            &headers(&[("etag", "\"v1\""), ("vary", "accept-encoding")]),
            t0(),
            &policy(),
        );
        assert_eq!(
            fetched.revalidation_headers(),
            headers(&[("if-none-match", "\"v1\"")])
        );
    }

    fn later(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    #[test]
    fn not_modified_renews_the_stored_lifetime() {
        let fetched = fetch(&[("cache-control", "max-age=600"), ("etag", "\"v1\"")]);
        let renewed = fetched
            .not_modified(&headers(&[("etag", "\"v1\"")]), later(600), &policy())
            .unwrap();
        assert_eq!(renewed.fetched_at(), later(600));
        assert_eq!(renewed.ttl(), Duration::from_secs(600));
        assert!(renewed.is_fresh(later(1199)));
        assert!(!renewed.is_fresh(later(1200)));
        // Still revalidatable with the same validator.
        assert_eq!(
            renewed.revalidation_headers(),
            headers(&[("if-none-match", "\"v1\"")])
        );
    }

    #[test]
    fn not_modified_headers_replace_stored_ones() {
        let fetched = fetch(&[
            ("cache-control", "max-age=600"),
            ("etag", "\"v1\""),
            ("age", "100"),
        ]);
        let cases: &[(Headers<'_>, u64)] = &[
            // New Cache-Control wins; the 200's Age no longer applies.
            (
                &[("etag", "\"v1\""), ("cache-control", "max-age=3600")],
                3600,
            ),
            (
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=3600"),
                    ("age", "600"),
                ],
                3000,
            ),
            (&[("etag", "\"v1\""), ("cache-control", "no-cache")], 60),
            // Fields the 200 lacked are added.
            (
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=3600"),
                    ("date", T0_DATE),
                    ("expires", T0_PLUS_1H),
                ],
                3600,
            ),
            // A 304 without validators confirms the one stored response.
            (&[], 600),
            (&[("cache-control", "max-age=900")], 900),
            // Weak comparison.
            (&[("etag", "W/\"v1\"")], 600),
        ];
        for (res_304, expected) in cases {
            let renewed = fetched.not_modified(&headers(res_304), later(600), &policy());
            assert_eq!(
                renewed.map(|fresh| fresh.ttl()),
                Some(Duration::from_secs(*expected)),
                "304 headers: {res_304:?}"
            );
        }
    }

    #[test]
    fn not_modified_adds_expires_to_a_defaulted_response() {
        let fetched = fetch(&[("etag", "\"v1\"")]);
        assert_eq!(fetched.ttl(), Duration::from_secs(120));
        let res_304 = headers(&[
            ("etag", "\"v1\""),
            ("date", T0_DATE),
            ("expires", T0_PLUS_2H),
        ]);
        let renewed = fetched.not_modified(&res_304, t0(), &policy()).unwrap();
        assert_eq!(renewed.ttl(), Duration::from_secs(7200));
    }

    #[test]
    fn not_modified_dates_expires_from_the_304() {
        let fetched = fetch(&[
            ("date", T0_DATE),
            ("expires", T0_PLUS_1H),
            ("last-modified", T0_MINUS_1H),
        ]);
        assert_eq!(fetched.ttl(), Duration::from_secs(3600));
        let validator = [("last-modified", T0_MINUS_1H)];
        // An hour later the stored Expires has passed: the 304 without a Date is dated `now`.
        let renewed = fetched
            .not_modified(&headers(&validator), later(3600), &policy())
            .unwrap();
        assert_eq!(renewed.ttl(), Duration::from_secs(60));
        // A 304 whose server clock lags ours by an hour: Expires counts from its Date.
        let lagging = [("last-modified", T0_MINUS_1H), ("date", T0_DATE)];
        let renewed = fetched
            .not_modified(&headers(&lagging), later(3600), &policy())
            .unwrap();
        assert_eq!(renewed.ttl(), Duration::from_secs(3600));
    }

    #[test]
    fn not_modified_with_another_validator_is_refused() {
        let fetched = fetch(&[("cache-control", "max-age=600"), ("etag", "\"v1\"")]);
        assert!(
            fetched
                .not_modified(&headers(&[("etag", "\"v2\"")]), later(600), &policy())
                .is_none()
        );
        let dated = fetch(&[("last-modified", T0_MINUS_1H)]);
        assert!(
            dated
                .not_modified(
                    &headers(&[("last-modified", T0_DATE)]),
                    later(600),
                    &policy()
                )
                .is_none()
        );
    }

    fn ttl_policy() -> impl Strategy<Value = TtlPolicy> {
        (1u64..=3600, 0u64..=86_400, 0u64..=86_400).prop_map(|(min, extra_default, extra_max)| {
            let max = min + extra_default.max(extra_max);
            TtlPolicy {
                min_ttl: Duration::from_secs(min),
                max_ttl: Duration::from_secs(max),
                default_ttl: Duration::from_secs(min + extra_default.min(extra_max)),
            }
        })
    }

    /// Header values as an identity provider (or a hostile network) might send them.
    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            "[ -~]{0,48}",
            "(max-age|s-maxage|no-cache|no-store|private|public|Max-Age|must-revalidate)(=[0-9a-z\"-]{0,22})?(, ?[a-z-]{1,12}(=[0-9]{0,21})?){0,3}",
        ]
        .prop_map(|text| HeaderValue::from_str(&text).unwrap())
    }

    fn in_bounds(fresh: &Freshness, policy: &TtlPolicy) -> bool {
        policy.min_ttl <= fresh.ttl() && fresh.ttl() <= policy.max_ttl
    }

    proptest! {
        #[test]
        fn any_max_age_is_clamped(max_age: u64, age in proptest::option::of(any::<u64>()), policy in ttl_policy()) {
            let mut response = headers(&[("cache-control", &format!("max-age={max_age}"))]);
            if let Some(age) = age {
                response.insert(header::AGE, HeaderValue::from(age));
            }
            let fresh = Freshness::from_response(&url(), &HeaderMap::new(), StatusCode::OK, &response, t0(), &policy);
            prop_assert!(in_bounds(&fresh, &policy));
            // Both are delta-seconds: anything above 2^31 counts as 2^31.
            let cap = |secs: u64| secs.min(DELTA_SECONDS_CAP);
            let expected = Duration::from_secs(cap(max_age).saturating_sub(cap(age.unwrap_or(0))));
            prop_assert_eq!(fresh.ttl(), policy.clamp(expected));
        }

        #[test]
        fn any_headers_are_clamped(
            cache_control in proptest::collection::vec(header_value(), 0..3),
            expires in proptest::option::of(header_value()),
            date in proptest::option::of(header_value()),
            age in proptest::option::of(header_value()),
            res_304 in proptest::collection::vec(header_value(), 0..3),
            policy in ttl_policy(),
        ) {
            let mut response = HeaderMap::new();
            for value in cache_control {
                response.append(header::CACHE_CONTROL, value);
            }
            for (name, value) in [(header::EXPIRES, expires), (header::DATE, date), (header::AGE, age)] {
                if let Some(value) = value {
                    response.insert(name, value);
                }
            }
            response.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            let fresh = Freshness::from_response(&url(), &HeaderMap::new(), StatusCode::OK, &response, t0(), &policy);
            prop_assert!(in_bounds(&fresh, &policy));
            let _ = fresh.revalidation_headers();

            let mut not_modified = HeaderMap::new();
            for value in res_304 {
                not_modified.append(header::CACHE_CONTROL, value);
            }
            // `None` when the response was not storable, so nothing was revalidatable.
            let renewed = fresh.not_modified(&not_modified, later(1000), &policy);
            prop_assert!(renewed.is_none_or(|renewed| in_bounds(&renewed, &policy)));
        }
    }
}
