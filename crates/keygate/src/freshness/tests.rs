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
