//! A flush: keys dropped at once, refetched at once, and nothing fetched before it (a fetch in
//! flight, a peer's set, a replayed log entry) ever served after it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate::{FlushId, ProviderId, ProviderState, PublishedKeySet};
use keygate_test_support::{TestKey, jwks};
use serde_json::json;

use crate::exchange::TestExchange;
use crate::memidp::{Rig, T0, exact_cache, settle};

fn k1() -> &'static TestKey {
    TestKey::shared_p256("k1")
}

fn k2() -> &'static TestKey {
    TestKey::shared_ed25519("k2")
}

fn at(offset_secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + offset_secs)
}

#[tokio::test]
async fn a_flush_refetches_at_once_without_any_verification() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    assert_eq!(rig.idp.requests(), 1);

    rig.idp.hold();
    let flush = rig.verifier.flush(&Rig::id()).unwrap();
    settle().await;
    let during = rig.status();
    assert_eq!(during.state, ProviderState::Empty);
    assert!(during.refetching_after_flush, "{during:?}");
    assert_eq!(during.flush.as_ref(), Some(&flush));
    assert_eq!(rig.idp.requests(), 2, "the refetch starts with the flush");

    rig.idp.release();
    settle().await;
    let after = rig.status();
    assert_eq!(after.state, ProviderState::Fresh);
    assert!(!after.refetching_after_flush);
    assert_eq!(rig.idp.requests(), 2);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    assert_eq!(
        rig.idp.requests(),
        2,
        "the verification used the refetched keys"
    );
    // The refetch is over, not joined again by the next refresh.
    rig.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(rig.idp.requests(), 3);
}

#[tokio::test]
async fn a_fetch_in_flight_when_the_flush_lands_is_never_installed() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let old_token = rig.token(k1());
    assert_eq!(rig.reason(&old_token).await, "valid");

    // A refresh asks the IdP while it still publishes k1; its answer is held back.
    rig.idp.hold();
    let verifier = rig.verifier.clone();
    let early = tokio::spawn(async move { verifier.refresh(&Rig::id()).await });
    settle().await;
    assert_eq!(rig.idp.requests(), 2);
    // The IdP withdraws k1 (rotation without overlap); the operator flushes.
    rig.idp.serve(&[k2()]);
    rig.verifier.flush(&Rig::id()).unwrap();
    settle().await;
    assert_eq!(rig.idp.requests(), 3);
    rig.idp.release();
    early
        .await
        .unwrap()
        .expect("the overtaken refresh joins the refetch");
    settle().await;

    let status = rig.status();
    assert_eq!(status.kids, vec!["k2".to_owned()], "{status:?}");
    assert_eq!(rig.reason(&rig.token(k2())).await, "valid");
    assert_ne!(rig.reason(&old_token).await, "valid");
}

#[tokio::test]
async fn a_flush_with_the_idp_failing_serves_nothing_older_than_the_flush() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    let token = rig.token(k1());
    assert_eq!(rig.reason(&token).await, "valid");
    rig.idp.serve_document(json!({"keys": "not a list"}));
    rig.verifier.flush(&Rig::id()).unwrap();
    settle().await;
    let status = rig.status();
    assert_eq!(status.state, ProviderState::Empty);
    assert!(status.last_error.is_some());
    assert!(
        !status.refetching_after_flush,
        "a failed refetch is not ready"
    );
    assert_eq!(
        rig.reason(&token).await,
        "malformed_jwks",
        "never the flushed keys"
    );
}

#[tokio::test]
async fn a_replayed_flush_changes_nothing_and_a_new_one_refetches() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    let flush = FlushId::new("f-1").unwrap();
    assert!(rig.verifier.apply_flush(&Rig::id(), flush.clone()).unwrap());
    settle().await;
    assert_eq!(rig.idp.requests(), 2);
    assert!(!rig.verifier.apply_flush(&Rig::id(), flush.clone()).unwrap());
    settle().await;
    assert_eq!(rig.idp.requests(), 2, "the same flush again is a no-op");
    assert_eq!(rig.status().state, ProviderState::Fresh);
    assert_eq!(rig.verifier.flushes(), vec![(Rig::id(), flush)]);
    assert!(
        rig.verifier
            .apply_flush(&Rig::id(), FlushId::random())
            .unwrap()
    );
    settle().await;
    assert_eq!(rig.idp.requests(), 3);
    assert!(
        rig.verifier
            .apply_flush(&ProviderId::new("acme", "nope"), FlushId::random())
            .is_err()
    );
}

#[tokio::test]
async fn sets_fetched_before_a_flush_are_neither_adopted_nor_taken_from_the_exchange() {
    let exchange = Arc::new(TestExchange::default());
    let rig = Rig::new(&[k1()], exact_cache(), Some(exchange.clone()));
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    let before = rig.verifier.key_sets().remove(0).1;
    assert_eq!(before.flush, None);

    // A peer offers (and pushes) the set it fetched before the flush, with a later fetch
    // time than anything held: still refused.
    let stale = PublishedKeySet::new(jwks(&[k1()]).to_string(), at(5), at(300), None);
    exchange.offer_every_time(stale.clone());
    rig.idp.serve(&[k2()]);
    let flush = rig.verifier.flush(&Rig::id()).unwrap();
    settle().await;
    assert_eq!(exchange.asked_under().last(), Some(&Some(flush.clone())));
    assert_eq!(
        rig.idp.requests(),
        2,
        "the stale offer was refused: fetched"
    );
    assert_eq!(rig.status().kids, vec!["k2".to_owned()]);
    assert!(!rig.verifier.adopt(&Rig::id(), stale).unwrap());
    assert_eq!(rig.status().kids, vec!["k2".to_owned()]);

    // What this replica now publishes carries the flush; a set under it is adopted.
    let now = rig.verifier.key_sets().remove(0).1;
    assert_eq!(now.flush.as_ref(), Some(&flush));
    rig.clock.advance(Duration::from_secs(10));
    let peer = PublishedKeySet::new(jwks(&[k1(), k2()]).to_string(), at(10), at(300), None)
        .after_flush(Some(flush));
    assert!(rig.verifier.adopt(&Rig::id(), peer).unwrap());
    assert_eq!(rig.status().kids.len(), 2);
}

#[tokio::test]
async fn a_flushed_provider_is_served_by_a_peer_set_fetched_after_the_flush() {
    let exchange = Arc::new(TestExchange::default());
    let rig = Rig::new(&[k1()], exact_cache(), Some(exchange.clone()));
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    let flush = FlushId::new("cluster-flush-7").unwrap();
    rig.clock.advance(Duration::from_secs(1));
    exchange.offer_every_time(
        PublishedKeySet::new(jwks(&[k2()]).to_string(), at(1), at(300), None)
            .after_flush(Some(flush.clone())),
    );
    rig.verifier.apply_flush(&Rig::id(), flush).unwrap();
    settle().await;
    assert_eq!(rig.idp.requests(), 1, "the peer's post-flush set, no fetch");
    let status = rig.status();
    assert_eq!(status.kids, vec!["k2".to_owned()]);
    assert_eq!(status.counters.adopted, 1);
}

#[tokio::test]
async fn a_refresh_whose_caller_gave_up_is_not_joined_again_once_finished() {
    let rig = Rig::new(&[k1()], exact_cache(), None);
    assert_eq!(rig.reason(&rig.token(k1())).await, "valid");
    rig.idp.hold();
    // The only caller stops waiting; the fetch goes on without it.
    let gave_up =
        tokio::time::timeout(Duration::from_millis(20), rig.verifier.refresh(&Rig::id())).await;
    assert!(gave_up.is_err());
    assert_eq!(rig.idp.requests(), 2);
    rig.idp.serve(&[k2()]);
    rig.idp.release();
    settle().await;
    // A later refresh asks the IdP again rather than joining the finished one.
    rig.verifier.refresh(&Rig::id()).await.unwrap();
    assert_eq!(rig.idp.requests(), 3);
    assert_eq!(rig.status().kids, vec!["k2".to_owned()]);
}
