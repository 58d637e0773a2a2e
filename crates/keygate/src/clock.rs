//! Time as an input: every claim check and freshness decision reads `now` from a [`Clock`];
//! [`unix_seconds`] and [`unix_millis`] turn a time into the numbers tokens and logs carry.
//!
//! Scheduling (sleeps, timeouts) uses tokio time; the wall clock used to judge `exp`, `nbf`,
//! `iat` and cache expiry comes from here so that tests can set it.

use std::fmt;
use std::time::SystemTime;

/// A source of wall-clock time.
///
/// The default is [`SystemClock`]. Tests substitute a clock they can set and advance.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "this is the clock: the one place that reads the OS wall clock"
    )]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Whole seconds since the Unix epoch: negative for times before it, saturating at the
/// bounds of `i64`. The form of `exp`, `nbf` and `iat` (RFC 7519 NumericDate).
///
/// ```
/// use std::time::{Duration, SystemTime};
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
/// assert_eq!(keygate::clock::unix_seconds(t), 1_700_000_000);
/// assert_eq!(keygate::clock::unix_seconds(SystemTime::UNIX_EPOCH - Duration::from_secs(5)), -5);
/// ```
#[must_use]
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Whole milliseconds since the Unix epoch: zero for times before it, saturating at
/// `u64::MAX`.
///
/// ```
/// use std::time::{Duration, SystemTime};
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
/// assert_eq!(keygate::clock::unix_millis(t), 1_700_000_000_999);
/// assert_eq!(keygate::clock::unix_millis(SystemTime::UNIX_EPOCH - Duration::from_secs(5)), 0);
/// ```
#[must_use]
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
