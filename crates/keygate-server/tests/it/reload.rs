//! Reloading the configuration without a restart: `POST /admin/v1/reload` on a server in
//! process, SIGHUP and `keygate reload` on a `keygate serve` process. A good file adds and
//! removes providers and changes `/verify`'s settings while unchanged providers keep their
//! keys (no JWKS refetch) and verified tokens; a bad file or a restart-only change changes
//! nothing, answers 400 naming the key, and is counted.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use keygate::ProviderId;
use keygate_server::apikey::hash_secret_with_iterations;
use keygate_test_support::{StubIdp, TestKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::temp_file;
use crate::serve_cli::Process;
use crate::support::{AUD, TestServer, client, header, idp_with, token_for};

/// A key that may reload the configuration and read the status.
const RELOADER_SECRET: &str = "kg_test_reloader_secret_config_reload";
/// A key with every operational scope but not `config:reload`.
const OPS_SECRET: &str = "kg_test_ops_secret_without_config_reload";

fn keys_toml() -> &'static str {
    static TOML: OnceLock<String> = OnceLock::new();
    TOML.get_or_init(|| {
        let hash = |s: &str| hash_secret_with_iterations(s.as_bytes(), 10_000).unwrap();
        format!(
            "[[admin.keys]]\nid = \"deploy\"\nhash = \"{}\"\nscopes = [\"config:reload\", \"status:read\"]\n\
             [[admin.keys]]\nid = \"ops\"\nhash = \"{}\"\nscopes = [\"jwks:flush\", \"jwks:refresh\", \"tokens:revoke\", \"status:read\", \"events:publish\", \"events:read\"]\n",
            hash(RELOADER_SECRET),
            hash(OPS_SECRET),
        )
    })
}

/// A `[[providers]]` entry trusting `idp` as `acme/<name>`, with `extra` lines.
fn provider(name: &str, idp: &StubIdp, extra: &str) -> String {
    format!(
        "[[providers]]\ntenant = \"acme\"\nname = \"{name}\"\nissuer = \"{iss}\"\njwks_uri = \"{jwks}\"\n\
         audiences = [\"{AUD}\"]\nallow_insecure_http = true\n{extra}\n",
        iss = idp.issuer(),
        jwks = idp.jwks_url(),
    )
}

/// A whole config file: listeners on port 0, `server_extra` in `[server]`, the providers, the
/// admin keys.
fn config(server_extra: &str, providers: &[String]) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server_extra}\n{}\n{}",
        providers.concat(),
        keys_toml()
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

async fn reload(server: &TestServer, key: &str) -> (StatusCode, Value) {
    server
        .admin("POST", "/admin/v1/reload", Some(key), None)
        .await
}

async fn metrics(server: &TestServer) -> String {
    let url = format!("{}/metrics", server.admin);
    server
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn counter(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `keygate_config_reloads_total` by result: (ok, error).
fn reloads(metrics: &str) -> (Option<u64>, Option<u64>) {
    let count = |result: &str| {
        counter(
            metrics,
            &format!("keygate_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    (count("ok"), count("error"))
}

fn status_of<'a>(
    statuses: &'a [keygate::ProviderStatus],
    name: &str,
) -> &'a keygate::ProviderStatus {
    let id = ProviderId::new("acme", name);
    statuses.iter().find(|s| s.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_file_reloads_through_the_admin_api() {
    let (ka, kb) = (
        TestKey::shared_p256("reload-a"),
        TestKey::shared_p256("reload-b"),
    );
    let (a, b) = (idp_with(&[ka]).await, idp_with(&[kb]).await);
    let path = temp_file("keygate.toml", config("", &[provider("main", &a, "")]));
    let server = TestServer::start_file(&path).await;
    let token_a = token_for(&a, ka, |c| {
        c.insert("email".into(), json!("a@example.com"));
    });
    let token_b = token_for(&b, kb, |_| {});
    let resp = server.verify("", Some(&token_a), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-email"), None);
    assert_eq!(server.verify("", Some(&token_b), &[]).await.status(), 401);
    let fetched = a.requests("/jwks");
    assert_eq!(fetched, 1);
    assert_eq!(server.node.verifier().cached_tokens(), 1);

    // `main` keeps its settings but gains a claim header; `second` is new.
    write(
        &path,
        &config(
            "",
            &[
                provider(
                    "main",
                    &a,
                    "claims_to_headers = { email = \"X-Auth-Email\" }",
                ),
                provider("second", &b, ""),
            ],
        ),
    );
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"reloaded": true, "providers": {
            "added": ["acme/second"], "removed": [], "changed": [], "unchanged": ["acme/main"]
        }})
    );
    // The unchanged provider answers from its verified-token cache, without a refetch, and
    // the new claim header is there.
    let resp = server.verify("", Some(&token_a), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-email"), Some("a@example.com"));
    assert_eq!(a.requests("/jwks"), fetched, "no JWKS refetch");
    let statuses = server.node.verifier().status();
    assert_eq!(status_of(&statuses, "main").counters.token_cache_hits, 1);
    // The added provider verifies.
    assert_eq!(server.verify("", Some(&token_b), &[]).await.status(), 200);
    // The tenant path narrows to the reloaded tenant's providers.
    assert_eq!(
        server.verify("/acme", Some(&token_b), &[]).await.status(),
        200
    );

    // `main` goes: its tokens are refused, the cached one included.
    write(&path, &config("", &[provider("second", &b, "")]));
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["removed"], json!(["acme/main"]));
    assert_eq!(body["providers"]["unchanged"], json!(["acme/second"]));
    let resp = server.verify("", Some(&token_a), &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "x-auth-reason"), Some("bad_issuer"));
    assert_eq!(server.verify("", Some(&token_b), &[]).await.status(), 200);

    // A changed provider (another audience) is rebuilt: it fetches afresh.
    let before = b.requests("/jwks");
    write(
        &path,
        &config(
            "",
            &[provider("second", &b, "").replace(
                &format!("audiences = [\"{AUD}\"]"),
                "audiences = [\"elsewhere\"]",
            )],
        ),
    );
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["changed"], json!(["acme/second"]));
    let resp = server.verify("", Some(&token_b), &[]).await;
    assert_eq!(header(&resp, "x-auth-reason"), Some("bad_audience"));
    assert!(b.requests("/jwks") > before);

    assert_eq!(reloads(&metrics(&server).await), (Some(3), Some(0)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_or_a_restart_only_change_changes_nothing() {
    let ka = TestKey::shared_p256("reload-bad");
    let a = idp_with(&[ka]).await;
    let good = config("", &[provider("main", &a, "")]);
    let path = temp_file("keygate.toml", &good);
    let server = TestServer::start_file(&path).await;
    let token = token_for(&a, ka, |_| {});
    assert_eq!(server.verify("", Some(&token), &[]).await.status(), 200);

    // A key without config:reload is refused, before the file is read.
    let (status, body) = reload(&server, OPS_SECRET).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("config:reload"));

    let second_without_audiences =
        provider("second", &a, "").replace(&format!("audiences = [\"{AUD}\"]\n"), "");
    let cases: [(String, &str, &str); 5] = [
        (
            config("", &[provider("main", &a, ""), second_without_audiences]),
            "config",
            "providers[1].audiences",
        ),
        (
            "[server]\nlisten = 7\n".to_owned(),
            "config",
            "server.listen",
        ),
        (
            config("", &[]).replace("shutdown_grace", "shutdown_grace_typo"),
            "config",
            "server.shutdown_grace_typo",
        ),
        (
            good.replace(
                "listen = \"127.0.0.1:0\"\nadmin_listen",
                "listen = \"127.0.0.1:1\"\nadmin_listen",
            ),
            "restart_required",
            "server.listen",
        ),
        (
            format!("{good}\n[cluster]\nstate_file = \"elsewhere.jsonl\"\n"),
            "restart_required",
            "cluster.state_file",
        ),
    ];
    for (i, (text, error, field)) in cases.iter().enumerate() {
        write(&path, text);
        let (status, body) = reload(&server, RELOADER_SECRET).await;
        assert_eq!(status, 400, "{text}\n{body}");
        assert_eq!(body["error"], *error, "{body}");
        assert_eq!(body["field"], *field, "{body}");
        if *error == "restart_required" {
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("restart"), "{message}");
        }
        // The running configuration is unchanged.
        assert_eq!(server.verify("", Some(&token), &[]).await.status(), 200);
        assert_eq!(
            server.node.verifier().providers().collect::<Vec<_>>(),
            [ProviderId::new("acme", "main")]
        );
        assert_eq!(
            reloads(&metrics(&server).await),
            (Some(0), Some(i as u64 + 1))
        );
    }
    // The admin keys stayed too: the good file back in place reloads.
    write(&path, &good);
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["unchanged"], json!(["acme/main"]));
    assert_eq!(a.requests("/jwks"), 1, "nothing refetched");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_keys_reload_too() {
    let ka = TestKey::shared_p256("reload-keys");
    let a = idp_with(&[ka]).await;
    let path = temp_file("keygate.toml", config("", &[provider("main", &a, "")]));
    let server = TestServer::start_file(&path).await;
    let (status, _) = server
        .admin("GET", "/admin/v1/status", Some(OPS_SECRET), None)
        .await;
    assert_eq!(status, 200);
    // The ops key goes; the deploy key stays.
    let deploy_only: String = keys_toml()
        .split("[[admin.keys]]\nid = \"ops\"")
        .next()
        .unwrap()
        .to_owned();
    let text = config("", &[provider("main", &a, "")]).replace(keys_toml(), &deploy_only);
    write(&path, &text);
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .admin("GET", "/admin/v1/status", Some(OPS_SECRET), None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .admin("GET", "/admin/v1/status", Some(RELOADER_SECRET), None)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_config_file_there_is_nothing_to_reload() {
    let ka = TestKey::shared_p256("reload-none");
    let a = idp_with(&[ka]).await;
    let server = TestServer::start(&config("", &[provider("main", &a, "")])).await;
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "no_config_file");
    assert_eq!(reloads(&metrics(&server).await), (Some(0), Some(1)));
    server.stop().await;
}

/// `keygate reload` against the admin API at `admin`, with the reloader's key.
async fn keygate_reload(admin: &str) -> std::process::Output {
    let url = format!("http://{admin}");
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["reload", "--admin-url", &url])
            .env("KEYGATE_ADMIN_KEY", RELOADER_SECRET)
            .env_remove("KEYGATE_ADMIN_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_cli_reload_a_serve_process_which_keeps_running() {
    let (ka, kb) = (TestKey::shared_p256("hup-a"), TestKey::shared_p256("hup-b"));
    let (a, b) = (idp_with(&[ka]).await, idp_with(&[kb]).await);
    let path = temp_file("keygate.toml", config("", &[provider("main", &a, "")]));
    let mut process = Process::start_file(&path);
    let mut seen = Vec::new();
    let line = Process::wait_for(&process.stderr, "listening", &mut seen);
    let verify = Process::field(&line, "verify");
    let admin = Process::field(&line, "admin");
    let http = client();
    let token_a = token_for(&a, ka, |_| {});
    let token_b = token_for(&b, kb, |_| {});
    let check = |token: String| {
        let http = http.clone();
        let url = format!("http://{verify}/verify");
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(token_a.clone()).await, 200);
    assert_eq!(check(token_b.clone()).await, 401);

    // SIGHUP with a good file: `second` is added, `main` kept without a refetch.
    write(
        &path,
        &config("", &[provider("main", &a, ""), provider("second", &b, "")]),
    );
    process.signal("HUP");
    let line = Process::wait_for(&process.stderr, "configuration reloaded", &mut seen);
    assert!(
        line.contains("SIGHUP") && line.contains("acme/second"),
        "{line}"
    );
    assert_eq!(check(token_b.clone()).await, 200);
    assert_eq!(check(token_a.clone()).await, 200);
    assert_eq!(
        a.requests("/jwks"),
        1,
        "no JWKS refetch for the unchanged provider"
    );

    // SIGHUP with a bad file: logged naming the key, counted, nothing changes.
    write(&path, "[server]\nlisten = \"nowhere\"\n");
    process.signal("HUP");
    let line = Process::wait_for(&process.stderr, "configuration not reloaded", &mut seen);
    assert!(line.contains("server.listen"), "{line}");
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the process"
    );
    assert_eq!(check(token_b.clone()).await, 200);
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(reloads(&metrics), (Some(1), Some(1)));

    // `keygate reload`: the bad file is an error naming the key (exit 1), a good one says
    // what changed (exit 0).
    let out = keygate_reload(&admin).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("400 config") && stderr.contains("(field server.listen)"),
        "{stderr}"
    );
    write(&path, &config("", &[provider("second", &b, "")]));
    let out = keygate_reload(&admin).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout.trim(),
        "reloaded: 0 added, 1 removed (acme/main), 0 changed, 1 unchanged"
    );
    assert_eq!(check(token_a).await, 401);
    assert_eq!(check(token_b).await, 200);

    // Still running after all that; SIGTERM still stops it cleanly.
    process.signal("TERM");
    let status = tokio::task::spawn_blocking(move || process.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `/verify` for `uri` as ingress-nginx asks (`X-Original-Method`/`X-Original-URI`).
async fn verify_uri(server: &TestServer, token: &str, uri: &str) -> (StatusCode, String, String) {
    let resp = server
        .verify(
            "",
            Some(token),
            &[("x-original-method", "GET"), ("x-original-uri", uri)],
        )
        .await;
    let status = resp.status();
    let reason = header(&resp, "x-auth-reason")
        .unwrap_or_default()
        .to_owned();
    let route = header(&resp, "x-auth-route").unwrap_or_default().to_owned();
    (status, reason, route)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_swaps_the_policy_and_a_bad_policy_changes_nothing() {
    let ka = TestKey::shared_p256("reload-policy");
    let a = idp_with(&[ka]).await;
    let policy = |paths: &str| {
        format!(
            "[policy]\ndefault = \"deny\"\n[[policy.routes]]\nname = \"orders\"\npaths = {paths}\n"
        )
    };
    let with_policy = |paths: &str| {
        format!(
            "{}\n{}",
            config("", &[provider("main", &a, "")]),
            policy(paths)
        )
    };
    let path = temp_file("keygate.toml", with_policy("[\"/orders/**\"]"));
    let server = TestServer::start_file(&path).await;
    let token = token_for(&a, ka, |_| {});
    // (status, X-Auth-Reason, X-Auth-Route) of an allowed and of an unrouted request.
    let allowed = (StatusCode::OK, "ok".to_owned(), "orders".to_owned());
    let no_route = (StatusCode::FORBIDDEN, "no_route".to_owned(), String::new());
    assert_eq!(verify_uri(&server, &token, "/orders/1").await, allowed);
    assert_eq!(verify_uri(&server, &token, "/invoices/1").await, no_route);

    // A policy naming no path is refused with its key; the running policy stays.
    write(&path, &with_policy("[]"));
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "config", "{body}");
    assert_eq!(body["field"], "policy.routes[0].paths", "{body}");
    assert_eq!(
        verify_uri(&server, &token, "/invoices/1").await.0,
        StatusCode::FORBIDDEN
    );

    // A good one is swapped in whole: the new route decides, the old one is gone.
    write(&path, &with_policy("[\"/invoices/**\"]"));
    let (status, body) = reload(&server, RELOADER_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(verify_uri(&server, &token, "/invoices/1").await, allowed);
    assert_eq!(verify_uri(&server, &token, "/orders/1").await, no_route);
    let (ok, error) = reloads(&metrics(&server).await);
    assert_eq!((ok, error), (Some(1), Some(1)));
}
