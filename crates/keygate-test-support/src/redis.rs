//! A private `redis-server` process for tests that need an isolated Redis or must kill and
//! restart it.
//!
//! [`RedisServer`] owns one `redis-server` child on a loopback port, with persistence off and
//! its working directory and log in a fresh temporary directory. Tests can stop it, start it
//! again on the same port with its data gone (what a client sees when Redis restarts without
//! persistence), and poke it with raw RESP commands through [`RedisServer::command`] or
//! [`command_at`], so no Redis client crate is needed here.
//!
//! Everything is blocking std code, so it works the same from plain `#[test]`s and from
//! `#[tokio::test]`s. Starting takes a few milliseconds; a command that makes Redis itself
//! block (`DEBUG SLEEP`) also blocks the calling thread, so an async test that needs other
//! tasks to run meanwhile sends it with [`command_at`] inside `tokio::task::spawn_blocking`.
//!
//! `redis-server` (7.0 or later, Debian package `redis-server`) must be on `PATH`; without it
//! [`RedisServer::start`] panics rather than letting the test pass vacuously.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use keygate::Clock as _;

/// How long a started server has to answer `PING` before the start counts as failed.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports [`RedisServer::start`] tries before giving up.
pub(crate) const START_ATTEMPTS: usize = 5;
/// Connect, write and read timeout for [`command_at`].
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A `redis-server` child process on `127.0.0.1`, killed and cleaned up on drop.
///
/// ```
/// use keygate_test_support::RedisServer;
///
/// let mut redis = RedisServer::start();
/// assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
/// redis.start_again(); // same port, data wiped
/// assert_eq!(redis.command(&["GET", "k"]), "(nil)");
/// ```
///
/// The same type as [`RedisNode`](crate::RedisNode), which can also start TLS-only servers and
/// replicas; this name is kept for the tests that need one plain, private server.
pub type RedisServer = crate::redis_ha::RedisNode;

/// Sends one command to the Redis at `addr` over a new connection and reads one reply.
///
/// The reply is rendered like `redis-cli` does: a simple or bulk string as its text, a nil
/// as `(nil)`, an integer as `(integer) N`, an error as `(error) MESSAGE`, and an array as its
/// elements one per line (nested arrays flattened; an empty one as `(empty array)`).
///
/// Blocking; usable from `spawn_blocking` since it borrows nothing from a [`RedisServer`].
///
/// # Errors
///
/// If connecting, writing or reading fails or times out (5 seconds each), or the reply is not
/// valid RESP.
pub fn command_at(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    (&stream).write_all(&encode(args))?;
    let mut lines = Vec::new();
    read_reply(&mut BufReader::new(&stream), &mut lines)?;
    if lines.is_empty() {
        return Ok("(empty array)".to_owned());
    }
    Ok(lines.join("\n"))
}

/// Encodes `args` as a RESP array of bulk strings, the form Redis expects commands in.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 reply, pushing its rendering onto `out` (one line per array element).
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<String>) -> io::Result<()> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    match kind {
        "+" => out.push(rest.to_owned()),
        "-" => out.push(format!("(error) {rest}")),
        ":" => out.push(format!("(integer) {rest}")),
        "$" => match parse_len(rest)? {
            None => out.push("(nil)".to_owned()),
            Some(len) => {
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                if !body.ends_with(b"\r\n") {
                    return Err(invalid(format!("bulk string of {len} bytes lacks CRLF")));
                }
                body.truncate(len);
                out.push(String::from_utf8_lossy(&body).into_owned());
            }
        },
        "*" => match parse_len(rest)? {
            None => out.push("(nil)".to_owned()),
            Some(len) => {
                for _ in 0..len {
                    read_reply(reader, out)?;
                }
            }
        },
        _ => return Err(invalid(format!("unexpected reply line {line:?}"))),
    }
    Ok(())
}

/// Reads one CRLF-terminated line, without the terminator.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    match line.strip_suffix("\r\n") {
        Some(stripped) => Ok(stripped.to_owned()),
        None => Err(invalid(format!("reply line {line:?} lacks CRLF"))),
    }
}

/// Parses a bulk string or array length, where `-1` means nil.
fn parse_len(text: &str) -> io::Result<Option<usize>> {
    if text == "-1" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| invalid(format!("bad length {text:?}")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// How [`launch_with`] tells that a server is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// It answers a plain-text `PING` on its port.
    Ping,
    /// Its log says it accepts connections (for a server that only speaks TLS).
    Logged,
}

/// [`launch`] with `extra` arguments after the usual ones (later ones win, so `--port 0`
/// turns the plain port off), waiting as `ready` says.
pub(crate) fn launch_with(
    port: u16,
    dir: &Path,
    timeout: Duration,
    extra: &[String],
    ready: Ready,
) -> Result<Child, String> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "yes"])
        .args(["--daemonize", "no"])
        // Off by default since Redis 7; tests use `DEBUG SLEEP` to make Redis unresponsive.
        .args(["--enable-debug-command", "local"])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    spawn_ready(command, port, dir, timeout, ready)
}

/// Spawns `command` (a `redis-server`) with its output in the log in `dir` and waits until
/// it is ready.
#[allow(
    clippy::disallowed_methods,
    reason = "times a real redis-server process, which tokio's clock knows nothing of"
)]
pub(crate) fn spawn_ready(
    mut command: Command,
    port: u16,
    dir: &Path,
    timeout: Duration,
    ready: Ready,
) -> Result<Child, String> {
    let logged_before = fs::metadata(log_path(dir)).map_or(0, |m| m.len());
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir))
        .unwrap_or_else(|e| panic!("cannot open redis log in {}: {e}", dir.display()));
    let log_err = log
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone redis log handle: {e}"));
    let spawned = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`redis-server` is not on PATH; it must be installed to run these tests \
             (Debian/Ubuntu: `apt-get install redis-server`)"
        ),
        Err(e) => panic!("cannot spawn redis-server: {e}"),
    };

    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                return Err(format!("cannot poll redis-server on port {port}: {e}"));
            }
        }
        let is_ready = match ready {
            Ready::Ping => answers_ping(addr),
            Ready::Logged => logged_since(dir, logged_before, "Ready to accept connections"),
        };
        if is_ready {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            return Err(format!(
                "redis-server on port {port} did not answer PING within {timeout:?}"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether the log in `dir` has `needle` past its first `offset` bytes.
fn logged_since(dir: &Path, offset: u64, needle: &str) -> bool {
    let Ok(log) = fs::read(log_path(dir)) else {
        return false;
    };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
    String::from_utf8_lossy(&log[start..]).contains(needle)
}

/// Whether something on `addr` answers an inline `PING` with `+PONG`.
fn answers_ping(addr: SocketAddr) -> bool {
    let probe = || -> io::Result<bool> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        (&stream).write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        // A server still loading replies `-LOADING`; that counts as not ready yet.
        Ok(line == "+PONG\r\n")
    };
    probe().unwrap_or(false)
}

pub(crate) fn kill(child: &mut Child) {
    // Fails only if the process already exited, which is what we want anyway.
    let _ = child.kill();
    let _ = child.wait();
}

/// A port the kernel just handed out on loopback and that nothing holds right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the probe listener's address: {e}"))
        .port()
}

/// Creates a directory under the system temp dir that no other server (in this or another
/// test process) uses.
pub(crate) fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = keygate::SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("keygate-redis-{}-{n}-{nanos}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

pub(crate) fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

pub(crate) fn read_log(dir: &Path) -> String {
    let mut log = String::new();
    match File::open(log_path(dir)) {
        Ok(mut file) => {
            if let Err(e) = file.read_to_string(&mut log) {
                let _ = write!(log, "\n(cannot read the rest of the log: {e})");
            }
        }
        Err(e) => log = format!("(no log: {e})"),
    }
    log
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn render(reply: &[u8]) -> io::Result<String> {
        let mut lines = Vec::new();
        read_reply(&mut Cursor::new(reply), &mut lines)?;
        Ok(lines.join("\n"))
    }

    #[test]
    fn encodes_commands_as_resp_arrays() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert_eq!(encode(&["é"]), "*1\r\n$2\r\né\r\n".as_bytes());
    }

    #[test]
    fn renders_each_reply_kind() {
        assert_eq!(render(b"+OK\r\n").unwrap(), "OK");
        assert_eq!(render(b"-ERR nope\r\n").unwrap(), "(error) ERR nope");
        assert_eq!(render(b":42\r\n").unwrap(), "(integer) 42");
        assert_eq!(render(b"$5\r\na\r\nb!\r\n").unwrap(), "a\r\nb!");
        assert_eq!(render(b"$0\r\n\r\n").unwrap(), "");
        assert_eq!(render(b"$-1\r\n").unwrap(), "(nil)");
        assert_eq!(render(b"*-1\r\n").unwrap(), "(nil)");
        assert_eq!(
            render(b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+b\r\n").unwrap(),
            "a\n(integer) 1\n(nil)\nb"
        );
    }

    #[test]
    fn rejects_malformed_replies() {
        for reply in [
            &b""[..],
            b"OK\r\n",
            b"+OK\n",
            b"$x\r\n",
            b"$3\r\nab\r\n",
            b"$1\r\nabc",
            b"*2\r\n+a\r\n",
        ] {
            assert!(render(reply).is_err(), "{reply:?} should be rejected");
        }
    }

    #[test]
    fn serves_commands_and_restarts_empty_on_the_same_port() {
        let mut redis = RedisServer::start();
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
        assert_eq!(redis.addr(), SocketAddr::from(([127, 0, 0, 1], port)));
        assert!(redis.is_running());

        assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
        assert_eq!(redis.command(&["GET", "k"]), "v");
        assert_eq!(redis.command(&["GET", "missing"]), "(nil)");
        assert_eq!(redis.command(&["INCR", "n"]), "(integer) 1");
        assert_eq!(
            redis.command(&["NOSUCHCOMMAND"]),
            "(error) ERR unknown command 'NOSUCHCOMMAND', with args beginning with: "
        );
        assert_eq!(redis.command(&["RPUSH", "l", "a", "b"]), "(integer) 2");
        assert_eq!(redis.command(&["LRANGE", "l", "0", "-1"]), "a\nb");
        assert_eq!(
            redis.command(&["LRANGE", "none", "0", "-1"]),
            "(empty array)"
        );
        assert_eq!(redis.command(&["DEBUG", "SLEEP", "0.01"]), "OK");

        redis.stop();
        assert!(!redis.is_running());
        assert!(TcpStream::connect(redis.addr()).is_err());
        assert!(command_at(redis.addr(), &["PING"]).is_err());
        redis.stop(); // stopping twice is harmless

        redis.start_again();
        assert!(redis.is_running());
        assert_eq!(redis.port(), port);
        assert_eq!(redis.command(&["PING"]), "PONG");
        assert_eq!(redis.command(&["GET", "k"]), "(nil)");
        assert_eq!(redis.command(&["DBSIZE"]), "(integer) 0");
    }

    #[test]
    fn start_again_replaces_a_running_server_and_drop_cleans_up() {
        let mut redis = RedisServer::start();
        redis.command(&["SET", "k", "v"]);
        redis.start_again();
        assert_eq!(redis.command(&["GET", "k"]), "(nil)");

        let (addr, dir) = (redis.addr(), redis.dir.clone());
        assert!(log_path(&dir).exists());
        drop(redis);
        assert!(TcpStream::connect(addr).is_err());
        assert!(!dir.exists());
    }

    #[test]
    fn servers_are_isolated_from_each_other() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
        a.command(&["SET", "k", "a"]);
        assert_eq!(b.command(&["GET", "k"]), "(nil)");
    }
}
