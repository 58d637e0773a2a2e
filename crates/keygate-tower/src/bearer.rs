//! The `Authorization` request header: marking it sensitive, and reading one bearer token
//! from it (RFC 6750 section 2.1).

use http::HeaderMap;
use http::header::{AUTHORIZATION, Entry};

use crate::rejection::{InvalidRequest, RejectionKind};

/// Marks every `Authorization` value sensitive, so that `Debug` output of the headers and
/// tracing layers that honour the flag (and HPACK/QPACK) leave the token out.
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    if let Entry::Occupied(mut entry) = headers.entry(AUTHORIZATION) {
        for value in entry.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

/// The bearer token of the request, or why there is none.
///
/// - no header, or another scheme (`Basic ...`): [`RejectionKind::MissingToken`], which
///   RFC 6750 section 3.1 answers without an error code;
/// - several headers, an empty one, `Bearer` alone, or credentials that are not one
///   `b64token`: [`RejectionKind::InvalidRequest`].
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, RejectionKind> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(RejectionKind::MissingToken);
    };
    if values.next().is_some() {
        return Err(RejectionKind::InvalidRequest(
            InvalidRequest::DuplicateHeader,
        ));
    }
    parse_bearer(value.as_bytes())
}

/// Parses `credentials = auth-scheme [ 1*SP token68 ]` (RFC 7235 section 2.1) with the
/// scheme `Bearer` (case-insensitive) and RFC 6750's `b64token`, ignoring surrounding
/// whitespace.
fn parse_bearer(value: &[u8]) -> Result<&str, RejectionKind> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(RejectionKind::InvalidRequest(InvalidRequest::EmptyToken));
    }
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(at) => value.split_at(at),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(RejectionKind::MissingToken);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(RejectionKind::InvalidRequest(InvalidRequest::EmptyToken));
    }
    if !is_b64token(token) {
        return Err(RejectionKind::InvalidRequest(InvalidRequest::Malformed));
    }
    // A b64token is ASCII, so this cannot fail; the error keeps the function total.
    std::str::from_utf8(token).map_err(|_| RejectionKind::InvalidRequest(InvalidRequest::Malformed))
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
            RejectionKind::MissingToken => "missing",
            RejectionKind::InvalidRequest(r) => r.reason(),
            _ => unreachable!("the parser makes no other kind"),
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
        assert!(matches!(
            bearer_token(&headers),
            Err(RejectionKind::MissingToken)
        ));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(bearer_token(&headers).unwrap(), "a");
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert!(matches!(
            bearer_token(&headers),
            Err(RejectionKind::InvalidRequest(
                InvalidRequest::DuplicateHeader
            ))
        ));
    }

    #[test]
    fn every_authorization_value_is_marked_sensitive() {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Basic b"));
        headers.append("x-other", HeaderValue::from_static("c"));
        mark_sensitive(&mut headers);
        assert!(
            headers
                .get_all(AUTHORIZATION)
                .iter()
                .all(HeaderValue::is_sensitive)
        );
        assert!(!headers["x-other"].is_sensitive());
        assert!(!format!("{headers:?}").contains("Bearer a"));
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
