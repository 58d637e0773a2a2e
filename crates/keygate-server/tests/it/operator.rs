//! What an operator meets from the outside (issue 14): every admin error is the JSON error
//! body, revocations that end in the past are refused, a claim cannot reframe the answer of
//! `/verify`, and the `keygate serve` process: a second signal, a port in use, `--check`.

use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use http::HeaderName;
use keygate_server::config::Config;
use keygate_test_support::{StubResponse, TestKey, jwks};
use serde_json::{Value, json};

use crate::harness::{keygate, serve_check, temp_file};
use crate::serve_cli::Process;
use crate::support::{ADMIN_SECRET, TestServer, config_for, idp_with, now, serve_idp, token_for};
use crate::support::{get, get_text};

fn key() -> &'static TestKey {
    TestKey::shared_p256("operator-it")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_error_is_the_json_error_body() {
    let (_idp, server) = serve_idp(&[key()]).await;
    let client = &server.client;
    let json_error = |resp: reqwest::Response| async move {
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{status}: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(body["message"].is_string(), "{body}");
        (
            status.as_u16(),
            body["error"].as_str().unwrap().to_owned(),
            allow,
        )
    };
    // 413: a body over the limit, on both routes that take one.
    for path in ["/admin/v1/revocations", "/admin/v1/events"] {
        let resp = client
            .post(format!("{}{path}", server.admin))
            .bearer_auth(ADMIN_SECRET)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"jti\":\"{}\",\"exp\":1}}",
                "x".repeat(70 * 1024)
            ))
            .send()
            .await
            .unwrap();
        let (status, error, _) = json_error(resp).await;
        assert_eq!(
            (status, error.as_str()),
            (413, "payload_too_large"),
            "{path}"
        );
    }
    // 405: a known path with another method; the Allow header stays.
    let resp = client
        .delete(format!("{}/admin/v1/status", server.admin))
        .send()
        .await
        .unwrap();
    let (status, error, allow) = json_error(resp).await;
    assert_eq!((status, error.as_str()), (405, "method_not_allowed"));
    assert!(allow.is_some_and(|a| a.contains("GET")));
    // 404.
    let resp = get(client, format!("{}/admin/v2/nothing", server.admin)).await;
    let (status, error, _) = json_error(resp).await;
    assert_eq!((status, error.as_str()), (404, "not_found"));
    // And the document served says so.
    let text = get_text(client, format!("{}/admin/v1/openapi.json", server.admin)).await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    for p in ["/metrics", "/healthz", "/readyz", "/admin/v1/openapi.json"] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
    assert!(doc["paths"]["/admin/v1/revocations"]["post"]["responses"]["413"].is_object());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_that_end_in_the_past_are_refused_naming_the_field() {
    let (_idp, server) = serve_idp(&[key()]).await;
    let past = now() - 120;
    for (body, field) in [
        (
            json!({"tenant": "acme", "provider": "main", "kid": "k1", "until": 10}),
            "until",
        ),
        (
            json!({"tenant": "acme", "provider": "main", "kid": "k1", "until": past}),
            "until",
        ),
        (
            json!({"tenant": "acme", "sub": "alice", "before": past, "until": past}),
            "until",
        ),
        (json!({"jti": "j1", "exp": past}), "exp"),
    ] {
        let (status, resp) = server
            .post_json_as_ops("/admin/v1/revocations", &body)
            .await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["error"], "bad_request", "{resp}");
        assert_eq!(resp["field"], field, "{body}: {resp}");
        assert!(resp["message"].as_str().unwrap().contains("past"), "{resp}");
    }
    // Nothing was kept.
    let (_, list) = server.get_as_ops("/admin/v1/revocations").await;
    assert_eq!(list["revocations"], json!([]), "{list}");
    // The future is fine.
    let future = now() + 3600;
    for body in [
        json!({"tenant": "acme", "provider": "main", "kid": "k1", "until": future}),
        json!({"jti": "j1", "exp": future}),
        json!({"tenant": "acme", "sub": "alice", "before": now(), "until": future}),
    ] {
        let (status, resp) = server
            .post_json_as_ops("/admin/v1/revocations", &body)
            .await;
        assert_eq!(status, 200, "{body}: {resp}");
    }
    // The CLI exits 1 with the server's message naming the field.
    let admin = server.admin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "revoke",
                "--tenant",
                "acme",
                "--provider",
                "main",
                "--kid",
                "k2",
                "--until",
                "10",
                "--admin-url",
                &admin,
            ])
            .env("KEYGATE_ADMIN_KEY", ADMIN_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("400 bad_request") && stderr.contains("(field until)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_cannot_change_how_the_verify_answer_is_cached_or_framed() {
    let idp = idp_with(&[key()]).await;
    // The file refuses these names (config unit tests); a Config built in code is held to
    // the same rule when the answer is made.
    let mut config = Config::parse(&config_for(&idp, ""), &|_| None).unwrap();
    config.providers[0].claims_to_headers.extend([
        ("cc".to_owned(), http::header::CACHE_CONTROL),
        ("ct".to_owned(), http::header::CONTENT_TYPE),
        ("conn".to_owned(), http::header::CONNECTION),
        ("mail".to_owned(), HeaderName::from_static("x-user-email")),
    ]);
    let server = TestServer::start_config(config).await;
    let token = token_for(&idp, key(), |c| {
        c.insert("cc".into(), json!("public, max-age=86400"));
        c.insert("ct".into(), json!("text/html"));
        c.insert("conn".into(), json!("close"));
        c.insert("mail".into(), json!("a@example.com"));
    });
    let resp = server.verify("", Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    let values = |name: &str| -> Vec<String> {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values("cache-control"), ["no-store"]);
    assert!(values("content-type").iter().all(|v| v != "text/html"));
    assert!(values("connection").iter().all(|v| v != "close"));
    assert_eq!(values("x-user-email"), ["a@example.com"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let idp = idp_with(&[]).await;
    // The key set never comes in time: the first /verify stays in flight through the drain.
    idp.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[key()])).delay(Duration::from_secs(60)),
    );
    let config =
        config_for(&idp, "").replace("shutdown_grace = \"5s\"", "shutdown_grace = \"60s\"");
    let process = Process::start(&config);
    let mut seen = Vec::new();
    let line = Process::wait_for(&process.stderr, "listening", &mut seen);
    let verify = Process::field(&line, "verify");
    let token = token_for(&idp, key(), |_| {});
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let _in_flight = tokio::spawn(async move {
        client
            .get(format!("http://{verify}/verify"))
            .bearer_auth(token)
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    process.signal("TERM");
    Process::wait_for(&process.stderr, "draining", &mut seen);
    let start = Instant::now();
    process.signal("TERM");
    let (status, seen) = tokio::task::spawn_blocking(move || {
        let mut process = process;
        let status = process.child.wait().unwrap();
        seen.extend(process.stderr.try_iter());
        (status, seen)
    })
    .await
    .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("stopping now")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn a_port_in_use_exits_2_saying_so_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n[dev_issuer]\nlisten = \"127.0.0.1:0\"\n"
    );
    let path = temp_file("keygate.toml", config);
    let out = keygate(&["serve", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("server.listen"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("Address already in use").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn check_refuses_a_state_file_in_a_missing_folder() {
    let config = "[dev_issuer]\n[cluster]\nstate_file = \"/nonexistent-keygate-dir/state.jsonl\"\n";
    let out = serve_check(config);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr.contains("cluster.state_file")
            && out.stderr.contains("/nonexistent-keygate-dir"),
        "{}",
        out.stderr
    );
    // A folder that exists passes, relative to the config file.
    let path = temp_file(
        "keygate.toml",
        "[dev_issuer]\n[cluster]\nstate_file = \"state.jsonl\"\n",
    );
    let out = keygate(
        &["serve", "--check", "--config", path.to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn check_counts_the_development_issuer_as_a_provider() {
    let out = keygate(&["serve", "--check"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("config ok: 1 provider(s)"),
        "{}",
        out.stdout
    );
}
