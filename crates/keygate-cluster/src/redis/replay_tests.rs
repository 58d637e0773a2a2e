//! [`RedisReplayGuard`] against a real, isolated `redis-server`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keygate::dpop::ReplayGuard;
use keygate_test_support::redis_ha::{RedisNode, Sentinel};

use super::{RedisBus, RedisReplayGuard, RedisSettings, SentinelSettings};
use crate::wire::{MacKey, MacKeys};

fn settings(url: &str, prefix: &str) -> RedisSettings {
    let keys = MacKeys::new(vec![MacKey::new("k1", &[7; 32])]).expect("one key");
    let mut s = RedisSettings::new(url.to_owned(), prefix.to_owned(), keys);
    s.timeout = Duration::from_millis(500);
    s
}

fn key(n: u8) -> [u8; 32] {
    let mut k = [0xa5; 32];
    k[0] = n;
    k
}

async fn first(guard: &RedisReplayGuard, k: [u8; 32], ttl: Duration) -> bool {
    guard
        .first_use(k, SystemTime::UNIX_EPOCH, ttl)
        .await
        .expect("redis answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_new_once_then_replayed_until_it_expires() {
    let redis = RedisNode::start();
    let guard = RedisReplayGuard::new(&settings(&redis.url(), "kg-replay")).unwrap();
    let ttl = Duration::from_secs(60);
    assert!(first(&guard, key(1), ttl).await, "first use");
    assert!(!first(&guard, key(1), ttl).await, "second use is a replay");
    assert!(first(&guard, key(2), ttl).await, "another proof is new");

    // The key is under the prefix's hash tag, as hex, and expires.
    let name = format!("{{kg-replay}}:dpop:02{}", "a5".repeat(31));
    let pttl = redis.command(&["PTTL", &name]);
    let pttl: i64 = pttl
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap_or_else(|_| panic!("PTTL answered {pttl}"));
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");

    // A short window ends: the same key is new again (real time; Redis keeps it).
    let short = Duration::from_millis(200);
    assert!(first(&guard, key(3), short).await);
    assert!(!first(&guard, key(3), short).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(first(&guard, key(3), short).await, "expired, so new again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_one_proof_accept_it_once() {
    let redis = RedisNode::start();
    let s = settings(&redis.url(), "kg-race");
    let a = Arc::new(RedisReplayGuard::new(&s).unwrap());
    let b = Arc::new(RedisReplayGuard::new(&s).unwrap());
    for n in 0..50u8 {
        let k = key(n);
        let (ra, rb) = tokio::join!(
            {
                let a = Arc::clone(&a);
                tokio::spawn(async move { first(&a, k, Duration::from_secs(30)).await })
            },
            {
                let b = Arc::clone(&b);
                tokio::spawn(async move { first(&b, k, Duration::from_secs(30)).await })
            }
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra ^ rb,
            "proof {n}: exactly one replica accepts it ({ra}, {rb})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_an_error_at_once_and_redis_back_works_again() {
    let mut redis = RedisNode::start();
    let guard = RedisReplayGuard::new(&settings(&redis.url(), "kg-down")).unwrap();
    let ttl = Duration::from_secs(60);
    assert!(first(&guard, key(1), ttl).await);
    assert_eq!(
        guard.remembers_since(),
        Some(SystemTime::UNIX_EPOCH),
        "the first guard on a new Redis: its dataset began at that (test clock's) second"
    );

    redis.stop();
    let began = tokio::time::Instant::now();
    let err = guard
        .first_use(key(2), SystemTime::UNIX_EPOCH, ttl)
        .await
        .expect_err("no store, no answer");
    // Bounded by the configured timeout (500 ms) plus scheduling slack: never a hang.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "took {:?}",
        began.elapsed()
    );
    assert!(err.0.starts_with("redis replay store: "), "{err}");
    let hex_of_key = "a5".repeat(31);
    assert!(!err.0.contains(&hex_of_key), "{err}");
    // Still down on the next call: an error again, not a stale connection's hang.
    assert!(
        guard
            .first_use(key(2), SystemTime::UNIX_EPOCH, ttl)
            .await
            .is_err()
    );

    // Back, with no data: the guard reconnects on the next call, and from then on vouches
    // only for proofs issued since that moment (the verifier's clock, here 1,000 s).
    redis.start_again();
    let reconnected_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let mut answer = None;
    for _ in 0..20 {
        match guard.first_use(key(2), reconnected_at, ttl).await {
            Ok(first) => {
                answer = Some(first);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answer, Some(true), "works again once redis is back");
    assert!(!first(&guard, key(2), ttl).await);
    assert_eq!(guard.remembers_since(), Some(reconnected_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_from_the_bus_shares_the_bus_prefix() {
    let redis = RedisNode::start();
    let bus = RedisBus::new(settings(&redis.url(), "kg-bus"), "node-a".into()).unwrap();
    let from_bus = bus.replay_guard().unwrap();
    let standalone = RedisReplayGuard::new(&settings(&redis.url(), "kg-bus")).unwrap();
    let other_prefix = RedisReplayGuard::new(&settings(&redis.url(), "kg-other")).unwrap();
    let ttl = Duration::from_secs(60);
    assert!(first(&from_bus, key(9), ttl).await);
    assert!(
        !first(&standalone, key(9), ttl).await,
        "same fleet: a replay"
    );
    assert!(
        first(&other_prefix, key(9), ttl).await,
        "another fleet: new"
    );
    let shown = format!("{from_bus:?}");
    assert!(shown.contains("kg-bus"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readonly_replica_is_an_error_and_not_a_first_use() {
    let primary = RedisNode::start();
    let replica = RedisNode::replica_of(primary.port());
    let guard = RedisReplayGuard::new(&settings(&replica.url(), "kg-ro")).unwrap();
    let err = guard
        .first_use(key(1), SystemTime::UNIX_EPOCH, Duration::from_secs(5))
        .await
        .expect_err("a replica refuses writes");
    assert!(err.0.contains("no longer the primary"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_the_guard_writes_to_the_new_primary() {
    let master = "kg-replay-master";
    let mut old = RedisNode::start();
    let new = RedisNode::replica_of(old.port());
    let sentinel = Sentinel::start(master, old.port());
    tokio::task::block_in_place(|| sentinel.wait_for_replicas(master, 1));
    let mut s = settings("redis://127.0.0.1:1/", "kg-sentinel");
    s.sentinel = Some(SentinelSettings::new(
        vec![sentinel.url()],
        master.to_owned(),
    ));
    let guard = RedisReplayGuard::new(&s).unwrap();
    let ttl = Duration::from_secs(60);
    assert!(first(&guard, key(1), ttl).await);
    // Replicated before the failover, so the new primary knows this proof too.
    assert_eq!(old.command(&["WAIT", "1", "5000"]), "(integer) 1");

    tokio::task::block_in_place(|| {
        sentinel.request_failover(master, Duration::from_secs(20));
        let promoted = sentinel.wait_for_failover(master, old.port(), Duration::from_secs(30));
        assert_eq!(promoted, new.port());
    });
    // Wait until the old primary has been turned into a replica: until then it still takes
    // writes, as any client of a demoted-but-unaware node would see.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while old.role() != "slave" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old primary never demoted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The guard's connection is to the demoted node: READONLY, then a new connection to the
    // primary the Sentinel names now.
    let mut answer = None;
    for _ in 0..100 {
        match guard.first_use(key(2), SystemTime::UNIX_EPOCH, ttl).await {
            Ok(first) => {
                answer = Some(first);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(answer, Some(true), "the guard found the new primary");
    assert!(
        !first(&guard, key(1), ttl).await,
        "the old proof is still a replay"
    );
    let name = format!("{{kg-sentinel}}:dpop:02{}", "a5".repeat(31));
    assert_eq!(
        new.command(&["EXISTS", &name]),
        "(integer) 1",
        "written on the new primary"
    );
    old.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_connecting_for_the_first_time_learns_when_the_dataset_began() {
    let mut redis = RedisNode::start();
    let s = settings(&redis.url(), "kg-began");
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let first_replica = RedisReplayGuard::new(&s).unwrap();
    first_replica.connect(at(1_000_400)).await;
    assert_eq!(
        first_replica.remembers_since(),
        Some(at(1_000_000)),
        "the first guard on a new Redis starts its dataset, at the whole second"
    );
    // A replica started later learns the same moment, not its own start.
    let later = RedisReplayGuard::new(&s).unwrap();
    later.connect(at(1_050_000)).await;
    assert_eq!(later.remembers_since(), Some(at(1_000_000)));

    // Redis comes back empty. A replica that never knew the old dataset still refuses the
    // proofs issued before the new one began.
    redis.stop();
    redis.start_again();
    let newcomer = RedisReplayGuard::new(&s).unwrap();
    for _ in 0..50 {
        newcomer.connect(at(1_100_700)).await;
        if newcomer.remembers_since().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(newcomer.remembers_since(), Some(at(1_100_000)));
}
