//! What an event does to a replica: the node's side of the bus ([`Apply`]), also used by
//! [`Node::invalidate`] for the events this node makes itself.

use std::collections::HashSet;

use keygate::{FlushId, ProviderId, Revocation};

use super::Node;
use crate::bus::{Apply, Envelope, Event, SharedState};

impl Node {
    /// Applies an invalidation to this replica only (see [`Node::invalidate`] for an event
    /// this node makes itself). A refresh runs in the background.
    pub(super) fn apply(&self, event: &Event) {
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
    fn install(&self, state: SharedState) -> HashSet<ProviderId> {
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

    fn add_revocation(&self, r: &Revocation) {
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
            other => tracing::warn!(?other, "unknown revocation kind ignored"),
        }
    }
}

impl Apply for Node {
    fn apply(&self, envelope: &Envelope) {
        Node::apply(self, &envelope.event);
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
        self.verifier.forget_verified_tokens();
        let adopted = self.install(state);
        let stale: Vec<ProviderId> = self
            .verifier
            .providers()
            .filter(|id| !adopted.contains(*id))
            .cloned()
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

    fn revocations(&self) -> Vec<Revocation> {
        self.revocations.list()
    }

    fn flushes(&self) -> Vec<(ProviderId, FlushId)> {
        self.verifier.flushes()
    }
}
