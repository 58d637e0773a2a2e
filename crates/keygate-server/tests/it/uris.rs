//! A provider with several JWKS URLs (`jwks_uris`) through the sidecar: forward-auth with a
//! `kid` both documents use, one URL failing, each URL in status and metrics, and replicas
//! sharing every URL's document through Redis.

use keygate_test_support::{RedisServer, StubIdp, StubResponse, TestKey, jwks};
use reqwest::StatusCode;

use crate::cluster::{cluster_toml, prefix, replica_of_config, status_of};
use crate::support::get_text;
use crate::support::{AUD, TestServer, admin_keys_toml, idp_with, token_for};

fn config_for_two(a: &StubIdp, b: &StubIdp) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[providers]]\ntenant = \"acme\"\nname = \"split\"\nissuer = \"{iss}\"\n\
         jwks_uris = [\"{ja}\", \"{jb}\"]\naudiences = [\"{AUD}\"]\nallow_insecure_http = true\n{keys}",
        iss = a.issuer(),
        ja = a.jwks_url(),
        jb = b.jwks_url(),
        keys = admin_keys_toml(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_urls_sharing_a_kid_verify_report_and_survive_one_failing() {
    let (in_a, in_b) = (TestKey::p256("srv-shared"), TestKey::p256("srv-shared"));
    let a = idp_with(&[&in_a]).await;
    let b = idp_with(&[&in_b]).await;
    let server = TestServer::start(&config_for_two(&a, &b)).await;
    // Tokens name the first IdP as issuer; keys come from both documents.
    for key in [&in_a, &in_b] {
        let token = token_for(&a, key, |_| {});
        server.assert_verifies(&token).await;
    }
    let stranger = token_for(&a, &TestKey::p256("srv-shared"), |_| {});
    assert_eq!(server.verify("", Some(&stranger), &[]).await.status(), 401);

    // B fails; an operator's refresh still answers 200 (A answered), and B's keys stay.
    b.set_response("/jwks", StubResponse::status(503));
    let (status, _) = server
        .post_as_ops("/admin/v1/providers/acme/split/refresh")
        .await;
    assert_eq!(status, 200);
    let token = token_for(&a, &in_b, |_| {});
    server.assert_verifies(&token).await;

    let (status, body) = server.get_as_ops("/admin/v1/status").await;
    assert_eq!(status, 200);
    let p = &body["providers"][0];
    assert!(p["jwks_uri"].is_null());
    assert_eq!(p["state"], "failing");
    let sources = p["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["url"], a.jwks_url());
    assert_eq!(sources[0]["state"], "fresh");
    assert_eq!(sources[0]["kids"], serde_json::json!(["srv-shared"]));
    assert_eq!(sources[1]["url"], b.jwks_url());
    assert_eq!(sources[1]["state"], "failing");
    assert_eq!(sources[1]["last_error"]["reason"], "http_status");
    assert_eq!(sources[1]["kids"], serde_json::json!(["srv-shared"]));

    let text = get_text(&server.client, format!("{}/metrics", server.admin)).await;
    let b_failing = format!(
        "keygate_jwks_source_state{{tenant=\"acme\",provider=\"split\",url=\"{}\",state=\"failing\"}} 1",
        b.jwks_url()
    );
    assert!(text.contains(&b_failing), "{text}");

    // B comes back with another key. A forced refetch skips B while it backs off (a down URL
    // must not make every rotation wait for its timeouts); the background refresher asks it
    // again when its backoff (at most 2 s after one failure) is over, on its own.
    let rotated = TestKey::p256("srv-other");
    b.clear_responses("/jwks");
    b.set_jwks(jwks(&[&in_b, &rotated]));
    let token = token_for(&a, &rotated, |_| {});
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = server.verify("", Some(&token), &[]).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        assert!(tokio::time::Instant::now() < deadline, "B never came back");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, body) = server.get_as_ops("/admin/v1/status").await;
    let p = &body["providers"][0];
    assert_eq!(p["state"], "fresh");
    assert_eq!(p["sources"][1]["state"], "fresh");
    assert!(p["sources"][1]["last_error"].is_null());
    server.stop().await;
}

/// A replica of a cluster on `redis_url` whose one provider has the JWKS URLs of `a` and `b`.
async fn split_replica(a: &StubIdp, b: &StubIdp, redis_url: &str, prefix: &str) -> TestServer {
    let toml = format!(
        "{}{}",
        config_for_two(a, b),
        cluster_toml(redis_url, prefix, "")
    );
    replica_of_config(&toml).await
}

#[tokio::test]
async fn replicas_share_every_urls_document_through_redis() {
    let redis = RedisServer::start();
    let (k1, k2) = (
        TestKey::shared_p256("split-k1"),
        TestKey::shared_ed25519("split-k2"),
    );
    let (a, b) = (idp_with(&[k1]).await, idp_with(&[k2]).await);
    let p = prefix();
    let first = split_replica(&a, &b, &redis.url(), &p).await;
    let second = split_replica(&a, &b, &redis.url(), &p).await;
    assert_eq!(
        (a.requests("/jwks"), b.requests("/jwks")),
        (1, 1),
        "the second replica took the first one's documents"
    );

    // A rotation on A reaching both replicas at once: one round of fetches for the cluster,
    // and the replica that adopts it keeps B's keys.
    let k3 = TestKey::shared_p384("split-k3");
    a.set_jwks(jwks(&[k1, k3]));
    let token = token_for(&a, k3, |_| {});
    let (r1, r2) = tokio::join!(status_of(&first, &token), status_of(&second, &token));
    assert_eq!((r1, r2), (StatusCode::OK, StatusCode::OK));
    assert_eq!((a.requests("/jwks"), b.requests("/jwks")), (2, 2));
    for server in [&first, &second] {
        for key in [k1, k2, k3] {
            assert_eq!(
                status_of(server, &token_for(&a, key, |_| {})).await,
                StatusCode::OK
            );
        }
    }

    // Both URLs down: a replica starting now verifies with the documents kept in Redis.
    a.set_response("/jwks", StubResponse::status(503));
    b.set_response("/jwks", StubResponse::status(503));
    a.reset_counts();
    b.reset_counts();
    let late = split_replica(&a, &b, &redis.url(), &p).await;
    for key in [k1, k2, k3] {
        assert_eq!(
            status_of(&late, &token_for(&a, key, |_| {})).await,
            StatusCode::OK
        );
    }
    assert_eq!((a.requests("/jwks"), b.requests("/jwks")), (0, 0));
    let (_, body) = late.get_as_ops("/admin/v1/status").await;
    assert_eq!(
        body["providers"][0]["sources"][1]["kids"],
        serde_json::json!(["split-k2"])
    );
}
