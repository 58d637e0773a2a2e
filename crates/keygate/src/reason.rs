//! The stable reason codes a refusal carries: [`Reason`] and its HTTP class.
//!
//! Like rustls' alert codes, a [`Reason`] is the one name every surface uses for why a token
//! was refused: metrics labels, the `X-Auth-Reason` header, the CLI's `error_class` and the
//! middleware's challenge all print [`Reason::as_str`], and decide by matching the enum,
//! never by comparing strings.

use std::fmt;

/// Whether a refusal is the client's fault or an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonClass {
    /// The token was judged and refused: HTTP 401 with an `invalid_token` challenge.
    Unauthorized,
    /// The token could not be judged because the provider's keys cannot be had: HTTP 503,
    /// no challenge; the client did nothing wrong and may retry.
    Unavailable,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $code:literal, $description:literal, $class:ident;)*) => {
        /// Why a token was refused, as a stable code ([`VerifyError::reason`]).
        ///
        /// [`VerifyError::reason`]: crate::VerifyError::reason
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in a fixed order: for metrics pre-registration and docs.
            pub const ALL: [Reason; [$(Reason::$variant),*].len()] = [$(Reason::$variant),*];

            /// The stable code (`expired`, `unknown_kid`, ...): lowercase ASCII and `_`.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// A fixed, short description for people (an `error_description`): never
            /// anything taken from the token.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $(Reason::$variant => $description,)*
                }
            }

            /// Whether this refusal is a 401 or a 503.
            #[must_use]
            pub const fn class(self) -> ReasonClass {
                match self {
                    $(Reason::$variant => ReasonClass::$class,)*
                }
            }
        }
    };
}

reasons! {
    /// The token is not a well-formed compact JWS.
    Malformed => "malformed", "malformed token", Unauthorized;
    /// The token is longer than the configured limit.
    TokenTooLarge => "token_too_large", "token too large", Unauthorized;
    /// A claim has the wrong type.
    InvalidClaim => "invalid_claim", "a claim has the wrong type", Unauthorized;
    /// A required claim is absent.
    MissingClaim => "missing_claim", "a required claim is missing", Unauthorized;
    /// `exp` is in the past.
    Expired => "expired", "token expired", Unauthorized;
    /// `nbf` is in the future.
    NotYetValid => "not_yet_valid", "token not yet valid", Unauthorized;
    /// `iat` is in the future.
    IatInFuture => "iat_in_future", "token issued in the future", Unauthorized;
    /// `iss` is not trusted.
    BadIssuer => "bad_issuer", "issuer not accepted", Unauthorized;
    /// `aud` names none of the provider's audiences.
    BadAudience => "bad_audience", "audience not accepted", Unauthorized;
    /// `alg` is `none`.
    AlgNone => "alg_none", "algorithm not accepted", Unauthorized;
    /// `alg` is not allowed.
    AlgNotAllowed => "alg_not_allowed", "algorithm not accepted", Unauthorized;
    /// The `kid` is not in the key set.
    UnknownKid => "unknown_kid", "signing key not found", Unauthorized;
    /// The token has no `kid` and the key set does not identify a single key.
    MissingKid => "missing_kid", "token names no signing key", Unauthorized;
    /// The key does not fit the token's algorithm.
    KeyAlgMismatch => "key_alg_mismatch", "key does not fit the algorithm", Unauthorized;
    /// The key is too weak.
    WeakKey => "weak_key", "signing key too weak", Unauthorized;
    /// The signature does not verify.
    BadSignature => "bad_signature", "signature does not verify", Unauthorized;
    /// `crit` names an extension keygate does not understand.
    CritHeader => "crit_header", "unsupported critical header", Unauthorized;
    /// A JWE, a nested JWT or an unencoded payload.
    UnsupportedToken => "unsupported_token", "unsupported token type", Unauthorized;
    /// The header carries key references the provider refuses.
    UntrustedEmbeddedKey => "untrusted_embedded_key", "embedded keys are not trusted", Unauthorized;
    /// The provider's key set is not a usable JWKS and none is cached.
    MalformedJwks => "malformed_jwks", "signing keys unavailable", Unavailable;
    /// The token, its subject or its key has been revoked.
    Revoked => "revoked", "token revoked", Unauthorized;
    /// The provider's keys cannot be fetched and none are cached.
    KeysUnavailable => "keys_unavailable", "signing keys unavailable", Unavailable;
    /// The introspection endpoint says the opaque token is not active.
    Inactive => "inactive", "token not active", Unauthorized;
    /// The introspection call budget is spent; the token was not checked.
    IntrospectionBusy => "introspection_busy", "token could not be checked now", Unavailable;
    /// The introspection endpoint cannot be asked; the token was not checked.
    IntrospectionUnavailable => "introspection_unavailable", "token could not be checked now", Unavailable;
    /// An opaque token arrived without a tenant while several tenants introspect.
    TenantRequired => "tenant_required", "opaque token needs a tenant", Unauthorized;
    /// A DPoP proof was required and is missing (or sent twice).
    DpopProofMissing => "dpop_proof_missing", "DPoP proof missing", Unauthorized;
    /// The DPoP proof is not a well-formed proof JWT.
    DpopProofMalformed => "dpop_proof_malformed", "DPoP proof malformed", Unauthorized;
    /// The DPoP proof's algorithm is not accepted.
    DpopAlgNotAllowed => "dpop_alg_not_allowed", "DPoP proof algorithm not accepted", Unauthorized;
    /// The DPoP proof's `jwk` is missing, private or unusable.
    DpopBadJwk => "dpop_bad_jwk", "DPoP proof key not acceptable", Unauthorized;
    /// The DPoP proof's signature does not verify.
    DpopBadSignature => "dpop_bad_signature", "DPoP proof signature does not verify", Unauthorized;
    /// The DPoP proof's `htm` is not the request's method.
    DpopHtmMismatch => "dpop_htm_mismatch", "DPoP proof method does not match", Unauthorized;
    /// The DPoP proof's `htu` is not the request's URL.
    DpopHtuMismatch => "dpop_htu_mismatch", "DPoP proof URL does not match", Unauthorized;
    /// The DPoP proof's `ath` is not the access token's hash.
    DpopAthMismatch => "dpop_ath_mismatch", "DPoP proof token hash does not match", Unauthorized;
    /// The DPoP proof's key is not the one the token is bound to.
    DpopJktMismatch => "dpop_jkt_mismatch", "DPoP proof key is not the token's", Unauthorized;
    /// The DPoP proof's `iat` is outside the window.
    DpopIatOutOfWindow => "dpop_iat_out_of_window", "DPoP proof too old or too new", Unauthorized;
    /// The DPoP proof was already used.
    DpopReplayed => "dpop_replayed", "DPoP proof replayed", Unauthorized;
    /// A DPoP-bound token was sent with the Bearer scheme.
    DpopBoundTokenAsBearer => "dpop_bound_token_as_bearer", "DPoP-bound token sent as bearer", Unauthorized;
    /// A token sent with the DPoP scheme is not bound to a key.
    DpopUnboundToken => "dpop_unbound_token", "token is not DPoP-bound", Unauthorized;
    /// The provider requires DPoP-bound tokens.
    DpopRequired => "dpop_required", "DPoP-bound token required", Unauthorized;
    /// The DPoP replay store cannot be asked; the proof was not checked.
    DpopReplayUnavailable => "dpop_replay_unavailable", "DPoP proof could not be checked now", Unavailable;
}

impl fmt::Display for Reason {
    /// The stable code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl From<Reason> for &'static str {
    fn from(reason: Reason) -> Self {
        reason.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_lowercase_and_compare_as_strings() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let code = reason.as_str();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(
                Reason::ALL[..i].iter().all(|r| r.as_str() != code),
                "{code}"
            );
            assert_eq!(*reason, code);
            assert_eq!(reason.to_string(), code);
        }
        assert_eq!(Reason::ALL.len(), 41);
    }

    #[test]
    fn only_what_could_not_be_checked_is_an_outage() {
        let unavailable: Vec<_> = Reason::ALL
            .iter()
            .filter(|r| r.class() == ReasonClass::Unavailable)
            .collect();
        assert_eq!(
            unavailable,
            [
                &Reason::MalformedJwks,
                &Reason::KeysUnavailable,
                &Reason::IntrospectionBusy,
                &Reason::IntrospectionUnavailable,
                &Reason::DpopReplayUnavailable
            ]
        );
    }
}
