//! Parsed key sets: a JWKS turned once into ready-to-verify keys.
//!
//! Verification keys are built when a set is parsed, not per request. Entries that are broken
//! or of an unsupported type are skipped and counted, so one bad entry never poisons a set.
//! A JWK is never an HMAC secret: `oct` keys are skipped (RFC 8725 section 2.1).

mod wire;

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};

use crate::alg::{Algorithm, KeyFamily};
use crate::error::{JwksError, KeyError};

/// RSA moduli below this many bits are refused as weak (RFC 7518 section 3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this many bits are skipped: verifying them is a denial-of-service lever.
pub const MAX_RSA_BITS: usize = 8192;
/// The default cap on the number of entries in one key set.
pub const DEFAULT_MAX_KEYS: usize = 100;

/// A parsed JSON Web Key Set, ready to verify signatures.
pub struct KeySet {
    keys: Vec<Key>,
    skipped: Vec<SkippedKey>,
    /// How many documents the keys came from: 1 for a parsed document, more for the union of
    /// a provider's several JWKS URLs ([`KeySet::union`]), whose keys are grouped by document.
    documents: u16,
}

/// Why an entry of a key set was skipped rather than kept as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Not a JWK keygate can read: not an object, a member of the wrong type, a missing
    /// member, or key material that is not base64url.
    Malformed,
    /// A key type or curve keygate never verifies with: `oct` (RFC 8725 section 2.1), X25519,
    /// secp256k1, unknown types.
    UnsupportedKeyType,
    /// The entry's `alg` is not one keygate verifies (HS256, RSA-OAEP, ...) or belongs to
    /// another key type.
    UnsupportedAlgorithm,
    /// An RSA modulus over [`MAX_RSA_BITS`]: verifying under it would let a key set make
    /// every verification expensive.
    RsaTooLarge,
    /// Key material of the right shape that is not a valid key (a point off the curve, a
    /// coordinate of the wrong length, an empty exponent).
    InvalidKey,
    /// An Ed448 key (`"crv": "Ed448"`) or an entry pinned to `"alg": "Ed448"`: keygate
    /// verifies EdDSA over Ed25519 only (aws-lc-rs has no Ed448), so such keys are skipped
    /// and tokens signed with them are refused.
    Ed448Unsupported,
}

/// An entry of a key set that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    kid: Option<Arc<str>>,
    reason: SkipReason,
}

/// One entry of a key set.
#[derive(Clone)]
pub(crate) struct Key {
    kid: Option<Arc<str>>,
    /// The index of the document the key came from, in a union of several (0 otherwise).
    document: u16,
    family: KeyFamily,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    /// False for keys whose `use` or `key_ops` exclude signature verification.
    for_signing: bool,
    /// Set for RSA keys under [`MIN_RSA_BITS`]; such keys never verify anything.
    weak: bool,
    /// The public key material, to tell whether a refetch changed the key behind a `kid`.
    material: Box<[u8]>,
    /// One parsed verification key per algorithm this key may be used with.
    parsed: [Option<ParsedPublicKey>; Algorithm::ALL.len()],
}

/// How a token's `kid` resolved against a key set.
pub(crate) enum Lookup<'a> {
    Found(&'a Key),
    Refused(KeyError),
    Missing,
}

impl KeySet {
    /// Parses a JWKS document, keeping keys usable with any of `allowed` algorithms.
    ///
    /// # Errors
    /// [`JwksError::NotAJwkSet`] when the document is not a JSON object with a `keys` array,
    /// [`JwksError::TooManyKeys`] when it has more than `max_keys` entries.
    pub fn parse(
        document: &[u8],
        allowed: &[Algorithm],
        max_keys: usize,
    ) -> Result<Self, JwksError> {
        let too_many = std::cell::Cell::new(false);
        let Some(entries) = wire::entries(document, max_keys, &too_many) else {
            return Err(if too_many.get() {
                JwksError::TooManyKeys(max_keys)
            } else {
                JwksError::NotAJwkSet
            });
        };
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = Vec::new();
        for raw in entries {
            match serde_json::from_str::<wire::Jwk<'_>>(raw.get()) {
                Err(_) => skipped.push(SkippedKey {
                    kid: None,
                    reason: SkipReason::Malformed,
                }),
                Ok(jwk) => match Key::from_wire(&jwk, allowed) {
                    Ok(key) => keys.push(key),
                    Err(reason) => skipped.push(SkippedKey {
                        kid: jwk.kid.as_deref().map(Arc::from),
                        reason,
                    }),
                },
            }
        }
        for entry in &skipped {
            tracing::debug!(kid = ?entry.kid, reason = entry.reason.as_str(), "skipped a JWK entry");
        }
        Ok(KeySet {
            keys,
            skipped,
            documents: 1,
        })
    }

    /// The union of several documents' key sets, in order, each key remembering its document.
    ///
    /// Two documents may use the same `kid` for different keys (an issuer splitting its keys
    /// across documents, or migrating between two); [`KeySet::candidates`] then yields one
    /// key per document, so that no document's key shadows another's.
    pub(crate) fn union<'a>(sets: impl IntoIterator<Item = &'a KeySet>) -> KeySet {
        let mut union = KeySet {
            keys: Vec::new(),
            skipped: Vec::new(),
            documents: 0,
        };
        for set in sets {
            let document = union.documents;
            union.keys.extend(set.keys.iter().map(|k| Key {
                document,
                ..k.clone()
            }));
            union.skipped.extend(set.skipped.iter().cloned());
            union.documents = union.documents.saturating_add(1);
        }
        union
    }

    /// The number of entries that can verify signatures.
    #[must_use]
    pub fn usable(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| k.for_signing && !k.weak)
            .count()
    }

    /// The number of entries skipped as broken or unsupported.
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// The entries skipped as broken or unsupported, in document order, with the reason.
    #[must_use]
    pub fn skipped_keys(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// The `kid`s of the keys in the set, in document order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// Whether some key of the set has this `kid`, usable or not.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Whether both sets hold the same keys, in the same order, with the same attributes.
    /// A refetch that returns the same keys keeps verified tokens cached.
    pub(crate) fn same_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| {
                a.kid == b.kid
                    && a.document == b.document
                    && a.material == b.material
                    && a.alg == b.alg
                    && a.for_signing == b.for_signing
            })
    }

    /// Finds the key a token with `kid` and `alg` must be verified with.
    ///
    /// Keys are only ever looked up inside the set of the provider the token's issuer selected.
    pub(crate) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut refused = None;
                for key in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    match key.check(alg) {
                        Ok(()) => return Lookup::Found(key),
                        // Prefer reporting a weak key over a mismatch: it is the more useful hint.
                        Err(e) if refused != Some(KeyError::Weak) => refused = Some(e),
                        Err(_) => {}
                    }
                }
                refused.map_or(Lookup::Missing, Lookup::Refused)
            }
            None => {
                // Without a `kid`, a key is chosen only when exactly one fits the algorithm
                // (across every document of a union).
                let mut fitting = self.keys.iter().filter(|k| k.check(alg).is_ok());
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key),
                    _ => Lookup::Refused(KeyError::MissingKid),
                }
            }
        }
    }

    /// Whether the keys came from more than one document ([`KeySet::union`]).
    pub(crate) fn is_union(&self) -> bool {
        self.documents > 1
    }

    /// The keys a token with `kid` and `alg` may verify under, one per document: in each
    /// document, the key [`KeySet::lookup`] would choose in that document alone (so inside
    /// one document, duplicate `kid`s behave as they always did). The first is the key
    /// `lookup` returns. Allocates nothing.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: &'a str,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        // Keys are grouped by document, so "first fitting key of its document" is "first
        // fitting key since the document changed".
        let mut last = None;
        self.keys.iter().filter(move |k| {
            if last == Some(k.document) || k.kid.as_deref() != Some(kid) || k.check(alg).is_err() {
                return false;
            }
            last = Some(k.document);
            true
        })
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

impl SkipReason {
    /// A stable code: `malformed`, `unsupported_key_type`, `unsupported_alg`,
    /// `rsa_too_large`, `invalid_key`, `ed448_unsupported`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Malformed => "malformed",
            SkipReason::UnsupportedKeyType => "unsupported_key_type",
            SkipReason::UnsupportedAlgorithm => "unsupported_alg",
            SkipReason::RsaTooLarge => "rsa_too_large",
            SkipReason::InvalidKey => "invalid_key",
            SkipReason::Ed448Unsupported => "ed448_unsupported",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SkippedKey {
    /// The entry's `kid`, when it had a readable one.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Why it was skipped.
    #[must_use]
    pub fn reason(&self) -> SkipReason {
        self.reason
    }
}

impl Key {
    fn from_wire(jwk: &wire::Jwk<'_>, allowed: &[Algorithm]) -> Result<Key, SkipReason> {
        // Ed448 is named as such, whether by its curve or by RFC 9864's `alg`, so that an
        // operator reading the skip reason learns why an EdDSA key of the IdP is unusable.
        if jwk.alg.as_deref() == Some("Ed448")
            || (jwk.kty == "OKP" && jwk.crv.as_deref() == Some("Ed448"))
        {
            return Err(SkipReason::Ed448Unsupported);
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            // An `alg` we do not verify (HS256, RSA-OAEP, ...) makes the entry unusable.
            // `Ed25519` (RFC 9864) is one of ours.
            Some(other) => {
                Some(Algorithm::from_header(other).ok_or(SkipReason::UnsupportedAlgorithm)?)
            }
        };
        let for_signing = jwk.use_.as_deref().is_none_or(|u| u == "sig")
            && jwk
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|op| op == "verify"));
        // For RSA, `material` is n followed by e and `split` is the length of n.
        let (family, material, weak, split) = match (jwk.kty.as_ref(), jwk.crv.as_deref()) {
            ("RSA", _) => {
                let n = strip_leading_zeros(decode(jwk.n.as_deref())?);
                let e = strip_leading_zeros(decode(jwk.e.as_deref())?);
                let bits = bit_len(&n);
                if bits > MAX_RSA_BITS {
                    return Err(SkipReason::RsaTooLarge);
                }
                if e.is_empty() {
                    return Err(SkipReason::InvalidKey);
                }
                let split = n.len();
                let mut material = n;
                material.extend_from_slice(&e);
                (KeyFamily::Rsa, material, bits < MIN_RSA_BITS, split)
            }
            ("EC", Some(crv @ ("P-256" | "P-384" | "P-521"))) => {
                // Coordinates are fixed-length (RFC 7518 section 6.2.1.2): 66 bytes for P-521,
                // whose 521 bits do not fill the last byte.
                let (family, len) = match crv {
                    "P-256" => (KeyFamily::P256, 32),
                    "P-384" => (KeyFamily::P384, 48),
                    _ => (KeyFamily::P521, 66),
                };
                let x = decode(jwk.x.as_deref())?;
                let y = decode(jwk.y.as_deref())?;
                if x.len() != len || y.len() != len {
                    return Err(SkipReason::InvalidKey);
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (family, point, false, 0)
            }
            ("OKP", Some("Ed25519")) => {
                let x = decode(jwk.x.as_deref())?;
                if x.len() != 32 {
                    return Err(SkipReason::InvalidKey);
                }
                (KeyFamily::Ed25519, x, false, 0)
            }
            // `oct` (never a verification key), other curves, unknown types.
            _ => return Err(SkipReason::UnsupportedKeyType),
        };
        if alg.is_some_and(|a| a.family() != family) {
            return Err(SkipReason::UnsupportedAlgorithm);
        }
        let mut parsed: [Option<ParsedPublicKey>; Algorithm::ALL.len()] = Default::default();
        if for_signing && !weak {
            for &candidate in allowed {
                // `Ed25519` and `EdDSA` share one parsed key, under `EdDSA`'s index.
                let scheme = candidate.scheme();
                if candidate.family() != family
                    || alg.is_some_and(|a| !a.same_scheme(candidate))
                    || parsed[scheme.index()].is_some()
                {
                    continue;
                }
                parsed[scheme.index()] =
                    Some(build(scheme, &material, split).ok_or(SkipReason::InvalidKey)?);
            }
        }
        Ok(Key {
            kid: jwk.kid.as_deref().map(Arc::from),
            document: 0,
            family,
            alg,
            for_signing,
            weak,
            material: material.into_boxed_slice(),
            parsed,
        })
    }

    /// Whether this key may verify a token signed with `alg`.
    fn check(&self, alg: Algorithm) -> Result<(), KeyError> {
        if self.family != alg.family()
            || !self.for_signing
            || self.alg.is_some_and(|a| !a.same_scheme(alg))
        {
            return Err(KeyError::AlgMismatch);
        }
        if self.weak {
            return Err(KeyError::Weak);
        }
        if self.parsed[alg.scheme().index()].is_none() {
            // Fits, but the provider does not allow this algorithm; callers check the
            // allow-list first, so this is a mismatch between key and configuration.
            return Err(KeyError::AlgMismatch);
        }
        Ok(())
    }

    /// Verifies `signature` over `message`. Callers obtained this key from [`KeySet::lookup`].
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed[alg.scheme().index()]
            .as_ref()
            .is_some_and(|k| k.verify_sig(message, signature).is_ok())
    }

    /// The key's public material, to compare a key before and after a refetch.
    pub(crate) fn material(&self) -> &[u8] {
        &self.material
    }

    /// The key's `kid`, shared rather than copied into every verified token.
    pub(crate) fn kid(&self) -> Option<&Arc<str>> {
        self.kid.as_ref()
    }
}

fn build(alg: Algorithm, material: &[u8], split: usize) -> Option<ParsedPublicKey> {
    let params: &'static signature::RsaParameters = match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => {
            return ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, material).ok();
        }
        Algorithm::ES384 => {
            return ParsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, material).ok();
        }
        Algorithm::ES512 => {
            return ParsedPublicKey::new(&signature::ECDSA_P521_SHA512_FIXED, material).ok();
        }
        Algorithm::EdDSA | Algorithm::Ed25519 => {
            return ParsedPublicKey::new(&signature::ED25519, material).ok();
        }
    };
    let (n, e) = material.split_at(split);
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(params)
        .ok()
}

/// A base64url key member; absent or undecodable is [`SkipReason::Malformed`].
fn decode(s: Option<&str>) -> Result<Vec<u8>, SkipReason> {
    s.and_then(|s| base64_simd::URL_SAFE_NO_PAD.decode_to_vec(s).ok())
        .ok_or(SkipReason::Malformed)
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..zeros);
    v
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_from_the_top_set_bit() {
        assert_eq!(bit_len(&[]), 0);
        assert_eq!(bit_len(&[1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[0x7f, 0]), 15);
    }

    #[test]
    fn documents_that_are_not_jwk_sets_are_refused() {
        for doc in [&b"[]"[..], b"{}", b"{\"keys\": 3}", b"not json", b""] {
            assert_eq!(
                KeySet::parse(doc, &Algorithm::ALL, 10).unwrap_err(),
                JwksError::NotAJwkSet
            );
        }
    }

    #[test]
    fn broken_and_unsupported_entries_are_skipped_not_fatal() {
        let doc = br#"{"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AA"},
            {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed448-alg", "alg": "Ed448", "x": "AA"},
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
            {"kid": 7},
            "not an object"
        ]}"#;
        let set = KeySet::parse(doc, &Algorithm::ALL, 10).unwrap();
        assert_eq!(set.skipped(), 9);
        assert_eq!(set.usable(), 0);
        let reasons: Vec<(Option<&str>, &str)> = set
            .skipped_keys()
            .iter()
            .map(|s| (s.kid(), s.reason().as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (Some("hmac"), "unsupported_key_type"),
                (Some("broken"), "malformed"),
                (Some("p521"), "invalid_key"),
                (Some("x"), "unsupported_key_type"),
                (Some("ed448"), "ed448_unsupported"),
                (Some("ed448-alg"), "ed448_unsupported"),
                (Some("k1"), "unsupported_key_type"),
                (None, "malformed"),
                (None, "malformed"),
            ]
        );
    }

    #[test]
    fn p521_keys_have_66_byte_coordinates() {
        use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let pair = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 1 + 2 * 66);
        let (x, y) = point[1..].split_at(66);
        let b64 = |v: &[u8]| base64_simd::URL_SAFE_NO_PAD.encode_to_string(v);
        let doc = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-521", "kid": "ok", "alg": "ES512", "x": b64(x), "y": b64(y)},
            {"kty": "EC", "crv": "P-521", "kid": "short", "x": b64(&x[1..]), "y": b64(&y[1..])},
            {"kty": "EC", "crv": "P-521", "kid": "es256", "alg": "ES256", "x": b64(x), "y": b64(y)},
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes(), &Algorithm::ALL, 10).unwrap();
        assert_eq!(set.usable(), 1);
        let reasons: Vec<_> = set.skipped_keys().iter().map(|s| s.reason()).collect();
        assert_eq!(
            reasons,
            [SkipReason::InvalidKey, SkipReason::UnsupportedAlgorithm]
        );
        assert!(matches!(
            set.lookup(Some("ok"), Algorithm::ES512),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("ok"), Algorithm::ES384),
            Lookup::Refused(KeyError::AlgMismatch)
        ));
        // Not allowed by the provider: kept, but never a key for ES512.
        let set = KeySet::parse(doc.to_string().as_bytes(), &[Algorithm::ES256], 10).unwrap();
        assert!(matches!(
            set.lookup(Some("ok"), Algorithm::ES512),
            Lookup::Refused(KeyError::AlgMismatch)
        ));
    }

    #[test]
    fn ed25519_and_eddsa_pins_admit_each_other() {
        let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let x = base64_simd::URL_SAFE_NO_PAD
            .encode_to_string(aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref());
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "new", "alg": "Ed25519", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "old", "alg": "EdDSA", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "none", "x": x},
        ]});
        for allowed in [
            &[Algorithm::Ed25519][..],
            &[Algorithm::EdDSA],
            &[Algorithm::EdDSA, Algorithm::Ed25519],
        ] {
            let set = KeySet::parse(doc.to_string().as_bytes(), allowed, 10).unwrap();
            assert_eq!(set.usable(), 3);
            for kid in ["new", "old", "none"] {
                for alg in [Algorithm::Ed25519, Algorithm::EdDSA] {
                    let Lookup::Found(key) = set.lookup(Some(kid), alg) else {
                        panic!("{kid} {alg} under {allowed:?}");
                    };
                    let message = b"header.payload";
                    assert!(key.verify(alg, message, pair.sign(message).as_ref()));
                    assert!(!key.verify(alg, b"header.payloaD", pair.sign(message).as_ref()));
                }
            }
        }
    }

    #[test]
    fn key_count_is_capped() {
        let entry = r#"{"kty":"oct","k":"AA"}"#;
        let doc = format!("{{\"keys\":[{}]}}", [entry; 11].join(","));
        assert_eq!(
            KeySet::parse(doc.as_bytes(), &Algorithm::ALL, 10).unwrap_err(),
            JwksError::TooManyKeys(10)
        );
        let doc = format!("{{\"keys\":[{}]}}", [entry; 10].join(","));
        assert_eq!(
            KeySet::parse(doc.as_bytes(), &Algorithm::ALL, 10)
                .unwrap()
                .skipped(),
            10
        );
    }

    #[test]
    fn the_cap_stops_the_parse_before_the_rest_of_the_document() {
        // Regression: every entry of the array was collected before the count was checked,
        // so a set of N entries cost N slots however small `max_keys` was. Now the parse stops
        // at entry `max_keys + 1`: what follows it is never looked at.
        let doc = format!("{{\"keys\":[{}, not even json", ["{}"; 3].join(","));
        assert_eq!(
            KeySet::parse(doc.as_bytes(), &Algorithm::ALL, 2).unwrap_err(),
            JwksError::TooManyKeys(2)
        );
        // Members other than `keys` are ignored, in any order; `keys` twice is not a set.
        let doc = br#"{"x":[1,{"a":2}],"keys":[],"y":null}"#;
        assert_eq!(KeySet::parse(doc, &Algorithm::ALL, 2).unwrap().skipped(), 0);
        for doc in [
            &br#"{"keys":[],"keys":[]}"#[..],
            br#"{"keys":[]} x"#,
            br#"{"keys":{}}"#,
        ] {
            assert_eq!(
                KeySet::parse(doc, &Algorithm::ALL, 2).unwrap_err(),
                JwksError::NotAJwkSet
            );
        }
    }

    #[test]
    fn skipped_entries_say_why() {
        let mut huge_n = vec![0xc5u8; MAX_RSA_BITS / 8 + 1];
        huge_n[0] = 0x80;
        let b32 = base64_simd::URL_SAFE_NO_PAD.encode_to_string([1u8; 32]);
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "huge", "n": base64_simd::URL_SAFE_NO_PAD.encode_to_string(&huge_n), "e": "AQAB"},
            {"kty": "RSA", "kid": "no-e", "n": "AQAB", "e": ""},
            {"kty": "EC", "crv": "P-256", "kid": "short", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "kid": "rsa-alg", "alg": "RS256", "x": b32, "y": b32},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "alg": "ECDH-ES", "x": "AA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "off-curve", "alg": "EdDSA",
             "x": base64_simd::URL_SAFE_NO_PAD.encode_to_string([0u8; 31])},
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes(), &Algorithm::ALL, 10).unwrap();
        let reasons: Vec<(Option<&str>, SkipReason)> = set
            .skipped_keys()
            .iter()
            .map(|s| (s.kid(), s.reason()))
            .collect();
        assert_eq!(
            reasons,
            [
                (Some("huge"), SkipReason::RsaTooLarge),
                (Some("no-e"), SkipReason::InvalidKey),
                (Some("short"), SkipReason::InvalidKey),
                (Some("rsa-alg"), SkipReason::UnsupportedAlgorithm),
                (Some("enc"), SkipReason::UnsupportedAlgorithm),
                (Some("off-curve"), SkipReason::InvalidKey),
            ]
        );
    }
}
