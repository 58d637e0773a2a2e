//! Minting compact JWS tokens, well-formed or deliberately not.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate::Algorithm;
use serde_json::{Map, Value, json};

use crate::keys::TestKey;

/// base64url without padding, as JWS uses everywhere.
#[must_use]
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Builds and signs a compact JWS (`header.claims.signature`) with a [`TestKey`].
///
/// Starts from the header `{"alg": key.default_alg(), "typ": "JWT", "kid": key.kid()}` and
/// no claims. The `raw_*`, [`header_alg_str`](Self::header_alg_str) and
/// [`signature`](Self::signature) escape hatches produce tokens a strict verifier must reject.
#[derive(Debug, Clone)]
#[must_use]
pub struct TokenBuilder<'k> {
    key: &'k TestKey,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    sign_alg: Algorithm,
    unsigned: bool,
    raw_header: Option<String>,
    raw_claims: Option<String>,
    signature: Option<Vec<u8>>,
}

impl<'k> TokenBuilder<'k> {
    /// A builder signing with `key` under its default algorithm.
    pub fn new(key: &'k TestKey) -> Self {
        let alg = key.default_alg();
        let mut header = Map::new();
        header.insert("alg".into(), json!(alg.as_str()));
        header.insert("typ".into(), json!("JWT"));
        header.insert("kid".into(), json!(key.kid()));
        Self {
            key,
            header,
            claims: Map::new(),
            sign_alg: alg,
            unsigned: false,
            raw_header: None,
            raw_claims: None,
            signature: None,
        }
    }

    /// Sets the header `alg` and signs with that algorithm.
    ///
    /// [`TokenBuilder::sign`] panics if the key cannot sign `alg`.
    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.header.insert("alg".into(), json!(alg.as_str()));
        self.sign_alg = alg;
        self.unsigned = false;
        self
    }

    /// Sets the header `alg` to any string, e.g. `"none"` or `"HS256"`.
    ///
    /// The signature is still made with the previously chosen algorithm (the key's default
    /// unless [`alg`](Self::alg) was called), except for `"none"`, which gets an empty
    /// signature segment.
    pub fn header_alg_str(mut self, alg: &str) -> Self {
        self.header.insert("alg".into(), json!(alg));
        self.unsigned = alg == "none";
        self
    }

    /// Sets (or replaces) a header member.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }

    /// Removes a header member, e.g. `kid` or `typ`.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// Sets (or replaces) a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Removes a claim.
    pub fn remove_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Replaces all claims.
    pub fn claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims = claims;
        self
    }

    /// Uses exactly this text as the header JSON instead of serialising the header map
    /// (e.g. to write duplicate members). The signature still uses the chosen algorithm.
    pub fn raw_header(mut self, json: &str) -> Self {
        self.raw_header = Some(json.to_owned());
        self
    }

    /// Uses exactly this text as the claims JSON instead of serialising the claims map.
    pub fn raw_claims(mut self, json: &str) -> Self {
        self.raw_claims = Some(json.to_owned());
        self
    }

    /// Uses these bytes as the signature instead of signing.
    pub fn signature(mut self, signature: Vec<u8>) -> Self {
        self.signature = Some(signature);
        self
    }

    /// The compact serialisation: `b64url(header) "." b64url(claims) "." b64url(signature)`.
    ///
    /// # Panics
    /// If the key cannot sign the chosen algorithm.
    #[must_use]
    pub fn sign(&self) -> String {
        let header = match &self.raw_header {
            Some(raw) => raw.clone(),
            None => Value::Object(self.header.clone()).to_string(),
        };
        let claims = match &self.raw_claims {
            Some(raw) => raw.clone(),
            None => Value::Object(self.claims.clone()).to_string(),
        };
        let signing_input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let signature = match &self.signature {
            Some(sig) => sig.clone(),
            None if self.unsigned => Vec::new(),
            None => self.key.sign(self.sign_alg, signing_input.as_bytes()),
        };
        format!("{signing_input}.{}", b64url(&signature))
    }
}

/// A realistic access token's claims (eleven of them), valid at `now_unix`.
///
/// `iss`, `sub`, `aud`, `exp` (now + 3600), `nbf` and `iat` (now - 10), a unique `jti`,
/// `scope` ("read write"), `azp`, `email` and a nested `realm_access.roles`.
#[must_use]
pub fn typical_claims(iss: &str, aud: &str, now_unix: i64) -> Map<String, Value> {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).expect("random jti");
    let claims = json!({
        "iss": iss,
        "sub": "248289761001",
        "aud": aud,
        "exp": now_unix + 3600,
        "nbf": now_unix - 10,
        "iat": now_unix - 10,
        "jti": b64url(&jti),
        "scope": "read write",
        "azp": "keygate-test-client",
        "email": "jane.doe@example.com",
        "realm_access": { "roles": ["offline_access", "uma_authorization", "reader"] },
    });
    match claims {
        Value::Object(map) => map,
        _ => unreachable!("json! object literal"),
    }
}

/// An HS256 token over exactly this header and claims JSON, MACed with `secret`.
///
/// For algorithm-confusion tests: sign with an RSA JWK's bytes as the "secret" and check
/// the verifier refuses it.
#[must_use]
pub fn hs256_token(secret: &[u8], header_json: &str, claims_json: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(claims_json.as_bytes())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn parts(token: &str) -> (Value, Value, Vec<u8>, String) {
        let segs: Vec<&str> = token.split('.').collect();
        assert_eq!(segs.len(), 3, "{token}");
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segs[0]).unwrap()).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segs[1]).unwrap()).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(segs[2]).unwrap();
        (header, claims, sig, format!("{}.{}", segs[0], segs[1]))
    }

    #[test]
    fn tokens_verify_for_every_alg() {
        let cases = crate::keys::one_key_per_alg();
        let claims = typical_claims("https://idp.example", "api", 1_700_000_000);
        for (key, alg) in cases {
            let token = TokenBuilder::new(key)
                .alg(alg)
                .claims(claims.clone())
                .sign();
            let (header, got, sig, input) = parts(&token);
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["kid"], key.kid());
            assert_eq!(got, Value::Object(claims.clone()));
            assert!(key.verify(alg, input.as_bytes(), &sig), "{alg:?}");
        }
    }

    #[test]
    fn default_header_and_edits() {
        let key = TestKey::shared_ed25519("ed");
        let token = TokenBuilder::new(key)
            .remove_header("typ")
            .header("cty", json!("x"))
            .claim("a", json!(1))
            .claim("b", json!(2))
            .remove_claim("b")
            .sign();
        let (header, claims, _, _) = parts(&token);
        assert_eq!(header, json!({"alg": "EdDSA", "kid": "ed", "cty": "x"}));
        assert_eq!(claims, json!({"a": 1}));
    }

    #[test]
    fn escape_hatches() {
        let key = TestKey::shared_p256("p256");
        let none = TokenBuilder::new(key).header_alg_str("none").sign();
        assert!(none.ends_with('.'));
        assert_eq!(parts(&none).0["alg"], "none");

        let hs = TokenBuilder::new(key).header_alg_str("HS256").sign();
        let (header, _, sig, input) = parts(&hs);
        assert_eq!(header["alg"], "HS256");
        assert!(key.verify(Algorithm::ES256, input.as_bytes(), &sig));

        let raw = TokenBuilder::new(key)
            .raw_header(r#"{"alg":"ES256","alg":"none"}"#)
            .raw_claims(r#"{"sub":"a","sub":"b"}"#)
            .signature(vec![1, 2, 3])
            .sign();
        let segs: Vec<&str> = raw.split('.').collect();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(segs[0]).unwrap(),
            br#"{"alg":"ES256","alg":"none"}"#
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(segs[1]).unwrap(),
            br#"{"sub":"a","sub":"b"}"#
        );
        assert_eq!(segs[2], "AQID");
    }

    #[test]
    fn typical_claims_are_fresh_and_unique() {
        let a = typical_claims("iss", "aud", 1000);
        let b = typical_claims("iss", "aud", 1000);
        assert_eq!(a["exp"], 4600);
        assert_eq!(a["nbf"], 990);
        assert_eq!(a["realm_access"]["roles"][2], "reader");
        assert_ne!(a["jti"], b["jti"]);
        assert_eq!(a.len(), 11);
    }

    #[test]
    fn hs256_matches_hmac() {
        let token = hs256_token(b"secret", r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#);
        let (_, _, sig, input) = parts(&token);
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        assert!(hmac::verify(&key, input.as_bytes(), &sig).is_ok());
    }
}
