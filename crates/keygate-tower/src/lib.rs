//! JWT authentication for [tower] and [axum] services, in process, with keygate's JWKS cache
//! and strict verifier.
//!
//! [`JwtAuthLayer`] wraps any `tower::Service<http::Request<B>>`: it reads the bearer token
//! (RFC 6750), verifies it with a shared [`keygate::Verifier`], and passes the request on
//! with an [`Authenticated`] in its extensions, or answers with the RFC 6750 status and
//! `WWW-Authenticate` challenge itself. [`RequireScopesLayer`] (most easily made by
//! [`JwtAuthLayer::scopes_layer`]) adds per-route scope checks.
//! With the `axum` feature, `Claims<T>`, `RawClaims` and [`Authenticated`] are extractors.
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! keygate = { git = "https://github.com/keygate/keygate" }
//! keygate-tower = { git = "https://github.com/keygate/keygate", features = ["axum"] }
//! axum = "0.8"
//! serde = { version = "1", features = ["derive"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```no_run
//! use axum::{Router, routing::{get, post}};
//! use keygate::{ProviderConfig, Verifier};
//! use keygate_tower::{Claims, JwtAuthLayer};
//!
//! #[derive(serde::Deserialize)]
//! struct User {
//!     sub: String,
//! }
//!
//! async fn me(Claims(user): Claims<User>) -> String {
//!     format!("hello {}\n", user.sub)
//! }
//!
//! async fn create_note(Claims(user): Claims<User>) -> String {
//!     format!("note created by {}\n", user.sub)
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let verifier = Verifier::builder()
//!         .provider(
//!             ProviderConfig::builder("acme", "auth0", "https://acme.eu.auth0.com/")
//!                 .audiences(["https://api.acme.example"])
//!                 .build()?,
//!         )
//!         .token_cache(10_000)
//!         .build()?;
//!     let auth = JwtAuthLayer::new(verifier);
//!     let app = Router::new()
//!         .route("/me", get(me))
//!         .route(
//!             "/notes",
//!             post(create_note).route_layer(auth.scopes_layer("write".parse()?)),
//!         )
//!         // Every route above needs a valid token; `/notes` also the `write` scope.
//!         .layer(auth);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! `examples/axum_service.rs` is the same service, configured for the development issuer of
//! `keygate serve`; the crate's README shows how to run it and call it with `curl`.
//!
//! # Rejections
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no `Authorization` header, or another scheme (`Basic`) | 401 | `Bearer` |
//! | several `Authorization` headers; `Bearer` with no token; not a `b64token` | 400 | `Bearer error="invalid_request", error_description="<reason>"` |
//! | the verifier refused the token | 401 | `Bearer error="invalid_token", error_description="<reason>"` |
//! | the issuer's keys are unavailable | 503 | none |
//! | a required scope is missing | 403 | `Bearer error="insufficient_scope", scope="<required>"` |
//! | an extractor or scope check ran without the layer | 401 | `Bearer` |
//!
//! `<reason>` is a stable reason code ([`Rejection::reason`]: one of
//! [`keygate::Reason::ALL`] or [`Rejection::REASONS`]). A [`realm`](JwtAuthLayer::realm)
//! is added to every challenge when configured. The token is never echoed nor logged; the
//! layer marks the `Authorization` header [sensitive](http::HeaderValue::set_sensitive) so
//! that tracing layers inside it that honour the flag leave it out too (a layer outside it
//! sees the request first: put tower-http's `SetSensitiveRequestHeadersLayer` in front of
//! that one).
//!
//! The default body is empty ([`DefaultRejection`]). To send your own, give the layer a
//! closure `Fn(Rejection) -> Response<B>` (or an [`OnRejection`] implementation):
//!
//! ```
//! use axum::body::Body;
//! use http::{Response, StatusCode, header};
//! use keygate::Verifier;
//! use keygate_tower::{JwtAuthLayer, Rejection};
//!
//! fn layer(verifier: Verifier) -> JwtAuthLayer<impl Fn(Rejection) -> Response<Body> + Clone> {
//!     JwtAuthLayer::new(verifier).on_rejection(|rejection: Rejection| {
//!         let body = format!("{{\"error\":\"{}\"}}", rejection.reason());
//!         let mut response = rejection.response(Body::from(body));
//!         response.headers_mut().insert(
//!             header::CONTENT_TYPE,
//!             header::HeaderValue::from_static("application/json"),
//!         );
//!         if rejection.status() == StatusCode::SERVICE_UNAVAILABLE {
//!             response
//!                 .headers_mut()
//!                 .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
//!         }
//!         response
//!     })
//! }
//! ```
//!
//! # Without axum
//!
//! The layer is plain tower, generic over the request and response bodies; read the result
//! with `request.extensions().get::<Authenticated>()`:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use keygate::Verifier;
//! use keygate_tower::{Authenticated, JwtAuthLayer};
//! use tower::{Layer, Service, service_fn};
//!
//! fn service(
//!     verifier: Verifier,
//! ) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone {
//!     JwtAuthLayer::new(verifier).layer(service_fn(|request: Request<String>| async move {
//!         let who = request
//!             .extensions()
//!             .get::<Authenticated>()
//!             .and_then(|auth| auth.subject().map(str::to_owned))
//!             .unwrap_or_default();
//!         Ok::<_, Infallible>(Response::new(who))
//!     }))
//! }
//! ```
//!
//! # Sharing
//!
//! The verifier, and with it the key cache, the verified-token cache and the background
//! refresh, is shared by every clone of the layer and of the services it makes: one set of
//! fetches per issuer however many routes, connections or tasks there are. Verification needs
//! a tokio runtime.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum

#![warn(missing_docs)]

/// `get_ref`, `get_mut` and `into_inner` for a middleware service `$service<S, R>` that wraps
/// its inner service in a field `inner`, as tower's own middleware offer.
macro_rules! inner_service_accessors {
    ($service:ident) => {
        impl<S, R> $service<S, R> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Unwraps the service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}

mod authenticated;
mod bearer;
#[cfg(feature = "axum")]
mod extract;
pub mod future;
mod layer;
mod rejection;
mod scope;

pub use authenticated::Authenticated;
#[cfg(feature = "axum")]
pub use extract::{Claims, RawClaims};
pub use layer::{JwtAuth, JwtAuthLayer};
pub use rejection::{
    DefaultRejection, InvalidParam, InvalidRequest, OnRejection, Realm, Rejection, RejectionKind,
};
pub use scope::{RequireScopes, RequireScopesLayer, Scopes};

/// The README's code blocks, compiled as doctests so that the quick start cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use tower_service::Service;

    use super::*;

    /// A nameable inner service, to name the futures.
    #[derive(Clone)]
    struct Echo;

    impl Service<Request<String>> for Echo {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<String>) -> Self::Future {
            ready(Ok(Response::new(request.into_body())))
        }
    }

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    fn assert_clone<T: Clone>() {}

    #[test]
    fn services_and_futures_are_send() {
        assert_send_sync::<JwtAuthLayer>();
        assert_send_sync::<JwtAuth<Echo>>();
        assert_send_sync::<RequireScopes<Echo>>();
        assert_send::<future::ResponseFuture<Echo, String>>();
        assert_send::<
            future::RequireScopesFuture<Ready<Result<Response<String>, Infallible>>, String>,
        >();
        assert_clone::<JwtAuthLayer>();
        assert_clone::<JwtAuth<Echo>>();
        assert_clone::<RequireScopesLayer>();
        assert_clone::<RequireScopes<Echo>>();

        fn generic<S, B, R>()
        where
            S: Service<Request<B>> + Send,
            S::Future: Send,
            B: Send,
            R: Send + Sync,
        {
            assert_send::<JwtAuth<S, R>>();
            assert_send::<future::ResponseFuture<S, B, R>>();
        }
        generic::<Echo, String, DefaultRejection>();
    }
}
