//! Invalidation propagation over loopback Redis: a revocation posted to replica A's admin API,
//! until replicas B and C have applied it (their bus delivered it after applying, which is
//! when their `/verify` starts refusing the token).
//!
//! `cargo bench -p keygate-server --bench propagation` runs 1,000 events and prints the
//! median, p90, p99 and max of (a) the admin call alone and (b) admin call to the last of B
//! and C applying it; `-- --events N` changes the count. Without `--bench` (as
//! `cargo test --all-targets` runs it) it runs 20 events as a smoke test. It starts its own
//! `redis-server` on a free port and stops it at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_server::apikey::hash_secret_with_iterations;
use keygate_server::bus::{Delivery, Event};
use keygate_server::config::Config;
use keygate_server::serve::{Server, Shared};
use keygate_test_support::{RedisServer, StubIdp, TestKey, TokenBuilder, jwks, typical_claims};
use tokio::sync::{broadcast, oneshot};

const SECRET: &str = "kg_bench_admin_secret";

struct Replica {
    admin: String,
    verify: String,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

async fn replica(idp: &StubIdp, redis: &str, hash: &str) -> Replica {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [[providers]]\ntenant = \"acme\"\nname = \"main\"\nissuer = \"{iss}\"\njwks_uri = \"{jwks}\"\n\
         audiences = [\"bench\"]\nallow_insecure_http = true\n\
         [[admin.keys]]\nid = \"ops\"\nhash = \"{hash}\"\nscopes = [\"tokens:revoke\"]\n\
         [cluster]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nprefix = \"bench\"\n\
         [[cluster.keys]]\nid = \"k1\"\nsecret = \"a cluster secret of at least thirty-two bytes\"\n",
        iss = idp.issuer(),
        jwks = idp.jwks_url(),
    );
    let config = Config::parse(&toml, &|_| None).expect("valid config");
    let server = Server::bind(config).await.expect("bind");
    let admin = format!("http://{}", server.admin_addr().unwrap());
    let verify = format!("http://{}", server.verify_addr().unwrap());
    let shared = Arc::clone(server.shared());
    let (stop, rx) = oneshot::channel();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Replica {
        admin,
        verify,
        shared,
        _stop: stop,
    }
}

/// Waits until `rx` delivers the revocation of `jti`.
async fn applied(rx: &mut broadcast::Receiver<Delivery>, jti: &str) {
    loop {
        match rx.recv().await {
            Ok(Delivery::Event { envelope, .. }) => {
                if let Event::Revoke(keygate::Revocation::Jti { jti: j, .. }) = &envelope.event
                    && j == jti
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("bus delivery failed: {e}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<28} n={:<5} median={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let events = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if bench { 1000 } else { 20 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(events));
}

async fn run(events: usize) {
    let redis = RedisServer::start();
    let key = TestKey::p256("bench-k1");
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[&key]));
    let hash = hash_secret_with_iterations(SECRET.as_bytes(), 10_000)
        .unwrap()
        .to_string();
    let a = replica(&idp, &redis.url(), &hash).await;
    let b = replica(&idp, &redis.url(), &hash).await;
    let c = replica(&idp, &redis.url(), &hash).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Wait until every replica is synced with the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    for r in [&a, &b, &c] {
        while r.shared.bus.status().state != keygate_server::bus::BusState::Ok {
            assert!(Instant::now() < deadline, "replicas never synced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();

    let mut call = Vec::with_capacity(events);
    let mut propagation = Vec::with_capacity(events);
    for i in 0..events {
        let jti = format!("bench-{i}");
        let mut rb = b.shared.bus.subscribe();
        let mut rc = c.shared.bus.subscribe();
        let body = serde_json::json!({ "jti": jti, "exp": now + 3600 }).to_string();
        let started = Instant::now();
        let resp = client
            .post(format!("{}/admin/v1/revocations", a.admin))
            .bearer_auth(SECRET)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "revocation refused");
        call.push(started.elapsed());
        tokio::join!(applied(&mut rb, &jti), applied(&mut rc, &jti));
        propagation.push(started.elapsed());
    }

    // Enforcement, checked over HTTP for the last event: B and C refuse the token.
    let mut claims = typical_claims(&idp.issuer(), "bench", now);
    claims.insert("jti".into(), format!("bench-{}", events - 1).into());
    let token = TokenBuilder::new(&key).claims(claims).sign();
    for r in [&b, &c] {
        let resp = client
            .get(format!("{}/verify", r.verify))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "revocation not enforced");
    }

    println!("invalidation propagation over loopback Redis, 3 replicas in one process");
    report("admin call on A", call);
    report("A call -> applied on B and C", propagation);
}
