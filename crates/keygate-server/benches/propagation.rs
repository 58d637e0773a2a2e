//! Invalidation propagation over loopback Redis, at several cluster sizes: a revocation posted
//! to replica A's admin API, until every other replica has applied it (its bus delivered it
//! after applying, which is when its `/verify` starts refusing the token).
//!
//! `cargo bench -p keygate-server --bench propagation` runs 1,000 events at each of 3, 10 and
//! 50 replicas and prints, per size: the admin call alone and admin call to the last replica
//! applying it (median, p90, p99, max), the Redis CPU seconds used during the events (from
//! `INFO cpu`), Redis `used_memory` empty / with the replicas synced / after the events, the
//! Redis connections each replica holds (`INFO clients`), and this process's CPU time (where
//! all the replicas run). `-- --events N` and `-- --replicas 3,10,50` change the counts.
//! Without `--bench` (as `cargo test --all-targets` runs it) it runs 10 events at 3 and 5
//! replicas as a smoke test.
//!
//! Every replica is a full `Server` in this process, with its own Redis connections, listeners
//! and verifier, on one tokio runtime. Each size gets a fresh private `redis-server` on a free
//! port, stopped when the size is done. Every wait is bounded: a replica that does not apply
//! an event within [`EVENT_TIMEOUT`] fails the run.

use std::sync::Arc;
use std::time::Duration;

use keygate::Clock as _;
use tokio::time::Instant;

use futures_util::future::join_all;
use keygate_cluster::{BusState, Delivery, Event};
use keygate_server::apikey::hash_secret_with_iterations;
use keygate_server::config::Config;
use keygate_server::node::Node;
use keygate_server::serve::Server;
use keygate_test_support::{RedisServer, StubIdp, TestKey, TokenBuilder, jwks, typical_claims};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

const SECRET: &str = "kg_bench_admin_secret";
/// Longest one event may take to reach every replica before the run fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a replica may take to sync with the log at start, per replica started.
const SYNC_TIMEOUT_PER_REPLICA: Duration = Duration::from_secs(2);
/// Longest the replicas of one size may take to shut down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

struct Replica {
    admin: String,
    verify: String,
    node: Arc<Node>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
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
    let node = Arc::clone(server.node());
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = rx.await;
            })
            .await
            .expect("replica served until told to stop");
    });
    Replica {
        admin,
        verify,
        node,
        stop,
        task,
    }
}

/// Waits until `rx` delivers the revocation of `jti`.
async fn applied(mut rx: broadcast::Receiver<Delivery>, jti: &str) {
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, p90, p99 and max of `samples`, which this sorts.
struct Summary {
    n: usize,
    median: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &mut [Duration]) -> Summary {
        samples.sort();
        Summary {
            n: samples.len(),
            median: percentile(samples, 0.5),
            p90: percentile(samples, 0.9),
            p99: percentile(samples, 0.99),
            max: *samples.last().expect("at least one event"),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "  {name:<30} n={:<5} median={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms",
            self.n,
            ms(self.median),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
        );
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
fn info_field(redis: &RedisServer, section: &str, field: &str) -> String {
    let reply = redis.command(&["INFO", section]);
    reply
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}: {reply}"))
        .trim()
        .to_owned()
}

fn redis_cpu_seconds(redis: &RedisServer) -> f64 {
    let f = |name| info_field(redis, "cpu", name).parse::<f64>().unwrap();
    f("used_cpu_sys") + f("used_cpu_user")
}

fn redis_memory(redis: &RedisServer) -> u64 {
    info_field(redis, "memory", "used_memory").parse().unwrap()
}

fn redis_clients(redis: &RedisServer) -> u64 {
    info_field(redis, "clients", "connected_clients")
        .parse()
        .unwrap()
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`;
/// `None` where that file does not exist. Assumes the kernel's usual 100 ticks per second
/// (`getconf CLK_TCK`), since reading it would need libc.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, utime field 14 and stime field 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// What one cluster size measured.
struct SizeResult {
    replicas: usize,
    call: Summary,
    propagation: Summary,
    wall: Duration,
    redis_cpu: f64,
    process_cpu: Option<f64>,
    memory_empty: u64,
    memory_before: u64,
    memory_after: u64,
    clients_per_replica: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let events = flag("--events")
        .map(|n| n.parse().expect("--events takes a number"))
        .unwrap_or(if bench { 1000 } else { 10 });
    let sizes: Vec<usize> = flag("--replicas")
        .map(|list| {
            list.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("--replicas takes numbers like 3,10,50")
                })
                .collect()
        })
        .unwrap_or_else(|| if bench { vec![3, 10, 50] } else { vec![3, 5] });
    assert!(events > 0, "--events must be at least 1");
    assert!(
        sizes.iter().all(|&n| n >= 2),
        "every cluster size needs at least 2 replicas"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        for &replicas in &sizes {
            results.push(run(replicas, events).await);
        }
        results
    });
    if results.len() > 1 {
        summary(&results);
    }
}

async fn run(replicas: usize, events: usize) -> SizeResult {
    let redis = RedisServer::start();
    let key = TestKey::p256("bench-k1");
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[&key]));
    let hash = hash_secret_with_iterations(SECRET.as_bytes(), 10_000)
        .unwrap()
        .to_string();

    let clients_empty = redis_clients(&redis);
    let memory_empty = redis_memory(&redis);
    let mut cluster = Vec::with_capacity(replicas);
    for _ in 0..replicas {
        cluster.push(replica(&idp, &redis.url(), &hash).await);
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Wait until every replica is synced with the log.
    let deadline = Instant::now() + SYNC_TIMEOUT_PER_REPLICA * u32::try_from(replicas).unwrap();
    for r in &cluster {
        while r.node.bus().status().state != BusState::Ok {
            assert!(Instant::now() < deadline, "replicas never synced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let now = keygate::clock::unix_seconds(keygate::SystemClock.now());
    let (a, others) = cluster.split_first().expect("at least two replicas");

    let memory_before = redis_memory(&redis);
    let cpu_before = redis_cpu_seconds(&redis);
    let process_before = process_cpu_seconds();
    let run_started = Instant::now();
    let mut call = Vec::with_capacity(events);
    let mut propagation = Vec::with_capacity(events);
    for i in 0..events {
        let jti = format!("bench-{i}");
        // Subscribe before the call, so no replica can apply it before it is watched.
        let receivers: Vec<_> = others.iter().map(|r| r.node.bus().subscribe()).collect();
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
        // Every other replica must apply every event: one that does not fails the run here.
        let all = join_all(receivers.into_iter().map(|rx| applied(rx, &jti)));
        tokio::time::timeout(EVENT_TIMEOUT, all)
            .await
            .unwrap_or_else(|_| panic!("event {i} did not reach all {replicas} replicas"));
        propagation.push(started.elapsed());
    }
    let wall = run_started.elapsed();
    let process_cpu = process_cpu_seconds()
        .zip(process_before)
        .map(|(after, before)| after - before);
    let redis_cpu = redis_cpu_seconds(&redis) - cpu_before;
    let memory_after = redis_memory(&redis);
    // Our own INFO connection is in both counts, so it cancels out.
    let clients_per_replica =
        redis_clients(&redis).saturating_sub(clients_empty) as f64 / replicas as f64;

    // Enforcement, checked over HTTP for the last event: every other replica refuses the
    // token.
    let mut claims = typical_claims(&idp.issuer(), "bench", now);
    claims.insert("jti".into(), format!("bench-{}", events - 1).into());
    let token = TokenBuilder::new(&key).claims(claims).sign();
    for r in others {
        let resp = client
            .get(format!("{}/verify", r.verify))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "revocation not enforced");
    }

    // Stop every replica before its Redis goes, so none of them logs a lost connection.
    drop(client);
    let mut tasks = Vec::with_capacity(replicas);
    for r in cluster {
        let _ = r.stop.send(());
        tasks.push(r.task);
    }
    tokio::time::timeout(SHUTDOWN_TIMEOUT, join_all(tasks))
        .await
        .expect("replicas shut down in time")
        .into_iter()
        .for_each(|t| t.expect("replica task did not panic"));
    drop(redis);

    let result = SizeResult {
        replicas,
        call: Summary::of(&mut call),
        propagation: Summary::of(&mut propagation),
        wall,
        redis_cpu,
        process_cpu,
        memory_empty,
        memory_before,
        memory_after,
        clients_per_replica,
    };
    print(&result, events);
    result
}

fn print(r: &SizeResult, events: usize) {
    let per_event = |s: f64| s / events as f64 * 1e6;
    let followers = (r.replicas - 1) as f64;
    let kib = |b: u64| b as f64 / 1024.0;
    println!(
        "{} replicas in one process on loopback Redis, {events} events in {:.1} s",
        r.replicas,
        r.wall.as_secs_f64()
    );
    r.call.print("admin call on A");
    r.propagation.print("A call -> applied on all");
    println!(
        "  redis CPU {:.3} s: {:.1} us per event, {:.2} us per event per other replica",
        r.redis_cpu,
        per_event(r.redis_cpu),
        per_event(r.redis_cpu) / followers,
    );
    if let Some(cpu) = r.process_cpu {
        println!(
            "  replicas' process CPU {cpu:.2} s: {:.1} us per event, {:.1} us per event per other replica",
            per_event(cpu),
            per_event(cpu) / followers,
        );
    }
    println!(
        "  redis used_memory: empty {:.0} KiB, replicas synced {:.0} KiB, after events {:.0} KiB",
        kib(r.memory_empty),
        kib(r.memory_before),
        kib(r.memory_after),
    );
    println!(
        "  redis connections per replica: {:.2}",
        r.clients_per_replica
    );
}

fn summary(results: &[SizeResult]) {
    let first = &results[0];
    println!();
    println!(
        "replicas  prop median  prop p99   p99 / p99 at {}  redis CPU/event  conn/replica",
        first.replicas
    );
    for r in results {
        println!(
            "{:>8}  {:>8.3} ms  {:>6.3} ms  {:>18.1}x  {:>12.1} us  {:>12.2}",
            r.replicas,
            ms(r.propagation.median),
            ms(r.propagation.p99),
            r.propagation.p99.as_secs_f64() / first.propagation.p99.as_secs_f64(),
            r.redis_cpu / r.call.n as f64 * 1e6,
            r.clients_per_replica,
        );
    }
}
