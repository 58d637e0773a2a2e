//! axum extractors over the [`Authenticated`] extension, and [`Rejection`] as an axum
//! response (feature `axum`).

use std::ops::{Deref, DerefMut};

use axum_core::body::Body;
use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::authenticated::Authenticated;
use crate::rejection::{Rejection, RejectionKind, reject};

/// The verified claims, deserialized into the caller's own type.
///
/// Needs a [`JwtAuthLayer`](crate::JwtAuthLayer) in front of the handler. Rejects with 401
/// `Bearer` (`not_authenticated`) when none authenticated the request, and with 401
/// `invalid_token` (`claims_mismatch`) when the claims do not deserialize into `T`.
///
/// ```
/// use keygate_tower::Claims;
///
/// #[derive(serde::Deserialize)]
/// struct User {
///     sub: String,
///     #[serde(default)]
///     email: Option<String>,
/// }
///
/// async fn me(Claims(user): Claims<User>) -> String {
///     format!("{} <{}>", user.sub, user.email.as_deref().unwrap_or("-"))
/// }
/// # let _: axum::routing::MethodRouter = axum::routing::get(me);
/// ```
///
/// To answer with a body of your own, take `Result<Claims<T>, Rejection>` and map the
/// [`Rejection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims<T>(pub T);

/// The verified claims as a JSON object, for handlers without a claims type.
///
/// Rejects like [`Claims`] when no layer authenticated the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawClaims(pub Map<String, Value>);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        authenticated(parts).cloned()
    }
}

impl<S, T> FromRequestParts<S> for Claims<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        authenticated(parts)?
            .deserialize_claims()
            .map(Claims)
            // The serde error may quote claim values; only the reason code goes out.
            .map_err(|_| Rejection::new(RejectionKind::ClaimsMismatch))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawClaims {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawClaims(authenticated(parts)?.claims()))
    }
}

impl IntoResponse for Rejection {
    /// The RFC 6750 status and challenge with an empty body, as [`DefaultRejection`] sends.
    ///
    /// [`DefaultRejection`]: crate::DefaultRejection
    fn into_response(self) -> Response {
        reject(&|r: Rejection| r.response(Body::empty()), self)
    }
}

impl<T> Deref for Claims<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Claims<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl Deref for RawClaims {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

fn authenticated(parts: &Parts) -> Result<&Authenticated, Rejection> {
    parts
        .extensions
        .get::<Authenticated>()
        .ok_or_else(|| Rejection::new(RejectionKind::NotAuthenticated))
}
