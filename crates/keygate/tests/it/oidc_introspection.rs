//! Opaque tokens against a real authorization server: panva's `oidc-provider` on loopback
//! (see `keygate_test_support::oidc`), in real time. Valid, expired, revoked at the IdP and
//! then flushed here, revoked here by digest, a flood of random tokens, and the IdP down.

use std::sync::Arc;
use std::time::Duration;

use keygate::introspect::{ClientSecret, IntrospectionConfig, IntrospectionEndpoint};
use keygate::{ProviderConfig, ProviderId, Revocations, Verifier, token_sha256};
use keygate_test_support::loopback_fetcher;
use keygate_test_support::oidc::{
    OPAQUE_RESOURCE, OidcProvider, RS_CLIENT_ID, RS_CLIENT_SECRET, TokenRequest,
};

fn verifier(idp: &OidcProvider, config: IntrospectionConfig) -> (Verifier, Revocations) {
    let revocations = Revocations::new();
    let provider = ProviderConfig::builder("acme", "oidc", idp.issuer())
        .audiences([OPAQUE_RESOURCE])
        .introspection(config)
        .build()
        .unwrap();
    let verifier = Verifier::builder()
        .provider(provider)
        .fetcher(loopback_fetcher(Duration::from_secs(2)))
        .revocations(Arc::new(revocations.clone()))
        .build()
        .unwrap();
    (verifier, revocations)
}

fn discovered() -> IntrospectionConfig {
    IntrospectionConfig::new(
        IntrospectionEndpoint::Discovered,
        RS_CLIENT_ID,
        ClientSecret::new(RS_CLIENT_SECRET),
    )
}

#[tokio::test]
async fn opaque_tokens_valid_expired_revoked_at_the_idp_and_here() {
    let idp = OidcProvider::start().await;
    let (v, revocations) = verifier(&idp, discovered());
    let id = ProviderId::new("acme", "oidc");

    // Valid: accepted, claims from the introspection answer, asked once.
    let token = idp.token(TokenRequest::opaque("read write")).await;
    let verified = v.verify(&token.access_token).await.unwrap();
    assert!(verified.is_introspected());
    assert_eq!(verified.claims()["scope"], "read write");
    assert_eq!(verified.claims()["client_id"], "keygate-app");
    assert_eq!(verified.issuer(), idp.issuer());
    v.verify(&token.access_token).await.unwrap();
    assert_eq!(idp.introspections().await, 1);

    // Revoked at the IdP: the cached answer serves until a flush, then it is refused.
    idp.revoke(&token.access_token).await;
    v.verify(&token.access_token).await.unwrap();
    v.flush(&id).unwrap();
    let err = v.verify(&token.access_token).await.unwrap_err();
    assert_eq!(err.reason(), "inactive");

    // Revoked here by its digest: refused at once, without asking the IdP.
    let other = idp.token(TokenRequest::opaque("read")).await;
    v.verify(&other.access_token).await.unwrap();
    let asked = idp.introspections().await;
    revocations.revoke_token(&token_sha256(&other.access_token), i64::MAX);
    let err = v.verify(&other.access_token).await.unwrap_err();
    assert_eq!(err.reason(), "revoked");
    assert_eq!(idp.introspections().await, asked);

    // Expired: a two-second token, asked again after its `exp`, is refused (the cached
    // answer ends at `exp`).
    let short = idp
        .token(TokenRequest::opaque("read").ttl(Duration::from_secs(2)))
        .await;
    v.verify(&short.access_token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let err = v.verify(&short.access_token).await.unwrap_err();
    assert!(
        ["inactive", "expired"].contains(&err.reason().as_str()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_flood_of_random_tokens_is_bounded_and_an_outage_is_a_clean_503() {
    let mut idp = OidcProvider::start().await;
    let (v, _) = verifier(&idp, discovered().rate_limit(5, 5));
    let known = idp.token(TokenRequest::opaque("read")).await;
    v.verify(&known.access_token).await.unwrap();
    let before = idp.introspections().await;
    let mut busy = 0;
    for i in 0..300 {
        match v.verify(&format!("random-opaque-token-{i:04}")).await {
            Err(e) if e.reason() == "introspection_busy" => busy += 1,
            Err(e) => assert_eq!(e.reason(), "inactive"),
            Ok(_) => panic!("a random token was accepted"),
        }
    }
    let asked = idp.introspections().await - before;
    // The burst of five was spent on the first token, plus what refilled while the loop ran.
    assert!(asked <= 10, "the IdP was asked {asked} times");
    assert!(busy >= 290, "{busy}");

    idp.kill().await;
    v.verify(&known.access_token).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let err = v.verify("unknown-while-down").await.unwrap_err();
    assert_eq!(err.reason(), "introspection_unavailable");
    assert!(err.retry_after().is_some());
}

#[tokio::test]
async fn a_resource_server_may_authenticate_with_private_key_jwt() {
    use keygate::introspect::{ClientAuth, ClientKey};
    use keygate_test_support::oidc::{RS_JWT_CLIENT_ID, RS_JWT_CLIENT_KEY_PEM};

    let idp = OidcProvider::start().await;
    let key = ClientKey::from_pem(RS_JWT_CLIENT_KEY_PEM.as_bytes()).unwrap();
    let config = IntrospectionConfig::authenticated(
        IntrospectionEndpoint::Discovered,
        RS_JWT_CLIENT_ID,
        ClientAuth::PrivateKeyJwt(key),
    );
    let (v, _) = verifier(&idp, config);
    let token = idp.token(TokenRequest::opaque("read")).await;
    let verified = v.verify(&token.access_token).await.unwrap();
    assert_eq!(verified.claims()["scope"], "read");
    // Each call signs a fresh assertion (the IdP refuses a replayed `jti`): a second token,
    // a second call, accepted too.
    let other = idp.token(TokenRequest::opaque("write")).await;
    assert_eq!(
        v.verify(&other.access_token).await.unwrap().claims()["scope"],
        "write"
    );
    assert_eq!(idp.introspections().await, 2);

    // A key the IdP does not know for that client: the call is refused, the token unchecked.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let stranger = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64_simd::STANDARD.encode_to_string(stranger.as_ref())
    );
    let (v, _) = verifier(
        &idp,
        IntrospectionConfig::authenticated(
            IntrospectionEndpoint::Discovered,
            RS_JWT_CLIENT_ID,
            ClientAuth::PrivateKeyJwt(ClientKey::from_pem(pem.as_bytes()).unwrap()),
        ),
    );
    let err = v.verify(&token.access_token).await.unwrap_err();
    assert_eq!(err.reason(), "introspection_unavailable");
}
