//! What the fleet-wide DPoP replay check costs: one `RedisReplayGuard::first_use` (a
//! `SET key 1 NX PX ttl` round trip to the bus's primary), against a `redis-server` this
//! bench starts on a free loopback port, next to the in-memory store a single node uses.
//!
//! `cargo bench -p keygate-cluster --bench replay`; BENCHMARKS.md records the figures.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::dpop::{MemoryReplayGuard, ReplayGuard};
use keygate_cluster::redis::{RedisReplayGuard, RedisSettings};
use keygate_cluster::wire::{MacKey, MacKeys};
use keygate_test_support::RedisServer;

fn key(n: u64) -> [u8; 32] {
    let mut k = [0_u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k
}

fn replay(c: &mut Criterion) {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = MacKeys::new(vec![MacKey::new("k1", &[7; 32])]).unwrap();
    let settings = RedisSettings::new(redis.url(), "kg-bench".to_owned(), keys);
    let guard = RedisReplayGuard::new(&settings).unwrap();
    let memory = MemoryReplayGuard::default();
    let ttl = Duration::from_secs(120);
    let mut n = 0_u64;
    let mut group = c.benchmark_group("replay");
    group.bench_function("redis_first_use", |b| {
        b.iter(|| {
            n += 1;
            let fresh = runtime
                .block_on(guard.first_use(key(n), SystemTime::UNIX_EPOCH, ttl))
                .unwrap();
            assert!(black_box(fresh));
        });
    });
    let mut m = 0_u64;
    group.bench_function("memory_first_use", |b| {
        b.iter(|| {
            m += 1;
            // The memory store keeps entries for their ttl: a huge run would fill it, so the
            // clock moves on with the count and old entries expire.
            let now = SystemTime::UNIX_EPOCH + Duration::from_millis(m);
            let fresh = runtime
                .block_on(memory.first_use(key(m), now, Duration::from_millis(100)))
                .unwrap();
            assert!(black_box(fresh));
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = keygate_test_support::bench::criterion();
    targets = replay
}
criterion_main!(benches);
