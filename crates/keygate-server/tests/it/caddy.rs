//! The policy behind a real Caddy: `forward_auth` to `/verify`, which sends
//! `X-Forwarded-Method` and `X-Forwarded-Uri`, as the README's policy section shows.
//!
//! Caddy comes from Debian's package; the test installs it when it is missing and fails
//! (never skips) if it cannot.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::nginx::{apt_binary, free_port, wait_listening};
use crate::policy::{assert_through_proxy, setup};

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
            if wait_listening(&mut caddy.child, port) {
                return caddy;
            }
        }
        panic!("caddy did not start");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_enforces_the_policy() {
    let setup = setup("caddy-policy").await;
    let (keygate, upstream) = (setup.server.verify.clone(), setup.upstream);
    let caddy = tokio::task::spawn_blocking(move || Caddy::start(&keygate, upstream))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", caddy.port);
    assert_through_proxy(&base, &setup.writer, &setup.reader).await;
    drop(caddy);
    setup.server.stop().await;
}
