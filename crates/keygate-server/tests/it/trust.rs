//! Cluster trust (issue 12): a flush means fresh keys everywhere, for one IdP fetch; a flush is
//! not an outage; and Redis going back in time loses no acknowledged revocation or flush.
//!
//! Real `redis-server` processes on free ports, replicas in process against the stub IdP, in
//! real time. The IdP answers like a real one (`Cache-Control: max-age`), so nothing here
//! passes because keys happen to expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keygate_test_support::{RedisServer, StubIdp, TestKey, jwks};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::{bus, count, eventually, prefix, replica, revoke, revoke_jti, status_of};
use crate::support::{TestServer, config_for, idp_with, token_for};

fn old_key() -> &'static TestKey {
    TestKey::shared_p256("trust-old")
}

fn current_key() -> &'static TestKey {
    TestKey::shared_p256("trust-current")
}

/// An IdP publishing both keys, cacheable for five minutes like a real one.
async fn rotating_idp() -> StubIdp {
    let idp = idp_with(&[old_key(), current_key()]).await;
    idp.set_default_headers([("Cache-Control", "public, max-age=300")]);
    idp
}

/// `POST /admin/v1/providers/acme/main/{action}` (`flush`, `refresh`) with the admin key.
pub(crate) async fn provider_action(server: &TestServer, action: &str) -> (StatusCode, Value) {
    server
        .post_as_ops(&format!("/admin/v1/providers/acme/main/{action}"))
        .await
}

async fn flush(server: &TestServer) -> StatusCode {
    provider_action(server, "flush").await.0
}

/// Three replicas on one Redis, sharing `prefix`.
async fn three_replicas(idp: &StubIdp, redis: &RedisServer, prefix: &str) -> [TestServer; 3] {
    [
        replica(idp, &redis.url(), prefix).await,
        replica(idp, &redis.url(), prefix).await,
        replica(idp, &redis.url(), prefix).await,
    ]
}

/// A Redis server, the rotating IdP, a fresh prefix, and three replicas on them.
async fn rotating_cluster() -> (RedisServer, StubIdp, String, [TestServer; 3]) {
    let redis = RedisServer::start();
    let idp = rotating_idp().await;
    let p = prefix();
    let replicas = three_replicas(&idp, &redis, &p).await;
    (redis, idp, p, replicas)
}

async fn ready(server: &TestServer) -> StatusCode {
    server.admin("GET", "/readyz", None, None).await.0
}

/// Verifies `token` on every replica in a loop until `stop`, and returns every status seen.
fn keep_verifying(
    replicas: Vec<Arc<TestServer>>,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<StatusCode>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for r in &replicas {
                seen.push(status_of(r, &token).await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

/// Waits until the shared key set is in Redis (replicas publish what they fetch).
async fn key_set_shared(redis: &RedisServer, p: &str) {
    eventually("the key set is shared", || async {
        !redis
            .command(&["HKEYS", &format!("{{{p}}}:keysets")])
            .contains("empty")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_after_the_idp_withdrew_a_key_refuses_it_everywhere_for_one_fetch() {
    let redis = RedisServer::start();
    let idp = rotating_idp().await;
    let p = prefix();
    let replicas: Vec<Arc<TestServer>> = vec![
        Arc::new(replica(&idp, &redis.url(), &p).await),
        Arc::new(replica(&idp, &redis.url(), &p).await),
        Arc::new(replica(&idp, &redis.url(), &p).await),
    ];
    let withdrawn = token_for(&idp, old_key(), |_| {});
    let current = token_for(&idp, current_key(), |_| {});
    for r in &replicas {
        assert_eq!(status_of(r, &withdrawn).await, StatusCode::OK);
        assert_eq!(status_of(r, &current).await, StatusCode::OK);
    }
    key_set_shared(&redis, &p).await;

    // Rotation without overlap: the IdP withdraws the old key; the operator flushes.
    idp.set_jwks(jwks(&[current_key()]));
    idp.reset_counts();
    let stop = Arc::new(AtomicBool::new(false));
    let verifying = keep_verifying(replicas.clone(), current.clone(), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let flushed = tokio::time::Instant::now();
    assert_eq!(flush(&replicas[0]).await, StatusCode::OK);
    let answered = flushed.elapsed();
    // The replica that answered refuses the withdrawn key at once.
    assert_eq!(
        status_of(&replicas[0], &withdrawn).await,
        StatusCode::UNAUTHORIZED
    );
    for r in &replicas {
        eventually("every replica refuses the withdrawn key", || async {
            status_of(r, &withdrawn).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert_eq!(status_of(r, &current).await, StatusCode::OK);
    }
    let everywhere = flushed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = verifying.await.unwrap();
    assert!(
        seen.iter().all(|s| *s == StatusCode::OK),
        "a current token was refused during the flush: {seen:?}"
    );
    assert_eq!(idp.requests("/jwks"), 1, "one JWKS request for the cluster");
    println!(
        "FIGURE flush_after_withdrawal: 3 replicas; flush answered in {answered:?}, withdrawn key \
         refused everywhere {everywhere:?} after the call; {} current-token verifications \
         during it, 0 refused; 1 JWKS request",
        seen.len()
    );

    // A replica started after the flush (warm start from Redis) and one restarted.
    let late = replica(&idp, &redis.url(), &p).await;
    assert_eq!(status_of(&late, &withdrawn).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&late, &current).await, StatusCode::OK);
    let restarted = replicas.last().unwrap().clone();
    drop(replicas);
    Arc::try_unwrap(restarted)
        .ok()
        .expect("no other handle")
        .stop()
        .await;
    let again = replica(&idp, &redis.url(), &p).await;
    assert_eq!(
        status_of(&again, &withdrawn).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_of(&again, &current).await, StatusCode::OK);
    assert_eq!(
        idp.requests("/jwks"),
        1,
        "warm starts take the post-flush set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_refresh_on_one_of_three_replicas_costs_one_fetch() {
    let (redis, idp, p, [a, b, c]) = rotating_cluster().await;
    let withdrawn = token_for(&idp, old_key(), |_| {});
    for r in [&a, &b, &c] {
        assert_eq!(status_of(r, &withdrawn).await, StatusCode::OK);
    }
    key_set_shared(&redis, &p).await;
    idp.set_jwks(jwks(&[current_key()]));
    idp.reset_counts();
    let (code, body) = provider_action(&b, "refresh").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["kids"], json!(["trust-current"]));
    for r in [&a, &b, &c] {
        eventually("every replica holds the refreshed set", || async {
            r.node.verifier().status()[0].kids == ["trust-current"]
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.requests("/jwks"), 1, "one JWKS request for the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_with_no_traffic_keeps_every_replica_ready() {
    let (_redis, idp, _p, replicas) = rotating_cluster().await;
    // The single node's backend too.
    let single = TestServer::start(&config_for(&idp, "")).await;
    eventually("the single node is ready", || async {
        ready(&single).await == StatusCode::OK
    })
    .await;
    // The IdP answers slowly: the refetch takes a while, and readiness must hold meanwhile.
    idp.set_response(
        "/jwks",
        keygate_test_support::StubResponse::json(200, jwks(&[current_key()]))
            .header("Cache-Control", "max-age=300")
            .delay(Duration::from_millis(300)),
    );
    assert_eq!(flush(&replicas[1]).await, StatusCode::OK);
    assert_eq!(flush(&single).await, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        for r in replicas.iter().chain([&single]) {
            assert_eq!(ready(r).await, StatusCode::OK, "unready after a flush");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the keys are back without a single verification.
    for r in replicas.iter().chain([&single]) {
        let s = &r.node.verifier().status()[0];
        assert_eq!(s.state.as_str(), "fresh", "{s:?}");
        assert_eq!(s.kids, ["trust-current"]);
    }
    // Two flushes (the cluster's and the single node's): two fetches.
    assert_eq!(
        idp.requests("/jwks"),
        2 + 2,
        "start-up fetches plus one per flush"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_loses_no_revocation_or_flush() {
    let mut redis = RedisServer::start();
    let idp = rotating_idp().await;
    let p = prefix();
    let replicas = three_replicas(&idp, &redis, &p).await;
    let tokens: Vec<String> = (0..12)
        .map(|_| token_for(&idp, current_key(), |_| {}))
        .collect();
    let withdrawn = token_for(&idp, old_key(), |_| {});
    key_set_shared(&redis, &p).await;

    // Acknowledged and in the snapshot.
    for (i, t) in tokens[..4].iter().enumerate() {
        assert_eq!(
            revoke(&replicas[i % 3], revoke_jti(t)).await.0,
            StatusCode::OK
        );
    }
    redis.save_snapshot();
    // Acknowledged after the snapshot: Redis will lose these.
    for (i, t) in tokens[4..8].iter().enumerate() {
        assert_eq!(
            revoke(&replicas[i % 3], revoke_jti(t)).await.0,
            StatusCode::OK
        );
    }
    idp.set_jwks(jwks(&[current_key()]));
    assert_eq!(flush(&replicas[2]).await, StatusCode::OK);
    for r in &replicas {
        eventually(
            "the flush and revocations reached every replica",
            || async {
                status_of(r, &withdrawn).await == StatusCode::UNAUTHORIZED
                    && status_of(r, &tokens[7]).await == StatusCode::UNAUTHORIZED
            },
        )
        .await;
    }

    // Redis crashes and comes back from the snapshot: same epoch, shorter log.
    redis.restart_from_snapshot();
    let restarted = tokio::time::Instant::now();
    let mut retries = 0;
    // Revocations keep coming; every one is acknowledged (retrying while Redis is away).
    for (i, t) in tokens[8..].iter().enumerate() {
        let target = &replicas[i % 3];
        let mut acknowledged = false;
        for _ in 0..200 {
            let (code, body) = revoke(target, revoke_jti(t)).await;
            if code == StatusCode::OK {
                acknowledged = true;
                break;
            }
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            retries += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(acknowledged, "a revocation was never acknowledged");
    }
    for r in &replicas {
        eventually("the replica noticed the rollback", || async {
            count(&bus(r).resyncs, "rollback") >= 1
        })
        .await;
        for t in tokens.iter().chain([&withdrawn]) {
            eventually(
                "every acknowledged revocation and the flush hold",
                || async { status_of(r, t).await == StatusCode::UNAUTHORIZED },
            )
            .await;
        }
    }
    let converged = restarted.elapsed();
    println!(
        "FIGURE redis_rollback: RDB snapshot after 4 of 8 revocations and before a flush; \
         restarted from it; 4 more revocations acknowledged ({retries} x 503 retried); every \
         replica resynced (rollback) and all 12 revocations and the flush held everywhere \
         {converged:?} after the restart, and on a replica started afterwards"
    );
    // A replica started afterwards learns them all from Redis.
    let late = replica(&idp, &redis.url(), &p).await;
    for t in tokens.iter().chain([&withdrawn]) {
        assert_eq!(status_of(&late, t).await, StatusCode::UNAUTHORIZED);
    }
    let fresh = token_for(&idp, current_key(), |_| {});
    assert_eq!(status_of(&late, &fresh).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_while_the_idp_is_down_serves_no_key_from_before_it_and_recovers_on_its_own() {
    let (_redis, idp, _p, replicas) = rotating_cluster().await;
    let current = token_for(&idp, current_key(), |_| {});
    for r in &replicas {
        assert_eq!(status_of(r, &current).await, StatusCode::OK);
    }
    // The IdP goes down, then the operator flushes: the old keys must not come back, from
    // anywhere, so tokens are refused as keys_unavailable (503) rather than verified.
    idp.set_response("/jwks", keygate_test_support::StubResponse::status(503));
    assert_eq!(flush(&replicas[0]).await, StatusCode::OK);
    for r in &replicas {
        eventually("no replica verifies with the flushed keys", || async {
            let resp = r.verify("", Some(&current), &[]).await;
            resp.status() == StatusCode::SERVICE_UNAVAILABLE
                && resp.headers()["x-auth-reason"] == "keys_unavailable"
        })
        .await;
        eventually("an unready replica says so", || async {
            ready(r).await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    }
    // The IdP comes back: every replica recovers without traffic or an operator.
    idp.clear_responses("/jwks");
    idp.set_jwks(jwks(&[current_key()]));
    for r in &replicas {
        eventually("the replica is ready again", || async {
            ready(r).await == StatusCode::OK
        })
        .await;
        assert_eq!(status_of(r, &current).await, StatusCode::OK);
    }
}
