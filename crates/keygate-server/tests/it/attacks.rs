//! Attacks on the sidecar, end to end over loopback: a random-`kid` flood through `/verify`
//! while the IdP rotates, brute force against the admin API, and hostile admin requests
//! (scopes, bodies, paths). Every answer and every log line is checked for secrets.
//!
//! The admin tests run the server on the test's own current-thread runtime, so a
//! thread-local tracing subscriber sees every audit event it emits without touching the
//! other tests of this binary.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt as _;
use keygate_test_support::{StubIdp, TestKey, TokenBuilder, jwks, typical_claims};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::get_text;
use crate::support::{
    ADMIN_SECRET, APP_SECRET, AUD, READER_SECRET, TestServer, config_for, idp_with, now, serve_idp,
    token_for,
};

fn key_a() -> &'static TestKey {
    TestKey::shared_p256("atk-srv-a")
}

fn key_b() -> &'static TestKey {
    TestKey::shared_p256("atk-srv-b")
}

fn attacker() -> &'static TestKey {
    TestKey::shared_p256("atk-srv-attacker")
}

// ---------------------------------------------------------------------------------------------
// Random-kid flood.

/// The forced-refetch budget of the flood's provider.
const BURST: usize = 2;
const REFILL: Duration = Duration::from_secs(1);

/// 2,000+ tokens naming random `kid`s at concurrency 32, valid tokens interleaved, and a key
/// rotation in the middle: the IdP sees at most `burst + elapsed / refill + 1` key set
/// requests, every valid token verifies, and the new key verifies within one refill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_kid_flood_is_bounded_and_a_rotation_still_lands_within_one_refill() {
    let idp = idp_with(&[key_a()]).await;
    let server = Arc::new(
        TestServer::start(&config_for(
            &idp,
            &format!(
                "unknown_kid_burst = {BURST}\nunknown_kid_refill = \"{}ms\"",
                REFILL.as_millis()
            ),
        ))
        .await,
    );
    let valid = |key: &TestKey| token_for(&idp, key, |_| {});
    assert_eq!(
        server.verify("", Some(&valid(key_a())), &[]).await.status(),
        200
    );
    idp.reset_counts();

    let sent = Arc::new(AtomicUsize::new(0));
    let landed = Arc::new(AtomicBool::new(false));
    let bad_valid = Arc::new(AtomicUsize::new(0));
    let rotate_at = 1_000;
    let min_requests = 2_000;
    let started = Instant::now();
    // Only a machine far too busy to say anything reaches this; the test then fails rather
    // than hangs.
    let deadline = started + Duration::from_secs(60);

    // The prober: once the IdP has rotated, asks for the new key every 20 ms. It reports
    // when the successful probe was *sent*, so its own queueing behind the flood does not
    // count.
    let rotation = {
        let (server, idp, sent, landed) = (
            Arc::clone(&server),
            idp.clone(),
            Arc::clone(&sent),
            Arc::clone(&landed),
        );
        let new = valid(key_b());
        tokio::spawn(async move {
            while sent.load(Ordering::SeqCst) < rotate_at {
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            idp.set_jwks(jwks(&[key_a(), key_b()]));
            let rotated = Instant::now();
            let mut probes = 0;
            loop {
                probes += 1;
                let probe_sent = rotated.elapsed();
                let resp = server.verify("", Some(&new), &[]).await;
                if resp.status() == 200 {
                    landed.store(true, Ordering::SeqCst);
                    return Some((probe_sent, probes, sent.load(Ordering::SeqCst)));
                }
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The flood: random kids, a valid token every 50th request, until 2,000 are out and
    // the rotation has landed (so it landed *during* the flood).
    let requests = futures_util::stream::iter(0..)
        .take_while(|_| {
            let more = sent.load(Ordering::SeqCst) < min_requests || !landed.load(Ordering::SeqCst);
            std::future::ready(more && Instant::now() < deadline)
        })
        .map(|i: usize| {
            let server = Arc::clone(&server);
            let (sent, bad_valid) = (Arc::clone(&sent), Arc::clone(&bad_valid));
            let token = if i % 50 == 0 {
                valid(key_a())
            } else {
                TokenBuilder::new(attacker())
                    .header("kid", json!(format!("{:016x}", fastrand::u64(..))))
                    .claims(typical_claims(&idp.issuer(), AUD, now()))
                    .sign()
            };
            async move {
                let resp = server.verify("", Some(&token), &[]).await;
                sent.fetch_add(1, Ordering::SeqCst);
                let reason = resp
                    .headers()
                    .get("x-auth-reason")
                    .map(|v| v.to_str().unwrap().to_owned());
                if i % 50 == 0 {
                    if resp.status() != 200 {
                        bad_valid.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    assert_eq!(resp.status(), 401);
                    assert_eq!(reason.as_deref(), Some("unknown_kid"));
                }
            }
        })
        .buffer_unordered(32);
    requests.collect::<()>().await;
    let elapsed = started.elapsed();
    let (landed_after, probes, sent_at_landing) = rotation
        .await
        .unwrap()
        .expect("the flood reached the rotation and the new key verified before the deadline");
    let total = sent.load(Ordering::SeqCst);
    let fetches = idp.requests("/jwks");
    let allowed = BURST + (elapsed.as_secs_f64() / REFILL.as_secs_f64()).floor() as usize + 1;
    println!(
        "flood: {total} requests in {elapsed:?} ({:.0}/s), {fetches} JWKS requests \
         (allowed {allowed}); new key verified {landed_after:?} after the rotation, on probe \
         {probes}, {sent_at_landing} requests into the flood",
        total as f64 / elapsed.as_secs_f64()
    );
    assert!(total >= min_requests, "{total}");
    assert_eq!(
        bad_valid.load(Ordering::SeqCst),
        0,
        "valid tokens refused during the flood"
    );
    assert!(
        fetches <= allowed,
        "{fetches} JWKS requests in {elapsed:?}, allowed {allowed}"
    );
    // The budget guarantees one refill (the deferred refetch spends the next token); a
    // second is slack for a busy two-core machine. The printed figure is the real one.
    assert!(
        landed_after <= 2 * REFILL,
        "the rotation took {landed_after:?} to land (refill {REFILL:?})"
    );
    assert!(
        sent_at_landing < total,
        "the flood went on after the rotation landed"
    );
    // Both keys verify afterwards; the flood is counted.
    assert_eq!(
        server.verify("", Some(&valid(key_a())), &[]).await.status(),
        200
    );
    let metrics = get_text(&server.client, format!("{}/metrics", server.admin)).await;
    assert!(
        metrics.contains("keygate_unknown_kid_rejections_total"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// Log capture.

/// Everything the tracing subscriber of this thread writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Captures what this thread logs (debug and up, every target, formatted as `keygate
    /// serve` formats its logs) until the guard drops.
    ///
    /// One global subscriber routes each line to the capture of the thread that logged it.
    /// Per-thread (scoped) subscribers would be simpler, but with tests running in parallel
    /// `tracing`'s callsite interest cache can drop their events now and then; the global
    /// dispatcher is always there.
    fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(|| Routed)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
        });
        SINK.with(|sink| *sink.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }
}

thread_local! {
    static SINK: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Stops the capture of this thread.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let _ = SINK.try_with(|sink| sink.borrow_mut().take());
    }
}

/// The global subscriber's writer: this thread's capture, if it has one.
struct Routed;

impl Write for Routed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = SINK.try_with(|sink| {
            if let Some(c) = sink.borrow_mut().as_mut() {
                let _ = c.write(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that none of `secrets` appears in `text`.
fn assert_no_secrets(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} contains a secret ({}...)",
            &secret[..secret.len().min(12)]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Admin brute force.

/// A client whose requests come from `source` (any 127.0.0.0/8 address reaches the server).
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap()
}

async fn status_call(
    client: &reqwest::Client,
    server: &TestServer,
    key: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut req = client.get(format!("{}/admin/v1/status", server.admin));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), retry_after, resp.text().await.unwrap())
}

const WINDOW: Duration = Duration::from_secs(3);
const MAX_FAILURES: usize = 5;

fn limited_config(idp: &StubIdp) -> String {
    config_for(
        idp,
        &format!(
            "\n[admin]\nmax_failures = {MAX_FAILURES}\nfailure_window = \"{}s\"\n",
            WINDOW.as_secs()
        ),
    )
}

/// Wrong keys from one address: 401 up to the limit, then 429 with `Retry-After` for every
/// call from that address, the right key included, until the window has passed; other
/// addresses are not affected; the audit log records it and never a presented secret.
#[tokio::test]
async fn admin_brute_force_locks_the_address_out_and_logs_no_secret() {
    let logs = Captured::default();
    let _guard = logs.install();
    let idp = idp_with(&[key_a()]).await;
    let server = TestServer::start(&limited_config(&idp)).await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let operator = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let guesses: Vec<String> = (0..MAX_FAILURES + 3)
        .map(|i| format!("kg_guess_{i}_d41d8cd98f00b204e9800998ecf8427e"))
        .collect();
    let mut bodies = Vec::new();

    let started = Instant::now();
    for (i, guess) in guesses.iter().enumerate().take(MAX_FAILURES) {
        let (status, retry, body) = status_call(&attacker, &server, Some(guess)).await;
        assert_eq!(status, 401, "guess {i}: {body}");
        assert!(retry.is_none());
        bodies.push(body);
    }
    // Locked out: wrong key, right key, no key, other routes, all 429 with Retry-After.
    for key in [
        Some(guesses[MAX_FAILURES].as_str()),
        Some(ADMIN_SECRET),
        None,
    ] {
        let (status, retry, body) = status_call(&attacker, &server, key).await;
        assert_eq!(status, 429, "{body}");
        let retry: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=WINDOW.as_secs()).contains(&retry), "{retry}");
        let body_json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body_json["error"], "too_many_requests");
        bodies.push(body);
    }
    let flush = attacker
        .post(format!(
            "{}/admin/v1/providers/acme/main/flush",
            server.admin
        ))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(flush.status(), 429);
    // Another address, with the right key, is served meanwhile.
    let (status, _, body) = status_call(&operator, &server, Some(ADMIN_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < WINDOW,
        "the test ran too slowly to check the lockout"
    );

    // After the window, the right key works again from the locked-out address.
    tokio::time::sleep(WINDOW + Duration::from_millis(200)).await;
    let (status, _, body) = status_call(&attacker, &server, Some(ADMIN_SECRET)).await;
    assert_eq!(status, 200, "{body}");

    let metrics = get_text(&attacker, format!("{}/metrics", server.admin)).await;
    assert!(
        metrics.contains(r#"keygate_admin_requests_total{action="status",status="429"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keygate_admin_requests_total{action="status",status="401"} 5"#),
        "{metrics}"
    );
    server.stop().await;

    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("keygate::audit"))
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("unknown API key"))
            .count(),
        MAX_FAILURES,
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("outcome=\"locked_out\""))
            .count(),
        1,
        "{text}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("address locked out"))
            .all(|l| l.contains("peer=127.0.0.1:")),
        "{text}"
    );
    let mut secrets: Vec<&str> = guesses.iter().map(String::as_str).collect();
    secrets.extend([ADMIN_SECRET, READER_SECRET, APP_SECRET]);
    assert_no_secrets("the log", &text, &secrets);
    for body in &bodies {
        assert_no_secrets("a response", body, &secrets);
    }
}

/// Fifty wrong keys at once from one address: exactly the limit are checked (401), the rest
/// are refused before any hashing (429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_brute_force_stops_at_the_limit() {
    let idp = idp_with(&[key_a()]).await;
    let server = Arc::new(TestServer::start(&limited_config(&idp)).await);
    let started = Instant::now();
    let statuses = futures_util::stream::iter(0..50)
        .map(|i| {
            let server = Arc::clone(&server);
            async move {
                let guess = format!("kg_concurrent_guess_{i}");
                status_call(&server.client, &server, Some(&guess)).await.0
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let count = |s: u16| statuses.iter().filter(|x| x.as_u16() == s).count();
    println!(
        "50 concurrent wrong keys: {} x 401, {} x 429 in {elapsed:?}",
        count(401),
        count(429)
    );
    assert_eq!((count(401), count(429)), (MAX_FAILURES, 50 - MAX_FAILURES));
}

// ---------------------------------------------------------------------------------------------
// Hostile admin requests.

/// One raw HTTP/1.1 request, path sent byte for byte (a URL library would resolve `..` and
/// re-encode): the status and the body.
async fn raw(addr: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let host = addr.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("the server answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Scopes, oversized and malformed bodies, traversal in path parameters and log injection:
/// each gets its 4xx, never a 5xx and never a 2xx it should not, and neither an answer nor a
/// log line holds a secret.
#[tokio::test]
async fn hostile_admin_requests_get_4xx_and_leak_nothing() {
    let logs = Captured::default();
    let _guard = logs.install();
    let (idp, server) = serve_idp(&[key_a()]).await;
    let token = token_for(&idp, key_a(), |_| {});
    let mut bodies = Vec::new();

    // Scopes: missing ones refused, extra ones harmless.
    let flush = "/admin/v1/providers/acme/main/flush";
    for (key, method, path, body, want) in [
        (READER_SECRET, "POST", flush, None, 403),
        (APP_SECRET, "GET", "/admin/v1/status", None, 403),
        (
            ADMIN_SECRET,
            "POST",
            "/admin/v1/events",
            Some(r#"{"namespace":"n","key":"k"}"#),
            403,
        ),
        (READER_SECRET, "GET", "/admin/v1/revocations", None, 200),
        (ADMIN_SECRET, "GET", "/admin/v1/status", None, 200),
    ] {
        let (status, resp) = server.admin(method, path, Some(key), body).await;
        assert_eq!(status.as_u16(), want, "{path}: {resp}");
        if want == 403 {
            assert_eq!(resp["error"], "forbidden");
        }
        bodies.push(resp.to_string());
    }
    // A key followed by junk is not the key.
    let (status, _) = server
        .admin(
            "GET",
            "/admin/v1/status",
            Some(&format!("{ADMIN_SECRET} x")),
            None,
        )
        .await;
    assert_eq!(status, 401);

    // Oversized bodies: 413 before anything is parsed, with or without a key.
    let big = format!(r#"{{"jti":"{}","exp":1}}"#, "j".repeat(200 * 1024));
    for key in [Some(ADMIN_SECRET), None] {
        let mut req = server
            .client
            .post(format!("{}/admin/v1/revocations", server.admin))
            .header("content-type", "application/json")
            .body(big.clone());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 413, "key {}", key.is_some());
        bodies.push(resp.text().await.unwrap());
    }

    // Malformed JSON: 400 naming the field.
    for (body, field) in [
        ("{", "body"),
        ("[]", "body"),
        (r#"{"jti":"a","exp":"soon"}"#, "exp"),
        (r#"{"jti":"a","exp":1e999}"#, "body"),
        (r#"{"jti":{"$gt":""},"exp":1}"#, "jti"),
        (
            r#"{"tenant":"acme","provider":"main","kid":"k","until":-1}"#,
            "until",
        ),
    ] {
        let (status, resp) = server
            .admin(
                "POST",
                "/admin/v1/revocations",
                Some(ADMIN_SECRET),
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["error"], "bad_request", "{body}");
        assert_eq!(resp["field"], field, "{body}: {resp}");
        bodies.push(resp.to_string());
    }

    // Traversal and odd bytes in tenant/provider: no such provider, never a 5xx.
    let paths = [
        "/admin/v1/providers/..%2F..%2Fetc/passwd/flush",
        "/admin/v1/providers/..%2f..%2fetc%2fpasswd/main/flush",
        "/admin/v1/providers/acme/..%2Fmain/flush",
        "/admin/v1/providers/../../etc/passwd/flush",
        "/admin/v1/providers/%2e%2e/%2e%2e/flush",
        "/admin/v1/providers/acme%00/main/flush",
        "/admin/v1/providers/acme/main%2Fflush/flush",
        "/admin/v1/providers/acme/main/../../../../etc/passwd",
        "/admin/v1/providers/acme/main/flush/..",
        "/admin/v1/../v1/status",
        "//admin/v1/status",
        "/admin/v1/providers/acme%0d%0aFORGED%20audit%20line/main/refresh",
    ];
    for path in paths {
        for key in [Some(ADMIN_SECRET), None] {
            let (status, body) = raw(&server.admin, "POST", path, key).await;
            let want = if key.is_some() { 404 } else { 401 };
            // A route that does not exist is 404 with or without a key.
            assert!(
                status == want || status == 404,
                "{path} (key {}): {status} {body}",
                key.is_some()
            );
            bodies.push(body);
        }
    }
    // Not percent-encoding at all: a 4xx from the router, still not a 5xx.
    let (status, body) = raw(
        &server.admin,
        "POST",
        "/admin/v1/providers/ac%ZZme/main/flush",
        Some(ADMIN_SECRET),
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");
    bodies.push(body);
    // The flush of the real provider still works: none of the above touched it.
    let (status, resp) = server.post_as_ops(flush).await;
    assert_eq!(status, 200, "{resp}");
    server.stop().await;

    let text = logs.text();
    assert!(
        text.contains(r#"target="acme\r\nFORGED audit line/main""#),
        "the audit event of the CR LF path is missing or unescaped:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a path parameter split a log line:\n{text}"
    );
    let secrets = [ADMIN_SECRET, READER_SECRET, APP_SECRET, token.as_str()];
    assert_no_secrets("the log", &text, &secrets);
    for body in &bodies {
        assert_no_secrets("a response", body, &secrets);
    }
}

/// A slow-loris client dribbling its headers one byte at a time is cut off once
/// `server.header_read_timeout` has passed, on both listeners, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off_at_the_header_timeout() {
    let idp = idp_with(&[TestKey::shared_p256("slow-loris")]).await;
    let toml = config_for(&idp, "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nheader_read_timeout = \"500ms\"",
    );
    let server = TestServer::start(&toml).await;
    for base in [&server.verify, &server.admin] {
        let addr = base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let started = Instant::now();
        let dribble = tokio::spawn(async move {
            write
                .write_all(b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            // A byte every 50 ms for up to 10 s: each one is progress, none completes a header.
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if write.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        let mut buf = [0u8; 512];
        // Whatever the server says last (nothing, or a 408), it then closes the connection.
        let closed = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        dribble.abort();
        assert!(
            closed.is_ok(),
            "{addr}: still open after 8 s of dribbled headers"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{addr}: cut off only after {:?}",
            started.elapsed()
        );
    }
    let (code, _) = server.admin("GET", "/healthz", None, None).await;
    assert_eq!(code, StatusCode::OK);
}
