//! Highly available Redis for tests: a TLS-only server with a CA made up for it, servers
//! started as replicas of another, and Sentinels watching a primary.
//!
//! [`RedisNode`] is a `redis-server` like [`RedisServer`](crate::RedisServer) (loopback port,
//! no persistence, a fresh temporary directory, killed on drop) that remembers how it was
//! started, so a test can kill it with SIGKILL and start it again, or start it again as the
//! replica of another node, the way an old primary comes back after a failover.
//! [`Sentinel`] runs `redis-server <conf> --sentinel` with a writable configuration in its
//! own directory, monitoring one primary with short timeouts (1 s to call it down, 5 s
//! failover timeout), so a failover takes a few seconds.
//!
//! Everything is blocking std code; waits are bounded and panic with the server's log.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::redis::{
    READY_TIMEOUT, Ready, START_ATTEMPTS, command_at, free_port, fresh_dir, kill, launch_with,
    read_log, spawn_ready,
};

/// How long [`RedisNode::replica_of`] waits for the replication link to come up.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restart keeps retrying while the old port is still held.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` on `127.0.0.1` that can be killed and started again with other
/// arguments; killed and cleaned up on drop.
#[derive(Debug)]
pub struct RedisNode {
    port: u16,
    pub(crate) dir: PathBuf,
    child: Option<Child>,
    /// Arguments after the usual ones (`--replicaof`, TLS files).
    extra: Vec<String>,
    ready: Ready,
    tls: bool,
}

impl RedisNode {
    /// A plain server on a free port, answering `PING`.
    ///
    /// # Panics
    /// If `redis-server` is missing or does not start (the message has its log).
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(|_| Vec::new(), Ready::Ping, false)
    }

    /// A server replicating `primary_port` on loopback; returns once its link to the primary
    /// is up and the initial sync is done.
    ///
    /// # Panics
    /// If it does not start, or the link does not come up within 10 seconds.
    #[must_use]
    pub fn replica_of(primary_port: u16) -> Self {
        let node = Self::start_with(|_| replica_args(primary_port), Ready::Ping, false);
        node.wait_for_link();
        node
    }

    /// A server that only speaks TLS (`--port 0 --tls-port PORT`) with a certificate for
    /// `127.0.0.1` and `localhost` issued by a CA made up for it; [`ca_file`](Self::ca_file)
    /// is that CA's PEM. With `client_auth`, it also requires a client certificate issued by
    /// the same CA: [`client_cert_file`](Self::client_cert_file) and
    /// [`client_key_file`](Self::client_key_file).
    ///
    /// # Panics
    /// If the certificates cannot be made or the server does not start.
    #[must_use]
    pub fn start_tls(client_auth: bool) -> Self {
        Self::start_with(
            |(dir, port)| {
                write_certificates(dir);
                let file = |name: &str| dir.join(name).display().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    file("server.crt"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    if client_auth { "yes" } else { "no" }.into(),
                ]
            },
            Ready::Logged,
            true,
        )
    }

    fn start_with(extra: impl Fn((&Path, u16)) -> Vec<String>, ready: Ready, tls: bool) -> Self {
        let dir = fresh_dir();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let args = extra((&dir, port));
            match launch_with(port, &dir, READY_TIMEOUT, &args, ready) {
                Ok(child) => {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                        extra: args,
                        ready,
                        tls,
                    };
                }
                Err(failure) => last_failure = failure,
            }
        }
        gave_up("redis-server", "redis log", &dir, &last_failure)
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://` for a TLS node.
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The loopback port; it stays the same across restarts.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The CA certificate (PEM) a TLS node's certificate is issued by.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate (PEM) issued by [`ca_file`](Self::ca_file)'s CA.
    #[must_use]
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The private key (PEM) of [`client_cert_file`](Self::client_cert_file).
    #[must_use]
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (nothing is flushed or handed over) and reaps it.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts the server again on the same port with the same arguments and no data.
    ///
    /// # Panics
    /// If it does not come up within a few seconds.
    pub fn start_again(&mut self) {
        self.stop();
        self.child = Some(relaunch("redis-server", self.port, &self.dir, || {
            launch_with(self.port, &self.dir, READY_TIMEOUT, &self.extra, self.ready)
        }));
    }

    /// Writes a snapshot of the data now (`SAVE`, an RDB file in the server's directory), for
    /// [`restart_from_snapshot`](Self::restart_from_snapshot).
    ///
    /// # Panics
    ///
    /// If Redis does not answer `OK`.
    pub fn save_snapshot(&self) {
        assert_eq!(self.command(&["SAVE"]), "OK", "SAVE failed");
    }

    /// Kills the server (SIGKILL) and starts it again on the same port from the last
    /// [`save_snapshot`](Self::save_snapshot): whatever was written after it is gone, as after
    /// a crash with lagging RDB or AOF persistence, or a failover to a replica that had not
    /// caught up. Same data set, same epoch, shorter log.
    ///
    /// # Panics
    ///
    /// If no snapshot was saved, or the server does not come back.
    pub fn restart_from_snapshot(&mut self) {
        assert!(
            self.dir.join("dump.rdb").exists(),
            "restart_from_snapshot needs save_snapshot first"
        );
        self.start_again();
    }

    /// Starts the (stopped) server again, empty, as a replica of `primary_port`, as an old
    /// primary rejoins after a failover; returns once the link is up.
    ///
    /// # Panics
    /// If it does not come up or the link does not.
    pub fn start_again_as_replica_of(&mut self, primary_port: u16) {
        assert!(!self.tls, "TLS replicas are not supported here");
        self.extra = replica_args(primary_port);
        self.start_again();
        self.wait_for_link();
    }

    /// Sends one command over plain TCP; see [`command_at`].
    ///
    /// # Panics
    /// For a TLS node, or when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> String {
        assert!(!self.tls, "a TLS node takes no plain-text commands");
        command_at(self.addr(), args)
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {}: {e}", self.port))
    }

    /// `master` or `slave`, as `ROLE` answers.
    pub fn role(&self) -> String {
        self.command(&["ROLE"])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "times a real redis-server process, which tokio's clock knows nothing of"
    )]
    fn wait_for_link(&self) {
        let deadline = Instant::now() + LINK_TIMEOUT;
        loop {
            let info = self.command(&["INFO", "replication"]);
            if info.contains("master_link_status:up") && !info.contains("master_sync_in_progress:1")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica on port {} did not link up: {info}\n--- redis log ---\n{}",
                self.port,
                read_log(&self.dir)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Sentinel on a free loopback port, monitoring one primary with quorum 1; killed
/// and cleaned up on drop.
#[derive(Debug)]
pub struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts a Sentinel monitoring the primary on loopback `primary_port` as `master`, with
    /// a 1 s down-after period and a 5 s failover timeout, and waits until it answers `PING`.
    ///
    /// # Panics
    /// If it does not start (the message has its log).
    #[must_use]
    pub fn start(master: &str, primary_port: u16) -> Self {
        ensure_sentinel_available();
        let dir = fresh_dir();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {master} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.display()
            );
            fs::write(dir.join("sentinel.conf"), conf)
                .unwrap_or_else(|e| panic!("cannot write the sentinel config: {e}"));
            match spawn_ready(
                sentinel_command(&dir),
                port,
                &dir,
                READY_TIMEOUT,
                Ready::Ping,
            ) {
                Ok(child) => {
                    return Self {
                        port,
                        dir,
                        child: Some(child),
                    };
                }
                Err(failure) => last_failure = failure,
            }
        }
        gave_up("redis sentinel", "log", &dir, &last_failure)
    }

    /// `redis://127.0.0.1:PORT/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command; see [`command_at`].
    ///
    /// # Panics
    /// When the Sentinel cannot be reached.
    pub fn command(&self, args: &[&str]) -> String {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        command_at(addr, args)
            .unwrap_or_else(|e| panic!("sentinel command {args:?} on port {}: {e}", self.port))
    }

    /// The port of the node this Sentinel names the primary of `master` now.
    pub fn primary_port(&self, master: &str) -> Option<u16> {
        let reply = self.command(&["SENTINEL", "get-master-addr-by-name", master]);
        reply.lines().nth(1).and_then(|p| p.parse().ok())
    }

    /// Waits until the Sentinel knows `n` replicas of `master` (it learns of them from the
    /// primary's `INFO`), so that it has one to promote.
    ///
    /// # Panics
    /// After 20 seconds.
    #[allow(
        clippy::disallowed_methods,
        reason = "times a real redis-server process, which tokio's clock knows nothing of"
    )]
    pub fn wait_for_replicas(&self, master: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.command(&["SENTINEL", "replicas", master]);
            let known = reply.lines().filter(|l| *l == "master-link-status").count();
            if known >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel knows {known} of {n} replicas: {reply}\n--- log ---\n{}",
                read_log(&self.dir)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the Sentinel names a primary for `master` on another port than `old`, and
    /// returns that port.
    ///
    /// # Panics
    /// After `within`.
    #[allow(
        clippy::disallowed_methods,
        reason = "times a real redis-server process, which tokio's clock knows nothing of"
    )]
    pub fn wait_for_failover(&self, master: &str, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(port) = self.primary_port(master).filter(|p| *p != old) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no failover away from port {old} within {within:?}\n--- log ---\n{}",
                read_log(&self.dir)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asks for a planned failover of `master` (`SENTINEL FAILOVER`), retrying while the
    /// Sentinel answers that no replica is fit to promote yet (`NOGOODSLAVE`: on a busy
    /// machine it may not have refreshed the replica's `INFO` since the replica caught up).
    ///
    /// # Panics
    /// If the Sentinel does not accept the failover within `within`, or answers anything
    /// other than `OK` or `NOGOODSLAVE`.
    #[allow(
        clippy::disallowed_methods,
        reason = "times a real redis-sentinel process, which tokio's clock knows nothing of"
    )]
    pub fn request_failover(&self, master: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.command(&["SENTINEL", "FAILOVER", master]);
            if answer == "OK" {
                return;
            }
            assert!(
                answer.contains("NOGOODSLAVE") && Instant::now() < deadline,
                "SENTINEL FAILOVER {master} answered {answer:?}\n--- log ---\n{}",
                read_log(&self.dir)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Sentinel's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// Kills the Sentinel with SIGKILL.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port with the configuration it rewrote (what it learned
    /// about the primary and its replicas).
    ///
    /// # Panics
    /// If it does not come up within a few seconds.
    pub fn start_again(&mut self) {
        self.stop();
        self.child = Some(relaunch("sentinel", self.port, &self.dir, || {
            spawn_ready(
                sentinel_command(&self.dir),
                self.port,
                &self.dir,
                READY_TIMEOUT,
                Ready::Ping,
            )
        }));
    }
}

/// Runs `launch` until it starts a process on `port` again (the old one's socket may take a
/// moment to be released), for at most [`REBIND_TIMEOUT`].
///
/// # Panics
/// When it has not, with `dir`'s log.
#[allow(
    clippy::disallowed_methods,
    reason = "times a real redis-server process, which tokio's clock knows nothing of"
)]
fn relaunch(
    what: &str,
    port: u16,
    dir: &Path,
    mut launch: impl FnMut() -> Result<Child, String>,
) -> Child {
    let deadline = Instant::now() + REBIND_TIMEOUT;
    loop {
        match launch() {
            Ok(child) => return child,
            Err(failure) if Instant::now() >= deadline => panic!(
                "{what} did not restart on port {port}: {failure}\n--- log ---\n{}",
                read_log(dir)
            ),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn replica_args(primary_port: u16) -> Vec<String> {
    vec![
        "--replicaof".into(),
        "127.0.0.1".into(),
        primary_port.to_string(),
    ]
}

fn sentinel_command(dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command.arg(dir.join("sentinel.conf")).arg("--sentinel");
    command
}

/// Makes sure `redis-server --sentinel` can run: when `redis-server` is not on `PATH`,
/// installs Debian's `redis-server` and `redis-sentinel` packages once, rather than letting a
/// test skip.
fn ensure_sentinel_available() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok()
        {
            return;
        }
        let run = |args: &[&str]| {
            let status = Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=300"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "`apt-get {}` failed: redis-server with Sentinel is needed",
                args.join(" ")
            );
        };
        run(&["update"]);
        run(&["install", "-y", "redis-server", "redis-sentinel"]);
    });
}

/// Writes `ca.crt`, `server.crt`/`server.key` (for `127.0.0.1` and `localhost`) and
/// `client.crt`/`client.key` into `dir`, all issued by a CA made up here.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    let fail = |what: &str, e: rcgen::Error| -> ! { panic!("cannot make the test {what}: {e}") };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail("CA", e));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "keygate test redis CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail("CA key", e));
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap_or_else(|e| fail("CA", e));

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
        let mut params = CertificateParams::new(names).unwrap_or_else(|e| fail(name, e));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap_or_else(|e| fail(name, e));
        let cert = params
            .signed_by(&key, &ca)
            .unwrap_or_else(|e| fail(name, e));
        (cert.pem(), key.serialize_pem())
    };
    let (server_crt, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    let (client_crt, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "client");
    for (name, content) in [
        ("ca.crt", ca.pem()),
        ("server.crt", server_crt),
        ("server.key", server_key),
        ("client.crt", client_crt),
        ("client.key", client_key),
    ] {
        fs::write(dir.join(name), content)
            .unwrap_or_else(|e| panic!("cannot write {name} in {}: {e}", dir.display()));
    }
}

/// Removes `dir` and panics: `what` did not start, with the last failure and its log.
fn gave_up(what: &str, log_name: &str, dir: &Path, last_failure: &str) -> ! {
    let log = read_log(dir);
    let _ = fs::remove_dir_all(dir);
    panic!("{what} did not start: {last_failure}\n--- {log_name} ---\n{log}");
}

/// Kills and reaps the process in `child`, if there is one.
fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        kill(&mut child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_follows_its_primary_and_rejoins_after_a_restart() {
        let mut primary = RedisNode::start();
        let mut replica = RedisNode::replica_of(primary.port());
        assert_eq!(primary.role(), "master");
        assert_eq!(replica.role(), "slave");
        primary.command(&["SET", "k", "v"]);
        primary.command(&["WAIT", "1", "2000"]);
        assert_eq!(replica.command(&["GET", "k"]), "v");

        // The replica takes over; the old primary comes back as its replica, empty, and syncs.
        primary.stop();
        assert!(!primary.is_running());
        replica.command(&["REPLICAOF", "NO", "ONE"]);
        primary.start_again_as_replica_of(replica.port());
        assert_eq!(primary.role(), "slave");
        assert_eq!(primary.command(&["GET", "k"]), "v");
        assert!(replica.is_running());
    }

    #[test]
    fn a_tls_node_speaks_only_tls_and_writes_its_ca() {
        let node = RedisNode::start_tls(false);
        assert!(node.url().starts_with("rediss://127.0.0.1:"));
        let ca = fs::read_to_string(node.ca_file()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        // Plain text gets no answer on the TLS port.
        assert!(command_at(node.addr(), &["PING"]).is_err());
    }

    #[test]
    fn a_sentinel_names_the_primary_and_sees_its_replica() {
        let primary = RedisNode::start();
        let _replica = RedisNode::replica_of(primary.port());
        let mut sentinel = Sentinel::start("m", primary.port());
        assert_eq!(sentinel.primary_port("m"), Some(primary.port()));
        sentinel.wait_for_replicas("m", 1);
        sentinel.start_again();
        assert_eq!(sentinel.primary_port("m"), Some(primary.port()));
        assert_eq!(sentinel.primary_port("other"), None);
    }
}
