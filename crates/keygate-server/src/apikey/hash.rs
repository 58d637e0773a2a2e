//! The hash of an admin key's secret (PBKDF2-HMAC-SHA256 in a PHC-style string), new secrets,
//! and the random bytes both are made of.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use aws_lc_rs::pbkdf2::{self, PBKDF2_HMAC_SHA256};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64_simd::URL_SAFE_NO_PAD;

/// The PBKDF2 iteration count of new hashes.
pub const DEFAULT_ITERATIONS: u32 = 100_000;
/// The smallest iteration count a [`KeyHash`] may carry.
pub const MIN_ITERATIONS: u32 = 10_000;
/// The largest iteration count a [`KeyHash`] may carry: more would let a config file make
/// every admin request cost seconds.
pub const MAX_ITERATIONS: u32 = 10_000_000;

const PREFIX: &str = "$pbkdf2-sha256$";
const SHAPE: &str = "`$pbkdf2-sha256$i=<iterations>$<salt>$<derived key>` (base64url, no padding)";
const SALT_BYTES: usize = 16;
const MIN_SALT_BYTES: usize = 16;
const MAX_SALT_BYTES: usize = 64;
const KEY_BYTES: usize = 32;

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

fn checked_iterations(iterations: u32) -> Result<NonZeroU32, BadKeyHash> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        NonZeroU32::new(iterations).ok_or(BadKeyHash::Iterations)
    } else {
        Err(BadKeyHash::Iterations)
    }
}

/// `N` bytes from the system's secure random generator: salts, secrets, ids.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("aws-lc's RNG aborts the process rather than return a failure");
    bytes
}
