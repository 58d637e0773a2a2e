//! Replicas sharing the signed invalidation log on a real Redis: each test starts its own
//! `redis-server` on a free port (and stops, wipes or partitions it), runs replicas in
//! process against the stub IdP, and asserts only what converges, never how fast.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keygate_cluster::{BusState, BusStatus};
use keygate_test_support::{RedisServer, StubIdp, TcpProxy, TestKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{APP_SECRET, TestServer, config_for, idp_with, now, token_for};

pub(crate) const SECRET: &str = "a cluster secret of at least thirty-two bytes";

/// The `[cluster]` section of a replica on `url` (any prefix, so tests can share nothing).
pub(crate) fn cluster_toml(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        "\n[cluster]\nbackend = \"redis\"\nredis_url = \"{url}\"\nprefix = \"{prefix}\"\n\
         fetch_lease = \"3s\"\ntimeout = \"1s\"\n{extra}\n[[cluster.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n"
    )
}

pub(crate) fn prefix() -> String {
    format!("kg{:08x}", fastrand::u32(..))
}

pub(crate) async fn replica(idp: &StubIdp, url: &str, prefix: &str) -> TestServer {
    replica_with(idp, url, prefix, "").await
}

pub(crate) async fn replica_with(
    idp: &StubIdp,
    url: &str,
    prefix: &str,
    extra: &str,
) -> TestServer {
    replica_from(idp, &cluster_toml(url, prefix, extra)).await
}

/// `N` replicas on the Redis at `url` under `prefix`, started one after the other.
pub(crate) async fn replicas<const N: usize>(
    idp: &StubIdp,
    url: &str,
    prefix: &str,
) -> [TestServer; N] {
    let mut started = Vec::with_capacity(N);
    for _ in 0..N {
        started.push(replica(idp, url, prefix).await);
    }
    started
        .try_into()
        .unwrap_or_else(|_| unreachable!("N replicas were started"))
}

/// A replica with `cluster` as its `[cluster]` section, once it is synced and ready.
pub(crate) async fn replica_from(idp: &StubIdp, cluster: &str) -> TestServer {
    replica_of_config(&format!("{}{cluster}", config_for(idp, ""))).await
}

/// A replica of the whole config `toml`, once it is synced and ready.
pub(crate) async fn replica_of_config(toml: &str) -> TestServer {
    let server = TestServer::start(toml).await;
    // Started means the bus has loaded shared state and the keys are there.
    eventually("the replica is synced and ready", || async {
        server.node.bus().status().state == BusState::Ok
            && server.admin("GET", "/readyz", None, None).await.0 == StatusCode::OK
    })
    .await;
    server
}

/// Waits until every one of `replicas` refuses `token` (401): a revocation has arrived.
pub(crate) async fn eventually_refused<const N: usize>(
    what: &str,
    replicas: [&TestServer; N],
    token: &str,
) {
    for r in replicas {
        eventually(what, || async {
            status_of(r, token).await == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}

/// A replica reaching `redis` through a proxy the test can cut, and the proxy.
pub(crate) async fn replica_via_proxy(
    idp: &StubIdp,
    redis: &RedisServer,
    prefix: &str,
) -> (TcpProxy, TestServer) {
    let proxy = TcpProxy::start(redis.addr()).await;
    let server = replica(idp, &format!("redis://{}/", proxy.addr()), prefix).await;
    (proxy, server)
}

/// A Redis server, a stub IdP publishing `keys`, and a fresh key prefix for the replicas.
pub(crate) async fn redis_and_idp(keys: &[&TestKey]) -> (RedisServer, StubIdp, String) {
    let redis = RedisServer::start();
    let idp = idp_with(keys).await;
    (redis, idp, prefix())
}

/// Polls `check` until it holds; fails the test after 20 s. Correctness, not speed.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) async fn status_of(server: &TestServer, token: &str) -> StatusCode {
    server.verify("", Some(token), &[]).await.status()
}

pub(crate) async fn revoke(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server
        .post_json_as_ops("/admin/v1/revocations", &body)
        .await
}

pub(crate) fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

pub(crate) fn revoke_jti(token: &str) -> Value {
    json!({ "jti": jti_of(token), "exp": now() + 3600 })
}

pub(crate) fn count(pairs: &[(&'static str, u64)], reason: &str) -> u64 {
    pairs
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

pub(crate) fn bus(server: &TestServer) -> BusStatus {
    server.node.bus().status()
}

fn key() -> &'static TestKey {
    TestKey::shared_p256("cluster-k1")
}

#[tokio::test]
async fn a_revocation_made_on_one_replica_is_enforced_by_the_others() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let replicas = [
        replica(&idp, &redis.url(), &p).await,
        replica(&idp, &redis.url(), &p).await,
        replica(&idp, &redis.url(), &p).await,
    ];
    let token = token_for(&idp, key(), |_| {});
    let alice = token_for(&idp, key(), |c| {
        c.insert("sub".into(), json!("alice"));
    });
    for r in &replicas {
        assert_eq!(status_of(r, &token).await, StatusCode::OK);
        assert_eq!(status_of(r, &alice).await, StatusCode::OK);
    }
    let (code, body) = revoke(&replicas[0], revoke_jti(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body["seq"].as_u64().unwrap() >= 1);
    let (code, _) = revoke(
        &replicas[1],
        json!({ "tenant": "acme", "sub": "alice", "before": now() + 1 }),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    for r in &replicas {
        eventually("every replica refuses the revoked token", || async {
            status_of(r, &token).await == StatusCode::UNAUTHORIZED
                && status_of(r, &alice).await == StatusCode::UNAUTHORIZED
        })
        .await;
        let resp = r.verify("", Some(&token), &[]).await;
        assert_eq!(resp.headers()["x-auth-reason"].to_str().unwrap(), "revoked");
    }
    // Everyone agrees on the log's position, and nothing was dropped.
    let newest: u64 = redis
        .command(&["GET", &format!("{{{p}}}:seq")])
        .parse()
        .unwrap();
    eventually("replicas agree on the log position", || async {
        replicas.iter().all(|r| bus(r).last_seq == newest)
    })
    .await;
    for r in &replicas {
        let s = bus(r);
        assert_eq!((s.backend, s.state), ("redis", BusState::Ok));
        assert_eq!(s.rejected.iter().map(|(_, n)| n).sum::<u64>(), 0);
    }
}

#[tokio::test]
async fn a_replica_that_was_down_or_cut_off_applies_everything_it_missed() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let (proxy, cut_off) = replica_via_proxy(&idp, &redis, &p).await;
    let stopped = replica(&idp, &redis.url(), &p).await;
    let tokens: Vec<String> = (0..3).map(|_| token_for(&idp, key(), |_| {})).collect();
    for t in &tokens {
        assert_eq!(status_of(&cut_off, t).await, StatusCode::OK);
    }
    stopped.stop().await;
    proxy.cut();
    eventually("the cut-off replica notices", || async {
        bus(&cut_off).state == BusState::Degraded
    })
    .await;

    for t in &tokens {
        assert_eq!(revoke(&a, revoke_jti(t)).await.0, StatusCode::OK);
    }
    let (code, _) = a.post_as_ops("/admin/v1/providers/acme/main/flush").await;
    assert_eq!(code, StatusCode::OK);
    // Cut off, it keeps verifying with what it has: the revocations have not reached it.
    assert_eq!(status_of(&cut_off, &tokens[0]).await, StatusCode::OK);

    proxy.restore();
    let restarted = replica(&idp, &redis.url(), &p).await;
    for r in [&cut_off, &restarted] {
        eventually("the missed revocations are enforced", || async {
            for t in &tokens {
                if status_of(r, t).await != StatusCode::UNAUTHORIZED {
                    return false;
                }
            }
            true
        })
        .await;
    }
    // The cut-off replica caught up from its position; nothing needed a full resync.
    eventually("positions agree", || async {
        bus(&cut_off).last_seq == bus(&a).last_seq
    })
    .await;
    assert_eq!(bus(&cut_off).resyncs.iter().map(|(_, n)| n).sum::<u64>(), 0);
}

#[tokio::test]
async fn redis_restarted_empty_makes_replicas_resync_and_restore_revocations() {
    let (mut redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let revoked = token_for(&idp, key(), |_| {});
    let later = token_for(&idp, key(), |_| {});
    assert_eq!(revoke(&a, revoke_jti(&revoked)).await.0, StatusCode::OK);
    eventually("b enforces it", || async {
        status_of(&b, &revoked).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let epoch = bus(&a).epoch;

    redis.stop();
    redis.start_again();
    for r in [&a, &b] {
        eventually("the new epoch is seen", || async {
            let s = bus(r);
            s.state == BusState::Ok && s.epoch != epoch && count(&s.resyncs, "epoch") >= 1
        })
        .await;
        // Resynced, not forgetful: the revocation is still enforced.
        assert_eq!(status_of(r, &revoked).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(r, &later).await, StatusCode::OK);
    }
    // The replicas gave the empty Redis their revocations back: a newcomer loads them.
    let newcomer = replica(&idp, &redis.url(), &p).await;
    assert_eq!(
        status_of(&newcomer, &revoked).await,
        StatusCode::UNAUTHORIZED
    );
    // And the log works again in the new epoch.
    assert_eq!(revoke(&b, revoke_jti(&later)).await.0, StatusCode::OK);
    eventually_refused("the new revocation arrives", [&a, &newcomer], &later).await;
}

#[tokio::test]
async fn a_log_trimmed_past_a_replica_makes_it_resync_in_full() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let (proxy, behind) = replica_via_proxy(&idp, &redis, &p).await;
    let tokens: Vec<String> = (0..6).map(|_| token_for(&idp, key(), |_| {})).collect();

    proxy.cut();
    eventually("cut off", || async {
        bus(&behind).state == BusState::Degraded
    })
    .await;
    for t in &tokens[..5] {
        assert_eq!(revoke(&a, revoke_jti(t)).await.0, StatusCode::OK);
    }
    let trimmed = redis.command(&["XTRIM", &format!("{{{p}}}:log"), "MAXLEN", "0"]);
    assert!(trimmed.starts_with("(integer) "), "{trimmed}");
    assert_eq!(revoke(&a, revoke_jti(&tokens[5])).await.0, StatusCode::OK);
    proxy.restore();

    eventually("a full resync because of the trim", || async {
        count(&bus(&behind).resyncs, "trimmed") >= 1
    })
    .await;
    for t in &tokens {
        assert_eq!(status_of(&behind, t).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn forged_and_replayed_entries_are_dropped_and_counted() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let victim = token_for(&idp, key(), |_| {});
    let marker = token_for(&idp, key(), |_| {});
    let log = format!("{{{p}}}:log");

    // One real entry to learn the epoch and to replay.
    let first = token_for(&idp, key(), |_| {});
    assert_eq!(revoke(&a, revoke_jti(&first)).await.0, StatusCode::OK);
    let seq: u64 = redis
        .command(&["GET", &format!("{{{p}}}:seq")])
        .parse()
        .unwrap();
    eventually("b applies it", || async { bus(&b).last_seq == seq }).await;
    let next = (seq + 1).to_string();
    let epoch = bus(&b).epoch.to_string();
    let applied = bus(&b).applied;

    let payload = json!({ "kind": "jti", "jti": jti_of(&victim), "exp": now() + 3600 }).to_string();
    let at = (now() * 1000).to_string();
    let forged = |mac: Option<&str>| {
        let mut args = vec![
            "XADD", &log, "*", "v", "1", "type", "revoke", "seq", &next, "epoch", &epoch, "origin",
            "mallory", "at", &at, "payload", &payload, "key", "k1",
        ];
        if let Some(mac) = mac {
            args.extend(["mac", mac]);
        }
        redis.command(&args)
    };
    let zeros = "0".repeat(64);
    forged(Some(&zeros));
    forged(None);
    forged(Some("not hex"));
    // Written straight into shared state too, for replicas that start later.
    redis.command(&[
        "ZADD",
        &format!("{{{p}}}:revocations"),
        "+inf",
        &json!({"v":"1","type":"revoke","seq":"9","epoch":epoch,"origin":"mallory","at":at,
                "payload":payload,"key":"k1","mac":zeros})
        .to_string(),
    ]);
    // A replay: the first entry again, byte for byte.
    let entries = redis.command(&["XRANGE", &log, "-", "+", "COUNT", "1"]);
    let lines: Vec<&str> = entries.lines().collect();
    let mut replay = vec!["XADD", &log, "*"];
    replay.extend(&lines[1..]);
    redis.command(&replay);

    // A real entry after them: once b has it, b has read past every forgery.
    assert_eq!(revoke(&a, revoke_jti(&marker)).await.0, StatusCode::OK);
    for r in [&a, &b] {
        eventually("the real entry after the forgeries arrives", || async {
            status_of(r, &marker).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert_eq!(
            status_of(r, &victim).await,
            StatusCode::OK,
            "forgery applied"
        );
    }
    let s = bus(&b);
    assert_eq!(count(&s.rejected, "mac"), 2, "{:?}", s.rejected);
    assert_eq!(count(&s.rejected, "malformed"), 1, "{:?}", s.rejected);
    assert_eq!(count(&s.rejected, "replay"), 1, "{:?}", s.rejected);
    assert_eq!(s.applied, applied + 1, "only the real entry was applied");
    assert_eq!(s.last_seq, seq + 1);

    let newcomer = replica(&idp, &redis.url(), &p).await;
    assert_eq!(status_of(&newcomer, &victim).await, StatusCode::OK);
    assert_eq!(
        status_of(&newcomer, &marker).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(count(&bus(&newcomer).rejected, "mac") >= 1);
}

#[tokio::test]
async fn with_redis_down_replicas_verify_refuse_invalidations_and_converge_after() {
    let (mut redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let strict = replica_with(&idp, &redis.url(), &p, "accept_while_degraded = false").await;
    let token = token_for(&idp, key(), |_| {});
    for r in [&a, &b, &strict] {
        assert_eq!(status_of(r, &token).await, StatusCode::OK);
    }

    redis.stop();
    for r in [&a, &b, &strict] {
        eventually("degraded", || async { bus(r).state == BusState::Degraded }).await;
    }
    // Verification goes on with the keys and revocations held.
    assert_eq!(status_of(&a, &token).await, StatusCode::OK);
    assert_eq!(status_of(&b, &token).await, StatusCode::OK);
    let (code, ready) = a.admin("GET", "/readyz", None, None).await;
    assert_eq!(code, StatusCode::OK, "{ready}");
    assert_eq!(ready["bus"], "degraded");
    assert_eq!(ready["accepting_while_degraded"], true);
    let (_, metrics) = a.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("keygate_bus_up{backend=\"redis\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("keygate_bus_accepting_while_degraded 1"));
    // An invalidation that cannot go out is a 503 that says so, never a silent 200.
    let (code, body) = revoke(&a, revoke_jti(&token)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "bus_unavailable");
    // The strict replica refuses instead of accepting while revocations may be behind.
    let resp = strict.verify("", Some(&token), &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-auth-reason"], "revocations_behind");
    assert_eq!(
        strict.admin("GET", "/readyz", None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    redis.start_again();
    for r in [&a, &b, &strict] {
        eventually("delivering again", || async {
            bus(r).state == BusState::Ok
        })
        .await;
    }
    assert_eq!(
        strict.admin("GET", "/readyz", None, None).await.0,
        StatusCode::OK
    );
    // The revocation refused while Redis was down was still applied where it was made; made
    // again, it reaches everyone.
    assert_eq!(status_of(&a, &token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(revoke(&a, revoke_jti(&token)).await.0, StatusCode::OK);
    eventually_refused("converged", [&b, &strict], &token).await;
}

#[tokio::test]
async fn a_rotation_costs_the_idp_one_fetch_for_three_replicas() {
    let redis = RedisServer::start();
    let old = TestKey::shared_p256("cluster-rot-old");
    let new = TestKey::shared_p256("cluster-rot-new");
    let idp = idp_with(&[old]).await;
    let p = prefix();
    let [a, b, c] = replicas(&idp, &redis.url(), &p).await;
    // Starting replicas take the key set the first one fetched.
    assert_eq!(idp.total_requests(), 1, "start-up fetches");

    idp.reset_counts();
    idp.set_jwks(keygate_test_support::jwks(&[old, new]));
    let token = token_for(&idp, new, |_| {});
    let (ra, rb, rc) = tokio::join!(
        status_of(&a, &token),
        status_of(&b, &token),
        status_of(&c, &token)
    );
    assert_eq!(
        (ra, rb, rc),
        (StatusCode::OK, StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(idp.total_requests(), 1, "one JWKS request for the rotation");

    // An explicit refresh on one replica: one request, adopted by the others.
    idp.reset_counts();
    let (code, _) = b.post_as_ops("/admin/v1/providers/acme/main/refresh").await;
    assert_eq!(code, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(idp.total_requests(), 1, "one JWKS request for a refresh");
}

#[tokio::test]
async fn a_replica_starting_while_the_idp_is_down_verifies_with_the_shared_key_set() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let first = replica(&idp, &redis.url(), &p).await;
    let token = token_for(&idp, key(), |_| {});
    assert_eq!(status_of(&first, &token).await, StatusCode::OK);
    eventually("the key set is shared", || async {
        !redis
            .command(&["HKEYS", &format!("{{{p}}}:keysets")])
            .contains("empty")
    })
    .await;
    idp.set_response("/jwks", keygate_test_support::StubResponse::status(503));
    idp.reset_counts();
    let late = replica(&idp, &redis.url(), &p).await;
    assert_eq!(status_of(&late, &token).await, StatusCode::OK);
    assert_eq!(idp.total_requests(), 0, "verified without asking the IdP");
}

#[tokio::test]
async fn a_single_node_keeps_its_revocations_across_a_restart() {
    kept_across_a_restart(revoke_jti).await;
}

/// Revokes a token on a single node with the body `revocation` makes of it, restarts the
/// node from its state file and waits until the token is refused again; returns the state
/// file's text as it was between the two runs, and the token.
pub(crate) async fn kept_across_a_restart(revocation: impl Fn(&str) -> Value) -> (String, String) {
    let idp = idp_with(&[key()]).await;
    let dir = std::env::temp_dir().join(format!("keygate-it-state-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.jsonl");
    let toml = format!(
        "{}\n[cluster]\nbackend = \"local\"\nstate_file = \"{}\"\n",
        config_for(&idp, ""),
        state.display()
    );
    let token = token_for(&idp, key(), |_| {});
    let node = TestServer::start(&toml).await;
    assert_eq!(status_of(&node, &token).await, StatusCode::OK);
    let (code, body) = revoke(&node, revocation(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(status_of(&node, &token).await, StatusCode::UNAUTHORIZED);
    node.stop().await;
    let kept = std::fs::read_to_string(&state).unwrap();
    assert!(!kept.contains(&token), "the token itself is never written");
    let again = TestServer::start(&toml).await;
    eventually("the revocation is loaded", || async {
        status_of(&again, &token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    (kept, token)
}

#[tokio::test]
async fn application_events_reach_subscribers_on_every_replica_in_order_and_resume() {
    use keygate_cluster::{Delivery, Event, Subscription};

    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let mut live = Subscription::new(Arc::clone(b.node.bus()), None).await;
    let publish = |key: String| {
        let a = &a;
        async move {
            let body = json!({ "namespace": "users", "key": key }).to_string();
            let (code, reply) = a
                .admin("POST", "/admin/v1/events", Some(APP_SECRET), Some(&body))
                .await;
            assert_eq!(code, StatusCode::OK, "{reply}");
            reply["id"].as_str().unwrap().to_owned()
        }
    };
    let key_of = |d: Delivery| match d {
        Delivery::Event { cursor, envelope } => match &envelope.event {
            Event::App { key, .. } => (key.clone(), cursor.to_string()),
            other => panic!("not an app event: {other:?}"),
        },
        other => panic!("not an event: {other:?}"),
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(i.to_string()).await);
    }
    for (i, want) in ids.iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .unwrap()
            .unwrap();
        let (key, id) = key_of(next);
        assert_eq!((key, &id), (i.to_string(), want));
    }
    // A subscriber resuming after the second event gets exactly the three after it.
    let after = ids[1].parse().unwrap();
    let mut resumed = Subscription::new(Arc::clone(b.node.bus()), Some(after)).await;
    for i in 2..5 {
        let (key, _) = key_of(resumed.next().await.unwrap());
        assert_eq!(key, i.to_string());
    }
    // One whose position was trimmed away is told to resync.
    redis.command(&["XTRIM", &format!("{{{p}}}:log"), "MAXLEN", "0"]);
    let mut stale =
        Subscription::new(Arc::clone(b.node.bus()), Some(ids[0].parse().unwrap())).await;
    assert!(matches!(stale.next().await, Some(Delivery::Resync { .. })));
}
