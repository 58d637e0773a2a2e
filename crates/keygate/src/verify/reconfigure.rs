//! Changing a running verifier's providers: the [`Registry`] every verification reads (the
//! providers and the index of them by issuer) and [`Verifier::reconfigure`], which builds a
//! new one and swaps it in whole.
//!
//! A provider whose [`ProviderConfig`] did not change is carried over as the very same
//! object: its keys, its refresher, its counters and its verified tokens stay, and nothing is
//! fetched again. A changed provider is a new object (it fetches afresh, its old tokens are
//! dropped); a removed one is stopped. Verifications read the registry through one
//! `ArcSwap` load, so the hot path takes no lock and sees the old providers or the new ones,
//! never a mix.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use super::Verifier;
use crate::clock::Clock;
use crate::config::ProviderConfig;
use crate::error::ConfigError;
use crate::exchange::KeyExchange;
use crate::fetch::Fetch;
use crate::provider::{Provider, ProviderId};

/// What [`Verifier::reconfigure`] did to each provider, ids in configuration order (removed
/// ones in their old order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconfigureReport {
    /// Providers that were not configured before; they have no keys until fetched (see
    /// [`Verifier::warm_up`]).
    pub added: Vec<ProviderId>,
    /// Providers no longer configured: stopped, their verified tokens dropped.
    pub removed: Vec<ProviderId>,
    /// Providers whose settings changed: rebuilt, so they fetch their keys afresh and their
    /// verified tokens are dropped.
    pub changed: Vec<ProviderId>,
    /// Providers configured exactly as before: kept as they were, keys, refresher and
    /// verified tokens included.
    pub unchanged: Vec<ProviderId>,
}

/// The providers a verification chooses among.
pub(super) struct Registry {
    pub(super) providers: Vec<Arc<Provider>>,
    pub(super) by_issuer: HashMap<Box<str>, Vec<usize>, foldhash::fast::RandomState>,
}

impl Registry {
    /// Builds the registry of `configs`, reusing the providers of `old` whose configuration is
    /// unchanged, and reports what became of each.
    pub(super) fn build(
        configs: Vec<ProviderConfig>,
        old: Option<&Registry>,
        fetcher: &Arc<dyn Fetch>,
        clock: &Arc<dyn Clock>,
        exchange: Option<&Arc<dyn KeyExchange>>,
    ) -> Result<(Registry, ReconfigureReport), ConfigError> {
        if configs.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "at least one provider is required",
            ));
        }
        let mut report = ReconfigureReport::default();
        let mut providers: Vec<Arc<Provider>> = Vec::with_capacity(configs.len());
        let mut by_issuer: HashMap<Box<str>, Vec<usize>, _> =
            HashMap::with_hasher(foldhash::fast::RandomState::default());
        for config in configs {
            if providers.iter().any(|p| p.id == config.id) {
                return Err(ConfigError::new(
                    "providers",
                    format!("duplicate provider {}", config.id),
                ));
            }
            let previous = old.and_then(|r| r.providers.iter().find(|p| p.id == config.id));
            let issuer: Box<str> = config.issuer.as_ref().into();
            let provider = match previous {
                Some(p) if p.config.same_settings(&config) => {
                    report.unchanged.push(p.id.clone());
                    Arc::clone(p)
                }
                _ => {
                    let id = config.id.clone();
                    let provider = Provider::new(
                        config,
                        Arc::clone(fetcher),
                        Arc::clone(clock),
                        exchange.cloned(),
                    )
                    .map_err(|e| ConfigError::new("static_jwks", e.to_string()))?;
                    if previous.is_some() {
                        report.changed.push(id);
                    } else if old.is_some() {
                        report.added.push(id);
                    }
                    provider
                }
            };
            by_issuer.entry(issuer).or_default().push(providers.len());
            providers.push(provider);
        }
        if let Some(old) = old {
            report.removed = old
                .providers
                .iter()
                .filter(|p| !providers.iter().any(|n| n.id == p.id))
                .map(|p| p.id.clone())
                .collect();
        }
        Ok((
            Registry {
                providers,
                by_issuer,
            },
            report,
        ))
    }
}

impl Verifier {
    /// Replaces the providers with `providers`, atomically: every verification sees either
    /// the old providers or the new ones.
    ///
    /// A provider whose configuration equals its current one (same id and settings; fetchers
    /// compare by [`Fetch::settings`]) is kept as it is: its keys, background refresher and
    /// verified tokens stay and nothing is fetched. A provider with changed settings is
    /// rebuilt and fetches afresh; its verified tokens are dropped. A provider no longer
    /// listed stops: its refresher ends and its verified tokens are no longer accepted. New
    /// and rebuilt providers have no keys yet: nothing here touches the network, so call
    /// [`Verifier::warm_up`] to fetch them now rather than on first use. The clock,
    /// revocations, fetcher, key exchange and cache sizes stay those the verifier was built
    /// with.
    ///
    /// Verifications already past their provider lookup finish under the providers they
    /// found. Reconfigurations are serialized.
    ///
    /// # Errors
    /// A [`ConfigError`] when `providers` is empty, names a provider twice or has a static key
    /// set that does not parse; the verifier is then left unchanged.
    pub fn reconfigure(
        &self,
        providers: impl IntoIterator<Item = ProviderConfig>,
    ) -> Result<ReconfigureReport, ConfigError> {
        let inner = &*self.inner;
        let _serial = inner
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = inner.registry.load_full();
        let (registry, report) = Registry::build(
            providers.into_iter().collect(),
            Some(&old),
            &inner.fetcher,
            &inner.clock,
            inner.key_exchange.as_ref(),
        )?;
        let new = Arc::new(registry);
        inner.registry.store(Arc::clone(&new));
        if let Some(cache) = &inner.token_cache {
            // Entries follow their provider to its new index. An entry a verification under
            // the old registry inserts after this lands on an index whose provider has other
            // snapshot generations, so it is dead (see `still_holds`).
            let moved: Vec<Option<usize>> = old
                .providers
                .iter()
                .map(|kept| new.providers.iter().position(|p| Arc::ptr_eq(p, kept)))
                .collect();
            cache.reindex(|idx| moved.get(idx).copied().flatten());
        }
        for p in &old.providers {
            if !new.providers.iter().any(|n| Arc::ptr_eq(n, p)) {
                p.refresher.stop();
            }
        }
        tracing::info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            "providers reconfigured"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;

    fn url_provider(name: &str) -> ProviderConfig {
        // Nothing listens there; these tests never fetch.
        ProviderConfig::builder("t", name, format!("https://{name}.example"))
            .jwks_uri(format!("https://{name}.example/jwks"))
            .audiences(["api"])
            .build()
            .unwrap()
    }

    fn provider(v: &Verifier, name: &str) -> Arc<Provider> {
        let registry = v.inner.registry.load();
        let p = registry.providers.iter().find(|p| p.id.name() == name);
        Arc::clone(p.unwrap())
    }

    #[tokio::test]
    async fn a_removed_provider_stops_its_refresher_even_while_held() {
        let v = Verifier::builder()
            .provider(url_provider("a"))
            .provider(url_provider("b"))
            .build()
            .unwrap();
        let (a, b) = (provider(&v, "a"), provider(&v, "b"));
        a.ensure_background();
        b.ensure_background();
        assert!(a.refresher.background_running() && b.refresher.background_running());
        let weak_b: Weak<Provider> = Arc::downgrade(&b);
        drop(b);

        // `a` is held, as by a verification that began before; it stops all the same.
        let report = v.reconfigure([url_provider("b")]).unwrap();
        assert_eq!(report.removed, [ProviderId::new("t", "a")]);
        assert_eq!(report.unchanged, [ProviderId::new("t", "b")]);
        let stopped = async {
            while a.refresher.background_running() {
                tokio::task::yield_now().await;
            }
        };
        // A bound so that a refresher that never stops fails the test instead of hanging it.
        tokio::time::timeout(std::time::Duration::from_secs(30), stopped)
            .await
            .expect("the removed provider's refresher stops");
        // The kept provider is the same object, still refreshing.
        let kept = weak_b.upgrade().expect("`b` is kept");
        assert!(Arc::ptr_eq(&kept, &provider(&v, "b")));
        assert!(kept.refresher.background_running());

        // Dropped: nothing but its task held it.
        let weak_a = Arc::downgrade(&a);
        drop(a);
        assert!(weak_a.upgrade().is_none());
    }
}
