//! How the Redis bus reaches the primary: one fixed URL, or the primary a set of Sentinels
//! names.
//!
//! With a URL, the connector connects to it (over TLS for `rediss://`, with the configured
//! CA and client certificate). With Sentinels it asks each in turn, starting with the one
//! that answered last, `SENTINEL get-master-addr-by-name <master>`, connects to the address
//! it names and checks that `ROLE` says `master` there; if not (a failover in progress) it
//! asks the next Sentinel. Nothing here votes or decides: the Sentinels elect the primary,
//! this only follows what they say.
//!
//! Following a failover is the callers' job, with two tools from here: the bus drops its
//! connection on I/O errors, timeouts and `READONLY` replies and connects again (which asks
//! the Sentinels again), and [`Connector::still_primary`] tells a long-lived connection that
//! its node stopped being the primary, by `ROLE` and, with Sentinels, by what they name now.

use std::fmt;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, ServerErrorKind, TlsCertificates, Value,
};

use super::{BusError, RedisBus, RedisSettings, redacted_url};

/// The port a Sentinel URL without one means.
pub const SENTINEL_DEFAULT_PORT: u16 = 26379;

/// Where the primary is: a fixed URL, or whatever the Sentinels name.
pub(super) struct Connector {
    mode: Mode,
    timeout: Duration,
}

enum Mode {
    Direct {
        client: redis::Client,
        node: String,
    },
    Sentinel {
        sentinels: Vec<redis::Client>,
        master: String,
        /// TLS to the data nodes, when the Sentinel URLs are `rediss://`.
        tls: Option<TlsCertificates>,
        username: Option<String>,
        password: Option<String>,
        /// The Sentinel that answered last; asked first next time.
        next: Mutex<usize>,
    },
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Direct { node, .. } => f.debug_struct("Connector").field("node", node).finish(),
            Mode::Sentinel {
                sentinels, master, ..
            } => f
                .debug_struct("Connector")
                .field("sentinels", &sentinels.len())
                .field("master", master)
                .finish_non_exhaustive(),
        }
    }
}

/// Settings for finding the primary through Sentinel.
#[derive(Clone)]
#[non_exhaustive]
pub struct SentinelSettings {
    /// `redis://` or `rediss://` URLs of the Sentinels, each with the Sentinel's own
    /// credentials if it needs any. `rediss://` means TLS to the Sentinels and the data nodes.
    pub urls: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
}

impl SentinelSettings {
    /// Sentinels at `urls` watching the primary named `master`.
    #[must_use]
    pub fn new(urls: Vec<String>, master: String) -> Self {
        SentinelSettings { urls, master }
    }
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redacted_url(u)).collect();
        f.debug_struct("SentinelSettings")
            .field("urls", &urls)
            .field("master", &self.master)
            .finish()
    }
}

/// Installs the process-wide rustls crypto provider (aws-lc-rs, as the rest of the
/// workspace uses) if none is installed yet. The redis crate builds its TLS configuration
/// with `rustls::ClientConfig::builder()`, which needs one.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is installed already, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A client for `url` with the settings' TLS material and data-node credentials.
///
/// # Errors
/// When the URL does not parse or the TLS material is not valid PEM.
pub fn client_for(url: &str, settings: &RedisSettings) -> Result<redis::Client, String> {
    let info = url.into_connection_info().map_err(|e| e.to_string())?;
    let info = with_credentials(
        info,
        settings.username.as_deref(),
        settings.password.as_deref(),
    );
    build(info, settings.tls.as_ref()).map_err(|e| e.to_string())
}

impl Connector {
    pub(super) fn new(settings: &RedisSettings) -> Result<Connector, String> {
        install_crypto_provider();
        let mode = match &settings.sentinel {
            None => Mode::Direct {
                client: client_for(&settings.url, settings)?,
                node: node_of(&settings.url),
            },
            Some(s) => {
                if s.urls.is_empty() {
                    return Err("no sentinels".to_owned());
                }
                let sentinels = s
                    .urls
                    .iter()
                    .map(|u| {
                        // A Sentinel's own credentials are in its URL; TLS follows its scheme.
                        let info = u
                            .as_str()
                            .into_connection_info()
                            .map_err(|e| e.to_string())?;
                        build(info, settings.tls.as_ref()).map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let tls = s
                    .urls
                    .first()
                    .is_some_and(|u| u.starts_with("rediss:"))
                    .then(|| {
                        settings.tls.clone().unwrap_or(TlsCertificates {
                            client_tls: None,
                            root_cert: None,
                        })
                    });
                Mode::Sentinel {
                    sentinels,
                    master: s.master.clone(),
                    tls,
                    username: settings.username.clone(),
                    password: settings.password.clone(),
                    next: Mutex::new(0),
                }
            }
        };
        Ok(Connector {
            mode,
            timeout: settings.timeout,
        })
    }

    /// Connects to the primary; returns the connection and the node's `host:port`.
    pub(super) async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> RedisResult<(MultiplexedConnection, String)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(response_timeout);
        match &self.mode {
            Mode::Direct { client, node } => {
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok((conn, node.clone()))
            }
            Mode::Sentinel {
                sentinels,
                tls,
                username,
                password,
                ..
            } => {
                let mut last = None;
                // Each Sentinel gets one chance: one that names a node which is not the
                // primary (yet) passes the question on to the next.
                for _ in 0..sentinels.len() {
                    let (host, port) = match self.ask_sentinels().await {
                        Ok(addr) => addr,
                        Err(e) => {
                            last = Some(e);
                            break;
                        }
                    };
                    let node = format!("{host}:{port}");
                    let addr = match tls {
                        Some(_) => ConnectionAddr::TcpTls {
                            host,
                            port,
                            insecure: false,
                            tls_params: None,
                        },
                        None => ConnectionAddr::Tcp(host, port),
                    };
                    let info = with_credentials(
                        node_info(addr)?,
                        username.as_deref(),
                        password.as_deref(),
                    );
                    let client = build(info, tls.as_ref())?;
                    let attempt = async {
                        let mut conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        self.role_is_master(&mut conn, &node).await?;
                        Ok::<_, RedisError>(conn)
                    };
                    match attempt.await {
                        Ok(conn) => return Ok((conn, node)),
                        Err(e) => {
                            tracing::debug!(node, error = %e, "the node the sentinel named is not usable");
                            self.rotate();
                            last = Some(e);
                        }
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((ErrorKind::Client, "no sentinel named a usable primary"))
                }))
            }
        }
    }

    /// Fails when the node behind `conn` (`node`, `host:port`) is no longer the primary:
    /// `ROLE` does not say `master`, or the Sentinels now name another node. A Sentinel that
    /// cannot be reached says nothing; a node that cannot be reached fails the check.
    pub(super) async fn still_primary(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
    ) -> RedisResult<()> {
        self.role_is_master(conn, node).await?;
        if let Mode::Sentinel { .. } = &self.mode {
            if let Ok((host, port)) = self.ask_sentinels().await {
                let named = format!("{host}:{port}");
                if named != node {
                    return Err(demoted(&format!(
                        "the sentinels now name {named} the primary instead of {node}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fails unless `ROLE` on `conn` says `master`. A server that refuses `ROLE` itself
    /// (renamed or denied by an ACL, as some hosted Redis do) counts as the primary, since
    /// with a fixed URL there is nothing else to try.
    async fn role_is_master(
        &self,
        conn: &mut MultiplexedConnection,
        node: &str,
    ) -> RedisResult<()> {
        let role = redis::cmd("ROLE");
        let reply = tokio::time::timeout(self.timeout, role.query_async::<Value>(conn))
            .await
            .map_err(|_| timed_out("ROLE timed out"))?;
        let reply = match reply {
            Ok(v) => v,
            Err(e)
                if matches!(self.mode, Mode::Direct { .. })
                    && matches!(
                        e.kind(),
                        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::NoPerm)
                    ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match first_text(&reply).as_deref() {
            Some("master") => Ok(()),
            Some(role) => Err(demoted(&format!("{node} is a {role} now, not the primary"))),
            None => Err(demoted(&format!(
                "{node} answered ROLE with something unexpected"
            ))),
        }
    }

    /// Asks the Sentinels in turn for the primary's address; the first answer wins.
    async fn ask_sentinels(&self) -> RedisResult<(String, u16)> {
        let Mode::Sentinel {
            sentinels, master, ..
        } = &self.mode
        else {
            return Err(RedisError::from((ErrorKind::Client, "no sentinels")));
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let start = self.first();
        let mut last = None;
        for i in 0..sentinels.len() {
            let at = (start + i) % sentinels.len();
            let ask = async {
                let mut conn = sentinels[at]
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match ask.await {
                Ok(Some(addr)) => {
                    self.set_first(at);
                    return Ok(addr);
                }
                Ok(None) => {
                    last = Some(RedisError::from((
                        ErrorKind::MasterNameNotFoundBySentinel,
                        "a sentinel does not know the configured master name",
                    )));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| RedisError::from((ErrorKind::EmptySentinelList, "no sentinels"))))
    }

    fn first(&self) -> usize {
        match &self.mode {
            Mode::Sentinel { next, .. } => *next.lock().unwrap_or_else(PoisonError::into_inner),
            Mode::Direct { .. } => 0,
        }
    }

    fn set_first(&self, at: usize) {
        if let Mode::Sentinel { next, .. } = &self.mode {
            *next.lock().unwrap_or_else(PoisonError::into_inner) = at;
        }
    }

    /// Asks the next Sentinel first from now on.
    fn rotate(&self) {
        if let Mode::Sentinel {
            next, sentinels, ..
        } = &self.mode
        {
            let mut n = next.lock().unwrap_or_else(PoisonError::into_inner);
            *n = (*n + 1) % sentinels.len().max(1);
        }
    }
}

impl RedisBus {
    /// [`connect`](Self::connect), also returning the node's `host:port`.
    pub(super) async fn connect_to(
        &self,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let (conn, node) = self.connector.connect(response_timeout).await?;
        let mut primary = self.primary.lock().unwrap_or_else(PoisonError::into_inner);
        if primary.as_deref() != Some(node.as_str()) {
            tracing::info!(node, "redis bus: connected to the primary");
            *primary = Some(node.clone());
        }
        drop(primary);
        Ok((conn, node))
    }

    /// Fails when the node behind `conn` is no longer the primary (see
    /// [`Connector::still_primary`]); then the shared connection goes too, so that no
    /// publish writes to a demoted node. For the tail's periodic check.
    pub(super) async fn still_primary(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<()> {
        let node = self
            .primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let checked = self.connector.still_primary(conn, &node).await;
        if let Err(e) = &checked {
            tracing::warn!(node, error = %e, "redis bus: the node is no longer the primary");
            *self.conn.lock().await = None;
        }
        checked
    }

    /// Records a load of shared state from scratch, for status.
    pub(super) fn note_resync(&self, reason: &'static str) {
        *self
            .last_resync
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((self.clock.now(), reason));
    }

    /// After an append: waits until `min_replicas_ack` replicas acknowledged it (`WAIT` on
    /// the connection that wrote it, which covers that write). The entry is in the log
    /// either way; when too few replicas confirm it, a failover could still lose it, so the
    /// publish fails as unconfirmed and the caller may retry (events are idempotent).
    pub(super) async fn await_replicas(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), BusError> {
        let wanted = self.settings.min_replicas_ack;
        if wanted == 0 {
            return Ok(());
        }
        let timeout_ms =
            u64::try_from(self.settings.replica_ack_timeout.as_millis()).unwrap_or(u64::MAX);
        let acked: Result<u64, RedisError> = redis::cmd("WAIT")
            .arg(wanted)
            .arg(timeout_ms)
            .query_async(conn)
            .await;
        let unconfirmed = |why: String| {
            BusError::Unconfirmed(format!(
                "{why}; the event was written but may or may not survive a failover of the \
                 primary, and other replicas may or may not apply it: retrying is safe, every \
                 event is idempotent"
            ))
        };
        match acked {
            Ok(n) if n >= u64::from(wanted) => Ok(()),
            Ok(n) => Err(unconfirmed(format!(
                "{n} of the {wanted} required redis replicas acknowledged the write within {:?}",
                self.settings.replica_ack_timeout
            ))),
            Err(e) => {
                self.broken(&e).await;
                Err(unconfirmed(format!("redis WAIT failed: {e}")))
            }
        }
    }
}

/// Whether `e` means the connection should go and the primary be found again: the node is
/// gone or slow, or it answered `READONLY` because it is a replica now.
pub(super) fn needs_reconnect(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        || e.code() == Some("READONLY")
}

/// The error [`Connector::still_primary`] reports: `READONLY`, as a demoted node's writes do.
pub(super) fn demoted(message: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::ReadOnly),
        "the node is no longer the primary",
        message.to_owned(),
    ))
}

fn timed_out(message: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
}

fn build(info: ConnectionInfo, tls: Option<&TlsCertificates>) -> RedisResult<redis::Client> {
    match (info.addr(), tls) {
        (ConnectionAddr::TcpTls { .. }, Some(certs)) => {
            redis::Client::build_with_tls(info, certs.clone())
        }
        _ => redis::Client::open(info),
    }
}

fn node_info(addr: ConnectionAddr) -> RedisResult<ConnectionInfo> {
    // Any URL gives default settings; the address is replaced.
    Ok("redis://127.0.0.1/".into_connection_info()?.set_addr(addr))
}

fn with_credentials(
    info: ConnectionInfo,
    username: Option<&str>,
    password: Option<&str>,
) -> ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    if let Some(u) = username {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    info.set_redis_settings(settings)
}

/// `host:port` of a `redis://` URL, for status; the URL itself (redacted) if it has none.
fn node_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => format!("{host}:{}", u.port().unwrap_or(6379)),
            None => redacted_url(url),
        },
        Err(_) => redacted_url(url),
    }
}

fn first_text(v: &Value) -> Option<String> {
    let first = match v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    match first {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_by_host_and_port_only() {
        assert_eq!(node_of("redis://:pw@10.0.0.5:6380/0"), "10.0.0.5:6380");
        assert_eq!(node_of("rediss://redis.internal/"), "redis.internal:6379");
        assert_eq!(node_of("nonsense"), "<unparsable URL>");
    }

    #[test]
    fn readonly_and_io_errors_call_for_a_new_connection() {
        assert!(needs_reconnect(&demoted("x")));
        assert!(needs_reconnect(&timed_out("x")));
        let busy = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "x"));
        assert!(!needs_reconnect(&busy));
    }

    #[test]
    fn role_replies_of_both_kinds_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let master = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![])]);
        assert_eq!(first_text(&master).as_deref(), Some("master"));
        let replica = Value::Array(vec![bulk("slave"), bulk("127.0.0.1"), Value::Int(6379)]);
        assert_eq!(first_text(&replica).as_deref(), Some("slave"));
        assert_eq!(first_text(&Value::Nil), None);
    }
}
