//! The policy behind a real Caddy: `forward_auth` to `/verify`, which sends
//! `X-Forwarded-Method` and `X-Forwarded-Uri`, as the README's policy section shows.
//!
//! Caddy comes from Debian's package; the test installs it when it is missing and fails
//! (never skips) if it cannot.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keygate_test_support::TestKey;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::nginx::{apt_binary, free_port, start_upstream};
use crate::policy::{policy_config, token};
use crate::support::{TestServer, header, idp_with};

/// Caddy, stopped when dropped.
struct Caddy {
    child: Child,
    port: u16,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    fn start(keygate: &str, upstream: u16) -> Caddy {
        let bin = apt_binary("caddy", &["/usr/bin/caddy", "/usr/local/bin/caddy"]);
        let keygate = keygate.strip_prefix("http://").unwrap_or(keygate);
        // The free port may be taken between probing and Caddy binding it: try a few.
        for attempt in 0..5 {
            let port = free_port();
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("caddy-{}-{attempt}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("Caddyfile");
            std::fs::write(
                &conf,
                format!(
                    "{{\n    admin off\n    auto_https off\n}}\n\
                     http://127.0.0.1:{port} {{\n\
                     \x20   forward_auth {keygate} {{\n\
                     \x20       uri /verify\n\
                     \x20       copy_headers X-Auth-Subject X-Auth-Route\n\
                     \x20   }}\n\
                     \x20   reverse_proxy 127.0.0.1:{upstream}\n}}\n"
                ),
            )
            .unwrap();
            let child = Command::new(&bin)
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&conf)
                .env("HOME", &dir)
                .env("XDG_DATA_HOME", &dir)
                .env("XDG_CONFIG_HOME", &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start caddy");
            let mut caddy = Caddy { child, port };
            if caddy.wait_ready() {
                return caddy;
            }
        }
        panic!("caddy did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_enforces_the_policy() {
    let key = TestKey::shared_p256("caddy-policy");
    let idp = idp_with(&[key]).await;
    let server = TestServer::start(&policy_config(&idp)).await;
    let upstream = start_upstream().await;
    let keygate = server.verify.clone();
    let caddy = tokio::task::spawn_blocking(move || Caddy::start(&keygate, upstream))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", caddy.port);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let writer = token(
        &idp,
        key,
        &json!({"scope": "write", "realm_access": {"roles": ["admin"]}}),
    );
    let reader = token(&idp, key, &json!({"scope": "read"}));
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut req = client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let resp = send(reqwest::Method::GET, "/public/x", None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = send(reqwest::Method::POST, "/api/orders/1", Some(&writer))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["subject"], "alice");
    // The method reaches keygate as X-Forwarded-Method: POST needs the write scope.
    let resp = send(reqwest::Method::POST, "/api/orders/1", Some(&reader))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "x-auth-reason"), Some("insufficient_scope"));
    assert_eq!(header(&resp, "x-auth-route"), Some("orders-write"));
    assert_eq!(
        header(&resp, "www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"write\"")
    );
    let resp = send(reqwest::Method::GET, "/api/orders/1", Some(&reader))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = send(reqwest::Method::POST, "/api/orders/1", None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = send(reqwest::Method::GET, "/elsewhere", Some(&writer))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "x-auth-reason"), Some("no_route"));
    // A client's own X-Forwarded-Uri is replaced by Caddy's.
    let resp = client
        .post(format!("{base}/api/orders/1"))
        .header("X-Forwarded-Uri", "/public/x")
        .header("X-Forwarded-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    drop(caddy);
    server.stop().await;
}
