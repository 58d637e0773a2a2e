//! Required scopes: from the `scope` string and the `scp` array or string, on the whole
//! layer and per route with `RequireScopesLayer`.

use http::StatusCode;
use keygate_test_support::TestKey;
use keygate_tower::{JwtAuthLayer, Realm, Rejection, RequireScopesLayer, Scopes};
use serde_json::{Value, json};
use tower::Layer;

use crate::support::{
    Echo, Fixture, assert_invalid_token, assert_refused, assert_unauthorized, send, send_bearer,
};

/// A token whose scope claims are replaced by `claims` (`scope` and `scp`, either may be
/// `null` to leave it out).
fn token_with_scopes(f: &Fixture, scope: Value, scp: Value) -> String {
    f.token_with(TestKey::shared_p256("k1"), |mut b| {
        b = b.remove_claim("scope");
        if !scope.is_null() {
            b = b.claim("scope", scope);
        }
        if !scp.is_null() {
            b = b.claim("scp", scp);
        }
        b
    })
}

#[tokio::test]
async fn layer_scopes_are_granted_by_scope_and_scp_claims() {
    let f = Fixture::new().await;
    let cases = [
        // (required, scope, scp, granted)
        ("write", json!("read write"), Value::Null, true),
        ("read write", json!("write  read"), Value::Null, true),
        ("admin", json!("read write"), Value::Null, false),
        ("read admin", json!("read write"), Value::Null, false),
        ("admin", Value::Null, json!(["read", "admin"]), true),
        ("admin", Value::Null, json!("read admin"), true),
        ("read admin", json!("read"), json!(["admin"]), true),
        ("read", Value::Null, Value::Null, false),
        ("read", json!(42), Value::Null, false),
        ("read", json!(["read"]), json!({"read": true}), true),
        // Scopes are case-sensitive (RFC 6749 section 3.3).
        ("read", json!("READ"), Value::Null, false),
    ];
    for (required, scope, scp, granted) in cases {
        let echo = Echo::default();
        let service = JwtAuthLayer::new(f.verifier.clone())
            .require_scopes(required.parse().unwrap())
            .layer(echo.service());
        let token = token_with_scopes(&f, scope.clone(), scp.clone());
        let response = send_bearer(service, &token).await;
        let case = format!("required {required:?}, scope {scope}, scp {scp}");
        if granted {
            assert_eq!(response.status(), StatusCode::OK, "{case}");
            assert_eq!(echo.calls(), 1, "{case}");
        } else {
            let expected = format!(r#"Bearer error="insufficient_scope", scope="{required}""#);
            assert_refused(&response, StatusCode::FORBIDDEN, Some(&expected));
            assert_eq!(echo.calls(), 0, "{case}");
        }
    }
}

#[tokio::test]
async fn a_bad_token_is_401_before_scopes_are_looked_at() {
    let f = Fixture::new().await;
    let service = JwtAuthLayer::new(f.verifier.clone())
        .require_scopes("admin".parse().unwrap())
        .layer(Echo::default().service());
    let response = send_bearer(service, "not-a-jwt").await;
    assert_invalid_token(&response, "malformed");
}

#[tokio::test]
async fn require_scopes_layer_checks_per_route_behind_the_auth_layer() {
    let f = Fixture::new().await;
    let auth = JwtAuthLayer::new(f.verifier.clone());
    let echo = Echo::default();
    let admin_route =
        auth.layer(RequireScopesLayer::new(Scopes::new(["admin"]).unwrap()).layer(echo.service()));
    let write_route =
        auth.layer(RequireScopesLayer::new(Scopes::new(["write"]).unwrap()).layer(echo.service()));
    let token = f.good_token(); // scope "read write"

    let refused = send_bearer(admin_route, &token).await;
    assert_refused(
        &refused,
        StatusCode::FORBIDDEN,
        Some(r#"Bearer error="insufficient_scope", scope="admin""#),
    );
    let allowed = send_bearer(write_route, &token).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(echo.calls(), 1);
}

#[tokio::test]
async fn require_scopes_layer_without_the_auth_layer_is_401() {
    let echo = Echo::default();
    let service = RequireScopesLayer::new("read".parse().unwrap())
        .realm(Realm::new("api").unwrap())
        .on_rejection(|rejection: Rejection| rejection.response(rejection.reason().to_owned()))
        .layer(echo.service());
    // Even with a header: nothing verified it.
    let response = send(service, &[b"Bearer abc.def.ghi"]).await;
    assert_unauthorized(&response, r#"Bearer realm="api""#);
    assert_eq!(response.body(), "not_authenticated");
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn scopes_layer_shares_the_auth_layers_realm_and_handler() {
    let f = Fixture::new().await;
    let auth = JwtAuthLayer::new(f.verifier.clone())
        .realm(Realm::new("api").unwrap())
        .on_rejection(|rejection: Rejection| {
            rejection.response(format!("custom: {}", rejection.reason()))
        });
    let echo = Echo::default();
    let route = auth.layer(
        auth.scopes_layer("admin".parse().unwrap())
            .layer(echo.service()),
    );

    let response = send_bearer(route, &f.good_token()).await;

    assert_refused(
        &response,
        StatusCode::FORBIDDEN,
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="admin""#),
    );
    assert_eq!(response.body(), "custom: insufficient_scope");
    assert_eq!(echo.calls(), 0);
}
