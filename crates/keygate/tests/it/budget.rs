//! The forced-refetch budget under a flood of unknown `kid`s: bounded IdP requests, and a real
//! rotation that still lands within one refill. Tokio time is paused and moved with the
//! manual clock, so the background refresher's deferred refetch runs when the test says.

use std::time::Duration;

use keygate::CacheSettings;
use keygate_test_support::TestKey;

use crate::memidp::{Rig, settle};

fn k1() -> &'static TestKey {
    TestKey::shared_p256("k1")
}

fn k2() -> &'static TestKey {
    TestKey::shared_ed25519("k2")
}

/// Warms a rig with the default budget (burst 2, a token back every 15 s), then floods it
/// with `n` tokens naming random `kid`s.
async fn flooded(n: usize) -> Rig {
    let rig = Rig::new(&[k1()], CacheSettings::default(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    flood(&rig, "a", n).await;
    rig
}

async fn flood(rig: &Rig, round: &str, n: usize) {
    for i in 0..n {
        let token = rig.token_naming(&format!("random-{round}-{i}"));
        assert_eq!(rig.reason(&token).await, "unknown_kid");
    }
}

#[tokio::test(start_paused = true)]
async fn a_random_kid_flood_stays_within_budget_and_a_rotation_lands_within_one_refill() {
    let rig = flooded(1000).await;
    // The first fetch, then the burst of two.
    assert_eq!(rig.idp.requests(), 3);
    assert_eq!(rig.status().counters.unknown_kid_rejections, 1000);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");

    // The IdP rotates while the flood goes on. The new kid is refused while the bucket is
    // empty (no request waits for budget)...
    rig.idp.serve(&[k1(), k2()]);
    let new = rig.token(k2());
    assert_eq!(rig.reason(&new).await, "unknown_kid");
    assert_eq!(rig.idp.requests(), 3);
    for second in 1..=15 {
        rig.advance(1).await;
        flood(&rig, &second.to_string(), 50).await;
    }
    // ... and verifies one refill after the flood began, for one more IdP request: the
    // budget allows burst + elapsed / refill = 2 + 15 / 15.
    assert_eq!(rig.reason(&new).await, "valid");
    assert_eq!(rig.idp.requests(), 4);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
}

#[tokio::test(start_paused = true)]
async fn the_deferred_refetch_lands_a_rotation_with_no_request_at_the_refill_moment() {
    let rig = flooded(1000).await;
    rig.idp.serve(&[k1(), k2()]);
    let new = rig.token(k2());
    assert_eq!(rig.reason(&new).await, "unknown_kid");
    // Nobody asks at the moment the token comes back: the background refresher spends it.
    rig.advance(14).await;
    assert_eq!(rig.idp.requests(), 3);
    rig.advance(1).await;
    assert_eq!(rig.idp.requests(), 4);
    assert_eq!(rig.reason(&new).await, "valid");
    assert_eq!(rig.idp.requests(), 4);
    // One deferred refetch per empty bucket, not one per refused token: nothing is due now.
    rig.advance(60).await;
    assert_eq!(rig.idp.requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_kid_that_joined_a_refetch_begun_before_it_is_verified_on_a_refetch_of_its_own() {
    let rig = Rig::new(&[k1()], CacheSettings::default(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    // A refresh is under way, the IdP's answer (the old set) already on its way back...
    rig.idp.hold();
    let early = {
        let verifier = rig.verifier.clone();
        tokio::spawn(async move { verifier.refresh(&Rig::id()).await })
    };
    settle().await;
    assert_eq!(rig.idp.requests(), 2);
    // ... when the IdP rotates and a token with the new kid joins that refresh.
    rig.idp.serve(&[k1(), k2()]);
    let joiner = {
        let (verifier, token) = (rig.verifier.clone(), rig.token(k2()));
        tokio::spawn(async move { verifier.verify(&token).await.map(drop) })
    };
    settle().await;
    assert_eq!(rig.idp.requests(), 2);
    rig.idp.release();
    early.await.unwrap().unwrap();
    // The old answer proves nothing about a kid asked for after it began: one more refetch.
    joiner.await.unwrap().unwrap();
    assert_eq!(rig.idp.requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_kid_never_refetched_and_missed_is_not_refused_as_negatively_cached() {
    let mut cache = CacheSettings::default();
    cache.negative_ttl = Duration::from_secs(60);
    let rig = Rig::new(&[k1()], cache, None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    flood(&rig, "a", 2).await;
    assert_eq!(rig.idp.requests(), 3, "budget spent");

    rig.idp.hold();
    let early = {
        let verifier = rig.verifier.clone();
        tokio::spawn(async move { verifier.refresh(&Rig::id()).await })
    };
    settle().await;
    rig.idp.serve(&[k1(), k2()]);
    let new = rig.token(k2());
    let joiner = {
        let (verifier, token) = (rig.verifier.clone(), new.clone());
        tokio::spawn(async move { verifier.verify(&token).await.map_err(|e| e.reason()) })
    };
    settle().await;
    rig.idp.release();
    early.await.unwrap().unwrap();
    // The joined refresh predates the request and the bucket is empty: refused for now...
    assert_eq!(joiner.await.unwrap().unwrap_err(), "unknown_kid");
    // ... but not remembered as missing: once a token is back, the kid forces a refetch.
    // (Only the manual clock moves, so this is a request's refetch, not the deferred one.)
    rig.clock.advance(Duration::from_secs(15));
    assert_eq!(rig.reason(&new).await, "valid");
    assert_eq!(rig.idp.requests(), 5);
    // Random kids, by contrast, were proven missing by refetches begun after they were asked.
    let again = rig.token_naming("random-a-0");
    assert_eq!(rig.reason(&again).await, "unknown_kid");
    assert_eq!(rig.idp.requests(), 5);
}
