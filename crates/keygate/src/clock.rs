//! Time as an input: every claim check and freshness decision reads `now` from a [`Clock`].
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
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Seconds since the Unix epoch, saturating at zero for times before it.
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
