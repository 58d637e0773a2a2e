//! keygate behind a real nginx: `auth_request` to `/verify`, identity headers passed on with
//! `auth_request_set` and `proxy_set_header`, exactly as the README shows.
//!
//! nginx comes from Debian's package; the test installs it when it is missing, so a fresh
//! machine passes. It fails (never skips) if nginx cannot be installed.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::any;
use serde_json::{Value, json};

use crate::support::get;
use crate::support::{header, serve_idp, token_for};
use keygate_test_support::TestKey;

/// Finds nginx, installing Debian's package if needed.
fn nginx_binary() -> PathBuf {
    apt_binary(
        "nginx",
        &["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"],
    )
}

/// The first of `paths` that exists, installing Debian's `package` first if none does.
/// Panics (the test fails, never skips) if it cannot be installed.
pub(crate) fn apt_binary(package: &str, paths: &[&str]) -> PathBuf {
    // Tests run in parallel threads: one apt at a time here, and the package looked for
    // again once it is our turn (another test may have installed it meanwhile).
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let find = || paths.iter().map(PathBuf::from).find(|p| p.exists());
    if let Some(p) = find() {
        return p;
    }
    let _turn = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = find() {
        return p;
    }
    let apt = |args: &[&str]| {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        // Another process's apt (a second test binary, an operator) holds the dpkg lock for
        // a while: wait for it, bounded, rather than fail at once.
        cmd.args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !apt(&["install", "-y", "-q", package]) {
        assert!(apt(&["update", "-q"]), "apt-get update failed");
        assert!(
            apt(&["install", "-y", "-q", package]),
            "apt-get install {package} failed"
        );
    }
    find().unwrap_or_else(|| panic!("{package} installed but not found"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx, stopped when dropped.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(keygate: &str, upstream: u16) -> Nginx {
        Nginx::start_with(|dir, port| config(dir, port, keygate, upstream))
    }

    /// nginx with the configuration `render(dir, port)` writes for its directory and port.
    pub(crate) fn start_with(render: impl Fn(&Path, u16) -> String) -> Nginx {
        let bin = nginx_binary();
        // The free port may be taken between probing and nginx binding it: try a few.
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("nginx-{}-{attempt}-{port}", std::process::id()));
            std::fs::create_dir_all(dir.join("logs")).unwrap();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, render(&dir, port)).unwrap();
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("logs/error.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start nginx");
            let mut nginx = Nginx { child, port, dir };
            if nginx.wait_ready() {
                return nginx;
            }
            last_log =
                std::fs::read_to_string(nginx.dir.join("logs/error.log")).unwrap_or_default();
        }
        panic!("nginx did not start:\n{last_log}");
    }

    fn wait_ready(&mut self) -> bool {
        wait_listening(&mut self.child, self.port)
    }
}

/// Waits up to 10 s for `child` to listen on loopback `port`; false if it exits or does not.
pub(crate) fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The nginx configuration the README documents, with test paths and ports.
fn config(dir: &Path, port: u16, keygate: &str, upstream: u16) -> String {
    http_config(
        dir,
        &format!(
            r#"
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{
            auth_request /_keygate;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_tenant $upstream_http_x_auth_tenant;
            auth_request_set $auth_reason $upstream_http_x_auth_reason;
            proxy_set_header X-Auth-Subject $auth_subject;
            proxy_set_header X-Auth-Tenant $auth_tenant;
            add_header X-Auth-Reason $auth_reason always;
            proxy_pass http://127.0.0.1:{upstream};
        }}
        location = /_keygate {{
            internal;
            proxy_pass {keygate}/verify$request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}"#
        ),
    )
}

/// A whole nginx configuration for the directory `dir`: one worker in the foreground, every
/// path under `dir`, and `http` (server blocks and the like) inside `http {}`.
pub(crate) fn http_config(dir: &Path, http: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;{http}
}}
"#
    )
}

/// An upstream that answers with the identity headers it received.
pub(crate) async fn start_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().fallback(any(|headers: HeaderMap| async move {
        let get = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(json!({
            "subject": get("x-auth-subject"),
            "tenant": get("x-auth-tenant"),
            "has_authorization": headers.contains_key("authorization"),
        }))
    }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_protects_a_location() {
    let key = TestKey::shared_p256("nginx-a");
    let (idp, server) = serve_idp(&[key]).await;
    let upstream = start_upstream().await;
    let keygate = server.verify.clone();
    let nginx = tokio::task::spawn_blocking(move || Nginx::start(&keygate, upstream))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.port);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = token_for(&idp, key, |c| {
        c.insert("sub".into(), json!("alice"));
    });

    // A good token: 200, and the upstream sees keygate's identity headers.
    let body = passed(
        client
            .get(format!("{base}/api/orders?page=2"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(body["subject"], "alice");
    assert_eq!(body["tenant"], "acme");

    // A client's own identity header is overwritten, never trusted.
    let body = passed(
        client
            .get(format!("{base}/api/orders"))
            .bearer_auth(&token)
            .header("X-Auth-Subject", "root"),
    )
    .await;
    assert_eq!(body["subject"], "alice");

    // No token: 401 with the Bearer challenge passed through by nginx.
    let resp = get(&client, format!("{base}/api/orders")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), Some("Bearer"));
    // A bad token: 401 too, and the reason for the logs.
    let resp = client
        .get(format!("{base}/api/orders"))
        .bearer_auth("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "www-authenticate").is_some_and(|v| v.contains("invalid_token")));
    drop(nginx);
    server.stop().await;
}

/// Sends `request`, asserts that nginx let it through (200), and returns what the upstream
/// echoed.
async fn passed(request: reqwest::RequestBuilder) -> Value {
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}
