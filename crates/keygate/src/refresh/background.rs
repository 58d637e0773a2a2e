//! The background refresher: one task per provider that sleeps until the scheduled refresh
//! or the deferred refetch is due, runs it, and stops when the provider is dropped (see the
//! module docs of [`refresh`](super), "Scheduled refreshes").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::sources::Why;
use super::{Inflight, MIN_REFRESH_INTERVAL, lock, running};
use crate::config::CacheSettings;
use crate::provider::Provider;

impl Provider {
    /// Starts the background refresher once; it stops when the provider is dropped.
    pub(crate) fn ensure_background(self: &Arc<Self>) {
        // A plain load first: this runs on every verification, which must not contend for
        // the cache line with a read-modify-write.
        if self.refresher.background_started.load(Ordering::Relaxed)
            || self.is_static()
            || self
                .refresher
                .background_started
                .swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.refresher
                .background_started
                .store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        let notify = Arc::clone(&self.refresher.reschedule);
        let mut shutdown = self.refresher.shutdown.subscribe();
        handle.spawn(async move {
            loop {
                let delay = match weak.upgrade() {
                    Some(p) => p.next_wake(),
                    None => return,
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = notify.notified() => continue,
                    _ = shutdown.changed() => return,
                }
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                let due = provider.due_refresh();
                drop(provider);
                if let Some(refresh) = due {
                    let _ = refresh.await;
                }
            }
        });
    }

    /// How long the background refresher may sleep: until the scheduled refresh or the
    /// deferred refetch, whichever is first.
    fn next_wake(&self) -> Duration {
        let now = self.clock.now();
        let deferred = lock(&self.refresher.bucket).deferred;
        match self.scheduled_at().into_iter().chain(deferred).min() {
            Some(at) => at.duration_since(now).unwrap_or_default(),
            // Flushed: the next verification fetches; nothing to refresh ahead of. A flush or
            // a new set notifies this task, so the long sleep is cut short.
            None => Duration::from_secs(3600),
        }
    }

    /// When the next scheduled refresh is due; `None` when there is nothing to refresh ahead
    /// of (flushed, or never fetched).
    fn scheduled_at(&self) -> Option<SystemTime> {
        let state = lock(&self.refresher.state);
        if self.snapshot.load().is_none() && state.last_failure.is_none() {
            return None;
        }
        // Never before the end of a `Retry-After`, even for a set adopted meanwhile.
        Some(state.quiet_until.map_or(state.next_attempt_at, |quiet| {
            quiet.max(state.next_attempt_at)
        }))
    }

    /// The refresh the background refresher runs now: the scheduled one or the deferred
    /// refetch, whichever is due by the provider's clock.
    fn due_refresh(self: &Arc<Self>) -> Option<Inflight> {
        let now = self.clock.now();
        if self.scheduled_at().is_some_and(|at| at <= now) {
            return Some(self.refresh());
        }
        let quiet = self.refresher.quiet_until(now);
        let mut inflight = lock(&self.refresher.inflight);
        if running(&inflight).is_some() {
            // Started after the deferral (starting one clears it), so it does its job.
            return None;
        }
        let mut bucket = lock(&self.refresher.bucket);
        if bucket.deferred.is_none_or(|due| due > now) {
            return None;
        }
        if let Some(until) = quiet {
            // Asked for quiet after the refetch was deferred: it waits for the end of it.
            bucket.deferred = Some(until);
            return None;
        }
        if bucket.try_take(now) {
            drop(bucket);
            tracing::debug!(provider = %self.id, "running the deferred refetch");
            return Some(self.start(&mut inflight, Why::Forced));
        }
        // The token is not there yet after all (the clock stepped back): look again later.
        bucket.deferred = bucket
            .next_token_at(now)
            .map(|due| due.max(now + MIN_REFRESH_INTERVAL));
        None
    }
}

/// How long before expiry a set with `ttl` left refreshes: `refresh_ahead` plus `jitter`
/// (a draw in `[0, 1)`) times `refresh_jitter`, scaled down in proportion when the two reach
/// past half of `ttl`, so a short-lived set is refreshed no sooner than halfway through its
/// lifetime, still spread by the jitter, whatever the settings say.
pub(super) fn refresh_ahead_of_expiry(
    cache: &CacheSettings,
    ttl: Duration,
    jitter: f64,
) -> Duration {
    let ahead = cache.refresh_ahead + cache.refresh_jitter.mul_f64(jitter);
    let most = cache.refresh_ahead + cache.refresh_jitter;
    let half = ttl / 2;
    if most <= half {
        ahead
    } else {
        // `most` is above `half`, so it is positive; `min` guards against float rounding.
        ahead
            .mul_f64(half.as_secs_f64() / most.as_secs_f64())
            .min(half)
    }
}
