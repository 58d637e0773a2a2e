//! Hashed, scoped admin API keys.
//!
//! The config file holds only a PBKDF2 hash of each admin key (a PHC-style string,
//! [`KeyHash`]); the secret itself is given to the operator once, by `keygate admin
//! new-key`, and presented on every admin request. A [`KeyRing`] answers "which key, if
//! any, is this secret?".
//!
//! PBKDF2 is slow on purpose, so that a leaked config file does not hand out the keys, and a
//! request cannot say which key it claims to be. Checking a secret therefore means one
//! PBKDF2 run per configured key. The ring keeps that cost off the hot path and bounded
//! under attack: known secrets and recently refused ones are remembered by their SHA-256
//! digest, and the PBKDF2 work that remains runs on the blocking pool, one check at a time,
//! so a flood of wrong keys occupies at most one core.
//!
//! On top of that, [`KeyRing::authenticate_from`] counts failures per client address (see
//! `apikey/limit.rs` and [`FailureLimit`]): an address that presents too many wrong secrets
//! is refused for a while, before any hashing and whatever it presents.
//!
//! The hash and secret format live in `hash.rs`, the scopes in `scope.rs`; this module holds
//! the keys and the ring that checks them.

mod hash;
mod limit;
mod scope;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest::{SHA256, digest};
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub(crate) use hash::random_bytes;
pub use hash::{
    BadKeyHash, DEFAULT_ITERATIONS, KeyHash, MAX_ITERATIONS, MIN_ITERATIONS, generate_secret,
    hash_secret, hash_secret_with_iterations,
};
use limit::{Client, Limiter};
pub use limit::{DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURES, FailureLimit, MAX_TRACKED_CLIENTS};
pub use scope::{Scope, UnknownScope};

/// The longest secret a [`KeyRing`] will look at. Generated secrets are 46 bytes.
pub const MAX_SECRET_BYTES: usize = 512;

/// One admin API key: its name, the hash of its secret, and what it may do.
#[derive(Clone)]
pub struct ApiKey {
    /// The key's name, for logs and audit records. Not secret.
    pub id: String,
    /// The hash of the key's secret.
    pub hash: KeyHash,
    /// What the key is allowed to do.
    pub scopes: Vec<Scope>,
}

/// The configured admin keys, the caches that keep checking them cheap, and the per-address
/// failure counts that lock out brute force.
///
/// Cloning is cheap and clones share the caches and counts.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<RingInner>,
}

/// Why [`KeyRing::authenticate_from`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// The secret is no key's. `locked_out` is set when this failure was the one that locked
    /// the client's address out.
    UnknownKey {
        /// Whether this failure locked the address out.
        locked_out: bool,
    },
    /// The client's address failed too often recently; nothing it presented was checked.
    TooManyFailures {
        /// How long the lockout lasts from now.
        retry_after: Duration,
    },
}

impl ApiKey {
    /// Whether this key may do `scope`.
    #[must_use]
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring of `keys` with the default [`FailureLimit`]. With no keys, every secret is
    /// refused.
    #[must_use]
    pub fn new(keys: Vec<ApiKey>) -> Self {
        KeyRing::with_failure_limit(keys, FailureLimit::default())
    }

    /// A ring of `keys` that locks out an address after `limit` failures.
    #[must_use]
    pub fn with_failure_limit(keys: Vec<ApiKey>, limit: FailureLimit) -> Self {
        KeyRing {
            inner: Arc::new(RingInner {
                keys: ArcSwap::from_pointee(keys.into_iter().map(Arc::new).collect()),
                known: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashSet::new()),
                pbkdf2: Semaphore::new(1),
                pbkdf2_checks: AtomicU64::new(0),
                limiter: Limiter::new(limit),
            }),
        }
    }

    /// Replaces the keys (a configuration reload), in every clone of this ring at once. The
    /// memory of known and refused secrets starts afresh with them; the failure counts per
    /// address stay, so a reload does not lift a lockout.
    pub fn replace_keys(&self, keys: Vec<ApiKey>) {
        let inner = &self.inner;
        // Under both memory locks (in their one order, known then refused), so no answer
        // computed against the old keys is remembered for the new ones.
        let mut known = lock(&inner.known);
        let mut refused = lock(&inner.refused);
        inner
            .keys
            .store(Arc::new(keys.into_iter().map(Arc::new).collect()));
        known.clear();
        refused.clear();
    }

    /// The failure limit in force.
    #[must_use]
    pub fn failure_limit(&self) -> FailureLimit {
        self.inner.limiter.limit()
    }

    /// How long `client` remains locked out for too many failures, if it is.
    #[must_use]
    pub fn lockout(&self, client: IpAddr) -> Option<Duration> {
        self.inner
            .limiter
            .lockout(Client::of(client), Instant::now())
    }

    /// The key whose secret is `presented`, for a request from `client`, counting a wrong
    /// secret against the client's address.
    ///
    /// A locked-out address is refused before anything is looked up or hashed, whether or
    /// not the secret is right (so the lockout neither burns CPU nor tells a right guess
    /// from a wrong one). The lock is checked again once this request's turn at PBKDF2 comes,
    /// so concurrent guesses from one address cannot all slip in before the first ones fail.
    ///
    /// # Errors
    /// [`Denied::TooManyFailures`] while the address is locked out, [`Denied::UnknownKey`]
    /// for a secret that is no key's.
    pub async fn authenticate_from(
        &self,
        client: IpAddr,
        presented: &str,
    ) -> Result<Arc<ApiKey>, Denied> {
        let client = Client::of(client);
        let limiter = &self.inner.limiter;
        let locked = || {
            limiter
                .lockout(client, Instant::now())
                .map(|retry_after| Denied::TooManyFailures { retry_after })
        };
        if let Some(denied) = locked() {
            return Err(denied);
        }
        // Held until the failure is counted, so the next request of this address that gets
        // the permit sees the count this one leaves.
        let _permit;
        let found = match self.cheap_answer(presented) {
            Some(answer) => answer,
            None => {
                _permit = self.inner.pbkdf2.acquire().await.ok();
                if let Some(denied) = locked() {
                    return Err(denied);
                }
                self.check(presented).await
            }
        };
        found.ok_or_else(|| Denied::UnknownKey {
            locked_out: limiter.fail(client, Instant::now()),
        })
    }

    /// Whether the ring holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.keys.load().is_empty()
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.keys.load().len()
    }

    /// The key whose secret is `presented`, if any.
    ///
    /// Counts nothing against any client: the admin API uses
    /// [`authenticate_from`](Self::authenticate_from).
    ///
    /// A secret seen before is answered from memory by its SHA-256 digest. Otherwise every
    /// key's hash is checked (all of them, so the time taken does not tell which key came
    /// close), on the blocking pool and one secret at a time.
    pub async fn authenticate(&self, presented: &str) -> Option<Arc<ApiKey>> {
        if let Some(answer) = self.cheap_answer(presented) {
            return answer;
        }
        // Only one PBKDF2 check at a time: a flood of wrong secrets then costs one core at
        // most, and the other requests wait here rather than pile onto the blocking pool.
        let _permit = self.inner.pbkdf2.acquire().await.ok()?;
        self.check(presented).await
    }

    /// The answer for `presented` when it needs no hashing: a secret that cannot be a key's,
    /// or one remembered from before.
    fn cheap_answer(&self, presented: &str) -> Option<Option<Arc<ApiKey>>> {
        if presented.is_empty() || presented.len() > MAX_SECRET_BYTES || self.is_empty() {
            return Some(None);
        }
        self.inner.remembered(&fingerprint(presented.as_bytes()))
    }

    /// Runs PBKDF2 for `presented` against every key and remembers the answer. The caller
    /// holds the PBKDF2 permit.
    async fn check(&self, presented: &str) -> Option<Arc<ApiKey>> {
        let fingerprint = fingerprint(presented.as_bytes());
        // Whoever held the permit before may have just checked this very secret.
        if let Some(answer) = self.inner.remembered(&fingerprint) {
            return answer;
        }
        // One set of keys throughout, even if a reload replaces them meanwhile: the index
        // found is into this set, and it is remembered only while the set is in force.
        let keys = self.inner.keys.load_full();
        let inner = Arc::clone(&self.inner);
        let checked = Arc::clone(&keys);
        let secret = presented.as_bytes().to_vec();
        let found = tokio::task::spawn_blocking(move || inner.check_all(&checked, &secret))
            .await
            .ok()?;
        self.inner.remember_for(&keys, fingerprint, found);
        found.map(|index| Arc::clone(&keys[index]))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner.keys.load().iter())
            .finish()
    }
}

/// How many refused digests are remembered before the set is cleared. Each entry is 32
/// bytes; clearing rather than evicting keeps the code trivial, and a flood that fills the
/// set is paying one PBKDF2 run per entry anyway.
const REFUSED_CAPACITY: usize = 4096;

/// The SHA-256 digest of a presented secret: the cache key. It stands in for the secret in
/// memory, and, unlike the secret, is not worth brute-forcing for a secret of 256 bits.
type Fingerprint = [u8; 32];

struct RingInner {
    /// Replaced whole by a reload ([`KeyRing::replace_keys`]), under the memory locks.
    keys: ArcSwap<Box<[Arc<ApiKey>]>>,
    /// Digests of secrets that matched a key, and the key's index. At most one entry per
    /// key: each key has exactly one secret.
    known: Mutex<HashMap<Fingerprint, usize>>,
    /// Digests of secrets that matched no key.
    refused: Mutex<HashSet<Fingerprint>>,
    /// One PBKDF2 check at a time.
    pbkdf2: Semaphore,
    /// How many secrets went through PBKDF2, for the tests of the caches.
    pbkdf2_checks: AtomicU64,
    /// Failures per client address.
    limiter: Limiter,
}

impl RingInner {
    /// The cached answer for `fingerprint`: `Some(Some(key))` known, `Some(None)` refused,
    /// `None` never seen.
    fn remembered(&self, fingerprint: &Fingerprint) -> Option<Option<Arc<ApiKey>>> {
        let known = lock(&self.known);
        if let Some(&index) = known.get(fingerprint) {
            // Read under the lock a reload swaps the keys under: the index is into these.
            return self.keys.load().get(index).map(|key| Some(Arc::clone(key)));
        }
        drop(known);
        lock(&self.refused).contains(fingerprint).then_some(None)
    }

    #[cfg(test)]
    fn remember(&self, fingerprint: Fingerprint, found: Option<usize>) {
        self.remember_for(&self.keys.load_full(), fingerprint, found);
    }

    /// Remembers the answer for `fingerprint` found against `keys`, unless a reload has
    /// replaced them since.
    fn remember_for(
        &self,
        keys: &Arc<Box<[Arc<ApiKey>]>>,
        fingerprint: Fingerprint,
        found: Option<usize>,
    ) {
        let mut known = lock(&self.known);
        if !Arc::ptr_eq(keys, &self.keys.load()) {
            return;
        }
        match found {
            Some(index) => {
                if known.len() < keys.len() {
                    known.insert(fingerprint, index);
                }
            }
            None => {
                // `known` stays locked: a reload cannot slip in before this insert.
                let mut refused = lock(&self.refused);
                if refused.len() >= REFUSED_CAPACITY {
                    refused.clear();
                }
                refused.insert(fingerprint);
            }
        }
    }

    /// The index of the first key `secret` matches. Every key is checked whatever the
    /// outcome, so the time taken is the same for a hit on the first key and a miss.
    fn check_all(&self, keys: &[Arc<ApiKey>], secret: &[u8]) -> Option<usize> {
        self.pbkdf2_checks.fetch_add(1, Ordering::Relaxed);
        let mut found = None;
        for (index, key) in keys.iter().enumerate() {
            if key.hash.verify(secret) && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

fn fingerprint(secret: &[u8]) -> Fingerprint {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, secret).as_ref());
    out
}

/// Locks a cache. A panic while holding one cannot leave it inconsistent (every update is a
/// single insert or clear), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
