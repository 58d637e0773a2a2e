//! [`ClientKey`]: the private key of a `private_key_jwt` client (OpenID Connect Core 1.0
//! section 9, RFC 7523), and the short-lived assertion it signs for each introspection call.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::alg::Algorithm;
use crate::clock::unix_seconds;

/// How long an assertion is valid: long enough for one call, too short to be worth stealing.
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// A client's private key for `private_key_jwt`: an EC P-256 key (ES256) or an RSA key of
/// 2048 bits or more (RS256), read from PEM (PKCS#8, or SEC 1 / PKCS#1). Never printed.
#[derive(Clone)]
pub struct ClientKey {
    inner: Arc<Inner>,
    kid: Option<Arc<str>>,
}

struct Inner {
    signer: Signer,
    /// The SHA-256 of the key's DER, so that two configurations compare without keeping
    /// copies of the key around.
    fingerprint: [u8; 32],
}

enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A PEM that is not a usable client key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ClientKeyError(&'static str);

impl ClientKey {
    /// Reads a private key from PEM.
    ///
    /// # Errors
    /// [`ClientKeyError`] when the text holds no private key, or one that is neither P-256
    /// nor RSA of at least 2048 bits.
    pub fn from_pem(pem: &[u8]) -> Result<ClientKey, ClientKeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| ClientKeyError("no PEM private key found"))?;
        let bytes = der.secret_der();
        let signer = match &der {
            PrivateKeyDer::Pkcs8(_) => {
                match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes) {
                    Ok(k) => Signer::Es256(k),
                    Err(_) => Signer::Rs256(
                        RsaKeyPair::from_pkcs8(bytes)
                            .map_err(|_| ClientKeyError("the key is neither EC P-256 nor RSA"))?,
                    ),
                }
            }
            PrivateKeyDer::Sec1(_) => Signer::Es256(
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                    .map_err(|_| ClientKeyError("the EC key is not on P-256"))?,
            ),
            PrivateKeyDer::Pkcs1(_) => Signer::Rs256(
                RsaKeyPair::from_der(bytes)
                    .map_err(|_| ClientKeyError("the RSA key is not usable"))?,
            ),
            _ => return Err(ClientKeyError("unsupported private key format")),
        };
        if let Signer::Rs256(k) = &signer
            && k.public_modulus_len() < 256
        {
            return Err(ClientKeyError("the RSA key is under 2048 bits"));
        }
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(digest(&SHA256, bytes).as_ref());
        Ok(ClientKey {
            inner: Arc::new(Inner {
                signer,
                fingerprint,
            }),
            kid: None,
        })
    }

    /// Names the key in the assertion's header (`kid`), for an IdP that holds several keys
    /// of the client.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> ClientKey {
        self.kid = Some(kid.into().into());
        self
    }

    /// The algorithm the assertions are signed with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self.inner.signer {
            Signer::Es256(_) => Algorithm::ES256,
            Signer::Rs256(_) => Algorithm::RS256,
        }
    }

    /// A client assertion (RFC 7523 section 3) for `client_id` towards `audience` (the
    /// issuer), issued at `now`: `iss` and `sub` the client, a fresh `jti`, valid a minute.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Option<String> {
        let b64 = |bytes: &[u8]| base64_simd::URL_SAFE_NO_PAD.encode_to_string(bytes);
        let mut header = serde_json::json!({ "alg": self.algorithm().as_str(), "typ": "JWT" });
        if let Some(kid) = &self.kid {
            header["kid"] = (**kid).into();
        }
        let iat = unix_seconds(now);
        let mut nonce = [0_u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let jti = b64(&nonce);
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": audience, "jti": jti,
            "iat": iat, "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let signature = match &self.inner.signer {
            Signer::Es256(k) => k.sign(&rng, input.as_bytes()).ok()?.as_ref().to_vec(),
            Signer::Rs256(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .ok()?;
                sig
            }
        };
        Some(format!("{input}.{}", b64(&signature)))
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &ClientKey) -> bool {
        self.inner.fingerprint == other.inner.fingerprint && self.kid == other.kid
    }
}

impl Eq for ClientKey {}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({})", self.algorithm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, KeyPair, UnparsedPublicKey,
    };

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64_simd::STANDARD.encode_to_string(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_p256_key_signs_an_rfc_7523_assertion() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let public = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let key = ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
            .unwrap()
            .with_kid("k1");
        assert_eq!(key.algorithm(), Algorithm::ES256);
        assert_eq!(format!("{key:?}"), "ClientKey(ES256)");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let a = key.assertion("rs", "https://idp.example", now).unwrap();
        let b = key.assertion("rs", "https://idp.example", now).unwrap();
        let parts: Vec<&str> = a.split('.').collect();
        let json = |i: usize| -> serde_json::Value {
            serde_json::from_slice(
                &base64_simd::URL_SAFE_NO_PAD
                    .decode_to_vec(parts[i])
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            json(0),
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"})
        );
        let claims = json(1);
        assert_eq!(claims["iss"], "rs");
        assert_eq!(claims["sub"], "rs");
        assert_eq!(claims["aud"], "https://idp.example");
        assert_eq!(claims["exp"], 1_700_000_060);
        assert_ne!(claims["jti"], json_of(&b)["jti"], "a fresh jti each time");
        let signature = base64_simd::URL_SAFE_NO_PAD
            .decode_to_vec(parts[2])
            .unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(input.as_bytes(), &signature)
            .unwrap();
        // Equal keys compare equal; the kid counts.
        let again = ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        assert_ne!(again, key);
        assert_eq!(again.with_kid("k1"), key);
    }

    fn json_of(jws: &str) -> serde_json::Value {
        let payload = jws.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap())
            .unwrap()
    }

    #[test]
    fn other_keys_and_garbage_are_refused() {
        let rng = SystemRandom::new();
        let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        assert!(ClientKey::from_pem(pem("PRIVATE KEY", p384.as_ref()).as_bytes()).is_err());
        assert!(ClientKey::from_pem(b"not a pem").is_err());
        assert!(
            ClientKey::from_pem(pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00").as_bytes()).is_err()
        );
        assert!(ClientKey::from_pem(pem("CERTIFICATE", b"\x30\x00").as_bytes()).is_err());
    }
}
