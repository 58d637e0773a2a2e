//! Checking one DPoP proof against one request (RFC 9449 section 4.3): [`ProofCheck`].

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

use super::htu::htu_matches;
use super::json::Members;
use super::thumbprint::thumbprint_of;
use super::{DEFAULT_IAT_WINDOW, DpopError, ReplayGuard};
use crate::alg::Algorithm;
use crate::jwk::{KeySet, Lookup};
use crate::token::{Segments, decode_into, json_text};

/// The longest proof read, in bytes; a proof is a small JWS with one public key in it (an
/// 8192-bit RSA key and its signature stay well below this).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// The longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// JWK members that only a private (or symmetric) key has: a proof's `jwk` must be public.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a DPoP proof must match, and how it is judged: the request it was sent with, the
/// access token it must cover, the key the token is bound to, the algorithms allowed and the
/// window around `now` its `iat` must fall in.
///
/// ```
/// # async fn run(proof: &str) -> Result<(), keygate::dpop::DpopError> {
/// use keygate::dpop::{MemoryReplayGuard, ProofCheck};
/// use keygate::{Clock, SystemClock};
///
/// let guard = MemoryReplayGuard::default();
/// let now = SystemClock.now();
/// let proof = ProofCheck::new("GET", "https://api.example/things?page=2", now)
///     .access_token("eyJ...")
///     .jkt("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
///     .check_once(&[proof], &guard)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct ProofCheck<'a> {
    method: &'a str,
    url: &'a str,
    now: SystemTime,
    access_token: Option<&'a str>,
    jkt: Option<&'a str>,
    algorithms: &'a [Algorithm],
    iat_window: Duration,
}

/// A proof that passed every check: its key's thumbprint and its id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    alg: Algorithm,
    jkt: String,
    jti: String,
    /// `iat` in unix milliseconds (rounded down).
    iat_ms: i64,
}

impl<'a> ProofCheck<'a> {
    /// A proof for a request with this method and absolute URL, judged at `now`. By default
    /// every algorithm keygate verifies is allowed, the window is
    /// [`DEFAULT_IAT_WINDOW`](super::DEFAULT_IAT_WINDOW), and neither `ath` nor the key are
    /// pinned.
    pub fn new(method: &'a str, url: &'a str, now: SystemTime) -> Self {
        ProofCheck {
            method,
            url,
            now,
            access_token: None,
            jkt: None,
            algorithms: &Algorithm::ALL,
            iat_window: DEFAULT_IAT_WINDOW,
        }
    }

    /// The access token the proof comes with: the proof must carry `ath`, its hash.
    pub fn access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }

    /// The thumbprint the token is bound to (`cnf.jkt`): the proof's key must have it.
    pub fn jkt(mut self, jkt: &'a str) -> Self {
        self.jkt = Some(jkt);
        self
    }

    /// The algorithms a proof may be signed with (default: all keygate verifies, none of
    /// which is `none` or HMAC).
    pub fn algorithms(mut self, algorithms: &'a [Algorithm]) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// How far `iat` may be from `now`, either way.
    pub fn iat_window(mut self, window: Duration) -> Self {
        self.iat_window = window;
        self
    }

    /// Every check but replay, in RFC 9449 section 4.3's order; `proofs` are all the `DPoP`
    /// header values the request carried.
    ///
    /// # Errors
    /// The first check that fails, as a [`DpopError`].
    pub fn check(&self, proofs: &[&str]) -> Result<VerifiedProof, DpopError> {
        // Check 1: exactly one `DPoP` header.
        let [proof] = proofs else {
            return Err(DpopError::ProofMissing);
        };
        if proof.len() > MAX_PROOF_BYTES {
            return Err(DpopError::ProofMalformed);
        }
        // Check 2: a well-formed JWS, strictly parsed.
        let malformed = |_| DpopError::ProofMalformed;
        let segments = Segments::split(proof).map_err(malformed)?;
        let mut decoded = Vec::with_capacity(proof.len());
        let header_at = decode_into(&mut decoded, segments.header).map_err(malformed)?;
        let payload_at = decode_into(&mut decoded, segments.payload).map_err(malformed)?;
        let signature_at = decode_into(&mut decoded, segments.signature).map_err(malformed)?;
        let header_json =
            json_text(&decoded[header_at], crate::Malformed::Header).map_err(malformed)?;
        let payload_json =
            json_text(&decoded[payload_at], crate::Malformed::Payload).map_err(malformed)?;
        let header = Members::parse(header_json).ok_or(DpopError::ProofMalformed)?;
        let claims = Members::parse(payload_json).ok_or(DpopError::ProofMalformed)?;

        // Check 3: the required claims, with their types.
        let string = |name| {
            claims
                .str(name)
                .ok()
                .flatten()
                .ok_or(DpopError::ProofMalformed)
        };
        let jti = string("jti")?;
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(DpopError::ProofMalformed);
        }
        let htm = string("htm")?;
        let htu = string("htu")?;
        let iat = claims
            .number("iat")
            .ok()
            .flatten()
            .ok_or(DpopError::ProofMalformed)?;
        let ath = match self.access_token {
            Some(_) => Some(string("ath")?),
            None => None,
        };

        // Check 4: `typ`. keygate understands no JWS extension, so any `crit` is refused
        // (RFC 7515 section 4.1.11).
        let typ = header
            .str("typ")
            .ok()
            .flatten()
            .ok_or(DpopError::ProofMalformed)?;
        if !is_dpop_typ(&typ) || header.has("crit") {
            return Err(DpopError::ProofMalformed);
        }

        // Check 5: an asymmetric algorithm keygate supports and the provider allows. `none`
        // and the HMAC algorithms are not `Algorithm`s at all.
        let alg = header
            .str("alg")
            .map_err(|_| DpopError::ProofMalformed)?
            .ok_or(DpopError::ProofMalformed)?;
        let alg = Algorithm::from_header(&alg)
            .filter(|a| a.allowed_by(self.algorithms))
            .ok_or(DpopError::AlgNotAllowed)?;

        // Check 7 before 6: the key must be public, and usable for `alg` under the rules
        // every key set obeys (RSA of at least 2048 bits, points on the curve, ...).
        let jwk_raw = header.get("jwk").ok_or(DpopError::BadJwk)?;
        let jwk = Members::parse(jwk_raw.get()).ok_or(DpopError::BadJwk)?;
        if jwk.names().any(|n| PRIVATE_MEMBERS.contains(&n)) {
            return Err(DpopError::BadJwk);
        }
        let document = format!("{{\"keys\":[{}]}}", jwk_raw.get());
        let keys = KeySet::parse(document.as_bytes(), &[alg], 1).map_err(|_| DpopError::BadJwk)?;
        let Lookup::Found(key) = keys.lookup(None, alg) else {
            return Err(DpopError::BadJwk);
        };

        // Check 6: the signature, under the proof's own key.
        if !key.verify(
            alg,
            segments.signing_input.as_bytes(),
            &decoded[signature_at],
        ) {
            return Err(DpopError::BadSignature);
        }

        // Checks 8 and 9: this very request.
        if htm != self.method {
            return Err(DpopError::HtmMismatch);
        }
        if !htu_matches(&htu, self.url) {
            return Err(DpopError::HtuMismatch);
        }

        // Check 11 (check 10, the server nonce, is not supported): a fresh proof.
        let now = match self.now.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        if (iat - now).abs() > self.iat_window.as_secs_f64() {
            return Err(DpopError::IatOutOfWindow);
        }

        // Check 12: the token this proof covers, and the key that token is bound to.
        if let (Some(token), Some(ath)) = (self.access_token, &ath) {
            let expected = base64_simd::URL_SAFE_NO_PAD
                .encode_to_string(digest(&SHA256, token.as_bytes()).as_ref());
            if verify_slices_are_equal(expected.as_bytes(), ath.as_bytes()).is_err() {
                return Err(DpopError::AthMismatch);
            }
        }
        let thumbprint = thumbprint_of(&jwk)?;
        if let Some(jkt) = self.jkt
            && verify_slices_are_equal(thumbprint.as_bytes(), jkt.as_bytes()).is_err()
        {
            return Err(DpopError::JktMismatch);
        }
        Ok(VerifiedProof {
            alg,
            jkt: thumbprint,
            jti,
            // Saturating float-to-int: an absurd `iat` already failed the window check.
            #[allow(clippy::cast_possible_truncation, reason = "saturates; checked above")]
            iat_ms: (iat * 1000.0).floor() as i64,
        })
    }

    /// [`ProofCheck::check`], then, when every other check passed, the replay check: the
    /// proof is recorded in `guard` for twice the `iat` window, and refused if it was already
    /// there.
    ///
    /// # Errors
    /// As [`ProofCheck::check`]; [`DpopError::Replayed`] for a proof seen before and
    /// [`DpopError::ReplayUnavailable`] when `guard` cannot answer.
    pub async fn check_once(
        &self,
        proofs: &[&str],
        guard: &dyn ReplayGuard,
    ) -> Result<VerifiedProof, DpopError> {
        let proof = self.check(proofs)?;
        let ttl = self.iat_window.saturating_mul(2);
        match guard.first_use(proof.replay_key(), self.now, ttl).await {
            // New to the store, but issued before the store's memory is whole: it may have
            // been used and forgotten.
            Ok(true)
                if guard
                    .remembers_since()
                    .is_some_and(|since| proof.iat_ms < unix_millis_signed(since)) =>
            {
                Err(DpopError::Replayed)
            }
            Ok(true) => Ok(proof),
            Ok(false) => Err(DpopError::Replayed),
            Err(e) => Err(DpopError::ReplayUnavailable(e)),
        }
    }
}

/// `at` in unix milliseconds, negative before 1970.
fn unix_millis_signed(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

impl fmt::Debug for ProofCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access token is a credential: only whether there is one is shown.
        f.debug_struct("ProofCheck")
            .field("method", &self.method)
            .field("now", &self.now)
            .field("access_token", &self.access_token.map(|_| "<redacted>"))
            .field("jkt", &self.jkt)
            .field("algorithms", &self.algorithms)
            .field("iat_window", &self.iat_window)
            .finish_non_exhaustive()
    }
}

impl VerifiedProof {
    /// The algorithm the proof was signed with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The RFC 7638 thumbprint of the proof's key.
    #[must_use]
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The proof's `jti`.
    #[must_use]
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The key the replay store remembers this proof by: SHA-256 of the thumbprint, a zero
    /// byte and the `jti`. The thumbprint keeps one client's ids apart from another's; the
    /// zero byte keeps the two parts from running into each other (no thumbprint has one).
    #[must_use]
    pub fn replay_key(&self) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
        ctx.update(self.jkt.as_bytes());
        ctx.update(&[0]);
        ctx.update(self.jti.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }
}

impl fmt::Debug for VerifiedProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedProof")
            .field("alg", &self.alg)
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

/// `dpop+jwt`, compared as media types are: case-insensitively, `application/` optional
/// (RFC 7515 section 4.1.9).
fn is_dpop_typ(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case("dpop+jwt")
}
