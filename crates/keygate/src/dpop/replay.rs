//! [`MemoryReplayGuard`]: the replay store of a single node.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use super::{ReplayGuard, ReplayUnavailable};
use crate::clock::unix_millis;
use crate::fetch::BoxFuture;

/// The default capacity of a [`MemoryReplayGuard`], in proofs.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;

/// Remembers seen proofs in this process's memory: right for one node, wrong for a fleet
/// (another replica would accept a proof this one saw; share a store such as Redis instead).
///
/// Holds at most `capacity` live entries. Expired entries are dropped as new ones come in. A
/// guard that is full of live entries refuses to answer ([`ReplayUnavailable`]) rather than
/// forget one, since a forgotten proof could be replayed.
pub struct MemoryReplayGuard {
    capacity: usize,
    state: Mutex<State>,
    /// The whole second of the clock's time at the first proof: this process remembers
    /// nothing from before.
    since: OnceLock<SystemTime>,
}

struct State {
    /// Key to expiry, in unix milliseconds of the clock passed to `first_use`.
    seen: HashMap<[u8; 32], u64>,
    /// Inserts left before the next sweep for expired entries.
    until_sweep: usize,
}

impl MemoryReplayGuard {
    /// A guard holding at most `capacity` live proofs (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        MemoryReplayGuard {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                seen: HashMap::new(),
                until_sweep: 0,
            }),
            since: OnceLock::new(),
        }
    }

    /// This guard vouches for proofs issued (`iat`) from the whole second of `start` on: the
    /// moment this process began remembering, e.g. its start by the verifier's clock. Without
    /// it, the second of the first proof checked counts, which refuses a proof made in an
    /// earlier second and checked just after it.
    #[must_use]
    pub fn remembering_from(self, start: SystemTime) -> Self {
        let _ = self.since.set(whole_second(start));
        self
    }

    /// The number of proofs held, live or expired but not yet swept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no proof is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most live proofs held at once.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records `key` until `now + ttl`; whether it was new.
    fn record(
        &self,
        key: [u8; 32],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, ReplayUnavailable> {
        let now_ms = unix_millis(now);
        let expires = now
            .checked_add(ttl)
            .map_or(u64::MAX, unix_millis)
            .max(now_ms.saturating_add(1));
        let mut state = self.lock();
        if let Some(&until) = state.seen.get(&key)
            && until > now_ms
        {
            return Ok(false);
        }
        // Sweeping costs a pass over the map, so it runs once per `len` inserts (amortised
        // O(1) per insert), and at once when the map is full.
        if state.until_sweep == 0 || state.seen.len() >= self.capacity {
            state.seen.retain(|_, &mut until| until > now_ms);
            state.until_sweep = state.seen.len().max(64);
        }
        if state.seen.len() >= self.capacity && !state.seen.contains_key(&key) {
            return Err(ReplayUnavailable(format!(
                "in-memory replay store full ({} live proofs)",
                self.capacity
            )));
        }
        state.until_sweep -= 1;
        state.seen.insert(key, expires);
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The map is consistent between statements, so a panic elsewhere leaves it usable.
        crate::refresh::lock(&self.state)
    }
}

fn whole_second(at: SystemTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix_millis(at) / 1000)
}

impl Default for MemoryReplayGuard {
    /// A guard holding at most [`DEFAULT_REPLAY_CAPACITY`] proofs.
    fn default() -> Self {
        MemoryReplayGuard::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl fmt::Debug for MemoryReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayGuard")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn first_use(
        &self,
        key: [u8; 32],
        now: SystemTime,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, ReplayUnavailable>> {
        // Whole seconds: a proof's `iat` usually is, and a client's first proof after a start
        // was made in that second at the earliest. A replay of a proof made in the very
        // second of a restart, before it, is the one case this lets through.
        self.since
            .get_or_init(|| SystemTime::UNIX_EPOCH + Duration::from_secs(unix_millis(now) / 1000));
        let answer = self.record(key, now, ttl);
        Box::pin(std::future::ready(answer))
    }

    /// The first proof's second: proofs issued before this process began remembering may
    /// have been used on the process before it.
    fn remembers_since(&self) -> Option<SystemTime> {
        self.since.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    }

    #[tokio::test]
    async fn a_key_is_new_once_per_ttl() {
        let guard = MemoryReplayGuard::default();
        let ttl = Duration::from_secs(120);
        assert!(guard.first_use(key(1), at(T0), ttl).await.unwrap());
        assert!(!guard.first_use(key(1), at(T0), ttl).await.unwrap());
        assert!(!guard.first_use(key(1), at(T0 + 119), ttl).await.unwrap());
        assert!(guard.first_use(key(2), at(T0 + 1), ttl).await.unwrap());
        // Expired: new again.
        assert!(guard.first_use(key(1), at(T0 + 120), ttl).await.unwrap());
        assert!(!guard.first_use(key(1), at(T0 + 200), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_guard_refuses_rather_than_forgets() {
        let guard = MemoryReplayGuard::new(3);
        let ttl = Duration::from_secs(10);
        for i in 0..3 {
            assert!(guard.first_use(key(i), at(T0), ttl).await.unwrap());
        }
        let full = guard.first_use(key(3), at(T0 + 5), ttl).await;
        assert!(matches!(full, Err(ReplayUnavailable(_))), "{full:?}");
        // Every live entry is still remembered.
        for i in 0..3 {
            assert!(!guard.first_use(key(i), at(T0 + 5), ttl).await.unwrap());
        }
        // Once they expire, they make room.
        assert!(guard.first_use(key(3), at(T0 + 10), ttl).await.unwrap());
        assert!(guard.len() <= 3);
        assert!(!guard.first_use(key(3), at(T0 + 11), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let guard = MemoryReplayGuard::new(10_000);
        let ttl = Duration::from_secs(1);
        for i in 0..1_000 {
            assert!(
                guard
                    .first_use(key(i), at(T0 + u64::from(i)), ttl)
                    .await
                    .unwrap()
            );
        }
        // Each entry lives one second, so the map never holds much more than a sweep's worth.
        assert!(guard.len() < 200, "{}", guard.len());
    }

    #[test]
    fn concurrent_first_uses_of_one_key_have_one_winner() {
        let guard = Arc::new(MemoryReplayGuard::default());
        let winners = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..50 {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let guard = Arc::clone(&guard);
                        let winners = Arc::clone(&winners);
                        tokio::spawn(async move {
                            let first = guard
                                .first_use(key(round), at(T0), Duration::from_secs(60))
                                .await
                                .unwrap();
                            if first {
                                winners.fetch_add(1, Ordering::SeqCst);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                assert_eq!(winners.swap(0, Ordering::SeqCst), 1, "round {round}");
            }
        });
    }
}
