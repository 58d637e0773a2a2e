//! One provider's introspection state: the result cache keyed by the token's SHA-256, the
//! calls in flight (one per token), the call budget, and the endpoint.
//!
//! A result is cached under the cache epoch current when its call started; clearing the
//! cache (a flush, a resync) moves the epoch and forgets the calls in flight, so no answer
//! obtained before a clear is served after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::Shared;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use super::{IntrospectionConfig, IntrospectionError};
use crate::clock::unix_seconds;
use crate::error::VerifyError;
use crate::fetch::BoxFuture;
use crate::refresh::lock;
use crate::token_cache::{Cached, TokenCache};
use crate::verify::VerifiedToken;

/// A judged result: the token as accepted, or why it was refused.
pub(crate) type Answer = Result<Arc<VerifiedToken>, VerifyError>;

/// A call in flight, shared by every request for the same token meanwhile.
type Flight = Shared<BoxFuture<'static, Result<Answer, IntrospectionError>>>;

/// How long a caller is told to wait when the endpoint could not be asked.
pub(crate) const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct Introspector {
    pub(crate) config: IntrospectionConfig,
    cache: TokenCache<Answer>,
    /// Moves on every clear; a result counts only under the epoch it was asked in.
    epoch: AtomicU64,
    flights: Mutex<HashMap<Box<str>, (u64, Flight)>>,
    bucket: Mutex<Bucket>,
    permits: Arc<Semaphore>,
    /// The endpoint once known (configured, or discovered once).
    pub(crate) endpoint: Mutex<Option<Url>>,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A cached answer.
    Hit(Answer),
    /// A call for this token is in flight: await it.
    Joined(Flight),
    /// Nothing: a call may be started with [`Introspector::start`].
    Miss,
}

impl Introspector {
    pub(crate) fn new(config: IntrospectionConfig) -> Introspector {
        let endpoint = match &config.endpoint {
            super::IntrospectionEndpoint::Url(url) => Some(url.clone()),
            super::IntrospectionEndpoint::Discovered => None,
        };
        Introspector {
            cache: TokenCache::new(config.cache_entries),
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(config.burst),
                at: None,
            }),
            config,
            epoch: AtomicU64::new(0),
            flights: Mutex::new(HashMap::new()),
            endpoint: Mutex::new(endpoint),
        }
    }

    /// The cached answer for the token with this digest, or the call in flight for it.
    pub(crate) fn lookup(&self, digest: &str, now: SystemTime) -> Lookup {
        let epoch = self.epoch.load(Ordering::Acquire);
        let now = unix_seconds(now);
        if let Some((answer, _)) = self
            .cache
            .get(digest, |c| c.generation == epoch && now < c.valid_until)
        {
            return Lookup::Hit(answer);
        }
        match lock(&self.flights).get(digest) {
            Some((e, flight)) if *e == epoch => Lookup::Joined(flight.clone()),
            _ => Lookup::Miss,
        }
    }

    /// Takes a call from the budget, at once or not at all: a permit of the concurrency cap
    /// and a token of the rate bucket.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, IntrospectionError> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            IntrospectionError::Busy {
                retry_after: Duration::from_secs(1),
            }
        })?;
        let (rate, burst) = (self.config.rate_limit, self.config.burst);
        lock(&self.bucket)
            .take(rate, burst, tokio::time::Instant::now())
            .map_err(|retry_after| IntrospectionError::Busy { retry_after })?;
        Ok(permit)
    }

    /// Starts `call` as the one call for this token (the caller holds a budget permit in
    /// it), caching its answer when it ends unless the cache was cleared meanwhile. Returns
    /// the shared flight; it runs to the end even if every caller goes away.
    pub(crate) fn start(
        self: &Arc<Self>,
        digest: &str,
        now: SystemTime,
        call: BoxFuture<'static, Result<Answer, IntrospectionError>>,
    ) -> Flight {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut flights = lock(&self.flights);
        if let Some((e, flight)) = flights.get(digest)
            && *e == epoch
        {
            return flight.clone();
        }
        let this = Arc::clone(self);
        let key: Box<str> = digest.into();
        let task_key = key.clone();
        let asked_at = unix_seconds(now);
        let task = tokio::spawn(async move {
            let result = call.await;
            if let Ok(answer) = &result {
                this.remember(&task_key, epoch, asked_at, answer);
            }
            let mut flights = lock(&this.flights);
            if flights.get(&task_key).is_some_and(|(e, _)| *e == epoch) {
                flights.remove(&task_key);
            }
            result
        });
        let flight: Flight = async move {
            task.await.unwrap_or(Err(IntrospectionError::Unavailable {
                retry_after: UNAVAILABLE_RETRY,
            }))
        }
        .boxed()
        .shared();
        flights.insert(key, (epoch, flight.clone()));
        flight
    }

    /// Caches an answer: an accepted token until the earlier of its `exp` and the positive
    /// bound, a refusal for the negative time.
    fn remember(&self, digest: &str, epoch: u64, asked_at: i64, answer: &Answer) {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let valid_until = match answer {
            Ok(token) => {
                let bound = asked_at.saturating_add(secs(self.config.positive_ttl));
                token.expires_at().map_or(bound, |exp| exp.min(bound))
            }
            Err(_) => asked_at.saturating_add(secs(self.config.negative_ttl).max(1)),
        };
        if valid_until <= asked_at || self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        self.cache.insert(
            digest,
            Cached {
                verified: answer.clone(),
                provider: 0,
                generation: epoch,
                revocation_generation: 0,
                valid_until,
            },
            |c| c.generation == epoch && asked_at < c.valid_until,
        );
    }

    /// Forgets every cached answer and every call in flight.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        lock(&self.flights).clear();
        self.cache.purge_provider(0);
    }

    /// The number of cached answers, dead ones included.
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// A token bucket: `burst` calls at once, refilled at `rate` per second.
struct Bucket {
    tokens: f64,
    at: Option<tokio::time::Instant>,
}

impl Bucket {
    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: u32, burst: u32, now: tokio::time::Instant) -> Result<(), Duration> {
        let rate = f64::from(rate);
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * rate;
            self.tokens = (self.tokens + refill).min(f64::from(burst));
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let t0 = tokio::time::Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            at: None,
        };
        for _ in 0..3 {
            assert!(b.take(2, 3, t0).is_ok());
        }
        let wait = b.take(2, 3, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(2, 3, t0 + Duration::from_millis(499)).is_err());
        assert!(b.take(2, 3, t0 + Duration::from_millis(1_010)).is_ok());
        // A long pause refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..3 {
            assert!(b.take(2, 3, later).is_ok());
        }
        assert!(b.take(2, 3, later).is_err());
    }
}
