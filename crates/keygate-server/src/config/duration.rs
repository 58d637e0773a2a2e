//! Durations in the file: whole seconds (`30`) or a number with a unit (`500ms`, `30s`, `5m`,
//! `1h`, `1d`).
//!
//! Hand-written rather than `humantime`: humantime also accepts `5 weeks`, `1h 30m`, `2min`
//! or `10us`, and refuses a bare `"7"`, so the files keygate accepts would change.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A duration in the file: whole seconds (`30`) or a number with a unit (`500ms`, `30s`,
/// `5m`, `1h`, `1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: seconds, or a string like \"500ms\", \"30s\", \"5m\", \"1h\"",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileDuration, E> {
                u64::try_from(v)
                    .map(|s| FileDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileDuration, E> {
                parse_duration(v).map(FileDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` or bare seconds.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\""))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        other => Err(format!(
            "unknown unit {other:?} in {s:?}: use ms, s, m, h or d"
        )),
    }
}
