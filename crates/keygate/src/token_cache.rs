//! The verified-token cache: a bounded map from a token's exact text to its verified result.
//!
//! An entry records the key-set generation it was verified under and the revocation
//! generation at that time; a hit counts only while both are unchanged, the token has not
//! expired and the keys are still usable. So a key change, a flush or any revocation drops
//! the provider's entries at once, without a sweep. Dead entries are removed when met.
//!
//! Only verified tokens are inserted, so an attacker cannot fill the cache with garbage, and
//! a lookup always compares the whole token, so a hash collision cannot return another
//! token's claims.
//!
//! When a shard is full, an insert evicts by sampling, as Redis does: it looks at a few
//! entries from a random position and drops the first dead one it meets, or else the least
//! recently used of them, the one expiring first among equals. Recency is counted in inserts
//! into the shard, and a hit records it with a relaxed atomic store under the shard's read
//! lock, so hits wait only for writes to their shard, never for each other. Tokens seen once
//! thus age out while tokens that keep coming back stay: the cache converges on the hot set,
//! whatever filled it before. A sample without a dead entry also sweeps the shard for dead
//! entries, at most once per half a shard of inserts, so dead entries go before live ones at
//! an amortised cost of O(1).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use crate::verify::VerifiedToken;

/// The most shards a cache is cut into, to spread lock traffic over threads.
const SHARDS: usize = 16;
/// The least capacity worth a shard of its own: sampling needs a shard to hold a choice of
/// victims, and a token can only ever live in its own shard.
const MIN_SHARD_CAPACITY: usize = 64;
/// Only the token's tail is hashed: it is the signature, unique per token, and hashing
/// 64 bytes instead of a whole kilobyte-long token keeps a hit cheap.
const HASHED_TAIL: usize = 64;
/// How many entries an eviction compares. Redis samples 5; 8 follows true LRU more closely,
/// and costs little next to the verification that precedes every insert.
const SAMPLE: usize = 8;

/// A cache of `V`, the verified token in production; tests store plain values.
pub(crate) struct TokenCache<V = Arc<VerifiedToken>> {
    shards: Box<[RwLock<Shard<V>>]>,
    hasher: foldhash::fast::RandomState,
}

/// What the verifier needs to decide whether a cached result still holds.
pub(crate) struct Cached<V = Arc<VerifiedToken>> {
    pub(crate) verified: V,
    pub(crate) provider: usize,
    pub(crate) generation: u64,
    pub(crate) revocation_generation: u64,
    /// Unix seconds after which the token is expired (its `exp` plus leeway).
    pub(crate) valid_until: i64,
}

impl<V: Clone> TokenCache<V> {
    /// A cache holding at most `capacity` tokens.
    pub(crate) fn new(capacity: usize) -> Self {
        let count = (capacity / MIN_SHARD_CAPACITY).clamp(1, SHARDS);
        // Share the capacity out exactly, so the shards together never hold more.
        let shards = (0..count)
            .map(|i| {
                let share = capacity / count + usize::from(i < capacity % count);
                RwLock::new(Shard::new(share))
            })
            .collect();
        TokenCache {
            shards,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Returns the verified token and its provider's index if `is_live` accepts the entry;
    /// removes the entry if not.
    pub(crate) fn get(
        &self,
        token: &str,
        is_live: impl FnOnce(&Cached<V>) -> bool,
    ) -> Option<(V, usize)> {
        let hash = self.hash(token);
        let lock = self.shard(hash);
        let stamp = {
            let shard = read(lock);
            let entry = shard.table.find(hash, |e| e.matches(hash, token))?;
            if is_live(&entry.cached) {
                entry.touch(shard.tick);
                return Some((entry.cached.verified.clone(), entry.cached.provider));
            }
            entry.stamp
        };
        // Between the read lock and the write lock an insert may have replaced the dead
        // entry with a live one; the stamp tells them apart.
        let mut shard = write(lock);
        if let Ok(entry) = shard
            .table
            .find_entry(hash, |e| e.stamp == stamp && e.matches(hash, token))
        {
            entry.remove();
        }
        None
    }

    /// Inserts a verified token, replacing any entry for the same token. When the shard is
    /// full, a dead entry goes first, else a sampled least recently used one.
    pub(crate) fn insert(
        &self,
        token: &str,
        cached: Cached<V>,
        is_live: impl Fn(&Cached<V>) -> bool,
    ) {
        let hash = self.hash(token);
        write(self.shard(hash)).insert(hash, token, cached, &is_live);
    }

    /// Drops every entry of one provider.
    pub(crate) fn purge_provider(&self, provider: usize) {
        for lock in self.shards.iter() {
            write(lock).table.retain(|e| e.cached.provider != provider);
        }
    }

    /// Moves every entry to its provider's new index after the providers were reconfigured,
    /// dropping the entries whose provider `new_index` no longer knows.
    pub(crate) fn reindex(&self, new_index: impl Fn(usize) -> Option<usize>) {
        for lock in self.shards.iter() {
            write(lock)
                .table
                .retain(|e| match new_index(e.cached.provider) {
                    Some(idx) => {
                        e.cached.provider = idx;
                        true
                    }
                    None => false,
                });
        }
    }

    /// The number of entries, dead ones included.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|lock| read(lock).table.len()).sum()
    }

    fn hash(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // Bits 32 and up choose the shard: hashbrown takes the bucket from the low bits and
        // its tag from the top seven, which thus stay evenly spread within a shard.
        let idx = (hash >> 32) as usize % self.shards.len();
        &self.shards[idx]
    }
}

/// One lock's worth of entries.
struct Shard<V> {
    table: HashTable<Entry<V>>,
    /// This shard's part of the cache's capacity.
    capacity: usize,
    /// Inserts into this shard so far: the clock that recency is told by. Only writers move
    /// it, so a hit reads it under the read lock.
    tick: u64,
    /// `tick` at the last sweep for dead entries, if there was one.
    swept_at: Option<u64>,
}

struct Entry<V> {
    hash: u64,
    token: Box<str>,
    cached: Cached<V>,
    /// The shard's `tick` when this entry was inserted, which tells it apart from a later
    /// entry for the same token.
    stamp: u64,
    /// The shard's `tick` at the entry's insert or latest hit. Atomic so that a hit, which
    /// holds only the read lock, can record itself.
    last_used: AtomicU64,
}

impl<V> Shard<V> {
    fn new(capacity: usize) -> Self {
        Shard {
            table: HashTable::new(),
            capacity,
            tick: 0,
            swept_at: None,
        }
    }

    fn insert(
        &mut self,
        hash: u64,
        token: &str,
        cached: Cached<V>,
        is_live: &impl Fn(&Cached<V>) -> bool,
    ) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.table.find_mut(hash, |e| e.matches(hash, token)) {
            entry.cached = cached;
            entry.stamp = tick;
            *entry.last_used.get_mut() = tick;
            return;
        }
        if self.table.len() >= self.capacity {
            self.evict(is_live);
        }
        let entry = Entry {
            hash,
            token: token.into(),
            cached,
            stamp: tick,
            last_used: AtomicU64::new(tick),
        };
        self.table.insert_unique(hash, entry, |e| e.hash);
    }

    /// Makes room for one entry in a full shard.
    fn evict(&mut self, is_live: &impl Fn(&Cached<V>) -> bool) {
        // Occupied buckets lie where their hashes put them, so the ones following a random
        // bucket are a random sample of the entries: no list to keep in recency order, so a
        // hit needs no write lock.
        let buckets = self.table.num_buckets();
        let start = fastrand::usize(..buckets);
        let mut victim: Option<(usize, (u64, i64))> = None;
        let mut sampled = 0;
        for index in (start..buckets).chain(0..start) {
            let Some(entry) = self.table.get_bucket(index) else {
                continue;
            };
            if !is_live(&entry.cached) {
                self.remove_bucket(index);
                return;
            }
            let age = (
                entry.last_used.load(Ordering::Relaxed),
                entry.cached.valid_until,
            );
            if victim.is_none_or(|(_, oldest)| age < oldest) {
                victim = Some((index, age));
            }
            sampled += 1;
            if sampled == SAMPLE {
                break;
            }
        }
        // The sample saw no dead entry, but others may hide elsewhere; a sweep finds them.
        let interval = (self.capacity as u64 / 2).max(1);
        if self.swept_at.is_none_or(|at| self.tick - at >= interval) {
            self.swept_at = Some(self.tick);
            self.table.retain(|e| is_live(&e.cached));
            if self.table.len() < self.capacity {
                return;
            }
            // The sweep removed nothing, so the victim's bucket still holds it.
        }
        if let Some((index, _)) = victim {
            self.remove_bucket(index);
        }
    }

    fn remove_bucket(&mut self, index: usize) {
        if let Ok(entry) = self.table.get_bucket_entry(index) {
            entry.remove();
        }
    }
}

impl<V> Entry<V> {
    fn matches(&self, hash: u64, token: &str) -> bool {
        self.hash == hash && *self.token == *token
    }

    fn touch(&self, tick: u64) {
        // Store only on a change, so threads hitting one hot token between inserts share its
        // cache line instead of passing it back and forth.
        if self.last_used.load(Ordering::Relaxed) != tick {
            self.last_used.store(tick, Ordering::Relaxed);
        }
    }
}

fn read<V>(lock: &RwLock<Shard<V>>) -> RwLockReadGuard<'_, Shard<V>> {
    // A panic under the lock leaves the table consistent (hashbrown is panic-safe) and at
    // worst an entry out of date, which the checks on every hit catch.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<V>(lock: &RwLock<Shard<V>>) -> RwLockWriteGuard<'_, Shard<V>> {
    // See `read` on poisoning.
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unix time the tests' liveness checks judge by.
    const NOW: i64 = 1_000_000;

    fn cached(value: u32, valid_until: i64) -> Cached<u32> {
        Cached {
            verified: value,
            provider: 0,
            generation: 1,
            revocation_generation: 1,
            valid_until,
        }
    }

    fn live(c: &Cached<u32>) -> bool {
        c.valid_until > NOW
    }

    fn insert_live(cache: &TokenCache<u32>, token: &str) {
        cache.insert(token, cached(0, NOW + 60), live);
    }

    #[test]
    fn a_hit_returns_the_entry_and_a_dead_entry_is_a_miss_that_goes() {
        let cache = TokenCache::new(100);
        cache.insert("a.b.c", cached(7, NOW + 60), live);
        assert_eq!(cache.get("a.b.c", live), Some((7, 0)));
        assert_eq!(cache.get("a.b.x", live), None);
        assert_eq!(cache.get("a.b.c", |_| false), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn inserting_a_token_again_replaces_its_entry() {
        let cache = TokenCache::new(100);
        cache.insert("a.b.c", cached(1, NOW + 60), live);
        cache.insert("a.b.c", cached(2, NOW + 60), live);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("a.b.c", live), Some((2, 0)));
    }

    #[test]
    fn purging_a_provider_keeps_the_others() {
        let cache = TokenCache::new(1_000);
        for i in 0..100 {
            let mut c = cached(i, NOW + 60);
            c.provider = (i % 2) as usize;
            cache.insert(&format!("token-{i}"), c, live);
        }
        cache.purge_provider(1);
        assert_eq!(cache.len(), 50);
        assert!(cache.get("token-0", live).is_some());
        assert!(cache.get("token-1", live).is_none());
    }

    #[test]
    fn capacity_is_never_exceeded() {
        for capacity in [0, 1, 7, 63, 64, 100, 1_000, 1_025] {
            let cache = TokenCache::new(capacity);
            for i in 0..3 * capacity + 10 {
                insert_live(&cache, &format!("token-{i}"));
                assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            }
            // Under `MIN_SHARD_CAPACITY` there is one shard, so it ends up exactly full.
            if capacity < MIN_SHARD_CAPACITY {
                assert_eq!(cache.len(), capacity);
            }
        }
    }

    #[test]
    fn dead_entries_are_evicted_before_live_ones() {
        // One shard, so which entries compete is known. The dead entries are the most
        // recently inserted: recency alone would evict the live ones first.
        const CAPACITY: usize = 48;
        let cache = TokenCache::new(CAPACITY);
        for i in 0..CAPACITY / 2 {
            insert_live(&cache, &format!("old-live-{i}"));
        }
        for i in 0..CAPACITY / 2 {
            cache.insert(&format!("expired-{i}"), cached(0, NOW - 1), live);
        }
        for i in 0..CAPACITY / 2 {
            insert_live(&cache, &format!("new-live-{i}"));
        }
        assert_eq!(cache.len(), CAPACITY);
        for i in 0..CAPACITY / 2 {
            for token in [format!("old-live-{i}"), format!("new-live-{i}")] {
                assert!(cache.get(&token, live).is_some(), "{token} was evicted");
            }
        }
    }

    #[test]
    fn a_hit_keeps_an_entry_over_ones_used_less_recently() {
        const CAPACITY: usize = 48;
        let cache = TokenCache::new(CAPACITY);
        for i in 0..CAPACITY {
            insert_live(&cache, &format!("token-{i}"));
        }
        assert!(cache.get("token-0", live).is_some());
        // Until `SAMPLE` entries are at least as recent as it, every sample holds an older
        // entry, so the oldest-inserted entry survives these inserts because it was hit.
        for i in 0..SAMPLE - 3 {
            insert_live(&cache, &format!("new-{i}"));
        }
        assert!(cache.get("token-0", live).is_some());
    }

    #[test]
    fn the_hot_set_displaces_a_full_cache_of_cold_tokens() {
        // The pattern of the load run that found the bug: a cache full of tokens never seen
        // again, then a hot set a quarter of its size, each request of which is followed by a
        // token seen only once. Evicting whichever entry the table yields first kept the cold
        // entries forever while the rest evicted each other, and the hot set hardly hit.
        const CAPACITY: usize = 1_024;
        const ROUNDS: usize = 20;
        let cache = TokenCache::new(CAPACITY);
        for i in 0..CAPACITY {
            insert_live(&cache, &format!("cold-{i}"));
        }
        let hot: Vec<String> = (0..CAPACITY / 4).map(|i| format!("hot-{i}")).collect();
        let mut once = 0;
        let mut hits = 0;
        for round in 0..ROUNDS {
            for token in &hot {
                if cache.get(token, live).is_some() {
                    // Judge the state the cache converges on, after half the rounds.
                    if round >= ROUNDS / 2 {
                        hits += 1;
                    }
                } else {
                    insert_live(&cache, token);
                }
                insert_live(&cache, &format!("once-{once}"));
                once += 1;
            }
            assert!(cache.len() <= CAPACITY);
        }
        let requests = (ROUNDS - ROUNDS / 2) * hot.len();
        assert!(
            hits * 100 > requests * 80,
            "hot set hit {hits} of {requests} requests"
        );
    }

    #[test]
    fn concurrent_hits_and_inserts_keep_the_bound() {
        const CAPACITY: usize = 256;
        let cache = TokenCache::new(CAPACITY);
        std::thread::scope(|s| {
            for t in 0..4 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..2_000 {
                        let token = format!("t{t}-{}", i % 100);
                        if cache.get(&token, live).is_none() {
                            insert_live(cache, &token);
                        }
                        insert_live(cache, &format!("t{t}-once-{i}"));
                    }
                });
            }
        });
        assert!(cache.len() <= CAPACITY);
    }
}
