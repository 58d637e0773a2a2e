//! Signing keys for tests: generation, public JWKs, JWS signatures.
//!
//! RSA generation takes a noticeable fraction of a second, so suites that only need *a* key
//! should use the cached [`TestKey::shared_rsa`] family instead of generating their own.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use keygate::Algorithm;
use serde_json::{Value, json};

use crate::token::b64url;

/// The public JWK of a real 1024-bit RSA key (kid `weak-1024`, alg `RS256`).
///
/// Keys under 2048 bits must be refused; the private half was thrown away.
pub const WEAK_RSA_1024_JWK: &str = r#"{"kty":"RSA","kid":"weak-1024","use":"sig","alg":"RS256","n":"yKSEzXDQhArVX2OcRN35xdVHR9YsL52r7mX_CtWsXbSW4UnMtsrm4GahvHQYuY5Nt6ese08X_1I7WSAI_uKgCoeN5RsNmZKIR50j1BTs3gQFRwo5bf014ics9rkh04EMNYA79wJfDUev6NqV_UbJIMZ-1Mwcu-G4wf7CVgGkgRk","e":"AQAB"}"#;

/// A private/public key pair with a key id, able to sign JWS signing inputs.
pub struct TestKey {
    kid: String,
    pair: Pair,
}

enum Pair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    P521(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Which kind of key a pool entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rsa(usize),
    P256,
    P384,
    P521,
    Ed25519,
}

impl TestKey {
    /// A fresh 2048-bit RSA key.
    #[must_use]
    pub fn rsa2048(kid: impl Into<String>) -> Self {
        Self::rsa(2048, kid)
    }

    /// A fresh RSA key of `bits` bits: 2048, 3072, 4096 or 8192.
    ///
    /// # Panics
    /// On any other size.
    #[must_use]
    pub fn rsa(bits: usize, kid: impl Into<String>) -> Self {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            other => panic!("aws-lc-rs cannot generate a {other}-bit RSA key"),
        };
        let pair = aws_lc_rs::rsa::KeyPair::generate(size).expect("generate RSA key");
        Self::from_pair(kid, Pair::Rsa(pair))
    }

    /// A fresh P-256 key (ES256).
    #[must_use]
    pub fn p256(kid: impl Into<String>) -> Self {
        Self::ecdsa(kid, &signature::ECDSA_P256_SHA256_FIXED_SIGNING, Pair::P256)
    }

    /// A fresh P-384 key (ES384).
    #[must_use]
    pub fn p384(kid: impl Into<String>) -> Self {
        Self::ecdsa(kid, &signature::ECDSA_P384_SHA384_FIXED_SIGNING, Pair::P384)
    }

    /// A fresh P-521 key (ES512).
    #[must_use]
    pub fn p521(kid: impl Into<String>) -> Self {
        Self::ecdsa(kid, &signature::ECDSA_P521_SHA512_FIXED_SIGNING, Pair::P521)
    }

    /// A fresh ECDSA key on the curve of `alg`, held as `pair`.
    fn ecdsa(
        kid: impl Into<String>,
        alg: &'static signature::EcdsaSigningAlgorithm,
        pair: fn(EcdsaKeyPair) -> Pair,
    ) -> Self {
        let generated = EcdsaKeyPair::generate(alg).expect("generate ECDSA key");
        Self::from_pair(kid, pair(generated))
    }

    /// A fresh Ed25519 key (EdDSA).
    #[must_use]
    pub fn ed25519(kid: impl Into<String>) -> Self {
        let pair = Ed25519KeyPair::generate().expect("generate Ed25519 key");
        Self::from_pair(kid, Pair::Ed25519(pair))
    }

    /// A process-wide cached 2048-bit RSA key with this kid, generated on first use.
    ///
    /// Every call with the same kid returns the same key, so tests that need "the IdP's key"
    /// and tests that need "another key" just pick different kids.
    #[must_use]
    pub fn shared_rsa(kid: &str) -> &'static Self {
        shared(Kind::Rsa(2048), kid)
    }

    /// A process-wide cached RSA key of `bits` bits with this kid (see [`TestKey::rsa`]).
    #[must_use]
    pub fn shared_rsa_bits(bits: usize, kid: &str) -> &'static Self {
        shared(Kind::Rsa(bits), kid)
    }

    /// A process-wide cached P-256 key with this kid.
    #[must_use]
    pub fn shared_p256(kid: &str) -> &'static Self {
        shared(Kind::P256, kid)
    }

    /// A process-wide cached P-384 key with this kid.
    #[must_use]
    pub fn shared_p384(kid: &str) -> &'static Self {
        shared(Kind::P384, kid)
    }

    /// A process-wide cached P-521 key with this kid.
    #[must_use]
    pub fn shared_p521(kid: &str) -> &'static Self {
        shared(Kind::P521, kid)
    }

    /// A process-wide cached Ed25519 key with this kid.
    #[must_use]
    pub fn shared_ed25519(kid: &str) -> &'static Self {
        shared(Kind::Ed25519, kid)
    }

    fn from_pair(kid: impl Into<String>, pair: Pair) -> Self {
        Self {
            kid: kid.into(),
            pair,
        }
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm a JWK for this key advertises: RS256, ES256, ES384, ES512 or EdDSA.
    #[must_use]
    pub fn default_alg(&self) -> Algorithm {
        match self.pair {
            Pair::Rsa(_) => Algorithm::RS256,
            Pair::P256(_) => Algorithm::ES256,
            Pair::P384(_) => Algorithm::ES384,
            Pair::P521(_) => Algorithm::ES512,
            Pair::Ed25519(_) => Algorithm::EdDSA,
        }
    }

    /// The RSA modulus size in bits, or `None` for other keys.
    #[must_use]
    pub fn rsa_bits(&self) -> Option<usize> {
        match &self.pair {
            Pair::Rsa(pair) => Some(pair.public_modulus_len() * 8),
            _ => None,
        }
    }

    /// The public JWK, with `kid`, `"use": "sig"` and `alg` set to [`default_alg`](Self::default_alg).
    #[must_use]
    pub fn jwk(&self) -> Value {
        let mut jwk = self.jwk_without_alg();
        jwk["alg"] = json!(self.default_alg().as_str());
        jwk
    }

    /// The public JWK, with `kid` and `"use": "sig"` but no `alg` member.
    ///
    /// RSA: `n` and `e` big-endian without leading zeros; EC: fixed-length `x` and `y` (66
    /// bytes each for P-521);
    /// OKP: the raw 32-byte `x`. All base64url without padding.
    #[must_use]
    pub fn jwk_without_alg(&self) -> Value {
        match &self.pair {
            Pair::Rsa(_) => {
                let (n, e) = self.rsa_public_components().expect("RSA key");
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": b64url(&n), "e": b64url(&e)})
            }
            Pair::P256(pair) | Pair::P384(pair) | Pair::P521(pair) => {
                let crv = match self.pair {
                    Pair::P256(_) => "P-256",
                    Pair::P384(_) => "P-384",
                    _ => "P-521",
                };
                // Uncompressed point: 0x04 || x || y, each coordinate fixed-length.
                let point = pair.public_key().as_ref();
                let coords = &point[1..];
                let (x, y) = coords.split_at(coords.len() / 2);
                json!({"kty": "EC", "kid": self.kid, "use": "sig", "crv": crv, "x": b64url(x), "y": b64url(y)})
            }
            Pair::Ed25519(pair) => {
                let x = pair.public_key().as_ref();
                json!({"kty": "OKP", "kid": self.kid, "use": "sig", "crv": "Ed25519", "x": b64url(x)})
            }
        }
    }

    /// The RSA public modulus `n` and exponent `e` (big-endian, no leading zeros), or `None`
    /// for other keys.
    #[must_use]
    pub fn rsa_public_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match &self.pair {
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                Some((
                    public.modulus().big_endian_without_leading_zero().to_vec(),
                    public.exponent().big_endian_without_leading_zero().to_vec(),
                ))
            }
            _ => None,
        }
    }

    /// The public key in the form aws-lc-rs `UnparsedPublicKey` expects.
    ///
    /// RSA: DER `RSAPublicKey` (RFC 8017, PKCS#1); EC: the uncompressed SEC1 point
    /// (`0x04 || x || y`); Ed25519: the raw 32 bytes.
    #[must_use]
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Pair::P256(pair) | Pair::P384(pair) | Pair::P521(pair) => {
                pair.public_key().as_ref().to_vec()
            }
            Pair::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `message` (a JWS signing input) as `alg` would.
    ///
    /// RS*: RSASSA-PKCS1-v1_5; PS*: RSASSA-PSS; ES256/ES384/ES512: fixed-length `r || s`;
    /// EdDSA and Ed25519 (RFC 9864): Ed25519.
    ///
    /// # Panics
    /// If `alg` does not fit this key, e.g. ES256 with an RSA key.
    #[must_use]
    pub fn sign(&self, alg: Algorithm, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.pair, alg) {
            (Pair::Rsa(pair), _) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_SHA512,
                    _ => self.mismatch(alg),
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
            (Pair::P256(pair), Algorithm::ES256)
            | (Pair::P384(pair), Algorithm::ES384)
            | (Pair::P521(pair), Algorithm::ES512) => pair
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            (Pair::Ed25519(pair), Algorithm::EdDSA | Algorithm::Ed25519) => {
                pair.sign(message).as_ref().to_vec()
            }
            _ => self.mismatch(alg),
        }
    }

    /// Checks `signature` over `message` with this key's public half, as a verifier would.
    ///
    /// Returns `false` for a bad signature and for an `alg` that does not fit the key.
    #[must_use]
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let verification: &'static dyn signature::VerificationAlgorithm = match (&self.pair, alg) {
            (Pair::Rsa(_), Algorithm::RS256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Pair::Rsa(_), Algorithm::RS384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Pair::Rsa(_), Algorithm::RS512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Pair::Rsa(_), Algorithm::PS256) => &signature::RSA_PSS_2048_8192_SHA256,
            (Pair::Rsa(_), Algorithm::PS384) => &signature::RSA_PSS_2048_8192_SHA384,
            (Pair::Rsa(_), Algorithm::PS512) => &signature::RSA_PSS_2048_8192_SHA512,
            (Pair::P256(_), Algorithm::ES256) => &signature::ECDSA_P256_SHA256_FIXED,
            (Pair::P384(_), Algorithm::ES384) => &signature::ECDSA_P384_SHA384_FIXED,
            (Pair::P521(_), Algorithm::ES512) => &signature::ECDSA_P521_SHA512_FIXED,
            (Pair::Ed25519(_), Algorithm::EdDSA | Algorithm::Ed25519) => &signature::ED25519,
            _ => return false,
        };
        UnparsedPublicKey::new(verification, self.public_key_bytes())
            .verify(message, signature)
            .is_ok()
    }

    fn mismatch(&self, alg: Algorithm) -> ! {
        panic!(
            "TestKey {:?} ({}) cannot sign {}",
            self.kid,
            self.kind_name(),
            alg.as_str()
        )
    }

    fn kind_name(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RSA",
            Pair::P256(_) => "P-256",
            Pair::P384(_) => "P-384",
            Pair::P521(_) => "P-521",
            Pair::Ed25519(_) => "Ed25519",
        }
    }
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TestKey");
        s.field("kid", &self.kid).field("kind", &self.kind_name());
        if let Some(bits) = self.rsa_bits() {
            s.field("bits", &bits);
        }
        s.finish()
    }
}

/// Every supported algorithm with a shared key able to sign it (kids `rsa`, `p256`, `p384`,
/// `p521`, `ed`; `EdDSA` and `Ed25519` share `ed`).
#[must_use]
pub fn one_key_per_alg() -> [(&'static TestKey, Algorithm); 11] {
    let rsa = TestKey::shared_rsa("rsa");
    [
        (rsa, Algorithm::RS256),
        (rsa, Algorithm::RS384),
        (rsa, Algorithm::RS512),
        (rsa, Algorithm::PS256),
        (rsa, Algorithm::PS384),
        (rsa, Algorithm::PS512),
        (TestKey::shared_p256("p256"), Algorithm::ES256),
        (TestKey::shared_p384("p384"), Algorithm::ES384),
        (TestKey::shared_p521("p521"), Algorithm::ES512),
        (TestKey::shared_ed25519("ed"), Algorithm::EdDSA),
        (TestKey::shared_ed25519("ed"), Algorithm::Ed25519),
    ]
}

/// `{"keys": [...]}` holding each key's public JWK (with `alg`).
#[must_use]
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

type Pool = Mutex<HashMap<(Kind, String), &'static OnceLock<TestKey>>>;

fn shared(kind: Kind, kid: &str) -> &'static TestKey {
    static POOL: OnceLock<Pool> = OnceLock::new();
    let slot: &'static OnceLock<TestKey> = {
        let mut pool = POOL
            .get_or_init(Pool::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.entry((kind, kid.to_owned()))
            .or_insert_with(|| Box::leak(Box::new(OnceLock::new())))
    };
    // Generate outside the pool lock, so tests wanting different keys don't queue up behind
    // one slow RSA generation.
    slot.get_or_init(|| match kind {
        Kind::Rsa(bits) => TestKey::rsa(bits, kid),
        Kind::P256 => TestKey::p256(kid),
        Kind::P384 => TestKey::p384(kid),
        Kind::P521 => TestKey::p521(kid),
        Kind::Ed25519 => TestKey::ed25519(kid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn decode(v: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap()
    }

    #[test]
    fn every_alg_signs_and_verifies() {
        let cases = crate::keys::one_key_per_alg();
        for (key, alg) in cases {
            let sig = key.sign(alg, b"header.payload");
            assert!(key.verify(alg, b"header.payload", &sig), "{alg:?}");
            assert!(!key.verify(alg, b"header.payloaD", &sig), "{alg:?}");
        }
        assert_eq!(
            TestKey::shared_p256("p256")
                .sign(Algorithm::ES256, b"m")
                .len(),
            64
        );
        assert_eq!(
            TestKey::shared_p384("p384")
                .sign(Algorithm::ES384, b"m")
                .len(),
            96
        );
        assert_eq!(
            TestKey::shared_p521("p521")
                .sign(Algorithm::ES512, b"m")
                .len(),
            132
        );
    }

    #[test]
    fn shared_keys_are_cached_per_kind_and_kid() {
        assert!(std::ptr::eq(
            TestKey::shared_p256("a"),
            TestKey::shared_p256("a")
        ));
        assert!(!std::ptr::eq(
            TestKey::shared_p256("a"),
            TestKey::shared_p256("b")
        ));
        assert_eq!(TestKey::shared_ed25519("a").default_alg(), Algorithm::EdDSA);
    }

    #[test]
    fn jwks_have_rfc_shapes() {
        let rsa = TestKey::shared_rsa("rsa");
        let jwk = rsa.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], "rsa");
        assert_eq!(decode(&jwk["e"]), [1, 0, 1]);
        let n = decode(&jwk["n"]);
        assert_eq!(n.len(), 256);
        assert_ne!(n[0], 0);
        assert_eq!(rsa.rsa_bits(), Some(2048));

        for (key, crv, len, alg) in [
            (TestKey::shared_p256("p256"), "P-256", 32, "ES256"),
            (TestKey::shared_p384("p384"), "P-384", 48, "ES384"),
            (TestKey::shared_p521("p521"), "P-521", 66, "ES512"),
        ] {
            let jwk = key.jwk();
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], crv);
            assert_eq!(jwk["alg"], alg);
            assert_eq!(decode(&jwk["x"]).len(), len);
            assert_eq!(decode(&jwk["y"]).len(), len);
            assert!(key.rsa_public_components().is_none());
        }

        let ed = TestKey::shared_ed25519("ed");
        let jwk = ed.jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(decode(&jwk["x"]), ed.public_key_bytes());
        assert!(ed.jwk_without_alg().get("alg").is_none());

        let set = jwks(&[rsa, ed]);
        assert_eq!(set["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn weak_key_is_really_1024_bits() {
        let jwk: Value = serde_json::from_str(WEAK_RSA_1024_JWK).unwrap();
        assert_eq!(jwk["kid"], "weak-1024");
        let n = decode(&jwk["n"]);
        assert_eq!(n.len(), 128);
        assert!(n[0] >= 0x80);
    }

    #[test]
    fn mismatched_alg_is_refused_by_verify() {
        let ed = TestKey::shared_ed25519("ed");
        let sig = ed.sign(Algorithm::EdDSA, b"m");
        assert!(!ed.verify(Algorithm::ES256, b"m", &sig));
        let err = std::panic::catch_unwind(|| ed.sign(Algorithm::RS256, b"m")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("cannot sign RS256"), "{msg}");
    }
}
