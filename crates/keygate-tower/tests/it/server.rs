//! A real axum server on `127.0.0.1:0`, called over HTTP with reqwest: the layer, a scoped
//! route, the extractors and a JSON rejection body, end to end.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use keygate_test_support::{StubResponse, TestKey};
use keygate_tower::{Claims, JwtAuthLayer, Rejection, RequireScopesLayer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{Fixture, now};

#[derive(Deserialize)]
struct User {
    sub: String,
}

async fn me(Claims(user): Claims<User>) -> String {
    format!("hello {}", user.sub)
}

async fn create_note(Claims(user): Claims<User>) -> (StatusCode, String) {
    (StatusCode::CREATED, format!("note by {}", user.sub))
}

fn json_rejection(rejection: Rejection) -> Response<Body> {
    let body = json!({ "error": rejection.reason() }).to_string();
    let mut response = rejection.response(Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The service under test: `/me` for any valid token, `/notes` and `/admin` for tokens with
/// the `write` and `admin` scopes, JSON rejection bodies throughout.
pub(crate) fn app(auth: JwtAuthLayer) -> Router {
    let auth = auth.on_rejection(json_rejection);
    Router::new()
        .route("/me", get(me))
        .route(
            "/notes",
            post(create_note).route_layer(auth.scopes_layer("write".parse().unwrap())),
        )
        .route(
            "/admin",
            get(me).route_layer(
                RequireScopesLayer::new("admin".parse().unwrap()).on_rejection(json_rejection),
            ),
        )
        .layer(auth)
}

/// Serves `app` on `127.0.0.1:0` for the rest of the test's runtime.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: String,
}

impl Reply {
    /// Asserts a refusal's status, its `WWW-Authenticate` challenge and the error code in its
    /// body.
    fn assert_refused(&self, status: StatusCode, challenge: Option<&str>, error: &str) {
        assert_eq!(self.status, status);
        assert_eq!(self.challenge.as_deref(), challenge);
        assert_eq!(error_of(&self.body), error);
    }
}

async fn call(addr: SocketAddr, method: reqwest::Method, path: &str, token: Option<&str>) -> Reply {
    let mut request = client().request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status(),
        challenge: response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body: response.text().await.unwrap(),
    }
}

fn error_of(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap();
    value["error"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_server_authenticates_end_to_end() {
    let f = Fixture::new().await;
    let addr = serve(app(JwtAuthLayer::new(f.verifier.clone()))).await;
    let token = f.good_token(); // scope "read write"
    let get = reqwest::Method::GET;

    let ok = call(addr, get.clone(), "/me", Some(&token)).await;
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (StatusCode::OK, "hello 248289761001")
    );

    let created = call(addr, reqwest::Method::POST, "/notes", Some(&token)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body, "note by 248289761001");

    let missing = call(addr, get.clone(), "/me", None).await;
    missing.assert_refused(StatusCode::UNAUTHORIZED, Some("Bearer"), "missing_token");

    let forbidden = call(addr, get.clone(), "/admin", Some(&token)).await;
    forbidden.assert_refused(
        StatusCode::FORBIDDEN,
        Some(r#"Bearer error="insufficient_scope", scope="admin""#),
        "insufficient_scope",
    );

    let t = now();
    let expired = f.token_with(TestKey::shared_p256("k1"), |b| {
        b.claim("exp", json!(t - 600))
            .claim("iat", json!(t - 1200))
            .claim("nbf", json!(t - 1200))
    });
    let refused = call(addr, get.clone(), "/me", Some(&expired)).await;
    refused.assert_refused(
        StatusCode::UNAUTHORIZED,
        Some(r#"Bearer error="invalid_token", error_description="expired""#),
        "expired",
    );
    assert!(!refused.body.contains(&expired));

    let malformed = client()
        .get(format!("http://{addr}/me"))
        .header("authorization", "Bearer two words")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    // Routes that do not exist are behind the layer too: no probing without a token.
    let unknown = call(addr, get, "/nope", None).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_server_answers_503_while_keys_are_unavailable() {
    let f = Fixture::new().await;
    f.idp.set_response("/jwks", StubResponse::status(503));
    let addr = serve(app(JwtAuthLayer::new(f.verifier.clone()))).await;

    let reply = call(addr, reqwest::Method::GET, "/me", Some(&f.good_token())).await;

    reply.assert_refused(StatusCode::SERVICE_UNAVAILABLE, None, "keys_unavailable");
}
