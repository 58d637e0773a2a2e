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

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use crate::verify::VerifiedToken;

const SHARDS: usize = 16;
/// Only the token's tail is hashed: it is the signature, unique per token, and hashing
/// 64 bytes instead of a whole kilobyte-long token keeps a hit cheap.
const HASHED_TAIL: usize = 64;

pub(crate) struct TokenCache {
    shards: Box<[Mutex<HashTable<Entry>>]>,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

/// What the verifier needs to decide whether a cached result still holds.
pub(crate) struct Cached {
    pub(crate) verified: Arc<VerifiedToken>,
    pub(crate) provider: usize,
    pub(crate) generation: u64,
    pub(crate) revocation_generation: u64,
    /// Unix seconds after which the token is expired (its `exp` plus leeway).
    pub(crate) valid_until: i64,
}

struct Entry {
    hash: u64,
    token: Box<str>,
    cached: Cached,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            per_shard,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn hash(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, HashTable<Entry>> {
        // Use the high bits for the shard; hashbrown uses the low bits within it.
        let idx = (hash >> 60) as usize % SHARDS;
        self.shards[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the verified token and its provider's index if `is_live` accepts the entry;
    /// removes the entry if not.
    pub(crate) fn get(
        &self,
        token: &str,
        is_live: impl FnOnce(&Cached) -> bool,
    ) -> Option<(Arc<VerifiedToken>, usize)> {
        let hash = self.hash(token);
        let mut shard = self.shard(hash);
        let found = shard.find_entry(hash, |e| e.hash == hash && *e.token == *token);
        let Ok(entry) = found else { return None };
        if is_live(&entry.get().cached) {
            let cached = &entry.get().cached;
            return Some((Arc::clone(&cached.verified), cached.provider));
        }
        entry.remove();
        None
    }

    /// Inserts a verified token; when the shard is full, dead entries go first, then one
    /// arbitrary entry.
    pub(crate) fn insert(&self, token: &str, cached: Cached, is_live: impl Fn(&Cached) -> bool) {
        let hash = self.hash(token);
        let mut shard = self.shard(hash);
        if let Ok(existing) = shard.find_entry(hash, |e| e.hash == hash && *e.token == *token) {
            existing.remove();
        }
        if shard.len() >= self.per_shard {
            shard.retain(|e| is_live(&e.cached));
        }
        if shard.len() >= self.per_shard {
            // Evict whichever entry the table yields first: cheap, and adequate because any
            // token can be re-verified.
            let victim = shard.iter().next().map(|e| (e.hash, e.token.clone()));
            if let Some((h, t)) = victim {
                if let Ok(e) = shard.find_entry(h, |e| e.hash == h && e.token == t) {
                    e.remove();
                }
            }
        }
        let entry = Entry {
            hash,
            token: token.into(),
            cached,
        };
        shard.insert_unique(hash, entry, |e| e.hash);
    }

    /// Drops every entry of one provider.
    pub(crate) fn purge_provider(&self, provider: usize) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|e| e.cached.provider != provider);
        }
    }

    /// The number of entries, dead ones included.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
