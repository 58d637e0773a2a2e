//! A manually driven clock for claim-time tests.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A [`keygate::Clock`] that stands still until a test moves it.
///
/// Share it as `Arc<ManualClock>`: every holder sees [`set`](Self::set) and
/// [`advance`](Self::advance) immediately.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock reading `now`.
    #[must_use]
    pub fn new(now: SystemTime) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    /// A clock reading `secs` seconds after the Unix epoch.
    #[must_use]
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Jumps to `now`, forwards or backwards.
    pub fn set(&self, now: SystemTime) {
        *self.lock() = now;
    }

    /// Moves the clock forwards by `by`.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    /// The current reading as whole seconds since the Unix epoch (negative before it).
    #[must_use]
    pub fn now_unix(&self) -> i64 {
        let now = *self.lock();
        match now.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).expect("time fits in i64"),
            Err(before) => -i64::try_from(before.duration().as_secs()).expect("time fits in i64"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A panicking test must not poison the clock for the others sharing it.
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl keygate::Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::Clock;
    use std::sync::Arc;

    #[test]
    fn moves_only_when_told() {
        let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(clock.now_unix(), 1_700_000_000);
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now_unix(), 1_700_000_061);
        assert_eq!(
            shared.now(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_061)
        );
        clock.set(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(clock.now_unix(), -5);
    }
}
