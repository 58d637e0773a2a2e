//! A revocation on the wire: its own versioned JSON shape (`{"kind": "jti" | "subject" |
//! "kid" | "token", ...}`), apart from `keygate::Revocation` so the library can change without changing
//! what the fleet signs, and the one place the two convert.
//!
//! The bytes are stable: every replica signs the same bytes for the same revocation, so the
//! shared set keeps one member however many replicas write it back.
//!
//! Each kind is a variant of its own, and a reader refuses a kind it does not know as a
//! malformed payload: `token` (by the SHA-256 of the token's text) came after the first three,
//! so a replica built before it drops and counts such an entry, and skips such a state file
//! line, rather than applying it as anything else.

use keygate::Revocation;
use serde::{Deserialize, Serialize};

use super::{EntryError, check_field};

/// The payload of a `revoke` entry and a line of the local state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum RevokePayload {
    Jti(ByJti),
    Subject(BySubject),
    Kid(ByKid),
    Token(ByToken),
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ByJti {
    jti: String,
    exp: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BySubject {
    tenant: String,
    sub: String,
    before: i64,
    until: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ByKid {
    tenant: String,
    provider: String,
    kid: String,
    until: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ByToken {
    /// Lowercase hex SHA-256 of the token's text.
    sha256: String,
    exp: i64,
}

/// A revocation of a kind this build cannot carry on the bus (the library grew a kind the
/// wire format does not have yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a revocation kind the bus cannot carry")]
pub struct UnknownRevocation;

impl TryFrom<&Revocation> for RevokePayload {
    type Error = UnknownRevocation;

    fn try_from(r: &Revocation) -> Result<Self, UnknownRevocation> {
        Ok(match r.clone() {
            Revocation::Jti { jti, exp } => RevokePayload::Jti(ByJti { jti, exp }),
            Revocation::Subject {
                tenant,
                sub,
                before,
                until,
            } => RevokePayload::Subject(BySubject {
                tenant,
                sub,
                before,
                until,
            }),
            Revocation::Kid {
                tenant,
                provider,
                kid,
                until,
            } => RevokePayload::Kid(ByKid {
                tenant,
                provider,
                kid,
                until,
            }),
            Revocation::Token { sha256, exp } => RevokePayload::Token(ByToken { sha256, exp }),
            _ => return Err(UnknownRevocation),
        })
    }
}

impl TryFrom<RevokePayload> for Revocation {
    type Error = EntryError;

    /// Checks every text field's length.
    fn try_from(p: RevokePayload) -> Result<Self, EntryError> {
        Ok(match p {
            RevokePayload::Jti(ByJti { jti, exp }) => {
                check_field(&jti)?;
                Revocation::Jti { jti, exp }
            }
            RevokePayload::Subject(r) => {
                check_field(&r.tenant)?;
                check_field(&r.sub)?;
                Revocation::Subject {
                    tenant: r.tenant,
                    sub: r.sub,
                    before: r.before,
                    until: r.until,
                }
            }
            RevokePayload::Kid(r) => {
                for f in [&r.tenant, &r.provider, &r.kid] {
                    check_field(f)?;
                }
                Revocation::Kid {
                    tenant: r.tenant,
                    provider: r.provider,
                    kid: r.kid,
                    until: r.until,
                }
            }
            RevokePayload::Token(ByToken { sha256, exp }) => {
                // Exactly what `token_sha256` writes: one spelling per token, so every replica
                // signs and stores the same bytes.
                if !keygate::is_token_sha256(&sha256) {
                    return Err(EntryError::Malformed("token sha256"));
                }
                Revocation::Token { sha256, exp }
            }
        })
    }
}

impl RevokePayload {
    /// When the revocation can leave shared state (unix seconds); `None` for never.
    fn expiry(&self) -> Option<i64> {
        match self {
            RevokePayload::Jti(r) => Some(r.exp),
            RevokePayload::Subject(r) => Some(r.until),
            RevokePayload::Kid(r) => r.until,
            RevokePayload::Token(r) => Some(r.exp),
        }
    }
}

/// A revocation as one line of JSON (the local state file's format, and a `revoke` entry's
/// payload).
///
/// # Errors
/// [`UnknownRevocation`] for a kind the wire format does not have.
pub fn revocation_json(r: &Revocation) -> Result<String, UnknownRevocation> {
    let payload = RevokePayload::try_from(r)?;
    Ok(serde_json::to_string(&payload).unwrap_or_default())
}

/// Parses [`revocation_json`]'s output.
///
/// # Errors
/// [`EntryError::Malformed`] when it is not a revocation.
pub fn parse_revocation_json(line: &str) -> Result<Revocation, EntryError> {
    let payload: RevokePayload =
        serde_json::from_str(line).map_err(|_| EntryError::Malformed("payload"))?;
    Revocation::try_from(payload)
}

/// When a revocation's entry can leave shared state (unix seconds); `None` for never.
///
/// # Errors
/// [`UnknownRevocation`] for a kind the wire format does not have.
pub fn revocation_expiry(r: &Revocation) -> Result<Option<i64>, UnknownRevocation> {
    RevokePayload::try_from(r).map(|p| p.expiry())
}
