//! The cluster bus: a signed, sequenced invalidation log on a Redis Stream.
//!
//! Keys (all under one hash tag, `{<prefix>}`, so they live in one slot of a Redis Cluster):
//! - `{p}:epoch` names the log's life. When Redis loses its data the key is gone; the next
//!   writer creates a new epoch, and every replica that sees it resyncs.
//! - `{p}:seq` is the last sequence number; `{p}:log` the stream of [`wire::SignedEntry`]s.
//!   One Lua script checks the epoch and that the entry's sequence number is the next one,
//!   appends it, bumps `{p}:seq` and updates shared state, atomically. A writer that lost a
//!   race re-signs with the number the script returns and tries again.
//! - `{p}:revocations` is a sorted set of signed revocation entries scored by the time they
//!   can go; replicas load it at start and at every resync and prune what expired.
//! - `{p}:keysets` is a hash of the last good key set of each provider (signed), for warm
//!   starts; `{p}:lease:<tenant>/<provider>[#<flush>]` who is fetching that provider's keys
//!   (after that flush) right now.
//! - `{p}:flushes` holds each provider's last flush (signed, for replicas) and
//!   `{p}:flush_ids` its bare id (for the script): a flush deletes the provider's shared key
//!   set, and a key set not fetched under the last flush is refused (`stale`), so nothing
//!   fetched before a flush is ever restored from Redis.
//! - `{p}:dpop:<hex>` remembers a DPoP proof already used, for its window
//!   ([`RedisReplayGuard`]).
//! - `{p}:reseeded` counts the times a replica wrote back revocations Redis had lost (see
//!   below); replicas watch it and then load the shared revocations again.
//!
//! Each replica tails the log from the last entry it applied. It drops (and counts) entries
//! whose MAC does not verify, and replays: entries whose sequence number it has already
//! applied *and* whose MAC is the one it applied at that number. The same number with another
//! valid entry means the log went back in time (Redis restarted from an older snapshot, a
//! failover to a replica that had not caught up); so does the last entry the replica read, or
//! one it appended, missing from the stream, which it checks on every reconnect and every
//! `BLOCK`. That, an entry from another epoch, or a sequence gap (the log was trimmed past
//! it) makes it resync: drop verified tokens, reload revocations, flushes and key sets,
//! continue from the log's end. While Redis is unreachable the replica keeps verifying with
//! what it holds, reports itself degraded and reconnects with backoff; coming back, it resumes
//! from its position, so it catches up on everything it missed or resyncs if it cannot.
//!
//! When Redis lost its data, or went back in time, every replica that notices writes back what
//! it holds: its revocations into the shared set, a flush for each provider whose last flush
//! the log lost, and the application events the log no longer has. A replica that resynced into the new epoch before
//! another wrote its own back would never see those (they are not on the log), so a write-back
//! that added anything bumps `{p}:reseeded`, and every replica checks that counter every
//! `BLOCK` (2 s) and loads the shared revocations again when it moved. It reads the counter before
//! the set, so a write-back is never both missed in the set and already counted.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamId, StreamRangeReply};
use ::redis::{Script, Value};
use futures_util::future::BoxFuture;
use keygate::clock::unix_seconds;
use keygate::{Clock, KeyExchange, ProviderId, PublishedKeySet, SystemClock};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use self::connect::Connector;
pub use self::connect::{
    SENTINEL_DEFAULT_PORT, SentinelSettings, client_for, install_crypto_provider,
};
use self::exchange::Exchange;
pub use self::replay::RedisReplayGuard;
pub use self::settings::{RedisSettings, redacted_url};
use self::status::Counters;
use crate::wire::{self, EntryError, SignedEntry};
use crate::{
    Apply, Bus, BusError, BusStatus, Cursor, DELIVERY_CAPACITY, Delivery, Envelope, Event,
    HistoryGone,
};

mod append;
mod connect;
mod exchange;
mod replay;
#[cfg(test)]
mod replay_tests;
mod rollback;
mod settings;
mod status;
mod sync;
mod tail;

/// How long a tail read blocks waiting for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries read per tail round trip.
const READ_COUNT: usize = 256;
/// Longest a publish retries after losing the race for a sequence number.
const PUBLISH_ATTEMPTS: u32 = 32;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often expired revocations are removed from the shared set.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How many of the entries it read last a replica remembers (sequence number, stream id, MAC),
/// to tell a replayed entry from a log that went back in time.
const RECENT: usize = 4096;
/// Most application events published again after a rollback lost them.
const MAX_REPUBLISH: usize = 256;

struct Names {
    epoch: String,
    seq: String,
    log: String,
    revocations: String,
    keysets: String,
    flushes: String,
    flush_ids: String,
    lease: String,
    reseeded: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        Names {
            epoch: key("epoch"),
            seq: key("seq"),
            log: key("log"),
            revocations: key("revocations"),
            keysets: key("keysets"),
            flushes: key("flushes"),
            flush_ids: key("flush_ids"),
            lease: key("lease:"),
            reseeded: key("reseeded"),
        }
    }
}

#[derive(Debug, Clone)]
struct Position {
    epoch: Arc<str>,
    seq: u64,
    /// Stream id of the last entry read (applied or dropped); `0-0` before the first.
    id: String,
    /// Whether the position came from the log (false before the first sync).
    known: bool,
    /// The `{p}:reseeded` counter when the shared revocations were last loaded.
    reseeded: u64,
}

/// Field-value pairs, as a stream entry or `HGETALL` answers them.
type Fields = Vec<(String, String)>;

/// An entry this replica read from the log, or appended to it, as it was then.
#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    id: String,
    mac: String,
    /// An application event, kept to publish it again if a rollback loses it.
    app: Option<Event>,
}

/// The Redis log.
pub struct RedisBus {
    settings: RedisSettings,
    names: Names,
    origin: Arc<str>,
    connector: Connector,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The node the last connection went to, `host:port`.
    primary: Mutex<Option<String>>,
    /// When and why this replica last loaded shared state from scratch.
    last_resync: Mutex<Option<(SystemTime, &'static str)>>,
    pos: Mutex<Position>,
    /// The last [`RECENT`] entries read, oldest first; the newest is the anchor: the log must
    /// still hold it, as it was read, or it went back in time.
    recent: Mutex<VecDeque<Seen>>,
    /// Entries this replica appended and has not read back yet.
    unread: Mutex<VecDeque<Seen>>,
    up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    counters: Counters,
    tx: broadcast::Sender<Delivery>,
    /// The newest key set seen on the log per provider, and a version bumped on every change.
    latest: Mutex<HashMap<ProviderId, PublishedKeySet>>,
    latest_changed: watch::Sender<u64>,
    append: Script,
    init_epoch: Script,
    release: Script,
    /// Wall time: entry stamps, revocation expiry, key set freshness.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.settings.prefix)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A Redis failure, as the bus reports it.
fn unavailable(e: &redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis: {e}"))
}

impl RedisBus {
    /// A bus on `settings`, publishing as `origin`, on the system clock. Connects lazily.
    ///
    /// # Errors
    /// When a URL does not parse or the TLS material is not valid PEM.
    pub fn new(settings: RedisSettings, origin: Arc<str>) -> Result<Arc<RedisBus>, String> {
        RedisBus::with_clock(settings, origin, Arc::new(SystemClock))
    }

    /// A bus on `settings`, publishing as `origin`, reading wall time from `clock`.
    ///
    /// # Errors
    /// When a URL does not parse or the TLS material is not valid PEM.
    pub fn with_clock(
        settings: RedisSettings,
        origin: Arc<str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<RedisBus>, String> {
        let connector = Connector::new(&settings)?;
        let names = Names::new(&settings.prefix);
        let (tx, _) = broadcast::channel(DELIVERY_CAPACITY);
        Ok(Arc::new(RedisBus {
            settings,
            names,
            origin,
            connector,
            conn: tokio::sync::Mutex::new(None),
            primary: Mutex::new(None),
            last_resync: Mutex::new(None),
            pos: Mutex::new(Position {
                epoch: "".into(),
                seq: 0,
                id: "0-0".to_owned(),
                known: false,
                reseeded: 0,
            }),
            recent: Mutex::new(VecDeque::new()),
            unread: Mutex::new(VecDeque::new()),
            up: AtomicBool::new(false),
            down_since: Mutex::new(Some(Instant::now())),
            counters: Counters::default(),
            tx,
            latest: Mutex::new(HashMap::new()),
            latest_changed: watch::channel(0).0,
            append: Script::new(append::APPEND),
            init_epoch: Script::new(append::INIT_EPOCH),
            release: Script::new(exchange::RELEASE),
            clock,
        }))
    }

    /// The key exchange to give the verifier: fetched key sets go out on the log, and a
    /// replica about to fetch takes a peer's fresh set or waits for the peer fetching it.
    #[must_use]
    pub fn key_exchange(self: &Arc<Self>) -> Arc<dyn KeyExchange> {
        Arc::new(Exchange {
            bus: Arc::clone(self),
        })
    }

    fn position(&self) -> Position {
        self.pos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects to the primary (with Sentinels: the one they name now) and remembers which
    /// node that is.
    async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        Ok(self.connect_to(response_timeout).await?.0)
    }

    /// The shared connection for commands that do not block.
    async fn connection(&self) -> Result<MultiplexedConnection, BusError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .connect(Some(self.settings.command_timeout()))
            .await
            .map_err(|e| unavailable(&e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the shared connection after an I/O failure, or a `READONLY` reply from a node
    /// that is no longer the primary, so the next command finds the primary again.
    async fn broken(&self, e: &redis::RedisError) {
        if connect::needs_reconnect(e) {
            *self.conn.lock().await = None;
        }
    }

    async fn epoch(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
        self.init_epoch
            .key(&self.names.epoch)
            .arg(crate::new_epoch())
            .invoke_async(conn)
            .await
    }

    /// The wall clock's time in unix seconds.
    fn unix_now(&self) -> i64 {
        unix_seconds(self.clock.now()).max(0)
    }

    /// Checks and parses an entry read from the stream; see [`wire::decode`].
    fn decode_entry(&self, entry: &StreamId) -> Result<Envelope, EntryError> {
        SignedEntry::from_fields(entry_fields(entry))
            .and_then(|e| wire::decode(&self.settings.keys, &e))
    }

    /// Checks and parses a signed shared-state member (a revocation, flush or key set).
    fn decode_member(&self, member: &str) -> Result<Envelope, EntryError> {
        SignedEntry::from_json(member).and_then(|e| wire::decode(&self.settings.keys, &e))
    }
}

fn cursor_of(p: &Position) -> Cursor {
    Cursor {
        epoch: Arc::clone(&p.epoch),
        seq: p.seq,
        pos: p.id.as_str().into(),
    }
}

/// A stream entry's fields as text; a value that is not text is left out.
fn entry_fields(entry: &StreamId) -> impl Iterator<Item = (&str, &str)> {
    entry
        .map
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), text(v)?)))
}

/// The entry's `mac` field.
fn mac_of(entry: &StreamId) -> Option<&str> {
    entry.map.get("mac").and_then(text)
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s),
        _ => None,
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<Cursor, BusError>> {
        Box::pin(async move { self.append(&event).await })
    }

    fn shares_key_sets(&self) -> bool {
        true
    }

    fn history<'a>(
        &'a self,
        after: &'a Cursor,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, HistoryGone>> {
        Box::pin(async move {
            let pos = self.position();
            if after.epoch != pos.epoch || after.seq > pos.seq {
                return Err(HistoryGone);
            }
            let mut conn = self.connection().await.map_err(|_| HistoryGone)?;
            // Only what this replica has applied: the live stream delivers the rest.
            let reply: StreamRangeReply = ::redis::cmd("XRANGE")
                .arg(&self.names.log)
                .arg(format!("({}", after.pos))
                .arg(&pos.id)
                .query_async(&mut conn)
                .await
                .map_err(|_| HistoryGone)?;
            let mut out = Vec::new();
            let mut expect = after.seq + 1;
            for entry in reply.ids {
                let Ok(envelope) = self.decode_entry(&entry) else {
                    continue;
                };
                if envelope.epoch != pos.epoch || envelope.seq < expect {
                    continue;
                }
                if envelope.seq > expect {
                    return Err(HistoryGone);
                }
                expect += 1;
                out.push(Delivery::Event {
                    cursor: Cursor {
                        epoch: Arc::clone(&pos.epoch),
                        seq: envelope.seq,
                        pos: entry.id.as_str().into(),
                    },
                    envelope: Arc::new(envelope),
                });
            }
            if expect <= pos.seq {
                // The log no longer holds everything up to where this replica is.
                return Err(HistoryGone);
            }
            Ok(out)
        })
    }

    fn cursor(&self) -> Cursor {
        cursor_of(&self.position())
    }

    fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.tx.subscribe()
    }

    fn status(&self) -> BusStatus {
        self.current_status()
    }

    fn run(
        self: Arc<Self>,
        node: Arc<dyn Apply>,
        ready: oneshot::Sender<()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.follow(node, ready))
    }
}

#[cfg(test)]
mod tests;
