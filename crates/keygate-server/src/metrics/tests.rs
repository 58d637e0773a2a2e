use std::collections::HashSet;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use keygate::{ProviderConfig, Verifier};
use keygate_test_support::{ManualClock, TestKey, TokenBuilder, jwks, typical_claims};

use super::providers::seconds_between;
use super::text::{Float, escape_label_value};
use super::verifications::{REASONS, result_of};
use super::*;
use keygate_cluster::BusState;

const T0: u64 = 1_800_000_000;
const ISS: &str = "https://issuer.test";

fn bus() -> BusStatus {
    BusStatus {
        last_seq: 7,
        lag_seconds: 0.25,
        published: 5,
        applied: 2,
        rejected: vec![("mac", 1)],
        resyncs: vec![("epoch", 0)],
        primary: Some("127.0.0.1:6380".to_owned()),
        last_resync: Some((UNIX_EPOCH + Duration::from_secs(T0), "start")),
        ..BusStatus::new("local", BusState::Ok, "e".into())
    }
}

/// Two providers: a static set (fresh, fetched at `T0`) that has verified one token, and
/// a URL provider never fetched (empty), whose tenant needs escaping.
async fn providers() -> Vec<ProviderStatus> {
    let key = TestKey::shared_p256("metrics-k1");
    let clock = Arc::new(ManualClock::at_unix(T0));
    let fixed = ProviderConfig::builder("acme", "idp", ISS)
        .audiences(["api"])
        .static_jwks(serde_json::to_vec(&jwks(&[key])).unwrap())
        .build()
        .unwrap();
    let remote = ProviderConfig::builder("we\"ird\\ten\nant", "remote", "https://other.test")
        .audiences(["api"])
        .jwks_uri("https://other.test/jwks")
        .build()
        .unwrap();
    let verifier = Verifier::builder()
        .provider(fixed)
        .provider(remote)
        .clock(clock)
        .build()
        .unwrap();
    let token = TokenBuilder::new(key)
        .claims(typical_claims(ISS, "api", i64::try_from(T0).unwrap()))
        .sign();
    verifier.verify(&token).await.unwrap();
    verifier.status()
}

fn scrape_at<'a>(providers: &'a [ProviderStatus], bus: &'a BusStatus) -> Scrape<'a> {
    Scrape {
        providers,
        bus,
        revocations: 3,
        cached_tokens: 2,
        accept_while_degraded: true,
        now: UNIX_EPOCH + Duration::from_secs(T0 + 12),
    }
}

/// The value of the sample written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

/// Checks the value of each series in `text` (`None`: the series is absent).
fn assert_values<S: AsRef<str>>(text: &str, cases: &[(S, Option<&str>)]) {
    for (series, want) in cases {
        let series = series.as_ref();
        assert_eq!(value(text, series).as_deref(), *want, "{series}");
    }
}

/// Checks that every line is a `# HELP`/`# TYPE` comment or a well-formed sample of the
/// family announced last, and that no family is announced twice. Returns the families.
fn check_lines(text: &str) -> HashSet<String> {
    assert!(text.ends_with('\n'), "no final newline");
    let mut families = HashSet::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(is_metric_name(name) && !help.is_empty(), "{line}");
            assert!(families.insert(name.to_owned()), "family twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(families.contains(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            current = Some((name.to_owned(), kind.to_owned()));
        } else {
            let (family, kind) = current.as_ref().expect("sample before any TYPE");
            let name = check_sample(line);
            let belongs = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}")),
                _ => name == *family,
            };
            assert!(belongs, "sample outside its family {family}: {line}");
        }
    }
    families
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `name{label="value",...} value`, returning the name.
fn check_sample(line: &str) -> &str {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..end];
    assert!(is_metric_name(name), "bad name: {line}");
    let mut rest = &line[end..];
    if let Some(mut labels) = rest.strip_prefix('{') {
        loop {
            let eq = labels.find('=').unwrap_or_else(|| panic!("no '=': {line}"));
            assert!(is_metric_name(&labels[..eq]), "bad label name: {line}");
            let value = labels[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted label value: {line}"));
            let after = &value[closing_quote(value, line) + 1..];
            if let Some(more) = after.strip_prefix(',') {
                labels = more;
                continue;
            }
            rest = after
                .strip_prefix('}')
                .unwrap_or_else(|| panic!("bad label list: {line}"));
            break;
        }
    }
    check_value(line, rest);
    name
}

/// The index of the quote closing a label value, allowing only the three escapes.
fn closing_quote(value: &str, line: &str) -> usize {
    let mut chars = value.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => assert!(
                matches!(chars.next(), Some((_, '\\' | '"' | 'n'))),
                "bad escape: {line}"
            ),
            '"' => return i,
            _ => {}
        }
    }
    panic!("unterminated label value: {line}")
}

fn check_value(line: &str, rest: &str) {
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no value: {line}"));
    let ok = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    assert!(ok, "bad value: {line}");
}

#[test]
fn bucket_labels_match_their_bounds_and_ascend() {
    for pair in BUCKETS.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{pair:?}");
    }
    for (le, nanos) in BUCKETS {
        let secs: f64 = le.parse().unwrap();
        assert_eq!(Duration::from_secs_f64(secs), Duration::from_nanos(nanos));
    }
}

#[test]
fn reasons_map_to_slots_and_results() {
    assert_eq!(reason_slot("malformed"), 0);
    assert_eq!(reason_slot("keys_unavailable"), 21);
    assert_eq!(reason_slot("no_such_reason"), REASONS.len());
    assert_eq!(result_of("malformed_jwks"), "unavailable");
    assert_eq!(result_of("keys_unavailable"), "unavailable");
    assert_eq!(result_of("expired"), "invalid");
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    escape_label_value(&mut out, "a\\b\"c\nd é");
    assert_eq!(out, r#"a\\b\"c\nd é"#);
}

#[test]
fn floats_are_spelled_as_the_format_wants() {
    assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
    assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
    assert_eq!(Float(f64::NAN).to_string(), "NaN");
    assert_eq!(Float(-1.5).to_string(), "-1.5");
    assert_eq!(Float(12.0).to_string(), "12");
}

#[test]
fn verifications_are_counted_by_result_and_reason_with_zeros_shown() {
    let metrics = Metrics::new();
    metrics.observe_verification(VerifyOutcome::Valid, Duration::from_micros(5));
    metrics.observe_verification(VerifyOutcome::Valid, Duration::from_micros(5));
    metrics.observe_verification(VerifyOutcome::MissingToken, Duration::ZERO);
    metrics.observe_verification(VerifyOutcome::Refused("expired"), Duration::ZERO);
    metrics.observe_verification(VerifyOutcome::Refused("keys_unavailable"), Duration::ZERO);
    metrics.observe_verification(VerifyOutcome::Refused("from_the_future"), Duration::ZERO);
    let bus = bus();
    let text = metrics.render(&scrape_at(&[], &bus));
    check_lines(&text);

    let total = |result: &str, reason: &str| {
        value(
            &text,
            &format!(r#"keygate_verifications_total{{result="{result}",reason="{reason}"}}"#),
        )
    };
    assert_eq!(total("valid", "ok").as_deref(), Some("2"));
    assert_eq!(total("missing", "missing_token").as_deref(), Some("1"));
    assert_eq!(total("invalid", "expired").as_deref(), Some("1"));
    assert_eq!(
        total("unavailable", "keys_unavailable").as_deref(),
        Some("1")
    );
    assert_eq!(total("invalid", "other").as_deref(), Some("1"));
    // Never observed, still present.
    assert_eq!(total("unavailable", "malformed_jwks").as_deref(), Some("0"));
    assert_eq!(total("invalid", "bad_signature").as_deref(), Some("0"));
    let series = text
        .lines()
        .filter(|l| l.starts_with("keygate_verifications_total{"))
        .count();
    assert_eq!(series, 2 + REASONS.len() + 1);
}

#[test]
fn histogram_buckets_are_cumulative_and_count_matches() {
    let metrics = Metrics::new();
    let observations = [
        Duration::from_nanos(500), // first bucket
        Duration::from_micros(10), // exactly on the first bound: le is inclusive
        Duration::from_micros(11), // second bucket
        Duration::from_millis(3),  // 0.005
        Duration::from_secs(2),    // 5
        Duration::from_secs(60),   // above every bound: +Inf only
    ];
    for d in observations {
        metrics.observe_verification(VerifyOutcome::Valid, d);
    }
    let bus = bus();
    let text = metrics.render(&scrape_at(&[], &bus));
    check_lines(&text);
    let bucket = |le: &str| {
        let series = format!(r#"keygate_verification_duration_seconds_bucket{{le="{le}"}}"#);
        value(&text, &series)
            .unwrap_or_else(|| panic!("no {series}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(bucket("0.00001"), 2);
    assert_eq!(bucket("0.000025"), 3);
    assert_eq!(bucket("0.0025"), 3);
    assert_eq!(bucket("0.005"), 4);
    assert_eq!(bucket("1"), 4);
    assert_eq!(bucket("5"), 5);
    assert_eq!(bucket("+Inf"), 6);
    let mut previous = 0;
    for (le, _) in BUCKETS {
        assert!(bucket(le) >= previous, "not cumulative at {le}");
        previous = bucket(le);
    }
    assert_eq!(
        value(&text, "keygate_verification_duration_seconds_count").as_deref(),
        Some("6")
    );
    let sum: f64 = value(&text, "keygate_verification_duration_seconds_sum")
        .unwrap()
        .parse()
        .unwrap();
    let want: Duration = observations.iter().sum();
    assert!((sum - want.as_secs_f64()).abs() < 1e-9, "{sum}");
}

#[tokio::test]
async fn providers_bus_and_gauges_are_rendered() {
    let providers = providers().await;
    let bus = bus();
    let metrics = Metrics::new();
    metrics.observe_admin("flush", 200);
    metrics.observe_admin("flush", 200);
    metrics.observe_admin("revoke", 400);
    let text = metrics.render(&scrape_at(&providers, &bus));
    let families = check_lines(&text);
    for family in [
        "keygate_verifications_total",
        "keygate_verification_duration_seconds",
        "keygate_jwks_fetches_total",
        "keygate_jwks_requests_total",
        "keygate_key_cache_hits_total",
        "keygate_key_cache_misses_total",
        "keygate_token_cache_hits_total",
        "keygate_unknown_kid_rejections_total",
        "keygate_jwks_adopted_total",
        "keygate_jwks_keys",
        "keygate_jwks_key_age_seconds",
        "keygate_jwks_expires_in_seconds",
        "keygate_provider_state",
        "keygate_provider_usable",
        "keygate_bus_up",
        "keygate_bus_lag_seconds",
        "keygate_bus_last_seq",
        "keygate_bus_published_total",
        "keygate_bus_applied_total",
        "keygate_bus_rejected_total",
        "keygate_bus_resyncs_total",
        "keygate_bus_accepting_while_degraded",
        "keygate_bus_primary_info",
        "keygate_bus_last_resync_timestamp_seconds",
        "keygate_revocations",
        "keygate_verified_tokens_cached",
        "keygate_admin_requests_total",
    ] {
        assert!(families.contains(family), "missing family {family}");
    }

    let acme = r#"tenant="acme",provider="idp""#;
    let weird = r#"tenant="we\"ird\\ten\nant",provider="remote""#;
    let get = |series: String| value(&text, &series);
    assert_values(
        &text,
        &[
            (format!("keygate_jwks_keys{{{acme}}}"), Some("1")),
            (format!("keygate_jwks_keys{{{weird}}}"), Some("0")),
            (format!("keygate_key_cache_hits_total{{{acme}}}"), Some("1")),
            (
                format!(r#"keygate_jwks_fetches_total{{{acme},result="ok"}}"#),
                Some("0"),
            ),
            (
                format!(r#"keygate_jwks_fetches_total{{{weird},result="error"}}"#),
                Some("0"),
            ),
            // Fetched at T0, scraped at T0 + 12 s; the empty provider has no age at all.
            (
                format!("keygate_jwks_key_age_seconds{{{acme}}}"),
                Some("12"),
            ),
            (format!("keygate_jwks_key_age_seconds{{{weird}}}"), None),
        ],
    );
    // A static set never expires; the empty one has nothing to expire.
    assert!(!text.contains("keygate_jwks_expires_in_seconds{"), "{text}");

    let state = |labels: &str, state: &str| {
        get(format!(
            r#"keygate_provider_state{{{labels},state="{state}"}}"#
        ))
    };
    assert_eq!(state(acme, "fresh").as_deref(), Some("1"));
    for other in ["stale", "failing", "unavailable", "empty"] {
        assert_eq!(state(acme, other).as_deref(), Some("0"), "{other}");
    }
    assert_eq!(state(weird, "empty").as_deref(), Some("1"));
    assert_eq!(state(weird, "fresh").as_deref(), Some("0"));
    assert_values(
        &text,
        &[
            (format!("keygate_provider_usable{{{acme}}}"), Some("1")),
            (format!("keygate_provider_usable{{{weird}}}"), Some("0")),
        ],
    );

    let resync_at = T0.to_string();
    assert_values(
        &text,
        &[
            (r#"keygate_bus_up{backend="local"}"#, Some("1")),
            ("keygate_bus_lag_seconds", Some("0.25")),
            ("keygate_bus_last_seq", Some("7")),
            (
                r#"keygate_bus_primary_info{node="127.0.0.1:6380"}"#,
                Some("1"),
            ),
            (
                r#"keygate_bus_last_resync_timestamp_seconds{reason="start"}"#,
                Some(resync_at.as_str()),
            ),
            ("keygate_bus_published_total", Some("5")),
            ("keygate_revocations", Some("3")),
            ("keygate_verified_tokens_cached", Some("2")),
            (
                r#"keygate_admin_requests_total{action="flush",status="200"}"#,
                Some("2"),
            ),
            (
                r#"keygate_admin_requests_total{action="revoke",status="400"}"#,
                Some("1"),
            ),
        ],
    );
}

#[tokio::test]
async fn each_url_of_a_provider_with_several_has_its_series() {
    let split = ProviderConfig::builder("acme", "split", "https://split.test")
        .audiences(["api"])
        .jwks_uris(["https://a.split.test/jwks", "https://b.split.test/jwks"])
        .build()
        .unwrap();
    let verifier = Verifier::builder()
        .provider(split)
        .clock(Arc::new(ManualClock::at_unix(T0)))
        .build()
        .unwrap();
    let status = verifier.status();
    let bus = bus();
    let text = Metrics::new().render(&scrape_at(&status, &bus));
    check_lines(&text);
    for url in ["https://a.split.test/jwks", "https://b.split.test/jwks"] {
        let l = format!(r#"tenant="acme",provider="split",url="{url}""#);
        let get = |series: String| value(&text, &series);
        assert_eq!(
            get(format!(r#"keygate_jwks_source_state{{{l},state="empty"}}"#)).as_deref(),
            Some("1")
        );
        assert_eq!(
            get(format!(r#"keygate_jwks_source_state{{{l},state="fresh"}}"#)).as_deref(),
            Some("0")
        );
        assert_eq!(
            get(format!("keygate_jwks_source_keys{{{l}}}")).as_deref(),
            Some("0")
        );
        assert_eq!(
            get(format!(
                r#"keygate_jwks_source_fetches_total{{{l},result="error"}}"#
            ))
            .as_deref(),
            Some("0")
        );
    }
    // Providers with one URL add no per-URL families.
    let one = providers().await;
    let text = Metrics::new().render(&scrape_at(&one, &bus));
    assert!(!text.contains("keygate_jwks_source_"));
}

#[test]
fn degraded_bus_is_down_and_expiry_may_be_negative() {
    let bus = BusStatus {
        lag_seconds: 1.5,
        ..BusStatus::new("redis", BusState::Degraded, "e".into())
    };
    let text = Metrics::new().render(&scrape_at(&[], &bus));
    check_lines(&text);
    assert_values(
        &text,
        &[
            (r#"keygate_bus_up{backend="redis"}"#, Some("0")),
            ("keygate_bus_accepting_while_degraded", Some("1")),
        ],
    );
    let before = UNIX_EPOCH + Duration::from_secs(T0);
    let after = before + Duration::from_secs(30);
    assert!((seconds_between(after, before) + 30.0).abs() < f64::EPSILON);
    assert!((seconds_between(before, after) - 30.0).abs() < f64::EPSILON);
}

#[test]
fn the_line_checker_rejects_malformed_lines() {
    for bad in [
        "# HELP x help\n# TYPE x gauge\nx{a=\"b} 1\n",
        "# HELP x help\n# TYPE x gauge\nx{a=\"b\\q\"} 1\n",
        "# HELP x help\n# TYPE x gauge\nx 1 2 three\n",
        "# HELP x help\n# TYPE x gauge\ny 1\n",
        "x 1\n",
    ] {
        let result = std::panic::catch_unwind(|| check_lines(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
    check_lines("# HELP x help\n# TYPE x gauge\nx{a=\"b\\\"\",c=\"d\"} 1\n");
}
