//! Failures: retries within one refresh (bounded attempts, per-attempt timeout, overall
//! deadline, full-jitter backoff, `Retry-After`) and the backoff between failed cycles (see
//! the module docs of [`refresh`](super), "Failures").

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use url::Url;

use super::{MIN_REFRESH_INTERVAL, lock};
use crate::error::KeysUnavailable;
use crate::fetch::{FetchError, FetchRequest, FetchResponse, retry_after};
use crate::provider::{Counters, Provider};

/// After failures, cycles of refreshes back off up to this long while usable keys are
/// cached (and never past the last chance to refresh them, see [`last_chance`]).
pub(super) const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(60);

/// With no usable keys, cycles of refreshes back off up to this long: every verification
/// fails meanwhile and readiness waits for the next cycle, so recovery must be prompt.
const NO_KEYS_FAILURE_BACKOFF: Duration = Duration::from_secs(4);

impl Provider {
    pub(super) fn record_failure(&self, err: &KeysUnavailable, retry_after: Option<Duration>) {
        Counters::bump(&self.counters.refresh_errors);
        let now = self.clock.now();
        // Serving ends here, if anything is served.
        let usable_until = self
            .snapshot
            .load()
            .as_ref()
            .filter(|s| s.is_usable(now))
            .map(|s| s.usable_until);
        {
            let mut state = lock(&self.refresher.state);
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_failure = Some((now, err.clone()));
            let backoff = failure_backoff(
                state.consecutive_failures,
                usable_until.is_some(),
                fastrand::f64(),
            );
            let mut next = now + backoff.max(retry_after.unwrap_or_default());
            let mut quiet = retry_after.map(|wait| now + wait);
            // Neither the backoff nor the IdP's `Retry-After` may let usable keys run out
            // untried: one more attempt starts early enough to end before they do.
            if let Some(Some(until)) = usable_until {
                let last_chance = last_chance(now, until, self.config.retry.deadline);
                next = next.min(last_chance);
                quiet = quiet.map(|q| q.min(last_chance));
            }
            state.next_attempt_at = next;
            state.quiet_until = quiet;
        }
        tracing::warn!(
            provider = %self.id,
            reason = err.cause_reason(),
            error = %err,
            "jwks refresh failed; keeping cached keys"
        );
        self.refresher.reschedule.notify_one();
    }

    /// Whether a refresh already failed and no usable keys are cached.
    fn retrying_without_keys(&self) -> bool {
        let now = self.clock.now();
        lock(&self.refresher.state).consecutive_failures > 0
            && !self
                .snapshot
                .load()
                .as_ref()
                .is_some_and(|s| s.is_usable(now))
    }

    /// GET with bounded attempts, per-attempt timeout, overall deadline and full-jitter
    /// backoff. Returns a 200 or 304 response, or the last error.
    pub(super) async fn fetch_with_retries(
        &self,
        url: &Url,
        headers: HeaderMap,
    ) -> Result<FetchResponse, FetchError> {
        let retry = &self.config.retry;
        let deadline = tokio::time::Instant::now() + retry.deadline;
        // After a failed refresh with nothing usable cached, refreshes come every 2 to 4 s
        // (see `failure_backoff`): that cadence is the retry, so each makes one attempt and a
        // down IdP sees one request per cycle, not `attempts` of them.
        let attempts = if self.retrying_without_keys() {
            1
        } else {
            retry.attempts
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let request = FetchRequest {
                url: url.clone(),
                headers: headers.clone(),
            };
            let result = match tokio::time::timeout(
                retry.attempt_timeout.min(remaining),
                self.fetcher.fetch(request),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout),
            };
            self.counters.count_request(match &result {
                Ok(resp) => resp.status.as_str(),
                Err(FetchError::Status { status, .. }) => status.as_str(),
                Err(FetchError::Timeout) => "timeout",
                Err(_) => "error",
            });
            let err = match result {
                Ok(resp)
                    if resp.status == StatusCode::OK || resp.status == StatusCode::NOT_MODIFIED =>
                {
                    return Ok(resp);
                }
                Ok(resp) => FetchError::Status {
                    status: resp.status,
                    retry_after: retry_after(&resp.headers, self.clock.now()),
                },
                Err(e) => e,
            };
            tracing::debug!(provider = %self.id, attempt, reason = err.reason(), "fetch attempt failed");
            if !err.is_retryable() || attempt >= attempts {
                return Err(err);
            }
            let mut wait = retry.backoff(attempt);
            if let FetchError::Status {
                retry_after: Some(ra),
                ..
            } = &err
            {
                wait = wait.max(*ra);
            }
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait before the next cycle of refreshes after `failures` failed ones in a row.
///
/// With usable keys cached: full jitter (`draw` in `[0, 1)`) over 1 s doubling per failure up
/// to [`MAX_FAILURE_BACKOFF`], at least [`MIN_REFRESH_INTERVAL`]. Without: "equal jitter"
/// over 1 s doubling up to [`NO_KEYS_FAILURE_BACKOFF`], i.e. between half of that ceiling and
/// all of it (2 to 4 s once the ceiling is reached), so replicas spread out but a recovered
/// IdP is seen within a few seconds.
fn failure_backoff(failures: u32, has_usable_keys: bool, draw: f64) -> Duration {
    let cap = if has_usable_keys {
        MAX_FAILURE_BACKOFF
    } else {
        NO_KEYS_FAILURE_BACKOFF
    };
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << failures.min(10))
        .min(cap);
    let wait = if has_usable_keys {
        ceiling.mul_f64(draw)
    } else {
        ceiling / 2 + (ceiling / 2).mul_f64(draw)
    };
    wait.max(MIN_REFRESH_INTERVAL)
}

/// The latest moment, after a failure at `now`, to start a refresh that should end before
/// keys usable until `until` stop being served: a whole refresh `deadline` before it, or
/// halfway there if less time is left, and never sooner than [`MIN_REFRESH_INTERVAL`].
fn last_chance(now: SystemTime, until: SystemTime, deadline: Duration) -> SystemTime {
    let left = until.duration_since(now).unwrap_or_default();
    let start = until - deadline.min(left / 2);
    start.max(now + MIN_REFRESH_INTERVAL)
}
