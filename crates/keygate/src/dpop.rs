//! DPoP (RFC 9449): sender-constrained access tokens.
//!
//! A provider with [`DpopMode::Allowed`] or [`DpopMode::Required`] accepts a token bound to a
//! key (`cnf.jkt`, in the JWT or in the introspection result) only when it comes with
//! `Authorization: DPoP <token>` and a valid `DPoP` proof for this very request
//! ([`Verifier::check_dpop`](crate::Verifier::check_dpop)). Seen proof ids are remembered by a
//! [`ReplayGuard`] for the proof's window: in memory on one node ([`MemoryReplayGuard`]), in
//! Redis across a fleet.
//!
//! # What a proof must be
//!
//! [`ProofCheck`] runs RFC 9449 section 4.3's checks, in its order:
//!
//! 1. exactly one `DPoP` header value ([`DpopError::ProofMissing`] otherwise);
//! 2. a compact JWS of at most [`MAX_PROOF_BYTES`], strict unpadded base64url, JSON objects
//!    with no member twice ([`DpopError::ProofMalformed`]);
//! 3. the claims `jti` (a string of at most [`MAX_JTI_BYTES`]), `htm`, `htu` (strings) and
//!    `iat` (a number), and `ath` when an access token comes with it;
//! 4. header `typ` `dpop+jwt` (as a media type: any case, `application/` optional), and no
//!    `crit`, since keygate understands no JWS extension;
//! 5. `alg` an asymmetric algorithm keygate verifies and the provider allows: never `none`,
//!    never an HMAC ([`DpopError::AlgNotAllowed`]);
//! 6. and 7. a `jwk` header holding a public key only (no `d`, `p`, `q`, `dp`, `dq`, `qi`,
//!    `oth`, `k`), usable for `alg` under the rules every key set obeys (RSA of at least
//!    2048 bits, EC points on their curve, ...) ([`DpopError::BadJwk`]), under which the
//!    signature verifies ([`DpopError::BadSignature`]);
//! 8. `htm` is the request's method, exactly;
//! 9. `htu` is the request's URL without query and fragment, both compared after RFC 3986
//!    normalization (scheme and host case, default port, empty path, percent-encoding);
//! 10. (nonces: not supported, see below);
//! 11. `iat` within the provider's window either side of the verifier's clock
//!     ([`DEFAULT_IAT_WINDOW`] by default);
//! 12. `ath` is the base64url SHA-256 of the access token, and the RFC 7638 thumbprint of the
//!     proof's key ([`jwk_thumbprint`]) is the token's `cnf.jkt`, both compared in constant
//!     time.
//!
//! Last, once everything else holds, the replay check: the proof is recorded for twice the
//! window under SHA-256(thumbprint, 0x00, `jti`), and a proof already recorded is
//! [`DpopError::Replayed`]. A store that cannot answer refuses the request
//! ([`DpopError::ReplayUnavailable`], a 503-class reason) rather than let a proof through
//! unchecked.
//!
//! # Not supported
//!
//! Server-provided nonces (`DPoP-Nonce`, RFC 9449 section 8 and 9) are not supported: a
//! proof's `nonce` claim is ignored and no nonce is ever asked for. Deployments whose
//! servers require nonces are out of scope; freshness rests on the `iat` window and the
//! replay store.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::fetch::BoxFuture;
use crate::reason::Reason;

mod htu;
pub(crate) mod json;
mod proof;
mod replay;
#[cfg(test)]
mod tests;
mod thumbprint;

pub use proof::{MAX_JTI_BYTES, MAX_PROOF_BYTES, ProofCheck, VerifiedProof};
pub use replay::{DEFAULT_REPLAY_CAPACITY, MemoryReplayGuard};
pub use thumbprint::jwk_thumbprint;

/// The request a DPoP proof must have been made for, as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The HTTP method, e.g. `GET` (compared exactly with the proof's `htm`).
    pub method: &'a str,
    /// The absolute URL the client called, e.g. `https://api.example/things?page=2`, as the
    /// server reconstructs it (scheme, host and path as the client saw them, behind any
    /// proxy); query and fragment are ignored.
    pub url: &'a str,
    /// Every `DPoP` header value of the request: a proof is accepted only when there is
    /// exactly one.
    pub proofs: &'a [&'a str],
}

/// How a provider treats DPoP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopMode {
    /// Not checked (the default): tokens are taken as bearer tokens, as before.
    #[default]
    Off,
    /// A token bound to a key (`cnf.jkt`) must come with a valid proof; an unbound token is
    /// accepted as a bearer token.
    Allowed,
    /// Every token must be bound to a key and come with a valid proof.
    Required,
}

impl DpopMode {
    /// The configuration spelling: `off`, `allowed` or `required`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DpopMode::Off => "off",
            DpopMode::Allowed => "allowed",
            DpopMode::Required => "required",
        }
    }
}

/// A DPoP mode that is not `off`, `allowed` or `required`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected \"off\", \"allowed\" or \"required\"")]
pub struct UnknownDpopMode;

impl FromStr for DpopMode {
    type Err = UnknownDpopMode;

    fn from_str(s: &str) -> Result<DpopMode, UnknownDpopMode> {
        match s {
            "off" => Ok(DpopMode::Off),
            "allowed" => Ok(DpopMode::Allowed),
            "required" => Ok(DpopMode::Required),
            _ => Err(UnknownDpopMode),
        }
    }
}

impl fmt::Display for DpopMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a proof's `iat` may be from now, either way, by default; a proof's `jti` is
/// remembered for twice this.
pub const DEFAULT_IAT_WINDOW: Duration = Duration::from_secs(60);

/// Why a DPoP check failed. Each has its own reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// A proof was needed and the request has no `DPoP` header (or more than one).
    #[error("DPoP proof missing")]
    ProofMissing,
    /// The proof is not a compact JWS with a `dpop+jwt` header and the required claims.
    #[error("DPoP proof malformed")]
    ProofMalformed,
    /// The proof's algorithm is `none`, symmetric, or not on the provider's allow-list.
    #[error("DPoP proof algorithm not accepted")]
    AlgNotAllowed,
    /// The proof's `jwk` header is missing, holds private key material, or is not a usable
    /// public key for its algorithm.
    #[error("DPoP proof key not acceptable")]
    BadJwk,
    /// The proof's signature does not verify under its `jwk`.
    #[error("DPoP proof signature does not verify")]
    BadSignature,
    /// `htm` is not the request's method.
    #[error("DPoP proof htm does not match the request")]
    HtmMismatch,
    /// `htu` is not the request's URL.
    #[error("DPoP proof htu does not match the request")]
    HtuMismatch,
    /// `ath` is not the hash of the access token.
    #[error("DPoP proof ath does not match the token")]
    AthMismatch,
    /// The proof's key is not the one the token is bound to (`cnf.jkt`).
    #[error("DPoP proof key is not the token's")]
    JktMismatch,
    /// `iat` is outside the accepted window.
    #[error("DPoP proof iat outside the accepted window")]
    IatOutOfWindow,
    /// This proof (`jti`) was already used within its window, here or on another replica.
    #[error("DPoP proof replayed")]
    Replayed,
    /// A token bound to a key was sent with the `Bearer` scheme.
    #[error("DPoP-bound token sent as a bearer token")]
    BoundTokenAsBearer,
    /// A token not bound to a key was sent with the `DPoP` scheme.
    #[error("token sent with the DPoP scheme is not bound to a key")]
    UnboundToken,
    /// The provider requires DPoP and the token is an unbound bearer token.
    #[error("the provider requires DPoP-bound tokens")]
    Required,
    /// The replay store could not be asked: nothing was decided.
    #[error("DPoP replay store unavailable: {0}")]
    ReplayUnavailable(ReplayUnavailable),
}

impl DpopError {
    /// The stable reason code.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            DpopError::ProofMissing => Reason::DpopProofMissing,
            DpopError::ProofMalformed => Reason::DpopProofMalformed,
            DpopError::AlgNotAllowed => Reason::DpopAlgNotAllowed,
            DpopError::BadJwk => Reason::DpopBadJwk,
            DpopError::BadSignature => Reason::DpopBadSignature,
            DpopError::HtmMismatch => Reason::DpopHtmMismatch,
            DpopError::HtuMismatch => Reason::DpopHtuMismatch,
            DpopError::AthMismatch => Reason::DpopAthMismatch,
            DpopError::JktMismatch => Reason::DpopJktMismatch,
            DpopError::IatOutOfWindow => Reason::DpopIatOutOfWindow,
            DpopError::Replayed => Reason::DpopReplayed,
            DpopError::BoundTokenAsBearer => Reason::DpopBoundTokenAsBearer,
            DpopError::UnboundToken => Reason::DpopUnboundToken,
            DpopError::Required => Reason::DpopRequired,
            DpopError::ReplayUnavailable(_) => Reason::DpopReplayUnavailable,
        }
    }

    /// Whether the proof itself is at fault (`error="invalid_dpop_proof"`), rather than the
    /// token or the way it was presented (`error="invalid_token"`), or an outage.
    #[must_use]
    pub fn is_proof_error(&self) -> bool {
        !matches!(
            self,
            DpopError::BoundTokenAsBearer
                | DpopError::UnboundToken
                | DpopError::Required
                | DpopError::ReplayUnavailable(_)
        )
    }
}

/// The replay store could not answer (Redis unreachable, say). Carries no token or proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReplayUnavailable(pub String);

/// Remembers which proofs were seen, so that each is accepted once.
///
/// Keys are 32-byte digests (of the proof key's thumbprint and the proof's `jti`), never
/// anything a client chose verbatim.
pub trait ReplayGuard: Send + Sync + fmt::Debug + 'static {
    /// Records `key` for `ttl` and answers whether this is its first use (`true`), atomically:
    /// of two concurrent calls with one key, across every replica sharing the store, exactly
    /// one gets `true`. `now` is the verifier's clock, for stores that keep time themselves.
    ///
    /// # Errors
    /// [`ReplayUnavailable`] when the store cannot be asked; the proof is then refused with a
    /// 503-class reason, never accepted.
    fn first_use(
        &self,
        key: [u8; 32],
        now: SystemTime,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, ReplayUnavailable>>;

    /// Since when this store's memory is whole, if it may have lost some: a proof issued
    /// (`iat`) before that moment may have been recorded in what was lost (this process
    /// restarted; Redis restarted, came back from an older snapshot, or failed over to a
    /// replica that lagged), so it is refused as possibly replayed even when `first_use`
    /// says it is new. Read after `first_use`, so a reconnection during the call counts.
    /// `None` (the default): the store never forgets a proof within its time to live.
    fn remembers_since(&self) -> Option<SystemTime> {
        None
    }
}
