//! Smoke tests of the `oidc-provider` harness against the real provider: the shapes of its
//! tokens, introspection answers and DPoP proofs are what the introspection and DPoP code in
//! keygate will be tested against, so these tests pin them down.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate::{Algorithm, Clock as _, ProviderConfig, SystemClock, Verifier};
use keygate_test_support::loopback_fetcher;
use keygate_test_support::oidc::{
    JWT_RESOURCE, OPAQUE_RESOURCE, OidcOptions, OidcProvider, ProofRequest, RS_CLIENT_ID,
    RS_CLIENT_SECRET, TOKEN_CLIENT_ID, TokenRequest,
};
use serde_json::{Value, json};

/// Decodes the header and payload of a compact JWS, and returns its signing input and
/// signature bytes.
fn decode(jws: &str) -> (Value, Value, String, Vec<u8>) {
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {} parts", parts.len());
    let part = |i: usize| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[i]).expect("base64url part"))
            .expect("JSON part")
    };
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("base64url signature");
    (
        part(0),
        part(1),
        format!("{}.{}", parts[0], parts[1]),
        signature,
    )
}

/// The RFC 7638 SHA-256 thumbprint of a P-256 public JWK.
fn thumbprint(jwk: &Value) -> String {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap(),
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

/// Verifies an ES256 signature with the P-256 public JWK `jwk`.
fn es256_valid(jwk: &Value, input: &str, signature: &[u8]) -> bool {
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), signature)
        .is_ok()
}

/// The wall clock in Unix seconds, as the provider (same machine) sees it.
fn now() -> i64 {
    let since = SystemClock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit i64")
}

/// Posts `token` to the introspection endpoint with these client credentials.
async fn introspect_as(
    idp: &OidcProvider,
    id: &str,
    secret: &str,
    token: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(idp.introspection_endpoint())
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn opaque_token_introspects_active_until_revoked() {
    let idp = OidcProvider::start().await;
    let token = idp.token(TokenRequest::opaque("read write")).await;
    assert_eq!(token.token_type, "Bearer");
    assert_eq!(token.expires_in, 600);
    assert_eq!(token.scope.as_deref(), Some("read write"));
    assert!(token.jkt.is_none() && token.key_id.is_none());
    assert_eq!(
        token.access_token.matches('.').count(),
        0,
        "an opaque token is not a JWS"
    );

    let answer = idp.introspect(&token.access_token).await;
    println!("opaque introspection: {answer}");
    assert_eq!(answer["active"], true);
    assert_eq!(answer["client_id"], TOKEN_CLIENT_ID);
    assert_eq!(answer["scope"], "read write");
    assert_eq!(answer["iss"], idp.issuer().as_str());
    assert_eq!(answer["aud"], OPAQUE_RESOURCE);
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer.get("cnf").is_none());
    let (iat, exp) = (
        answer["iat"].as_i64().unwrap(),
        answer["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert!((iat - now()).abs() <= 5, "iat {iat} is not about now");

    idp.revoke(&token.access_token).await;
    assert_eq!(
        idp.introspect(&token.access_token).await,
        json!({ "active": false })
    );
    assert_eq!(idp.stats().await.revocations, 1);
}

#[tokio::test]
async fn introspection_needs_the_resource_server_credentials() {
    let idp = OidcProvider::start().await;
    let token = idp.token(TokenRequest::opaque("read")).await;
    let wrong = introspect_as(&idp, RS_CLIENT_ID, "not-the-secret", &token.access_token).await;
    assert_eq!(wrong.status(), 401);
    let right = introspect_as(&idp, RS_CLIENT_ID, RS_CLIENT_SECRET, &token.access_token).await;
    assert_eq!(right.status(), 200);
    let body: Value = serde_json::from_slice(&right.bytes().await.unwrap()).unwrap();
    assert_eq!(body["active"], true);
}

#[tokio::test]
async fn jwt_token_is_an_at_jwt_that_keygate_verifies() {
    let idp = OidcProvider::start().await;
    let token = idp.token(TokenRequest::jwt("read")).await;
    assert_eq!(token.token_type, "Bearer");
    let (header, payload, _, _) = decode(&token.access_token);
    println!("jwt header: {header}\njwt payload: {payload}");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    assert_eq!(payload["iss"], idp.issuer().as_str());
    assert_eq!(payload["aud"], JWT_RESOURCE);
    assert_eq!(payload["client_id"], TOKEN_CLIENT_ID);
    assert_eq!(payload["sub"], TOKEN_CLIENT_ID);
    assert_eq!(payload["scope"], "read");
    assert!(payload.get("cnf").is_none());
    assert!(payload["jti"].is_string());

    let verifier = Verifier::builder()
        .provider(
            ProviderConfig::builder("test", "oidc-provider", idp.issuer())
                .jwks_uri(idp.jwks_uri())
                .audiences([JWT_RESOURCE])
                .algorithms([Algorithm::RS256])
                .fetcher(loopback_fetcher(Duration::from_secs(5)))
                .build()
                .expect("provider config"),
        )
        .build()
        .expect("verifier");
    let verified = verifier
        .verify(&token.access_token)
        .await
        .expect("keygate verifies the provider's JWT");
    assert_eq!(verified.issuer(), idp.issuer());
    assert_eq!(verified.subject(), Some(TOKEN_CLIENT_ID));
    assert_eq!(idp.stats().await.jwks, 1);
}

#[tokio::test]
async fn dpop_bound_tokens_carry_the_key_thumbprint() {
    let idp = OidcProvider::start().await;
    let opaque = idp.token(TokenRequest::opaque("write").dpop()).await;
    assert_eq!(opaque.token_type, "DPoP");
    let jkt = opaque
        .jkt
        .clone()
        .expect("a DPoP-bound token names its key");
    let key_id = opaque.key_id.clone().expect("and the helper's name for it");

    let answer = idp.introspect(&opaque.access_token).await;
    println!("DPoP-bound introspection: {answer}");
    assert_eq!(answer["active"], true);
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"], json!({ "jkt": jkt }));

    // A second token bound to the same key, as a JWT: `cnf.jkt` is in the payload.
    let jwt = idp.token(TokenRequest::jwt("read").dpop_key(&key_id)).await;
    assert_eq!(jwt.token_type, "DPoP");
    assert_eq!(jwt.jkt.as_deref(), Some(jkt.as_str()));
    let (_, payload, _, _) = decode(&jwt.access_token);
    println!("DPoP-bound jwt payload: {payload}");
    assert_eq!(payload["cnf"], json!({ "jkt": jkt }));

    // A fresh key gives another thumbprint.
    let other = idp.token(TokenRequest::opaque("read").dpop()).await;
    assert_ne!(other.jkt.as_deref(), Some(jkt.as_str()));
}

#[tokio::test]
async fn proofs_have_the_rfc_9449_shape() {
    let idp = OidcProvider::start().await;
    let token = idp.token(TokenRequest::opaque("read").dpop()).await;
    let key_id = token.key_id.clone().unwrap();
    let jkt = token.jkt.clone().unwrap();
    let htu = "http://127.0.0.1:1/api/things";

    let proof = idp
        .proof(
            ProofRequest::new(&key_id, "GET", htu)
                .access_token(&token.access_token)
                .iat_offset(-30)
                .jti("replay-me"),
        )
        .await;
    let (header, payload, input, signature) = decode(&proof);
    println!("proof header: {header}\nproof payload: {payload}");
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["jwk"]["kty"], "EC");
    assert_eq!(header["jwk"]["crv"], "P-256");
    assert!(
        header["jwk"].get("d").is_none(),
        "no private key in a proof"
    );
    assert_eq!(thumbprint(&header["jwk"]), jkt);
    assert!(es256_valid(&header["jwk"], &input, &signature));
    assert_eq!(payload["htm"], "GET");
    assert_eq!(payload["htu"], htu);
    assert_eq!(payload["jti"], "replay-me");
    assert_eq!(
        payload["ath"],
        URL_SAFE_NO_PAD.encode(digest(&SHA256, token.access_token.as_bytes()))
    );
    let iat = payload["iat"].as_i64().unwrap();
    assert!((iat - (now() - 30)).abs() <= 5, "iat {iat} is not 30 s ago");

    // Without a jti the helper makes a fresh one each time; without a token, no ath.
    let a = decode(&idp.proof(ProofRequest::new(&key_id, "POST", htu)).await).1;
    let b = decode(&idp.proof(ProofRequest::new(&key_id, "POST", htu)).await).1;
    assert_ne!(a["jti"], b["jti"]);
    assert!(a.get("ath").is_none());

    // The deliberately broken kinds.
    let other = decode(
        &idp.proof(ProofRequest {
            other_key: true,
            ..ProofRequest::new(&key_id, "GET", htu)
        })
        .await,
    );
    assert_ne!(thumbprint(&other.0["jwk"]), jkt);
    assert!(es256_valid(&other.0["jwk"], &other.2, &other.3));

    let private = decode(
        &idp.proof(ProofRequest {
            private_jwk: true,
            ..ProofRequest::new(&key_id, "GET", htu)
        })
        .await,
    );
    assert!(private.0["jwk"]["d"].is_string());

    let none = idp
        .proof(ProofRequest {
            alg_override: Some("none".into()),
            ..ProofRequest::new(&key_id, "GET", htu)
        })
        .await;
    assert!(
        none.ends_with('.'),
        "an unsigned JWS has an empty signature"
    );
    assert_eq!(decode(&none).0["alg"], "none");

    let hs = decode(
        &idp.proof(ProofRequest {
            alg_override: Some("HS256".into()),
            typ: Some("jwt".into()),
            ..ProofRequest::new(&key_id, "GET", htu)
        })
        .await,
    );
    assert_eq!(hs.0["alg"], "HS256");
    assert_eq!(hs.0["typ"], "jwt");

    let mut claims = serde_json::Map::new();
    claims.insert("iat".into(), json!("yesterday"));
    let odd = decode(
        &idp.proof(ProofRequest {
            claims,
            omit: vec!["jti".into()],
            ..ProofRequest::new(&key_id, "GET", htu)
        })
        .await,
    );
    assert_eq!(odd.1["iat"], "yesterday");
    assert!(odd.1.get("jti").is_none());

    // A key made on its own binds like one made with a token.
    let key = idp.new_key().await;
    let bound = idp
        .token(TokenRequest::opaque("read").dpop_key(&key.key_id))
        .await;
    assert_eq!(bound.jkt, Some(key.jkt));
}

#[tokio::test]
async fn introspections_are_counted_and_can_be_made_to_fail() {
    let idp = OidcProvider::start().await;
    let token = idp.token(TokenRequest::opaque("read")).await;
    assert_eq!(idp.introspections().await, 0);
    for _ in 0..3 {
        idp.introspect(&token.access_token).await;
    }
    assert_eq!(idp.introspections().await, 3);
    let stats = idp.stats().await;
    assert_eq!((stats.tokens, stats.revocations, stats.jwks), (1, 0, 0));

    idp.set_introspection_failure(Some(503)).await;
    let failed = introspect_as(&idp, RS_CLIENT_ID, RS_CLIENT_SECRET, &token.access_token).await;
    assert_eq!(failed.status(), 503);
    assert_eq!(idp.introspections().await, 4);
    idp.set_introspection_failure(None).await;
    assert_eq!(idp.introspect(&token.access_token).await["active"], true);

    // A delay holds the answer back; a client with a shorter timeout gives up.
    idp.set_introspection_delay(Duration::from_secs(3)).await;
    let timed_out = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(idp.introspection_endpoint())
        .basic_auth(RS_CLIENT_ID, Some(RS_CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", token.access_token))
        .send()
        .await;
    assert!(timed_out.is_err_and(|e| e.is_timeout()));
    idp.set_introspection_delay(Duration::ZERO).await;
}

#[tokio::test]
async fn short_lived_tokens_expire() {
    let idp = OidcProvider::start_with(OidcOptions {
        token_ttl: Duration::from_secs(120),
        ..OidcOptions::default()
    })
    .await;
    let default = idp.token(TokenRequest::opaque("read")).await;
    assert_eq!(default.expires_in, 120);
    let short = idp
        .token(TokenRequest::opaque("read").ttl(Duration::from_secs(1)))
        .await;
    assert_eq!(short.expires_in, 1);
    let answer = idp.introspect(&short.access_token).await;
    assert_eq!(
        answer["exp"].as_i64().unwrap() - answer["iat"].as_i64().unwrap(),
        1
    );
    let jwt = idp
        .token(TokenRequest::jwt("read").ttl(Duration::from_secs(2)))
        .await;
    let (_, payload, _, _) = decode(&jwt.access_token);
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        2
    );

    // Wait for the wall clock to pass `exp` (the provider's clock is the machine's).
    let exp = answer["exp"].as_i64().unwrap();
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.introspect(&short.access_token).await["active"], false);
    assert_eq!(idp.introspect(&default.access_token).await["active"], true);
}

#[tokio::test]
async fn dpop_nonce_challenge_is_answered() {
    let idp = OidcProvider::start_with(OidcOptions {
        dpop_nonce: true,
        ..OidcOptions::default()
    })
    .await;
    let token = idp.token(TokenRequest::opaque("read").dpop()).await;
    assert_eq!(token.token_type, "DPoP");
    assert_eq!(
        idp.introspect(&token.access_token).await["cnf"]["jkt"],
        token.jkt.unwrap().as_str()
    );
    // One refused for want of a nonce, one with it.
    assert_eq!(idp.stats().await.tokens, 2);
}

#[tokio::test]
async fn kill_takes_the_provider_down_and_restart_brings_it_back() {
    let mut idp = OidcProvider::start().await;
    let issuer = idp.issuer();
    let token = idp.token(TokenRequest::opaque("read")).await;
    let discovery: Value = serde_json::from_slice(
        &reqwest::get(idp.discovery_url())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["introspection_endpoint"],
        idp.introspection_endpoint().as_str()
    );
    assert_eq!(discovery["jwks_uri"], idp.jwks_uri().as_str());

    idp.kill().await;
    assert!(!idp.is_running());
    let down = reqwest::Client::new()
        .post(idp.introspection_endpoint())
        .body("token=x")
        .send()
        .await;
    assert!(down.is_err_and(|e| e.is_connect()));

    idp.restart().await;
    assert!(idp.is_running());
    assert_eq!(idp.issuer(), issuer, "same port after restart");
    // Tokens lived in the old process's memory.
    assert_eq!(
        idp.introspect(&token.access_token).await,
        json!({ "active": false })
    );
    assert_eq!(idp.introspections().await, 1);
}
