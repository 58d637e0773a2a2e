//! RFC 7638 JWK thumbprints: the SHA-256 of a public key's required members, which is what a
//! DPoP-bound token names in `cnf.jkt` (RFC 9449 section 6).

use super::DpopError;
use super::json::Members;

/// The RFC 7638 thumbprint of a public JWK (JSON text): base64url (no padding) of the
/// SHA-256 of the canonical JSON of its required members in lexicographic order, with no
/// whitespace: `crv`, `kty`, `x`, `y` for `EC`; `e`, `kty`, `n` for `RSA`; `crv`, `kty`, `x`
/// for `OKP`. Other members (`kid`, `alg`, `use`, ...) do not count.
///
/// ```
/// // RFC 7638 section 3.1.
/// let jwk = r#"{"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29",
///   "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#;
/// assert_eq!(
///     keygate::dpop::jwk_thumbprint(jwk).unwrap(),
///     "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
/// );
/// ```
///
/// # Errors
/// [`DpopError::BadJwk`] when `jwk` is not a JSON object with distinct member names, its
/// `kty` is not `EC`, `RSA` or `OKP`, or a required member is missing or not a string.
pub fn jwk_thumbprint(jwk: &str) -> Result<String, DpopError> {
    let members = Members::parse(jwk).ok_or(DpopError::BadJwk)?;
    thumbprint_of(&members)
}

/// [`jwk_thumbprint`] of an already parsed JWK.
pub(crate) fn thumbprint_of(jwk: &Members<'_>) -> Result<String, DpopError> {
    let kty = jwk.str("kty").ok().flatten().ok_or(DpopError::BadJwk)?;
    // Already in lexicographic order.
    let required: &[&str] = match kty.as_str() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return Err(DpopError::BadJwk),
    };
    let mut canonical = String::from("{");
    for (i, name) in required.iter().enumerate() {
        let value = jwk.str(name).ok().flatten().ok_or(DpopError::BadJwk)?;
        if i > 0 {
            canonical.push(',');
        }
        // serde_json writes strings with the minimal escaping RFC 7638 section 3.3 asks for
        // (and real key members are base64url, which needs none).
        let name = serde_json::to_string(name).map_err(|_| DpopError::BadJwk)?;
        let value = serde_json::to_string(&value).map_err(|_| DpopError::BadJwk)?;
        canonical.push_str(&name);
        canonical.push(':');
        canonical.push_str(&value);
    }
    canonical.push('}');
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Ok(base64_simd::URL_SAFE_NO_PAD.encode_to_string(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn rfc7638_example() {
        let jwk = serde_json::json!({
            "kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        });
        assert_eq!(
            jwk_thumbprint(&jwk.to_string()).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // Member order and optional members do not matter; the key does.
        let reordered = format!(r#"{{"e":"AQAB","n":"{RFC7638_N}","kty":"RSA","use":"sig"}}"#);
        assert_eq!(
            jwk_thumbprint(&reordered).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let other = format!(r#"{{"e":"AQAC","n":"{RFC7638_N}","kty":"RSA"}}"#);
        assert_ne!(
            jwk_thumbprint(&other).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn ec_and_okp_use_their_members() {
        // RFC 9449 section 4.1's example key and its thumbprint's canonical form.
        let ec = r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#;
        let canonical = r#"{"crv":"P-256","kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"}"#;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        assert_eq!(
            jwk_thumbprint(ec).unwrap(),
            base64_simd::URL_SAFE_NO_PAD.encode_to_string(digest.as_ref())
        );
        let okp = r#"{"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kty":"OKP","crv":"Ed25519","kid":"k"}"#;
        let canonical =
            r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        assert_eq!(
            jwk_thumbprint(okp).unwrap(),
            base64_simd::URL_SAFE_NO_PAD.encode_to_string(digest.as_ref())
        );
    }

    #[test]
    fn unusable_jwks_have_no_thumbprint() {
        for bad in [
            r#"{"kty":"oct","k":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"AA"}"#,
            r#"{"kty":"RSA","n":"AA","e":1}"#,
            r#"{"kty":"RSA","kty":"RSA","n":"AA","e":"AQAB"}"#,
            r#"{"n":"AA","e":"AQAB"}"#,
            "[]",
            "not json",
        ] {
            assert_eq!(jwk_thumbprint(bad), Err(DpopError::BadJwk), "{bad}");
        }
    }
}
