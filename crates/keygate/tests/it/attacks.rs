//! Attacks on the verifier and the fetcher, each asserting exactly how keygate refuses.
//!
//! Token attacks are rows of one table, run through the one [`check`] helper: a fresh
//! verifier over an in-memory IdP that counts requests, so every row also bounds how many key
//! set fetches the attack could cause. Rows are built to *pass* if the check they exercise
//! were missing wherever that is possible: the forged tokens carry the provider's issuer and
//! audience, fresh times and, unless the attack is the signature itself, a real signature.
//!
//! Fetch attacks (redirects, endless, huge and trickling bodies, oversized key sets) drive
//! the real `HttpFetcher` against the stub IdP on loopback, bounded in time. Their memory is
//! measured twice: exactly, as the most heap the fetch held at once on its thread (the test
//! binary's counting allocator), and roughly, as the growth of the process's peak RSS.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keygate::fetch::{Fetch, FetchError, FetchRequest, HttpFetcher};
use keygate::jwk::KeySet;
use keygate::{Algorithm, CacheSettings, ProviderConfig, Verifier};
use keygate_test_support::{
    ManualClock, StubBody, StubIdp, StubResponse, TestKey, TokenBuilder, b64url, typical_claims,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::memidp::{AUD, ISSUER, JWKS_URI, MemoryIdp, T0};
use crate::support::{pem, reason_codes};

// ---------------------------------------------------------------------------------------------
// The table and its one check.

/// One forged token and how it must be refused.
struct Attack {
    name: String,
    token: String,
    /// The reason code (`VerifyError::reason`), or `"valid"` for a token that must pass.
    expected: &'static str,
    /// The most key set requests the IdP may see while this token is verified by a fresh
    /// verifier (the first fetch of the set counts).
    max_fetches: usize,
    /// The verifier's `max_token_bytes` (the library default when `None`).
    max_token_bytes: Option<usize>,
    /// The provider is built with `refuse_embedded_keys(true)`.
    refuse_embedded_keys: bool,
}

fn attack(name: impl Into<String>, token: String, expected: &'static str) -> Attack {
    Attack {
        name: name.into(),
        token,
        expected,
        max_fetches: 0,
        max_token_bytes: None,
        refuse_embedded_keys: false,
    }
}

impl Attack {
    fn fetches(mut self, max: usize) -> Self {
        self.max_fetches = max;
        self
    }

    fn limit(mut self, bytes: usize) -> Self {
        self.max_token_bytes = Some(bytes);
        self
    }

    fn refusing_embedded_keys(mut self) -> Self {
        self.refuse_embedded_keys = true;
        self
    }
}

/// What a row did, for the failure report.
struct Outcome {
    fetches: usize,
    elapsed: Duration,
}

/// The provider's key set: its RSA key (pinned to RS256), its P-256 key, and an `oct` entry
/// that must never become a key.
fn idp_document() -> Value {
    json!({"keys": [
        rsa().jwk(),
        p256().jwk(),
        {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64url(OCT_SECRET)},
    ]})
}

/// A fresh verifier of the provider over a fresh counting IdP, at `T0`.
fn rig(max_token_bytes: Option<usize>, refuse_embedded_keys: bool) -> (Verifier, Arc<MemoryIdp>) {
    let idp = MemoryIdp::new(&[]);
    idp.serve_document(idp_document());
    let provider = ProviderConfig::builder("acme", "idp", ISSUER)
        .jwks_uri(JWKS_URI)
        .audiences([AUD])
        .cache(CacheSettings::default())
        .refuse_embedded_keys(refuse_embedded_keys)
        .build()
        .expect("provider");
    let mut builder = Verifier::builder()
        .provider(provider)
        .clock(Arc::new(ManualClock::at_unix(T0)))
        .fetcher(idp.clone());
    if let Some(limit) = max_token_bytes {
        builder = builder.max_token_bytes(limit);
    }
    (builder.build().expect("verifier"), idp)
}

/// Verifies the row's token with a fresh verifier and checks the reason, the fetch bound and
/// that the refusal was quick. The verification runs on its own task so that a panic is this
/// row's outcome (`"panic"`), not the end of the table.
async fn check(row: &Attack) -> Result<Outcome, String> {
    let (verifier, idp) = rig(row.max_token_bytes, row.refuse_embedded_keys);
    let token = row.token.clone();
    let started = Instant::now();
    let joined = tokio::spawn(async move { verifier.verify(&token).await.map(drop) }).await;
    let elapsed = started.elapsed();
    let reason = match joined {
        Ok(Ok(())) => "valid",
        Ok(Err(e)) => e.reason().as_str(),
        Err(join) if join.is_panic() => "panic",
        Err(join) => return Err(format!("{}: task failed: {join}", row.name)),
    };
    let outcome = Outcome {
        fetches: idp.requests(),
        elapsed,
    };
    let mut problems = Vec::new();
    if reason != "valid" && reason != "panic" && !reason_codes().contains(&reason) {
        problems.push(format!("undocumented reason {reason:?}"));
    }
    if reason != row.expected {
        problems.push(format!("expected {:?}, got {reason:?}", row.expected));
    }
    if outcome.fetches > row.max_fetches {
        problems.push(format!(
            "{} IdP requests, at most {} allowed",
            outcome.fetches, row.max_fetches
        ));
    }
    // Whatever a token names (`jku`, `x5u`, a URL as `kid`), only the provider's own JWKS
    // URL is ever fetched.
    let elsewhere: Vec<String> = idp.urls().into_iter().filter(|u| u != JWKS_URI).collect();
    if !elsewhere.is_empty() {
        problems.push(format!("fetched {elsewhere:?}"));
    }
    // Generous: the point is that no row hangs or goes quadratic, on a machine that may be
    // busy with other builds. The figures printed by `run` are the real ones.
    if elapsed > Duration::from_secs(5) {
        problems.push(format!("took {elapsed:?}"));
    }
    if problems.is_empty() {
        Ok(outcome)
    } else {
        Err(format!("{}: {}", row.name, problems.join("; ")))
    }
}

/// Runs every row and reports all mismatches at once.
async fn run(table: Vec<Attack>) -> Vec<Outcome> {
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for row in &table {
        match check(row).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks were not refused as expected:\n  {}",
        failures.len(),
        table.len(),
        failures.join("\n  ")
    );
    let fetches = outcomes.iter().map(|o| o.fetches).max().unwrap_or(0);
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    println!(
        "{} rows as expected; at most {fetches} IdP requests each, slowest {slowest:?}",
        table.len()
    );
    outcomes
}

// ---------------------------------------------------------------------------------------------
// Keys and token pieces.

const OCT_SECRET: &[u8] = b"an-hmac-secret-in-the-key-set-0123456789";

/// The provider's RSA key; its JWK pins `alg: RS256`.
fn rsa() -> &'static TestKey {
    TestKey::shared_rsa("atk-rsa")
}

fn p256() -> &'static TestKey {
    TestKey::shared_p256("atk-ec")
}

/// A key in nobody's key set.
fn attacker() -> &'static TestKey {
    TestKey::shared_p256("atk-attacker")
}

fn claims() -> Map<String, Value> {
    typical_claims(ISSUER, AUD, i64::try_from(T0).expect("T0 fits"))
}

fn claims_json() -> String {
    Value::Object(claims()).to_string()
}

/// A token the provider really signed.
fn genuine() -> TokenBuilder<'static> {
    TokenBuilder::new(rsa()).claims(claims())
}

/// `header.payload` signed by `key` under `alg`, from raw JSON texts.
fn signed_raw(header: &str, payload: &str, key: &TestKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let signature = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

/// `payload` signed as it stands by the RSA key, under the header `{"alg":"RS256","kid":"atk-rsa"}`.
fn rs256_raw(payload: &str) -> String {
    signed_raw(
        r#"{"alg":"RS256","kid":"atk-rsa"}"#,
        payload,
        rsa(),
        Algorithm::RS256,
    )
}

/// An HMAC token (HS256/384/512) over `header` and the standard claims, keyed with `secret`.
fn hmac_token(alg: &str, header: &Value, secret: &[u8]) -> String {
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims_json().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short form"));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The RSA key as PKCS#1 `RSAPublicKey` DER.
fn pkcs1_der() -> Vec<u8> {
    rsa().public_key_bytes()
}

/// The RSA key as X.509 `SubjectPublicKeyInfo` DER (what `BEGIN PUBLIC KEY` holds).
fn spki_der() -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let algorithm = der(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bits = vec![0];
    bits.extend(pkcs1_der());
    let mut body = algorithm;
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// `[[[...1...]]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

// ---------------------------------------------------------------------------------------------
// The attacks.

/// HMAC tokens keyed with the provider's public key in every encoding an attacker might
/// guess a confused verifier would use as the MAC secret.
fn algorithm_confusion() -> Vec<Attack> {
    let (n, _) = rsa().rsa_public_components().expect("RSA key");
    let jwk_text = rsa().jwk().to_string();
    let n_b64 = b64url(&n);
    let spki_pem = pem("PUBLIC KEY", &spki_der());
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM SPKI", spki_pem.clone().into_bytes()),
        (
            "PEM SPKI without newline",
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        (
            "PEM PKCS#1",
            pem("RSA PUBLIC KEY", &pkcs1_der()).into_bytes(),
        ),
        ("DER SPKI", spki_der()),
        ("DER PKCS#1", pkcs1_der()),
        ("JWK n bytes", n),
        ("JWK n base64url text", n_b64.into_bytes()),
        ("JWK JSON text", jwk_text.into_bytes()),
    ];
    let mut rows = Vec::new();
    for alg in ["HS256", "HS384", "HS512"] {
        for (what, secret) in &secrets {
            for kid in [Some(rsa().kid()), None] {
                let mut header = json!({"alg": alg, "typ": "JWT"});
                if let Some(kid) = kid {
                    header["kid"] = json!(kid);
                }
                rows.push(attack(
                    format!("{alg} keyed with the {what}, kid {kid:?}"),
                    hmac_token(alg, &header, secret),
                    "alg_not_allowed",
                ));
            }
        }
    }
    // The key set's own `oct` entry, used exactly as published: still no HMAC.
    rows.push(attack(
        "HS256 keyed with the set's oct key",
        hmac_token("HS256", &json!({"alg": "HS256", "kid": "hmac"}), OCT_SECRET),
        "alg_not_allowed",
    ));
    // Across asymmetric families: the key's kty and pinned alg decide, not the header.
    let naming = |name: &str, signer: &TestKey, named: &TestKey| {
        let token = TokenBuilder::new(signer)
            .header("kid", json!(named.kid()))
            .claims(claims())
            .sign();
        attack(name, token, "key_alg_mismatch")
    };
    rows.push(naming("ES256 naming the RSA key", p256(), rsa()));
    rows.push(attack(
        "PS256 under the RS256-pinned RSA key",
        genuine().alg(Algorithm::PS256).sign(),
        "key_alg_mismatch",
    ));
    rows.push(naming("RS256 naming the P-256 key", rsa(), p256()));
    for row in &mut rows {
        // Refused on the header alone, or after the first fetch for a cross-family kid.
        row.max_fetches = 1;
    }
    rows
}

/// `alg: none` in every casing, signed or not; `alg` missing, empty or not a string.
fn unsecured_and_odd_algs() -> Vec<Attack> {
    let mut rows = Vec::new();
    for spelling in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": spelling, "kid": rsa().kid(), "typ": "JWT"}).to_string();
        let real = signed_raw(&header, &claims_json(), rsa(), Algorithm::RS256);
        let unsigned = format!("{}.", real.rsplit_once('.').expect("three segments").0);
        rows.push(attack(
            format!("alg {spelling:?}, empty signature"),
            unsigned,
            "alg_none",
        ));
        rows.push(attack(
            format!("alg {spelling:?}, a real RS256 signature"),
            real,
            "alg_none",
        ));
        rows.push(attack(
            format!("alg {spelling:?}, no kid"),
            genuine()
                .header_alg_str(spelling)
                .remove_header("kid")
                .sign(),
            "alg_none",
        ));
    }
    rows.push(attack(
        "alg none spelled with an escape",
        signed_raw(
            r#"{"\u0061lg":"n\u006fne"}"#,
            &claims_json(),
            rsa(),
            Algorithm::RS256,
        ),
        "alg_none",
    ));
    let odd: [(&str, &'static str); 10] = [
        (r#"{"typ":"JWT","kid":"atk-rsa"}"#, "malformed"),
        (r#"{"alg":"","kid":"atk-rsa"}"#, "alg_not_allowed"),
        (r#"{"alg":"none ","kid":"atk-rsa"}"#, "alg_not_allowed"),
        (r#"{"alg":"rs256","kid":"atk-rsa"}"#, "alg_not_allowed"),
        (r#"{"alg":7,"kid":"atk-rsa"}"#, "malformed"),
        (r#"{"alg":null,"kid":"atk-rsa"}"#, "malformed"),
        (r#"{"alg":true,"kid":"atk-rsa"}"#, "malformed"),
        (r#"{"alg":["RS256"],"kid":"atk-rsa"}"#, "malformed"),
        (r#"{"alg":{"name":"RS256"},"kid":"atk-rsa"}"#, "malformed"),
        (
            r#"{"alg":"RS256","alg":"none","kid":"atk-rsa"}"#,
            "malformed",
        ),
    ];
    for (header, reason) in odd {
        rows.push(attack(
            format!("header {header}"),
            signed_raw(header, &claims_json(), rsa(), Algorithm::RS256),
            reason,
        ));
    }
    rows
}

/// Keys offered by the token itself (RFC 8725 section 3.10), with the attacker's own key or
/// the provider's, with and without a `kid`. These members are never trusted: the key comes
/// from the provider's set as for any token, so the attacker's tokens fail on their
/// signature or `kid` (after at most the first fetch and one forced refetch, both of the
/// provider's own JWKS URL, never a `jku` or `x5u`), and the provider's own tokens verify.
fn embedded_keys() -> Vec<Attack> {
    let members: [(&str, Value); 7] = [
        ("jwk", attacker().jwk()),
        ("jwk", Value::Null),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!([STANDARD.encode(spki_der())])),
        ("x5c", json!([])),
        // All four at once, pointing at the attacker.
        (
            "jwk",
            json!({"kty": "EC", "crv": "P-256", "x": attacker().jwk()["x"], "y": attacker().jwk()["y"]}),
        ),
    ];
    let mut rows = Vec::new();
    for (i, (name, value)) in members.into_iter().enumerate() {
        let with = |b: TokenBuilder<'static>| {
            let b = b.header(name, value.clone());
            if i == 6 {
                b.header("jku", json!("https://evil.example/jwks.json"))
                    .header("x5u", json!("https://evil.example/cert.pem"))
                    .header("x5c", json!([STANDARD.encode(spki_der())]))
            } else {
                b
            }
        };
        rows.push(
            attack(
                format!("{name} = {value}, signed by the attacker's key under its own kid"),
                with(TokenBuilder::new(attacker()).claims(claims())).sign(),
                "unknown_kid",
            )
            .fetches(2),
        );
        rows.push(
            attack(
                format!("{name} = {value}, signed by the attacker's key under the provider's kid"),
                with(TokenBuilder::new(attacker()).claims(claims()))
                    .header("kid", json!(p256().kid()))
                    .sign(),
                "bad_signature",
            )
            .fetches(2),
        );
        rows.push(
            attack(
                format!("{name} = {value}, signed by the attacker's key, no kid"),
                with(
                    TokenBuilder::new(attacker())
                        .remove_header("kid")
                        .claims(claims()),
                )
                .sign(),
                "bad_signature",
            )
            .fetches(2),
        );
        rows.push(
            attack(
                format!("{name} = {value}, signed by the provider's key under its kid"),
                with(genuine()).sign(),
                "valid",
            )
            .fetches(1),
        );
    }
    // A thumbprint names a certificate but carries no key: accepted either way.
    rows.push(
        attack(
            "x5t on a token the provider signed",
            genuine().header("x5t", json!("AAAA")).sign(),
            "valid",
        )
        .fetches(1),
    );
    rows
}

/// The same tokens under a provider with `refuse_embedded_keys`: every one carrying a key
/// is refused before any fetch, however it is signed; `x5t` alone is still no key.
fn embedded_keys_refused() -> Vec<Attack> {
    embedded_keys()
        .into_iter()
        .map(|mut row| {
            if row.name.starts_with("x5t") {
                return row.refusing_embedded_keys();
            }
            row.expected = "untrusted_embedded_key";
            row.max_fetches = 0;
            row.refusing_embedded_keys()
        })
        .collect()
}

/// Hostile `kid` values. A string `kid` is only ever compared, never used as a path, query
/// or header: each is an unknown kid, for at most the first fetch and one forced refetch.
fn hostile_kids() -> Vec<Attack> {
    let long = "k".repeat(10 * 1024);
    let kids: Vec<(&str, String)> = vec![
        ("path traversal", "../../etc/passwd".into()),
        ("windows path traversal", r"..\..\windows\win.ini".into()),
        ("encoded traversal", "%2e%2e%2f%2e%2e%2fetc%2fpasswd".into()),
        ("file URL", "file:///etc/passwd".into()),
        ("SQL", "' OR 1=1 --".into()),
        ("SQL stacked", "x'; DROP TABLE keys; --".into()),
        ("NUL byte", "atk-rsa\0".into()),
        ("only NUL", "\0".into()),
        ("CRLF header injection", "a\r\nX-Injected: 1".into()),
        ("10 KB", long),
        ("unicode", "🔑ключ-密钥".into()),
        ("right-to-left override", "\u{202e}asr-kta".into()),
        ("lookalike of the real kid", "atk-rs\u{0430}".into()),
        ("empty", String::new()),
        ("JSON in a string", r#"{"kid":"atk-rsa"}"#.into()),
    ];
    let mut rows: Vec<Attack> = kids
        .into_iter()
        .map(|(what, kid)| {
            attack(
                format!("kid: {what}"),
                TokenBuilder::new(attacker())
                    .header("kid", json!(kid))
                    .claims(claims())
                    .sign(),
                "unknown_kid",
            )
            .fetches(2)
        })
        .collect();
    for kid in [
        json!(7),
        json!(null),
        json!(["atk-rsa"]),
        json!({"$ne": ""}),
        json!(true),
    ] {
        rows.push(attack(
            format!("kid {kid}"),
            genuine().header("kid", kid).sign(),
            "malformed",
        ));
    }
    rows
}

/// `crit` in every shape: keygate understands no extension, so every `crit` is refused.
fn crit_abuse() -> Vec<Attack> {
    // (what, crit, other header members)
    let shapes: [(&str, Value, Value); 9] = [
        ("unknown extension", json!(["x-bank"]), json!({"x-bank": 1})),
        ("naming an absent header", json!(["exp"]), json!({})),
        ("empty array", json!([]), json!({})),
        ("b64, b64 false", json!(["b64"]), json!({"b64": false})),
        ("b64, b64 true", json!(["b64"]), json!({"b64": true})),
        ("not an array", json!("b64"), json!({})),
        ("null", Value::Null, json!({})),
        ("naming a registered header", json!(["alg"]), json!({})),
        ("the same name twice", json!(["x", "x"]), json!({"x": 1})),
    ];
    shapes
        .into_iter()
        .map(|(what, crit, extra)| {
            let mut token = genuine().header("crit", crit);
            for (name, value) in extra.as_object().expect("an object") {
                token = token.header(name, value.clone());
            }
            attack(format!("crit: {what}"), token.sign(), "crit_header")
        })
        .collect()
}

/// Size and depth: oversized tokens are refused before decoding; deeply nested JSON is a
/// typed error, not a stack overflow.
fn oversized_and_deep() -> Vec<Attack> {
    let limit = keygate::DEFAULT_MAX_TOKEN_BYTES;
    let padded_to = |len: usize| {
        let mut token = genuine().sign();
        let claims_len = token.len();
        token = genuine()
            .claim("pad", json!("p".repeat(len.saturating_sub(claims_len))))
            .sign();
        token
    };
    let big = 512 * 1024;
    let mut rows = vec![
        attack(
            "one byte over the limit",
            padded_to(limit + 1),
            "token_too_large",
        ),
        attack(
            "1 MiB of padding",
            padded_to(1024 * 1024),
            "token_too_large",
        ),
        attack(
            "a 64 KiB header",
            genuine()
                .header("x-pad", json!("h".repeat(64 * 1024)))
                .sign(),
            "token_too_large",
        ),
        attack(
            "16 MiB of dots",
            ".".repeat(16 * 1024 * 1024),
            "token_too_large",
        ),
    ];
    for depth in [10_000, 100_000] {
        let deep = nested(depth);
        rows.push(
            attack(
                format!("header member nested {depth} deep"),
                signed_raw(
                    &format!(r#"{{"alg":"RS256","kid":"atk-rsa","x":{deep}}}"#),
                    &claims_json(),
                    rsa(),
                    Algorithm::RS256,
                ),
                "malformed",
            )
            .limit(big),
        );
        rows.push(
            attack(
                format!("kid nested {depth} deep"),
                signed_raw(
                    &format!(r#"{{"alg":"RS256","kid":{deep}}}"#),
                    &claims_json(),
                    rsa(),
                    Algorithm::RS256,
                ),
                "malformed",
            )
            .limit(big),
        );
        let mut payload = claims_json();
        payload.pop();
        payload.push_str(&format!(r#","deep":{deep}}}"#));
        rows.push(
            attack(
                format!("claim nested {depth} deep"),
                rs256_raw(&payload),
                "malformed",
            )
            .limit(big)
            .fetches(1),
        );
        rows.push(
            attack(
                format!("payload that is an array nested {depth} deep"),
                rs256_raw(&deep),
                "malformed",
            )
            .limit(big)
            .fetches(1),
        );
    }
    // Many members rather than deep ones: a quadratic duplicate check would show here.
    let mut wide = claims_json();
    wide.pop();
    for i in 0..20_000 {
        wide.push_str(&format!(r#","c{i}":{i}"#));
    }
    wide.push('}');
    rows.push(
        attack("20,000 distinct claims", rs256_raw(&wide), "valid")
            .limit(big)
            .fetches(1),
    );
    rows
}

/// Members given twice, in the payload and the header: refused, not last-one-wins.
fn duplicates() -> Vec<Attack> {
    let base = claims_json();
    let body = &base[1..base.len() - 1];
    let payloads = [
        ("exp twice", format!(r#"{{{body},"exp":1}}"#)),
        (
            "exp twice, escaped name",
            format!(r#"{{{body},"\u0065xp":4102444800}}"#),
        ),
        (
            "iss twice",
            format!(r#"{{{body},"iss":"https://evil.example"}}"#),
        ),
        (
            "iss twice, same value",
            format!(r#"{{{body},"iss":"{ISSUER}"}}"#),
        ),
        ("aud twice", format!(r#"{{{body},"aud":"someone-else"}}"#)),
        ("sub twice", format!(r#"{{{body},"sub":"admin"}}"#)),
        ("nbf twice", format!(r#"{{{body},"nbf":0}}"#)),
        (
            "a private claim twice",
            format!(r#"{{"role":"user",{body},"role":"admin"}}"#),
        ),
    ];
    let mut rows: Vec<Attack> = payloads
        .into_iter()
        .map(|(what, payload)| {
            attack(format!("payload: {what}"), rs256_raw(&payload), "malformed").fetches(1)
        })
        .collect();
    for header in [
        r#"{"alg":"RS256","kid":"atk-rsa","kid":"atk-ec"}"#,
        r#"{"alg":"RS256","kid":"atk-rsa","typ":"JWT","typ":"at+jwt"}"#,
        r#"{"alg":"RS256","kid":"atk-rsa","x":1,"x":2}"#,
    ] {
        rows.push(attack(
            format!("header {header}"),
            signed_raw(header, &claims_json(), rsa(), Algorithm::RS256),
            "malformed",
        ));
    }
    rows
}

/// NumericDates at and beyond the edges of f64 and i64, and of the wrong type. Saturating
/// arithmetic: no overflow, no panic, a typed answer.
fn numeric_dates() -> Vec<Attack> {
    let cases: [(&str, &str, &'static str); 22] = [
        // Beyond f64: not representable as JSON values at all, so the payload is malformed.
        ("exp", "1e400", "malformed"),
        ("exp", "-1e400", "malformed"),
        ("exp", "1e-400", "expired"),
        // RFC 7519 puts no upper bound on a date; far-future values saturate.
        ("exp", "18446744073709551616", "valid"),
        ("exp", "9223372036854775807", "valid"),
        ("exp", "9223372036854775808", "valid"),
        ("exp", "1.7976931348623157e308", "valid"),
        ("exp", "-1", "expired"),
        ("exp", "-9223372036854775809", "expired"),
        ("exp", "0", "expired"),
        ("exp", "-0", "expired"),
        ("exp", "4102444800.999", "valid"),
        ("exp", r#""4102444800""#, "invalid_claim"),
        ("exp", "true", "invalid_claim"),
        ("exp", "null", "invalid_claim"),
        ("exp", "[4102444800]", "invalid_claim"),
        ("exp", r#"{"$numberLong":"4102444800"}"#, "invalid_claim"),
        ("nbf", "1e400", "malformed"),
        ("nbf", "18446744073709551616", "not_yet_valid"),
        ("nbf", "-18446744073709551616", "valid"),
        ("iat", "18446744073709551616", "iat_in_future"),
        ("iat", "-1e308", "valid"),
    ];
    cases
        .into_iter()
        .map(|(claim, value, reason)| {
            let mut claims = claims();
            claims.remove(claim);
            let mut payload = Value::Object(claims).to_string();
            payload.pop();
            payload.push_str(&format!(r#","{claim}":{value}}}"#));
            attack(format!("{claim}: {value}"), rs256_raw(&payload), reason).fetches(1)
        })
        .collect()
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    run(algorithm_confusion()).await;
}

#[tokio::test]
async fn unsecured_and_malformed_algs_are_refused() {
    run(unsecured_and_odd_algs()).await;
}

#[tokio::test]
async fn keys_embedded_in_the_token_are_never_trusted() {
    // `check` also asserts that nothing but the provider's JWKS URL was fetched.
    let outcomes = run(embedded_keys()).await;
    assert_eq!(outcomes.len(), 29);
}

#[tokio::test]
async fn refuse_embedded_keys_refuses_every_token_carrying_one() {
    let table = embedded_keys_refused();
    let refused = table
        .iter()
        .filter(|r| r.expected == "untrusted_embedded_key")
        .count();
    assert_eq!(refused, 28);
    let outcomes = run(table).await;
    assert_eq!(
        outcomes.iter().filter(|o| o.fetches == 0).count(),
        28,
        "refused before any key set is fetched"
    );
}

#[tokio::test]
async fn hostile_kids_are_unknown_and_cost_at_most_one_refetch() {
    run(hostile_kids()).await;
}

#[tokio::test]
async fn every_crit_is_refused() {
    run(crit_abuse()).await;
}

#[tokio::test]
async fn oversized_and_deeply_nested_tokens_are_typed_errors() {
    run(oversized_and_deep()).await;
}

#[tokio::test]
async fn duplicate_members_are_refused() {
    run(duplicates()).await;
}

#[tokio::test]
async fn extreme_numeric_dates_are_typed() {
    run(numeric_dates()).await;
}

/// The table's refusals are what the table claims: the same token with the attack removed
/// verifies, so every row fails for the reason it names and not for an incidental one.
#[tokio::test]
async fn the_untampered_token_verifies() {
    run(vec![
        attack("genuine RS256", genuine().sign(), "valid").fetches(1),
        attack(
            "genuine ES256",
            TokenBuilder::new(p256()).claims(claims()).sign(),
            "valid",
        )
        .fetches(1),
    ])
    .await;
}

/// Many hostile kids against one verifier: the IdP sees the first fetch and the forced
/// refetch burst, however many tokens arrive.
#[tokio::test]
async fn a_hostile_kid_flood_costs_the_idp_the_burst_only() {
    let (verifier, idp) = rig(None, false);
    let burst = CacheSettings::default().unknown_kid_burst as usize;
    let started = Instant::now();
    for i in 0..500 {
        let kid = match i % 4 {
            0 => format!("../../{i}/etc/passwd"),
            1 => format!("' OR {i}={i} --"),
            2 => format!("k\0{i}"),
            _ => format!("🔑{i}"),
        };
        let token = TokenBuilder::new(attacker())
            .header("kid", json!(kid))
            .claims(claims())
            .sign();
        assert_eq!(
            verifier.verify(&token).await.unwrap_err().reason(),
            "unknown_kid"
        );
    }
    assert!(
        idp.requests() <= 1 + burst,
        "{} IdP requests for 500 hostile kids (first fetch + burst {burst})",
        idp.requests()
    );
    assert!(verifier.verify(&genuine().sign()).await.is_ok());
    assert!(started.elapsed() < Duration::from_secs(10));
    println!(
        "500 hostile kids: {} IdP requests in {:?}",
        idp.requests(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Outbound fetches against a hostile IdP.

/// Peak resident memory since the last reset, and a reset (Linux `clear_refs` 5). Other
/// tests run in the same process, so the figures are upper bounds on what one fetch costs.
mod memory {
    fn status_kb(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resets the peak to the current size; returns the current size in bytes.
    pub(super) fn reset_peak() -> u64 {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        status_kb("VmRSS:") * 1024
    }

    /// The peak since the reset, in bytes.
    pub(super) fn peak() -> u64 {
        status_kb("VmHWM:") * 1024
    }
}

const MIB: u64 = 1024 * 1024;

async fn fetch(fetcher: &HttpFetcher, url: &str) -> Result<usize, FetchError> {
    let request = FetchRequest {
        url: url.parse().expect("test url"),
        headers: http::HeaderMap::new(),
    };
    fetcher.fetch(request).await.map(|r| r.body.len())
}

fn loopback() -> keygate::fetch::HttpFetcherBuilder {
    HttpFetcher::builder().danger_allow_http_loopback(true)
}

#[tokio::test]
async fn redirects_off_the_allow_list_or_down_to_http_are_refused() {
    // Another host: the allow-list names 127.0.0.1; `localhost` is a different host.
    let idp = StubIdp::start().await;
    let elsewhere = StubIdp::start().await;
    let port = elsewhere.addr().port();
    idp.set_response(
        "/jwks",
        StubResponse::redirect(302, &format!("http://localhost:{port}/jwks")),
    );
    let fetcher = loopback().allowed_hosts(["127.0.0.1"]).build().unwrap();
    let err = fetch(&fetcher, &idp.jwks_url()).await.unwrap_err();
    assert_eq!(err.reason(), "host_not_allowed", "{err:?}");
    assert_eq!(elsewhere.total_requests(), 0);

    // From TLS down to plain http, even to loopback with the danger switch on.
    let tls = StubIdp::start_tls().await;
    let plain = StubIdp::start().await;
    tls.set_response("/jwks", StubResponse::redirect(307, &plain.jwks_url()));
    for switch in [false, true] {
        let fetcher = HttpFetcher::builder()
            .danger_allow_http_loopback(switch)
            .add_root_certificate(tls.ca_cert_der())
            .build()
            .unwrap();
        let err = fetch(&fetcher, &tls.jwks_url()).await.unwrap_err();
        assert_eq!(err.reason(), "insecure_url", "switch {switch}: {err:?}");
    }
    assert_eq!(
        plain.total_requests(),
        0,
        "the downgraded URL is never requested"
    );

    // A redirect loop ends at the limit.
    idp.set_response("/loop", StubResponse::redirect(302, "/loop"));
    let err = fetch(&loopback().build().unwrap(), &idp.url("/loop"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "too_many_redirects");
    assert_eq!(idp.requests("/loop"), 4);
}

/// Runs `fut` to completion on a fresh current-thread runtime on this thread, and returns
/// its output, the most heap it held at once (counted by the test binary's counting
/// allocator, on this thread only, so other tests do not blur it) and the growth of the
/// process's peak resident memory (which they may: an upper bound).
fn measured<T>(fut: impl std::future::Future<Output = T>) -> (T, u64, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = memory::reset_peak();
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(runtime.block_on(fut)));
    let rss = memory::peak().saturating_sub(before);
    (out.expect("ran"), info.bytes_max, rss)
}

/// A runtime of its own for the stub IdP, so the measured fetch can block this thread.
fn stub_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Endless, huge and declared-huge bodies stop at the cap, quickly, without the fetch ever
/// holding much more than the cap.
#[test]
fn huge_and_endless_bodies_stop_at_the_cap_without_buffering() {
    let stubs = stub_runtime();
    let idp = stubs.block_on(StubIdp::start());
    let huge = 100 * 1024 * 1024;
    idp.set_response(
        "/endless",
        StubResponse::status(200).body(StubBody::Endless),
    );
    idp.set_response(
        "/huge",
        StubResponse::status(200).body(StubBody::Huge(huge)),
    );
    idp.set_response(
        "/declared",
        StubResponse::status(200)
            .header("content-length", huge.to_string())
            .body(StubBody::Huge(huge)),
    );
    let fetcher = loopback().timeout(Duration::from_secs(5)).build().unwrap();
    for path in ["/endless", "/huge", "/declared"] {
        let started = Instant::now();
        let (result, heap, rss) = measured(fetch(&fetcher, &idp.url(path)));
        let elapsed = started.elapsed();
        let err = result.unwrap_err();
        assert!(
            matches!(err, FetchError::BodyTooLarge(cap) if cap == 1024 * 1024),
            "{path}: {err:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{path}: {elapsed:?}");
        assert!(
            heap < 4 * MIB,
            "{path}: the fetch held {heap} bytes at once"
        );
        assert!(rss < 20 * MIB, "{path}: peak RSS grew by {} MiB", rss / MIB);
        println!(
            "{path}: body_too_large in {elapsed:?}, heap peak {:.2} MiB, RSS peak +{:.1} MiB",
            heap as f64 / MIB as f64,
            rss as f64 / MIB as f64
        );
    }
    drop(idp);
}

#[tokio::test]
async fn a_slow_loris_idp_is_cut_at_the_fetch_timeout() {
    let idp = StubIdp::start().await;
    // One byte every 50 ms: every read makes progress, only the total deadline stops it.
    idp.set_response("/trickle", StubResponse::trickle(Duration::from_millis(50)));
    // Headers that never come.
    idp.set_response(
        "/silent",
        StubResponse::status(200).delay(Duration::from_secs(60)),
    );
    let timeout = Duration::from_millis(800);
    let fetcher = loopback().timeout(timeout).build().unwrap();
    for path in ["/trickle", "/silent"] {
        let started = Instant::now();
        let err = fetch(&fetcher, &idp.url(path)).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.reason(), "timeout", "{path}: {err:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
            "{path}: {elapsed:?}"
        );
        println!("{path}: timeout after {elapsed:?} (fetch timeout {timeout:?})");
    }
}

/// 100,000 keys: refused at the body cap by default; with the cap raised (or a set handed
/// over by a peer), refused by `max_keys` without building a single key, in bounded memory.
#[test]
fn a_key_set_of_100_000_keys_is_refused_in_bounded_memory() {
    let entry = p256().jwk();
    let keys: Vec<Value> = (0..100_000)
        .map(|i| {
            let mut e = entry.clone();
            e["kid"] = json!(format!("k{i}"));
            e
        })
        .collect();
    let document = serde_json::to_vec(&json!({ "keys": keys })).unwrap();
    drop(keys);
    let stubs = stub_runtime();
    let idp = stubs.block_on(StubIdp::start());
    idp.set_response("/big", StubResponse::bytes(200, document.clone()));

    let fetcher = loopback().build().unwrap();
    let (result, heap, _) = measured(fetch(&fetcher, &idp.url("/big")));
    assert_eq!(result.unwrap_err().reason(), "body_too_large");
    assert!(heap < 4 * MIB, "fetch: held {heap} bytes at once");
    println!(
        "100,000 keys over HTTP: body_too_large, heap peak {:.2} MiB",
        heap as f64 / MIB as f64
    );

    let started = Instant::now();
    let (result, heap, rss) = measured(async { KeySet::parse(&document, &Algorithm::ALL, 100) });
    let elapsed = started.elapsed();
    assert_eq!(result.unwrap_err(), keygate::JwksError::TooManyKeys(100));
    assert!(elapsed < Duration::from_secs(5), "parse: {elapsed:?}");
    assert!(heap < 4 * MIB, "parse: held {heap} bytes at once");
    println!(
        "100,000 keys ({:.1} MiB): TooManyKeys in {elapsed:?}, heap peak {:.2} MiB, \
         RSS peak +{:.1} MiB",
        document.len() as f64 / MIB as f64,
        heap as f64 / MIB as f64,
        rss as f64 / MIB as f64
    );
    drop(idp);
}

/// A 16,384-bit RSA modulus is skipped (verifying under it would be a CPU lever), with a
/// typed reason, and a token naming it is refused.
#[tokio::test]
async fn a_16384_bit_rsa_key_is_skipped_with_a_reason() {
    // Not a real key: the size is what is checked, before any parsing of the number.
    let mut n = vec![0xc5u8; 2048];
    n[2047] |= 1;
    let huge = json!({"kty": "RSA", "kid": "huge", "alg": "RS256", "n": b64url(&n), "e": "AQAB"});
    let document = serde_json::to_vec(&json!({"keys": [huge, rsa().jwk()]})).unwrap();
    let started = Instant::now();
    let set = KeySet::parse(&document, &Algorithm::ALL, 100).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(set.usable(), 1);
    assert_eq!(set.skipped(), 1);
    let skipped = &set.skipped_keys()[0];
    assert_eq!(skipped.kid(), Some("huge"));
    assert_eq!(skipped.reason(), keygate::jwk::SkipReason::RsaTooLarge);
    assert_eq!(skipped.reason().as_str(), "rsa_too_large");

    let idp = MemoryIdp::new(&[]);
    idp.serve_document(serde_json::from_slice(&document).unwrap());
    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "idp", ISSUER)
                .jwks_uri(JWKS_URI)
                .audiences([AUD])
                .build()
                .unwrap(),
        )
        .clock(Arc::new(ManualClock::at_unix(T0)))
        .fetcher(idp.clone())
        .build()
        .unwrap();
    let token = TokenBuilder::new(rsa())
        .header("kid", json!("huge"))
        .claims(claims())
        .sign();
    assert_eq!(
        verifier.verify(&token).await.unwrap_err().reason(),
        "unknown_kid"
    );
    assert!(verifier.verify(&genuine().sign()).await.is_ok());
    assert_eq!(verifier.status()[0].skipped_keys, 1);
}

/// A token at the default size limit packed with short distinct claim names, under a forged
/// signature: parsing runs before the signature is checked, so its cost is what anyone can
/// make a verifier pay. Regression: the duplicate-name check was quadratic, and this token
/// cost about 22 ms (debug build; 260 times an ordinary forged token) before it was fixed;
/// the `hostile` benchmark measures it now.
#[tokio::test]
async fn a_payload_packed_with_distinct_names_is_refused_and_a_repeated_one_found() {
    let (verifier, _idp) = rig(None, false);
    let limit = keygate::DEFAULT_MAX_TOKEN_BYTES;
    let header = r#"{"alg":"ES256","kid":"atk-ec"}"#;
    let forged_sig = b64url(&[7u8; 64]);
    let mut payload = claims_json();
    payload.pop();
    let mut names = 0;
    loop {
        let next = format!(r#","{names:x}":0"#);
        let len = b64url(header.as_bytes()).len()
            + (payload.len() + next.len() + 1).div_ceil(3) * 4
            + forged_sig.len()
            + 2;
        if len > limit {
            break;
        }
        payload.push_str(&next);
        names += 1;
    }
    payload.push('}');
    let forge = |payload: &str| {
        format!(
            "{}.{}.{forged_sig}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        )
    };
    let wide = forge(&payload);
    assert!(wide.len() <= limit);
    assert!(names > 1_000, "{names} names");
    // Refused for its signature; what it costs is measured by the `hostile` benchmark
    // (`cargo bench -p keygate --bench verify -- hostile`), not by a timed test.
    assert_eq!(
        verifier.verify(&wide).await.unwrap_err().reason(),
        "bad_signature"
    );
    // And the duplicate check still sees every one of those names: one repeated at the end
    // makes the payload malformed, refused before the signature is looked at.
    let last = format!(r#","{:x}":0}}"#, names - 1);
    let repeated = forge(&format!(
        "{}{}",
        payload.strip_suffix(&last).unwrap(),
        r#","0":0}"#
    ));
    assert!(repeated.len() <= limit);
    assert_eq!(
        verifier.verify(&repeated).await.unwrap_err().reason(),
        "malformed"
    );
}
