//! Fetch settings for tests against a loopback [`StubIdp`](crate::StubIdp): a fetcher that
//! accepts plain HTTP on loopback, and retry settings short enough for a test.

use std::sync::Arc;
use std::time::Duration;

use keygate::{HttpFetcher, RetrySettings};

/// A fetcher that accepts plain HTTP to loopback addresses, each fetch bounded by `timeout`.
pub fn loopback_fetcher(timeout: Duration) -> Arc<HttpFetcher> {
    Arc::new(
        HttpFetcher::builder()
            .danger_allow_http_loopback(true)
            .timeout(timeout)
            .build()
            .expect("loopback fetcher"),
    )
}

/// Retry settings for tests: `attempts` attempts, backoffs starting at `base_delay` and never
/// above `max_delay`, each attempt bounded by `attempt_timeout`, the whole refresh by
/// `deadline`.
pub fn test_retry(
    attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    attempt_timeout: Duration,
    deadline: Duration,
) -> RetrySettings {
    let mut retry = RetrySettings::default();
    retry.attempts = attempts;
    retry.base_delay = base_delay;
    retry.max_delay = max_delay;
    retry.attempt_timeout = attempt_timeout;
    retry.deadline = deadline;
    retry
}
