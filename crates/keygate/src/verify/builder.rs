//! [`VerifierBuilder`]: the providers, clock, fetcher, revocations and caches a [`Verifier`]
//! is built from, checked once in [`build`](VerifierBuilder::build).

use std::sync::Arc;

use super::{DEFAULT_MAX_TOKEN_BYTES, Inner, Registry, Verifier};
use crate::clock::{Clock, SystemClock};
use crate::config::ProviderConfig;
use crate::dpop::{MemoryReplayGuard, ReplayGuard};
use crate::error::ConfigError;
use crate::exchange::KeyExchange;
use crate::fetch::{Fetch, HttpFetcher};
use crate::revoke::{RevocationCheck, Revocations};
use crate::token_cache::TokenCache;

/// Builds a [`Verifier`].
#[must_use]
#[derive(Default)]
pub struct VerifierBuilder {
    providers: Vec<ProviderConfig>,
    clock: Option<Arc<dyn Clock>>,
    fetcher: Option<Arc<dyn Fetch>>,
    revocations: Option<Arc<dyn RevocationCheck>>,
    token_cache: Option<usize>,
    max_token_bytes: Option<usize>,
    key_exchange: Option<Arc<dyn KeyExchange>>,
    replay_guard: Option<Arc<dyn ReplayGuard>>,
}

impl VerifierBuilder {
    /// Adds a provider.
    pub fn provider(mut self, provider: ProviderConfig) -> Self {
        self.providers.push(provider);
        self
    }

    /// The clock for claim checks and cache expiry (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How key sets are fetched (default: [`HttpFetcher`] with its hardened defaults).
    pub fn fetcher(mut self, fetcher: Arc<dyn Fetch>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Where seen DPoP proofs are remembered (default: in this process's memory). A fleet
    /// shares one store, so that a proof accepted by one replica is refused by the others.
    pub fn replay_guard(mut self, guard: Arc<dyn ReplayGuard>) -> Self {
        self.replay_guard = Some(guard);
        self
    }

    /// Where revocations come from (default: an empty in-memory [`Revocations`]).
    pub fn revocations(mut self, revocations: Arc<dyn RevocationCheck>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Enables the verified-token cache, holding at most `capacity` tokens.
    pub fn token_cache(mut self, capacity: usize) -> Self {
        self.token_cache = Some(capacity);
        self
    }

    /// Shares key sets with other replicas through `exchange`: each refresh first asks it for a
    /// set a peer fetched, and hands it every set fetched from an identity provider (see
    /// [`crate::exchange`]). Without one, every replica fetches for itself.
    pub fn key_exchange(mut self, exchange: Arc<dyn KeyExchange>) -> Self {
        self.key_exchange = Some(exchange);
        self
    }

    /// Refuses tokens longer than this many bytes (default 16 KiB).
    pub fn max_token_bytes(mut self, limit: usize) -> Self {
        self.max_token_bytes = Some(limit);
        self
    }

    /// Builds the verifier. No network access happens here; keys are fetched on first use
    /// or by [`Verifier::warm_up`].
    ///
    /// # Errors
    /// A [`ConfigError`] when there is no provider, two providers share an id, a static key
    /// set does not parse, or the default fetcher cannot be built.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "at least one provider is required",
            ));
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let fetcher: Arc<dyn Fetch> = match self.fetcher {
            Some(f) => f,
            None => Arc::new(
                HttpFetcher::builder()
                    .build()
                    .map_err(|e| ConfigError::new("fetcher", e.to_string()))?,
            ),
        };
        let (registry, _) = Registry::build(
            self.providers,
            None,
            &fetcher,
            &clock,
            self.key_exchange.as_ref(),
        )?;
        let max_token_bytes = self.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if max_token_bytes == 0 {
            return Err(ConfigError::new("max_token_bytes", "must be positive"));
        }
        // A single node's store remembers from now: a proof used before this process
        // started is refused, one made since is not.
        let replay_guard = self.replay_guard.unwrap_or_else(|| {
            Arc::new(MemoryReplayGuard::default().remembering_from(clock.now()))
        });
        Ok(Verifier {
            inner: Arc::new(Inner {
                registry: arc_swap::ArcSwap::from_pointee(registry),
                clock,
                revocations: self
                    .revocations
                    .unwrap_or_else(|| Arc::new(Revocations::new())),
                token_cache: self.token_cache.filter(|&c| c > 0).map(TokenCache::new),
                max_token_bytes,
                fetcher,
                key_exchange: self.key_exchange,
                replay_guard,
                reconfiguring: std::sync::Mutex::new(()),
            }),
        })
    }
}
