//! The key exchange over the log: a replica about to fetch a provider's keys takes a peer's
//! fresh set (from the log or Redis) or waits for the peer holding the fetch lease; a fetched
//! set goes out on the log.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use ::redis::aio::MultiplexedConnection;
use futures_util::future::BoxFuture;
use keygate::{FlushId, KeyExchange, ProviderId, PublishedKeySet};

use super::RedisBus;
use crate::{Bus, Envelope, Event};

/// Deletes a fetch lease if this replica still holds it.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl RedisBus {
    pub(super) fn note_key_set(&self, provider: &ProviderId, set: &PublishedKeySet) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        // The log's order is the truth: a set under another flush replaces the held one
        // whatever the times say (a flush came between them).
        let newer = latest
            .get(provider)
            .is_none_or(|held| held.flush != set.flush || held.fetched_at < set.fetched_at);
        if newer {
            latest.insert(provider.clone(), set.clone());
            drop(latest);
            self.latest_changed.send_modify(|v| *v += 1);
        }
    }
}

/// The key exchange over the log.
pub(super) struct Exchange {
    pub(super) bus: Arc<RedisBus>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").finish_non_exhaustive()
    }
}

impl Exchange {
    fn newer(
        &self,
        id: &ProviderId,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<PublishedKeySet> {
        let now = self.bus.clock.now();
        self.bus
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|s| {
                s.flush.as_ref() == flush
                    && held.is_none_or(|h| s.fetched_at > h)
                    && s.fresh_until > now
            })
            .cloned()
    }

    /// The provider's set as Redis keeps it (the last one published), if it is newer than
    /// `held`, fetched under `flush` and still fresh; noted as the newest seen.
    async fn shared_set(
        &self,
        conn: &mut MultiplexedConnection,
        id: &ProviderId,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<PublishedKeySet> {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(&self.bus.names.keysets)
            .arg(id.to_string())
            .query_async(conn)
            .await
            .ok()?;
        match self.bus.decode_member(&stored?) {
            Ok(Envelope {
                event: Event::KeySet { provider, set },
                ..
            }) if provider == *id => {
                self.bus.note_key_set(&provider, &set);
                self.newer(id, held, flush)
            }
            Ok(_) => {
                self.bus.reject("state");
                None
            }
            Err(e) => {
                self.bus.reject(e.reason());
                None
            }
        }
    }

    /// The fetch lease of `id` under `flush`: after a flush, the replicas race for a lease of
    /// their own, never waiting for a fetch that began before it.
    fn lease(&self, id: &ProviderId, flush: Option<&FlushId>) -> String {
        match flush {
            Some(flush) => format!("{}{id}#{flush}", self.bus.names.lease),
            None => format!("{}{id}", self.bus.names.lease),
        }
    }
}

impl KeyExchange for Exchange {
    fn before_fetch<'a>(
        &'a self,
        id: &'a ProviderId,
        held: Option<SystemTime>,
        flush: Option<&'a FlushId>,
    ) -> BoxFuture<'a, Option<PublishedKeySet>> {
        Box::pin(async move {
            // What the log brought is good even before the bus is up (loading shared state
            // at start applies flushes, whose refetch finds the shared set here).
            if let Some(set) = self.newer(id, held, flush) {
                return Some(set);
            }
            if !self.bus.up.load(Ordering::Acquire) {
                return None;
            }
            let mut changed = self.bus.latest_changed.subscribe();
            let mut conn = self.bus.connection().await.ok()?;
            let lease_ms = u64::try_from(self.bus.settings.fetch_lease.as_millis()).unwrap_or(5000);
            let lease = self.lease(id, flush);
            let won: Option<String> = redis::cmd("SET")
                .arg(&lease)
                .arg(&*self.bus.origin)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut conn)
                .await
                .ok()?;
            if won.is_some() {
                // A peer may have published its set and released the lease between our look
                // at the log and now, before our tail read it: the set is in Redis already.
                let shared = self.shared_set(&mut conn, id, held, flush).await;
                if shared.is_some() {
                    let _: Result<i64, _> = self
                        .bus
                        .release
                        .key(&lease)
                        .arg(&*self.bus.origin)
                        .invoke_async(&mut conn)
                        .await;
                }
                return shared;
            }
            // A lease this replica still holds from an earlier fetch is its own to use.
            let holder: Option<String> = redis::cmd("GET")
                .arg(&lease)
                .query_async(&mut conn)
                .await
                .ok()?;
            if holder.as_deref() == Some(&*self.bus.origin) {
                return None;
            }
            // A peer is fetching: wait for its set, but never longer than its lease.
            let wait = tokio::time::timeout(self.bus.settings.fetch_lease, async {
                loop {
                    if let Some(set) = self.newer(id, held, flush) {
                        return Some(set);
                    }
                    if changed.changed().await.is_err() {
                        return None;
                    }
                }
            });
            wait.await.ok().flatten()
        })
    }

    fn fetched(&self, id: &ProviderId, set: &PublishedKeySet) {
        let bus = Arc::clone(&self.bus);
        let lease = self.lease(id, set.flush.as_ref());
        let event = Event::KeySet {
            provider: id.clone(),
            set: set.clone(),
        };
        let id = id.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.publish(event).await {
                tracing::warn!(provider = %id, error = %e, "could not share a fetched key set");
            }
            // The set is out: the next fetch of this provider, by anyone, needs no waiting.
            if let Ok(mut conn) = bus.connection().await {
                let _: Result<i64, _> = bus
                    .release
                    .key(lease)
                    .arg(&*bus.origin)
                    .invoke_async(&mut conn)
                    .await;
            }
        });
    }
}
