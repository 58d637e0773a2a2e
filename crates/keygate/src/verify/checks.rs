//! The checks a token passes once its provider is known: the signature under the provider's
//! keys, then the registered claims at `now`. Pure functions of their inputs.

use std::sync::Arc;

use crate::alg::Algorithm;
use crate::config::ProviderConfig;
use crate::error::{ClaimsError, KeyError};
use crate::jwk::Lookup;
use crate::provider::Snapshot;
use crate::token::{Audience, NumericDate, RegisteredClaims};

/// The signed parts of a token: what the signature covers, the decoded payload and the
/// decoded signature.
#[derive(Clone, Copy)]
pub(super) struct Signed<'a> {
    pub(super) message: &'a [u8],
    pub(super) payload: &'a str,
    pub(super) signature: &'a [u8],
}

pub(super) enum SigFailure {
    Refused(KeyError),
    Missing,
    /// Carries the key material that failed, to tell whether a refetch changed it.
    BadSignature(Box<[u8]>),
}

/// Looks up the key and checks the signature; on success returns the key's `kid` and the
/// generation of the key set that verified it.
pub(super) fn check_signature(
    snapshot: &Snapshot,
    kid: Option<&str>,
    alg: Algorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(Option<Arc<str>>, u64), SigFailure> {
    match snapshot.keys.lookup(kid, alg) {
        Lookup::Found(key) => {
            if key.verify(alg, message, signature) {
                return Ok((key.kid().cloned(), snapshot.generation));
            }
            // A provider with several JWKS URLs: two documents may use this `kid` for
            // different keys, and the token verifies if any of them verifies it (the first
            // candidate is the key just tried).
            if let Some(kid) = kid
                && snapshot.keys.is_union()
                && let Some(other) = snapshot
                    .keys
                    .candidates(kid, alg)
                    .skip(1)
                    .find(|k| k.verify(alg, message, signature))
            {
                return Ok((other.kid().cloned(), snapshot.generation));
            }
            Err(SigFailure::BadSignature(key.material().into()))
        }
        Lookup::Refused(e) => Err(SigFailure::Refused(e)),
        Lookup::Missing => Err(SigFailure::Missing),
    }
}

/// The claims a revocation check and the result need, after validation.
pub(super) struct Checked<'c> {
    pub(super) sub: Option<&'c str>,
    pub(super) jti: Option<&'c str>,
    pub(super) exp: Option<i64>,
    pub(super) iat: Option<i64>,
}

/// Validates the registered claims at `now` (unix seconds). A pure function of its inputs.
pub(super) fn check_claims<'c>(
    claims: &'c RegisteredClaims<'_>,
    config: &ProviderConfig,
    now: i64,
) -> Result<Checked<'c>, ClaimsError> {
    // Fractional dates round toward refusal: `exp` down, `nbf` and `iat` up.
    let date = |d: Option<NumericDate>, name: &'static str, up: bool| match d {
        None => Ok(None),
        Some(d) => d
            .whole_seconds(up)
            .map(Some)
            .ok_or(ClaimsError::Invalid(name)),
    };
    let exp = date(claims.exp, "exp", false)?;
    let nbf = date(claims.nbf, "nbf", true)?;
    let iat = date(claims.iat, "iat", true)?;
    let sub = claims.sub.as_ref().map(|f| f.as_str("sub")).transpose()?;
    let jti = claims.jti.as_ref().map(|f| f.as_str("jti")).transpose()?;
    if matches!(claims.aud, Some(Audience::Invalid)) {
        return Err(ClaimsError::Invalid("aud"));
    }
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    match exp {
        None if config.require_exp => return Err(ClaimsError::Missing("exp")),
        // RFC 7519 section 4.1.4: the current time MUST be before `exp`.
        Some(exp) if now >= exp.saturating_add(leeway) => return Err(ClaimsError::Expired),
        _ => {}
    }
    if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(ClaimsError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(ClaimsError::IssuedInFuture);
    }
    if !config.audiences.is_empty() {
        let accepted = |a: &str| config.audiences.iter().any(|x| x == a);
        let ok = match &claims.aud {
            None => return Err(ClaimsError::Missing("aud")),
            Some(Audience::One(a)) => accepted(a),
            Some(Audience::Many(list)) => list.iter().any(|a| accepted(a)),
            Some(Audience::Invalid) => false,
        };
        if !ok {
            return Err(ClaimsError::BadAudience);
        }
    }
    Ok(Checked { sub, jti, exp, iat })
}

/// Compares media types as RFC 7515 section 4.1.9 suggests: case-insensitively, with the
/// `application/` prefix optional.
pub(super) fn typ_matches(typ: &str, required: &str) -> bool {
    // `get` rather than indexing: `typ` comes from an unauthenticated header and byte 12 may
    // fall inside a multi-byte character.
    let strip = |s: &str| match (s.get(..12), s.get(12..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("application/") => {
            rest.to_owned()
        }
        _ => s.to_owned(),
    };
    strip(typ).eq_ignore_ascii_case(&strip(required))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_comparison_ignores_case_and_prefix() {
        assert!(typ_matches("at+jwt", "at+jwt"));
        assert!(typ_matches("application/AT+JWT", "at+jwt"));
        assert!(!typ_matches("JWT", "at+jwt"));
    }
}
