//! `HttpFetcher` against the stub IdP: scheme and host rules, redirects, body and time limits,
//! and TLS trust and pinning.

use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, IF_NONE_MATCH, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use keygate::fetch::{Fetch, FetchError, FetchRequest, FetchResponse, HttpFetcher};
use keygate_test_support::{StubBody, StubIdp, StubResponse};
use serde_json::json;
use tokio::time::Instant;

fn loopback() -> keygate::fetch::HttpFetcherBuilder {
    HttpFetcher::builder().danger_allow_http_loopback(true)
}

async fn get(fetcher: &HttpFetcher, url: &str) -> Result<FetchResponse, FetchError> {
    get_with(fetcher, url, HeaderMap::new()).await
}

async fn get_with(
    fetcher: &HttpFetcher,
    url: &str,
    headers: HeaderMap,
) -> Result<FetchResponse, FetchError> {
    let request = FetchRequest {
        url: url.parse().expect("test url"),
        headers,
    };
    fetcher.fetch(request).await
}

/// The reason code of the error, or a panic naming the unexpected success.
fn reason(result: Result<FetchResponse, FetchError>) -> &'static str {
    match result {
        Ok(response) => panic!("expected an error, got {}", response.status),
        Err(err) => err.reason(),
    }
}

#[tokio::test]
async fn plain_http_is_refused_by_default() {
    let idp = StubIdp::start().await;
    let fetcher = HttpFetcher::new().unwrap();
    assert_eq!(reason(get(&fetcher, &idp.jwks_url()).await), "insecure_url");
    assert_eq!(idp.requests("/jwks"), 0, "refused before connecting");
}

#[tokio::test]
async fn plain_http_to_loopback_with_the_danger_switch() {
    let idp = StubIdp::start().await;
    idp.set_jwks(json!({"keys": [{"kty": "oct", "kid": "a"}]}));
    let fetcher = loopback().build().unwrap();

    let response = get(&fetcher, &idp.jwks_url()).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["keys"][0]["kid"], "a");

    let sent = idp.last_request_headers("/jwks").unwrap();
    assert_eq!(sent[ACCEPT], "application/jwk-set+json, application/json");
    assert!(
        sent[USER_AGENT].to_str().unwrap().starts_with("keygate/"),
        "{:?}",
        sent[USER_AGENT]
    );

    // `localhost` is loopback too (and never resolved through DNS).
    let port = idp.addr().port();
    let response = get(&fetcher, &format!("http://localhost:{port}/jwks"))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn plain_http_to_other_hosts_is_refused_even_with_the_danger_switch() {
    let fetcher = loopback().build().unwrap();
    for url in [
        "http://example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.example.com/jwks",
    ] {
        assert_eq!(reason(get(&fetcher, url).await), "insecure_url", "{url}");
    }
}

#[tokio::test]
async fn allow_list() {
    let idp = StubIdp::start().await;
    let port = idp.addr().port();

    let allowed = loopback().allowed_hosts(["127.0.0.1"]).build().unwrap();
    assert_eq!(get(&allowed, &idp.jwks_url()).await.unwrap().status, 200);
    let localhost_url = format!("http://localhost:{port}/jwks");
    assert_eq!(
        reason(get(&allowed, &localhost_url).await),
        "host_not_allowed"
    );

    let other = loopback()
        .allowed_hosts(["idp.example", "*.example"])
        .build()
        .unwrap();
    assert_eq!(
        reason(get(&other, &idp.jwks_url()).await),
        "host_not_allowed"
    );
    assert_eq!(
        idp.requests("/jwks"),
        1,
        "refused hosts are never contacted"
    );
}

#[tokio::test]
async fn non_success_statuses_are_responses_not_errors() {
    let retry_later = StubResponse::status(503).header("Retry-After", "7");
    let idp = StubIdp::answering("/jwks", retry_later).await;
    let fetcher = loopback().build().unwrap();
    let response = get(&fetcher, &idp.jwks_url()).await.unwrap();
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers["retry-after"], "7");
}

#[tokio::test]
async fn caller_headers_are_sent_and_304_is_returned() {
    let idp = StubIdp::start().await;
    idp.set_default_headers([("ETag", "\"v1\"")]);
    let fetcher = loopback().build().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
    let response = get_with(&fetcher, &idp.jwks_url(), headers).await.unwrap();
    assert_eq!(response.status, StatusCode::NOT_MODIFIED);
    assert!(response.body.is_empty());
}

#[tokio::test]
async fn redirects_within_the_limit_are_followed() {
    let idp = StubIdp::start().await;
    idp.set_response("/a", StubResponse::redirect(301, "/b"));
    idp.set_response("/b", StubResponse::redirect(302, &idp.url("/c")));
    idp.set_response("/c", StubResponse::redirect(307, "jwks"));
    let fetcher = loopback().build().unwrap();

    let response = get(&fetcher, &idp.url("/a")).await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    for path in ["/a", "/b", "/c", "/jwks"] {
        assert_eq!(idp.requests(path), 1, "{path}");
    }
}

#[tokio::test]
async fn redirects_over_the_limit_are_refused() {
    let idp = StubIdp::start().await;
    idp.set_response("/loop", StubResponse::redirect(302, "/loop"));
    let fetcher = loopback().max_redirects(2).build().unwrap();

    let err = get(&fetcher, &idp.url("/loop")).await.unwrap_err();
    assert!(matches!(err, FetchError::TooManyRedirects(2)), "{err:?}");
    assert_eq!(
        idp.requests("/loop"),
        3,
        "the first request and two redirects"
    );

    let none = loopback().max_redirects(0).build().unwrap();
    assert_eq!(
        reason(get(&none, &idp.url("/loop")).await),
        "too_many_redirects"
    );
}

#[tokio::test]
async fn redirects_to_hosts_off_the_allow_list_are_refused() {
    let idp = StubIdp::start().await;
    let port = idp.addr().port();
    idp.set_response(
        "/to-localhost",
        StubResponse::redirect(302, &format!("http://localhost:{port}/jwks")),
    );
    idp.set_response(
        "/to-elsewhere",
        StubResponse::redirect(302, "https://evil.example/jwks"),
    );
    let fetcher = loopback().allowed_hosts(["127.0.0.1"]).build().unwrap();

    let err = get(&fetcher, &idp.url("/to-localhost")).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::HostNotAllowed(host) if host == "localhost"),
        "{err:?}"
    );
    let err = get(&fetcher, &idp.url("/to-elsewhere")).await.unwrap_err();
    assert!(
        matches!(&err, FetchError::HostNotAllowed(host) if host == "evil.example"),
        "{err:?}"
    );
    assert_eq!(idp.requests("/jwks"), 0);
}

#[tokio::test]
async fn redirects_from_https_to_http_are_refused() {
    let tls = StubIdp::start_tls().await;
    let plain = StubIdp::start().await;
    tls.set_response("/jwks", StubResponse::redirect(302, &plain.jwks_url()));
    let fetcher = HttpFetcher::builder()
        .add_root_certificate(tls.ca_cert_der())
        .build()
        .unwrap();

    let err = get(&fetcher, &tls.jwks_url()).await.unwrap_err();
    assert!(matches!(err, FetchError::InsecureUrl(_)), "{err:?}");
    assert_eq!(tls.requests("/jwks"), 1);
    assert_eq!(plain.requests("/jwks"), 0);

    // With the danger switch, a downgrade is still refused for anything but loopback.
    tls.set_response(
        "/jwks",
        StubResponse::redirect(302, "http://example.com/jwks"),
    );
    let fetcher = loopback()
        .add_root_certificate(tls.ca_cert_der())
        .build()
        .unwrap();
    assert_eq!(reason(get(&fetcher, &tls.jwks_url()).await), "insecure_url");
}

#[tokio::test]
async fn credentials_do_not_follow_cross_origin_redirects() {
    let idp = StubIdp::start().await;
    let port = idp.addr().port();
    idp.set_response("/same", StubResponse::redirect(302, "/jwks"));
    idp.set_response(
        "/cross",
        StubResponse::redirect(302, &format!("http://localhost:{port}/jwks")),
    );
    let fetcher = loopback().build().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));

    get_with(&fetcher, &idp.url("/same"), headers.clone())
        .await
        .unwrap();
    let sent = idp.last_request_headers("/jwks").unwrap();
    assert_eq!(sent[AUTHORIZATION], "Bearer s3cret");

    get_with(&fetcher, &idp.url("/cross"), headers)
        .await
        .unwrap();
    let sent = idp.last_request_headers("/jwks").unwrap();
    assert!(sent.get(AUTHORIZATION).is_none());
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let idp = StubIdp::start().await;
    let fetcher = loopback().max_body_bytes(1024).build().unwrap();

    // Exactly at the cap is fine.
    idp.push_response("/jwks", StubResponse::bytes(200, vec![b'x'; 1024]));
    assert_eq!(
        get(&fetcher, &idp.jwks_url()).await.unwrap().body.len(),
        1024
    );

    // Declared too large by Content-Length.
    idp.push_response("/jwks", StubResponse::bytes(200, vec![b'x'; 1025]));
    let err = get(&fetcher, &idp.jwks_url()).await.unwrap_err();
    assert!(matches!(err, FetchError::BodyTooLarge(1024)), "{err:?}");

    // Streamed without a length: a huge body and an endless one are both cut at the cap.
    idp.push_response(
        "/jwks",
        StubResponse::status(200).body(StubBody::Huge(100 * 1024 * 1024)),
    );
    assert_eq!(
        reason(get(&fetcher, &idp.jwks_url()).await),
        "body_too_large"
    );
    idp.push_response("/jwks", StubResponse::status(200).body(StubBody::Endless));
    assert_eq!(
        reason(get(&fetcher, &idp.jwks_url()).await),
        "body_too_large"
    );
}

#[tokio::test]
async fn endless_body_is_cut_at_the_default_cap() {
    let idp = StubIdp::start().await;
    idp.set_response("/jwks", StubResponse::status(200).body(StubBody::Endless));
    let fetcher = loopback().build().unwrap();
    let err = get(&fetcher, &idp.jwks_url()).await.unwrap_err();
    assert!(
        matches!(err, FetchError::BodyTooLarge(1_048_576)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_trickling_body_times_out_at_the_deadline() {
    let idp = StubIdp::start().await;
    idp.set_response("/jwks", StubResponse::trickle(Duration::from_millis(20)));
    let fetcher = loopback()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let started = Instant::now();
    let err = get(&fetcher, &idp.jwks_url()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, FetchError::Timeout), "{err:?}");
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
}

#[tokio::test]
async fn a_slow_response_times_out() {
    let thirty_seconds_late = StubResponse::status(200).delay(Duration::from_secs(30));
    let idp = StubIdp::answering("/jwks", thirty_seconds_late).await;
    let fetcher = loopback()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let started = Instant::now();
    assert_eq!(reason(get(&fetcher, &idp.jwks_url()).await), "timeout");
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    // Bind and release a port so that nothing listens on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);

    let fetcher = loopback().build().unwrap();
    let err = get(&fetcher, &format!("http://127.0.0.1:{port}/jwks"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn tls_with_the_stub_certificate_as_a_root() {
    let idp = StubIdp::start_tls().await;
    let fetcher = HttpFetcher::builder()
        .add_root_certificate(idp.ca_cert_der())
        .build()
        .unwrap();
    assert_eq!(get(&fetcher, &idp.jwks_url()).await.unwrap().status, 200);
    let port = idp.addr().port();
    let by_name = format!("https://localhost:{port}/jwks");
    assert_eq!(get(&fetcher, &by_name).await.unwrap().status, 200);
}

#[tokio::test]
async fn tls_with_a_matching_pin() {
    let idp = StubIdp::start_tls().await;
    let fetcher = HttpFetcher::builder()
        .add_root_certificate(idp.ca_cert_der())
        .spki_pins([[0xAB; 32], idp.spki_sha256()])
        .build()
        .unwrap();
    assert_eq!(get(&fetcher, &idp.jwks_url()).await.unwrap().status, 200);
}

#[tokio::test]
async fn tls_with_a_wrong_pin_is_a_pin_mismatch() {
    let idp = StubIdp::start_tls().await;
    let fetcher = HttpFetcher::builder()
        .add_root_certificate(idp.ca_cert_der())
        .spki_pins([[0xAB; 32]])
        .build()
        .unwrap();
    let err = get(&fetcher, &idp.jwks_url()).await.unwrap_err();
    assert!(matches!(err, FetchError::PinMismatch), "{err:?}");
    assert_eq!(
        idp.requests("/jwks"),
        0,
        "no request is sent over an unpinned connection"
    );
}

#[tokio::test]
async fn tls_to_an_untrusted_certificate_fails() {
    let idp = StubIdp::start_tls().await;
    let fetcher = HttpFetcher::new().unwrap();
    let err = get(&fetcher, &idp.jwks_url()).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");

    // A matching pin does not make an untrusted certificate acceptable, and the failure is
    // reported as what it is, not as a pin problem.
    let pinned = HttpFetcher::builder()
        .spki_pins([idp.spki_sha256()])
        .build()
        .unwrap();
    let err = get(&pinned, &idp.jwks_url()).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert_eq!(idp.requests("/jwks"), 0);
}

#[test]
fn fetcher_is_send_sync_and_cheap_to_share() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert_send_sync_clone::<HttpFetcher>();
}
