//! Fixtures shared by the fuzz targets: fixed keys and the static key sets built from them, a
//! fixed clock, token minting, and signing of bus entries with a fixed MAC key ring.
//!
//! Everything is fixed so that a crash input reproduces: the keys are committed (`keys/`,
//! throw-away keys that sign nothing but fuzz inputs), the clock never moves, and the verifiers
//! are built once per process. Only ECDSA signatures vary from run to run, and no target's
//! outcome depends on their bytes.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use keygate::fetch::{BoxFuture, FetchRequest, FetchResponse};
use keygate::{Clock, Fetch, FetchError, ProviderConfig, ProviderId, Revocations, Verifier};

/// The fixed `now` of every target: 2026-01-01T00:00:00Z.
pub const NOW_UNIX: u64 = 1_767_225_600;
/// The issuer of providers `acme/main` and `beta/strict`.
pub const ISSUER: &str = "https://issuer.example/";
/// The issuer of provider `other/nokid`, whose keys have no `kid`.
pub const OTHER_ISSUER: &str = "https://other.example/";
/// The audience `acme/main` requires.
pub const AUDIENCE: &str = "https://api.example";
/// The audience `beta/strict` requires.
pub const BETA_AUDIENCE: &str = "https://beta.example";
/// The JWKS URL of the fetching provider that `jwks_parse` adopts key sets into.
pub const JWKS_URL: &str = "https://issuer.example/.well-known/jwks.json";

/// The public JWK of a real 1024-bit RSA key, which every verifier must refuse as weak (the
/// same key as `keygate-test-support`'s `WEAK_RSA_1024_JWK`; its private half is gone).
pub const WEAK_RSA_1024_JWK: &str = r#"{"kty":"RSA","kid":"weak-1024","use":"sig","alg":"RS256","n":"yKSEzXDQhArVX2OcRN35xdVHR9YsL52r7mX_CtWsXbSW4UnMtsrm4GahvHQYuY5Nt6ese08X_1I7WSAI_uKgCoeN5RsNmZKIR50j1BTs3gQFRwo5bf014ics9rkh04EMNYA79wJfDUev6NqV_UbJIMZ-1Mwcu-G4wf7CVgGkgRk","e":"AQAB"}"#;

/// The fixed `now` as a `SystemTime`.
#[must_use]
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX)
}

/// `now` moved by `seconds` (either way).
#[must_use]
pub fn at_offset(seconds: i64) -> SystemTime {
    let d = Duration::from_secs(seconds.unsigned_abs());
    if seconds < 0 { now() - d } else { now() + d }
}

/// A clock stopped at [`NOW_UNIX`].
#[derive(Debug, Clone, Copy)]
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        now()
    }
}

/// A fetcher that never reaches a network: every fetch fails at once. Static providers never
/// call it; it keeps the default HTTP client (and its TLS set-up) out of the fuzzers.
#[derive(Debug, Clone, Copy)]
pub struct NoFetch;

impl Fetch for NoFetch {
    fn fetch(
        &self,
        _request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        Box::pin(std::future::ready(Err(FetchError::Connect(
            "the fuzz fixtures have no network".into(),
        ))))
    }
}

/// Which key (and how) a minted token is signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The RSA key (`rsa-1`), RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// The RSA key, RSASSA-PSS SHA-256 (`rsa-noalg` allows it; `rsa-1` says RS256).
    Ps256,
    /// The P-256 key (`p256-1`).
    Es256,
    /// The Ed25519 key (`ed-1`).
    EdDsa,
}

/// The fixed signing keys.
pub struct Keys {
    rsa: RsaKeyPair,
    p256: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

impl Keys {
    /// The keys, parsed once.
    pub fn get() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| Keys {
            rsa: RsaKeyPair::from_pkcs8(include_bytes!("../keys/rsa2048.pk8"))
                .expect("keys/rsa2048.pk8 is a PKCS#8 RSA key"),
            p256: EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                include_bytes!("../keys/p256.pk8"),
            )
            .expect("keys/p256.pk8 is a PKCS#8 P-256 key"),
            ed: Ed25519KeyPair::from_pkcs8_maybe_unchecked(include_bytes!("../keys/ed25519.pk8"))
                .expect("keys/ed25519.pk8 is a PKCS#8 Ed25519 key"),
        })
    }

    /// Signs a JWS signing input.
    #[must_use]
    pub fn sign(&self, signer: Signer, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match signer {
            Signer::Rs256 | Signer::Ps256 => {
                let padding: &'static dyn signature::RsaEncoding = if signer == Signer::Rs256 {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(padding, &rng, message, &mut sig)
                    .expect("RSA signing does not fail");
                sig
            }
            Signer::Es256 => self
                .p256
                .sign(&rng, message)
                .expect("ECDSA signing does not fail")
                .as_ref()
                .to_vec(),
            Signer::EdDsa => self.ed.sign(message).as_ref().to_vec(),
        }
    }

    /// The RSA key's JWK; `alg` is left out when `None`.
    #[must_use]
    pub fn rsa_jwk(&self, kid: Option<&str>, alg: Option<&str>) -> String {
        let public = self.rsa.public_key();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        jwk(
            r#""kty":"RSA""#,
            kid,
            alg,
            &format!(r#""n":"{n}","e":"{e}""#),
        )
    }

    /// The P-256 key's JWK.
    #[must_use]
    pub fn p256_jwk(&self, kid: Option<&str>) -> String {
        // Uncompressed point: 0x04 || x || y.
        let point = &self.p256.public_key().as_ref()[1..];
        let (x, y) = point.split_at(point.len() / 2);
        let coords = format!(r#""crv":"P-256","x":"{}","y":"{}""#, b64url(x), b64url(y));
        jwk(r#""kty":"EC""#, kid, Some("ES256"), &coords)
    }

    /// The Ed25519 key's JWK.
    #[must_use]
    pub fn ed_jwk(&self, kid: Option<&str>) -> String {
        let x = b64url(self.ed.public_key().as_ref());
        jwk(
            r#""kty":"OKP""#,
            kid,
            Some("EdDSA"),
            &format!(r#""crv":"Ed25519","x":"{x}""#),
        )
    }

    /// The key set of `acme/main` and `beta/strict`: `rsa-1` (RS256), `rsa-noalg` (the same
    /// RSA key without `alg`), `p256-1`, `ed-1` and the weak `weak-1024`.
    #[must_use]
    pub fn main_jwks(&self) -> String {
        format!(
            r#"{{"keys":[{},{},{},{},{}]}}"#,
            self.rsa_jwk(Some("rsa-1"), Some("RS256")),
            self.rsa_jwk(Some("rsa-noalg"), None),
            self.p256_jwk(Some("p256-1")),
            self.ed_jwk(Some("ed-1")),
            WEAK_RSA_1024_JWK,
        )
    }

    /// The key set of `other/nokid`: the P-256 and Ed25519 keys, without `kid`s.
    #[must_use]
    pub fn nokid_jwks(&self) -> String {
        format!(
            r#"{{"keys":[{},{}]}}"#,
            self.p256_jwk(None),
            self.ed_jwk(None)
        )
    }
}

fn jwk(kty: &str, kid: Option<&str>, alg: Option<&str>, material: &str) -> String {
    let mut out = format!("{{{kty},\"use\":\"sig\"");
    if let Some(kid) = kid {
        out.push_str(&format!(",\"kid\":\"{kid}\""));
    }
    if let Some(alg) = alg {
        out.push_str(&format!(",\"alg\":\"{alg}\""));
    }
    out.push(',');
    out.push_str(material);
    out.push('}');
    out
}

/// The static providers every token target verifies against:
///
/// - `acme/main`: [`ISSUER`], audience [`AUDIENCE`], RS256/PS256/ES256/EdDSA, [`Keys::main_jwks`];
/// - `beta/strict`: the same issuer and keys, audience [`BETA_AUDIENCE`], ES256 only,
///   `typ` must be `at+jwt`, no leeway;
/// - `other/nokid`: [`OTHER_ISSUER`], no audience check, `exp` optional, [`Keys::nokid_jwks`].
#[must_use]
pub fn providers() -> Vec<ProviderConfig> {
    use keygate::Algorithm::{ES256, EdDSA, PS256, RS256};
    let keys = Keys::get();
    vec![
        ProviderConfig::builder("acme", "main", ISSUER)
            .static_jwks(keys.main_jwks())
            .audiences([AUDIENCE])
            .algorithms([RS256, PS256, ES256, EdDSA])
            .build()
            .expect("acme/main is a valid provider"),
        ProviderConfig::builder("beta", "strict", ISSUER)
            .static_jwks(keys.main_jwks())
            .audiences([BETA_AUDIENCE])
            .algorithms([ES256])
            .required_typ("at+jwt")
            .leeway(Duration::ZERO)
            .build()
            .expect("beta/strict is a valid provider"),
        ProviderConfig::builder("other", "nokid", OTHER_ISSUER)
            .static_jwks(keys.nokid_jwks())
            .dangerous_skip_audience_check()
            .require_exp(false)
            .build()
            .expect("other/nokid is a valid provider"),
    ]
}

/// The revocations the token verifiers consult: `jti` `revoked-jti`, subject `revoked-sub`
/// of `acme` (tokens issued before `now`), and `acme/main`'s key `rsa-noalg`.
#[must_use]
pub fn revocations() -> Arc<Revocations> {
    let r = Revocations::new();
    let now = i64::try_from(NOW_UNIX).expect("fits");
    r.revoke_jti("revoked-jti", now + 86_400);
    r.revoke_subject("acme", "revoked-sub", now, now + 86_400);
    r.revoke_kid(&ProviderId::new("acme", "main"), "rsa-noalg", None);
    Arc::new(r)
}

/// A verifier over [`providers`] with the fixed clock and [`revocations`]; with a verified-token
/// cache of `token_cache` entries (0: none).
#[must_use]
pub fn verifier(token_cache: usize) -> Verifier {
    let mut builder = Verifier::builder()
        .clock(Arc::new(FixedClock))
        .fetcher(Arc::new(NoFetch))
        .revocations(revocations())
        .token_cache(token_cache);
    for p in providers() {
        builder = builder.provider(p);
    }
    builder.build().expect("the fixture providers build")
}

/// A compact JWS over the given header and payload JSON texts, signed by `signer`.
#[must_use]
pub fn mint(header: &str, payload: &str, signer: Signer) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    let sig = Keys::get().sign(signer, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// Polls a future that must not wait: verification against static key sets never awaits
/// anything (the invariant "the hot path never awaits the network while a usable key is
/// cached"), so a pending future is a bug and panics.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("verification against a static key set did not complete at once"),
    }
}

/// Whether `KEYGATE_FUZZ_DEBUG` is set: targets then print what they decided about each input.
#[must_use]
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("KEYGATE_FUZZ_DEBUG").is_some())
}

/// base64url without padding (RFC 7515 section 2).
#[must_use]
pub fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The bus's MAC key ring: `k2` signs, `k1` (the previous key) still verifies.
pub mod bus {
    use aws_lc_rs::hmac;
    use keygate_server::bus::wire::{MacKey, MacKeys, SignedEntry};

    /// Ids and secrets of the ring, signer first.
    pub const RING: [(&str, &[u8]); 2] = [
        ("k2", b"fuzz-bus-secret-two-0123456789abcdef"),
        ("k1", b"fuzz-bus-secret-one-0123456789abcdef"),
    ];

    /// The ring as the server holds it.
    #[must_use]
    pub fn ring() -> MacKeys {
        MacKeys::new(RING.iter().map(|(id, s)| MacKey::new(id, s)).collect())
            .expect("the ring is not empty")
    }

    /// Sets `entry.key` to `RING[which]`'s id and `entry.mac` to that key's MAC over the entry,
    /// computed as the wire format documents it (`bus/wire.rs`): HMAC-SHA256 over the label
    /// `keygate.bus.v1`, then each of `v, type, seq, epoch, origin, at, payload` as a 4-byte
    /// big-endian length and its bytes; lowercase hex.
    pub fn sign(entry: &mut SignedEntry, which: usize) {
        let (id, secret) = RING[which % RING.len()];
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"keygate.bus.v1");
        for part in [
            &entry.v,
            &entry.kind,
            &entry.seq,
            &entry.epoch,
            &entry.origin,
            &entry.at,
            &entry.payload,
        ] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            ctx.update(&len.to_be_bytes());
            ctx.update(part.as_bytes());
        }
        entry.key = id.to_owned();
        entry.mac = ctx
            .sign()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64url(raw.as_bytes()), enc);
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
