//! The sidecar end to end, in process: `Server` on port 0 against the stub IdP, driven over
//! HTTP. Every status code of `/verify` and of the admin API, identity headers, header
//! spoofing, rotation during traffic, flush/refresh/revoke with right and wrong keys and
//! scopes, metrics, health, readiness and the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use keygate::{Clock as _, SystemClock};

use crate::support::{
    ADMIN_SECRET, AUD, READER_SECRET, TestServer, config_for, field_of_each, get, get_bearer,
    get_text, header, idp_with, now, serve_idp, serve_idp_with, token_for,
};
use keygate_server::config::Config;
use keygate_server::serve::Server;
use keygate_test_support::{StubIdp, StubResponse, TestKey, jwks};
use serde_json::{Value, json};
use tokio::sync::oneshot;

fn key_a() -> &'static TestKey {
    TestKey::shared_p256("srv-a")
}

/// A server trusting an IdP that publishes key a, and a token of that key it has verified.
async fn serving_key_a() -> (StubIdp, TestServer, String) {
    let (idp, server) = serve_idp(&[key_a()]).await;
    let token = token_for(&idp, key_a(), |_| {});
    server.assert_verifies(&token).await;
    (idp, server, token)
}

fn key_b() -> &'static TestKey {
    TestKey::shared_p256("srv-b")
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_token_gets_200_with_identity_headers() {
    let (idp, server) = serve_idp_with(&[key_a()], "[providers.claims_to_headers]\nscope = \"X-Auth-Scope\"\nemail = \"X-Auth-Email\"\nroles = \"X-Auth-Roles\"").await;
    let token = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("alice"));
        c.insert("roles".into(), json!(["admin", "dev"]));
        c.remove("email");
    });
    for suffix in ["", "/", "/api/users?x=1", "/acme", "/acme/deeper/path"] {
        let resp = server.verify(suffix, Some(&token), &[]).await;
        assert_eq!(resp.status(), 200, "{suffix}");
        assert_eq!(header(&resp, "x-auth-subject"), Some("alice"));
        assert_eq!(header(&resp, "x-auth-issuer"), Some(idp.issuer().as_str()));
        assert_eq!(header(&resp, "x-auth-tenant"), Some("acme"));
        assert_eq!(header(&resp, "x-auth-provider"), Some("main"));
        assert_eq!(header(&resp, "x-auth-scope"), Some("read write"));
        assert_eq!(header(&resp, "x-auth-roles"), Some("admin,dev"));
        assert_eq!(
            header(&resp, "x-auth-email"),
            None,
            "absent claim, absent header"
        );
        assert_eq!(header(&resp, "x-auth-reason"), Some("ok"));
        assert_eq!(header(&resp, "cache-control"), Some("no-store"));
    }
    // Any method works: Envoy forwards the original one.
    for method in [
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::HEAD,
    ] {
        let resp = server
            .client
            .request(method.clone(), format!("{}/verify/x", server.verify))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_has_its_status_challenge_and_reason() {
    let (idp, server) = serve_idp(&[key_a()]).await;
    let good = token_for(&idp, key_a(), |_| {});

    // No token: 401, a bare challenge (RFC 6750 section 3.1).
    let resp = server.verify("", None, &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    assert_eq!(header(&resp, "x-auth-reason"), Some("missing_token"));
    // Another scheme counts as no bearer token.
    let resp = server
        .verify("", None, &[("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    // A malformed bearer header.
    let resp = server
        .verify("", None, &[("authorization", "Bearer a b c")])
        .await;
    assert_eq!(resp.status(), 401);
    assert!(
        header(&resp, "www-authenticate")
            .unwrap()
            .contains("error=\"invalid_request\"")
    );

    let expired = token_for(&idp, key_a(), |c| {
        c.insert("exp".into(), json!(now() - 3600));
    });
    let wrong_aud = token_for(&idp, key_a(), |c| {
        c.insert("aud".into(), json!("someone-else"));
    });
    let wrong_iss = token_for(&idp, key_a(), |c| {
        c.insert("iss".into(), json!("https://evil.example"));
    });
    // The last character of an 86-character ES256 signature carries 2 bits and 4 zero bits:
    // only A, Q, g and w are canonical, so swap within them to change the signature itself.
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'Q' } else { 'A' });
    let unknown_kid = token_for(&idp, TestKey::shared_p256("srv-nobody"), |_| {});
    for (token, reason) in [
        ("not-a-jwt", "malformed"),
        (expired.as_str(), "expired"),
        (wrong_aud.as_str(), "bad_audience"),
        (wrong_iss.as_str(), "bad_issuer"),
        (tampered.as_str(), "bad_signature"),
        (unknown_kid.as_str(), "unknown_kid"),
    ] {
        let resp = server.verify("", Some(token), &[]).await;
        assert_eq!(resp.status(), 401, "{reason}");
        assert_eq!(header(&resp, "x-auth-reason"), Some(reason));
        let challenge = header(&resp, "www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
            "{challenge}"
        );
        assert!(!challenge.contains(token), "the challenge echoes the token");
        assert!(header(&resp, "x-auth-subject").is_none());
        let body = resp.text().await.unwrap();
        assert!(!body.contains(token), "the body echoes the token");
    }
    // Revoked: after the admin revokes this token's jti.
    let jti = {
        let payload = good.split('.').nth(1).unwrap();
        let bytes = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    server.assert_verifies(&good).await;
    let (status, body) = server
        .post_json_as_ops(
            "/admin/v1/revocations",
            &json!({"jti": jti, "exp": now() + 3600}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let resp = server.verify("", Some(&good), &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "x-auth-reason"), Some("revoked"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_unavailable_gets_503() {
    let idp = StubIdp::start().await;
    idp.set_response("/jwks", StubResponse::status(500));
    let server = TestServer::start(&config_for(&idp, "")).await;
    let token = token_for(&idp, key_a(), |_| {});
    let resp = server.verify("", Some(&token), &[]).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-auth-reason"), Some("keys_unavailable"));
    assert!(header(&resp, "x-auth-subject").is_none());
    // Not ready either, and the admin status says why.
    let resp = get(&server.client, format!("{}/readyz", server.admin)).await;
    assert_eq!(resp.status(), 503);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["not_ready"][0]["provider"], "main");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_supplied_identity_headers_are_never_echoed() {
    let (idp, server) = serve_idp_with(
        &[key_a()],
        "[providers.claims_to_headers]\nemail = \"X-Auth-Email\"",
    )
    .await;
    let spoofed = [
        ("x-auth-subject", "root"),
        ("x-auth-issuer", "https://evil.example"),
        ("x-auth-tenant", "other"),
        ("x-auth-email", "root@evil.example"),
        ("x-auth-reason", "ok"),
    ];
    // Without a token: 401 and none of the spoofed values come back.
    let resp = server.verify("", None, &spoofed).await;
    assert_eq!(resp.status(), 401);
    for (name, _) in &spoofed[..4] {
        assert!(header(&resp, name).is_none(), "{name} echoed");
    }
    assert_eq!(header(&resp, "x-auth-reason"), Some("missing_token"));
    // With a token for bob: bob's identity, not the spoofed one; no email claim, no email header.
    let token = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("bob"));
        c.remove("email");
    });
    let resp = server.verify("", Some(&token), &spoofed).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-subject"), Some("bob"));
    assert_eq!(header(&resp, "x-auth-issuer"), Some(idp.issuer().as_str()));
    assert_eq!(header(&resp, "x-auth-tenant"), Some("acme"));
    assert!(header(&resp, "x-auth-email").is_none());
    // A claim value with CR LF cannot inject a header.
    let token = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("eve\r\nX-Auth-Admin: true"));
    });
    let resp = server.verify("", Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-auth-subject"),
        Some("eve%0D%0AX-Auth-Admin: true")
    );
    assert!(header(&resp, "x-auth-admin").is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_from_path_or_header_narrows_the_providers() {
    let idp = idp_with(&[key_a()]).await;
    let other = idp_with(&[key_b()]).await;
    let toml = format!(
        "{}\n[[providers]]\ntenant = \"globex\"\nname = \"main\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"{AUD}\"]\nallow_insecure_http = true\n",
        config_for(&idp, ""),
        other.issuer(),
        other.jwks_url()
    );
    let server = TestServer::start(&toml).await;
    let acme = token_for(&idp, key_a(), |_| {});
    let globex = token_for(&other, key_b(), |_| {});
    server.assert_verifies(&globex).await;
    assert_eq!(server.verify("/acme", Some(&acme), &[]).await.status(), 200);
    let resp = server.verify("/acme/anything", Some(&globex), &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "x-auth-reason"), Some("bad_issuer"));
    let resp = server.verify_in_tenant("", &globex, "acme").await;
    assert_eq!(resp.status(), 401);
    let resp = server.verify_in_tenant("", &globex, "globex").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-tenant"), Some("globex"));
    // Path and header disagree: refused.
    let resp = server.verify_in_tenant("/globex", &globex, "acme").await;
    assert_eq!(resp.status(), 401);
    // A suffix that is not a tenant does not narrow.
    assert_eq!(server.verify("/api", Some(&acme), &[]).await.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_during_traffic_fails_no_request() {
    let idp = idp_with(&[key_a()]).await;
    let server = Arc::new(TestServer::start(&config_for(&idp, "")).await);
    let old = token_for(&idp, key_a(), |_| {});
    server.assert_verifies(&old).await;
    let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let new = token_for(&idp, key_b(), |_| {});
    let mut clients = Vec::new();
    for i in 0..8 {
        let server = Arc::clone(&server);
        let rotated = Arc::clone(&rotated);
        let (old, new) = (old.clone(), new.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for n in 0..60 {
                // Half the clients switch to the new key once the IdP publishes it.
                let token = if i % 2 == 0 && rotated.load(std::sync::atomic::Ordering::SeqCst) {
                    &new
                } else {
                    &old
                };
                let resp = server.verify("", Some(token), &[]).await;
                if resp.status() != 200 {
                    failures.push((
                        i,
                        n,
                        resp.status(),
                        header(&resp, "x-auth-reason").map(str::to_owned),
                    ));
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The IdP rotates: the new key is published beside the old one.
    idp.set_jwks(jwks(&[key_a(), key_b()]));
    rotated.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    server.assert_verifies(&new).await;
    // One refetch served the rotation, not one per request.
    assert!(
        idp.requests("/jwks") <= 3,
        "{} JWKS requests",
        idp.requests("/jwks")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_auth_401_403_and_scopes() {
    let (_idp, server) = serve_idp(&[key_a()]).await;
    let flush = "/admin/v1/providers/acme/main/flush";
    // No key, unknown key: 401 with a challenge.
    for key in [None, Some("kg_wrong"), Some("")] {
        let (status, body) = server.admin("POST", flush, key, None).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    let resp = get(&server.client, format!("{}/admin/v1/status", server.admin)).await;
    assert_eq!(
        header(&resp, "www-authenticate"),
        Some("Bearer realm=\"keygate-admin\"")
    );
    // A key without the scope: 403.
    for (method, path, body) in [
        ("POST", flush, None),
        ("POST", "/admin/v1/providers/acme/main/refresh", None),
        (
            "POST",
            "/admin/v1/revocations",
            Some(r#"{"jti":"x","exp":1}"#),
        ),
    ] {
        let (status, resp) = server.admin(method, path, Some(READER_SECRET), body).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(resp["error"], "forbidden");
    }
    // ...but it may read.
    let (status, body) = server
        .admin("GET", "/admin/v1/status", Some(READER_SECRET), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .admin("GET", "/admin/v1/revocations", Some(READER_SECRET), None)
        .await;
    assert_eq!(status, 200);
    // The secret never comes back in a response.
    let (_, body) = server.get_as_ops("/admin/v1/status").await;
    assert!(!body.to_string().contains(ADMIN_SECRET));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_drops_keys_and_refresh_refetches() {
    let (idp, server, token) = serving_key_a().await;
    let fetches = idp.requests("/jwks");

    let (status, body) = server
        .post_as_ops("/admin/v1/providers/acme/main/flush")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "flush");
    assert_eq!(
        (body["tenant"].as_str(), body["provider"].as_str()),
        (Some("acme"), Some("main"))
    );
    assert!(body["seq"].as_u64().unwrap() >= 1);
    assert_eq!(server.node.verifier().cached_tokens(), 0);
    // The flush refetches at once, with no request to make it: one fetch.
    crate::cluster::eventually("the refetch after the flush", || async {
        let (_, status_body) = server.get_as_ops("/admin/v1/status").await;
        status_body["providers"][0]["state"] == "fresh"
    })
    .await;
    assert_eq!(idp.requests("/jwks"), fetches + 1);
    server.assert_verifies(&token).await;
    assert_eq!(idp.requests("/jwks"), fetches + 1);

    // Refresh refetches now, and picks up a new key.
    idp.set_jwks(jwks(&[key_a(), key_b()]));
    let (status, body) = server
        .post_as_ops("/admin/v1/providers/acme/main/refresh")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "fresh");
    let mut kids: Vec<&str> = body["kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    kids.sort_unstable();
    assert_eq!(kids, ["srv-a", "srv-b"]);
    assert_eq!(idp.requests("/jwks"), fetches + 2);

    // A failing refresh: 502 with the reason, cached keys kept.
    idp.set_response("/jwks", StubResponse::status(500));
    let (status, body) = server
        .post_as_ops("/admin/v1/providers/acme/main/refresh")
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "refresh_failed");
    assert!(body["reason"].is_string());
    server.assert_verifies(&token).await;

    // Unknown provider: 404 for both.
    for action in ["flush", "refresh"] {
        let (status, body) = server
            .post_as_ops(&format!("/admin/v1/providers/acme/nope/{action}"))
            .await;
        assert_eq!(status, 404, "{action}");
        assert_eq!(body["error"], "not_found");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_by_jti_subject_and_kid() {
    let (idp, server) = serve_idp(&[key_a(), key_b()]).await;
    let alice = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("alice"));
    });
    let bob_b = token_for(&idp, key_b(), |c| {
        c.insert("sub".into(), json!("bob"));
    });
    let carol = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("carol"));
    });
    for t in [&alice, &bob_b, &carol] {
        server.assert_verifies(t).await;
    }
    let post = |body: Value| {
        let server = &server;
        async move {
            server
                .post_json_as_ops("/admin/v1/revocations", &body)
                .await
        }
    };
    // Subject: every token of alice issued before now.
    let (status, body) = post(json!({"tenant": "acme", "sub": "alice", "before": now() + 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"]["type"], "subject");
    assert!(body["revoked"]["until"].as_i64().unwrap() > now());
    assert_eq!(server.verify("", Some(&alice), &[]).await.status(), 401);
    server.assert_verifies(&carol).await;
    // Kid: distrust key b at once although the IdP still publishes it.
    let (status, body) = post(json!({"tenant": "acme", "provider": "main", "kid": "srv-b"})).await;
    assert_eq!(status, 200, "{body}");
    let resp = server.verify("", Some(&bob_b), &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "x-auth-reason"), Some("revoked"));
    server.assert_verifies(&carol).await;
    // Listed.
    let (status, body) = server.get_as_ops("/admin/v1/revocations").await;
    assert_eq!(status, 200);
    let types = field_of_each(&body["revocations"], "type");
    assert_eq!(types.len(), 2);
    assert!(
        types.contains(&"subject") && types.contains(&"kid"),
        "{body}"
    );
    // Bad bodies: 400 naming the field; unknown tenant or provider: 404.
    for (body, field) in [
        (json!({"jti": "x"}), "exp"),
        (json!({"jti": "x", "exp": "tomorrow"}), "exp"),
        (json!({"tenant": "acme", "sub": "s"}), "before"),
        (
            json!({"tenant": "acme", "provider": "main", "kid": "k", "colour": 1}),
            "colour",
        ),
        (json!([]), "body"),
    ] {
        let (status, resp) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(resp["error"], "bad_request");
        assert_eq!(resp["field"], field, "{body}");
    }
    let resp = server
        .client
        .post(format!("{}/admin/v1/revocations", server.admin))
        .bearer_auth(ADMIN_SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = post(json!({"tenant": "nope", "sub": "s", "before": 1})).await;
    assert_eq!(status, 404);
    let (status, _) = post(json!({"tenant": "acme", "provider": "nope", "kid": "k"})).await;
    assert_eq!(status, 404);
    // Oversized body: refused, not buffered.
    let big = format!(r#"{{"jti":"{}","exp":1}}"#, "x".repeat(100_000));
    let resp = server
        .client
        .post(format!("{}/admin/v1/revocations", server.admin))
        .bearer_auth(ADMIN_SECRET)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_metrics_health_and_openapi() {
    let (idp, server, token) = serving_key_a().await;
    server.assert_verifies(&token).await;
    assert_eq!(server.verify("", None, &[]).await.status(), 401);
    let unknown = token_for(&idp, TestKey::shared_p256("srv-nobody"), |_| {});
    assert_eq!(server.verify("", Some(&unknown), &[]).await.status(), 401);

    let (status, body) = server.get_as_ops("/admin/v1/status").await;
    assert_eq!(status, 200);
    let p = &body["providers"][0];
    assert_eq!(
        (p["tenant"].as_str(), p["provider"].as_str()),
        (Some("acme"), Some("main"))
    );
    assert_eq!(p["issuer"], idp.issuer());
    assert_eq!(p["jwks_uri"], idp.jwks_url());
    assert_eq!(p["state"], "fresh");
    assert_eq!(p["kids"], json!(["srv-a"]));
    assert!(p["fetched_at"].as_i64().unwrap() <= now());
    assert!(p["expires_at"].as_i64().unwrap() > now());
    assert!(p["counters"]["unknown_kid_rejections"].as_u64().unwrap() >= 1);
    assert_eq!(body["bus"]["backend"], "local");
    assert_eq!(body["bus"]["state"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let metrics = get(&server.client, format!("{}/metrics", server.admin)).await;
    assert_eq!(metrics.status(), 200);
    assert!(
        header(&metrics, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    let sample = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        sample("keygate_verifications_total{result=\"valid\",reason=\"ok\"}"),
        2.0
    );
    assert_eq!(
        sample("keygate_verifications_total{result=\"missing\",reason=\"missing_token\"}"),
        1.0
    );
    assert_eq!(
        sample("keygate_verifications_total{result=\"invalid\",reason=\"unknown_kid\"}"),
        1.0
    );
    assert_eq!(sample("keygate_verification_duration_seconds_count"), 4.0);
    assert!(
        sample("keygate_jwks_fetches_total{tenant=\"acme\",provider=\"main\",result=\"ok\"}")
            >= 1.0
    );
    assert!(text.contains("keygate_jwks_key_age_seconds{tenant=\"acme\",provider=\"main\"}"));
    assert!(text.contains("keygate_unknown_kid_rejections_total"));
    assert!(text.contains("keygate_bus_lag_seconds"));
    assert!(text.contains("keygate_key_cache_hits_total"));

    let health = get(&server.client, format!("{}/healthz", server.admin)).await;
    assert_eq!(health.status(), 200);
    let ready = get(&server.client, format!("{}/readyz", server.admin)).await;
    assert_eq!(ready.status(), 200);

    let doc = get_text(
        &server.client,
        format!("{}/admin/v1/openapi.json", server.admin),
    )
    .await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/admin/v1/providers/{tenant}/{provider}/flush"]["post"].is_object());
    // The admin API is not on the verification listener, and vice versa.
    let resp = get(&server.client, format!("{}/admin/v1/status", server.verify)).await;
    assert_eq!(resp.status(), 404);
    let resp = get(&server.client, format!("{}/verify", server.admin)).await;
    assert_eq!(resp.status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_default_verifies_rotates_and_flushes() {
    let mut config = Config::embedded_default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.dev_issuer.as_mut().unwrap().listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let issuer = server.dev_issuer().unwrap().clone();
    let verify = format!("http://{}/verify", server.verify_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mint = |sub: &str| {
        let req = keygate_server::dev_issuer::MintRequest {
            sub: Some(sub.to_owned()),
            ..Default::default()
        };
        issuer.mint(&req, SystemClock.now()).unwrap().token
    };
    let first = mint("newcomer");
    let resp = get_bearer(&client, &verify, &first).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-subject"), Some("newcomer"));
    assert_eq!(header(&resp, "x-auth-tenant"), Some("dev"));
    let _new_kid = issuer.rotate();
    let second = mint("after-rotation");
    let resp = get_bearer(&client, &verify, &second).await;
    assert_eq!(
        resp.status(),
        200,
        "a token signed by the rotated key verifies"
    );
    let resp = get_bearer(&client, &verify, &first).await;
    assert_eq!(resp.status(), 200, "the old key stays published");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Runs the `keygate` binary with the admin key in its environment.
fn cli(args: &[&str], key: &str) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_ADMIN_KEY", key)
        .env_remove("KEYGATE_ADMIN_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_cli_against_the_real_admin_api() {
    let (idp, server) = serve_idp(&[key_a()]).await;
    let token = token_for(&idp, key_a(), |c| {
        c.insert("sub".into(), json!("mallory"));
    });
    server.assert_verifies(&token).await;
    let url = server.admin.clone();
    let run = move |args: Vec<String>, key: &'static str| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args, key)
        })
    };
    let args = |a: &[&str]| {
        let mut v: Vec<String> = a.iter().map(|s| (*s).to_owned()).collect();
        v.extend(["--admin-url".to_owned(), url.clone()]);
        v
    };

    let (code, out, err) = run(args(&["status"]), ADMIN_SECRET).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("acme") && out.contains("main") && out.contains("fresh"),
        "{out}"
    );
    assert!(!out.contains(ADMIN_SECRET) && !err.contains(ADMIN_SECRET));

    let (code, out, err) = run(args(&["status", "--json"]), ADMIN_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["providers"][0]["state"], "fresh");

    let (code, out, err) = run(args(&["flush", "acme", "main"]), ADMIN_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flushed acme/main"), "{out}");
    let after = &server.node.verifier().status()[0];
    assert!(after.flush.is_some(), "{after:?}");

    let (code, out, err) = run(args(&["refresh", "acme", "main"]), ADMIN_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("refreshed acme/main: fresh"), "{out}");

    let before = now() + 1;
    let (code, _, err) = run(
        args(&[
            "revoke",
            "--tenant",
            "acme",
            "--sub",
            "mallory",
            "--before",
            &before.to_string(),
        ]),
        ADMIN_SECRET,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.verify("", Some(&token), &[]).await.status(), 401);
    let (code, out, _) = run(args(&["revoke", "--list"]), ADMIN_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("mallory"), "{out}");

    // A key without the scope: exit 1 and the server's reason on stderr.
    let (code, _, err) = run(args(&["flush", "acme", "main"]), READER_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    // An unknown provider: exit 1, 404.
    let (code, _, err) = run(args(&["flush", "acme", "nope"]), ADMIN_SECRET)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    server.stop().await;
}
