//! Proof checks, one refusal at a time, with proofs signed here.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::alg::Algorithm;

const NOW: u64 = 1_700_000_000;
const URL: &str = "https://api.example.com/things";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

/// The public half of a real 1024-bit RSA key: too weak to be a proof key.
const WEAK_RSA_1024: &str = r#"{"kty":"RSA","n":"yKSEzXDQhArVX2OcRN35xdVHR9YsL52r7mX_CtWsXbSW4UnMtsrm4GahvHQYuY5Nt6ese08X_1I7WSAI_uKgCoeN5RsNmZKIR50j1BTs3gQFRwo5bf014ics9rkh04EMNYA79wJfDUev6NqV_UbJIMZ-1Mwcu-G4wf7CVgGkgRk","e":"AQAB"}"#;

enum Signer {
    P256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

fn b64(data: &[u8]) -> String {
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(data)
}

impl Signer {
    fn p256() -> Self {
        Signer::P256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    fn jwk(&self) -> Value {
        match self {
            Signer::P256(pair) => {
                let point = &pair.public_key().as_ref()[1..];
                let (x, y) = point.split_at(32);
                json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
            }
            Signer::Ed(pair) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())})
            }
            Signer::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::P256(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
            Signer::Rsa(_) => "PS256",
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::P256(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PSS_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    fn thumbprint(&self) -> String {
        jwk_thumbprint(&self.jwk().to_string()).unwrap()
    }
}

fn key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(Signer::p256)
}

fn other_key() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(Signer::p256)
}

fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

fn header(signer: &Signer) -> Value {
    json!({"typ": "dpop+jwt", "alg": signer.alg(), "jwk": signer.jwk()})
}

fn claims() -> Value {
    json!({"jti": "e1j3V_bKic8-LAEB", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath(TOKEN)})
}

/// A compact JWS over exactly this header and claims text, signed by `signer`.
fn sign_raw(signer: &Signer, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn sign(signer: &Signer, header: &Value, claims: &Value) -> String {
    sign_raw(signer, &header.to_string(), &claims.to_string())
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn checker(jkt: &str) -> ProofCheck<'_> {
    ProofCheck::new("GET", URL, at(NOW))
        .access_token(TOKEN)
        .jkt(jkt)
        .iat_window(Duration::from_secs(60))
}

fn check(proof: &str) -> Result<(), DpopError> {
    let jkt = key().thumbprint();
    checker(&jkt).check(&[proof]).map(drop)
}

/// A proof by [`key`] with its header and claims edited.
fn proof_with(edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let mut h = header(key());
    let mut c = claims();
    edit(&mut h, &mut c);
    sign(key(), &h, &c)
}

#[test]
fn a_valid_proof_passes_and_says_whose_it_is() {
    let proof = proof_with(|_, _| {});
    let jkt = key().thumbprint();
    let verified = checker(&jkt).check(&[&proof]).unwrap();
    assert_eq!(verified.jkt(), jkt);
    assert_eq!(verified.jti(), "e1j3V_bKic8-LAEB");
    assert_eq!(verified.algorithm(), Algorithm::ES256);
    // The replay key depends on both the key and the id.
    let other = proof_with(|_, c| c["jti"] = json!("another"));
    assert_ne!(
        checker(&jkt).check(&[&other]).unwrap().replay_key(),
        verified.replay_key()
    );
}

#[test]
fn every_algorithm_family_signs_proofs() {
    let signers = [
        Signer::Ed(Ed25519KeyPair::generate().unwrap()),
        Signer::Rsa(aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
    ];
    for signer in &signers {
        let proof = sign(signer, &header(signer), &claims());
        let jkt = signer.thumbprint();
        assert!(checker(&jkt).check(&[&proof]).is_ok(), "{}", signer.alg());
        // And someone else's thumbprint is refused.
        assert_eq!(
            check(&proof),
            Err(DpopError::JktMismatch),
            "{}",
            signer.alg()
        );
    }
}

#[test]
fn one_proof_exactly() {
    let proof = proof_with(|_, _| {});
    let jkt = key().thumbprint();
    assert_eq!(checker(&jkt).check(&[]), Err(DpopError::ProofMissing));
    assert_eq!(
        checker(&jkt).check(&[&proof, &proof]),
        Err(DpopError::ProofMissing)
    );
}

#[test]
fn malformed_proofs() {
    let long = proof_with(|_, c| c["pad"] = json!("x".repeat(MAX_PROOF_BYTES)));
    let valid = proof_with(|_, _| {});
    let (input, sig) = valid.rsplit_once('.').unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("too long", long),
        ("two segments", input.to_owned()),
        ("padded signature", format!("{valid}=")),
        (
            "standard base64",
            format!("{input}.{}", sig.replace('-', "+").replace('_', "/") + "+/"),
        ),
        ("five segments", format!("{valid}.a.b")),
        (
            "header not json",
            sign_raw(key(), "not json", &claims().to_string()),
        ),
        (
            "duplicate header member",
            sign_raw(
                key(),
                &format!(
                    r#"{{"typ":"dpop+jwt","typ":"dpop+jwt","alg":"ES256","jwk":{}}}"#,
                    key().jwk()
                ),
                &claims().to_string(),
            ),
        ),
        (
            "duplicate claim",
            sign_raw(
                key(),
                &header(key()).to_string(),
                &format!(
                    r#"{{"jti":"a","jti":"b","htm":"GET","htu":"{URL}","iat":{NOW},"ath":"{}"}}"#,
                    ath(TOKEN)
                ),
            ),
        ),
        (
            "claims not an object",
            sign_raw(key(), &header(key()).to_string(), "[1]"),
        ),
        (
            "no jti",
            proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("jti"))),
        ),
        ("empty jti", proof_with(|_, c| c["jti"] = json!(""))),
        (
            "long jti",
            proof_with(|_, c| c["jti"] = json!("j".repeat(MAX_JTI_BYTES + 1))),
        ),
        ("numeric jti", proof_with(|_, c| c["jti"] = json!(7))),
        (
            "no htm",
            proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("htm"))),
        ),
        (
            "no htu",
            proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("htu"))),
        ),
        (
            "no iat",
            proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("iat"))),
        ),
        (
            "string iat",
            proof_with(|_, c| c["iat"] = json!(NOW.to_string())),
        ),
        (
            "no ath",
            proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("ath"))),
        ),
        (
            "no typ",
            proof_with(|h, _| drop(h.as_object_mut().unwrap().remove("typ"))),
        ),
        ("typ JWT", proof_with(|h, _| h["typ"] = json!("JWT"))),
        ("typ at+jwt", proof_with(|h, _| h["typ"] = json!("at+jwt"))),
        ("crit", proof_with(|h, _| h["crit"] = json!(["exp"]))),
        ("numeric alg", proof_with(|h, _| h["alg"] = json!(1))),
    ];
    for (name, proof) in cases {
        assert_eq!(check(&proof), Err(DpopError::ProofMalformed), "{name}");
    }
    // The maximum length itself is fine.
    let mut fits = proof_with(|_, c| c["pad"] = json!(""));
    let room = MAX_PROOF_BYTES - fits.len();
    fits = proof_with(|_, c| c["pad"] = json!("x".repeat(room * 3 / 4 - 2)));
    assert!(fits.len() <= MAX_PROOF_BYTES);
    assert_eq!(check(&fits), Ok(()));
}

#[test]
fn typ_is_a_media_type() {
    for typ in [
        "dpop+jwt",
        "DPoP+JWT",
        "application/dpop+jwt",
        "Application/DPOP+jwt",
    ] {
        assert_eq!(
            check(&proof_with(|h, _| h["typ"] = json!(typ))),
            Ok(()),
            "{typ}"
        );
    }
}

#[test]
fn refused_algorithms() {
    let claims_text = claims().to_string();
    let unsigned = |alg: &str| {
        let h = json!({"typ": "dpop+jwt", "alg": alg, "jwk": key().jwk()}).to_string();
        format!("{}.{}.", b64(h.as_bytes()), b64(claims_text.as_bytes()))
    };
    assert_eq!(check(&unsigned("none")), Err(DpopError::AlgNotAllowed));
    assert_eq!(check(&unsigned("None")), Err(DpopError::AlgNotAllowed));
    // HS256, MACed with the public key's own text: the key-confusion attack.
    let h = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key().jwk()}).to_string();
    let input = format!("{}.{}", b64(h.as_bytes()), b64(claims_text.as_bytes()));
    let mac_key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        key().jwk().to_string().as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&mac_key, input.as_bytes());
    let hs = format!("{input}.{}", b64(tag.as_ref()));
    assert_eq!(check(&hs), Err(DpopError::AlgNotAllowed));
    for alg in ["HS384", "HS512", "RSA-OAEP", "Ed448", "es256"] {
        assert_eq!(
            check(&unsigned(alg)),
            Err(DpopError::AlgNotAllowed),
            "{alg}"
        );
    }
    // A good ES256 proof where the provider allows EdDSA only.
    let proof = proof_with(|_, _| {});
    let jkt = key().thumbprint();
    assert_eq!(
        checker(&jkt)
            .algorithms(&[Algorithm::EdDSA])
            .check(&[&proof]),
        Err(DpopError::AlgNotAllowed)
    );
}

#[test]
fn refused_keys() {
    let mut private = key().jwk();
    private["d"] = json!(b64(&[7; 32]));
    let cases = [
        (
            "no jwk",
            proof_with(|h, _| drop(h.as_object_mut().unwrap().remove("jwk"))),
        ),
        ("private key", proof_with(|h, _| h["jwk"] = private.clone())),
        (
            "oct key",
            proof_with(|h, _| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
        ),
        (
            "k member",
            proof_with(|h, _| h["jwk"]["k"] = json!("c2VjcmV0")),
        ),
        (
            "jwk not an object",
            proof_with(|h, _| h["jwk"] = json!("key")),
        ),
        (
            "weak RSA",
            proof_with(|h, _| {
                h["alg"] = json!("RS256");
                h["jwk"] = serde_json::from_str(WEAK_RSA_1024).unwrap();
            }),
        ),
        (
            "EC key for EdDSA",
            proof_with(|h, _| h["alg"] = json!("EdDSA")),
        ),
        (
            "EC key pinned to ES384",
            proof_with(|h, _| h["jwk"]["alg"] = json!("ES384")),
        ),
        (
            "encryption key",
            proof_with(|h, _| h["jwk"]["use"] = json!("enc")),
        ),
        (
            "point off the curve",
            proof_with(|h, _| h["jwk"]["y"] = json!(b64(&[1; 32]))),
        ),
    ];
    for (name, proof) in cases {
        assert_eq!(check(&proof), Err(DpopError::BadJwk), "{name}");
    }
    // Duplicate members inside the jwk.
    let jwk = key().jwk();
    let dup = format!(
        r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":{},"x":{},"y":{}}}}}"#,
        jwk["x"],
        other_key().jwk()["x"],
        jwk["y"]
    );
    let proof = sign_raw(key(), &dup, &claims().to_string());
    assert_eq!(check(&proof), Err(DpopError::BadJwk));
}

#[test]
fn the_signature_must_be_the_jwk_holders() {
    // Signed by another key, carrying ours.
    let forged = sign(other_key(), &header(key()), &claims());
    assert_eq!(check(&forged), Err(DpopError::BadSignature));
    let valid = proof_with(|_, _| {});
    let (input, _) = valid.rsplit_once('.').unwrap();
    let garbage = format!("{input}.{}", b64(&[0; 64]));
    assert_eq!(check(&garbage), Err(DpopError::BadSignature));
}

#[test]
fn the_proof_is_for_this_request() {
    let cases = [
        (
            "htm POST",
            proof_with(|_, c| c["htm"] = json!("POST")),
            Err(DpopError::HtmMismatch),
        ),
        (
            "htm get",
            proof_with(|_, c| c["htm"] = json!("get")),
            Err(DpopError::HtmMismatch),
        ),
        (
            "other path",
            proof_with(|_, c| c["htu"] = json!("https://api.example.com/other")),
            Err(DpopError::HtuMismatch),
        ),
        (
            "other host",
            proof_with(|_, c| c["htu"] = json!("https://evil.example.com/things")),
            Err(DpopError::HtuMismatch),
        ),
        (
            "http",
            proof_with(|_, c| c["htu"] = json!("http://api.example.com/things")),
            Err(DpopError::HtuMismatch),
        ),
        (
            "relative",
            proof_with(|_, c| c["htu"] = json!("/things")),
            Err(DpopError::HtuMismatch),
        ),
        (
            "query and fragment ignored",
            proof_with(|_, c| c["htu"] = json!("https://api.example.com/things?a=1#x")),
            Ok(()),
        ),
        (
            "normalized",
            proof_with(|_, c| c["htu"] = json!("HTTPS://API.example.com:443/%74hings")),
            Ok(()),
        ),
        (
            "ath of another token",
            proof_with(|_, c| c["ath"] = json!(ath("another token"))),
            Err(DpopError::AthMismatch),
        ),
        (
            "ath in hex",
            proof_with(|_, c| c["ath"] = json!("00".repeat(32))),
            Err(DpopError::AthMismatch),
        ),
    ];
    for (name, proof, expected) in cases {
        assert_eq!(check(&proof), expected, "{name}");
    }
    // The request URL's own query is ignored too.
    let proof = proof_with(|_, _| {});
    let jkt = key().thumbprint();
    let with_query = format!("{URL}?page=2");
    let check = ProofCheck::new("GET", &with_query, at(NOW))
        .access_token(TOKEN)
        .jkt(&jkt);
    assert!(check.check(&[&proof]).is_ok());
    // Without an access token, `ath` is neither needed nor read.
    let no_ath = proof_with(|_, c| drop(c.as_object_mut().unwrap().remove("ath")));
    assert!(
        ProofCheck::new("GET", URL, at(NOW))
            .check(&[&no_ath])
            .is_ok()
    );
}

#[test]
fn iat_must_be_within_the_window() {
    let cases = [
        (NOW - 60, Ok(())),
        (NOW + 60, Ok(())),
        (NOW - 61, Err(DpopError::IatOutOfWindow)),
        (NOW + 61, Err(DpopError::IatOutOfWindow)),
        (0, Err(DpopError::IatOutOfWindow)),
    ];
    for (iat, expected) in cases {
        assert_eq!(
            check(&proof_with(|_, c| c["iat"] = json!(iat))),
            expected,
            "{iat}"
        );
    }
    let fractional = proof_with(|_, c| c["iat"] = json!(NOW as f64 - 60.5));
    assert_eq!(check(&fractional), Err(DpopError::IatOutOfWindow));
    let huge = proof_with(|_, c| c["iat"] = json!(1e300));
    assert_eq!(check(&huge), Err(DpopError::IatOutOfWindow));
}

#[derive(Debug)]
struct Down;

impl ReplayGuard for Down {
    fn first_use(
        &self,
        _: [u8; 32],
        _: SystemTime,
        _: Duration,
    ) -> BoxFuture<'_, Result<bool, ReplayUnavailable>> {
        Box::pin(std::future::ready(Err(ReplayUnavailable("down".into()))))
    }
}

#[tokio::test]
async fn each_proof_is_accepted_once() {
    let guard = MemoryReplayGuard::default();
    let jkt = key().thumbprint();
    let proof = proof_with(|_, _| {});
    assert!(checker(&jkt).check_once(&[&proof], &guard).await.is_ok());
    assert_eq!(
        checker(&jkt).check_once(&[&proof], &guard).await,
        Err(DpopError::Replayed)
    );
    // A fresh proof from the same key is fine; a bad one is not recorded at all.
    let fresh = proof_with(|_, c| c["jti"] = json!("fresh"));
    let bad = proof_with(|_, c| {
        c["jti"] = json!("bad");
        c["htm"] = json!("POST");
    });
    assert_eq!(
        checker(&jkt).check_once(&[&bad], &guard).await,
        Err(DpopError::HtmMismatch)
    );
    assert_eq!(guard.len(), 1);
    assert!(checker(&jkt).check_once(&[&fresh], &guard).await.is_ok());
    // The same `jti` under another key is another proof.
    let theirs = sign(other_key(), &header(other_key()), &claims());
    let their_jkt = other_key().thumbprint();
    assert!(
        checker(&their_jkt)
            .check_once(&[&theirs], &guard)
            .await
            .is_ok()
    );
    // A store that cannot answer refuses.
    let another = proof_with(|_, c| c["jti"] = json!("another"));
    assert_eq!(
        checker(&jkt).check_once(&[&another], &Down).await,
        Err(DpopError::ReplayUnavailable(ReplayUnavailable(
            "down".into()
        )))
    );
}

#[test]
fn rfc9449_example_proof() {
    // RFC 9449 section 4.1, figure 3: made for a token request, so without `ath`.
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    let check = ProofCheck::new(
        "POST",
        "https://server.example.com/token",
        at(1_562_262_616),
    );
    let verified = check.check(&[proof]).unwrap();
    assert_eq!(verified.jti(), "-BwC3ESc6acc2lTc");
    assert_eq!(
        verified.jkt(),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    // With an access token, the example has no `ath` and is malformed.
    assert_eq!(
        check.access_token(TOKEN).check(&[proof]),
        Err(DpopError::ProofMalformed)
    );
}

proptest! {
    /// Whatever a client sends as a proof, checking it returns an error or a proof, never
    /// panics; and a valid proof with one byte changed never passes as it is.
    #[test]
    fn arbitrary_proofs_never_panic(text in "[A-Za-z0-9_.=+/-]{0,300}") {
        let jkt = key().thumbprint();
        prop_assert!(checker(&jkt).check(&[&text]).is_err());
    }

    #[test]
    fn arbitrary_json_in_a_signed_proof_never_panics(
        header_text in ".{0,80}",
        claims_text in ".{0,80}",
    ) {
        let proof = sign_raw(key(), &header_text, &claims_text);
        prop_assert!(check(&proof).is_err());
    }

    #[test]
    fn a_changed_byte_is_refused(at in 0usize..400, to in b'0'..=b'z') {
        let proof = proof_with(|_, _| {});
        let at = at % proof.len();
        prop_assume!(proof.as_bytes()[at] != to && proof.as_bytes()[at] != b'.');
        let mut bytes = proof.into_bytes();
        bytes[at] = to;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(check(&changed).is_err());
    }
}
