//! The JWS algorithms keygate verifies (RFC 7518 section 3; RFC 8037 for EdDSA; RFC 9864 for
//! the fully-specified `Ed25519`).
//!
//! HMAC algorithms are deliberately absent: a JWKS holds public keys, and treating a public key
//! as an HMAC secret is the classic key-confusion attack (RFC 8725 section 2.1).
//!
//! `EdDSA` (polymorphic: the key's curve picks the signature scheme) and `Ed25519` (RFC 9864's
//! fully-specified name) verify the same signatures here, because Ed25519 is the only EdDSA
//! curve keygate supports; Ed448 is refused wherever it appears.

use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm that keygate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384 and MGF1 with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512 and MGF1 with SHA-512.
    PS512,
    /// ECDSA using P-256 and SHA-256.
    ES256,
    /// ECDSA using P-384 and SHA-384.
    ES384,
    /// ECDSA using P-521 and SHA-512.
    ES512,
    /// EdDSA with the Ed25519 curve (RFC 8037); the only EdDSA curve keygate supports.
    EdDSA,
    /// Ed25519 by its RFC 9864 fully-specified name. Interchangeable with [`EdDSA`] in
    /// allow-lists and JWK `alg` members: a key with either accepts tokens with either.
    ///
    /// [`EdDSA`]: Algorithm::EdDSA
    Ed25519,
}

/// The family of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    Rsa,
    P256,
    P384,
    P521,
    Ed25519,
}

impl Algorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Algorithm; 11] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::Ed25519,
    ];

    /// The name used in the JWS `alg` header.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::Ed25519 => "Ed25519",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) const fn family(self) -> KeyFamily {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::P256,
            Algorithm::ES384 => KeyFamily::P384,
            Algorithm::ES512 => KeyFamily::P521,
            Algorithm::EdDSA | Algorithm::Ed25519 => KeyFamily::Ed25519,
        }
    }

    /// The algorithm whose verification this one performs: `Ed25519` and `EdDSA` (over an
    /// Ed25519 key, the only kind keygate keeps) are one signature scheme under two names
    /// (RFC 9864 section 2.2), so they share one parsed key and one allow-list entry.
    pub(crate) const fn scheme(self) -> Algorithm {
        match self {
            Algorithm::Ed25519 => Algorithm::EdDSA,
            other => other,
        }
    }

    /// Whether a token signed with `self` may be verified where `other` is allowed or pinned
    /// (by an allow-list or a JWK's `alg`).
    pub(crate) const fn same_scheme(self, other: Algorithm) -> bool {
        self.scheme() as usize == other.scheme() as usize
    }

    /// Whether `allowed` (an allow-list) permits tokens signed with `self`.
    pub(crate) fn allowed_by(self, allowed: &[Algorithm]) -> bool {
        allowed.iter().any(|a| a.same_scheme(self))
    }

    /// Parses an `alg` value exactly (JWS names are case-sensitive, RFC 7515 section 4.1.1).
    pub(crate) fn from_header(s: &str) -> Option<Self> {
        Some(match s {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "ES512" => Algorithm::ES512,
            "EdDSA" => Algorithm::EdDSA,
            "Ed25519" => Algorithm::Ed25519,
            _ => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when parsing an unknown algorithm name.
///
/// Its message says why for the names people actually try: an HMAC algorithm (`HS256`,
/// `HS384`, `HS512`) is refused as a key-confusion hazard, `Ed448` as a curve keygate does not
/// verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.explain())]
pub struct UnknownAlgorithm(pub String);

impl UnknownAlgorithm {
    /// Whether the name is an HMAC algorithm (`HS256`, `HS384`, `HS512`, in any casing).
    ///
    /// keygate verifies public-key signatures only: a JWKS holds public keys, and an HMAC
    /// algorithm in an allow-list is how key-confusion attacks start (a public key used as
    /// the HMAC secret, RFC 8725 section 2.1).
    #[must_use]
    pub fn is_hmac(&self) -> bool {
        ["HS256", "HS384", "HS512"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&self.0))
    }

    fn explain(&self) -> String {
        let name = &self.0;
        if self.is_hmac() {
            format!(
                "{name:?} is an HMAC algorithm: keygate verifies public-key signatures only, and \
                 an HMAC algorithm in an allow-list is how key-confusion attacks start (a public \
                 key used as the HMAC secret, RFC 8725 section 2.1)"
            )
        } else if name.eq_ignore_ascii_case("Ed448") {
            format!("{name:?} is not supported: keygate verifies EdDSA over Ed25519 only")
        } else {
            format!("unsupported algorithm {name:?}")
        }
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_header(s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(Algorithm::ALL[alg.index()], alg);
        }
        assert!("rs256".parse::<Algorithm>().is_err());
        assert!("HS256".parse::<Algorithm>().is_err());
        assert!("none".parse::<Algorithm>().is_err());
        assert!("Ed448".parse::<Algorithm>().is_err());
        assert!("ed25519".parse::<Algorithm>().is_err());
    }

    #[test]
    fn refused_names_say_why() {
        let hs = "HS256".parse::<Algorithm>().unwrap_err();
        assert!(hs.is_hmac());
        let text = hs.to_string();
        assert!(text.contains("HMAC") && text.contains("public-key signatures only"));
        assert!(text.contains("key-confusion"), "{text}");
        assert!("hs512".parse::<Algorithm>().unwrap_err().is_hmac());
        assert!(
            "Ed448"
                .parse::<Algorithm>()
                .unwrap_err()
                .to_string()
                .contains("Ed25519 only")
        );
        let other = "XY1".parse::<Algorithm>().unwrap_err();
        assert!(!other.is_hmac());
        assert_eq!(other.to_string(), r#"unsupported algorithm "XY1""#);
    }

    #[test]
    fn ed25519_and_eddsa_are_one_scheme_and_nothing_else_is() {
        assert!(Algorithm::Ed25519.allowed_by(&[Algorithm::EdDSA]));
        assert!(Algorithm::EdDSA.allowed_by(&[Algorithm::Ed25519]));
        assert!(!Algorithm::Ed25519.allowed_by(&[Algorithm::ES256, Algorithm::ES512]));
        assert!(!Algorithm::ES512.allowed_by(&[Algorithm::ES384, Algorithm::EdDSA]));
        for a in Algorithm::ALL {
            for b in Algorithm::ALL {
                let ed = |x: Algorithm| matches!(x, Algorithm::EdDSA | Algorithm::Ed25519);
                assert_eq!(a.same_scheme(b), a == b || (ed(a) && ed(b)), "{a} {b}");
            }
        }
    }
}
