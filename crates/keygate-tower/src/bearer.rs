//! The `Authorization` request header: marking it sensitive, and reading one bearer token
//! from it (RFC 6750 section 2.1).

use http::HeaderMap;
use http::header::{AUTHORIZATION, Entry};

use keygate::bearer::BearerError;

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

/// The bearer token of the request, or why there is none, read by the library's one parser
/// ([`keygate::bearer::bearer_token`]).
///
/// - no header, or another scheme (`Basic ...`): [`RejectionKind::MissingToken`], which
///   RFC 6750 section 3.1 answers without an error code;
/// - several headers, an empty one, `Bearer` alone, or credentials that are not one
///   `b64token`: [`RejectionKind::InvalidRequest`].
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, RejectionKind> {
    keygate::bearer::bearer_token(headers).map_err(|e| match e {
        BearerError::Duplicate => RejectionKind::InvalidRequest(InvalidRequest::DuplicateHeader),
        BearerError::Empty => RejectionKind::InvalidRequest(InvalidRequest::EmptyToken),
        BearerError::Malformed => RejectionKind::InvalidRequest(InvalidRequest::Malformed),
        // `Missing`, and any kind a later library adds: no usable credentials.
        _ => RejectionKind::MissingToken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
