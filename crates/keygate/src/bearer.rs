//! Reading the bearer token of a request's `Authorization` header (RFC 6750 section 2.1).
//!
//! One parser for every front door: the sidecar's `/verify`, the admin API and the tower
//! middleware all read credentials through [`bearer_token`], so they agree on every detail
//! (several headers, whitespace, the `b64token` alphabet).

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// Why a request carries no usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BearerError {
    /// No `Authorization` header, or one with another scheme (`Basic ...`): RFC 6750
    /// section 3.1 answers this without an error code.
    #[error("no bearer credentials")]
    Missing,
    /// More than one `Authorization` header.
    #[error("more than one Authorization header")]
    Duplicate,
    /// An empty header, or the `Bearer` scheme with no token.
    #[error("empty bearer token")]
    Empty,
    /// Credentials that are not one `b64token`.
    #[error("malformed Authorization header")]
    Malformed,
}

/// The bearer token of the request, or why there is none.
///
/// - no header, or another scheme: [`BearerError::Missing`];
/// - several headers: [`BearerError::Duplicate`];
/// - an empty header or `Bearer` alone: [`BearerError::Empty`];
/// - credentials that are not one `b64token`: [`BearerError::Malformed`].
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::Duplicate);
    }
    parse_bearer(value.as_bytes())
}

/// Parses `credentials = auth-scheme [ 1*SP token68 ]` (RFC 7235 section 2.1) with the
/// scheme `Bearer` (case-insensitive) and RFC 6750's `b64token`, ignoring surrounding
/// whitespace.
pub fn parse_bearer(value: &[u8]) -> Result<&str, BearerError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(BearerError::Empty);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(at) => value.split_at(at),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::Missing);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    // A b64token is ASCII, so this cannot fail; the error keeps the function total.
    std::str::from_utf8(token).map_err(|_| BearerError::Malformed)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && token[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn parse(value: &str) -> Result<&str, &'static str> {
        parse_bearer(value.as_bytes()).map_err(|k| match k {
            BearerError::Missing => "missing",
            BearerError::Empty => "empty_token",
            BearerError::Malformed => "malformed_authorization",
            BearerError::Duplicate => "duplicate_authorization",
        })
    }

    #[test]
    fn bearer_credentials() {
        let cases = [
            ("Bearer abc.def.ghi", Ok("abc.def.ghi")),
            ("bearer abc", Ok("abc")),
            ("BEARER   abc  ", Ok("abc")),
            ("Bearer mF_9.B5f-4.1JqM+/==", Ok("mF_9.B5f-4.1JqM+/==")),
            ("Basic dXNlcjpwYXNz", Err("missing")),
            ("Bearerabc", Err("missing")),
            ("Token abc", Err("missing")),
            ("", Err("empty_token")),
            ("   ", Err("empty_token")),
            ("Bearer", Err("empty_token")),
            ("Bearer    ", Err("empty_token")),
            ("Bearer a b", Err("malformed_authorization")),
            ("Bearer a,b", Err("malformed_authorization")),
            ("Bearer \"abc\"", Err("malformed_authorization")),
            ("Bearer ==", Err("malformed_authorization")),
            ("Bearer a=b", Err("malformed_authorization")),
            ("Bearer\tabc", Err("missing")),
        ];
        for (value, expected) in cases {
            assert_eq!(parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn duplicate_headers_are_invalid_requests() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), Err(BearerError::Missing));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(bearer_token(&headers).unwrap(), "a");
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(bearer_token(&headers), Err(BearerError::Duplicate));
    }

    proptest! {
        #[test]
        fn any_b64token_round_trips(
            token in "[A-Za-z0-9._~+/-]{1,64}={0,2}",
            scheme in "(?i)bearer",
            spaces in " {1,3}",
        ) {
            let value = format!("{scheme}{spaces}{token}");
            prop_assert_eq!(parse(&value), Ok(token.as_str()));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_tokens_are_b64(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(token) = parse_bearer(&value) {
                prop_assert!(is_b64token(token.as_bytes()));
            }
        }
    }
}
