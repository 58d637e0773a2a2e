//! The embedded development issuer over HTTP, and `keygate dev mint|rotate` against it.

use std::net::SocketAddr;
use std::sync::Arc;

use keygate::{ProviderConfig, VerifiedToken, Verifier};
use keygate_server::dev_issuer::DevIssuer;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::{Output, keygate};
use crate::support::{client, field_of_each};

const AUD: &str = "dev-api";

/// An issuer serving its router on `127.0.0.1:0`; the server stops when this drops.
struct Running {
    issuer: DevIssuer,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Running {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = DevIssuer::new(format!("http://{addr}"), AUD).unwrap();
        let router = issuer.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Running {
            issuer,
            addr,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs `keygate dev ARGS --issuer-url <this issuer>` off the async runtime.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--issuer-url".to_owned(), self.url("")]);
        tokio::task::spawn_blocking(move || keygate(&all, None))
            .await
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn verify(issuer: &DevIssuer, jwks: &Value, token: &str) -> Arc<VerifiedToken> {
    let provider = ProviderConfig::builder("dev", "dev", issuer.issuer())
        .audiences([issuer.audience()])
        .static_jwks(serde_json::to_vec(jwks).unwrap())
        .build()
        .unwrap();
    let verifier = Verifier::builder().provider(provider).build().unwrap();
    verifier.verify(token).await.unwrap()
}

/// Verifies a token minted with scope `read write` against the issuer's key set, checks its
/// subject, its scope and its lifetime in seconds, and returns it.
async fn verify_minted(
    running: &Running,
    token: &str,
    subject: &str,
    lifetime: i64,
) -> Arc<VerifiedToken> {
    let verified = verify(&running.issuer, &running.issuer.jwks(), token).await;
    assert_eq!(verified.subject(), Some(subject));
    assert_eq!(verified.claims()["scope"], "read write");
    assert_eq!(
        verified.expires_at().unwrap() - verified.issued_at().unwrap(),
        lifetime
    );
    verified
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
    )
}

async fn get(url: &str) -> reqwest::Response {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_are_served() {
    let running = Running::start().await;
    let discovery = get(&running.url("/.well-known/openid-configuration")).await;
    let discovery: Value = serde_json::from_slice(&discovery.bytes().await.unwrap()).unwrap();
    assert_eq!(discovery["issuer"], running.issuer.issuer());
    assert_eq!(discovery["jwks_uri"], running.url("/jwks.json"));
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(discovery["response_types_supported"], json!(["token"]));
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));

    let jwks = get(&running.url("/jwks.json")).await;
    let headers = jwks.headers().clone();
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(headers["content-type"], "application/json");
    let jwks: Value = serde_json::from_slice(&jwks.bytes().await.unwrap()).unwrap();
    assert_eq!(jwks, running.issuer.jwks());
    assert_eq!(jwks["keys"][0]["kid"], running.issuer.current_kid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_with_no_body_gives_a_default_token_that_verifies() {
    let running = Running::start().await;
    let (status, answer) = post(&running.url("/mint"), "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kid"], running.issuer.current_kid());
    let token = answer["token"].as_str().unwrap();
    let verified = verify(&running.issuer, &running.issuer.jwks(), token).await;
    assert_eq!(verified.subject(), Some("dev-user"));
    assert_eq!(verified.expires_at(), answer["exp"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_takes_a_json_request() {
    let running = Running::start().await;
    let body = json!({
        "sub": "alice",
        "scope": "read write",
        "ttl_secs": 120,
        "claims": { "tenant": "acme", "iss": "https://evil.example" },
    });
    let (status, answer) = post(&running.url("/mint"), &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().unwrap();
    let verified = verify_minted(&running, token, "alice", 120).await;
    assert_eq!(verified.issuer(), running.issuer.issuer());
    assert_eq!(verified.claims()["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mint_requests_are_400_with_a_message() {
    let running = Running::start().await;
    for (body, mentions) in [
        (r#"{"ttl_secs":0}"#, "ttl_secs"),
        (r#"{"ttl_secs":86401}"#, "ttl_secs"),
        (r#"{"ttl":60}"#, "unknown field"),
        (r#"{"sub":5}"#, "invalid type"),
        ("{not json", "invalid mint request"),
        (r#"{"sub":""}"#, "sub"),
    ] {
        let (status, answer) = post(&running.url("/mint"), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{body}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_over_http_keeps_old_tokens_valid() {
    let running = Running::start().await;
    let (_, old) = post(&running.url("/mint"), "").await;
    let old_kid = old["kid"].as_str().unwrap().to_owned();

    let (status, rotated) = post(&running.url("/rotate"), "").await;
    assert_eq!(status, 200, "{rotated}");
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(rotated["kids"], json!([new_kid, old_kid]));

    let (_, new) = post(&running.url("/mint"), "").await;
    assert_eq!(new["kid"], new_kid.as_str());
    let jwks: Value =
        serde_json::from_slice(&get(&running.url("/jwks.json")).await.bytes().await.unwrap())
            .unwrap();
    let old_verified = verify(&running.issuer, &jwks, old["token"].as_str().unwrap()).await;
    assert_eq!(old_verified.kid(), Some(old_kid.as_str()));
    let new_verified = verify(&running.issuer, &jwks, new["token"].as_str().unwrap()).await;
    assert_eq!(new_verified.kid(), Some(new_kid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_refused() {
    let running = Running::start().await;
    let response = client().get(running.url("/mint")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let response = client()
        .post(running.url("/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mint_prints_a_token_that_verifies() {
    let running = Running::start().await;
    let out = running
        .cli(&[
            "dev",
            "mint",
            "--sub",
            "bob",
            "--scope",
            "read write",
            "--ttl",
            "600",
            "--claim",
            "role=admin",
            "--claim",
            "level=3",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let token = out.line();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let verified = verify_minted(&running, token, "bob", 600).await;
    let claims = verified.claims();
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["level"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mint_json_prints_the_whole_answer() {
    let running = Running::start().await;
    let out = running.cli(&["dev", "mint", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let answer: Value = serde_json::from_str(out.line()).unwrap();
    assert_eq!(answer["kid"], running.issuer.current_kid());
    assert!(answer["exp"].is_i64());
    let verified = verify(
        &running.issuer,
        &running.issuer.jwks(),
        answer["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(verified.subject(), Some("dev-user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mint_passes_on_the_issuers_refusal() {
    let running = Running::start().await;
    let out = running.cli(&["dev", "mint", "--ttl", "0"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("ttl_secs"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_rotate_prints_a_kid_the_jwks_then_publishes() {
    let running = Running::start().await;
    let before = running.issuer.current_kid();
    let out = running.cli(&["dev", "rotate"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let kid = out.line().to_owned();
    assert_ne!(kid, before);
    assert_eq!(running.issuer.current_kid(), kid);
    let jwks: Value =
        serde_json::from_slice(&get(&running.url("/jwks.json")).await.bytes().await.unwrap())
            .unwrap();
    let kids = field_of_each(&jwks["keys"], "kid");
    assert_eq!(kids, [kid.as_str(), before.as_str()]);
}

#[test]
fn cli_without_an_issuer_says_to_start_keygate_serve() {
    // Bind then drop a listener: the port is then (almost certainly) closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    for command in ["mint", "rotate"] {
        let out = keygate(&["dev", command, "--issuer-url", url.as_str()], None);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.contains("keygate serve"), "{out:?}");
    }
}

#[test]
fn cli_refuses_a_url_that_is_not_http() {
    for url in ["ftp://127.0.0.1:1", "not a url"] {
        let out = keygate(&["dev", "mint", "--issuer-url", url], None);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--issuer-url"), "{out:?}");
    }
}
