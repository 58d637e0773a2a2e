//! The axum extractors, through a `Router` driven by `oneshot`.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::header::AUTHORIZATION;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate_tower::{Authenticated, Claims, JwtAuthLayer, RawClaims, Rejection};
use serde::Deserialize;
use tower::ServiceExt;

use crate::support::{Fixture, assert_unauthorized};

#[derive(Deserialize)]
struct User {
    sub: String,
    email: String,
    realm_access: Roles,
}

#[derive(Deserialize)]
struct Roles {
    roles: Vec<String>,
}

/// A claims type the test tokens do not fit: they carry no `tenant_id`.
#[derive(Deserialize)]
struct NeedsTenant {
    #[allow(dead_code, reason = "only its presence matters")]
    tenant_id: u64,
}

async fn user(Claims(user): Claims<User>) -> String {
    format!(
        "{} {} {}",
        user.sub,
        user.email,
        user.realm_access.roles.join(",")
    )
}

async fn raw(RawClaims(claims): RawClaims) -> String {
    claims["azp"].as_str().unwrap_or_default().to_owned()
}

async fn authenticated(auth: Authenticated) -> String {
    format!(
        "{} via {}",
        auth.subject().unwrap_or_default(),
        auth.tenant()
    )
}

async fn needs_tenant(Claims(_): Claims<NeedsTenant>) -> &'static str {
    "unreachable"
}

/// A handler that takes the rejection to answer in its own words.
async fn lenient(claims: Result<Claims<User>, Rejection>) -> String {
    match claims {
        Ok(Claims(user)) => user.sub,
        Err(rejection) => format!("anonymous ({})", rejection.reason()),
    }
}

fn routes() -> Router {
    Router::new()
        .route("/user", get(user))
        .route("/raw", get(raw))
        .route("/authenticated", get(authenticated))
        .route("/needs-tenant", get(needs_tenant))
        .route("/lenient", get(lenient))
}

async fn call(
    app: &Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().uri(path);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, challenge, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn extractors_read_the_verified_claims() {
    let f = Fixture::new().await;
    let app = routes().layer(JwtAuthLayer::new(f.verifier.clone()));
    let token = f.good_token();

    let (status, _, body) = call(&app, "/user", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "248289761001 jane.doe@example.com offline_access,uma_authorization,reader"
    );

    let (status, _, body) = call(&app, "/raw", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "keygate-test-client");

    let (status, _, body) = call(&app, "/authenticated", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "248289761001 via acme");
}

#[tokio::test]
async fn claims_that_do_not_fit_the_type_are_401_claims_mismatch() {
    let f = Fixture::new().await;
    let app = routes().layer(JwtAuthLayer::new(f.verifier.clone()));
    let (status, challenge, body) = call(&app, "/needs-tenant", Some(&f.good_token())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some(r#"Bearer error="invalid_token", error_description="claims_mismatch""#)
    );
    // The serde error (which may quote claim values) is not sent.
    assert_eq!(body, "");
}

#[tokio::test]
async fn extractors_without_the_layer_are_401() {
    let f = Fixture::new().await;
    let app = routes(); // no JwtAuthLayer: a misconfiguration must fail closed
    let token = f.good_token();
    for path in ["/user", "/raw", "/authenticated", "/needs-tenant"] {
        let (status, challenge, _) = call(&app, path, Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{path}");
    }
    let (status, _, body) = call(&app, "/lenient", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "anonymous (not_authenticated)");
    assert_eq!(f.idp.requests("/jwks"), 0, "nothing verified the token");
}

#[tokio::test]
async fn the_layer_rejects_before_any_extractor_runs() {
    let f = Fixture::new().await;
    let app = routes().layer(JwtAuthLayer::new(f.verifier.clone()));
    let (status, challenge, _) = call(&app, "/lenient", None).await;
    let response_is_the_layers =
        (status, challenge.as_deref()) == (StatusCode::UNAUTHORIZED, Some("Bearer"));
    assert!(response_is_the_layers, "{status} {challenge:?}");
}

#[tokio::test]
async fn a_rejection_is_an_axum_response() {
    use axum::response::IntoResponse;
    let response = Rejection::new(keygate_tower::RejectionKind::NotAuthenticated).into_response();
    assert_unauthorized(&response, "Bearer");
}
