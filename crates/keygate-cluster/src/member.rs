//! [`Member`]: a verifier and its revocations as a replica of the log, the one place the log's
//! events change them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use keygate::{FlushId, ProviderId, Revocation, Revocations, Verifier};

use crate::{Apply, Bus, Envelope, Event, SharedState};

/// How often [`Member::keep_pruning`] drops expired revocations.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A replica of the log: the verifier whose keys and verified tokens the log's events change,
/// the revocations it consults, and the bus it follows.
///
/// The sidecar wraps one; a Rust service gets one from [`crate::join`]. Run the bus with it
/// ([`Bus::run`] takes it as its [`Apply`]) and it applies every other replica's event.
#[derive(Debug)]
pub struct Member {
    verifier: Verifier,
    revocations: Revocations,
    bus: Arc<dyn Bus>,
}

impl Member {
    /// A replica of `bus` changing `verifier` and `revocations`, which must be the
    /// revocations the verifier consults (given to its builder).
    #[must_use]
    pub fn new(verifier: Verifier, revocations: Revocations, bus: Arc<dyn Bus>) -> Self {
        Member {
            verifier,
            revocations,
            bus,
        }
    }

    /// The verifier (its clones share caches and refreshers).
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The revocations the verifier consults.
    #[must_use]
    pub fn held_revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The bus this replica follows and publishes to.
    #[must_use]
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Applies an invalidation to this replica. A refresh runs in the background.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::Flush { provider, flush } => {
                // An unknown provider is a no-op here: the admin API checks before publishing,
                // and a replica with another config may not have it. A flush this replica
                // applied already (its own, echoed by the log) changes nothing.
                let _ = self.verifier.apply_flush(provider, flush.clone());
            }
            Event::Refresh(id) => {
                // On a bus that carries key sets, the replica that refreshed publishes what it
                // fetched and this one adopts it: no second request to the IdP.
                if self.bus.shares_key_sets() {
                    return;
                }
                let verifier = self.verifier.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let _ = verifier.refresh(&id).await;
                });
            }
            Event::Revoke(r) => self.add_revocation(r),
            Event::KeySet { provider, set } => match self.verifier.adopt(provider, set.clone()) {
                Ok(adopted) => {
                    tracing::debug!(%provider, adopted, "key set from the bus");
                }
                Err(e) => {
                    tracing::warn!(%provider, error = %e, "key set from the bus not adopted");
                }
            },
            // Delivered to subscribers by the bus; nothing of keygate's own changes.
            Event::App { .. } => {}
        }
    }

    /// Adds `state`'s revocations and adopts its key sets; returns the providers whose set
    /// is now at least as new as the shared one.
    pub fn install(&self, state: SharedState) -> HashSet<ProviderId> {
        for r in &state.revocations {
            self.add_revocation(r);
        }
        // Flushes first: a shared key set fetched before the last flush must not be adopted.
        for (provider, flush) in state.flushes {
            let _ = self.verifier.apply_flush(&provider, flush);
        }
        let mut adopted = HashSet::new();
        for (provider, set) in state.key_sets {
            match self.verifier.adopt(&provider, set) {
                Ok(_) => {
                    adopted.insert(provider);
                }
                Err(e) => tracing::debug!(%provider, error = %e, "shared key set not adopted"),
            }
        }
        adopted
    }

    /// Adds one revocation to what the verifier consults.
    pub fn add_revocation(&self, r: &Revocation) {
        match r {
            Revocation::Jti { jti, exp } => self.revocations.revoke_jti(jti, *exp),
            Revocation::Subject {
                tenant,
                sub,
                before,
                until,
            } => self
                .revocations
                .revoke_subject(tenant, sub, *before, *until),
            Revocation::Kid {
                tenant,
                provider,
                kid,
                until,
            } => self
                .revocations
                .revoke_kid(&ProviderId::new(tenant, provider), kid, *until),
            Revocation::Token { sha256, exp } => self.revocations.revoke_token(sha256, *exp),
            other => tracing::warn!(?other, "unknown revocation kind ignored"),
        }
    }

    /// Drops every verified token, installs `state`, then revalidates in the background
    /// every provider whose key set `state` did not bring.
    pub fn resync(&self, state: SharedState) {
        self.verifier.forget_verified_tokens();
        let adopted = self.install(state);
        let stale: Vec<ProviderId> = self
            .verifier
            .providers()
            .filter(|id| !adopted.contains(id))
            .collect();
        if stale.is_empty() {
            return;
        }
        let verifier = self.verifier.clone();
        tokio::spawn(async move {
            for id in stale {
                // Static sets refuse a refresh; failures keep the cached keys and show in status.
                let _ = verifier.refresh(&id).await;
            }
        });
    }

    /// Drops the revocations no token can still need, by the verifier's clock.
    pub fn prune_revocations(&self) {
        self.revocations.prune(self.verifier.clock().now());
    }

    /// Drops the revocations no token can still need, every minute, forever: a task of its
    /// own, ended by aborting it.
    pub async fn keep_pruning(&self) {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            let now = self.verifier.clock().now();
            self.revocations.prune(now);
            tracing::debug!(
                now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                left = self.revocations.len(),
                "revocations pruned"
            );
        }
    }
}

impl Apply for Member {
    fn apply(&self, envelope: &Envelope) {
        Member::apply(self, &envelope.event);
    }

    fn load(&self, state: SharedState) {
        self.install(state);
    }

    /// Drops every verified token, reloads revocations and the shared key sets, then
    /// revalidates every provider's keys in the background (one fetch per cluster, through
    /// the key exchange). A missed flush is thereby made good by a refetch, while keys stay
    /// in use if the IdP cannot be reached: a Redis wipe during an IdP outage must not turn
    /// into an outage of its own.
    fn resync(&self, state: SharedState) {
        Member::resync(self, state);
    }

    fn revocations(&self) -> Vec<Revocation> {
        self.revocations.list()
    }

    fn flushes(&self) -> Vec<(ProviderId, FlushId)> {
        self.verifier.flushes()
    }
}
