//! Typed verification errors, each with a stable reason code.
//!
//! The reason codes ([`VerifyError::reason`], a [`Reason`]) are a contract: metrics labels,
//! the `X-Auth-Reason` header and the CLI's `error_class` all use them verbatim.

use std::fmt;
use std::sync::Arc;

use crate::dpop::DpopError;
use crate::fetch::FetchError;
use crate::introspect::IntrospectionError;
use crate::reason::Reason;

/// Why a token was refused.
///
/// Grouped by what went wrong; [`VerifyError::reason`] gives the stable reason code.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The token is longer than the configured limit.
    #[error("token larger than {limit} bytes")]
    TokenTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The JOSE header asks for something keygate refuses.
    #[error("{0}")]
    Header(HeaderError),
    /// No usable key was found for the token.
    #[error("{0}")]
    Key(KeyError),
    /// The signature does not verify under the selected key.
    #[error("signature does not verify")]
    BadSignature,
    /// The signature is good but a claim is not acceptable.
    #[error("{0}")]
    Claims(ClaimsError),
    /// The token, its subject or its key has been revoked.
    #[error("token revoked ({0})")]
    Revoked(RevokedBy),
    /// The provider's keys cannot be obtained.
    #[error("{0}")]
    KeysUnavailable(KeysUnavailable),
    /// An opaque token was not accepted by introspection, or could not be checked.
    #[error("{0}")]
    Introspection(IntrospectionError),
    /// The token's DPoP binding was not proven.
    #[error("{0}")]
    Dpop(DpopError),
}

impl VerifyError {
    /// The stable reason code for this error; [`Reason::ALL`] lists every one.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            VerifyError::Malformed(_) => Reason::Malformed,
            VerifyError::TokenTooLarge { .. } => Reason::TokenTooLarge,
            VerifyError::Header(h) => h.reason(),
            VerifyError::Key(k) => k.reason(),
            VerifyError::BadSignature => Reason::BadSignature,
            VerifyError::Claims(c) => c.reason(),
            VerifyError::Revoked(_) => Reason::Revoked,
            VerifyError::KeysUnavailable(k) => k.reason(),
            VerifyError::Introspection(e) => e.reason(),
            VerifyError::Dpop(e) => e.reason(),
        }
    }

    /// For a refusal of the 503 class that knows when to try again: that delay.
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            VerifyError::Introspection(
                IntrospectionError::Busy { retry_after }
                | IntrospectionError::Unavailable { retry_after },
            ) => Some(*retry_after),
            _ => None,
        }
    }
}

/// What made a token structurally malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Not three dot-separated segments.
    Segments,
    /// A segment is not unpadded base64url.
    Base64,
    /// The header is not a JSON object with a string `alg`.
    Header,
    /// The payload is not a JSON object.
    Payload,
    /// A JSON object has the same member twice (RFC 7515 section 4, RFC 7519 section 4).
    DuplicateMember,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Segments => "expected three base64url segments",
            Malformed::Base64 => "segment is not unpadded base64url",
            Malformed::Header => "header is not a valid JOSE header",
            Malformed::Payload => "payload is not a JSON object",
            Malformed::DuplicateMember => "duplicate member name",
        })
    }
}

/// A JOSE header keygate refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// `alg` is `none` (in any casing).
    #[error("unsecured tokens (alg none) are never accepted")]
    AlgNone,
    /// `alg` is not supported or not on the provider's allow-list.
    #[error("algorithm not allowed")]
    AlgNotAllowed,
    /// `crit` names an extension keygate does not understand, or is malformed.
    #[error("unsupported critical header")]
    Crit,
    /// A JWE, a nested JWT, or an unencoded payload (`b64`).
    #[error("unsupported token type")]
    Unsupported,
    /// The header carries `jwk`, `jku`, `x5u` or `x5c` and the provider was configured with
    /// `refuse_embedded_keys`. Without it such members are ignored: keys are only ever taken
    /// from the provider's key set (RFC 8725 section 3.10).
    #[error("tokens carrying embedded or remote key references are refused by this provider")]
    EmbeddedKey,
}

impl HeaderError {
    fn reason(&self) -> Reason {
        match self {
            HeaderError::AlgNone => Reason::AlgNone,
            HeaderError::AlgNotAllowed => Reason::AlgNotAllowed,
            HeaderError::Crit => Reason::CritHeader,
            HeaderError::Unsupported => Reason::UnsupportedToken,
            HeaderError::EmbeddedKey => Reason::UntrustedEmbeddedKey,
        }
    }
}

/// No usable key for the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The `kid` is not in the provider's key set (after any allowed refresh).
    #[error("no key with this kid")]
    UnknownKid,
    /// The token has no `kid` and the key set does not identify a single key.
    #[error("token has no kid")]
    MissingKid,
    /// The key's `kty`, `crv`, `alg`, `use` or `key_ops` do not fit the token's `alg`.
    #[error("key does not fit the token's algorithm")]
    AlgMismatch,
    /// The key is too weak (RSA under 2048 bits).
    #[error("key too weak")]
    Weak,
}

impl KeyError {
    fn reason(&self) -> Reason {
        match self {
            KeyError::UnknownKid => Reason::UnknownKid,
            KeyError::MissingKid => Reason::MissingKid,
            KeyError::AlgMismatch => Reason::KeyAlgMismatch,
            KeyError::Weak => Reason::WeakKey,
        }
    }
}

/// A claim that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// A claim has the wrong type (e.g. a NumericDate that is not a number).
    #[error("invalid claim {0:?}")]
    Invalid(&'static str),
    /// A required claim is absent.
    #[error("missing claim {0:?}")]
    Missing(&'static str),
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` matches no configured provider (or not the one asked for).
    #[error("issuer not trusted")]
    BadIssuer,
    /// `aud` contains none of the provider's audiences.
    #[error("audience not accepted")]
    BadAudience,
}

impl ClaimsError {
    fn reason(&self) -> Reason {
        match self {
            ClaimsError::Invalid(_) => Reason::InvalidClaim,
            ClaimsError::Missing(_) => Reason::MissingClaim,
            ClaimsError::Expired => Reason::Expired,
            ClaimsError::NotYetValid => Reason::NotYetValid,
            ClaimsError::IssuedInFuture => Reason::IatInFuture,
            ClaimsError::BadIssuer => Reason::BadIssuer,
            ClaimsError::BadAudience => Reason::BadAudience,
        }
    }
}

/// Which revocation matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokedBy {
    /// The token's `jti` is revoked.
    Jti,
    /// Every token of the subject issued before a time is revoked.
    Subject,
    /// The signing key is distrusted.
    Kid,
    /// The token itself, by the SHA-256 of its text.
    Token,
}

impl fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevokedBy::Jti => "jti",
            RevokedBy::Subject => "subject",
            RevokedBy::Kid => "kid",
            RevokedBy::Token => "token_sha256",
        })
    }
}

/// The provider's keys cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KeysUnavailable {
    /// No key set could be fetched and no usable one is cached.
    #[error("keys unavailable{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Fetch(Option<Arc<FetchError>>),
    /// The key set document is not a valid JWKS and no usable one is cached.
    #[error("key set is malformed: {0}")]
    MalformedJwks(JwksError),
}

impl KeysUnavailable {
    fn reason(&self) -> Reason {
        match self {
            KeysUnavailable::Fetch(_) => Reason::KeysUnavailable,
            KeysUnavailable::MalformedJwks(_) => Reason::MalformedJwks,
        }
    }

    /// The most specific reason code for operators: the fetch failure's own code (e.g.
    /// `timeout`, `pin_mismatch`) when there is one.
    #[must_use]
    pub fn cause_reason(&self) -> &'static str {
        match self {
            KeysUnavailable::Fetch(Some(f)) => f.reason(),
            other => other.reason().as_str(),
        }
    }
}

/// Why a JWKS document was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    #[error("not a JWK set")]
    NotAJwkSet,
    /// More keys than the configured cap.
    #[error("more than {0} keys")]
    TooManyKeys(usize),
    /// A document handed over by another replica is larger than a fetch may return.
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    /// No entry is a usable verification key; an empty set never replaces a non-empty one.
    #[error("no usable keys")]
    Empty,
}

impl From<JwksError> for VerifyError {
    fn from(e: JwksError) -> Self {
        VerifyError::KeysUnavailable(KeysUnavailable::MalformedJwks(e))
    }
}

/// A configuration mistake found by a builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {problem}")]
pub struct ConfigError {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}
