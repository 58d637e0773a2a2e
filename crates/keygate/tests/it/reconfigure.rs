//! `Verifier::reconfigure`: unchanged providers keep their keys and verified tokens, added
//! ones verify once warmed up, removed ones refuse (cached tokens included), changed ones
//! refetch, and a refused configuration changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keygate::{HttpFetcher, ProviderConfig, ProviderId, Verifier};
use keygate_test_support::{ManualClock, StubIdp, TestKey, jwks};

const T0: u64 = 1_800_000_000;
const AUD: &str = "api";

async fn idp(kid: &str) -> StubIdp {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256(kid)]));
    idp
}

fn provider(name: &str, idp: &StubIdp, aud: &str) -> ProviderConfig {
    ProviderConfig::builder("acme", name, idp.issuer())
        .jwks_uri(idp.jwks_url())
        .audiences([aud])
        .build()
        .unwrap()
}

fn verifier(clock: &Arc<ManualClock>, providers: Vec<ProviderConfig>) -> Verifier {
    let mut b = Verifier::builder()
        .clock(clock.clone())
        .fetcher(crate::cache::fetcher())
        .token_cache(100);
    for p in providers {
        b = b.provider(p);
    }
    b.build().unwrap()
}

fn token(kid: &str, idp: &StubIdp, clock: &ManualClock) -> String {
    crate::support::token(
        TestKey::shared_p256(kid),
        &idp.issuer(),
        AUD,
        clock.now_unix(),
    )
}

/// A verifier of provider `acme/a` trusting `idp`, which has verified (and cached) one token
/// signed by `ka`; and that token.
async fn verified_once(idp: &StubIdp) -> (Verifier, String) {
    let clock = Arc::new(ManualClock::at_unix(T0));
    let v = verifier(&clock, vec![provider("a", idp, AUD)]);
    let ta = token("ka", idp, &clock);
    assert_eq!(crate::support::outcome(&v, &ta).await, "valid");
    (v, ta)
}

fn ids(names: &[&str]) -> Vec<ProviderId> {
    names.iter().map(|n| ProviderId::new("acme", n)).collect()
}

#[tokio::test]
async fn unchanged_stays_added_verifies_removed_refuses() {
    let (a, b, c) = (idp("ka").await, idp("kb").await, idp("kc").await);
    let clock = Arc::new(ManualClock::at_unix(T0));
    let v = verifier(&clock, vec![provider("a", &a, AUD), provider("b", &b, AUD)]);
    let (ta, tb) = (token("ka", &a, &clock), token("kb", &b, &clock));
    assert_eq!(crate::support::outcome(&v, &ta).await, "valid");
    assert_eq!(crate::support::outcome(&v, &tb).await, "valid");
    assert_eq!(v.cached_tokens(), 2);
    let fetched_a = a.requests("/jwks");

    // `a` unchanged (moved to another index), `b` removed, `c` added.
    let report = v
        .reconfigure([provider("c", &c, AUD), provider("a", &a, AUD)])
        .unwrap();
    assert_eq!(report.unchanged, ids(&["a"]));
    assert_eq!(report.added, ids(&["c"]));
    assert_eq!(report.removed, ids(&["b"]));
    assert!(report.changed.is_empty());
    assert_eq!(v.providers().collect::<Vec<_>>(), ids(&["c", "a"]));
    // `b`'s verified token went with it; `a`'s stayed.
    assert_eq!(v.cached_tokens(), 1);

    assert_eq!(crate::support::outcome(&v, &ta).await, "valid");
    assert_eq!(a.requests("/jwks"), fetched_a, "no refetch for `a`");
    assert_eq!(
        v.status()[1].counters.token_cache_hits,
        1,
        "`a`'s token answered from the cache"
    );
    assert_eq!(crate::support::outcome(&v, &tb).await, "bad_issuer");

    assert_eq!(c.requests("/jwks"), 0);
    v.warm_up().await;
    assert_eq!(c.requests("/jwks"), 1);
    let tc = token("kc", &c, &clock);
    assert_eq!(crate::support::outcome(&v, &tc).await, "valid");
}

#[tokio::test]
async fn changed_provider_refetches_and_drops_its_tokens() {
    let a = idp("ka").await;
    let (v, ta) = verified_once(&a).await;
    assert_eq!(a.requests("/jwks"), 1);

    let report = v.reconfigure([provider("a", &a, "other")]).unwrap();
    assert_eq!(report.changed, ids(&["a"]));
    assert_eq!(v.cached_tokens(), 0);
    assert_eq!(crate::support::outcome(&v, &ta).await, "bad_audience");
    assert_eq!(
        a.requests("/jwks"),
        2,
        "the rebuilt provider fetched afresh"
    );
}

#[tokio::test]
async fn a_fetcher_rebuilt_alike_is_unchanged_one_built_otherwise_is_not() {
    let a = idp("ka").await;
    let clock = Arc::new(ManualClock::at_unix(T0));
    let with = |f: HttpFetcher| {
        ProviderConfig::builder("acme", "a", a.issuer())
            .jwks_uri(a.jwks_url())
            .audiences([AUD])
            .fetcher(Arc::new(f))
            .build()
            .unwrap()
    };
    let loopback = || HttpFetcher::builder().danger_allow_http_loopback(true);
    let v = verifier(&clock, vec![with(loopback().build().unwrap())]);
    let report = v.reconfigure([with(loopback().build().unwrap())]).unwrap();
    assert_eq!(report.unchanged, ids(&["a"]));
    let other = loopback().max_body_bytes(1000).build().unwrap();
    let report = v.reconfigure([with(other)]).unwrap();
    assert_eq!(report.changed, ids(&["a"]));
}

#[tokio::test]
async fn a_refused_configuration_changes_nothing() {
    let a = idp("ka").await;
    let (v, ta) = verified_once(&a).await;

    let empty = v.reconfigure(Vec::new()).unwrap_err();
    assert_eq!(empty.field, "providers");
    let twice = v
        .reconfigure([provider("b", &a, AUD), provider("b", &a, AUD)])
        .unwrap_err();
    assert_eq!(twice.field, "providers");
    assert!(
        twice.problem.contains("duplicate provider acme/b"),
        "{twice}"
    );
    let bad_static = ProviderConfig::builder("acme", "s", "https://s.example")
        .static_jwks(b"not json".to_vec())
        .audiences([AUD])
        .build()
        .unwrap();
    let broken = v.reconfigure([bad_static]).unwrap_err();
    assert_eq!(broken.field, "static_jwks");

    assert_eq!(v.providers().collect::<Vec<_>>(), ids(&["a"]));
    assert_eq!(v.cached_tokens(), 1);
    assert_eq!(crate::support::outcome(&v, &ta).await, "valid");
    assert_eq!(a.requests("/jwks"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_during_reconfigurations_see_one_set_of_providers() {
    let (a, b) = (idp("ka").await, idp("kb").await);
    let clock = Arc::new(ManualClock::at_unix(T0));
    let v = verifier(&clock, vec![provider("a", &a, AUD), provider("b", &b, AUD)]);
    let (ta, tb) = (token("ka", &a, &clock), token("kb", &b, &clock));
    v.warm_up().await;
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let verifying = {
        let (v, stop, rounds) = (v.clone(), Arc::clone(&stop), Arc::clone(&rounds));
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                // `a` is always configured: always valid, from the cache or not.
                assert_eq!(crate::support::outcome(&v, &ta).await, "valid");
                seen.insert(crate::support::outcome(&v, &tb).await);
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };
    // `b` comes and goes, at another index each time, while `a` stays.
    for round in 0..200 {
        let configs = if round % 2 == 0 {
            vec![provider("a", &a, AUD)]
        } else {
            vec![provider("b", &b, AUD), provider("a", &a, AUD)]
        };
        let before = rounds.load(Ordering::Relaxed);
        v.reconfigure(configs).unwrap();
        // Verifications run between any two reconfigurations.
        while rounds.load(Ordering::Relaxed) == before {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = verifying.await.unwrap();
    // `b`'s token is valid (configured) or refused as from an unknown issuer, nothing else.
    assert!(
        seen.iter().all(|o| ["valid", "bad_issuer"].contains(o)),
        "{seen:?}"
    );
    assert!(seen.contains("bad_issuer"), "{seen:?}");
    assert_eq!(a.requests("/jwks"), 1, "`a` was never refetched");
}
