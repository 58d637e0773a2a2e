//! Parsing `Retry-After` (RFC 9110 §10.2.3), a pure function of the headers and `now`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// The longest wait a server may ask for. A misconfigured or hostile server must not be able
/// to park refreshes for days.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The delay a `Retry-After` header asks for: delta-seconds or an HTTP-date, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past means "now" (zero). `None` when the header is
/// absent or unparsable.
#[allow(
    dead_code,
    reason = "consumed by the refresher, which is written separately"
)]
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so parsing fails only on overflow: treat that as "very long".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock as _, SystemClock};
    use http::HeaderValue;
    use proptest::prelude::*;

    fn parse(value: &str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        retry_after(&headers, now)
    }

    #[test]
    fn forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("120", Some(Duration::from_secs(120))),
            (" 7 ", Some(Duration::from_secs(7))),
            ("3600", Some(MAX_RETRY_AFTER)),
            ("3601", Some(MAX_RETRY_AFTER)),
            ("99999999999999999999999", Some(MAX_RETRY_AFTER)),
            (
                "Sun, 06 Nov 1994 08:50:37 GMT",
                Some(Duration::from_secs(60)),
            ),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(Duration::ZERO)),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            ("Mon, 07 Nov 1994 08:49:37 GMT", Some(MAX_RETRY_AFTER)),
            (
                "Sunday, 06-Nov-94 08:50:37 GMT",
                Some(Duration::from_secs(60)),
            ),
            ("Sun Nov  6 08:50:37 1994", Some(Duration::from_secs(60))),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value, now), *expected, "{value:?}");
        }
    }

    #[test]
    fn absent_or_not_text() {
        assert_eq!(retry_after(&HeaderMap::new(), SystemClock.now()), None);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_bytes(b"\xff12").unwrap());
        assert_eq!(retry_after(&headers, SystemClock.now()), None);
    }

    proptest! {
        #[test]
        fn never_exceeds_the_cap(value in "[ -~]{0,40}", secs in 0u64..4_000_000_000) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            if let Some(delay) = parse(&value, now) {
                prop_assert!(delay <= MAX_RETRY_AFTER);
            }
        }
    }
}
