//! Reading the access token of a request's `Authorization` header: `Bearer` (RFC 6750
//! section 2.1) and, where DPoP is checked, `DPoP` (RFC 9449 section 7.1).
//!
//! One parser for every front door: the sidecar's `/verify`, the admin API and the tower
//! middleware all read credentials through [`bearer_token`] or [`credentials`], so they agree
//! on every detail (several headers, whitespace, the `b64token` alphabet).

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

/// The authorization scheme an access token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `Authorization: Bearer <token>` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP <token>` (RFC 9449 section 7.1): the request must also carry a
    /// `DPoP` proof.
    Dpop,
}

impl Scheme {
    /// The scheme as it is written in `Authorization` and `WWW-Authenticate`: `Bearer` or
    /// `DPoP`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::Dpop => "DPoP",
        }
    }
}

/// The access token of the request and its scheme, `Bearer` or `DPoP`, or why there is none.
///
/// The same rules as [`bearer_token`], with `DPoP` accepted as a second scheme (both
/// case-insensitive); any other scheme is [`BearerError::Missing`].
///
/// # Errors
/// As [`bearer_token`].
pub fn credentials(headers: &HeaderMap) -> Result<(Scheme, &str), BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::Duplicate);
    }
    parse_credentials(value.as_bytes())
}

/// Parses one `Authorization` value with the scheme `Bearer` or `DPoP` (case-insensitive)
/// and a `b64token`, ignoring surrounding whitespace.
///
/// # Errors
/// As [`parse_bearer`]; another scheme is [`BearerError::Missing`].
pub fn parse_credentials(value: &[u8]) -> Result<(Scheme, &str), BearerError> {
    parse_with(value, |scheme| {
        if scheme.eq_ignore_ascii_case(b"bearer") {
            Some(Scheme::Bearer)
        } else if scheme.eq_ignore_ascii_case(b"dpop") {
            Some(Scheme::Dpop)
        } else {
            None
        }
    })
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
    parse_with(value, |scheme| {
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then_some(Scheme::Bearer)
    })
    .map(|(_, token)| token)
}

/// Parses `credentials` with the schemes `accept` recognises.
fn parse_with(
    value: &[u8],
    accept: impl Fn(&[u8]) -> Option<Scheme>,
) -> Result<(Scheme, &str), BearerError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(BearerError::Empty);
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(at) => value.split_at(at),
        None => (value, &[][..]),
    };
    let Some(scheme) = accept(scheme) else {
        return Err(BearerError::Missing);
    };
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    // A b64token is ASCII, so this cannot fail; the error keeps the function total.
    let token = std::str::from_utf8(token).map_err(|_| BearerError::Malformed)?;
    Ok((scheme, token))
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

    #[test]
    fn bearer_and_dpop_credentials() {
        let cases = [
            ("Bearer abc", Ok((Scheme::Bearer, "abc"))),
            ("DPoP abc.def.ghi", Ok((Scheme::Dpop, "abc.def.ghi"))),
            ("dpop  abc ", Ok((Scheme::Dpop, "abc"))),
            (
                "DPOP mF_9.B5f-4.1JqM+/==",
                Ok((Scheme::Dpop, "mF_9.B5f-4.1JqM+/==")),
            ),
            ("Basic dXNlcjpwYXNz", Err(BearerError::Missing)),
            ("DPoPabc", Err(BearerError::Missing)),
            ("DPoP", Err(BearerError::Empty)),
            ("DPoP   ", Err(BearerError::Empty)),
            ("", Err(BearerError::Empty)),
            ("DPoP a b", Err(BearerError::Malformed)),
            ("DPoP \"abc\"", Err(BearerError::Malformed)),
            ("DPoP ==", Err(BearerError::Malformed)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_credentials(value.as_bytes()), expected, "{value:?}");
        }
        // `parse_bearer` still knows only `Bearer`.
        assert_eq!(parse_bearer(b"DPoP abc"), Err(BearerError::Missing));
        assert_eq!(Scheme::Dpop.as_str(), "DPoP");
    }

    #[test]
    fn credentials_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(credentials(&headers), Err(BearerError::Missing));
        headers.append(AUTHORIZATION, HeaderValue::from_static("DPoP a.b.c"));
        assert_eq!(credentials(&headers), Ok((Scheme::Dpop, "a.b.c")));
        assert_eq!(bearer_token(&headers), Err(BearerError::Missing));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(credentials(&headers), Err(BearerError::Duplicate));
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
        fn either_scheme_round_trips(
            token in "[A-Za-z0-9._~+/-]{1,64}={0,2}",
            scheme in "(?i)bearer|(?i)dpop",
            spaces in " {1,3}",
        ) {
            let value = format!("{scheme}{spaces}{token}");
            let expected = if scheme.len() == 4 { Scheme::Dpop } else { Scheme::Bearer };
            prop_assert_eq!(parse_credentials(value.as_bytes()), Ok((expected, token.as_str())));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_tokens_are_b64(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(token) = parse_bearer(&value) {
                prop_assert!(is_b64token(token.as_bytes()));
            }
        }
    }
}
