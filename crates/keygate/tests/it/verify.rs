//! Table-driven verification: every reason code the verifier can give for a static key set,
//! every algorithm, the time, issuer and audience rules, revocations and the verified-token
//! cache. Each row is a [`Spec`] (how to build the token and the verifier) and the expected
//! outcome, and every row goes through the one [`check`] helper.
//!
//! Refusal rows are built so that they would *pass* (or fail for another reason) if the check
//! they exercise were missing: e.g. a `jku` header on an otherwise valid token signed by the
//! provider's own key. `keys_unavailable` and `malformed_jwks` need a fetched key set and are
//! covered by the cache tests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use keygate::{Algorithm, ProviderConfig, ProviderId, Revocations, Verifier, VerifyError};
use keygate_test_support::{
    ManualClock, TestKey, TokenBuilder, WEAK_RSA_1024_JWK, b64url, hs256_token, typical_claims,
};
use serde_json::{Map, Value, json};

use crate::support::{pem, reason_codes};

/// The verifier's clock reads this (unix seconds) unless a test moves it.
const NOW: i64 = 1_700_000_000;
const TENANT: &str = "acme";
const ISS: &str = "https://idp.acme.example/";
const AUD: &str = "https://api.acme.example";
/// A second tenant with its own issuer and keys, configured in every verifier.
const OTHER_TENANT: &str = "globex";
const OTHER_ISS: &str = "https://login.globex.example/";
/// `typical_claims` uses this subject.
const SUB: &str = "248289761001";

/// The expected outcome: `Ok(())` for a valid token, or the refusal's reason code.
type Expected = Result<(), &'static str>;

/// How to build one verifier and one token.
struct Spec {
    name: &'static str,
    token: fn() -> String,
    /// The acme provider's key set (default [`idp_jwks`]).
    jwks: fn() -> Value,
    /// The acme provider's allow-list; empty means the library default (all).
    algorithms: &'static [Algorithm],
    leeway: Duration,
    require_exp: bool,
    required_typ: Option<&'static str>,
    refuse_embedded_keys: bool,
    max_token_bytes: Option<usize>,
    /// `verify_for_tenant(tenant, ..)` instead of `verify(..)`.
    tenant: Option<&'static str>,
    /// Revocations in force before the token is verified.
    revoke: fn(&Revocations),
}

/// A row with the defaults: the acme key set, every algorithm, 30 s leeway, `exp` required.
fn case(name: &'static str, token: fn() -> String) -> Spec {
    Spec {
        name,
        token,
        jwks: idp_jwks,
        algorithms: &[],
        leeway: Duration::from_secs(30),
        require_exp: true,
        required_typ: None,
        refuse_embedded_keys: false,
        max_token_bytes: None,
        tenant: None,
        revoke: |_| {},
    }
}

impl Spec {
    fn jwks(mut self, jwks: fn() -> Value) -> Self {
        self.jwks = jwks;
        self
    }

    fn algorithms(mut self, algorithms: &'static [Algorithm]) -> Self {
        self.algorithms = algorithms;
        self
    }

    fn leeway(mut self, secs: u64) -> Self {
        self.leeway = Duration::from_secs(secs);
        self
    }

    fn require_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    fn typ(mut self, typ: &'static str) -> Self {
        self.required_typ = Some(typ);
        self
    }

    fn refuse_embedded_keys(mut self) -> Self {
        self.refuse_embedded_keys = true;
        self
    }

    fn max_token_bytes(mut self, limit: usize) -> Self {
        self.max_token_bytes = Some(limit);
        self
    }

    fn tenant(mut self, tenant: &'static str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    fn revoke(mut self, revoke: fn(&Revocations)) -> Self {
        self.revoke = revoke;
        self
    }

    /// Two providers (acme per this spec, globex fixed), a clock at [`NOW`] and the spec's
    /// revocations.
    fn verifier(&self) -> Verifier {
        let mut acme = ProviderConfig::builder(TENANT, "idp", ISS)
            .static_jwks(serde_json::to_vec(&(self.jwks)()).expect("jwks serialises"))
            .audiences([AUD])
            .algorithms(self.algorithms.iter().copied())
            .leeway(self.leeway)
            .require_exp(self.require_exp)
            .refuse_embedded_keys(self.refuse_embedded_keys);
        if let Some(typ) = self.required_typ {
            acme = acme.required_typ(typ);
        }
        let revocations = Revocations::new();
        (self.revoke)(&revocations);
        let mut builder = Verifier::builder()
            .provider(acme.build().expect("acme provider"))
            .provider(other_provider())
            .clock(Arc::new(ManualClock::at_unix(NOW.unsigned_abs())))
            .revocations(Arc::new(revocations));
        if let Some(limit) = self.max_token_bytes {
            builder = builder.max_token_bytes(limit);
        }
        builder.build().expect("verifier")
    }
}

/// Verifies the spec's token with the spec's verifier and compares the outcome.
///
/// The verification runs on its own task so that a panic inside the library is reported as
/// this row's outcome (`"panic"`) instead of hiding the rows after it.
async fn check(spec: &Spec, expected: Expected) -> Result<(), String> {
    let verifier = spec.verifier();
    let token = (spec.token)();
    let tenant = spec.tenant;
    let outcome = tokio::spawn(async move {
        match tenant {
            Some(t) => verifier.verify_for_tenant(t, &token).await,
            None => verifier.verify(&token).await,
        }
        .map(drop)
        .map_err(|e| e.reason().as_str())
    })
    .await;
    let got = match outcome {
        Ok(result) => result,
        Err(join) if join.is_panic() => Err("panic"),
        Err(join) => panic!("{}: verification task failed: {join}", spec.name),
    };
    if let Err(reason) = got {
        if reason != "panic" && !reason_codes().contains(&reason) {
            return Err(format!("{}: undocumented reason {reason:?}", spec.name));
        }
    }
    if got == expected {
        Ok(())
    } else {
        Err(format!("{}: expected {expected:?}, got {got:?}", spec.name))
    }
}

/// Runs every row and reports all mismatches at once.
async fn run(table: Vec<(Spec, Expected)>) {
    let mut failures = Vec::new();
    for (spec, expected) in &table {
        if let Err(failure) = check(spec, *expected).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n  {}",
        failures.len(),
        table.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Keys and key sets.

/// The acme IdP's main key; its JWK pins `alg: RS256`.
fn rsa() -> &'static TestKey {
    TestKey::shared_rsa("v-rsa")
}

/// An acme RSA key published without `alg`: usable with every RS* and PS* algorithm.
fn rsa_any() -> &'static TestKey {
    TestKey::shared_rsa("v-rsa-any")
}

/// An acme RSA key whose JWK pins `alg: RS384`.
fn rsa_rs384() -> &'static TestKey {
    TestKey::shared_rsa("v-rsa-rs384")
}

fn p256() -> &'static TestKey {
    TestKey::shared_p256("v-ec256")
}

/// A P-256 key the acme set publishes with `use: enc`.
fn p256_enc() -> &'static TestKey {
    TestKey::shared_p256("v-ec256-enc")
}

fn p384() -> &'static TestKey {
    TestKey::shared_p384("v-ec384")
}

/// A P-384 key the acme set publishes with `key_ops: ["sign"]` (no `verify`).
fn p384_sign_only() -> &'static TestKey {
    TestKey::shared_p384("v-ec384-ops")
}

/// A P-521 key; its JWK pins `alg: ES512`.
fn p521() -> &'static TestKey {
    TestKey::shared_p521("v-ec521")
}

fn ed() -> &'static TestKey {
    TestKey::shared_ed25519("v-ed")
}

/// The globex IdP's only key.
fn other() -> &'static TestKey {
    TestKey::shared_rsa("v-other")
}

/// A key in nobody's key set.
fn attacker() -> &'static TestKey {
    TestKey::shared_rsa("v-attacker")
}

/// The acme key set: one key of each kind, plus keys that must never verify anything.
fn idp_jwks() -> Value {
    let mut rs384 = rsa_rs384().jwk();
    rs384["alg"] = json!("RS384");
    let mut enc = p256_enc().jwk_without_alg();
    enc["use"] = json!("enc");
    let mut sign_only = p384_sign_only().jwk();
    sign_only
        .as_object_mut()
        .expect("JWK is an object")
        .remove("use");
    sign_only["key_ops"] = json!(["sign"]);
    let weak: Value = serde_json::from_str(WEAK_RSA_1024_JWK).expect("weak JWK");
    json!({"keys": [
        rsa().jwk(),
        rsa_any().jwk_without_alg(),
        rs384,
        p256().jwk(),
        enc,
        p384().jwk(),
        sign_only,
        p521().jwk(),
        ed().jwk(),
        weak,
    ]})
}

/// The acme Ed25519 key alone, its JWK pinned with RFC 9864's `alg: Ed25519`.
fn ed25519_pinned_jwks() -> Value {
    let mut jwk = ed().jwk();
    jwk["alg"] = json!("Ed25519");
    json!({"keys": [jwk]})
}

fn empty_jwks() -> Value {
    json!({"keys": []})
}

fn only_rsa_jwks() -> Value {
    keygate_test_support::jwks(&[rsa()])
}

fn other_provider() -> ProviderConfig {
    ProviderConfig::builder(OTHER_TENANT, "idp", OTHER_ISS)
        .static_jwks(
            serde_json::to_vec(&keygate_test_support::jwks(&[other()])).expect("jwks serialises"),
        )
        .audiences([AUD])
        .build()
        .expect("globex provider")
}

// ---------------------------------------------------------------------------------------------
// Token helpers.

/// Valid acme claims at [`NOW`]: `exp` NOW+3600, `nbf` and `iat` NOW-10, `aud` [`AUD`].
fn claims() -> Map<String, Value> {
    typical_claims(ISS, AUD, NOW)
}

/// A builder for a valid acme token signed by `key` under its default algorithm.
fn signed(key: &'static TestKey) -> TokenBuilder<'static> {
    TokenBuilder::new(key).claims(claims())
}

/// A valid acme token signed by [`rsa`] with RS256.
fn valid() -> String {
    signed(rsa()).sign()
}

/// The acme claims as JSON text with `pairs` appended verbatim (`"name":value` pairs); any
/// claim named in `replace` is dropped first. For values `json!` cannot write (`1e400`) and
/// for duplicate members.
fn claims_text(replace: &[&str], pairs: &str) -> String {
    let mut map = claims();
    for name in replace {
        map.remove(*name);
    }
    let text = Value::Object(map).to_string();
    format!("{},{pairs}}}", &text[..text.len() - 1])
}

/// A token over exactly these (already encoded) segments, signed by `key` with `alg`.
fn sign_segments(header: &str, payload: &str, key: &TestKey, alg: Algorithm) -> String {
    let input = format!("{header}.{payload}");
    let signature = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

const RS256_HEADER: &str = r#"{"alg":"RS256","kid":"v-rsa"}"#;

/// The payload segment of a valid acme token.
fn claims_segment() -> String {
    b64url(Value::Object(claims()).to_string().as_bytes())
}

/// `token` with segment `index` replaced by `f(segment)`.
fn with_segment(token: &str, index: usize, f: impl FnOnce(&str) -> String) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[index] = f(&parts[index]);
    parts.join(".")
}

/// `token` with its signature bytes replaced by `f(signature)`.
fn with_signature(token: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> String {
    with_segment(token, 2, |s| {
        b64url(&f(base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("signature segment")))
    })
}

/// Sets one of the unused low bits of a segment's last character: a lenient decoder yields
/// the same bytes, a strict one refuses the segment (RFC 4648 section 3.5).
fn with_trailing_bits(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(segment.len() % 4, 0, "segment has no unused bits");
    let last = *segment.as_bytes().last().expect("non-empty segment");
    let value = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    assert_eq!(value & 1, 0, "canonical encodings have zero low bits");
    let mut out = segment[..segment.len() - 1].to_owned();
    out.push(char::from(ALPHABET[value | 1]));
    out
}

/// Padded base64url, which JWS forbids (RFC 7515 section 2).
fn padded(data: &[u8]) -> String {
    let encoded = URL_SAFE.encode(data);
    assert!(
        encoded.ends_with('='),
        "choose data whose encoding is padded"
    );
    encoded
}

/// A fixed-length ECDSA signature (`r || s`) re-encoded as an ASN.1 DER `ECDSA-Sig-Value`.
fn der_ecdsa(fixed: &[u8]) -> Vec<u8> {
    let integer = |x: &[u8]| {
        let zeros = x.iter().take_while(|&&b| b == 0).count().min(x.len() - 1);
        let x = &x[zeros..];
        let mut content = Vec::new();
        if x[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(x);
        der(0x02, &content)
    };
    let (r, s) = fixed.split_at(fixed.len() / 2);
    der(0x30, &[integer(r), integer(s)].concat())
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    match len {
        0..0x80 => out.push(u8::try_from(len).expect("short length")),
        0x80..0x100 => out.extend([0x81, u8::try_from(len).expect("one-byte length")]),
        _ => out.extend([0x82, (len >> 8) as u8, (len & 0xff) as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// The RSA public key as PKCS#1 `RSAPublicKey` DER.
fn pkcs1_der(key: &TestKey) -> Vec<u8> {
    key.public_key_bytes()
}

/// The RSA public key as X.509 `SubjectPublicKeyInfo` DER.
fn spki_der(key: &TestKey) -> Vec<u8> {
    // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            der(0x05, &[]),
        ]
        .concat(),
    );
    let bits = der(0x03, &[&[0][..], &pkcs1_der(key)].concat());
    der(0x30, &[algorithm, bits].concat())
}

/// The classic key-confusion attack (RFC 8725 section 2.1): an HS256 token whose HMAC secret
/// is the acme RSA key's public representation, which an attacker can download.
fn confusion(secret: &[u8]) -> String {
    hs256_token(
        secret,
        r#"{"alg":"HS256","typ":"JWT","kid":"v-rsa"}"#,
        &Value::Object(claims()).to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// The tables.

fn structure_cases() -> Vec<(Spec, Expected)> {
    vec![
        (case("valid RS256 token", valid), Ok(())),
        (
            case("two segments", || {
                let t = valid();
                t[..t.rfind('.').unwrap()].to_owned()
            }),
            Err("malformed"),
        ),
        (
            case("four segments", || format!("{}.AAAA", valid())),
            Err("malformed"),
        ),
        (
            case("six segments", || format!("{}.AAAA.AAAA.AAAA", valid())),
            Err("malformed"),
        ),
        (case("empty token", String::new), Err("malformed")),
        (case("only dots", || "..".to_owned()), Err("malformed")),
        (
            case("empty header segment", || {
                with_segment(&valid(), 0, |_| String::new())
            }),
            Err("malformed"),
        ),
        (
            case("character outside base64url in the header", || {
                with_segment(&valid(), 0, |h| format!("{h}*"))
            }),
            Err("malformed"),
        ),
        (
            case("signature in the standard base64 alphabet", || {
                // 0xfb 0xff 0xbf encodes to "-_-_" in base64url and "+/+/" in base64.
                let t = signed(rsa()).signature(vec![0xfb, 0xff, 0xbf]).sign();
                with_segment(&t, 2, |s| s.replace('-', "+").replace('_', "/"))
            }),
            Err("malformed"),
        ),
        (
            case("whitespace inside the token", || {
                with_segment(&valid(), 1, |p| format!(" {p}"))
            }),
            Err("malformed"),
        ),
        (
            case(
                "padding on the header, signed over the padded input",
                || {
                    sign_segments(
                        &padded(RS256_HEADER.as_bytes()),
                        &claims_segment(),
                        rsa(),
                        Algorithm::RS256,
                    )
                },
            ),
            Err("malformed"),
        ),
        (
            case("unpadded control for the padding rows", || {
                sign_segments(
                    &b64url(RS256_HEADER.as_bytes()),
                    &claims_segment(),
                    rsa(),
                    Algorithm::RS256,
                )
            }),
            Ok(()),
        ),
        (
            case("padding on the signature", || {
                // RSA-2048 signatures are 256 bytes: two padding characters.
                valid() + "=="
            }),
            Err("malformed"),
        ),
        (
            case("non-canonical trailing bits in the header", || {
                sign_segments(
                    &with_trailing_bits(&b64url(RS256_HEADER.as_bytes())),
                    &claims_segment(),
                    rsa(),
                    Algorithm::RS256,
                )
            }),
            Err("malformed"),
        ),
        (
            case("non-canonical trailing bits in the signature", || {
                with_segment(&valid(), 2, with_trailing_bits)
            }),
            Err("malformed"),
        ),
        (
            case("header is not JSON", || {
                signed(rsa()).raw_header("alg=RS256").sign()
            }),
            Err("malformed"),
        ),
        (
            case("header is a JSON array", || {
                signed(rsa()).raw_header(r#"["RS256","v-rsa"]"#).sign()
            }),
            Err("malformed"),
        ),
        (
            case("header has trailing data", || {
                signed(rsa())
                    .raw_header(r#"{"alg":"RS256","kid":"v-rsa"}{}"#)
                    .sign()
            }),
            Err("malformed"),
        ),
        (
            case("header without alg", || {
                signed(rsa()).remove_header("alg").sign()
            }),
            Err("malformed"),
        ),
        (
            case("alg is not a string", || {
                signed(rsa()).header("alg", json!(["RS256"])).sign()
            }),
            Err("malformed"),
        ),
        (
            case("kid is not a string", || {
                signed(rsa()).header("kid", json!(7)).sign()
            }),
            Err("malformed"),
        ),
        (
            case("typ is not a string", || {
                signed(rsa()).header("typ", json!({})).sign()
            }),
            Err("malformed"),
        ),
        (
            case("duplicate header member alg", || {
                signed(rsa())
                    .raw_header(r#"{"alg":"RS256","kid":"v-rsa","alg":"RS256"}"#)
                    .sign()
            }),
            Err("malformed"),
        ),
        (
            case(
                "duplicate header member kid, spelled with an escape",
                || {
                    signed(rsa())
                        .raw_header(r#"{"alg":"RS256","kid":"v-rsa","\u006bid":"v-rsa-any"}"#)
                        .sign()
                },
            ),
            Err("malformed"),
        ),
        (
            case("payload is not JSON", || {
                signed(rsa()).raw_claims("sub=admin").sign()
            }),
            Err("malformed"),
        ),
        (
            case("payload is a JSON array", || {
                signed(rsa()).raw_claims(r#"[{"iss":"x"}]"#).sign()
            }),
            Err("malformed"),
        ),
        (
            case("payload is a JSON string", || {
                signed(rsa()).raw_claims(r#""x""#).sign()
            }),
            Err("malformed"),
        ),
        (
            case("payload is null", || {
                signed(rsa()).raw_claims("null").sign()
            }),
            Err("malformed"),
        ),
        (
            case("payload has trailing data", || {
                let text = format!("{} {{}}", Value::Object(claims()));
                signed(rsa()).raw_claims(&text).sign()
            }),
            Err("malformed"),
        ),
        (
            case("duplicate claim role", || {
                let text = claims_text(&[], r#""role":"user","role":"admin""#);
                signed(rsa()).raw_claims(&text).sign()
            }),
            Err("malformed"),
        ),
        (
            case("duplicate claim sub", || {
                let text = claims_text(&[], r#""sub":"admin""#);
                signed(rsa()).raw_claims(&text).sign()
            }),
            Err("malformed"),
        ),
        (
            case("duplicate claim exp, spelled with an escape", || {
                let text = claims_text(&[], &format!(r#""\u0065xp":{}"#, NOW + 999_999));
                signed(rsa()).raw_claims(&text).sign()
            }),
            Err("malformed"),
        ),
        (
            case(
                "payload with invalid UTF-8 in an unregistered claim",
                || {
                    let mut bytes = claims_text(&[], r#""note":"x""#).into_bytes();
                    let at = bytes.len() - 3;
                    bytes[at] = 0xff;
                    sign_segments(
                        &b64url(RS256_HEADER.as_bytes()),
                        &b64url(&bytes),
                        rsa(),
                        Algorithm::RS256,
                    )
                },
            ),
            Err("malformed"),
        ),
        (
            case("claim nested 100 deep", || {
                let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
                let text = claims_text(&[], &format!(r#""deep":{nested}"#));
                signed(rsa()).raw_claims(&text).sign()
            }),
            Ok(()),
        ),
        (
            case("claim nested 5000 deep (parser recursion limit)", || {
                let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
                let text = claims_text(&[], &format!(r#""deep":{nested}"#));
                signed(rsa()).raw_claims(&text).sign()
            }),
            Err("malformed"),
        ),
        (
            case("control: a unique extra claim is fine", || {
                let text = claims_text(&[], r#""role":"user""#);
                signed(rsa()).raw_claims(&text).sign()
            }),
            Ok(()),
        ),
        (
            case("token over max_token_bytes", || signed(p256()).sign()).max_token_bytes(256),
            Err("token_too_large"),
        ),
        (
            case("token under max_token_bytes", || signed(p256()).sign()).max_token_bytes(1024),
            Ok(()),
        ),
        (
            case("token over the 16 KiB default", || {
                signed(p256())
                    .claim("pad", json!("x".repeat(13_000)))
                    .sign()
            }),
            Err("token_too_large"),
        ),
        (
            case("token under the 16 KiB default", || {
                signed(p256())
                    .claim("pad", json!("x".repeat(11_000)))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("oversized garbage is refused before parsing", || {
                "x".repeat(20_000)
            }),
            Err("token_too_large"),
        ),
    ]
}

fn header_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("alg none, empty signature", || {
                signed(rsa()).header_alg_str("none").sign()
            }),
            Err("alg_none"),
        ),
        (
            case("alg None, empty signature", || {
                signed(rsa())
                    .header_alg_str("None")
                    .signature(Vec::new())
                    .sign()
            }),
            Err("alg_none"),
        ),
        (
            case("alg NONE, RS256 signature", || {
                signed(rsa()).header_alg_str("NONE").sign()
            }),
            Err("alg_none"),
        ),
        (
            case("alg nOnE, junk signature", || {
                signed(rsa())
                    .header_alg_str("nOnE")
                    .signature(vec![1, 2, 3])
                    .sign()
            }),
            Err("alg_none"),
        ),
        (
            case("alg none spelled with an escape", || {
                signed(rsa())
                    .raw_header(r#"{"\u0061lg":"none","kid":"v-rsa"}"#)
                    .signature(Vec::new())
                    .sign()
            }),
            Err("alg_none"),
        ),
        (
            case("alg HS256 header over an RS256 signature", || {
                signed(rsa()).header_alg_str("HS256").sign()
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with the JWK text", || {
                confusion(rsa().jwk().to_string().as_bytes())
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with the JWKS document", || {
                confusion(&serde_json::to_vec(&idp_jwks()).unwrap())
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with PKCS#1 DER", || {
                confusion(&pkcs1_der(rsa()))
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with SPKI DER", || {
                confusion(&spki_der(rsa()))
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with PKCS#1 PEM", || {
                confusion(pem("RSA PUBLIC KEY", &pkcs1_der(rsa())).as_bytes())
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with SPKI PEM", || {
                confusion(pem("PUBLIC KEY", &spki_der(rsa())).as_bytes())
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("key confusion: HS256 keyed with the modulus", || {
                confusion(&rsa().rsa_public_components().unwrap().0)
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("alg names are case-sensitive: rs256", || {
                signed(rsa()).header_alg_str("rs256").sign()
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("alg with trailing space", || {
                signed(rsa()).header_alg_str("RS256 ").sign()
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("unsupported alg ES256K", || {
                signed(rsa()).header_alg_str("ES256K").sign()
            }),
            Err("alg_not_allowed"),
        ),
        (
            case("ES512 header over an RSA key's kid", || {
                signed(rsa()).header_alg_str("ES512").sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("RS256 when the provider allows only ES256", valid)
                .algorithms(&[Algorithm::ES256]),
            Err("alg_not_allowed"),
        ),
        (
            case("control: ES256 when the provider allows only ES256", || {
                signed(p256()).sign()
            })
            .algorithms(&[Algorithm::ES256]),
            Ok(()),
        ),
        (
            case("RS256 when the provider allows only PS256", valid)
                .algorithms(&[Algorithm::PS256]),
            Err("alg_not_allowed"),
        ),
        (
            case("crit naming a registered claim", || {
                signed(rsa())
                    .header("crit", json!(["exp"]))
                    .header("exp", json!(NOW + 60))
                    .sign()
            }),
            Err("crit_header"),
        ),
        (
            case("crit b64 with b64 false (crit is checked first)", || {
                signed(rsa())
                    .header("crit", json!(["b64"]))
                    .header("b64", json!(false))
                    .sign()
            }),
            Err("crit_header"),
        ),
        (
            case("crit empty list", || {
                signed(rsa()).header("crit", json!([])).sign()
            }),
            Err("crit_header"),
        ),
        (
            case("crit not a list", || {
                signed(rsa()).header("crit", json!("x")).sign()
            }),
            Err("crit_header"),
        ),
        (
            case("five segments (JWE)", || format!("{}.AAAA.AAAA", valid())),
            Err("unsupported_token"),
        ),
        (
            case("nested JWT: cty JWT", || {
                signed(rsa()).header("cty", json!("JWT")).sign()
            }),
            Err("unsupported_token"),
        ),
        (
            case("nested JWT: cty application/jwt", || {
                signed(rsa()).header("cty", json!("application/JWT")).sign()
            }),
            Err("unsupported_token"),
        ),
        (
            case("control: another cty is fine", || {
                signed(rsa())
                    .header("cty", json!("application/json"))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("enc header", || {
                signed(rsa()).header("enc", json!("A256GCM")).sign()
            }),
            Err("unsupported_token"),
        ),
        (
            case("zip header", || {
                signed(rsa()).header("zip", json!("DEF")).sign()
            }),
            Err("unsupported_token"),
        ),
        (
            case("b64 false without crit", || {
                signed(rsa()).header("b64", json!(false)).sign()
            }),
            Err("unsupported_token"),
        ),
        // Key-carrying members are ignored: the key comes from the acme set as for any token.
        (
            case(
                "embedded jwk of the attacker, signed by the attacker, with kid",
                || signed(attacker()).header("jwk", attacker().jwk()).sign(),
            ),
            Err("unknown_kid"),
        ),
        (
            case(
                "embedded jwk of the attacker, signed by the attacker, no kid",
                || {
                    signed(attacker())
                        .remove_header("kid")
                        .header("jwk", attacker().jwk_without_alg())
                        .sign()
                },
            ),
            Err("missing_kid"),
        ),
        (
            case("embedded jwk of the attacker under the IdP's kid", || {
                signed(attacker())
                    .header("kid", json!("v-rsa"))
                    .header("jwk", attacker().jwk())
                    .sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("embedded jwk of the IdP's own key", || {
                signed(rsa()).header("jwk", rsa().jwk()).sign()
            }),
            Ok(()),
        ),
        (
            case("embedded jwk spelled with an escape", || {
                signed(attacker())
                    .raw_header(&format!(
                        r#"{{"alg":"RS256","kid":"v-attacker","j\u0077k":{}}}"#,
                        attacker().jwk()
                    ))
                    .sign()
            }),
            Err("unknown_kid"),
        ),
        (
            case("jku on a token the IdP signed", || {
                signed(rsa())
                    .header("jku", json!("https://evil.example/jwks"))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("x5u on a token the IdP signed", || {
                signed(rsa())
                    .header("x5u", json!("https://evil.example/cert.pem"))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("x5c on a token the IdP signed", || {
                signed(rsa())
                    .header("x5c", json!([STANDARD.encode(spki_der(attacker()))]))
                    .sign()
            }),
            Ok(()),
        ),
        // With `refuse_embedded_keys`, any of them refuses the token, however it is signed.
        (
            case("refused: embedded jwk of the IdP's own key", || {
                signed(rsa()).header("jwk", rsa().jwk()).sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("refused: embedded jwk of the attacker, no kid", || {
                signed(attacker())
                    .remove_header("kid")
                    .header("jwk", attacker().jwk_without_alg())
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("refused: embedded jwk spelled with an escape", || {
                signed(attacker())
                    .raw_header(&format!(
                        r#"{{"alg":"RS256","kid":"v-attacker","j\u0077k":{}}}"#,
                        attacker().jwk()
                    ))
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("refused: jku on a token the IdP signed", || {
                signed(rsa())
                    .header("jku", json!("https://evil.example/jwks"))
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("refused: x5u on a token the IdP signed", || {
                signed(rsa())
                    .header("x5u", json!("https://evil.example/cert.pem"))
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("refused: x5c on a token the IdP signed", || {
                signed(rsa())
                    .header("x5c", json!([STANDARD.encode(spki_der(attacker()))]))
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("untrusted_embedded_key"),
        ),
        (
            case("not refused: x5t carries no key", || {
                signed(rsa()).header("x5t", json!("AAAA")).sign()
            })
            .refuse_embedded_keys(),
            Ok(()),
        ),
        (
            case("refused: alg none still says alg_none", || {
                signed(rsa())
                    .header_alg_str("none")
                    .header("jwk", rsa().jwk())
                    .sign()
            })
            .refuse_embedded_keys(),
            Err("alg_none"),
        ),
        (
            case("required typ at+jwt: typ at+jwt", || {
                signed(rsa()).header("typ", json!("at+jwt")).sign()
            })
            .typ("at+jwt"),
            Ok(()),
        ),
        (
            case("required typ at+jwt: typ application/AT+JWT", || {
                signed(rsa())
                    .header("typ", json!("application/AT+JWT"))
                    .sign()
            })
            .typ("at+jwt"),
            Ok(()),
        ),
        (
            case("required typ at+jwt: typ JWT", valid).typ("at+jwt"),
            Err("unsupported_token"),
        ),
        (
            case("required typ at+jwt: no typ", || {
                signed(rsa()).remove_header("typ").sign()
            })
            .typ("at+jwt"),
            Err("unsupported_token"),
        ),
        (
            case("required typ at+jwt: typ at+jwt-extra", || {
                signed(rsa()).header("typ", json!("at+jwt-extra")).sign()
            })
            .typ("at+jwt"),
            Err("unsupported_token"),
        ),
        (
            case("required typ at+jwt: non-ASCII typ of 13 bytes", || {
                // 11 ASCII bytes then a two-byte character straddling byte 12.
                signed(rsa()).header("typ", json!("applicationé")).sign()
            })
            .typ("at+jwt"),
            Err("unsupported_token"),
        ),
        (
            case("no required typ: any typ is fine", || {
                signed(rsa()).header("typ", json!("applicationé")).sign()
            }),
            Ok(()),
        ),
    ]
}

fn key_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("kid not in the key set", || {
                signed(rsa()).header("kid", json!("v-nope")).sign()
            }),
            Err("unknown_kid"),
        ),
        (
            case("empty kid", || {
                signed(rsa()).header("kid", json!("")).sign()
            }),
            Err("unknown_kid"),
        ),
        (
            case("attacker's own kid and key", || signed(attacker()).sign()),
            Err("unknown_kid"),
        ),
        (
            case("static key set with no keys", valid).jwks(empty_jwks),
            Err("unknown_kid"),
        ),
        (
            case("no kid, two RSA keys fit RS256", || {
                signed(rsa()).remove_header("kid").sign()
            }),
            Err("missing_kid"),
        ),
        (
            case("no kid, a single key in the set", || {
                signed(rsa()).remove_header("kid").sign()
            })
            .jwks(only_rsa_jwks),
            Ok(()),
        ),
        (
            case(
                "no kid, ES256: one P-256 key fits, the enc one does not",
                || signed(p256()).remove_header("kid").sign(),
            ),
            Ok(()),
        ),
        (
            case(
                "no kid, ES384: one P-384 key fits, the sign-only one does not",
                || signed(p384()).remove_header("kid").sign(),
            ),
            Ok(()),
        ),
        (
            case("no kid, PS256: only the alg-less RSA key fits", || {
                signed(rsa_any())
                    .alg(Algorithm::PS256)
                    .remove_header("kid")
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("no kid, EdDSA", || signed(ed()).remove_header("kid").sign()),
            Ok(()),
        ),
        (
            case("no kid, empty key set", || {
                signed(rsa()).remove_header("kid").sign()
            })
            .jwks(empty_jwks),
            Err("missing_kid"),
        ),
        (
            case("ES256 token naming an RSA key", || {
                signed(p256()).header("kid", json!("v-rsa")).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("EdDSA token naming a P-256 key", || {
                signed(ed()).header("kid", json!("v-ec256")).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("ES384 token naming a P-256 key", || {
                signed(p384()).header("kid", json!("v-ec256")).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("RS256 token naming a JWK pinned to RS384", || {
                signed(rsa_rs384()).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case(
                "control: RS384 token naming the JWK pinned to RS384",
                || signed(rsa_rs384()).alg(Algorithm::RS384).sign(),
            ),
            Ok(()),
        ),
        (
            case("PS256 token naming a JWK pinned to RS256", || {
                signed(rsa()).alg(Algorithm::PS256).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("key published with use enc", || signed(p256_enc()).sign()),
            Err("key_alg_mismatch"),
        ),
        (
            case("key published with key_ops lacking verify", || {
                signed(p384_sign_only()).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("1024-bit RSA key", || {
                signed(rsa()).header("kid", json!("weak-1024")).sign()
            }),
            Err("weak_key"),
        ),
    ]
}

fn signature_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("tampered payload", || {
                let forged = {
                    let mut c = claims();
                    c.insert("sub".into(), json!("admin"));
                    b64url(Value::Object(c).to_string().as_bytes())
                };
                with_segment(&valid(), 1, |_| forged)
            }),
            Err("bad_signature"),
        ),
        (
            case("tampered header", || {
                let forged = b64url(br#"{"alg":"RS256","kid":"v-rsa","typ":"at+jwt"}"#);
                with_segment(&valid(), 0, |_| forged)
            }),
            Err("bad_signature"),
        ),
        (
            case("signature of another token", || {
                let other = signed(rsa()).claim("sub", json!("admin")).sign();
                let sig = other.rsplit('.').next().unwrap().to_owned();
                with_segment(&valid(), 2, |_| sig)
            }),
            Err("bad_signature"),
        ),
        (
            case("another key under the IdP's kid", || {
                signed(attacker()).header("kid", json!("v-rsa")).sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("truncated signature", || {
                with_signature(&valid(), |mut s| {
                    s.pop();
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("empty signature", || {
                with_segment(&valid(), 2, |_| String::new())
            }),
            Err("bad_signature"),
        ),
        (
            case("ES256 signature DER-encoded instead of r||s", || {
                with_signature(&signed(p256()).sign(), |s| der_ecdsa(&s))
            }),
            Err("bad_signature"),
        ),
        (
            case("control: ES256 signature as r||s", || signed(p256()).sign()),
            Ok(()),
        ),
        (
            case("tampered EdDSA token", || {
                let t = signed(ed()).sign();
                with_signature(&t, |mut s| {
                    s[0] ^= 1;
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("RS256 signature under a PS256 header", || {
                signed(rsa_any()).header_alg_str("PS256").sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("PS256 signature under an RS256 header", || {
                signed(rsa_any())
                    .alg(Algorithm::PS256)
                    .header_alg_str("RS256")
                    .sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("RS512 signature under an RS384 header", || {
                signed(rsa_any())
                    .alg(Algorithm::RS512)
                    .header_alg_str("RS384")
                    .sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("bad signature wins over an invalid claim", || {
                let t = signed(rsa()).claim("exp", json!("soon")).sign();
                with_signature(&t, |mut s| {
                    s[10] ^= 1;
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("bad signature wins over expiry", || {
                let t = signed(rsa()).claim("exp", json!(NOW - 3600)).sign();
                with_signature(&t, |mut s| {
                    s[10] ^= 1;
                    s
                })
            }),
            Err("bad_signature"),
        ),
    ]
}

fn algorithm_cases() -> Vec<(Spec, Expected)> {
    vec![
        (case("RS256", || signed(rsa()).sign()), Ok(())),
        (
            case("RS384", || signed(rsa_any()).alg(Algorithm::RS384).sign()),
            Ok(()),
        ),
        (
            case("RS512", || signed(rsa_any()).alg(Algorithm::RS512).sign()),
            Ok(()),
        ),
        (
            case("PS256", || signed(rsa_any()).alg(Algorithm::PS256).sign()),
            Ok(()),
        ),
        (
            case("PS384", || signed(rsa_any()).alg(Algorithm::PS384).sign()),
            Ok(()),
        ),
        (
            case("PS512", || signed(rsa_any()).alg(Algorithm::PS512).sign()),
            Ok(()),
        ),
        (case("ES256", || signed(p256()).sign()), Ok(())),
        (case("ES384", || signed(p384()).sign()), Ok(())),
        (case("ES512", || signed(p521()).sign()), Ok(())),
        (case("EdDSA", || signed(ed()).sign()), Ok(())),
        (
            case("Ed25519 (RFC 9864) under a JWK pinned to EdDSA", || {
                signed(ed()).alg(Algorithm::Ed25519).sign()
            }),
            Ok(()),
        ),
        (
            case("ES512 allowed alone", || signed(p521()).sign()).algorithms(&[Algorithm::ES512]),
            Ok(()),
        ),
        (
            case("ES512 not on an ES256/ES384 allow-list", || {
                signed(p521()).sign()
            })
            .algorithms(&[Algorithm::ES256, Algorithm::ES384]),
            Err("alg_not_allowed"),
        ),
        (
            case("ES512, no kid: the one P-521 key fits", || {
                signed(p521()).remove_header("kid").sign()
            }),
            Ok(()),
        ),
        (
            case("ES512 token naming a P-256 key", || {
                signed(p521()).header("kid", json!("v-ec256")).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("ES256 token naming the P-521 key", || {
                signed(p256()).header("kid", json!("v-ec521")).sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("tampered ES512 token", || {
                with_signature(&signed(p521()).sign(), |mut s| {
                    s[70] ^= 1;
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("ES512 signature one byte short", || {
                with_signature(&signed(p521()).sign(), |mut s| {
                    s.pop();
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("Ed25519 token, allow-list EdDSA", || {
                signed(ed()).alg(Algorithm::Ed25519).sign()
            })
            .algorithms(&[Algorithm::EdDSA]),
            Ok(()),
        ),
        (
            case("EdDSA token, allow-list Ed25519", || signed(ed()).sign())
                .algorithms(&[Algorithm::Ed25519]),
            Ok(()),
        ),
        (
            case("Ed25519 token, allow-list Ed25519", || {
                signed(ed()).alg(Algorithm::Ed25519).sign()
            })
            .algorithms(&[Algorithm::Ed25519]),
            Ok(()),
        ),
        (
            case("EdDSA token under a JWK pinned to Ed25519", || {
                signed(ed()).sign()
            })
            .jwks(ed25519_pinned_jwks),
            Ok(()),
        ),
        (
            case(
                "Ed25519 token under a JWK pinned to Ed25519, no kid",
                || {
                    signed(ed())
                        .alg(Algorithm::Ed25519)
                        .remove_header("kid")
                        .sign()
                },
            )
            .jwks(ed25519_pinned_jwks),
            Ok(()),
        ),
        (
            case("Ed25519 token naming a P-256 key", || {
                signed(ed())
                    .alg(Algorithm::Ed25519)
                    .header("kid", json!("v-ec256"))
                    .sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("Ed25519 token naming an RSA key", || {
                signed(ed())
                    .alg(Algorithm::Ed25519)
                    .header("kid", json!("v-rsa-any"))
                    .sign()
            }),
            Err("key_alg_mismatch"),
        ),
        (
            case("Ed25519 token, allow-list ES256 only", || {
                signed(ed()).alg(Algorithm::Ed25519).sign()
            })
            .algorithms(&[Algorithm::ES256]),
            Err("alg_not_allowed"),
        ),
        (
            case("tampered Ed25519 token", || {
                with_signature(&signed(ed()).alg(Algorithm::Ed25519).sign(), |mut s| {
                    s[0] ^= 1;
                    s
                })
            }),
            Err("bad_signature"),
        ),
        (
            case("Ed448 token", || {
                signed(ed()).header_alg_str("Ed448").sign()
            }),
            Err("alg_not_allowed"),
        ),
    ]
}

fn issuer_cases() -> Vec<(Spec, Expected)> {
    fn globex_claims() -> Map<String, Value> {
        typical_claims(OTHER_ISS, AUD, NOW)
    }
    vec![
        (
            case("globex token signed by globex", || {
                TokenBuilder::new(other()).claims(globex_claims()).sign()
            }),
            Ok(()),
        ),
        (
            case("acme iss, globex key and kid", || signed(other()).sign()),
            Err("unknown_kid"),
        ),
        (
            case("acme iss, globex key under acme's kid", || {
                signed(other()).header("kid", json!("v-rsa")).sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("globex iss, acme key and kid", || {
                TokenBuilder::new(rsa()).claims(globex_claims()).sign()
            }),
            Err("unknown_kid"),
        ),
        (
            case("globex iss, acme key under globex's kid", || {
                TokenBuilder::new(rsa())
                    .claims(globex_claims())
                    .header("kid", json!("v-other"))
                    .sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("globex iss, no kid, signed by acme", || {
                TokenBuilder::new(rsa())
                    .claims(globex_claims())
                    .remove_header("kid")
                    .sign()
            }),
            Err("bad_signature"),
        ),
        (
            case("unknown issuer", || {
                signed(rsa())
                    .claim("iss", json!("https://evil.example/"))
                    .sign()
            }),
            Err("bad_issuer"),
        ),
        (
            case("issuer without its trailing slash", || {
                signed(rsa())
                    .claim("iss", json!("https://idp.acme.example"))
                    .sign()
            }),
            Err("bad_issuer"),
        ),
        (
            case("issuer with an extra trailing slash", || {
                signed(rsa())
                    .claim("iss", json!("https://idp.acme.example//"))
                    .sign()
            }),
            Err("bad_issuer"),
        ),
        (
            case("issuer in another case", || {
                signed(rsa())
                    .claim("iss", json!("https://IDP.acme.example/"))
                    .sign()
            }),
            Err("bad_issuer"),
        ),
        (
            case("issuer written with JSON escapes", || {
                let text = claims_text(&["iss"], r#""iss":"https:\/\/idp.acme.\u0065xample\/""#);
                signed(rsa()).raw_claims(&text).sign()
            }),
            Ok(()),
        ),
        (
            case("verify_for_tenant of the token's tenant", valid).tenant(TENANT),
            Ok(()),
        ),
        (
            case("verify_for_tenant of another tenant", valid).tenant(OTHER_TENANT),
            Err("bad_issuer"),
        ),
        (
            case("verify_for_tenant of an unknown tenant", valid).tenant("initech"),
            Err("bad_issuer"),
        ),
    ]
}

fn claim_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("exp as a string", || {
                signed(rsa())
                    .claim("exp", json!((NOW + 60).to_string()))
                    .sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("exp null", || {
                signed(rsa()).claim("exp", Value::Null).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("nbf as a bool", || {
                signed(rsa()).claim("nbf", json!(true)).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("iat as an array", || {
                signed(rsa()).claim("iat", json!([NOW])).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("aud as a number", || {
                signed(rsa()).claim("aud", json!(7)).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("aud array with a number beside the right audience", || {
                signed(rsa()).claim("aud", json!([AUD, 7])).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("aud as an object", || {
                signed(rsa()).claim("aud", json!({"aud": AUD})).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("sub as a number", || {
                signed(rsa()).claim("sub", json!(42)).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("jti as a number", || {
                signed(rsa()).claim("jti", json!(42)).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("iss as a number", || {
                signed(rsa()).claim("iss", json!(42)).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("iss as an array holding the issuer", || {
                signed(rsa()).claim("iss", json!([ISS])).sign()
            }),
            Err("invalid_claim"),
        ),
        (
            case("no exp when required", || {
                signed(rsa()).remove_claim("exp").sign()
            }),
            Err("missing_claim"),
        ),
        (
            case("control: no exp when not required", || {
                signed(rsa()).remove_claim("exp").sign()
            })
            .require_exp(false),
            Ok(()),
        ),
        (
            case("no iss", || signed(rsa()).remove_claim("iss").sign()),
            Err("missing_claim"),
        ),
        (
            case("no aud when audiences are configured", || {
                signed(rsa()).remove_claim("aud").sign()
            }),
            Err("missing_claim"),
        ),
        (
            case("wrong audience string", || {
                signed(rsa())
                    .claim("aud", json!("https://api.other.example"))
                    .sign()
            }),
            Err("bad_audience"),
        ),
        (
            case("audience with a trailing slash", || {
                signed(rsa()).claim("aud", json!(format!("{AUD}/"))).sign()
            }),
            Err("bad_audience"),
        ),
        (
            case("empty audience string", || {
                signed(rsa()).claim("aud", json!("")).sign()
            }),
            Err("bad_audience"),
        ),
        (
            case("audience array without a match", || {
                signed(rsa())
                    .claim("aud", json!(["https://a.example", "https://b.example"]))
                    .sign()
            }),
            Err("bad_audience"),
        ),
        (
            case("empty audience array", || {
                signed(rsa()).claim("aud", json!([])).sign()
            }),
            Err("bad_audience"),
        ),
        (
            case("audience array with one match", || {
                signed(rsa())
                    .claim(
                        "aud",
                        json!(["https://a.example", AUD, "https://b.example"]),
                    )
                    .sign()
            }),
            Ok(()),
        ),
    ]
}

fn time_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("exp an hour ago", || {
                signed(rsa()).claim("exp", json!(NOW - 3600)).sign()
            }),
            Err("expired"),
        ),
        (
            case("now == exp, leeway 0", || {
                signed(rsa()).claim("exp", json!(NOW)).sign()
            })
            .leeway(0),
            Err("expired"),
        ),
        (
            case("now == exp - 1, leeway 0", || {
                signed(rsa()).claim("exp", json!(NOW + 1)).sign()
            })
            .leeway(0),
            Ok(()),
        ),
        (
            case("expired 20 s ago, leeway 30 s", || {
                signed(rsa()).claim("exp", json!(NOW - 20)).sign()
            })
            .leeway(30),
            Ok(()),
        ),
        (
            case("expired 29 s ago, leeway 30 s", || {
                signed(rsa()).claim("exp", json!(NOW - 29)).sign()
            })
            .leeway(30),
            Ok(()),
        ),
        (
            case("expired 30 s ago, leeway 30 s", || {
                signed(rsa()).claim("exp", json!(NOW - 30)).sign()
            })
            .leeway(30),
            Err("expired"),
        ),
        (
            case("negative exp", || {
                signed(rsa()).claim("exp", json!(-1)).sign()
            }),
            Err("expired"),
        ),
        (
            case("exp -1e300", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["exp"], r#""exp":-1e300"#))
                    .sign()
            }),
            Err("expired"),
        ),
        (
            case("exp 1e300 (far future)", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["exp"], r#""exp":1e300"#))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("exp beyond i64", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["exp"], r#""exp":99999999999999999999999"#))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("exp 1e400 (beyond f64: malformed JSON for us)", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["exp"], r#""exp":1e400"#))
                    .sign()
            }),
            Err("malformed"),
        ),
        (
            case("iat -1e400", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["iat"], r#""iat":-1e400"#))
                    .sign()
            }),
            Err("malformed"),
        ),
        (
            case("exp in exponent notation", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["exp"], r#""exp":1.7e9"#))
                    .sign()
            }),
            Ok(()),
        ),
        (
            case("fractional exp, nbf and iat", || {
                signed(rsa())
                    .claim("exp", json!(NOW as f64 + 3600.75))
                    .claim("nbf", json!(NOW as f64 - 10.5))
                    .claim("iat", json!(NOW as f64 - 0.25))
                    .sign()
            })
            .leeway(0),
            Ok(()),
        ),
        (
            case("fractional exp half a second ago, leeway 0", || {
                signed(rsa()).claim("exp", json!(NOW as f64 - 0.5)).sign()
            })
            .leeway(0),
            Err("expired"),
        ),
        (
            case("fractional nbf 1.5 s ahead, leeway 0", || {
                signed(rsa()).claim("nbf", json!(NOW as f64 + 1.5)).sign()
            })
            .leeway(0),
            Err("not_yet_valid"),
        ),
        (
            case("nbf == now, leeway 0", || {
                signed(rsa()).claim("nbf", json!(NOW)).sign()
            })
            .leeway(0),
            Ok(()),
        ),
        (
            case("nbf one second ahead, leeway 0", || {
                signed(rsa()).claim("nbf", json!(NOW + 1)).sign()
            })
            .leeway(0),
            Err("not_yet_valid"),
        ),
        (
            case("nbf 30 s ahead, leeway 30 s", || {
                signed(rsa()).claim("nbf", json!(NOW + 30)).sign()
            })
            .leeway(30),
            Ok(()),
        ),
        (
            case("nbf 31 s ahead, leeway 30 s", || {
                signed(rsa()).claim("nbf", json!(NOW + 31)).sign()
            })
            .leeway(30),
            Err("not_yet_valid"),
        ),
        (
            case("nbf 1e300", || {
                signed(rsa())
                    .raw_claims(&claims_text(&["nbf"], r#""nbf":1e300"#))
                    .sign()
            }),
            Err("not_yet_valid"),
        ),
        (
            case("iat == now, leeway 0", || {
                signed(rsa()).claim("iat", json!(NOW)).sign()
            })
            .leeway(0),
            Ok(()),
        ),
        (
            case("iat one second ahead, leeway 0", || {
                signed(rsa()).claim("iat", json!(NOW + 1)).sign()
            })
            .leeway(0),
            Err("iat_in_future"),
        ),
        (
            case("iat 30 s ahead, leeway 30 s", || {
                signed(rsa()).claim("iat", json!(NOW + 30)).sign()
            })
            .leeway(30),
            Ok(()),
        ),
        (
            case("iat an hour ahead, leeway 30 s", || {
                signed(rsa()).claim("iat", json!(NOW + 3600)).sign()
            }),
            Err("iat_in_future"),
        ),
    ]
}

const JTI: &str = "v-jti-1";

fn with_jti() -> String {
    signed(rsa()).claim("jti", json!(JTI)).sign()
}

fn revocation_cases() -> Vec<(Spec, Expected)> {
    vec![
        (
            case("jti revoked", with_jti).revoke(|r| r.revoke_jti(JTI, NOW + 3600)),
            Err("revoked"),
        ),
        (
            case("another jti revoked", with_jti).revoke(|r| r.revoke_jti("v-jti-2", NOW + 3600)),
            Ok(()),
        ),
        (
            case("revoked jti on an expired token reports expiry", || {
                signed(rsa())
                    .claim("jti", json!(JTI))
                    .claim("exp", json!(NOW - 3600))
                    .sign()
            })
            .revoke(|r| r.revoke_jti(JTI, NOW + 3600)),
            Err("expired"),
        ),
        (
            case("subject revoked, token issued before the cut-off", valid)
                .revoke(|r| r.revoke_subject(TENANT, SUB, NOW, NOW + 7200)),
            Err("revoked"),
        ),
        (
            case("subject revoked, token without iat", || {
                signed(rsa()).remove_claim("iat").sign()
            })
            .revoke(|r| r.revoke_subject(TENANT, SUB, NOW, NOW + 7200)),
            Err("revoked"),
        ),
        (
            case("subject revoked, token issued after the cut-off", valid)
                .revoke(|r| r.revoke_subject(TENANT, SUB, NOW - 60, NOW + 7200)),
            Ok(()),
        ),
        (
            case("subject revoked, token issued at the cut-off", valid)
                .revoke(|r| r.revoke_subject(TENANT, SUB, NOW - 10, NOW + 7200)),
            Ok(()),
        ),
        (
            case("same subject revoked in another tenant", valid)
                .revoke(|r| r.revoke_subject(OTHER_TENANT, SUB, NOW, NOW + 7200)),
            Ok(()),
        ),
        (
            case("kid revoked", valid)
                .revoke(|r| r.revoke_kid(&ProviderId::new(TENANT, "idp"), "v-rsa", None)),
            Err("revoked"),
        ),
        (
            case(
                "kid revoked, token without kid verified by that key",
                || signed(p256()).remove_header("kid").sign(),
            )
            .revoke(|r| r.revoke_kid(&ProviderId::new(TENANT, "idp"), "v-ec256", None)),
            Err("revoked"),
        ),
        (
            case("same kid revoked for another provider", valid)
                .revoke(|r| r.revoke_kid(&ProviderId::new(OTHER_TENANT, "idp"), "v-rsa", None)),
            Ok(()),
        ),
    ]
}

fn all_cases() -> Vec<(Spec, Expected)> {
    [
        structure_cases(),
        header_cases(),
        key_cases(),
        signature_cases(),
        algorithm_cases(),
        issuer_cases(),
        claim_cases(),
        time_cases(),
        revocation_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn structure() {
    run(structure_cases()).await;
}

#[tokio::test]
async fn header() {
    run(header_cases()).await;
}

#[tokio::test]
async fn keys() {
    run(key_cases()).await;
}

#[tokio::test]
async fn signatures() {
    run(signature_cases()).await;
}

#[tokio::test]
async fn every_algorithm_verifies() {
    run(algorithm_cases()).await;
}

#[tokio::test]
async fn issuers_and_tenants() {
    run(issuer_cases()).await;
}

#[tokio::test]
async fn claims_types_presence_and_audience() {
    run(claim_cases()).await;
}

#[tokio::test]
async fn time_claims() {
    run(time_cases()).await;
}

#[tokio::test]
async fn revocations() {
    run(revocation_cases()).await;
}

/// Every reason code a static provider can produce has at least one row, and rows name only
/// documented codes.
#[test]
fn every_reason_code_has_a_row() {
    // Codes of fetched key sets, of introspection (tests/it/introspection.rs) and of DPoP
    // (tests/it/dpop.rs): a static provider's JWTs cannot produce them.
    let fetched_only = [
        "keys_unavailable",
        "malformed_jwks",
        "inactive",
        "introspection_busy",
        "introspection_unavailable",
        "tenant_required",
    ];
    let covered: BTreeSet<&str> = all_cases()
        .iter()
        .filter_map(|(_, expected)| expected.err())
        .collect();
    for reason in &covered {
        assert!(reason_codes().contains(reason), "{reason}");
    }
    let missing: Vec<&str> = reason_codes()
        .iter()
        .copied()
        .filter(|r| !covered.contains(r) && !fetched_only.contains(r) && !r.starts_with("dpop_"))
        .collect();
    assert!(
        missing.is_empty(),
        "reason codes without a row: {missing:?}"
    );
    let mut names = BTreeSet::new();
    for (spec, _) in all_cases() {
        assert!(
            names.insert(spec.name),
            "duplicate row name {:?}",
            spec.name
        );
    }
}

#[tokio::test]
async fn verified_token_exposes_the_claims() {
    #[derive(serde::Deserialize)]
    struct Access {
        scope: String,
        realm_access: Roles,
    }
    #[derive(serde::Deserialize)]
    struct Roles {
        roles: Vec<String>,
    }

    let mut expected = claims();
    expected.insert("jti".into(), json!(JTI));
    expected.insert("nested".into(), json!({"a": [1, 2.5, null, {"b": "ü"}]}));
    let token = signed(p256()).claims(expected.clone()).sign();
    let verifier = case("claims", String::new).verifier();

    let verified = verifier.verify(&token).await.expect("valid token");
    assert_eq!(verified.claims(), expected);
    assert_eq!(
        serde_json::from_str::<Value>(verified.claims_json()).unwrap(),
        Value::Object(expected)
    );
    assert_eq!(verified.issuer(), ISS);
    assert_eq!(verified.subject(), Some(SUB));
    assert_eq!(verified.jti(), Some(JTI));
    assert_eq!(verified.expires_at(), Some(NOW + 3600));
    assert_eq!(verified.issued_at(), Some(NOW - 10));
    assert_eq!(verified.kid(), Some("v-ec256"));
    assert_eq!(verified.algorithm(), Some(Algorithm::ES256));
    assert_eq!(verified.tenant(), TENANT);
    assert_eq!(*verified.provider(), ProviderId::new(TENANT, "idp"));
    let access: Access = verified.deserialize_claims().unwrap();
    assert_eq!(access.scope, "read write");
    assert_eq!(access.realm_access.roles.len(), 3);
}

/// `claims()` parses the payload again after verification; whatever verification accepted,
/// that parse must accept too, or callers silently see an empty claims set.
#[tokio::test]
async fn accepted_claims_are_never_silently_empty() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let payloads = [
        // Deeper than serde_json's default recursion limit (128), far below the size limit.
        (
            "claim nested 200 deep",
            claims_text(&[], &format!(r#""deep":{deep}"#)),
        ),
        (
            "lone surrogate escape in an unregistered claim",
            claims_text(&[], r#""note":"\ud800""#),
        ),
    ];
    let verifier = case("claims() round trip", String::new).verifier();
    let mut failures = Vec::new();
    for (label, text) in payloads {
        let token = signed(rsa()).raw_claims(&text).sign();
        match verifier.verify(&token).await {
            Err(e) if e.reason() == "malformed" => {}
            Err(e) => failures.push(format!("{label}: refused as {}", e.reason())),
            Ok(verified) if verified.claims().get("iss") == Some(&json!(ISS)) => {}
            Ok(verified) => failures.push(format!(
                "{label}: accepted, but claims() has {} members",
                verified.claims().len()
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A cached verification is reused, dropped by a revocation, and never outlives `exp`.
#[tokio::test]
async fn verified_token_cache() {
    let clock = Arc::new(ManualClock::at_unix(NOW.unsigned_abs()));
    let revocations = Revocations::new();
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder(TENANT, "idp", ISS)
                .static_jwks(serde_json::to_vec(&idp_jwks()).unwrap())
                .audiences([AUD])
                .leeway(Duration::from_secs(0))
                .build()
                .unwrap(),
        )
        .provider(other_provider())
        .clock(clock.clone())
        .revocations(Arc::new(revocations.clone()))
        .token_cache(100)
        .build()
        .unwrap();
    let hits = || verifier.status()[0].counters.token_cache_hits;
    let reason = |r: Result<Arc<keygate::VerifiedToken>, VerifyError>| {
        r.map(drop).map_err(|e| e.reason().as_str())
    };

    // Reuse.
    let token = with_jti();
    assert_eq!(reason(verifier.verify(&token).await), Ok(()));
    assert_eq!((hits(), verifier.cached_tokens()), (0, 1));
    assert_eq!(reason(verifier.verify(&token).await), Ok(()));
    assert_eq!(hits(), 1, "second verify is a cache hit");
    let again = verifier.verify(&token).await.unwrap();
    assert_eq!(hits(), 2);
    assert_eq!(again.jti(), Some(JTI));

    // The cache never widens verify_for_tenant.
    assert_eq!(
        reason(verifier.verify_for_tenant(OTHER_TENANT, &token).await),
        Err("bad_issuer")
    );
    // A tampered copy is not the cached token.
    let tampered = with_segment(&token, 1, |_| {
        b64url(claims_text(&["sub"], r#""sub":"admin""#).as_bytes())
    });
    assert_eq!(
        reason(verifier.verify(&tampered).await),
        Err("bad_signature")
    );

    // Revocation after caching.
    revocations.revoke_jti(JTI, NOW + 3600);
    assert_eq!(reason(verifier.verify(&token).await), Err("revoked"));
    assert_eq!(reason(verifier.verify(&token).await), Err("revoked"));

    // Expiry while cached: exp is NOW + 60 and the leeway is zero.
    let short = signed(rsa()).claim("exp", json!(NOW + 60)).sign();
    assert_eq!(reason(verifier.verify(&short).await), Ok(()));
    let before = hits();
    clock.advance(Duration::from_secs(59));
    assert_eq!(reason(verifier.verify(&short).await), Ok(()));
    assert_eq!(hits(), before + 1, "still cached one second before exp");
    clock.advance(Duration::from_secs(1));
    assert_eq!(reason(verifier.verify(&short).await), Err("expired"));
    assert_eq!(hits(), before + 1, "an expired entry is not a hit");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(reason(verifier.verify(&short).await), Err("expired"));
}
