//! Faults around the sidecar: an identity provider down at start, and Redis slowed, killed,
//! wiped or cut off from one replica while verifications and admin calls go on; a replica
//! killed with SIGKILL in the middle of admin calls.
//!
//! The invariants checked every time: a valid token is never refused while its key is cached,
//! the hot path never waits for Redis, an admin call answers 200 only for an entry that is in
//! Redis (and 503 otherwise), and once Redis is back every revocation that got a 200 is
//! enforced by every replica, with nothing applied that was not published. Figures quoted by
//! the reliability report are printed on lines starting with `FIGURE` (`--nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use keygate_cluster::BusState;
use keygate_test_support::redis::command_at;
use keygate_test_support::{RedisServer, StubIdp, StubResponse, TcpProxy, TestKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::{
    bus, cluster_toml, count, eventually, redis_and_idp, replica, replica_via_proxy, replicas,
    status_of,
};
use crate::serve_cli::Process;
use crate::support::{
    ADMIN_SECRET, TestServer, client, config_for, get_bearer, idp_with, now, token_for,
};

fn key() -> &'static TestKey {
    TestKey::shared_p256("faults-k1")
}

fn fresh_jti() -> String {
    format!("faults-{:016x}", fastrand::u64(..))
}

/// A valid token carrying `jti`.
fn token_with_jti(idp: &StubIdp, jti: &str) -> String {
    token_for(idp, key(), |c| {
        c.insert("jti".into(), json!(jti));
    })
}

/// One revocation by `jti` and what its caller saw: the status, or `None` when the request
/// itself failed (connection refused or closed).
#[derive(Debug, Clone)]
struct Revoked {
    jti: String,
    replica: usize,
    status: Option<u16>,
    error: Option<String>,
}

/// Sends `POST /admin/v1/revocations` for a fresh `jti`.
async fn revoke_at(client: &reqwest::Client, admin: &str, replica: usize) -> Revoked {
    let jti = fresh_jti();
    let body = json!({ "jti": jti, "exp": now() + 3600 }).to_string();
    let sent = client
        .post(format!("{admin}/admin/v1/revocations"))
        .bearer_auth(ADMIN_SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            (Some(status), body["error"].as_str().map(str::to_owned))
        }
        Err(_) => (None, None),
    };
    Revoked {
        jti,
        replica,
        status,
        error,
    }
}

/// Background load while a fault is injected: verifications of never-revoked tokens and
/// revocations of fresh `jti`s, round robin over the replicas, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Each verification: the replica, the answer's status and how long it took.
    verifier: tokio::task::JoinHandle<Vec<(usize, StatusCode, Duration)>>,
    revoker: tokio::task::JoinHandle<Vec<Revoked>>,
}

#[derive(Debug, Default)]
struct Traffic {
    requests: u64,
    refused: Vec<(usize, u16)>,
    latencies: Vec<Duration>,
}

impl Traffic {
    /// Asserts that no verification was refused and none took 500 ms or more.
    fn assert_all_accepted_within_500ms(&self) {
        assert!(self.refused.is_empty(), "refused: {:?}", self.refused);
        assert!(
            self.max() < Duration::from_millis(500),
            "slowest verification {:?}",
            self.max()
        );
    }

    fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(sorted.len() * 99 / 100)
            .copied()
            .unwrap_or_default()
    }
}

impl Load {
    fn start(replicas: &[&TestServer], tokens: Vec<String>, revoke_every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let verify_urls: Vec<String> = replicas
            .iter()
            .map(|r| format!("{}/verify", r.verify))
            .collect();
        let admin_urls: Vec<String> = replicas.iter().map(|r| r.admin.clone()).collect();
        let verifier = until_stopped(&stop, {
            let client = client();
            move |i| {
                let replica = i % verify_urls.len();
                let (client, url) = (client.clone(), verify_urls[replica].clone());
                let token = tokens[i % tokens.len()].clone();
                async move {
                    let started = Instant::now();
                    let resp = get_bearer(&client, &url, &token).await;
                    (replica, resp.status(), started.elapsed())
                }
            }
        });
        let revoker = until_stopped(&stop, {
            let client = client();
            move |i| {
                let replica = i % admin_urls.len();
                let (client, url) = (client.clone(), admin_urls[replica].clone());
                async move {
                    let done = revoke_at(&client, &url, replica).await;
                    tokio::time::sleep(revoke_every).await;
                    done
                }
            }
        });
        Load {
            stop,
            verifier,
            revoker,
        }
    }

    async fn finish(self) -> (Traffic, Vec<Revoked>) {
        self.stop.store(true, Ordering::Release);
        let mut traffic = Traffic::default();
        for (replica, status, latency) in self.verifier.await.unwrap() {
            traffic.latencies.push(latency);
            traffic.requests += 1;
            if status != StatusCode::OK {
                traffic.refused.push((replica, status.as_u16()));
            }
        }
        (traffic, self.revoker.await.unwrap())
    }
}

/// Runs `round` with its number (from 0), one round after the other on a task of its own,
/// until `stop` is set; the task returns every round's result.
fn until_stopped<T, F>(
    stop: &Arc<AtomicBool>,
    mut round: impl FnMut(usize) -> F + Send + 'static,
) -> tokio::task::JoinHandle<Vec<T>>
where
    F: Future<Output = T> + Send,
    T: Send + 'static,
{
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut done = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Acquire) {
            done.push(round(i).await);
            i += 1;
        }
        done
    })
}

/// Checks every revocation outcome: a call answered 200 or 503 `bus_unavailable` and
/// nothing else; once the bus is back everywhere, each 200 is enforced by every replica, and
/// each 503 at least by the replica that took it. Returns (200s, 503s).
async fn check_revocations(
    idp: &StubIdp,
    replicas: &[&TestServer],
    outcomes: &[Revoked],
) -> (usize, usize) {
    for r in replicas {
        eventually("the bus is delivering again", || async {
            bus(r).state == BusState::Ok
        })
        .await;
    }
    let (mut ok, mut unavailable) = (0, 0);
    for o in outcomes {
        let token = token_with_jti(idp, &o.jti);
        match (o.status, o.error.as_deref()) {
            (Some(200), _) => {
                ok += 1;
                for (i, r) in replicas.iter().enumerate() {
                    eventually(&format!("replica {i} enforces {}", o.jti), || async {
                        status_of(r, &token).await == StatusCode::UNAUTHORIZED
                    })
                    .await;
                }
            }
            (Some(503), Some("bus_unavailable")) => {
                unavailable += 1;
                assert_eq!(
                    status_of(replicas[o.replica], &token).await,
                    StatusCode::UNAUTHORIZED,
                    "a 503 revocation is still applied where it was made"
                );
            }
            other => panic!("revocation answered {other:?}: {o:?}"),
        }
    }
    (ok, unavailable)
}

/// No replica dropped a forged entry (there were none) or applied one: every never-revoked
/// token still verifies everywhere.
async fn nothing_forged(replicas: &[&TestServer], tokens: &[String]) {
    for r in replicas {
        let s = bus(r);
        assert_eq!(
            s.rejected.iter().map(|(_, n)| n).sum::<u64>(),
            0,
            "{:?}",
            s.rejected
        );
        for t in tokens {
            assert_eq!(status_of(r, t).await, StatusCode::OK);
        }
    }
}

fn log_text(redis: &RedisServer, prefix: &str) -> String {
    redis.command(&["XRANGE", &format!("{{{prefix}}}:log"), "-", "+"])
}

fn revocation_set_text(redis: &RedisServer, prefix: &str) -> String {
    redis.command(&[
        "ZRANGEBYSCORE",
        &format!("{{{prefix}}}:revocations"),
        "-inf",
        "+inf",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_down_at_start_gives_503_and_not_ready_then_recovers_without_traffic() {
    let idp = idp_with(&[key()]).await;
    idp.set_response("/jwks", StubResponse::status(503));
    let down = Instant::now();
    let server = TestServer::start(&config_for(&idp, "")).await;
    // The warm-up's refresh: three attempts.
    eventually("the warm-up gave up", || async {
        server.admin("GET", "/readyz", None, None).await.1["not_ready"][0]["last_error"]
            == "http_status"
    })
    .await;
    let token = token_for(&idp, key(), |_| {});
    let resp = server.verify("", Some(&token), &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-auth-reason"], "keys_unavailable");
    let (code, ready) = server.admin("GET", "/readyz", None, None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["not_ready"][0]["state"], "empty");

    // A burst of 50 verifications while the IdP is down: all 503, none waits for a retry
    // cycle of its own, and the IdP sees retry cycles, not one fetch per request.
    let before = idp.requests("/jwks");
    for _ in 0..50 {
        let resp = server.verify("", Some(&token), &[]).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let burst = idp.requests("/jwks") - before;
    assert!(burst <= 3, "{burst} IdP requests for a burst of 50");

    // The IdP stays down for 30 s. With no usable keys the replica retries every 2 to 4 s
    // (1 to 2 s after the first failure), one request per cycle.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    let outage = idp.requests("/jwks");
    let outage_secs = down.elapsed().as_secs_f64();
    // Warm-up (3), then cycles at least 1 s and then at least 2 s apart; two more for cycles
    // started by the burst's verifications at the same moment as the background's.
    assert!(
        outage as f64 <= 3.0 + 2.0 + outage_secs / 2.0 + 2.0,
        "{outage} IdP requests in {outage_secs:.1} s"
    );
    assert!(
        outage >= 8,
        "{outage} IdP requests in {outage_secs:.1} s: retries stopped?"
    );

    // The IdP comes back. Nothing calls /verify (a load balancer sends no traffic to a replica
    // that is not ready): the replica must become ready on its own.
    idp.clear_responses("/jwks");
    let back = Instant::now();
    eventually("ready without traffic", || async {
        server.admin("GET", "/readyz", None, None).await.0 == StatusCode::OK
    })
    .await;
    let recovered = back.elapsed();
    // At most one cycle (4 s) plus the request itself.
    assert!(
        recovered < Duration::from_secs(6),
        "ready {recovered:?} after the IdP came back"
    );
    assert_eq!(
        server.verify("", Some(&token), &[]).await.status(),
        StatusCode::OK
    );
    let total = idp.requests("/jwks");
    // Every one of them is in the per-request metric, by status.
    let (_, metrics) = server.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    let sample = |status: &str| {
        let series = format!(
            "keygate_jwks_requests_total{{tenant=\"acme\",provider=\"main\",status=\"{status}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.parse::<usize>().unwrap())
    };
    assert_eq!(sample("503"), outage, "{metrics}");
    assert_eq!(sample("503") + sample("200"), total, "{metrics}");
    println!(
        "FIGURE sidecar_idp_down_at_start: /verify 503 keys_unavailable, /readyz 503; a burst of \
         50 verifications cost {burst} IdP requests; {outage} IdP requests in a {outage_secs:.1} s \
         outage (1 per {:.1} s); ready {recovered:?} after the IdP came back with no traffic; \
         {total} IdP requests in all",
        outage_secs / outage as f64
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slowed_by_debug_sleep_stalls_no_verification_and_loses_no_revocation() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let [a, b, c] = replicas(&idp, &redis.url(), &p).await;
    let replicas = [&a, &b, &c];
    let tokens: Vec<String> = (0..20).map(|_| token_for(&idp, key(), |_| {})).collect();
    for r in replicas {
        for t in &tokens {
            assert_eq!(status_of(r, t).await, StatusCode::OK);
        }
    }

    let load = Load::start(&replicas, tokens.clone(), Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis stops answering for 2 s, twice (longer than the bus's 1 s command timeout).
    let addr = redis.addr();
    for _ in 0..2 {
        let slept = tokio::task::spawn_blocking(move || command_at(addr, &["DEBUG", "SLEEP", "2"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slept, "OK");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (traffic, outcomes) = load.finish().await;

    // If the hot path waited for Redis, some verification would take the 2 s of the sleep.
    traffic.assert_all_accepted_within_500ms();
    let (ok, unavailable) = check_revocations(&idp, &replicas, &outcomes).await;
    assert!(ok > 0, "{outcomes:?}");
    // Every 200 is in the log and in the shared set; a 503 may have gone out anyway (Redis ran
    // the append after the caller's timeout), never the other way round.
    let (log, set) = (log_text(&redis, &p), revocation_set_text(&redis, &p));
    let mut late = 0;
    for o in &outcomes {
        if o.status == Some(200) {
            assert!(log.contains(&o.jti) && set.contains(&o.jti), "{o:?}");
        } else if log.contains(&o.jti) {
            late += 1;
        }
    }
    nothing_forged(&replicas, &tokens).await;
    println!(
        "FIGURE redis_debug_sleep: 2 x DEBUG SLEEP 2; {} verifications, 0 refused, p99 {:?}, max \
         {:?}; {} revocations: {ok} x 200 (all enforced on 3 replicas), {unavailable} x 503 \
         bus_unavailable ({late} of them in the log anyway)",
        traffic.requests,
        traffic.p99(),
        traffic.max(),
        outcomes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_under_load_loses_no_acknowledged_revocation() {
    let (mut redis, idp, p) = redis_and_idp(&[key()]).await;
    let [a, b, c] = replicas(&idp, &redis.url(), &p).await;
    let replicas = [&a, &b, &c];
    let epoch = bus(&a).epoch;
    let tokens: Vec<String> = (0..20).map(|_| token_for(&idp, key(), |_| {})).collect();

    let load = Load::start(&replicas, tokens.clone(), Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.start_again();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (traffic, outcomes) = load.finish().await;

    traffic.assert_all_accepted_within_500ms();
    for r in replicas {
        eventually("the new epoch is applied", || async {
            let s = bus(r);
            s.state == BusState::Ok && s.epoch != epoch && count(&s.resyncs, "epoch") >= 1
        })
        .await;
    }
    let (ok, unavailable) = check_revocations(&idp, &replicas, &outcomes).await;
    assert!(unavailable > 0, "the outage was seen: {outcomes:?}");
    // The replicas gave the empty Redis back what they held: a replica that starts now loads
    // every acknowledged revocation.
    let newcomer = replica(&idp, &redis.url(), &p).await;
    for o in outcomes.iter().filter(|o| o.status == Some(200)) {
        let token = token_with_jti(&idp, &o.jti);
        assert_eq!(
            status_of(&newcomer, &token).await,
            StatusCode::UNAUTHORIZED,
            "{o:?}"
        );
    }
    nothing_forged(&[&a, &b, &c, &newcomer], &tokens).await;
    println!(
        "FIGURE redis_restart_empty: 1.5 s down, restarted empty; {} verifications, 0 refused, \
         max {:?}; {} revocations: {ok} x 200 (enforced on 3 replicas and a newcomer), \
         {unavailable} x 503 bus_unavailable",
        traffic.requests,
        traffic.max(),
        outcomes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_partitioned_from_redis_degrades_alone_and_converges_after() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let (proxy, cut) = replica_via_proxy(&idp, &redis, &p).await;
    let replicas = [&a, &b, &cut];
    let tokens: Vec<String> = (0..20).map(|_| token_for(&idp, key(), |_| {})).collect();

    let load = Load::start(&replicas, tokens.clone(), Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    eventually("the cut-off replica is degraded", || async {
        bus(&cut).state == BusState::Degraded
    })
    .await;
    // Degraded, it is still ready (it verifies with what it holds); the others are untouched.
    let (code, ready) = cut.admin("GET", "/readyz", None, None).await;
    assert_eq!((code, &ready["bus"]), (StatusCode::OK, &json!("degraded")));
    for r in [&a, &b] {
        let (code, ready) = r.admin("GET", "/readyz", None, None).await;
        assert_eq!((code, &ready["bus"]), (StatusCode::OK, &json!("ok")));
        assert_eq!(bus(r).state, BusState::Ok);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (traffic, outcomes) = load.finish().await;

    assert!(traffic.refused.is_empty(), "refused: {:?}", traffic.refused);
    // Only the cut-off replica refused admin calls.
    let unavailable_elsewhere = outcomes
        .iter()
        .filter(|o| o.replica != 2 && o.status != Some(200))
        .count();
    assert_eq!(unavailable_elsewhere, 0, "{outcomes:?}");
    let (ok, unavailable) = check_revocations(&idp, &replicas, &outcomes).await;
    assert!(unavailable > 0, "the cut was seen: {outcomes:?}");
    eventually("positions agree", || async {
        bus(&cut).last_seq == bus(&a).last_seq && bus(&b).last_seq == bus(&a).last_seq
    })
    .await;
    nothing_forged(&replicas, &tokens).await;
    println!(
        "FIGURE partition: one replica of 3 cut off for ~1.3 s: it alone degraded (ready, \
         bus degraded), {} verifications, 0 refused; {} revocations: {ok} x 200 enforced \
         everywhere after restore, {unavailable} x 503 all on the cut-off replica",
        traffic.requests,
        outcomes.len()
    );
}

/// Regression: a revocation only one replica held (the others had not read it yet, or were
/// cut off) was written back into the wiped Redis by that replica, but replicas that had
/// already resynced into the new epoch never learned it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_one_replica_held_reaches_the_others_after_redis_lost_it() {
    let (mut redis, idp, p) = redis_and_idp(&[key()]).await;
    let to_a = TcpProxy::start(redis.addr()).await;
    let to_b = TcpProxy::start(redis.addr()).await;
    let a = replica(&idp, &format!("redis://{}/", to_a.addr()), &p).await;
    let b = replica(&idp, &format!("redis://{}/", to_b.addr()), &p).await;
    let epoch = bus(&a).epoch;
    let token = token_for(&idp, key(), |_| {});

    // b is cut off when a takes a revocation: only a holds it.
    to_b.cut();
    eventually("b degraded", || async {
        bus(&b).state == BusState::Degraded
    })
    .await;
    let jti = {
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap();
        let claims: Value = serde_json::from_slice(&bytes).unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    let (code, body) = a
        .post_json_as_ops(
            "/admin/v1/revocations",
            &json!({ "jti": jti, "exp": now() + 3600 }),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // Then a is cut off too, and Redis restarts empty.
    to_a.cut();
    eventually("a degraded", || async {
        bus(&a).state == BusState::Degraded
    })
    .await;
    redis.start_again();
    // b comes back first and resyncs into the new epoch, knowing nothing of the revocation.
    to_b.restore();
    eventually("b in the new epoch", || async {
        let s = bus(&b);
        s.state == BusState::Ok && s.epoch != epoch
    })
    .await;
    assert_eq!(status_of(&b, &token).await, StatusCode::OK);
    // a comes back, resyncs and gives Redis its revocations back; b must learn them too.
    to_a.restore();
    eventually("a in the new epoch", || async {
        let s = bus(&a);
        s.state == BusState::Ok && s.epoch != epoch
    })
    .await;
    eventually("b enforces the revocation only a held", || async {
        status_of(&b, &token).await == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(status_of(&a, &token).await, StatusCode::UNAUTHORIZED);
    let newcomer = replica(&idp, &redis.url(), &p).await;
    assert_eq!(status_of(&newcomer, &token).await, StatusCode::UNAUTHORIZED);
}

/// Starts `keygate serve` (killed with SIGKILL when dropped) and waits until it listens;
/// returns it with its admin URL.
fn start_replica(config: &str) -> (Process, String) {
    let process = Process::start(config);
    let line = Process::wait_for(&process.stderr, "listening", &mut Vec::new());
    let admin = format!("http://{}", Process::field(&line, "admin"));
    (process, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_admin_call_never_acknowledged_a_revocation_redis_lacks() {
    const ROUNDS: usize = 20;
    const CALLERS: usize = 4;
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let config = format!(
        "{}{}",
        config_for(&idp, ""),
        cluster_toml(&redis.url(), &p, "")
    );
    let client = client();
    let (mut acknowledged, mut failed) = (Vec::new(), 0usize);
    for round in 0..ROUNDS {
        let (mut process, admin) = start_replica(&config);
        // Callers revoke one fresh jti after another until the process is gone.
        let stop = Arc::new(AtomicBool::new(false));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (client, admin, stop) = (client.clone(), admin.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let outcome = revoke_at(&client, &admin, 0).await;
                        let gone = outcome.status.is_none();
                        done.push(outcome);
                        if gone {
                            break;
                        }
                    }
                    done
                })
            })
            .collect();
        // Kill at a different point each round: before the first answer, or among many.
        let delay = Duration::from_millis(fastrand::u64(0..=300) + 20 * (round as u64 % 3));
        tokio::time::sleep(delay).await;
        process.kill();
        stop.store(true, Ordering::Release);
        let mut outcomes = Vec::new();
        for c in callers {
            outcomes.extend(c.await.unwrap());
        }
        let (log, set) = (log_text(&redis, &p), revocation_set_text(&redis, &p));
        for o in outcomes {
            match o.status {
                Some(200) => {
                    assert!(log.contains(&o.jti), "acknowledged, not in the log: {o:?}");
                    assert!(set.contains(&o.jti), "acknowledged, not in the set: {o:?}");
                    acknowledged.push(o.jti);
                }
                None | Some(503) => failed += 1,
                Some(other) => panic!("revocation answered {other}: {o:?}"),
            }
        }
    }
    assert!(!acknowledged.is_empty() && failed > 0, "{failed}");
    // A replica that starts now enforces every acknowledged revocation.
    let fresh = replica(&idp, &redis.url(), &p).await;
    for jti in &acknowledged {
        let token = token_with_jti(&idp, jti);
        assert_eq!(status_of(&fresh, &token).await, StatusCode::UNAUTHORIZED);
    }
    println!(
        "FIGURE sigkill: {ROUNDS} keygate processes killed with SIGKILL during {CALLERS} \
         concurrent revocation loops; {} x 200 (every one in the log and the shared set, and \
         enforced by a replica started afterwards), {failed} x connection error or 503",
        acknowledged.len()
    );
}
