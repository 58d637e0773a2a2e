//! Why a request was refused, and the one function that turns that into a response.
//!
//! Every refusal, from the layer, the scope check or an axum extractor, is a [`Rejection`].
//! [`Rejection::response`] writes the RFC 6750 status and `WWW-Authenticate` challenge; an
//! [`OnRejection`] handler (by default [`DefaultRejection`]) chooses the body and may change
//! anything else.

use std::fmt;
use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, Response, StatusCode};
use keygate::{Reason, ReasonClass, VerifyError};

use crate::scope::Scopes;

/// Why a request was refused, with the realm of the layer that refused it.
///
/// Turn it into a response with [`Rejection::response`]; inspect it with
/// [`kind`](Rejection::kind), [`status`](Rejection::status) and [`reason`](Rejection::reason).
/// It never holds the token.
#[derive(Debug, Clone)]
pub struct Rejection {
    kind: RejectionKind,
    realm: Option<Realm>,
}

/// What went wrong.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `Authorization` header, or one with another scheme than `Bearer` (e.g. `Basic`).
    ///
    /// 401 with a bare `Bearer` challenge: RFC 6750 section 3.1 says a request that lacks
    /// authentication information, or uses an unsupported method, gets no error code.
    MissingToken,
    /// The `Authorization` header is not a usable bearer credential. 400 `invalid_request`.
    InvalidRequest(InvalidRequest),
    /// The token was refused by the verifier. 401 `invalid_token`.
    InvalidToken(VerifyError),
    /// The issuer's keys cannot be obtained, so the token could not be judged. 503, no
    /// challenge: the client did nothing wrong and may retry.
    KeysUnavailable(VerifyError),
    /// The token is valid but lacks scopes the route requires. 403 `insufficient_scope`.
    InsufficientScope(Scopes),
    /// No [`JwtAuth`](crate::JwtAuth) layer authenticated this request: a scope check or an
    /// extractor ran without one in front of it. 401 with a bare `Bearer` challenge.
    NotAuthenticated,
    /// The `Claims<T>` extractor (feature `axum`) could not deserialize the verified claims
    /// into `T`. 401 `invalid_token`: the token is not one this route can use.
    ClaimsMismatch,
}

impl From<VerifyError> for RejectionKind {
    /// [`KeysUnavailable`](RejectionKind::KeysUnavailable) for the verifier's keys-unavailable
    /// group, [`InvalidToken`](RejectionKind::InvalidToken) for everything else.
    fn from(error: VerifyError) -> Self {
        match error.reason().class() {
            ReasonClass::Unavailable => RejectionKind::KeysUnavailable(error),
            _ => RejectionKind::InvalidToken(error),
        }
    }
}

/// What makes an `Authorization` header unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidRequest {
    /// More than one `Authorization` header (RFC 6750 section 3.1: "repeats the same
    /// parameter").
    DuplicateHeader,
    /// The header is empty, or says `Bearer` and nothing else.
    EmptyToken,
    /// The credentials after `Bearer` are not one `b64token` (RFC 6750 section 2.1), e.g.
    /// they contain a space, a quote or a non-ASCII byte.
    Malformed,
}

impl InvalidRequest {
    /// The stable reason code.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            InvalidRequest::DuplicateHeader => "duplicate_authorization",
            InvalidRequest::EmptyToken => "empty_token",
            InvalidRequest::Malformed => "malformed_authorization",
        }
    }
}

impl Rejection {
    /// The reason codes this crate adds to the verifier's ([`Reason::ALL`]), for metrics
    /// pre-registration and docs.
    pub const REASONS: [&'static str; 7] = [
        "missing_token",
        "duplicate_authorization",
        "empty_token",
        "malformed_authorization",
        "insufficient_scope",
        "not_authenticated",
        "claims_mismatch",
    ];

    /// A rejection of this kind, with no realm in its challenge.
    #[must_use]
    pub fn new(kind: RejectionKind) -> Self {
        Rejection { kind, realm: None }
    }

    /// The same rejection with `realm` in its challenge.
    #[must_use]
    pub fn with_realm(mut self, realm: Realm) -> Self {
        self.realm = Some(realm);
        self
    }

    /// A rejection from a layer configured with `realm`.
    pub(crate) fn in_realm(kind: RejectionKind, realm: Option<&Realm>) -> Self {
        Rejection {
            kind,
            realm: realm.cloned(),
        }
    }

    /// A verifier error: 503 when the keys are unavailable, 401 `invalid_token` otherwise.
    #[must_use]
    pub fn from_verify_error(error: VerifyError) -> Self {
        Rejection::new(error.into())
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &RejectionKind {
        &self.kind
    }

    /// The realm the challenge names, if the layer was given one.
    #[must_use]
    pub fn realm(&self) -> Option<&Realm> {
        self.realm.as_ref()
    }

    /// The verifier's error, when the verifier refused the token.
    #[must_use]
    pub fn verify_error(&self) -> Option<&VerifyError> {
        match &self.kind {
            RejectionKind::InvalidToken(e) | RejectionKind::KeysUnavailable(e) => Some(e),
            _ => None,
        }
    }

    /// The verifier's reason, when the verifier refused the token.
    #[must_use]
    pub fn verify_reason(&self) -> Option<Reason> {
        self.verify_error().map(VerifyError::reason)
    }

    /// The stable reason code: one of [`Rejection::REASONS`], or the verifier's
    /// [`Reason`] (see [`verify_reason`](Self::verify_reason)) as a string.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match &self.kind {
            RejectionKind::MissingToken => "missing_token",
            RejectionKind::InvalidRequest(r) => r.reason(),
            RejectionKind::InvalidToken(e) | RejectionKind::KeysUnavailable(e) => {
                e.reason().as_str()
            }
            RejectionKind::InsufficientScope(_) => "insufficient_scope",
            RejectionKind::NotAuthenticated => "not_authenticated",
            RejectionKind::ClaimsMismatch => "claims_mismatch",
        }
    }

    /// The status RFC 6750 section 3.1 gives this rejection: 400, 401, 403, or 503 when the
    /// keys are unavailable.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            RejectionKind::MissingToken
            | RejectionKind::InvalidToken(_)
            | RejectionKind::NotAuthenticated
            | RejectionKind::ClaimsMismatch => StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope(_) => StatusCode::FORBIDDEN,
            RejectionKind::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3), or `None` for 503.
    ///
    /// `error_description` is the reason code, never the token or a verifier message: those
    /// may carry claim values or details of the issuer's infrastructure.
    #[must_use]
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let (error, description, scope) = match &self.kind {
            RejectionKind::KeysUnavailable(_) => return None,
            RejectionKind::MissingToken | RejectionKind::NotAuthenticated => (None, None, None),
            RejectionKind::InvalidRequest(r) => (Some("invalid_request"), Some(r.reason()), None),
            RejectionKind::InvalidToken(_) | RejectionKind::ClaimsMismatch => {
                (Some("invalid_token"), Some(self.reason()), None)
            }
            RejectionKind::InsufficientScope(scopes) => {
                (Some("insufficient_scope"), None, Some(scopes))
            }
        };
        let mut challenge = String::from("Bearer");
        let mut sep = " ";
        let mut param = |name: &str, value: &dyn fmt::Display| {
            use fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(challenge, "{sep}{name}=\"{value}\"");
            sep = ", ";
        };
        if let Some(realm) = &self.realm {
            param("realm", realm);
        }
        if let Some(error) = error {
            param("error", &error);
        }
        if let Some(description) = description {
            param("error_description", &description);
        }
        if let Some(scope) = scope {
            param("scope", scope);
        }
        // Every part is a fixed string, a reason code (lowercase ASCII and `_`), or a realm
        // or scope whose characters were checked when it was made, so this cannot fail; the
        // bare challenge keeps it total all the same.
        Some(
            HeaderValue::try_from(challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer")),
        )
    }

    /// A response with this rejection's [`status`](Self::status), its
    /// [`WWW-Authenticate`](Self::www_authenticate) header, and `body`.
    ///
    /// The building block for custom [`OnRejection`] handlers.
    #[must_use]
    pub fn response<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        if let Some(challenge) = self.www_authenticate() {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request rejected ({})", self.reason())
    }
}

impl std::error::Error for Rejection {}

/// Turns a [`Rejection`] into the response sent to the client.
///
/// Implemented by [`DefaultRejection`] and by every closure
/// `Fn(Rejection) -> Response<B> + Send + Sync + 'static`, so a custom body is one closure
/// away:
///
/// ```
/// use http::Response;
/// use keygate_tower::Rejection;
///
/// let handler = |rejection: Rejection| -> Response<String> {
///     let body = format!("{{\"error\":\"{}\"}}", rejection.reason());
///     let mut response = rejection.response(body);
///     response.headers_mut().insert(
///         http::header::CONTENT_TYPE,
///         http::HeaderValue::from_static("application/json"),
///     );
///     response
/// };
/// # let _ = keygate_tower::OnRejection::on_rejection(&handler, Rejection::new(keygate_tower::RejectionKind::MissingToken));
/// ```
pub trait OnRejection<B>: Send + Sync + 'static {
    /// The response for `rejection`.
    fn on_rejection(&self, rejection: Rejection) -> Response<B>;
}

/// Sends `rejection` through `handler`: the one place this crate turns a refusal into a
/// response, so every surface logs it the same way (the reason code, never the token).
pub(crate) fn reject<B, R: OnRejection<B> + ?Sized>(
    handler: &R,
    rejection: Rejection,
) -> Response<B> {
    tracing::debug!(
        reason = rejection.reason(),
        status = rejection.status().as_u16(),
        "request rejected"
    );
    handler.on_rejection(rejection)
}

/// The default handler: the RFC 6750 status and challenge, and an empty body.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejection;

impl<B: Default> OnRejection<B> for DefaultRejection {
    fn on_rejection(&self, rejection: Rejection) -> Response<B> {
        rejection.response(B::default())
    }
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(Rejection) -> Response<B> + Send + Sync + 'static,
{
    fn on_rejection(&self, rejection: Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The `realm` named in every challenge (RFC 6750 section 3).
///
/// Printable ASCII without `"` and `\`, so it is written into the header unescaped.
#[derive(Clone, PartialEq, Eq)]
pub struct Realm(Arc<str>);

impl Realm {
    /// Checks `realm` and wraps it.
    ///
    /// # Errors
    /// [`InvalidParam`] if it is empty or holds a character outside `%x20-21 / %x23-5B /
    /// %x5D-7E`.
    pub fn new(realm: &str) -> Result<Self, InvalidParam> {
        if realm.is_empty() {
            return Err(InvalidParam::new("realm", "must not be empty"));
        }
        if !realm.bytes().all(|b| quoted_safe(b) || b == b' ') {
            return Err(InvalidParam::new(
                "realm",
                "only printable ASCII without '\"' and '\\' is allowed",
            ));
        }
        Ok(Realm(realm.into()))
    }

    /// The realm.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for Realm {
    type Err = InvalidParam;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Realm::new(s)
    }
}

/// A realm or scope that cannot be written into a `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {problem}")]
pub struct InvalidParam {
    /// `realm` or `scope`.
    pub param: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl InvalidParam {
    pub(crate) fn new(param: &'static str, problem: &'static str) -> Self {
        InvalidParam { param, problem }
    }
}

/// A byte that may stand unescaped inside a quoted-string and is not a space: `%x21 /
/// %x23-5B / %x5D-7E` (RFC 6749 appendix A.4, the `scope-token` alphabet).
pub(crate) fn quoted_safe(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::{ClaimsError, KeysUnavailable};

    fn challenge(r: &Rejection) -> Option<String> {
        r.www_authenticate().map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = Rejection::new(RejectionKind::MissingToken);
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&missing).as_deref(), Some("Bearer"));

        let expired = Rejection::from_verify_error(VerifyError::Claims(ClaimsError::Expired));
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&expired).as_deref(),
            Some(r#"Bearer error="invalid_token", error_description="expired""#)
        );

        let bad = Rejection::new(RejectionKind::InvalidRequest(InvalidRequest::EmptyToken));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            challenge(&bad).as_deref(),
            Some(r#"Bearer error="invalid_request", error_description="empty_token""#)
        );

        let scope = Rejection::new(RejectionKind::InsufficientScope(
            "read write".parse().unwrap(),
        ))
        .with_realm(Realm::new("api").unwrap());
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            challenge(&scope).as_deref(),
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="read write""#)
        );
    }

    #[test]
    fn keys_unavailable_is_503_without_challenge() {
        let r = Rejection::from_verify_error(VerifyError::KeysUnavailable(KeysUnavailable::Fetch(
            None,
        )));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.reason(), "keys_unavailable");
        assert!(r.www_authenticate().is_none());
        let response = r.response(());
        assert!(!response.headers().contains_key(WWW_AUTHENTICATE));
    }

    #[test]
    fn realm_is_checked() {
        assert!(Realm::new("keygate api").is_ok());
        for bad in ["", "a\"b", "a\\b", "caf\u{e9}", "a\nb"] {
            assert_eq!(Realm::new(bad).unwrap_err().param, "realm", "{bad:?}");
        }
    }

    #[test]
    fn own_reasons_are_listed_and_distinct_from_the_verifiers() {
        let kinds = [
            RejectionKind::MissingToken,
            RejectionKind::InvalidRequest(InvalidRequest::DuplicateHeader),
            RejectionKind::InvalidRequest(InvalidRequest::EmptyToken),
            RejectionKind::InvalidRequest(InvalidRequest::Malformed),
            RejectionKind::InsufficientScope("a".parse().unwrap()),
            RejectionKind::NotAuthenticated,
            RejectionKind::ClaimsMismatch,
        ];
        let reasons: Vec<_> = kinds
            .into_iter()
            .map(|k| Rejection::new(k).reason())
            .collect();
        assert_eq!(reasons, Rejection::REASONS);
        assert!(
            Rejection::REASONS
                .iter()
                .all(|r| Reason::ALL.iter().all(|known| known != r))
        );
    }
}
