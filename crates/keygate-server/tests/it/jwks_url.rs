//! `--jwks URL`: fetched through the library's hardened fetcher; plain http on loopback only.

use std::net::TcpListener;

use keygate_test_support::{StubIdp, StubResponse};

use crate::harness::{Expected, Spec, check, key_set, token, verify};

/// Runs a blocking check off the runtime that serves the stub.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_set_served_over_loopback_http_verifies() {
    let idp = StubIdp::start().await;
    idp.set_jwks(key_set());
    let (token, claims) = token();
    let url = idp.jwks_url();
    blocking(move || check(&Spec::new(token).jwks(url), &Expected::Valid(claims))).await;
    assert_eq!(
        idp.requests("/jwks"),
        1,
        "fetched once: the refresh warms verification"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_key_set_problems_are_verdicts() {
    let idp = StubIdp::start().await;
    idp.set_response("/broken", StubResponse::bytes(200, "<html>not json</html>"));
    idp.set_response("/down", StubResponse::status(503));
    let (token, _) = token();
    let cases = [
        (idp.url("/broken"), "malformed_jwks"),
        (idp.url("/down"), "keys_unavailable"),
        (idp.url("/missing"), "keys_unavailable"),
    ];
    for (url, class) in cases {
        let token = token.clone();
        let out =
            blocking(move || check(&Spec::new(token).jwks(url), &Expected::Invalid(class))).await;
        eprintln!("{}", out.stdout);
    }
}

#[test]
fn unreachable_key_set_is_keys_unavailable() {
    // A port that was free a moment ago: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (token, _) = token();
    let url = format!("http://127.0.0.1:{port}/jwks");
    let out = check(
        &Spec::new(token).jwks(url),
        &Expected::Invalid("keys_unavailable"),
    );
    let detail = out.verdict()["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("keys unavailable: "), "{detail}");
    // The cause is named once, not repeated.
    assert_eq!(detail.matches("connect failed").count(), 1, "{detail}");
}

#[test]
fn plain_http_off_loopback_is_refused_as_a_usage_error() {
    let (token, _) = token();
    // 192.0.2.0/24 is TEST-NET-1: never routed, and refused before any connection anyway.
    let out = verify("http://192.0.2.1/jwks", &token, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("refusing to fetch --jwks"), "{out:?}");
    assert!(!out.stderr.contains(&token), "{out:?}");
}
