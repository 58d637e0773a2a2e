//! Opaque and DPoP-bound tokens through `/verify`, against a real authorization server:
//! panva's `oidc-provider` on loopback (`keygate_test_support::oidc`), its tokens and its
//! introspection, with DPoP proofs made by Node's `jose`. Replicas share a real Redis: its
//! log carries revocations and flushes, and its seen-proof set refuses a replay on every
//! replica.

use std::time::Duration;

use keygate_test_support::RedisServer;
use keygate_test_support::oidc::{
    JWT_RESOURCE, OPAQUE_RESOURCE, OidcProvider, ProofRequest, RS_CLIENT_ID, RS_CLIENT_SECRET,
    TokenRequest,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::cluster::{cluster_toml, eventually, prefix, replica_of_config, revoke};
use crate::support::{TestServer, admin_keys_toml, now};

/// The public URL of the API keygate guards, as the proxy reports it.
const API: &str = "http://shop.test/api/orders";

/// A config trusting `idp` (tenant `acme`, provider `oidc`) for opaque tokens by
/// introspection and for its JWTs, with DPoP `mode`.
fn config(idp: &OidcProvider, mode: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n\
         [[providers]]\ntenant = \"acme\"\nname = \"oidc\"\nissuer = \"{iss}\"\n\
         audiences = [\"{OPAQUE_RESOURCE}\", \"{JWT_RESOURCE}\"]\nallow_insecure_http = true\n\
         introspection_client_id = \"{RS_CLIENT_ID}\"\nintrospection_client_secret = \"{RS_CLIENT_SECRET}\"\n\
         dpop = \"{mode}\"\n{extra}\n\
         [providers.claims_to_headers]\nclient_id = \"X-Auth-Client\"\nscope = \"X-Auth-Scope\"\n{keys}",
        iss = idp.issuer(),
        keys = admin_keys_toml(),
    )
}

/// `GET /verify` as a proxy forwards a request for `API`, with `authorization` and a
/// `DPoP` header when given.
async fn forward(
    server: &TestServer,
    method: &str,
    authorization: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let mut req = server
        .client
        .get(format!("{}/verify", server.verify))
        .header("authorization", authorization)
        .header("x-forwarded-method", method)
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "shop.test")
        .header("x-forwarded-uri", "/api/orders?page=2");
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    req.send().await.unwrap()
}

fn reason(resp: &reqwest::Response) -> String {
    resp.headers()["x-auth-reason"].to_str().unwrap().to_owned()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn two_replicas(
    idp: &OidcProvider,
    mode: &str,
    extra: &str,
) -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let p = prefix();
    let toml = format!(
        "{}{}",
        config(idp, mode, extra),
        cluster_toml(&redis.url(), &p, "")
    );
    let a = replica_of_config(&toml).await;
    let b = replica_of_config(&toml).await;
    (redis, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tokens_are_introspected_and_invalidated_on_every_replica() {
    let mut idp = OidcProvider::start().await;
    let (_redis, a, b) = two_replicas(&idp, "off", "").await;
    let bearer = |t: &str| format!("Bearer {t}");

    // Valid: 200 on both, identity headers from the introspection answer.
    let token = idp.token(TokenRequest::opaque("read write")).await;
    for r in [&a, &b] {
        let resp = forward(r, "GET", &bearer(&token.access_token), None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", reason(&resp));
        assert_eq!(resp.headers()["x-auth-client"], "keygate-app");
        assert_eq!(resp.headers()["x-auth-scope"], "read write");
        assert_eq!(resp.headers()["x-auth-issuer"], idp.issuer().as_str());
    }

    // Revoked at the IdP: cached answers serve until a flush on one replica, which reaches
    // the other through the log.
    idp.revoke(&token.access_token).await;
    assert_eq!(
        forward(&b, "GET", &bearer(&token.access_token), None)
            .await
            .status(),
        StatusCode::OK
    );
    let (code, body) = a.post_as_ops("/admin/v1/providers/acme/oidc/flush").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    eventually(
        "both replicas ask again and refuse the revoked token",
        || async {
            let mut refused = true;
            for r in [&a, &b] {
                let resp = forward(r, "GET", &bearer(&token.access_token), None).await;
                refused &= resp.status() == StatusCode::UNAUTHORIZED && reason(&resp) == "inactive";
            }
            refused
        },
    )
    .await;

    // Revoked here by its digest, on one replica: refused on both without asking the IdP.
    let other = idp.token(TokenRequest::opaque("read")).await;
    for r in [&a, &b] {
        assert_eq!(
            forward(r, "GET", &bearer(&other.access_token), None)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let asked = idp.introspections().await;
    let (code, body) = revoke(
        &b,
        json!({"token_sha256": keygate::token_sha256(&other.access_token), "exp": now() + 3600}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    eventually(
        "both replicas refuse the token revoked by digest",
        || async {
            let mut refused = true;
            for r in [&a, &b] {
                let resp = forward(r, "GET", &bearer(&other.access_token), None).await;
                refused &= reason(&resp) == "revoked";
            }
            refused
        },
    )
    .await;
    assert_eq!(idp.introspections().await, asked);

    // The IdP's JWTs (`at+jwt`, RS256, keys from its discovery document) on the same
    // provider: revoked here by `jti` on one replica, refused on both.
    let jwt = idp.token(TokenRequest::jwt("read")).await;
    let jwt_bearer = bearer(&jwt.access_token);
    for r in [&a, &b] {
        let resp = forward(r, "GET", &jwt_bearer, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", reason(&resp));
    }
    let (code, body) = revoke(&a, crate::cluster::revoke_jti(&jwt.access_token)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    eventually("both replicas refuse the JWT revoked by jti", || async {
        let mut refused = true;
        for r in [&a, &b] {
            refused &= reason(&forward(r, "GET", &jwt_bearer, None).await) == "revoked";
        }
        refused
    })
    .await;

    // Expired: a one-second token is refused once its time is up.
    let short = idp
        .token(TokenRequest::opaque("read").ttl(Duration::from_secs(1)))
        .await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let resp = forward(&a, "GET", &bearer(&short.access_token), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(["inactive", "expired"].contains(&reason(&resp).as_str()));

    // The IdP down: a cached token still serves, an unknown one is a clean 503 with
    // Retry-After, never a 200 and never a hang.
    let cached = idp.token(TokenRequest::opaque("read")).await;
    assert_eq!(
        forward(&a, "GET", &bearer(&cached.access_token), None)
            .await
            .status(),
        StatusCode::OK
    );
    idp.kill().await;
    assert_eq!(
        forward(&a, "GET", &bearer(&cached.access_token), None)
            .await
            .status(),
        StatusCode::OK
    );
    let resp = forward(&a, "GET", "Bearer never-issued-token", None).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&resp), "introspection_unavailable");
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_random_opaque_tokens_costs_the_idp_a_bounded_number_of_calls() {
    let idp = OidcProvider::start().await;
    let server = TestServer::start(&config(
        &idp,
        "off",
        "introspection_rate_limit = 5\nintrospection_burst = 5",
    ))
    .await;
    let before = idp.introspections().await;
    let (mut busy, mut inactive) = (0, 0);
    for i in 0..200 {
        let resp = forward(&server, "GET", &format!("Bearer random-{i:05}"), None).await;
        match resp.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(reason(&resp), "introspection_busy");
                assert!(resp.headers().contains_key("retry-after"));
                busy += 1;
            }
            StatusCode::UNAUTHORIZED => {
                assert_eq!(reason(&resp), "inactive");
                inactive += 1;
            }
            other => panic!("a random token got {other}"),
        }
    }
    let asked = idp.introspections().await - before;
    assert_eq!(asked, inactive, "each call is one refused token");
    // Five at once, then five a second for however long the loop ran (a few seconds at
    // most on a loaded machine).
    assert!(asked <= 5 + 5 * 10, "the IdP was asked {asked} times");
    assert!(busy > 100, "{busy}");
    // The admin status counts the same.
    let (code, status) = server.get_as_ops("/admin/v1/status").await;
    assert_eq!(code, StatusCode::OK, "{status}");
    let counters = &status["providers"][0]["counters"];
    assert_eq!(counters["introspections"], json!(asked), "{status}");
    assert_eq!(
        counters["introspections_over_budget"],
        json!(busy),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dpop_bound_tokens_need_a_fresh_proof_and_a_replay_fails_on_every_replica() {
    let idp = OidcProvider::start().await;
    let (_redis, a, b) = two_replicas(&idp, "allowed", "").await;
    let jwt = idp.token(TokenRequest::jwt("read").dpop()).await;
    let opaque = idp.token(TokenRequest::opaque("read").dpop()).await;
    assert_eq!(jwt.token_type, "DPoP");
    let key = jwt.key_id.clone().unwrap();
    let okey = opaque.key_id.clone().unwrap();
    let proof = |key: &str, htm: &str, htu: &str, token: &str| {
        ProofRequest::new(key, htm, htu).access_token(token)
    };
    let dpop = |t: &str| format!("DPoP {t}");

    for (token, key) in [(&jwt.access_token, &key), (&opaque.access_token, &okey)] {
        // Valid on one replica...
        let p = idp.proof(proof(key, "GET", API, token)).await;
        let resp = forward(&a, "GET", &dpop(token), Some(&p)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", reason(&resp));
        // ...replayed there and on the other: refused on both.
        for r in [&a, &b] {
            let resp = forward(r, "GET", &dpop(token), Some(&p)).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(reason(&resp), "dpop_replayed");
            assert!(challenge(&resp).starts_with("DPoP error=\"invalid_dpop_proof\""));
        }
        // A fresh proof is fine on the other replica.
        let p = idp.proof(proof(key, "GET", API, token)).await;
        assert_eq!(
            forward(&b, "GET", &dpop(token), Some(&p)).await.status(),
            StatusCode::OK
        );
        // Sent as a bearer token: refused, `invalid_token`.
        let p = idp.proof(proof(key, "GET", API, token)).await;
        let resp = forward(&a, "GET", &format!("Bearer {token}"), Some(&p)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(reason(&resp), "dpop_bound_token_as_bearer");
        assert!(
            challenge(&resp).contains("error=\"invalid_token\""),
            "{}",
            challenge(&resp)
        );
        // No proof at all.
        let resp = forward(&a, "GET", &dpop(token), None).await;
        assert_eq!(reason(&resp), "dpop_proof_missing");
    }

    let token = &jwt.access_token;
    let cases: Vec<(ProofRequest, &str)> = vec![
        (proof(&key, "POST", API, token), "dpop_htm_mismatch"),
        (
            proof(&key, "GET", "http://shop.test/api/other", token),
            "dpop_htu_mismatch",
        ),
        (
            proof(&key, "GET", "https://shop.test/api/orders", token),
            "dpop_htu_mismatch",
        ),
        (
            proof(&key, "GET", API, &opaque.access_token),
            "dpop_ath_mismatch",
        ),
        (
            ProofRequest {
                other_key: true,
                ..proof(&key, "GET", API, token)
            },
            "dpop_jkt_mismatch",
        ),
        (
            proof(&key, "GET", API, token).iat_offset(-600),
            "dpop_iat_out_of_window",
        ),
        (
            proof(&key, "GET", API, token).iat_offset(600),
            "dpop_iat_out_of_window",
        ),
        (
            ProofRequest {
                alg_override: Some("none".into()),
                ..proof(&key, "GET", API, token)
            },
            "dpop_alg_not_allowed",
        ),
        (
            ProofRequest {
                alg_override: Some("HS256".into()),
                ..proof(&key, "GET", API, token)
            },
            "dpop_alg_not_allowed",
        ),
        (
            ProofRequest {
                private_jwk: true,
                ..proof(&key, "GET", API, token)
            },
            "dpop_bad_jwk",
        ),
        (
            ProofRequest {
                typ: Some("jwt".into()),
                ..proof(&key, "GET", API, token)
            },
            "dpop_proof_malformed",
        ),
    ];
    for (request, expected) in cases {
        let what = format!("{request:?}");
        let p = idp.proof(request).await;
        let resp = forward(&a, "GET", &dpop(token), Some(&p)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(reason(&resp), expected, "{what}");
        let c = challenge(&resp);
        assert!(c.starts_with("DPoP error=\"invalid_dpop_proof\""), "{c}");
        assert!(c.contains("algs=\"") && c.contains("RS256"), "{c}");
    }
    // The query of the request is not part of `htu`; the proof's method is the proxy's.
    let p = idp.proof(proof(&key, "DELETE", API, token)).await;
    assert_eq!(
        forward(&a, "DELETE", &dpop(token), Some(&p)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn required_dpop_refuses_bearer_tokens_and_one_node_remembers_proofs_in_memory() {
    let idp = OidcProvider::start().await;
    let server = TestServer::start(&config(&idp, "required", "")).await;
    let plain = idp.token(TokenRequest::jwt("read")).await;
    let resp = forward(
        &server,
        "GET",
        &format!("Bearer {}", plain.access_token),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(reason(&resp), "dpop_required");
    assert!(challenge(&resp).contains("error=\"invalid_token\""));

    let bound = idp.token(TokenRequest::jwt("read").dpop()).await;
    let key = bound.key_id.clone().unwrap();
    let p = idp
        .proof(ProofRequest::new(&key, "GET", API).access_token(&bound.access_token))
        .await;
    let auth = format!("DPoP {}", bound.access_token);
    assert_eq!(
        forward(&server, "GET", &auth, Some(&p)).await.status(),
        StatusCode::OK
    );
    let resp = forward(&server, "GET", &auth, Some(&p)).await;
    assert_eq!(reason(&resp), "dpop_replayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_resync_drops_cached_introspection_answers_on_every_replica() {
    use keygate_cluster::BusState;

    let mut idp = OidcProvider::start().await;
    let mut redis = RedisServer::start();
    let p = prefix();
    let toml = format!(
        "{}{}",
        config(&idp, "off", ""),
        cluster_toml(&redis.url(), &p, "")
    );
    let a = replica_of_config(&toml).await;
    let b = replica_of_config(&toml).await;
    let token = idp.token(TokenRequest::opaque("read")).await;
    let bearer = format!("Bearer {}", token.access_token);
    for r in [&a, &b] {
        assert_eq!(
            forward(r, "GET", &bearer, None).await.status(),
            StatusCode::OK
        );
    }
    // Revoked at the IdP; nobody flushes, but the log starts over (Redis restarted empty):
    // a replica that may have missed invalidations forgets what it cached, answers included.
    idp.revoke(&token.access_token).await;
    let epoch = a.node.bus().status().epoch;
    redis.stop();
    redis.start_again();
    for r in [&a, &b] {
        eventually("the replica resynced into the new epoch", || async {
            let s = r.node.bus().status();
            s.state == BusState::Ok && s.epoch != epoch
        })
        .await;
        let resp = forward(r, "GET", &bearer, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(reason(&resp), "inactive");
    }
    idp.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proof_used_before_redis_lost_its_data_is_still_refused_on_every_replica() {
    replays_after_redis_loses_data(Loss::RestartedEmpty).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proof_used_after_the_snapshot_redis_restarts_from_is_still_refused() {
    replays_after_redis_loses_data(Loss::OlderSnapshot).await;
}

/// How Redis loses the proofs it acknowledged.
enum Loss {
    /// Stopped, started again with nothing.
    RestartedEmpty,
    /// Snapshot taken between two proofs, then restarted from it: the later proof is gone,
    /// the earlier one still there.
    OlderSnapshot,
}

/// Two proofs accepted on replica A, Redis loses data as `loss` says, then both proofs are
/// replayed on A and B: refused everywhere (after the 503s of reconnecting), and a proof
/// made afterwards passes.
async fn replays_after_redis_loses_data(loss: Loss) {
    let idp = OidcProvider::start().await;
    let mut redis = RedisServer::start();
    let toml = format!(
        "{}{}",
        config(&idp, "allowed", ""),
        cluster_toml(&redis.url(), &prefix(), "")
    );
    let a = replica_of_config(&toml).await;
    let b = replica_of_config(&toml).await;
    let jwt = idp.token(TokenRequest::jwt("read").dpop()).await;
    let key = jwt.key_id.clone().unwrap();
    let auth = format!("DPoP {}", jwt.access_token);
    let proof = || idp.proof(ProofRequest::new(&key, "GET", API).access_token(&jwt.access_token));
    let earlier = proof().await;
    assert_eq!(
        forward(&a, "GET", &auth, Some(&earlier)).await.status(),
        StatusCode::OK
    );
    if let Loss::OlderSnapshot = loss {
        redis.save_snapshot();
    }
    let later = proof().await;
    assert_eq!(
        forward(&a, "GET", &auth, Some(&later)).await.status(),
        StatusCode::OK
    );

    // Redis loses what it held (all of it, or what came after the snapshot); the proofs'
    // iat windows are not over.
    match loss {
        Loss::RestartedEmpty => {
            redis.stop();
            redis.start_again();
        }
        Loss::OlderSnapshot => redis.restart_from_snapshot(),
    }
    for r in [&a, &b] {
        for used in [&earlier, &later] {
            // While the replica reconnects it cannot ask (503); once it can, the proof is
            // refused: seen, or issued before the store's memory began again.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let last = loop {
                let resp = forward(r, "GET", &auth, Some(used)).await;
                if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
                    break reason(&resp);
                }
                assert_eq!(reason(&resp), "dpop_replay_unavailable");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(last, "dpop_replayed");
        }
    }
    // A proof made now passes.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let fresh = proof().await;
    assert_eq!(
        forward(&b, "GET", &auth, Some(&fresh)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_reads_an_opaque_tokens_scopes_and_claims_from_its_introspection() {
    let idp = OidcProvider::start().await;
    let toml = format!(
        "{}\n[policy]\ndefault = \"deny\"\n\
         [[policy.routes]]\nname = \"orders-write\"\npaths = [\"/api/orders/**\"]\nmethods = [\"POST\"]\n\
         scopes = [\"write\"]\nclaims = [{{ claim = \"client_id\", equals = \"keygate-app\" }}]\n\
         [[policy.routes]]\nname = \"orders-read\"\npaths = [\"/api/orders/**\"]\nscopes = [\"read\"]\n",
        config(&idp, "allowed", "")
    );
    let server = TestServer::start(&toml).await;
    let reader = idp.token(TokenRequest::opaque("read")).await;
    let writer = idp.token(TokenRequest::opaque("read write")).await;
    let ask = |method: &'static str, token: String| {
        let server = &server;
        async move {
            let resp = forward(server, method, &format!("Bearer {token}"), None).await;
            let route = resp.headers()["x-auth-route"].to_str().unwrap().to_owned();
            (resp.status(), reason(&resp), route, challenge(&resp))
        }
    };
    let (status, why, route, _) = ask("GET", reader.access_token.clone()).await;
    assert_eq!(
        (status, why.as_str(), route.as_str()),
        (StatusCode::OK, "ok", "orders-read")
    );
    let (status, why, route, c) = ask("POST", reader.access_token.clone()).await;
    assert_eq!(
        (status, why.as_str(), route.as_str()),
        (StatusCode::FORBIDDEN, "insufficient_scope", "orders-write")
    );
    assert!(c.contains("scope=\"write\""), "{c}");
    let (status, _, route, _) = ask("POST", writer.access_token.clone()).await;
    assert_eq!((status, route.as_str()), (StatusCode::OK, "orders-write"));

    // A DPoP-bound opaque token goes through the same route with its proof.
    let bound = idp.token(TokenRequest::opaque("read write").dpop()).await;
    let p = idp
        .proof(
            ProofRequest::new(bound.key_id.as_deref().unwrap(), "POST", API)
                .access_token(&bound.access_token),
        )
        .await;
    let resp = forward(
        &server,
        "POST",
        &format!("DPoP {}", bound.access_token),
        Some(&p),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK, "{}", reason(&resp));
    assert_eq!(resp.headers()["x-auth-route"], "orders-write");
}
