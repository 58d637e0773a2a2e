//! The layer through `tower::ServiceExt::oneshot`: the happy path, every rejection, the
//! realm, tenant narrowing, custom rejections and the one verifier all clones share.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use keygate::{ProviderConfig, Verifier};
use keygate_test_support::{StubResponse, TestKey, jwks};
use keygate_tower::{JwtAuthLayer, OnRejection, Realm, Rejection, RejectionKind};
use serde_json::json;
use tower::{Layer, Service, ServiceExt};

use crate::support::{
    AUD, Echo, Fixture, assert_invalid_token, assert_refused, assert_unauthorized, challenge,
    fetcher, now, provider, send, send_bearer,
};

/// A fixture and an [`Echo`] behind the default layer; the echo is kept to count calls.
async fn echo_behind_layer() -> (
    Fixture,
    Echo,
    impl Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
) {
    let f = Fixture::new().await;
    let echo = Echo::default();
    let service = JwtAuthLayer::new(f.verifier.clone()).layer(echo.service());
    (f, echo, service)
}

#[tokio::test]
async fn a_valid_token_reaches_the_inner_service_with_its_claims() {
    let (f, echo, service) = echo_behind_layer().await;

    let response = send_bearer(service, &f.good_token()).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "248289761001");
    assert_eq!(response.headers()["x-authorization-sensitive"], "true");
    assert!(challenge(&response).is_none());
    assert_eq!(echo.calls(), 1);
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_challenge() {
    let (f, echo, service) = echo_behind_layer().await;

    // No header, and a header of another scheme: RFC 6750 section 3.1 gives neither an
    // error code.
    for authorization in [&[][..], &[&b"Basic dXNlcjpwYXNz"[..]][..]] {
        let response = send(service.clone(), authorization).await;
        assert_unauthorized(&response, "Bearer");
        assert_eq!(response.body(), "");
    }
    assert_eq!(echo.calls(), 0);
    // Nothing to verify, so nothing was fetched.
    assert_eq!(f.idp.requests("/jwks"), 0);
}

#[tokio::test]
async fn unusable_authorization_headers_are_400_invalid_request() {
    let (f, echo, service) = echo_behind_layer().await;
    let token = f.good_token();
    let bearer = format!("Bearer {token}");

    let cases: [(&[&[u8]], &str); 6] = [
        (
            &[bearer.as_bytes(), bearer.as_bytes()],
            "duplicate_authorization",
        ),
        (&[b""], "empty_token"),
        (&[b"Bearer"], "empty_token"),
        (&[b"Bearer a b"], "malformed_authorization"),
        (&[b"Bearer \"quoted\""], "malformed_authorization"),
        (&[b"Bearer t\xc3\xb6ken"], "malformed_authorization"),
    ];
    for (authorization, reason) in cases {
        let response = send(service.clone(), authorization).await;
        let expected = format!(r#"Bearer error="invalid_request", error_description="{reason}""#);
        assert_refused(&response, StatusCode::BAD_REQUEST, Some(&expected));
    }
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn refused_tokens_are_401_invalid_token_with_the_reason_code() {
    let (f, echo, service) = echo_behind_layer().await;
    let key = TestKey::shared_p256("k1");
    let t = now();

    let cases = [
        ("not-a-jwt".to_owned(), "malformed"),
        // Same `kid`, another key: the signature does not verify.
        (f.token(&TestKey::p256("k1")), "bad_signature"),
        (f.token(TestKey::shared_p256("k-unknown")), "unknown_kid"),
        (
            f.token_with(key, |b| {
                b.claim("exp", json!(t - 3600))
                    .claim("iat", json!(t - 7200))
                    .claim("nbf", json!(t - 7200))
            }),
            "expired",
        ),
        (
            f.token_with(key, |b| b.claim("aud", json!("someone-else"))),
            "bad_audience",
        ),
        (
            f.token_with(key, |b| b.claim("iss", json!("https://evil.example"))),
            "bad_issuer",
        ),
        (f.token_with(key, |b| b.header_alg_str("none")), "alg_none"),
    ];
    for (token, reason) in cases {
        let response = send_bearer(service.clone(), &token).await;
        assert_invalid_token(&response, reason);
        // The token is never echoed, in any header or the body.
        assert!(!response.body().contains(&token));
        for value in response.headers().values() {
            assert!(!value.to_str().unwrap().contains(&token), "{reason}");
        }
    }
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn keys_unavailable_is_503_without_a_challenge() {
    let f = Fixture::new().await;
    f.idp.set_response("/jwks", StubResponse::status(500));
    let echo = Echo::default();
    let service = JwtAuthLayer::new(f.verifier.clone()).layer(echo.service());

    let response = send_bearer(service, &f.good_token()).await;

    assert_refused(&response, StatusCode::SERVICE_UNAVAILABLE, None);
    assert!(f.idp.requests("/jwks") >= 1, "the key set was asked for");
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn the_realm_is_named_in_every_challenge() {
    let f = Fixture::new().await;
    let service = JwtAuthLayer::new(f.verifier.clone())
        .realm(Realm::new("keygate test").unwrap())
        .layer(Echo::default().service());

    let missing = send(service.clone(), &[]).await;
    assert_unauthorized(&missing, r#"Bearer realm="keygate test""#);

    let bad = send_bearer(service, "not-a-jwt").await;
    assert_unauthorized(
        &bad,
        r#"Bearer realm="keygate test", error="invalid_token", error_description="malformed""#,
    );
}

#[tokio::test]
async fn a_tenant_narrowed_layer_refuses_other_tenants_issuers() {
    let f = Fixture::new().await;
    // A second tenant with its own issuer and a fixed key set.
    let other = ProviderConfig::builder("globex", "idp", "https://globex.example")
        .static_jwks(jwks(&[TestKey::shared_p256("g1")]).to_string())
        .audiences([AUD])
        .build()
        .unwrap();
    let verifier = Verifier::builder()
        .provider(provider(&f.idp).build().unwrap())
        .provider(other)
        .fetcher(fetcher())
        .build()
        .unwrap();
    let layer = JwtAuthLayer::new(verifier);
    let token = f.good_token();

    let own = send_bearer(
        layer
            .clone()
            .for_tenant("acme")
            .layer(Echo::default().service()),
        &token,
    )
    .await;
    assert_eq!(own.status(), StatusCode::OK);

    let foreign = send_bearer(
        layer.for_tenant("globex").layer(Echo::default().service()),
        &token,
    )
    .await;
    assert_invalid_token(&foreign, "bad_issuer");
}

#[tokio::test]
async fn a_closure_customises_body_and_status() {
    let f = Fixture::new().await;
    let echo = Echo::default();
    let service = JwtAuthLayer::new(f.verifier.clone())
        .on_rejection(|rejection: Rejection| {
            let body =
                json!({ "error": rejection.reason(), "status": rejection.status().as_u16() });
            let mut response = rejection.response(body.to_string());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // This service prefers 401 for every unusable header.
            if matches!(rejection.kind(), RejectionKind::InvalidRequest(_)) {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            response
        })
        .layer(echo.service());

    let missing = send(service.clone(), &[]).await;
    assert_unauthorized(&missing, "Bearer");
    assert_eq!(missing.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(missing.body(), r#"{"error":"missing_token","status":401}"#);

    let malformed = send(service.clone(), &[b"Bearer a b"]).await;
    assert_eq!(malformed.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        malformed.body(),
        r#"{"error":"malformed_authorization","status":400}"#
    );

    let ok = send_bearer(service, &f.good_token()).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), "248289761001");
    assert_eq!(echo.calls(), 1);
}

/// A handler with state of its own, through the trait rather than a closure.
struct Counting {
    rejections: Arc<AtomicUsize>,
}

impl OnRejection<String> for Counting {
    fn on_rejection(&self, rejection: Rejection) -> Response<String> {
        let n = self.rejections.fetch_add(1, Ordering::SeqCst) + 1;
        let mut response = rejection.response(format!("rejection #{n}: {}", rejection.reason()));
        response.headers_mut().remove(WWW_AUTHENTICATE);
        response
    }
}

#[tokio::test]
async fn a_trait_implementation_customises_the_response() {
    let f = Fixture::new().await;
    let rejections = Arc::new(AtomicUsize::new(0));
    let service = JwtAuthLayer::new(f.verifier.clone())
        .on_rejection(Counting {
            rejections: Arc::clone(&rejections),
        })
        .layer(Echo::default().service());

    let first = send(service.clone(), &[]).await;
    let second = send_bearer(service, "not-a-jwt").await;

    assert_refused(&first, StatusCode::UNAUTHORIZED, None);
    assert_eq!(first.body(), "rejection #1: missing_token");
    assert_eq!(second.body(), "rejection #2: malformed");
    assert_eq!(rejections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clone_shares_one_verifier_and_one_key_fetch() {
    let f = Fixture::new().await;
    let layer = JwtAuthLayer::new(f.verifier.clone());
    // Two services from one layer, as two routes would get, each cloned per task.
    let echo = Echo::default();
    let routes = [
        layer.layer(echo.service()),
        layer.clone().layer(echo.service()),
    ];
    let token = f.good_token();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let service = routes[i % 2].clone();
            let token = token.clone();
            tokio::spawn(async move { send_bearer(service, &token).await.status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(echo.calls(), 16);
    assert_eq!(
        f.idp.requests("/jwks"),
        1,
        "one fetch, shared by every clone"
    );
    assert_eq!(layer.verifier().cached_tokens(), 1);
}

#[tokio::test]
async fn the_inner_service_is_polled_for_readiness_and_called_once() {
    // `ServiceExt::oneshot` drives `poll_ready` then `call`; a `ConcurrencyLimit` inside
    // the layer panics if `call` comes without readiness, so the readied clone must be the
    // one that is called.
    let f = Fixture::new().await;
    let echo = Echo::default();
    let limited = tower::ServiceBuilder::new()
        .concurrency_limit(1)
        .service(echo.service());
    let service = JwtAuthLayer::new(f.verifier.clone()).layer(limited);
    let token = f.good_token();
    for _ in 0..3 {
        let response = service
            .clone()
            .oneshot(bearer_request(&token))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(echo.calls(), 3);
}

fn bearer_request(token: &str) -> http::Request<String> {
    http::Request::builder()
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(String::new())
        .unwrap()
}
