//! A Rust service that verifies in process (keygate-tower) and joins the fleet's log through
//! `keygate_cluster`, beside a `keygate serve` sidecar on the same real Redis: what the
//! sidecar's admin API revokes, the service refuses.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use keygate::{HttpFetcher, ProviderConfig, Revocations, SystemClock, Verifier};
use keygate_cluster::redis::RedisSettings;
use keygate_cluster::wire::{MacKey, MacKeys};
use keygate_cluster::{BusSettings, Fleet, Joined};
use keygate_test_support::{RedisServer, StubIdp, TestKey};
use keygate_tower::{Authenticated, JwtAuthLayer};
use reqwest::StatusCode;
use tokio::net::TcpListener;

use crate::cluster::{SECRET, eventually, prefix, replica, revoke, revoke_jti};
use crate::support::{AUD, idp_with, token_for};

fn key() -> &'static TestKey {
    TestKey::shared_p256("in-process-k1")
}

/// The service of `examples/joined_service.rs`, on port 0: trusts `idp`, follows the log on
/// `redis_url` under `prefix`. Returns its address and the handle that keeps it joined.
async fn joined_service(idp: &StubIdp, redis_url: &str, prefix: &str) -> (String, Joined) {
    let keys = MacKeys::new(vec![MacKey::new("k1", SECRET.as_bytes())]).unwrap();
    let settings = RedisSettings::new(redis_url.to_owned(), prefix.to_owned(), keys);
    let fleet = Fleet::open(
        "in-process",
        BusSettings::Redis(Box::new(settings)),
        Arc::new(SystemClock),
    )
    .unwrap();
    let revocations = Revocations::new();
    let mut builder = Verifier::builder()
        .provider(
            ProviderConfig::builder("acme", "main", idp.issuer())
                .jwks_uri(idp.jwks_url())
                .audiences([AUD])
                .build()
                .unwrap(),
        )
        .fetcher(Arc::new(
            HttpFetcher::builder()
                .danger_allow_http_loopback(true)
                .build()
                .unwrap(),
        ))
        .revocations(Arc::new(revocations.clone()))
        .token_cache(1_000);
    if let Some(exchange) = fleet.key_exchange() {
        builder = builder.key_exchange(exchange);
    }
    let verifier = builder.build().unwrap();
    let joined = fleet.join(verifier.clone(), revocations).await;

    let app = Router::new()
        .route(
            "/me",
            get(|auth: Authenticated| async move { auth.subject().unwrap_or("").to_owned() }),
        )
        .layer(JwtAuthLayer::new(verifier));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}/me", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, joined)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_made_through_a_sidecar_reaches_an_in_process_service() {
    let redis = RedisServer::start();
    let idp = idp_with(&[key()]).await;
    let p = prefix();
    let sidecar = replica(&idp, &redis.url(), &p).await;
    let (service, joined) = joined_service(&idp, &redis.url(), &p).await;
    let client = reqwest::Client::new();
    let call = |token: String| {
        let request = client.get(&service).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };

    let token = token_for(&idp, key(), |_| {});
    assert_eq!(call(token.clone()).await, StatusCode::OK, "accepted before");

    let (code, body) = revoke(&sidecar, revoke_jti(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    eventually("the service refuses the revoked token", || {
        let status = call(token.clone());
        async move { status.await == StatusCode::UNAUTHORIZED }
    })
    .await;
    // Another token of the same key is still fine: only that one was revoked.
    let other = token_for(&idp, key(), |_| {});
    assert_eq!(call(other).await, StatusCode::OK);

    tokio::time::timeout(Duration::from_secs(10), joined.shutdown())
        .await
        .unwrap();
    sidecar.stop().await;
}
