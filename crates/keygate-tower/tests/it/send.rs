//! Compile-time checks: the services and their futures are `Send` (and the services `Sync`
//! and `Clone`), with axum's own types and with a custom rejection handler, so they fit
//! `axum::Router::layer`, `tokio::spawn` and hyper.

use std::convert::Infallible;
use std::future::Ready;

use axum::Router;
use axum::body::Body;
use axum::routing::Route;
use http::Response;
use keygate_tower::future::{RequireScopesFuture, ResponseFuture};
use keygate_tower::{DefaultRejection, JwtAuth, JwtAuthLayer, Rejection, RequireScopes};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_clone<T: Clone>() {}

type Handler = fn(Rejection) -> Response<Body>;

#[test]
fn services_and_their_futures_are_send() {
    assert_send::<JwtAuthLayer>();
    assert_sync::<JwtAuthLayer>();
    assert_clone::<JwtAuthLayer<Handler>>();

    assert_send::<JwtAuth<Router>>();
    assert_sync::<JwtAuth<Router>>();
    assert_clone::<JwtAuth<Router>>();
    assert_send::<JwtAuth<Route, Handler>>();
    assert_sync::<JwtAuth<Route, Handler>>();
    assert_clone::<JwtAuth<Route, Handler>>();
    assert_send::<ResponseFuture<Router, Body>>();
    assert_send::<ResponseFuture<Route, Body, Handler>>();
    assert_send::<ResponseFuture<Route, Body, DefaultRejection>>();

    assert_send::<RequireScopes<Route>>();
    assert_sync::<RequireScopes<Route>>();
    assert_clone::<RequireScopes<Route, Handler>>();
    assert_send::<RequireScopesFuture<Ready<Result<Response<Body>, Infallible>>, Body>>();
}

#[test]
fn the_layers_fit_axum_routers() {
    // `Router::layer` and `route_layer` require `Clone + Send + Sync + 'static` services
    // with `Send + 'static` futures; this compiles only if ours are.
    fn app(auth: JwtAuthLayer, handler: Handler) -> Router {
        Router::new()
            .route(
                "/",
                axum::routing::get(|| async { "ok" }).route_layer(
                    keygate_tower::RequireScopesLayer::new("a".parse().unwrap())
                        .on_rejection(handler),
                ),
            )
            .layer(auth.clone())
            .layer(auth.on_rejection(handler))
    }
    let _ = app;
}
