//! Revocation by the SHA-256 of a token's text (`{"token_sha256", "exp"}`): the admin API's
//! checks and listing, the bus carrying it to every replica, `/verify` refusing the token on
//! each, and a single node keeping it across a restart.

use keygate_test_support::TestKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cluster::{
    eventually_refused, kept_across_a_restart, redis_and_idp, replica, revoke, status_of,
};
use crate::support::{TestServer, config_for, idp_with, now, token_for};

fn key() -> &'static TestKey {
    TestKey::shared_p256("token-sha256-k1")
}

fn by_hash(token: &str, exp: i64) -> Value {
    json!({ "token_sha256": keygate::token_sha256(token), "exp": exp })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_by_hash_on_one_replica_is_refused_on_every_replica() {
    let (redis, idp, p) = redis_and_idp(&[key()]).await;
    let a = replica(&idp, &redis.url(), &p).await;
    let b = replica(&idp, &redis.url(), &p).await;
    let token = token_for(&idp, key(), |_| {});
    let other = token_for(&idp, key(), |_| {});
    for r in [&a, &b] {
        assert_eq!(status_of(r, &token).await, StatusCode::OK);
        assert_eq!(status_of(r, &other).await, StatusCode::OK);
    }

    let exp = now() + 3600;
    let (code, body) = revoke(&a, by_hash(&token, exp)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body["revoked"],
        json!({"type": "token", "token_sha256": keygate::token_sha256(&token), "exp": exp}),
        "{body}"
    );
    eventually_refused("both replicas refuse the token", [&a, &b], &token).await;
    for r in [&a, &b] {
        let resp = r.verify("", Some(&token), &[]).await;
        assert_eq!(resp.headers()["x-auth-reason"].to_str().unwrap(), "revoked");
        // Another token of the same issuer and key is untouched.
        assert_eq!(status_of(r, &other).await, StatusCode::OK);
    }

    // The other replica lists it, by its digest only.
    let (code, list) = b.get_as_ops("/admin/v1/revocations").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        list["revocations"],
        json!([{"type": "token", "token_sha256": keygate::token_sha256(&token), "exp": exp}]),
        "{list}"
    );
    assert!(!list.to_string().contains(&token));

    // Nothing was dropped on the way: both replicas read it as a good entry.
    for r in [&a, &b] {
        let s = r.node.bus().status();
        assert_eq!(s.rejected.iter().map(|(_, n)| n).sum::<u64>(), 0, "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_checks_the_digest_and_the_expiry_naming_the_field() {
    let idp = idp_with(&[key()]).await;
    let server = TestServer::start(&config_for(&idp, "")).await;
    let digest = keygate::token_sha256("some token");
    let cases = [
        (
            json!({"token_sha256": digest.to_uppercase(), "exp": now() + 60}),
            "token_sha256",
        ),
        (
            json!({"token_sha256": &digest[..63], "exp": now() + 60}),
            "token_sha256",
        ),
        (
            json!({"token_sha256": "not hex", "exp": now() + 60}),
            "token_sha256",
        ),
        (
            json!({"token_sha256": 7, "exp": now() + 60}),
            "token_sha256",
        ),
        (json!({"token_sha256": &digest, "exp": now() - 120}), "exp"),
        (json!({"token_sha256": &digest}), "exp"),
        (
            json!({"token_sha256": &digest, "exp": now() + 60, "tenant": "acme"}),
            "tenant",
        ),
        (
            json!({"token_sha256": &digest, "jti": "j", "exp": now() + 60}),
            "token_sha256",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = server
            .post_json_as_ops("/admin/v1/revocations", &body)
            .await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["field"], field, "{body}: {resp}");
    }
    let (_, list) = server.get_as_ops("/admin/v1/revocations").await;
    assert_eq!(list["revocations"], json!([]), "{list}");

    // The OpenAPI document has the new shape.
    let doc = server
        .client
        .get(format!("{}/admin/v1/openapi.json", server.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let schema = &doc["components"]["schemas"]["TokenRevocation"];
    assert!(schema["properties"]["token_sha256"].is_object(), "{schema}");
    assert!(
        doc["components"]["schemas"]["RevocationRequest"]
            .to_string()
            .contains("TokenRevocation"),
        "the request body names the new shape"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_keeps_a_token_revocation_across_a_restart() {
    let (kept, token) = kept_across_a_restart(|token| by_hash(token, now() + 3600)).await;
    assert!(kept.contains(&keygate::token_sha256(&token)), "{kept}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keygate_revoke_token_from_stdin_sends_only_the_digest() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let idp = idp_with(&[key()]).await;
    let server = TestServer::start(&config_for(&idp, "")).await;
    let token = token_for(&idp, key(), |_| {});
    assert_eq!(status_of(&server, &token).await, StatusCode::OK);
    let exp = (now() + 600).to_string();
    let admin = server.admin.clone();
    let input = format!("{token}\n");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "revoke",
                "--token",
                "-",
                "--exp",
                &exp,
                "--admin-url",
                &admin,
            ])
            .env("KEYGATE_ADMIN_KEY", crate::support::ADMIN_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "revoked token sha256 {}",
            keygate::token_sha256(&token)
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert_eq!(status_of(&server, &token).await, StatusCode::UNAUTHORIZED);
}
