//! HTTP caching headers to key-set freshness (`freshness.rs`, reached through the
//! `#[doc(hidden)] keygate::__fuzz` shim): `Cache-Control`, `Expires`, `Date`, `Age`, `ETag`,
//! `Last-Modified`, `Vary` and friends on a 200, the conditional headers of the revalidation,
//! the 304 merge, a peer's adopted freshness, and `Retry-After`, all at a fixed `now`.
//!
//! Input, as text so that seeds are readable and the dictionary applies: a first line of
//! settings, `status=200 later=600 ttl=300,86400,300 peer=-60,600 etag="v1"` (each optional;
//! `later` is when the 304 comes, in seconds after the 200; `ttl` is min, max and default
//! lifetime in seconds; `peer` is a peer set's fetch time relative to `now` and its lifetime),
//! then the 200's header lines (`name: value`, any bytes), a line `--`, the 304's header lines,
//! a line `--`, and the request's header lines.
//!
//! Checks besides "no panic": under a valid `TtlPolicy` every lifetime lies within
//! `[min_ttl, max_ttl]`; the time left is the lifetime at fetch time and never grows;
//! revalidation only ever sends `If-None-Match`/`If-Modified-Since`; an adopted set lives its
//! publisher's lifetime, clamped; `Retry-After` never asks for more than an hour.

#![no_main]

use std::time::Duration;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use keygate::__fuzz::{Freshness, retry_after};
use keygate::TtlPolicy;
use keygate_fuzz::{JWKS_URL, at_offset};
use libfuzzer_sys::fuzz_target;
use url::Url;

/// The first line's settings.
#[derive(Debug)]
struct Settings {
    status: StatusCode,
    later: i64,
    ttl: (u64, u64, u64),
    peer: (i64, i64),
    etag: Option<String>,
}

impl Settings {
    fn parse(line: &[u8]) -> Settings {
        let mut s = Settings {
            status: StatusCode::OK,
            later: 600,
            ttl: (300, 86_400, 300),
            peer: (-60, 600),
            etag: None,
        };
        let text = String::from_utf8_lossy(line);
        for item in text.split_whitespace() {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let pair = |v: &str| -> Option<(i64, i64)> {
                let (a, b) = v.split_once(',')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            };
            match key {
                "status" => {
                    if let Some(code) = value
                        .parse()
                        .ok()
                        .and_then(|c| StatusCode::from_u16(c).ok())
                    {
                        s.status = code;
                    }
                }
                "later" => s.later = value.parse().unwrap_or(s.later),
                "ttl" => {
                    let parts: Vec<u64> = value.split(',').filter_map(|p| p.parse().ok()).collect();
                    if let [min, max, default] = parts[..] {
                        s.ttl = (min, max, default);
                    }
                }
                "peer" => s.peer = pair(value).unwrap_or(s.peer),
                "etag" => s.etag = Some(value.to_owned()),
                _ => {}
            }
        }
        // Within about a century of `now`, so that times stay representable.
        const SPAN: i64 = 100 * 365 * 86_400;
        s.later = s.later.clamp(0, SPAN);
        s.peer = (s.peer.0.clamp(-SPAN, SPAN), s.peer.1.clamp(-SPAN, SPAN));
        let cap = |v: u64| v.min(SPAN as u64);
        s.ttl = (cap(s.ttl.0), cap(s.ttl.1), cap(s.ttl.2));
        s
    }
}

/// Header lines, `name: value`; lines that are not a valid header are skipped.
fn headers(lines: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let settings = Settings::parse(lines.next().unwrap_or_default());
    let mut sections: [Vec<&[u8]>; 3] = Default::default();
    let mut at = 0;
    for line in lines {
        if line == b"--" {
            at = (at + 1).min(2);
        } else {
            sections[at].push(line);
        }
    }
    let [response, reply_304, request] = &sections;

    let url = Url::parse(JWKS_URL).expect("a valid URL");
    let policy = TtlPolicy {
        min_ttl: Duration::from_secs(settings.ttl.0),
        max_ttl: Duration::from_secs(settings.ttl.1),
        default_ttl: Duration::from_secs(settings.ttl.2),
    };
    let valid = policy.validate().is_ok();
    let bounded = |d: Duration| !valid || (policy.min_ttl <= d && d <= policy.max_ttl);
    let now = at_offset(0);
    let response = headers(response);

    let fresh = Freshness::from_response(
        &url,
        &headers(request),
        settings.status,
        &response,
        now,
        &policy,
    );
    assert!(
        bounded(fresh.ttl()),
        "lifetime {:?} outside {policy:?}",
        fresh.ttl()
    );
    assert_eq!(fresh.fetched_at(), now);
    assert_eq!(fresh.remaining(now), fresh.ttl(), "time left at fetch time");
    assert!(
        fresh.remaining(at_offset(-10)) == fresh.ttl(),
        "a clock going back adds time"
    );
    let later = at_offset(settings.later);
    assert!(fresh.remaining(later) <= fresh.ttl());
    assert_eq!(fresh.is_fresh(later), !fresh.remaining(later).is_zero());

    let conditionals = fresh.revalidation_headers();
    for name in conditionals.keys() {
        assert!(
            *name == header::IF_NONE_MATCH || *name == header::IF_MODIFIED_SINCE,
            "revalidation sends {name}"
        );
    }
    if let Some(renewed) = fresh.not_modified(&headers(reply_304), later, &policy) {
        assert!(
            bounded(renewed.ttl()),
            "304 lifetime {:?} outside {policy:?}",
            renewed.ttl()
        );
        assert_eq!(renewed.fetched_at(), later);
        let _ = renewed.revalidation_headers();
    }

    let (fetched, lifetime) = settings.peer;
    let etag = &settings.etag;
    let fetched_at = at_offset(fetched);
    let fresh_until = at_offset(fetched + lifetime);
    let adopted = Freshness::adopted(
        Some(&url),
        fetched_at,
        fresh_until,
        etag.as_deref(),
        &policy,
    );
    assert!(
        bounded(adopted.ttl()),
        "adopted lifetime {:?} outside {policy:?}",
        adopted.ttl()
    );
    if valid {
        let peer = fresh_until.duration_since(fetched_at).unwrap_or_default();
        assert_eq!(adopted.ttl(), peer.clamp(policy.min_ttl, policy.max_ttl));
    }
    let _ = adopted.revalidation_headers();
    let _ = Freshness::adopted(None, fetched_at, fresh_until, etag.as_deref(), &policy);

    if let Some(delay) = retry_after(&response, now) {
        assert!(
            delay <= Duration::from_secs(3600),
            "Retry-After of {delay:?}"
        );
    }
});
