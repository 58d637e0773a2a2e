//! Key rotation while traffic flows: the IdP publishes a new key, starts signing with it,
//! and tokens signed with the old key are still in use. No request may fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_test_support::{TestKey, jwks};
use keygate_tower::JwtAuthLayer;
use tokio::time::Instant;

use crate::server::{app, client, serve};
use crate::support::Fixture;

/// Requests each client task sends at most, whatever the timing: the loop is bounded.
const MAX_REQUESTS_PER_CLIENT: usize = 3_000;

#[derive(Default)]
struct Tally {
    ok_old_key: usize,
    ok_new_key: usize,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_keys_during_traffic_fails_no_request() {
    let f = Fixture::new().await;
    let addr = serve(app(JwtAuthLayer::new(f.verifier.clone()))).await;
    let old_key = TestKey::shared_p256("k1");
    let new_key = TestKey::p256("k2");

    // Tokens minted before the rotation stay in use after it, as they would in clients.
    let old_tokens: Vec<String> = (0..4).map(|_| f.token(old_key)).collect();
    let current: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(old_tokens.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));

    let clients: Vec<_> = (0..6)
        .map(|worker| {
            let (current, stop, tally) = (current.clone(), stop.clone(), tally.clone());
            let old_tokens = old_tokens.clone();
            tokio::spawn(async move {
                let http = client();
                for i in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Half the clients keep their old token; the others take the newest.
                    let (token, old) = if worker % 2 == 0 {
                        (old_tokens[i % old_tokens.len()].clone(), true)
                    } else {
                        let tokens = current.lock().unwrap();
                        let token = tokens[i % tokens.len()].clone();
                        let old = old_tokens.contains(&token);
                        (token, old)
                    };
                    let result = http
                        .get(format!("http://{addr}/me"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    let mut tally = tally.lock().unwrap();
                    match result {
                        Ok(r) if r.status() == http::StatusCode::OK && old => tally.ok_old_key += 1,
                        Ok(r) if r.status() == http::StatusCode::OK => tally.ok_new_key += 1,
                        Ok(r) => tally.failures.push(format!(
                            "status {} ({:?})",
                            r.status(),
                            r.headers().get("www-authenticate")
                        )),
                        Err(e) => tally.failures.push(format!("transport: {e}")),
                    }
                }
            })
        })
        .collect();

    // Traffic on the old key only.
    wait_for(&tally, |t| t.ok_old_key >= 50).await;
    let fetches_before = f.idp.requests("/jwks");

    // The IdP publishes the new key next to the old one, then signs with the new one only.
    f.idp.set_jwks(jwks(&[old_key, &new_key]));
    let new_tokens: Vec<String> = (0..4).map(|_| f.token(&new_key)).collect();
    *current.lock().unwrap() = new_tokens;

    // Traffic on both keys until plenty of new-key requests went through.
    wait_for(&tally, |t| t.ok_new_key >= 100).await;
    let old_after_rotation = tally.lock().unwrap().ok_old_key;
    wait_for(&tally, |t| t.ok_old_key >= old_after_rotation + 50).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let tally = tally.lock().unwrap();
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:?}",
        tally.failures
    );
    assert!(tally.ok_new_key >= 100 && tally.ok_old_key >= 100);
    // The unknown `kid` triggered a refetch; the cached key set served everything else.
    let fetches = f.idp.requests("/jwks");
    assert!(fetches > fetches_before, "the new key was fetched");
    assert!(
        fetches <= fetches_before + 2,
        "{fetches} fetches: refetches are bounded"
    );
}

/// Waits (at most 20 s) until `done` holds for the tally, failing the test otherwise.
async fn wait_for(tally: &Mutex<Tally>, done: impl Fn(&Tally) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let tally = tally.lock().unwrap();
            assert!(
                tally.failures.is_empty(),
                "failed requests: {:?}",
                tally.failures
            );
            if done(&tally) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "traffic did not make progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
