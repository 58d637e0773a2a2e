//! `keygate serve` as a process: config errors exit 64 naming the key, `--check`, the ready
//! message of the development issuer, and graceful shutdown on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use keygate_test_support::{StubIdp, StubResponse, TestKey, jwks};
use serde_json::json;

use crate::harness::{keygate, serve_check, temp_file};
use crate::support::{config_for, header, token_for};

#[test]
fn bad_configs_exit_64_naming_the_key() {
    let cases = [
        ("", "providers"),
        ("[server]\nlisten = \"here\"\n", "server.listen"),
        ("[server]\nlisn = \"127.0.0.1:1\"\n", "lisn"),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\n",
            "providers[0].audiences",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://idp.example\"\naudiences = [\"a\"]\n",
            "providers[0].issuer",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\n[[admin.keys]]\nid = \"ops\"\nhash = \"hunter2\"\nscopes = [\"status:read\"]\n",
            "admin.keys[0].hash",
        ),
        (
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\n[[admin.keys]]\nid = \"ops\"\nhash = \"x\"\nscopes = [\"everything\"]\n",
            "admin.keys[0]",
        ),
        ("this is not toml", "line 1"),
    ];
    for (text, key) in cases {
        let path = temp_file("keygate.toml", text);
        let out = keygate(&["serve", "--config", path.to_str().unwrap()], None);
        assert_eq!(out.code, 64, "{text}\n{out:?}");
        assert!(
            out.stderr.contains(key),
            "{text}: stderr does not name {key}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
        // --check says the same.
        let out = keygate(
            &["serve", "--check", "--config", path.to_str().unwrap()],
            None,
        );
        assert_eq!(out.code, 64, "{text}");
    }
    let out = keygate(&["serve", "--config", "/nonexistent/keygate.toml"], None);
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.contains("/nonexistent/keygate.toml"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/keygate.toml");
    let out = keygate(&["serve", "--check", "--config", example], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("config ok"), "{}", out.stdout);
}

#[test]
fn check_accepts_rediss_and_sentinels_and_refuses_a_bad_ca_naming_the_key() {
    const PROVIDER: &str = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\n";
    const KEY: &str =
        "[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let check = |cluster: &str| {
        let text = format!("{PROVIDER}[cluster]\nbackend = \"redis\"\n{cluster}\n{KEY}");
        let path = temp_file("keygate.toml", &text);
        keygate(
            &["serve", "--check", "--config", path.to_str().unwrap()],
            None,
        )
    };
    for ok in [
        "redis_url = \"rediss://:secret-pw@redis.internal:6380/0\"",
        "sentinels = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2\"]\nsentinel_master = \"kg\"",
        "sentinels = [\"rediss://10.0.0.1:26379\"]\nsentinel_master = \"kg\"\nmin_replicas_ack = 1",
    ] {
        let out = check(ok);
        assert_eq!(out.code, 0, "{ok}\n{out:?}");
        assert!(!out.stdout.contains("secret-pw") && !out.stderr.contains("secret-pw"));
    }
    let ca = temp_file("ca.pem", "not a certificate");
    let out = check(&format!(
        "redis_url = \"rediss://redis.internal/\"\ntls_ca_file = \"{}\"",
        ca.display()
    ));
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("cluster.tls_ca_file"), "{}", out.stderr);
    let out = check("sentinels = [\"redis://a\", \"http://b\"]\nsentinel_master = \"kg\"");
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr.contains("cluster.sentinels[1]"),
        "{}",
        out.stderr
    );
}

/// A `keygate serve` process whose output is read line by line; killed when dropped.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) stdout: mpsc::Receiver<String>,
    pub(crate) stderr: mpsc::Receiver<String>,
}

impl Process {
    pub(crate) fn start(config: &str) -> Process {
        Process::start_file(&temp_file("keygate.toml", config))
    }

    /// `keygate serve --config path`.
    pub(crate) fn start_file(path: &std::path::Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("KEYGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// Reads `stream` until a line contains `needle`; returns it.
    pub(crate) fn wait_for(
        rx: &mpsc::Receiver<String>,
        needle: &str,
        seen: &mut Vec<String>,
    ) -> String {
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    pub(crate) fn field(line: &str, name: &str) -> String {
        let start = line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            + name.len()
            + 1;
        line[start..].split_whitespace().next().unwrap().to_owned()
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let key = TestKey::shared_p256("serve-cli");
    let idp = StubIdp::start().await;
    // The IdP is slow: the first verification waits for the key set while SIGTERM arrives.
    idp.set_response(
        "/jwks",
        StubResponse::json(200, jwks(&[key])).delay(Duration::from_millis(1500)),
    );
    let mut process = Process::start(&config_for(&idp, ""));
    let mut seen = Vec::new();
    let line = Process::wait_for(&process.stderr, "listening", &mut seen);
    let verify = Process::field(&line, "verify");
    let admin = Process::field(&line, "admin");
    let token = token_for(&idp, key, |c| {
        c.insert("sub".into(), json!("in-flight"));
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let request = tokio::spawn({
        let client = client.clone();
        let url = format!("http://{verify}/verify");
        async move { client.get(url).bearer_auth(token).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.signal("TERM");
    let resp = request
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-subject"), Some("in-flight"));
    let status = tokio::task::spawn_blocking(move || {
        let status = process.child.wait().unwrap();
        let mut rest: Vec<String> = process.stderr.try_iter().collect();
        seen.append(&mut rest);
        (status, seen)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1.join("\n"));
    assert!(
        status.1.iter().any(|l| l.contains("draining")),
        "{}",
        status.1.join("\n")
    );
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(&verify).is_err());
    assert!(std::net::TcpStream::connect(&admin).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_issuer_ready_message_has_a_working_curl_command() {
    let config = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[dev_issuer]\nlisten = \"127.0.0.1:0\"\n";
    let process = Process::start(config);
    let mut seen = Vec::new();
    let curl = Process::wait_for(
        &process.stdout,
        "curl -i -H 'Authorization: Bearer ",
        &mut seen,
    );
    let token = curl
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    let url = curl.rsplit(' ').next().unwrap().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/verify"),
        "{url}"
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    process.signal("INT");
}

#[test]
fn an_hmac_algorithm_in_a_provider_exits_64_saying_why() {
    let text = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\nalgorithms = [\"ES512\", \"HS256\"]\n";
    let out = serve_check(text);
    assert_eq!(out.code, 64, "{out:?}");
    for needle in [
        "providers[0].algorithms[1]",
        "HMAC",
        "public-key signatures only",
        "key-confusion",
    ] {
        assert!(
            out.stderr.contains(needle),
            "no {needle:?} in {}",
            out.stderr
        );
    }
    // ES512, Ed25519 and refuse_embedded_keys are accepted.
    let text = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i.example\"\naudiences = [\"a\"]\nalgorithms = [\"ES512\", \"Ed25519\"]\nrefuse_embedded_keys = true\n";
    let out = serve_check(text);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A second `keygate serve` on the embedded default that cannot take its ports exits 2 and
/// leaves the running instance's admin key file alone (it used to write a new key first,
/// locking the operator out of the instance that was running).
#[test]
fn an_embedded_default_that_cannot_bind_leaves_the_running_ones_key_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    // Hold the verify port as the running instance would; if something else holds it, the
    // second start fails the same way.
    let _running = std::net::TcpListener::bind("127.0.0.1:8080");
    let tmp = std::env::temp_dir().join(format!("kg-second-start-{}", std::process::id()));
    let dir = tmp.join("keygate-dev-second");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = dir.join("admin.key");
    std::fs::write(&key, "kg_the_running_instances_key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("serve")
        .env("TMPDIR", &tmp)
        .env("USER", "second")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "kg_the_running_instances_key"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
