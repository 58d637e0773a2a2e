//! The stub IdP, driven by a small hyper client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use keygate_test_support::{StubBody, StubIdp, StubResponse, TestKey, jwks};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Sends one GET over a fresh connection, returning the response with its body unread.
async fn send(idp: &StubIdp, path: &str, headers: &[(&str, &str)]) -> http::Response<Incoming> {
    let tcp = TcpStream::connect(idp.addr()).await.unwrap();
    let mut request = Request::get(path).header("host", idp.addr().to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    if idp.base_url().starts_with("https://") {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(idp.ca_cert_der())).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    }
}

async fn get(
    idp: &StubIdp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let response = send(idp, path, headers).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

fn json_body(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn serves_jwks_and_discovery_by_default() {
    let idp = StubIdp::start().await;
    assert!(idp.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(idp.jwks_url(), format!("{}/jwks", idp.base_url()));

    let (status, headers, body) = get(&idp, "/jwks", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(json_body(&body), json!({"keys": []}));

    let key = TestKey::shared_ed25519("stub-ed");
    idp.set_jwks(jwks(&[key]));
    let (_, _, body) = get(&idp, "/jwks", &[]).await;
    assert_eq!(json_body(&body)["keys"][0]["kid"], "stub-ed");

    let (status, _, body) = get(&idp, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        json_body(&body),
        json!({"issuer": idp.issuer(), "jwks_uri": idp.jwks_url()})
    );

    let (status, _, body) = get(&idp, "/nope", &[]).await;
    assert_eq!(status, 404);
    assert!(body.is_empty());
}

#[tokio::test]
async fn scripted_responses_and_counts() {
    let idp = StubIdp::answering(
        "/jwks",
        StubResponse::status(503).header("retry-after", "7"),
    )
    .await;
    idp.push_response("/jwks", StubResponse::json(200, json!({"keys": [1]})));
    idp.push_response("/jwks", StubResponse::redirect(302, "/elsewhere"));

    let (status, _, body) = get(&idp, "/jwks", &[]).await;
    assert_eq!(
        (status, json_body(&body)),
        (StatusCode::OK, json!({"keys": [1]}))
    );
    let (status, headers, _) = get(&idp, "/jwks", &[]).await;
    assert_eq!(
        (status, &headers["location"]),
        (StatusCode::FOUND, &"/elsewhere".parse().unwrap())
    );
    for _ in 0..2 {
        let (status, headers, _) = get(&idp, "/jwks?x=1", &[("x-probe", "yes")]).await;
        assert_eq!(
            (status, &headers["retry-after"]),
            (StatusCode::SERVICE_UNAVAILABLE, &"7".parse().unwrap())
        );
    }
    idp.clear_responses("/jwks");
    assert_eq!(get(&idp, "/jwks", &[]).await.0, 200);
    get(&idp, "/other", &[]).await;

    assert_eq!(idp.requests("/jwks"), 5);
    assert_eq!(idp.requests("/other"), 1);
    assert_eq!(idp.requests("/never"), 0);
    assert_eq!(idp.total_requests(), 6);
    assert!(idp.last_request_headers("/never").is_none());
    assert!(
        idp.last_request_headers("/other")
            .unwrap()
            .get("x-probe")
            .is_none()
    );

    idp.reset_counts();
    assert_eq!((idp.requests("/jwks"), idp.total_requests()), (0, 0));
    assert!(idp.last_request_headers("/jwks").is_none());
}

#[tokio::test]
async fn default_jwks_revalidates_with_etag() {
    let idp = StubIdp::start().await;
    idp.set_default_headers([("Cache-Control", "max-age=60"), ("ETag", "\"v1\"")]);

    let (status, headers, body) = get(&idp, "/jwks", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(headers["etag"], "\"v1\"");
    assert!(!body.is_empty());

    let (status, headers, body) = get(&idp, "/jwks", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, 304);
    assert_eq!(headers["etag"], "\"v1\"");
    assert!(body.is_empty());
    let sent = idp.last_request_headers("/jwks").unwrap();
    assert_eq!(sent["if-none-match"], "\"v1\"");

    let (status, _, _) = get(&idp, "/jwks", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delay_holds_the_response_but_counts_at_once() {
    let idp = StubIdp::answering(
        "/slow",
        StubResponse::status(200).delay(Duration::from_millis(300)),
    )
    .await;
    let started = Instant::now();
    let pending = tokio::spawn({
        let idp = idp.clone();
        async move { get(&idp, "/slow", &[]).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.requests("/slow"), 1);
    assert!(!pending.is_finished());
    assert_eq!(pending.await.unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn streamed_bodies() {
    let idp = StubIdp::start().await;
    let trickle = StubBody::Trickle {
        chunk: Bytes::from_static(b"{"),
        interval: Duration::from_millis(100),
    };
    for (path, body) in [
        ("/huge", StubBody::Huge(1_000_003)),
        ("/endless", StubBody::Endless),
        ("/trickle", trickle),
    ] {
        idp.set_response(path, StubResponse::status(200).body(body));
    }

    let (_, _, body) = get(&idp, "/huge", &[]).await;
    assert_eq!(body.len(), 1_000_003);

    let mut body = send(&idp, "/endless", &[]).await.into_body();
    let mut read = 0;
    while read < 4_000_000 {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.data_ref().map_or(0, Bytes::len);
    }

    let started = Instant::now();
    let mut body = send(&idp, "/trickle", &[]).await.into_body();
    for _ in 0..3 {
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().as_ref(), b"{");
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
}

#[tokio::test]
async fn tls_mode_serves_to_a_client_trusting_the_cert() {
    let idp = StubIdp::start_tls().await;
    assert!(idp.base_url().starts_with("https://127.0.0.1:"));
    idp.set_jwks(json!({"keys": ["tls"]}));
    let (status, _, body) = get(&idp, "/jwks", &[]).await;
    assert_eq!(
        (status, json_body(&body)),
        (StatusCode::OK, json!({"keys": ["tls"]}))
    );
    assert_eq!(idp.requests("/jwks"), 1);

    // The pin is the SHA-256 of one DER SEQUENCE inside the certificate: its SPKI.
    let der = idp.ca_cert_der();
    let pinned = (0..der.len())
        .filter_map(|at| der_sequence(&der[at..]))
        .any(|tlv| {
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, tlv).as_ref() == idp.spki_sha256()
        });
    assert!(pinned);
}

/// The DER SEQUENCE (tag, length and contents) starting at `der[0]`, if one does.
fn der_sequence(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, header) = match first {
        0..=0x7f => (usize::from(first), 2),
        0x81 => (usize::from(*rest.first()?), 3),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            4,
        ),
        _ => return None,
    };
    der.get(..header + len)
}

#[tokio::test]
async fn stops_on_shutdown_and_on_last_drop() {
    let idp = StubIdp::start().await;
    let addr = idp.addr();
    let clone = idp.clone();
    drop(idp);
    assert_eq!(get(&clone, "/jwks", &[]).await.0, 200);
    drop(clone);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());

    let idp = StubIdp::start().await;
    idp.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(idp.addr()).await.is_err());
}

#[tokio::test(start_paused = true)]
#[allow(
    clippy::disallowed_methods,
    reason = "measures real time while tokio's clock is paused and jumps ahead"
)]
async fn delay_follows_paused_tokio_time() {
    let idp = StubIdp::answering(
        "/slow",
        StubResponse::status(204).delay(Duration::from_secs(3600)),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(get(&idp, "/slow", &[]).await.0, 204);
    assert!(started.elapsed() < Duration::from_secs(5));
}
