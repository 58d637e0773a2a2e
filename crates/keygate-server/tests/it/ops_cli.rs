//! `keygate flush|refresh|revoke|status` against a fake admin API: the requests they send,
//! what they print, their exit codes, and that the admin key never shows up in the output.
//!
//! The fake checks the bearer key (401 otherwise), records every request and answers with
//! canned bodies in the shapes of the admin API's contract.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::UNIX_EPOCH;

use keygate::{Clock as _, SystemClock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::harness::Output;

/// The admin key the fake accepts. Distinctive, so a leak into the output is easy to spot.
const KEY: &str = "kg_ops_S3CRET_7f3e91c0a2b4d5";

/// The fake's clock, for the status body.
const NOW: i64 = 1_700_000_000;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    method: String,
    /// As sent, percent-encoding included.
    path: String,
    body: Option<Value>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// A fake admin API on `127.0.0.1:0`, served from its own thread and runtime so that the
/// tests can run the `keygate` binary with plain blocking calls.
struct FakeAdmin {
    url: String,
    log: Log,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAdmin {
    fn start() -> Self {
        let log = Log::default();
        let app = Router::new().fallback(handle).with_state(Arc::clone(&log));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        FakeAdmin {
            url: format!("http://{addr}"),
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The requests received so far.
    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Runs `keygate ARGS --admin-url <fake>` with the right key.
    /// Runs `args`, and asserts that the CLI exits 0, prints `stdout` and made exactly
    /// `requests`.
    fn expect(&self, args: &[&str], stdout: &str, requests: &[Recorded]) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout, stdout);
        assert_eq!(self.requests(), requests);
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["--admin-url", &self.url]);
        keygate(&args, &[("KEYGATE_ADMIN_KEY", KEY)])
    }

    /// Runs the CLI against this server and checks that it exits with `code`.
    fn run_exiting(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(out.code, code, "{out:?}");
        out
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `keygate ARGS` with exactly the given `KEYGATE_*` variables, and checks that no
/// admin key (the right one or a wrong one) appears in its output.
fn keygate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env_remove("KEYGATE_ADMIN_KEY")
        .env_remove("KEYGATE_ADMIN_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = Output {
        code: out.status.code().expect("exited normally"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    let keys = env
        .iter()
        .filter(|(name, _)| *name == "KEYGATE_ADMIN_KEY")
        .map(|(_, key)| *key)
        .chain([KEY]);
    for key in keys.filter(|k| !k.is_empty()) {
        assert!(
            !out.stdout.contains(key) && !out.stderr.contains(key),
            "admin key printed: {out:?}"
        );
    }
    assert!(!out.stderr.contains("S3CRET"), "admin key printed: {out:?}");
    out
}

/// Answers every request: auth first, then a route by method and (raw) path. A path under
/// `/pretty/` is served as the same path without that prefix, its body pretty-printed.
async fn handle(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = (!body.is_empty()).then(|| serde_json::from_slice::<Value>(&body).unwrap());
    log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        body: body.clone(),
    });
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {KEY}").as_bytes());
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid admin key",
        );
    }
    let (pretty, path) = match uri.path().strip_prefix("/pretty") {
        Some(path) => (true, path),
        None => (false, uri.path()),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, reply) = match (&method, segments.as_slice()) {
        (&Method::GET, ["admin", "v1", "status"]) => (StatusCode::OK, status_body()),
        (&Method::POST, ["admin", "v1", "providers", "ghost", provider, _]) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no provider ghost/{provider}"),
            );
        }
        (&Method::POST, ["admin", "v1", "providers", tenant, provider, "flush"]) => (
            StatusCode::OK,
            json!({"action": "flush", "tenant": tenant, "provider": provider, "seq": 41}),
        ),
        (&Method::POST, ["admin", "v1", "providers", _, "broken", "refresh"]) => (
            StatusCode::BAD_GATEWAY,
            json!({
                "error": "refresh_failed",
                "reason": "keys_unavailable",
                "message": "connect failed: connection refused",
            }),
        ),
        (&Method::POST, ["admin", "v1", "providers", tenant, provider, "refresh"]) => (
            StatusCode::OK,
            json!({
                "action": "refresh", "tenant": tenant, "provider": provider, "seq": 42,
                "state": "fresh", "kids": ["k1", "k2"],
            }),
        ),
        (&Method::POST, ["admin", "v1", "revocations"]) => {
            return revoke(body.unwrap_or(Value::Null));
        }
        (&Method::GET, ["admin", "v1", "revocations"]) => (StatusCode::OK, revocations_body()),
        _ => return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    };
    let text = if pretty {
        serde_json::to_string_pretty(&reply).unwrap()
    } else {
        reply.to_string()
    };
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": error, "message": message}).to_string(),
    )
        .into_response()
}

/// `POST /admin/v1/revocations`: echoes the revocation with its type, like the real one.
fn revoke(body: Value) -> Response {
    let revoked = match &body {
        Value::Object(o) if o.contains_key("jti") => {
            if o["exp"].as_i64().is_none_or(|exp| exp < NOW) {
                return (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "application/json")],
                    json!({"error": "bad_request", "message": "exp is in the past", "field": "exp"})
                        .to_string(),
                )
                    .into_response();
            }
            json!({"type": "jti", "jti": o["jti"], "exp": o["exp"]})
        }
        // Like the real one, a subject revocation always comes back with its `until`.
        Value::Object(o) if o.contains_key("sub") => json!({
            "type": "subject", "tenant": o["tenant"], "sub": o["sub"], "before": o["before"],
            "until": o.get("until").cloned().unwrap_or(json!(o["before"].as_i64().unwrap() + 86_400)),
        }),
        Value::Object(o) if o.contains_key("kid") => json!({
            "type": "kid", "tenant": o["tenant"], "provider": o["provider"], "kid": o["kid"],
            "until": o.get("until"),
        }),
        _ => return error(StatusCode::BAD_REQUEST, "bad_request", "no revocation"),
    };
    let body = json!({"revoked": revoked, "seq": 43}).to_string();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn status_body() -> Value {
    let provider = |tenant: &str, name: &str, state: &str, kids: &[&str]| {
        json!({
            "tenant": tenant, "provider": name, "issuer": format!("https://{tenant}.test"),
            "jwks_uri": format!("https://{tenant}.test/jwks"), "state": state, "kids": kids,
            "skipped_keys": 0, "fetched_at": null, "expires_at": null, "usable_until": null,
            "last_error": null,
            "counters": {"hits": 10, "misses": 1, "refreshes": 2, "refresh_errors": 0,
                         "unknown_kid_rejections": 0, "token_cache_hits": 4},
        })
    };
    let mut acme = provider("acme", "idp", "fresh", &["k1", "k2"]);
    acme["fetched_at"] = json!(NOW - 12);
    acme["expires_at"] = json!(NOW + 4 * 60 + 58);
    acme["usable_until"] = json!(NOW + 3600);
    let mut globex = provider("globex", "okta-prod", "failing", &["k9"]);
    globex["fetched_at"] = json!(NOW - 2 * 3600);
    globex["expires_at"] = json!(NOW - 60);
    globex["last_error"] = json!({
        "at": NOW - 5, "reason": "keys_unavailable", "message": "connect failed",
    });
    let mut fixed = provider("static", "file", "fresh", &["a"]);
    fixed["jwks_uri"] = Value::Null;
    fixed["fetched_at"] = json!(NOW - 5);
    let pending = provider("new", "pending", "empty", &[]);
    json!({
        "version": "0.1.0",
        "now": NOW,
        "providers": [acme, globex, fixed, pending],
        "bus": {"backend": "local", "state": "ok", "last_seq": 44, "lag_seconds": 0.0},
        "revocations": 3,
        "cached_tokens": 17,
    })
}

fn revocations_body() -> Value {
    json!({"revocations": [
        {"type": "jti", "jti": "j-1", "exp": NOW + 3600},
        {"type": "subject", "tenant": "acme", "sub": "alice", "before": NOW,
         "until": NOW + 86_400},
        {"type": "kid", "tenant": "acme", "provider": "idp", "kid": "k1", "until": null},
    ]})
}

fn post(path: &str, body: Option<Value>) -> Recorded {
    Recorded {
        method: "POST".into(),
        path: path.into(),
        body,
    }
}

fn get(path: &str) -> Recorded {
    Recorded {
        method: "GET".into(),
        path: path.into(),
        body: None,
    }
}

fn unix_now() -> u64 {
    SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn flush_prints_the_seq_and_posts_to_the_provider_path() {
    let admin = FakeAdmin::start();
    let out = admin.expect(
        &["flush", "acme", "idp"],
        "flushed acme/idp (seq 41)\n",
        &[post("/admin/v1/providers/acme/idp/flush", None)],
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn refresh_takes_tenant_and_provider_flags_and_prints_the_kids() {
    let admin = FakeAdmin::start();
    admin.expect(
        &["refresh", "--tenant", "acme", "--provider", "idp"],
        "refreshed acme/idp: fresh, kids k1, k2 (seq 42)\n",
        &[post("/admin/v1/providers/acme/idp/refresh", None)],
    );
}

#[test]
fn provider_names_are_percent_encoded_one_segment_each() {
    let admin = FakeAdmin::start();
    admin.run_exiting(&["flush", "a b", "x/y"], 0);
    assert_eq!(
        admin.requests(),
        [post("/admin/v1/providers/a%20b/x%2Fy/flush", None)]
    );
}

#[test]
fn mixing_the_provider_forms_is_a_usage_error_and_sends_nothing() {
    let admin = FakeAdmin::start();
    for args in [
        &[
            "flush",
            "acme",
            "idp",
            "--tenant",
            "acme",
            "--provider",
            "idp",
        ][..],
        &["flush", "acme"],
        &["refresh", "--tenant", "acme"],
    ] {
        let out = admin.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("Usage"), "{args:?}: {out:?}");
    }
    assert_eq!(admin.requests(), []);
}

#[test]
fn a_failed_refresh_exits_1_with_the_servers_error_and_reason() {
    let admin = FakeAdmin::start();
    let out = admin.run_exiting(&["refresh", "acme", "broken"], 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "keygate: 502 refresh_failed: connect failed: connection refused \
         (reason keys_unavailable)\n"
    );

    // With --json the body goes to stderr, on one line before the message: stdout holds
    // answers only.
    let out = admin.run_exiting(&["refresh", "acme", "broken", "--json"], 1);
    assert_eq!(out.stdout, "", "{out:?}");
    let (body, message) = out.stderr.split_once('\n').unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "refresh_failed");
    assert_eq!(body["reason"], "keys_unavailable");
    assert!(
        message.starts_with("keygate: 502 refresh_failed"),
        "{out:?}"
    );
}

#[test]
fn revoke_jti_sends_jti_and_exp() {
    let admin = FakeAdmin::start();
    let exp = (NOW + 3600).to_string();
    admin.expect(
        &["revoke", "--jti", "j-1", "--exp", &exp],
        "revoked jti j-1 until 2023-11-14T23:13:20Z (seq 43)\n",
        &[post(
            "/admin/v1/revocations",
            Some(json!({"jti": "j-1", "exp": NOW + 3600})),
        )],
    );
}

#[test]
fn revoke_subject_sends_before_which_defaults_to_now() {
    let admin = FakeAdmin::start();
    let before = NOW.to_string();
    let out = admin.run(&[
        "revoke", "--tenant", "acme", "--sub", "alice", "--before", &before,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "revoked subject alice of tenant acme: tokens issued before 2023-11-14T22:13:20Z, \
         kept until 2023-11-15T22:13:20Z (seq 43)\n"
    );

    let start = unix_now();
    let out = admin.run(&["revoke", "--tenant", "acme", "--sub", "alice"]);
    let end = unix_now();
    assert_eq!(out.code, 0, "{out:?}");
    let requests = admin.requests();
    assert_eq!(
        requests[0],
        post(
            "/admin/v1/revocations",
            Some(json!({"tenant": "acme", "sub": "alice", "before": NOW}))
        )
    );
    let body = requests[1].body.as_ref().unwrap();
    assert_eq!(
        (&body["tenant"], &body["sub"]),
        (&json!("acme"), &json!("alice"))
    );
    let sent = body["before"].as_u64().unwrap();
    assert!((start..=end).contains(&sent), "before {sent} not now");
}

/// `keygate revoke` of key k1 of acme/idp.
const REVOKE_KID: [&str; 7] = [
    "revoke",
    "--tenant",
    "acme",
    "--provider",
    "idp",
    "--kid",
    "k1",
];

#[test]
fn revoke_kid_sends_tenant_provider_and_kid() {
    let admin = FakeAdmin::start();
    admin.expect(
        &REVOKE_KID,
        "revoked key k1 of acme/idp (seq 43)\n",
        &[post(
            "/admin/v1/revocations",
            Some(json!({"tenant": "acme", "provider": "idp", "kid": "k1"})),
        )],
    );
}

#[test]
fn revoke_sends_until_when_given() {
    let admin = FakeAdmin::start();
    let until = (NOW + 7200).to_string();
    admin.expect(
        &[&REVOKE_KID[..], &["--until", &until]].concat(),
        "revoked key k1 of acme/idp, kept until 2023-11-15T00:13:20Z (seq 43)\n",
        &[post(
            "/admin/v1/revocations",
            Some(json!({"tenant": "acme", "provider": "idp", "kid": "k1", "until": NOW + 7200})),
        )],
    );
}

#[test]
fn revoke_with_two_shapes_or_half_a_shape_is_a_usage_error() {
    let admin = FakeAdmin::start();
    for args in [
        &[
            "revoke", "--jti", "j", "--exp", "1", "--tenant", "acme", "--sub", "alice",
        ][..],
        &[
            "revoke", "--tenant", "acme", "--sub", "alice", "--kid", "k1",
        ],
        &["revoke", "--jti", "j"],
        &["revoke", "--tenant", "acme"],
        &["revoke", "--list", "--kid", "k1"],
        &["revoke"],
    ] {
        let out = admin.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("Usage"), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "");
    }
    assert_eq!(admin.requests(), []);
}

#[test]
fn revoke_list_prints_a_table() {
    let admin = FakeAdmin::start();
    admin.expect(
        &["revoke", "--list"],
        "\
TYPE     TARGET                           BEFORE                UNTIL
jti      jti=j-1                          -                     2023-11-14T23:13:20Z
subject  tenant=acme sub=alice            2023-11-14T22:13:20Z  2023-11-15T22:13:20Z
kid      tenant=acme provider=idp kid=k1  -                     -
",
        &[get("/admin/v1/revocations")],
    );

    let out = admin.run_exiting(&["revoke", "--list", "--json"], 0);
    assert_eq!(out.line(), revocations_body().to_string());
}

#[test]
fn status_prints_an_aligned_table_then_the_bus() {
    let admin = FakeAdmin::start();
    let out = admin.expect(
        &["status"],
        "\
TENANT  PROVIDER   STATE    KEYS  FETCHED    EXPIRES    LAST ERROR
acme    idp        fresh    2     12s ago    in 4m58s   -
globex  okta-prod  failing  1     2h00m ago  1m00s ago  keys_unavailable
static  file       fresh    1     5s ago     never      -
new     pending    empty    0     -          -          -
bus: local ok (seq 44, lag 0.0s)
revocations: 3, cached tokens: 17
",
        &[get("/admin/v1/status")],
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn json_prints_the_servers_body_on_one_line() {
    let admin = FakeAdmin::start();
    let out = admin.run_exiting(&["status", "--json"], 0);
    assert_eq!(out.line(), status_body().to_string());

    // A pretty-printed body (here from a base URL with a path) still comes out as one line.
    let pretty = format!("{}/pretty", admin.url);
    let out = keygate(
        &["status", "--json", "--admin-url", &pretty],
        &[("KEYGATE_ADMIN_KEY", KEY)],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.line(), status_body().to_string());
    assert_eq!(admin.requests()[1], get("/pretty/admin/v1/status"));

    let out = admin.run_exiting(&["flush", "acme", "idp", "--json"], 0);
    assert_eq!(
        out.line(),
        r#"{"action":"flush","provider":"idp","seq":41,"tenant":"acme"}"#
    );
}

#[test]
fn admin_errors_exit_1_with_status_error_and_message() {
    let admin = FakeAdmin::start();
    let out = admin.run_exiting(&["flush", "ghost", "idp"], 1);
    assert_eq!(
        out.stderr,
        "keygate: 404 not_found: no provider ghost/idp\n"
    );
    assert_eq!(out.stdout, "");

    let out = admin.run_exiting(&["revoke", "--jti", "j-1", "--exp", "5"], 1);
    assert_eq!(
        out.stderr,
        "keygate: 400 bad_request: exp is in the past (field exp)\n"
    );
}

#[test]
fn a_wrong_key_is_refused_and_not_printed() {
    let admin = FakeAdmin::start();
    let wrong = "kg_wrong_key_0123456789";
    for json in [false, true] {
        let mut args = vec!["status", "--admin-url", &admin.url];
        if json {
            args.push("--json");
        }
        let out = keygate(&args, &[("KEYGATE_ADMIN_KEY", wrong)]);
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(out.stdout, "");
        let message = if json {
            let (body, message) = out.stderr.split_once('\n').unwrap();
            let body: Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["error"], "unauthorized");
            message
        } else {
            out.stderr.as_str()
        };
        assert_eq!(
            message,
            "keygate: 401 unauthorized: missing or invalid admin key\n"
        );
    }
    assert_eq!(admin.requests().len(), 2);
}

#[test]
fn an_unreachable_admin_api_exits_2_and_names_the_url() {
    // A port that was free a moment ago: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = keygate(
        &["status", "--admin-url", &url],
        &[("KEYGATE_ADMIN_KEY", KEY)],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with(&format!(
            "keygate: error: could not reach the admin API at {url}/"
        )),
        "{out:?}"
    );
}

#[test]
fn an_admin_api_that_never_answers_times_out_with_exit_2() {
    // The kernel completes the handshake into the backlog; nobody ever reads or writes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = tokio::time::Instant::now();
    let out = keygate(
        &[
            "flush",
            "acme",
            "idp",
            "--timeout",
            "1",
            "--admin-url",
            &url,
        ],
        &[("KEYGATE_ADMIN_KEY", KEY)],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("could not reach the admin API"),
        "{out:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    drop(silent);
}

#[test]
fn a_missing_key_exits_2_and_sends_nothing() {
    let admin = FakeAdmin::start();
    for env in [&[][..], &[("KEYGATE_ADMIN_KEY", "")]] {
        let out = keygate(&["status", "--admin-url", &admin.url], env);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains("KEYGATE_ADMIN_KEY is not set"),
            "{out:?}"
        );
        assert_eq!(out.stdout, "");
    }
    assert_eq!(admin.requests(), []);
}

#[test]
fn the_admin_url_can_come_from_the_environment() {
    let admin = FakeAdmin::start();
    let out = keygate(
        &["flush", "acme", "idp"],
        &[
            ("KEYGATE_ADMIN_KEY", KEY),
            ("KEYGATE_ADMIN_URL", &admin.url),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        admin.requests(),
        [post("/admin/v1/providers/acme/idp/flush", None)]
    );
}
