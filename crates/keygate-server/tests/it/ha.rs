//! Replicas on highly available Redis: TLS (with mutual authentication), a Sentinel failover
//! under load, and durable acknowledgements (`min_replicas_ack`). Every Redis and Sentinel is
//! a real process the test starts on free loopback ports and kills with SIGKILL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use keygate_test_support::{RedisNode, Sentinel, StubIdp, TestKey};
use reqwest::StatusCode;
use serde_json::Value;

use crate::cluster::{
    SECRET, bus, cluster_toml, eventually, prefix, replica_from, replica_with, revoke, revoke_jti,
    status_of,
};
use crate::support::{idp_with, token_for};

fn key() -> &'static TestKey {
    TestKey::shared_p256("ha-k1")
}

/// A primary, a standby replicating it and a Sentinel watching them as `kg`; a stub IdP, and
/// the `[cluster]` section of replicas that find the primary through the Sentinel.
struct SentinelSetup {
    primary: RedisNode,
    standby: RedisNode,
    sentinel: Sentinel,
    idp: StubIdp,
    prefix: String,
    section: String,
}

impl SentinelSetup {
    async fn start() -> SentinelSetup {
        let primary = RedisNode::start();
        let standby = RedisNode::replica_of(primary.port());
        let sentinel = Sentinel::start("kg", primary.port());
        sentinel.wait_for_replicas("kg", 1);
        let idp = idp_with(&[key()]).await;
        let prefix = prefix();
        let section = sentinel_toml(&[sentinel.url()], "kg", &prefix, "");
        SentinelSetup {
            primary,
            standby,
            sentinel,
            idp,
            prefix,
            section,
        }
    }
}

/// The `[cluster]` section of a replica finding the primary through `sentinels`.
fn sentinel_toml(sentinels: &[String], master: &str, prefix: &str, extra: &str) -> String {
    let list = sentinels
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "\n[cluster]\nbackend = \"redis\"\nsentinels = [{list}]\nsentinel_master = \"{master}\"\n\
         prefix = \"{prefix}\"\nfetch_lease = \"3s\"\ntimeout = \"1s\"\n{extra}\n\
         [[cluster.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n"
    )
}

#[tokio::test]
async fn replicas_share_revocations_over_mutual_tls() {
    let redis = RedisNode::start_tls(true);
    let idp = idp_with(&[key()]).await;
    let p = prefix();
    let tls = format!(
        "tls_ca_file = \"{}\"\ntls_client_cert = \"{}\"\ntls_client_key = \"{}\"\n",
        redis.ca_file().display(),
        redis.client_cert_file().display(),
        redis.client_key_file().display()
    );
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let a = replica_with(&idp, &url, &p, &tls).await;
    let b = replica_with(&idp, &url, &p, &tls).await;
    let token = token_for(&idp, key(), |_| {});
    assert_eq!(status_of(&b, &token).await, StatusCode::OK);
    let (code, body) = revoke(&a, revoke_jti(&token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    eventually("the other replica enforces the revocation", || async {
        status_of(&b, &token).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // Status names the node and the initial load, in the API, the struct and the metrics.
    let node = format!("127.0.0.1:{}", redis.port());
    let s = bus(&a);
    assert_eq!(s.primary.as_deref(), Some(node.as_str()));
    assert_eq!(s.last_resync.map(|(_, why)| why), Some("start"));
    let (code, status) = a.get_as_ops("/admin/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status["bus"]["primary"], Value::String(node.clone()));
    assert_eq!(status["bus"]["last_resync"]["reason"], "start");
    let (_, metrics) = a.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!("keygate_bus_primary_info{{node=\"{node}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_bus_last_resync_timestamp_seconds{reason=\"start\"}"),
        "{metrics}"
    );

    // Without the client certificate the server refuses the handshake: never delivering.
    let no_client_cert = format!("tls_ca_file = \"{}\"\n", redis.ca_file().display());
    let toml = format!(
        "{}{}",
        crate::support::config_for(&idp, ""),
        cluster_toml(&url, &p, &no_client_cert)
    );
    let refused = crate::support::TestServer::start(&toml).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(bus(&refused).state, keygate_cluster::BusState::Ok);
    // It still verifies with what it has.
    assert_eq!(
        status_of(&refused, &token_for(&idp, key(), |_| {})).await,
        StatusCode::OK
    );
}

/// What the background tasks of the failover test saw.
#[derive(Default)]
struct Seen {
    /// Tokens whose revocation was acknowledged with 2xx, and when.
    acked: Vec<(String, Instant)>,
    /// Answers to verifying the valid token other than 200.
    refused: Vec<StatusCode>,
    /// Revocation answers other than 2xx and 503.
    odd: Vec<(StatusCode, Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_follow_a_sentinel_failover_and_lose_no_acknowledged_revocation() {
    let started = Instant::now();
    let SentinelSetup {
        mut primary,
        standby,
        sentinel,
        idp,
        section,
        ..
    } = SentinelSetup::start().await;
    let replicas = Arc::new([
        replica_from(&idp, &section).await,
        replica_from(&idp, &section).await,
        replica_from(&idp, &section).await,
    ]);
    let old = format!("127.0.0.1:{}", primary.port());
    for r in replicas.iter() {
        assert_eq!(bus(r).primary.as_deref(), Some(old.as_str()));
    }
    let valid = token_for(&idp, key(), |_| {});
    let doomed: Vec<String> = (0..400).map(|_| token_for(&idp, key(), |_| {})).collect();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let done = Arc::new(AtomicBool::new(false));
    let verifier = tokio::spawn({
        let (replicas, seen, done, valid) = (
            Arc::clone(&replicas),
            Arc::clone(&seen),
            Arc::clone(&done),
            valid.clone(),
        );
        async move {
            while !done.load(Ordering::Relaxed) {
                for r in replicas.iter() {
                    let code = status_of(r, &valid).await;
                    if code != StatusCode::OK {
                        seen.lock().unwrap().refused.push(code);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let revoker = tokio::spawn({
        let (replicas, seen, done) = (Arc::clone(&replicas), Arc::clone(&seen), Arc::clone(&done));
        async move {
            let mut next = 0;
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) && next < doomed.len() {
                let r = &replicas[i % replicas.len()];
                i += 1;
                let (code, body) = revoke(r, revoke_jti(&doomed[next])).await;
                if code.is_success() {
                    seen.lock()
                        .unwrap()
                        .acked
                        .push((doomed[next].clone(), Instant::now()));
                    next += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    if code != StatusCode::SERVICE_UNAVAILABLE {
                        seen.lock().unwrap().odd.push((code, body));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = seen.lock().unwrap().acked.len();
    assert!(
        before_kill > 0,
        "no revocation went through before the kill"
    );
    primary.stop();
    let new_port = tokio::task::block_in_place(|| {
        sentinel.wait_for_failover("kg", primary.port(), Duration::from_secs(20))
    });
    let promoted = Instant::now();
    assert_eq!(new_port, standby.port());
    eventually("revocations succeed again after the promotion", || async {
        seen.lock()
            .unwrap()
            .acked
            .last()
            .is_some_and(|(_, at)| *at > promoted)
    })
    .await;
    let recovered = seen.lock().unwrap().acked.last().map(|(_, at)| *at);
    let recovery = recovered.map(|at| at - promoted).unwrap_or_default();
    assert!(
        recovery < Duration::from_secs(10),
        "revocations came back {recovery:?} after the promotion"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    verifier.await.unwrap();
    revoker.await.unwrap();

    let seen = Arc::try_unwrap(seen)
        .unwrap_or_else(|_| panic!("tasks ended"))
        .into_inner()
        .unwrap();
    assert!(
        seen.refused.is_empty(),
        "the valid token was refused: {:?}",
        seen.refused
    );
    assert!(seen.odd.is_empty(), "unexpected answers: {:?}", seen.odd);
    let new = format!("127.0.0.1:{new_port}");
    for r in replicas.iter() {
        eventually(
            "every acknowledged revocation is enforced everywhere",
            || async {
                for (t, _) in &seen.acked {
                    if status_of(r, t).await != StatusCode::UNAUTHORIZED {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        eventually("the replica tails the new primary", || async {
            let s = bus(r);
            s.state == keygate_cluster::BusState::Ok && s.primary.as_deref() == Some(&*new)
        })
        .await;
        assert_eq!(status_of(r, &valid).await, StatusCode::OK);
    }

    // The old primary comes back as a replica of the new one: nothing changes for keygate.
    tokio::task::block_in_place(|| primary.start_again_as_replica_of(new_port));
    assert_eq!(primary.role(), "slave");
    let last = token_for(&idp, key(), |_| {});
    let (code, body) = revoke(&replicas[1], revoke_jti(&last)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    for r in replicas.iter() {
        eventually("the last revocation is enforced everywhere", || async {
            status_of(r, &last).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert_eq!(status_of(r, &valid).await, StatusCode::OK);
        assert_eq!(bus(r).primary.as_deref(), Some(&*new));
    }
    eprintln!(
        "failover test: {} revocations acknowledged ({before_kill} before the kill), \
         revocations back {recovery:?} after the promotion, {:?} in all",
        seen.acked.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn too_few_replica_acknowledgements_fail_admin_calls_but_not_verification() {
    let primary = RedisNode::start();
    let mut standby = RedisNode::replica_of(primary.port());
    let idp = idp_with(&[key()]).await;
    let p = prefix();
    let a = replica_with(
        &idp,
        &primary.url(),
        &p,
        "min_replicas_ack = 1\nreplica_ack_timeout = \"300ms\"\n",
    )
    .await;
    let valid = token_for(&idp, key(), |_| {});
    let revoked = token_for(&idp, key(), |_| {});
    let (code, body) = revoke(&a, revoke_jti(&revoked)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        standby.command(&["EXISTS", &format!("{{{p}}}:log")]),
        "(integer) 1"
    );

    standby.stop();
    let another = token_for(&idp, key(), |_| {});
    let (code, body) = revoke(&a, revoke_jti(&another)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "bus_unavailable", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("retry"), "{message}");
    let (code, body) = crate::trust::provider_action(&a, "flush").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "bus_unavailable", "{body}");
    // Verification goes on, and this replica applied what it was asked to.
    assert_eq!(status_of(&a, &valid).await, StatusCode::OK);
    assert_eq!(status_of(&a, &revoked).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&a, &another).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_is_never_written_to_after_a_planned_failover() {
    let SentinelSetup {
        primary,
        standby,
        sentinel,
        idp,
        prefix: p,
        section,
    } = SentinelSetup::start().await;
    let a = replica_from(&idp, &section).await;
    let b = replica_from(&idp, &section).await;
    let first = token_for(&idp, key(), |_| {});
    assert_eq!(revoke(&a, revoke_jti(&first)).await.0, StatusCode::OK);

    // Both nodes stay up: the old primary turns into a replica, answering READONLY to writes.
    tokio::task::block_in_place(|| sentinel.request_failover("kg", Duration::from_secs(20)));
    let new_port = tokio::task::block_in_place(|| {
        sentinel.wait_for_failover("kg", primary.port(), Duration::from_secs(20))
    });
    assert_eq!(new_port, standby.port());
    eventually("the old primary is a replica", || async {
        primary.role() == "slave"
    })
    .await;
    let new = format!("127.0.0.1:{new_port}");
    let second = token_for(&idp, key(), |_| {});
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = revoke(&a, revoke_jti(&second)).await;
        if code == StatusCode::OK {
            break;
        }
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "revocations did not come back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for r in [&a, &b] {
        eventually(
            "both revocations are enforced and the new primary is tailed",
            || async {
                status_of(r, &first).await == StatusCode::UNAUTHORIZED
                    && status_of(r, &second).await == StatusCode::UNAUTHORIZED
                    && bus(r).primary.as_deref() == Some(&*new)
            },
        )
        .await;
    }
    // Nothing was written to the demoted node on its own: it holds what it replicates.
    let seq = |node: &RedisNode| node.command(&["GET", &format!("{{{p}}}:seq")]);
    eventually("the old primary replicates the new one", || async {
        seq(&primary) == seq(&standby)
    })
    .await;
}
