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

mod limit;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::pbkdf2::{self, PBKDF2_HMAC_SHA256};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64_simd::URL_SAFE_NO_PAD;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use limit::{Client, Limiter};
pub use limit::{DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURES, FailureLimit, MAX_TRACKED_CLIENTS};

/// The PBKDF2 iteration count of new hashes.
pub const DEFAULT_ITERATIONS: u32 = 100_000;
/// The smallest iteration count a [`KeyHash`] may carry.
pub const MIN_ITERATIONS: u32 = 10_000;
/// The largest iteration count a [`KeyHash`] may carry: more would let a config file make
/// every admin request cost seconds.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// The longest secret a [`KeyRing`] will look at. Generated secrets are 46 bytes.
pub const MAX_SECRET_BYTES: usize = 512;

/// Something an admin key may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Drop a provider's cached key set and verified tokens.
    JwksFlush,
    /// Refetch a provider's key set now.
    JwksRefresh,
    /// Revoke tokens, subjects or signing keys.
    TokensRevoke,
    /// Read the status of providers and the bus.
    StatusRead,
    /// Publish application events (`POST /admin/v1/events`).
    EventsPublish,
    /// Follow application events (`GET /admin/v1/events/stream`).
    EventsRead,
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{name}`; valid scopes: {}", valid_scopes())]
pub struct UnknownScope {
    name: String,
}

/// Why a string is not a [`KeyHash`]. The messages never repeat the string beyond its
/// algorithm prefix: a hash is not a secret, but it is still offline brute-force material
/// that has no business in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadKeyHash {
    /// It does not start with `$pbkdf2-sha256$`.
    #[error("not a `{PREFIX}` hash; expected {SHAPE}")]
    Algorithm,
    /// It does not have exactly the three `$`-separated fields after the prefix.
    #[error("wrong number of `$`-separated fields; expected {SHAPE}")]
    Fields,
    /// The iteration field is not `i=<N>` with N in range.
    #[error(
        "the iteration count must be `i=<N>` with N from {MIN_ITERATIONS} to {MAX_ITERATIONS}; \
         expected {SHAPE}"
    )]
    Iterations,
    /// The salt is not base64url without padding, or is shorter than 16 bytes or longer
    /// than 64.
    #[error(
        "the salt must be {MIN_SALT_BYTES} to {MAX_SALT_BYTES} bytes, base64url without \
         padding; expected {SHAPE}"
    )]
    Salt,
    /// The derived key is not 32 bytes of base64url without padding.
    #[error(
        "the derived key must be {KEY_BYTES} bytes, base64url without padding; expected {SHAPE}"
    )]
    DerivedKey,
}

/// A PBKDF2-HMAC-SHA256 hash of an admin key's secret, parsed from and displayed as
/// `$pbkdf2-sha256$i=<iterations>$<salt>$<derived key>` (both base64url without padding).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHash {
    iterations: NonZeroU32,
    salt: Box<[u8]>,
    derived: [u8; KEY_BYTES],
}

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

/// Hashes `secret` with a fresh random salt and [`DEFAULT_ITERATIONS`].
#[must_use]
pub fn hash_secret(secret: &[u8]) -> KeyHash {
    let iterations = NonZeroU32::new(DEFAULT_ITERATIONS).expect("the default is not zero");
    KeyHash::derive(secret, iterations)
}

/// Hashes `secret` with a fresh random salt and `iterations` rounds.
///
/// # Errors
/// [`BadKeyHash::Iterations`] when `iterations` is outside
/// [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`]: [`KeyHash::from_str`] would refuse the result.
pub fn hash_secret_with_iterations(secret: &[u8], iterations: u32) -> Result<KeyHash, BadKeyHash> {
    Ok(KeyHash::derive(secret, checked_iterations(iterations)?))
}

/// A new admin key secret: `kg_` and 32 random bytes in base64url without padding.
#[must_use]
pub fn generate_secret() -> String {
    format!(
        "kg_{}",
        URL_SAFE_NO_PAD.encode_to_string(random_bytes::<32>())
    )
}

impl Scope {
    /// Every scope, in the order the documentation lists them.
    pub const ALL: [Scope; 6] = [
        Scope::JwksFlush,
        Scope::JwksRefresh,
        Scope::TokensRevoke,
        Scope::StatusRead,
        Scope::EventsPublish,
        Scope::EventsRead,
    ];

    /// The scope's name in config files and on the command line, e.g. `jwks:flush`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JwksFlush => "jwks:flush",
            Scope::JwksRefresh => "jwks:refresh",
            Scope::TokensRevoke => "tokens:revoke",
            Scope::StatusRead => "status:read",
            Scope::EventsPublish => "events:publish",
            Scope::EventsRead => "events:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope {
                // A scope name is not secret, but it may be arbitrary input: keep it short.
                name: s.chars().take(64).collect(),
            })
    }
}

impl KeyHash {
    /// Whether `secret` is the secret this hash was made from. The comparison is constant
    /// time; the PBKDF2 run before it is deliberately slow (tens of milliseconds).
    #[must_use]
    pub fn verify(&self, secret: &[u8]) -> bool {
        pbkdf2::verify(
            PBKDF2_HMAC_SHA256,
            self.iterations,
            &self.salt,
            secret,
            &self.derived,
        )
        .is_ok()
    }

    /// The PBKDF2 iteration count.
    #[must_use]
    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    fn derive(secret: &[u8], iterations: NonZeroU32) -> Self {
        let salt = random_bytes::<SALT_BYTES>();
        let mut derived = [0; KEY_BYTES];
        pbkdf2::derive(PBKDF2_HMAC_SHA256, iterations, &salt, secret, &mut derived);
        KeyHash {
            iterations,
            salt: salt.into(),
            derived,
        }
    }
}

impl FromStr for KeyHash {
    type Err = BadKeyHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(PREFIX).ok_or(BadKeyHash::Algorithm)?;
        let mut fields = rest.split('$');
        let (Some(iterations), Some(salt), Some(derived), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(BadKeyHash::Fields);
        };
        let iterations = iterations
            .strip_prefix("i=")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or(BadKeyHash::Iterations)
            .and_then(checked_iterations)?;
        let salt = URL_SAFE_NO_PAD
            .decode_to_vec(salt)
            .ok()
            .filter(|salt| (MIN_SALT_BYTES..=MAX_SALT_BYTES).contains(&salt.len()))
            .ok_or(BadKeyHash::Salt)?;
        let derived = URL_SAFE_NO_PAD
            .decode_to_vec(derived)
            .ok()
            .and_then(|key| <[u8; KEY_BYTES]>::try_from(key).ok())
            .ok_or(BadKeyHash::DerivedKey)?;
        Ok(KeyHash {
            iterations,
            salt: salt.into(),
            derived,
        })
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}i={}${}${}",
            self.iterations,
            URL_SAFE_NO_PAD.encode_to_string(&self.salt),
            URL_SAFE_NO_PAD.encode_to_string(self.derived),
        )
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Salt and derived key are brute-force material; the cost parameter is all a reader
        // of debug output needs.
        f.debug_struct("KeyHash")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
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
                keys: keys.into_iter().map(Arc::new).collect(),
                known: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashSet::new()),
                pbkdf2: Semaphore::new(1),
                pbkdf2_checks: AtomicU64::new(0),
                limiter: Limiter::new(limit),
            }),
        }
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
        self.inner.keys.is_empty()
    }

    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.keys.len()
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
        let inner = Arc::clone(&self.inner);
        let secret = presented.as_bytes().to_vec();
        let found = tokio::task::spawn_blocking(move || inner.check_all(&secret))
            .await
            .ok()?;
        self.inner.remember(fingerprint, found);
        found.map(|index| Arc::clone(&self.inner.keys[index]))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.inner.keys.iter()).finish()
    }
}

const PREFIX: &str = "$pbkdf2-sha256$";
const SHAPE: &str = "`$pbkdf2-sha256$i=<iterations>$<salt>$<derived key>` (base64url, no padding)";
const SALT_BYTES: usize = 16;
const MIN_SALT_BYTES: usize = 16;
const MAX_SALT_BYTES: usize = 64;
const KEY_BYTES: usize = 32;
/// How many refused digests are remembered before the set is cleared. Each entry is 32
/// bytes; clearing rather than evicting keeps the code trivial, and a flood that fills the
/// set is paying one PBKDF2 run per entry anyway.
const REFUSED_CAPACITY: usize = 4096;

/// The SHA-256 digest of a presented secret: the cache key. It stands in for the secret in
/// memory, and, unlike the secret, is not worth brute-forcing for a secret of 256 bits.
type Fingerprint = [u8; 32];

struct RingInner {
    keys: Box<[Arc<ApiKey>]>,
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
        if let Some(&index) = lock(&self.known).get(fingerprint) {
            return Some(Some(Arc::clone(&self.keys[index])));
        }
        lock(&self.refused).contains(fingerprint).then_some(None)
    }

    fn remember(&self, fingerprint: Fingerprint, found: Option<usize>) {
        match found {
            Some(index) => {
                let mut known = lock(&self.known);
                if known.len() < self.keys.len() {
                    known.insert(fingerprint, index);
                }
            }
            None => {
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
    fn check_all(&self, secret: &[u8]) -> Option<usize> {
        self.pbkdf2_checks.fetch_add(1, Ordering::Relaxed);
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            if key.hash.verify(secret) && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

fn checked_iterations(iterations: u32) -> Result<NonZeroU32, BadKeyHash> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        NonZeroU32::new(iterations).ok_or(BadKeyHash::Iterations)
    } else {
        Err(BadKeyHash::Iterations)
    }
}

fn fingerprint(secret: &[u8]) -> Fingerprint {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, secret).as_ref());
    out
}

/// `N` bytes from the system's secure random generator: salts, secrets, ids.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("aws-lc's RNG aborts the process rather than return a failure");
    bytes
}

/// Locks a cache. A panic while holding one cannot leave it inconsistent (every update is a
/// single insert or clear), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn valid_scopes() -> String {
    Scope::ALL.map(Scope::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest accepted cost keeps the tests quick; the code path is the same.
    fn quick_hash(secret: &str) -> KeyHash {
        hash_secret_with_iterations(secret.as_bytes(), MIN_ITERATIONS).unwrap()
    }

    fn key(id: &str, secret: &str, scopes: &[Scope]) -> ApiKey {
        ApiKey {
            id: id.into(),
            hash: quick_hash(secret),
            scopes: scopes.to_vec(),
        }
    }

    fn checks(ring: &KeyRing) -> u64 {
        ring.inner.pbkdf2_checks.load(Ordering::Relaxed)
    }

    #[test]
    fn hash_round_trips_through_its_string_and_verifies() {
        let secret = generate_secret();
        let hash = hash_secret(secret.as_bytes());
        assert_eq!(hash.iterations(), DEFAULT_ITERATIONS);
        let text = hash.to_string();
        assert!(text.starts_with("$pbkdf2-sha256$i=100000$"), "{text}");
        let parsed: KeyHash = text.parse().unwrap();
        assert_eq!(parsed, hash);
        assert_eq!(parsed.to_string(), text);
        assert!(parsed.verify(secret.as_bytes()));
    }

    #[test]
    fn wrong_secret_does_not_verify() {
        let hash = quick_hash("kg_right");
        assert!(hash.verify(b"kg_right"));
        assert!(!hash.verify(b"kg_wrong"));
        assert!(!hash.verify(b""));
        assert!(!hash.verify(b"kg_right\n"));
    }

    #[test]
    fn salts_differ_between_hashes_of_one_secret() {
        assert_ne!(
            quick_hash("same").to_string(),
            quick_hash("same").to_string()
        );
    }

    #[test]
    fn iteration_count_outside_the_range_is_refused_when_hashing() {
        for n in [0, MIN_ITERATIONS - 1, MAX_ITERATIONS + 1] {
            assert_eq!(
                hash_secret_with_iterations(b"x", n),
                Err(BadKeyHash::Iterations)
            );
        }
    }

    #[test]
    fn malformed_hash_strings_are_refused_with_the_reason() {
        let salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 16]);
        let key = URL_SAFE_NO_PAD.encode_to_string([9u8; 32]);
        let good = format!("$pbkdf2-sha256$i=10000${salt}${key}");
        assert!(good.parse::<KeyHash>().is_ok());
        let short_salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 15]);
        let long_salt = URL_SAFE_NO_PAD.encode_to_string([7u8; 65]);
        let short_key = URL_SAFE_NO_PAD.encode_to_string([9u8; 31]);
        let long_key = URL_SAFE_NO_PAD.encode_to_string([9u8; 33]);
        let cases = [
            (String::new(), BadKeyHash::Algorithm),
            (
                format!("$pbkdf2-sha512$i=10000${salt}${key}"),
                BadKeyHash::Algorithm,
            ),
            (
                format!("$argon2id$v=19${salt}${key}"),
                BadKeyHash::Algorithm,
            ),
            (format!(" {good}"), BadKeyHash::Algorithm),
            ("$pbkdf2-sha256$i=10000".to_owned(), BadKeyHash::Fields),
            (format!("$pbkdf2-sha256$i=10000${salt}"), BadKeyHash::Fields),
            (format!("{good}$extra"), BadKeyHash::Fields),
            (
                format!("$pbkdf2-sha256$10000${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=+10000${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=9999${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=10000001${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=99999999999${salt}${key}"),
                BadKeyHash::Iterations,
            ),
            (
                format!("$pbkdf2-sha256$i=10000${short_salt}${key}"),
                BadKeyHash::Salt,
            ),
            (
                format!("$pbkdf2-sha256$i=10000${long_salt}${key}"),
                BadKeyHash::Salt,
            ),
            (format!("$pbkdf2-sha256$i=10000$${key}"), BadKeyHash::Salt),
            (
                format!("$pbkdf2-sha256$i=10000${salt}=${key}"),
                BadKeyHash::Salt,
            ),
            (
                format!("$pbkdf2-sha256$i=10000$a+b/cdefghijklmnopqrstu${key}"),
                BadKeyHash::Salt,
            ),
            (
                format!("$pbkdf2-sha256$i=10000${salt}${short_key}"),
                BadKeyHash::DerivedKey,
            ),
            (
                format!("$pbkdf2-sha256$i=10000${salt}${long_key}"),
                BadKeyHash::DerivedKey,
            ),
            (
                format!("$pbkdf2-sha256$i=10000${salt}$"),
                BadKeyHash::DerivedKey,
            ),
            (format!("{good}\n"), BadKeyHash::DerivedKey),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<KeyHash>(), Err(want.clone()), "{text:?}");
        }
    }

    #[test]
    fn hash_errors_describe_the_shape_and_echo_nothing() {
        let secret_looking = "$pbkdf2-sha256$i=10000$c2VjcmV0c2FsdHNhbHRzYWx0$tooshort";
        let err = secret_looking.parse::<KeyHash>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("$pbkdf2-sha256$i=<iterations>$<salt>$<derived key>"));
        assert!(!message.contains("c2VjcmV0"), "{message}");
        assert!(!message.contains("tooshort"), "{message}");
    }

    #[test]
    fn debug_of_a_hash_and_a_key_shows_no_key_material() {
        let key = key("ops", "kg_secret", &[Scope::StatusRead]);
        let text = key.hash.to_string();
        let salt = text.split('$').nth(3).unwrap().to_owned();
        let debug = format!(
            "{key:?} {:?} {:?}",
            key.hash,
            KeyRing::new(vec![key.clone()])
        );
        assert!(
            debug.contains("ops") && debug.contains("StatusRead"),
            "{debug}"
        );
        assert!(!debug.contains(&salt), "{debug}");
        assert!(!debug.contains("pbkdf2"), "{debug}");
    }

    #[test]
    fn generated_secrets_are_prefixed_random_and_43_characters_of_base64url() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let body = a.strip_prefix("kg_").unwrap();
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode_to_vec(body).unwrap().len(), 32);
    }

    #[test]
    fn scopes_parse_from_and_display_as_their_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(scope.to_string(), scope.as_str());
        }
        assert_eq!(
            Scope::ALL.map(Scope::as_str),
            [
                "jwks:flush",
                "jwks:refresh",
                "tokens:revoke",
                "status:read",
                "events:publish",
                "events:read"
            ]
        );
        for bad in ["", "JWKS:FLUSH", "jwks:*", "jwks:flush ", "admin", "events"] {
            let err = bad.parse::<Scope>().unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(
                    "jwks:flush, jwks:refresh, tokens:revoke, status:read, events:publish, \
                     events:read"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn keys_allow_only_their_scopes() {
        let key = key("reader", "s", &[Scope::StatusRead]);
        assert!(key.allows(Scope::StatusRead));
        assert!(!key.allows(Scope::JwksFlush));
    }

    #[tokio::test]
    async fn ring_finds_the_key_then_answers_from_memory() {
        let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
        assert_eq!(ring.len(), 1);
        assert!(!ring.is_empty());
        let found = ring.authenticate("kg_ops-secret").await.unwrap();
        assert_eq!(found.id, "ops");
        assert_eq!(checks(&ring), 1);
        let again = ring.clone().authenticate("kg_ops-secret").await.unwrap();
        assert!(Arc::ptr_eq(&found, &again));
        assert_eq!(checks(&ring), 1, "a known secret must not run PBKDF2 again");
    }

    #[tokio::test]
    async fn ring_refuses_wrong_secrets_and_remembers_them() {
        let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
        assert!(ring.authenticate("kg_wrong").await.is_none());
        assert_eq!(checks(&ring), 1);
        assert!(ring.authenticate("kg_wrong").await.is_none());
        assert_eq!(
            checks(&ring),
            1,
            "a refused secret must not run PBKDF2 again"
        );
        assert!(ring.authenticate("kg_other-wrong").await.is_none());
        assert_eq!(checks(&ring), 2);
        // A refusal does not poison the right secret.
        assert!(ring.authenticate("kg_ops-secret").await.is_some());
    }

    #[tokio::test]
    async fn ring_refuses_empty_and_oversized_secrets_without_hashing() {
        let long = "k".repeat(MAX_SECRET_BYTES + 1);
        let ring = KeyRing::new(vec![key("ops", &long, &Scope::ALL)]);
        assert!(ring.authenticate("").await.is_none());
        assert!(ring.authenticate(&long).await.is_none());
        assert_eq!(checks(&ring), 0);
        let empty = KeyRing::new(Vec::new());
        assert!(empty.is_empty());
        assert!(empty.authenticate("kg_anything").await.is_none());
        assert_eq!(checks(&empty), 0);
    }

    #[tokio::test]
    async fn ring_tells_two_keys_and_their_scopes_apart() {
        let ring = KeyRing::new(vec![
            key(
                "flusher",
                "kg_flush",
                &[Scope::JwksFlush, Scope::JwksRefresh],
            ),
            key("reader", "kg_read", &[Scope::StatusRead]),
        ]);
        let flusher = ring.authenticate("kg_flush").await.unwrap();
        let reader = ring.authenticate("kg_read").await.unwrap();
        assert_eq!(flusher.id, "flusher");
        assert_eq!(reader.id, "reader");
        assert!(flusher.allows(Scope::JwksFlush) && !flusher.allows(Scope::StatusRead));
        assert!(reader.allows(Scope::StatusRead) && !reader.allows(Scope::JwksFlush));
        assert_eq!(checks(&ring), 2);
        assert_eq!(ring.authenticate("kg_read").await.unwrap().id, "reader");
        assert_eq!(checks(&ring), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checks_of_one_secret_run_pbkdf2_once() {
        let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let ring = ring.clone();
                tokio::spawn(async move { ring.authenticate("kg_nope").await.is_none() })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(checks(&ring), 1);
    }

    fn limited(keys: Vec<ApiKey>, max_failures: u32) -> KeyRing {
        let limit = FailureLimit::new(max_failures, Duration::from_secs(600)).unwrap();
        KeyRing::with_failure_limit(keys, limit)
    }

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 66));
    const OPERATOR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

    #[tokio::test]
    async fn a_locked_out_address_is_refused_even_the_right_key_and_hashes_nothing() {
        let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
        for (n, locks) in [(1, false), (2, false), (3, true)] {
            assert_eq!(
                ring.authenticate_from(ATTACKER, &format!("kg_guess-{n}"))
                    .await
                    .unwrap_err(),
                Denied::UnknownKey { locked_out: locks }
            );
        }
        assert_eq!(checks(&ring), 3);
        for secret in ["kg_ops-secret", "kg_guess-4", "", &"x".repeat(2000)] {
            let denied = ring.authenticate_from(ATTACKER, secret).await.unwrap_err();
            assert!(
                matches!(denied, Denied::TooManyFailures { retry_after } if retry_after > Duration::from_secs(590)),
                "{denied:?}"
            );
        }
        assert_eq!(
            checks(&ring),
            3,
            "nothing is hashed for a locked-out address"
        );
        assert!(ring.lockout(ATTACKER).is_some());
        // Another address is not affected, and the right key still works from it.
        assert!(ring.lockout(OPERATOR).is_none());
        let key = ring
            .authenticate_from(OPERATOR, "kg_ops-secret")
            .await
            .unwrap();
        assert_eq!(key.id, "ops");
    }

    #[tokio::test]
    async fn a_success_does_not_reset_the_failure_count() {
        let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
        for (secret, ok) in [
            ("kg_ops-secret", true),
            ("kg_guess-1", false),
            ("kg_ops-secret", true),
            ("kg_guess-2", false),
            ("kg_ops-secret", true),
            ("kg_guess-1", false),
        ] {
            assert_eq!(ring.authenticate_from(ATTACKER, secret).await.is_ok(), ok);
        }
        assert!(ring.lockout(ATTACKER).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_guesses_from_one_address_stop_at_the_limit() {
        let ring = limited(vec![key("ops", "kg_ops-secret", &Scope::ALL)], 3);
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let ring = ring.clone();
                tokio::spawn(async move {
                    ring.authenticate_from(ATTACKER, &format!("kg_guess-{n}"))
                        .await
                        .unwrap_err()
                })
            })
            .collect();
        let mut unknown = 0;
        let mut limited = 0;
        for task in tasks {
            match task.await.unwrap() {
                Denied::UnknownKey { .. } => unknown += 1,
                Denied::TooManyFailures { .. } => limited += 1,
            }
        }
        assert_eq!((unknown, limited), (3, 5));
        assert_eq!(
            checks(&ring),
            3,
            "PBKDF2 ran only for the guesses before the lockout"
        );
    }

    #[test]
    fn the_refused_cache_is_bounded() {
        let ring = KeyRing::new(vec![key("ops", "kg_ops-secret", &Scope::ALL)]);
        for n in 0..=REFUSED_CAPACITY {
            ring.inner
                .remember(fingerprint(n.to_string().as_bytes()), None);
        }
        assert_eq!(lock(&ring.inner.refused).len(), 1);
        for n in 0..10 {
            ring.inner
                .remember(fingerprint(n.to_string().as_bytes()), Some(0));
        }
        assert_eq!(lock(&ring.inner.known).len(), 1);
    }
}
