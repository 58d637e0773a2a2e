//! [`RedisReplayGuard`]: the fleet's memory of DPoP proofs already used (RFC 9449 section
//! 11.1), so that a proof replayed to another replica is refused there too.
//!
//! Each first use is one `SET {p}:dpop:<hex> 1 NX PX <ttl>`: Redis answers `OK` to exactly
//! one of any number of concurrent writers of a key, which is the atomicity the
//! [`ReplayGuard`] contract asks for, in a single round trip. The guard follows the same
//! primary as the bus (the same [`Connector`], Sentinels included); an I/O error, a timeout
//! or a `READONLY` reply from a demoted node drops the connection so the next call finds the
//! primary again. Every call is bounded by the cluster's `timeout`: when Redis cannot answer
//! in time the proof is refused as [`ReplayUnavailable`], never accepted and never left
//! waiting.
//!
//! Redis may lose proofs it acknowledged: a restart without persistence, a restore from an
//! older snapshot, a failover to a replica that had not caught up. Each of these breaks this
//! guard's connection, so the moment a connection is made again is recorded, and proofs
//! issued before it are refused as possibly replayed ([`ReplayGuard::remembers_since`]): a
//! client that makes a fresh proof per request sees at most the rest of that second refused.
//! A replica that connects for the first time learns when the dataset began instead: the
//! first guard to use a Redis (the first one ever, or the first since it came back empty)
//! writes the whole second it did so under `{prefix}:dpop:since`, and every guard refuses
//! proofs issued before that second. The server connects its guard at start-up, so on a new
//! Redis that second is the first replica's start.

use std::fmt;
use std::time::{Duration, SystemTime};

use ::redis::aio::MultiplexedConnection;
use ::redis::{RedisError, Value};
use keygate::clock::unix_millis;
use keygate::dpop::{ReplayGuard, ReplayUnavailable};
use keygate::fetch::BoxFuture;

use super::connect::{self, Connector};
use super::{RedisBus, RedisSettings};

/// The DPoP replay store on the cluster's Redis.
pub struct RedisReplayGuard {
    connector: Connector,
    /// `{prefix}:dpop:`, the start of every key.
    key_prefix: String,
    /// `{prefix}:dpop:since`: when this dataset began remembering proofs (unix ms).
    since_key: String,
    /// Bound on a whole call: connecting (when needed) and the `SET`.
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The verifier's time when the current connection was made, if it replaced another.
    since: std::sync::Mutex<Option<SystemTime>>,
    connected_before: std::sync::atomic::AtomicBool,
}

impl RedisReplayGuard {
    /// A guard on the Redis (or the Sentinels' primary) `settings` name, under its prefix.
    /// Connects lazily, on the first proof.
    ///
    /// # Errors
    /// When a URL does not parse or the TLS material is not valid PEM.
    pub fn new(settings: &RedisSettings) -> Result<RedisReplayGuard, String> {
        Ok(RedisReplayGuard {
            connector: Connector::new(settings)?,
            key_prefix: format!("{{{}}}:dpop:", settings.prefix),
            since_key: format!("{{{}}}:dpop:since", settings.prefix),
            timeout: settings.timeout,
            conn: tokio::sync::Mutex::new(None),
            since: std::sync::Mutex::new(None),
            connected_before: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The Redis key that remembers `key`.
    fn key(&self, key: &[u8; 32]) -> String {
        format!("{}{}", self.key_prefix, crate::wire::hex(key))
    }

    /// The shared connection, made if there is none (at `now`, which is recorded).
    async fn connection(&self, now: SystemTime) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let (mut c, node) = self.connector.connect(Some(self.timeout)).await?;
        tracing::debug!(node, "dpop replay store: connected to the primary");
        // When this dataset began: ours (this whole second) if nobody wrote it yet.
        let second = unix_millis(now) / 1000 * 1000;
        let (began,): (Option<u64>,) = ::redis::pipe()
            .cmd("SET")
            .arg(&self.since_key)
            .arg(second)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.since_key)
            .query_async(&mut c)
            .await?;
        let mut since = began.map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        // A connection that replaces another: Redis may have lost what it held, whatever
        // its marker says (a restore from a snapshot brings an old one back).
        if self
            .connected_before
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            since = since.max(Some(now));
        }
        let mut held = self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = (*held).max(since);
        drop(held);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Connects now, at `now` by the verifier's clock, rather than on the first proof, so
    /// that a new Redis's dataset begins with this process. A failure is not an error here:
    /// the first proof tries again.
    pub async fn connect(&self, now: SystemTime) {
        if let Err(e) = tokio::time::timeout(self.timeout, self.connection(now))
            .await
            .unwrap_or_else(|_| Err(RedisError::from((::redis::ErrorKind::Io, "timed out"))))
        {
            tracing::warn!(error = describe(&e), "dpop replay store: not connected yet");
        }
    }

    async fn set_nx(
        &self,
        key: String,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut conn = self.connection(now).await?;
        // At least 1 ms: `PX 0` is an error, and a proof is remembered for some time at least.
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Value = ::redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await?;
        match reply {
            Value::Okay => Ok(true),
            Value::SimpleString(s) if s == "OK" => Ok(true),
            Value::Nil => Ok(false),
            _ => Err(RedisError::from((
                ::redis::ErrorKind::Client,
                "unexpected reply to SET NX",
            ))),
        }
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }
}

impl RedisBus {
    /// A DPoP replay store on this bus's Redis, under its prefix, following the same primary.
    /// It has its own connection, so a slow tail or publish never delays a proof check.
    ///
    /// # Errors
    /// When a URL does not parse or the TLS material is not valid PEM (never, for settings a
    /// bus was built from).
    pub fn replay_guard(&self) -> Result<RedisReplayGuard, String> {
        RedisReplayGuard::new(&self.settings)
    }
}

impl ReplayGuard for RedisReplayGuard {
    fn first_use(
        &self,
        key: [u8; 32],
        now: SystemTime,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<bool, ReplayUnavailable>> {
        Box::pin(async move {
            let key = self.key(&key);
            match tokio::time::timeout(self.timeout, self.set_nx(key, now, ttl)).await {
                Ok(Ok(first)) => Ok(first),
                Ok(Err(e)) => {
                    if connect::needs_reconnect(&e) {
                        self.drop_connection().await;
                    }
                    // The error's kind only: a reply could quote the command, and the key is
                    // derived from the proof.
                    Err(ReplayUnavailable(format!(
                        "redis replay store: {}",
                        describe(&e)
                    )))
                }
                Err(_) => {
                    // A call that took the whole budget may have left a hung connection.
                    self.drop_connection().await;
                    Err(ReplayUnavailable(format!(
                        "redis replay store: no answer within {:?}",
                        self.timeout
                    )))
                }
            }
        })
    }

    /// When the current connection was made: what Redis held before may have been lost.
    fn remembers_since(&self) -> Option<SystemTime> {
        *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for RedisReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayGuard")
            .field("connector", &self.connector)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What went wrong, without the server's message.
fn describe(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost"
    } else if e.code() == Some("READONLY") {
        "the node is no longer the primary"
    } else {
        "command failed"
    }
}
