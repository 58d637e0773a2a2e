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

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use keygate::{FlushId, KeyExchange, ProviderId, PublishedKeySet, Revocation};
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use tokio::sync::{broadcast, oneshot, watch};

use self::connect::Connector;
pub use self::connect::{
    SENTINEL_DEFAULT_PORT, SentinelSettings, client_for, install_crypto_provider,
};
use super::wire::{self, EntryError, MacKeys, SignedEntry};
use super::{
    Apply, Bus, BusError, BusState, BusStatus, Cursor, DELIVERY_CAPACITY, Delivery, Envelope,
    Event, HistoryGone, SharedState,
};

mod connect;

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

/// Settings of the Redis bus.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Key prefix; every key is under the hash tag `{prefix}`.
    pub prefix: String,
    /// The MAC key ring.
    pub keys: MacKeys,
    /// The stream is trimmed to about this many entries.
    pub max_log_len: u64,
    /// Most revocations kept in shared state; past it, new ones are refused.
    pub max_revocations: u64,
    /// How long a replica may fetch a provider's keys before another tries.
    pub fetch_lease: Duration,
    /// Connect and response timeout of every command but the blocking tail read.
    pub timeout: Duration,
    /// Find the primary through these Sentinels instead of connecting to `url` (which is
    /// then unused).
    pub sentinel: Option<SentinelSettings>,
    /// TLS material for `rediss://`: a CA to trust instead of the system roots, and a client
    /// certificate for mutual TLS. `None` uses the system roots and no client certificate.
    pub tls: Option<redis::TlsCertificates>,
    /// Username for the data nodes, overriding the URL's.
    pub username: Option<String>,
    /// Password for the data nodes, overriding the URL's.
    pub password: Option<String>,
    /// Replicas that must acknowledge an appended entry (Redis `WAIT`) before a publish
    /// succeeds; 0 does not wait.
    pub min_replicas_ack: u32,
    /// How long a publish waits for those acknowledgements.
    pub replica_ack_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("prefix", &self.prefix)
            .field("keys", &self.keys)
            .field("max_log_len", &self.max_log_len)
            .field("max_revocations", &self.max_revocations)
            .field("fetch_lease", &self.fetch_lease)
            .field("timeout", &self.timeout)
            .field("sentinel", &self.sentinel)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "REDACTED"))
            .field("min_replicas_ack", &self.min_replicas_ack)
            .field("replica_ack_timeout", &self.replica_ack_timeout)
            .finish()
    }
}

/// `url` without its password, for logs and `Debug`.
#[must_use]
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl RedisSettings {
    /// Settings with defaults for everything but the URL, prefix and keys.
    #[must_use]
    pub fn new(url: String, prefix: String, keys: MacKeys) -> Self {
        RedisSettings {
            url,
            prefix,
            keys,
            max_log_len: 10_000,
            max_revocations: 1_000_000,
            fetch_lease: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            sentinel: None,
            tls: None,
            username: None,
            password: None,
            min_replicas_ack: 0,
            replica_ack_timeout: Duration::from_secs(1),
        }
    }

    /// Response timeout of the shared connection: long enough for a `WAIT` after a write.
    fn command_timeout(&self) -> Duration {
        if self.min_replicas_ack > 0 {
            self.timeout + self.replica_ack_timeout
        } else {
            self.timeout
        }
    }
}

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

/// Appends one entry if the epoch matches and its sequence number is the next one; updates
/// shared state in the same step. A flush records itself (signed, for replicas; its bare id, for
/// this script) and deletes the provider's shared key set; a key set is refused (`stale`)
/// unless it was fetched under the provider's last flush, so the shared set is never one from
/// before a flush.
const APPEND: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'noepoch', ''} end
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq + 1 ~= tonumber(ARGV[2]) then return {'seq', tostring(seq)} end
if ARGV[4] == 'revoke' and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[7]) then
  return {'full', ''}
end
if ARGV[4] == 'keyset' and (redis.call('HGET', KEYS[7], ARGV[5]) or '') ~= ARGV[8] then
  return {'stale', ''}
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[4] == 'revoke' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
elseif ARGV[4] == 'keyset' then
  redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
elseif ARGV[4] == 'flush' then
  redis.call('HSET', KEYS[6], ARGV[5], ARGV[6])
  redis.call('HSET', KEYS[7], ARGV[5], ARGV[8])
  redis.call('HDEL', KEYS[5], ARGV[5])
end
return {'ok', id}
";

/// Returns the epoch, creating it if Redis has none (a new log, or one that lost its data).
const INIT_EPOCH: &str = r"
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Deletes a fetch lease if this replica still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Where this replica is in the log.
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

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    applied: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS.len()],
    resyncs: [AtomicU64; RESYNC_REASONS.len()],
}

const REJECT_REASONS: [&str; 6] = [
    "mac",
    "malformed",
    "version",
    "unknown_type",
    "replay",
    "state",
];
const RESYNC_REASONS: [&str; 4] = ["epoch", "gap", "trimmed", "rollback"];

fn bump(slots: &[AtomicU64], names: &[&str], name: &str) {
    if let Some(i) = names.iter().position(|n| *n == name) {
        slots[i].fetch_add(1, Ordering::Relaxed);
    }
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
    /// A bus on `settings`, publishing as `origin`. Connects lazily.
    ///
    /// # Errors
    /// When a URL does not parse or the TLS material is not valid PEM.
    pub fn new(settings: RedisSettings, origin: Arc<str>) -> Result<Arc<RedisBus>, String> {
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
            append: Script::new(APPEND),
            init_epoch: Script::new(INIT_EPOCH),
            release: Script::new(RELEASE),
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

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::AcqRel);
        let mut since = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if up {
            *since = None;
            if !was {
                tracing::info!("redis bus delivering");
            }
        } else if since.is_none() {
            *since = Some(Instant::now());
            tracing::warn!("redis bus degraded: verifying with what this replica holds");
        }
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
            .arg(super::new_epoch())
            .invoke_async(conn)
            .await
    }

    /// Signs and appends `event`; returns its position.
    async fn append(&self, event: &Event) -> Result<Cursor, BusError> {
        let mut conn = self.connection().await?;
        let guess = self.position();
        let (mut epoch, mut seq) = (guess.epoch.to_string(), guess.seq);
        if !guess.known {
            epoch = match self.epoch(&mut conn).await {
                Ok(e) => e,
                Err(e) => {
                    self.broken(&e).await;
                    return Err(unavailable(&e));
                }
            };
        }
        for attempt in 0..PUBLISH_ATTEMPTS {
            let next = seq + 1;
            let entry = wire::encode(
                &self.settings.keys,
                event,
                next,
                &epoch,
                &self.origin,
                SystemTime::now(),
            );
            let (op, field, member, flush) = match event {
                Event::Revoke(r) => (
                    "revoke",
                    score(wire::revocation_expiry(r)),
                    entry.to_json(),
                    String::new(),
                ),
                Event::KeySet { provider, set } => (
                    "keyset",
                    provider.to_string(),
                    entry.to_json(),
                    set.flush
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                Event::Flush { provider, flush } => (
                    "flush",
                    provider.to_string(),
                    entry.to_json(),
                    flush.to_string(),
                ),
                _ => ("none", String::new(), String::new(), String::new()),
            };
            let mut call = self.append.prepare_invoke();
            call.key(&self.names.epoch)
                .key(&self.names.seq)
                .key(&self.names.log)
                .key(&self.names.revocations)
                .key(&self.names.keysets)
                .key(&self.names.flushes)
                .key(&self.names.flush_ids)
                .arg(&epoch)
                .arg(next)
                .arg(self.settings.max_log_len)
                .arg(op)
                .arg(field)
                .arg(member)
                .arg(self.settings.max_revocations)
                .arg(flush);
            for (name, value) in entry.fields() {
                call.arg(name).arg(value);
            }
            let reply: (String, String) = match call.invoke_async(&mut conn).await {
                Ok(r) => r,
                Err(e) => {
                    self.broken(&e).await;
                    return Err(unavailable(&e));
                }
            };
            match reply.0.as_str() {
                "ok" => {
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                    self.note_published(Seen {
                        seq: next,
                        id: reply.1.clone(),
                        mac: entry.mac.clone(),
                        app: matches!(event, Event::App { .. }).then(|| event.clone()),
                    });
                    self.await_replicas(&mut conn).await?;
                    return Ok(Cursor {
                        epoch: epoch.as_str().into(),
                        seq: next,
                        pos: reply.1.as_str().into(),
                    });
                }
                "seq" => seq = reply.1.parse().unwrap_or(seq),
                "epoch" => epoch = reply.1,
                "noepoch" => {
                    epoch = self.epoch(&mut conn).await.map_err(|e| unavailable(&e))?;
                    seq = 0;
                }
                "stale" => {
                    return Err(BusError::Unavailable(
                        "the key set was fetched before the provider's last flush; not shared"
                            .to_owned(),
                    ));
                }
                "full" => {
                    return Err(BusError::Unavailable(format!(
                        "shared revocation state holds its maximum of {} entries",
                        self.settings.max_revocations
                    )));
                }
                other => {
                    return Err(BusError::Unavailable(format!(
                        "unexpected reply from the append script: {other}"
                    )));
                }
            }
            // Lost a race with another writer: back off a little, with jitter.
            let pause = Duration::from_micros(fastrand::u64(0..=200 * u64::from(attempt + 1)));
            tokio::time::sleep(pause).await;
        }
        Err(BusError::Unavailable(
            "too much contention for the log's next sequence number".to_owned(),
        ))
    }

    /// Reads the log's end, the shared revocations, flushes and key sets, and hands them to
    /// `node`; continues from the log's end.
    ///
    /// When the log lost entries this replica had read or appended (`epoch`: Redis lost its
    /// data; `rollback`: it went back in time), the replica also gives back what it holds:
    /// its revocations (into the shared set), its flushes (a provider whose last flush the
    /// log no longer has is flushed again, so that a key set from before it cannot be
    /// restored from Redis), and the application events it read or published that the log
    /// no longer holds (published again).
    async fn full_sync(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
        reason: &'static str,
    ) -> redis::RedisResult<()> {
        let before = self.position();
        let epoch = self.epoch(conn).await?;
        // The write-back counter is read before the revocations: see the module docs.
        let (seq, reseeded, last, flushes): (Option<u64>, Option<u64>, Value, Fields) =
            redis::pipe()
                .atomic()
                .get(&self.names.seq)
                .get(&self.names.reseeded)
                .cmd("XREVRANGE")
                .arg(&self.names.log)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .hgetall(&self.names.flushes)
                .query_async(conn)
                .await?;
        let last = stream_entries(&last).into_iter().next();
        let last_id = last
            .as_ref()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let now = unix_now();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.names.revocations)
            .arg(now)
            .arg("+inf")
            .query_async(conn)
            .await?;
        let sets: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&self.names.keysets)
            .query_async(conn)
            .await?;

        // A log that looked rolled back but has another epoch lost everything: say so.
        let reason = if reason == "rollback" && before.known && *before.epoch != *epoch {
            "epoch"
        } else {
            reason
        };
        let lost = before.known && (*before.epoch != *epoch || reason == "rollback");
        let lost_apps = if lost {
            self.lost_app_events(conn).await?
        } else {
            Vec::new()
        };

        let keys = &self.settings.keys;
        let mut state = SharedState {
            revocations: self.decode_revocations(&members),
            key_sets: Vec::new(),
            flushes: Vec::new(),
        };
        for (_, s) in &flushes {
            match SignedEntry::from_json(s).and_then(|e| wire::decode(keys, &e)) {
                Ok(Envelope {
                    event: Event::Flush { provider, flush },
                    ..
                }) => state.flushes.push((provider, flush)),
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        for (_, s) in &sets {
            match SignedEntry::from_json(s).and_then(|e| wire::decode(keys, &e)) {
                Ok(Envelope {
                    event: Event::KeySet { provider, set },
                    ..
                }) => {
                    self.note_key_set(&provider, &set);
                    state.key_sets.push((provider, set));
                }
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        // Flushes the log lost: never let its older word undo them.
        let mut reflush: Vec<(ProviderId, FlushId, bool)> = Vec::new();
        if lost {
            let shared: HashMap<ProviderId, FlushId> = state.flushes.iter().cloned().collect();
            for (provider, mine) in node.flushes() {
                match shared.get(&provider) {
                    Some(theirs) if *theirs == mine => {}
                    // The log knows another flush: after a rollback, nobody can tell which
                    // came last, so flush once more, after both.
                    Some(_) => reflush.push((provider, FlushId::random(), true)),
                    // The log knows none: give it ours.
                    None => reflush.push((provider, mine, false)),
                }
            }
            let overridden: HashSet<&ProviderId> = reflush.iter().map(|(p, _, _)| p).collect();
            state.flushes.retain(|(p, _)| !overridden.contains(p));
        }
        tracing::info!(
            reason,
            epoch = %epoch,
            seq = seq.unwrap_or(0),
            revocations = state.revocations.len(),
            key_sets = state.key_sets.len(),
            flushes = state.flushes.len(),
            "bus resync"
        );
        if reason == "start" {
            node.load(state);
        } else {
            node.resync(state);
        }
        let mut reseeded = reseeded.unwrap_or(0);
        if lost {
            // Redis lost data: give it back the revocations this replica still holds, so
            // replicas that start later load them too.
            reseeded = self
                .reseed(conn, node.revocations(), &epoch, reseeded)
                .await?;
        }
        let cursor = {
            let mut pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            *pos = Position {
                epoch: epoch.as_str().into(),
                seq: seq.unwrap_or(0),
                id: last_id,
                known: true,
                reseeded,
            };
            cursor_of(&pos)
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.clear();
            if let Some((id, fields)) = &last
                && let Some(mac) = field_of(fields, "mac")
            {
                recent.push_back(Seen {
                    seq: seq.unwrap_or(0),
                    id: id.clone(),
                    mac: mac.to_owned(),
                    app: None,
                });
            }
        }
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.note_resync(reason);
        if reason != "start" {
            bump(&self.counters.resyncs, &RESYNC_REASONS, reason);
            let _ = self.tx.send(Delivery::Resync { cursor, reason });
        }
        // Published after the position moved to the log's end, so this replica reads them
        // back like any other entry.
        for (provider, flush, apply_here) in reflush {
            tracing::warn!(%provider, "the log lost a flush; flushing again");
            let event = Event::Flush { provider, flush };
            // Appended first, so that the set this replica then fetches under it is shared.
            if let Err(e) = self.append(&event).await {
                tracing::warn!(error = %e, "could not restore a flush to the log");
            }
            if apply_here {
                node.apply(&Envelope {
                    seq: 0,
                    epoch: epoch.as_str().into(),
                    origin: Arc::clone(&self.origin),
                    at: SystemTime::now(),
                    event,
                });
            }
        }
        for event in lost_apps {
            if let Err(e) = self.append(&event).await {
                tracing::warn!(error = %e, "could not restore an application event to the log");
            }
        }
        Ok(())
    }

    /// The application events this replica read or appended that the log no longer holds
    /// (at most [`MAX_REPUBLISH`], the newest).
    async fn lost_app_events(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Vec<Event>> {
        let mine: Vec<Seen> = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let unread = self.unread.lock().unwrap_or_else(PoisonError::into_inner);
            recent
                .iter()
                .chain(unread.iter())
                .filter(|s| s.app.is_some())
                .cloned()
                .collect()
        };
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let tail: Value = redis::cmd("XREVRANGE")
            .arg(&self.names.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(2 * RECENT)
            .query_async(conn)
            .await?;
        let held: HashSet<String> = stream_entries(&tail)
            .into_iter()
            .filter_map(|(_, f)| field_of(&f, "mac").map(str::to_owned))
            .collect();
        let mut lost: Vec<Event> = mine
            .into_iter()
            .filter(|s| !held.contains(&s.mac))
            .filter_map(|s| s.app)
            .collect();
        if lost.len() > MAX_REPUBLISH {
            lost.drain(..lost.len() - MAX_REPUBLISH);
        }
        Ok(lost)
    }

    /// Writes `revocations` back into the shared set. If that added any, bumps the write-back
    /// counter so that replicas already in this epoch load them. Returns the counter value
    /// this replica has now seen everything up to: `seen`, or the bumped value when nobody
    /// else bumped it meanwhile.
    async fn reseed(
        &self,
        conn: &mut MultiplexedConnection,
        revocations: Vec<Revocation>,
        epoch: &str,
        seen: u64,
    ) -> redis::RedisResult<u64> {
        let now = unix_now();
        let mut pipe = redis::pipe();
        let mut n = 0usize;
        for r in revocations {
            let expiry = wire::revocation_expiry(&r);
            if expiry.is_some_and(|e| e <= now) {
                continue;
            }
            // Every replica signs the same bytes for the same revocation, so the set keeps
            // one member however many replicas reseed it.
            let entry = wire::encode(
                &self.settings.keys,
                &Event::Revoke(r),
                0,
                "reseed",
                "reseed",
                UNIX_EPOCH,
            );
            pipe.zadd(&self.names.revocations, entry.to_json(), score(expiry));
            n += 1;
        }
        if n == 0 {
            return Ok(seen);
        }
        let added: Vec<u64> = pipe.query_async(conn).await?;
        let added: u64 = added.iter().sum();
        tracing::warn!(
            epoch,
            revocations = n,
            added,
            "restored revocations to a log that lost its data"
        );
        if added == 0 {
            return Ok(seen);
        }
        let bumped: u64 = redis::cmd("INCR")
            .arg(&self.names.reseeded)
            .query_async(conn)
            .await?;
        Ok(if bumped == seen + 1 { bumped } else { seen })
    }

    /// Loads the shared revocations again if another replica wrote some back since this one
    /// last loaded them.
    async fn reload_if_reseeded(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
    ) -> redis::RedisResult<()> {
        let current: Option<u64> = redis::cmd("GET")
            .arg(&self.names.reseeded)
            .query_async(conn)
            .await?;
        let current = current.unwrap_or(0);
        if current == self.position().reseeded {
            return Ok(());
        }
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.names.revocations)
            .arg(unix_now())
            .arg("+inf")
            .query_async(conn)
            .await?;
        let state = SharedState {
            revocations: self.decode_revocations(&members),
            ..SharedState::default()
        };
        tracing::info!(
            revocations = state.revocations.len(),
            "another replica restored revocations; loading them"
        );
        // Revocations only grow until they expire: adding them again is always safe.
        node.load(state);
        self.pos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reseeded = current;
        Ok(())
    }

    /// The revocations among signed shared-state members; anything else is dropped and counted.
    fn decode_revocations(&self, members: &[String]) -> Vec<Revocation> {
        let mut out = Vec::new();
        for m in members {
            match SignedEntry::from_json(m).and_then(|e| wire::decode(&self.settings.keys, &e)) {
                Ok(Envelope {
                    event: Event::Revoke(r),
                    ..
                }) => out.push(r),
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        out
    }

    fn reject(&self, reason: &'static str) {
        bump(&self.counters.rejected, &REJECT_REASONS, reason);
    }

    fn note_key_set(&self, provider: &ProviderId, set: &PublishedKeySet) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        // The log's order is the truth: a set under another flush replaces the held one
        // whatever the times say (a flush came between them).
        let newer = latest
            .get(provider)
            .is_none_or(|held| held.flush != set.flush || held.fetched_at < set.fetched_at);
        if newer {
            latest.insert(provider.clone(), set.clone());
            drop(latest);
            self.latest_changed.send_modify(|v| *v += 1);
        }
    }

    /// Applies one entry read from the log. Returns the resync it calls for, if any.
    async fn receive(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
        id: String,
        fields: Vec<(String, String)>,
    ) -> redis::RedisResult<Option<&'static str>> {
        let mac = field_of(&fields, "mac").unwrap_or_default().to_owned();
        let decoded =
            SignedEntry::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .and_then(|e| wire::decode(&self.settings.keys, &e));
        let pos = self.position();
        let envelope = match decoded {
            Ok(envelope) => envelope,
            Err(e) => {
                // Dropped, counted, never applied; its content is not logged.
                if e != EntryError::UnknownType {
                    tracing::warn!(entry = %id, reason = e.reason(), "dropped a bus entry");
                }
                self.reject(e.reason());
                self.advance_id(id);
                return Ok(None);
            }
        };
        if *envelope.epoch != *pos.epoch {
            let current: Option<String> = redis::cmd("GET")
                .arg(&self.names.epoch)
                .query_async(conn)
                .await?;
            if current.as_deref() == Some(&*pos.epoch) {
                // A signed entry of an older life of the log, written again: a replay.
                self.reject("replay");
                self.advance_id(id);
                return Ok(None);
            }
            return Ok(Some("epoch"));
        }
        if envelope.seq <= pos.seq {
            // A sequence number already applied is a replay only if the entry is the one
            // applied at that number. Another, validly signed, means the log went back in
            // time and was written again: resync before applying or dropping anything.
            let replay = match self.mac_at(envelope.seq) {
                Some(applied) => applied == mac,
                None => self.check_log(conn).await? != Some("rollback"),
            };
            if !replay {
                return Ok(Some("rollback"));
            }
            self.reject("replay");
            self.advance_id(id);
            return Ok(None);
        }
        if envelope.seq > pos.seq + 1 {
            let first: Value = redis::cmd("XRANGE")
                .arg(&self.names.log)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            let trimmed = stream_entries(&first)
                .first()
                .is_some_and(|(first, _)| stream_id_after(first, &pos.id));
            return Ok(Some(if trimmed { "trimmed" } else { "gap" }));
        }
        if let Event::KeySet { provider, set } = &envelope.event {
            self.note_key_set(provider, set);
        }
        if *envelope.origin != *self.origin {
            tracing::debug!(seq = envelope.seq, origin = %envelope.origin, kind = envelope.event.kind(), "applying bus event");
            node.apply(&envelope);
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
        }
        self.note_read(Seen {
            seq: envelope.seq,
            id: id.clone(),
            mac,
            app: matches!(envelope.event, Event::App { .. }).then(|| envelope.event.clone()),
        });
        let cursor = {
            let mut p = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            p.seq = envelope.seq;
            p.id = id;
            cursor_of(&p)
        };
        let _ = self.tx.send(Delivery::Event {
            cursor,
            envelope: Arc::new(envelope),
        });
        Ok(None)
    }

    fn note_published(&self, seen: Seen) {
        let mut unread = self.unread.lock().unwrap_or_else(PoisonError::into_inner);
        if unread.len() == RECENT {
            unread.pop_front();
        }
        unread.push_back(seen);
    }

    fn note_read(&self, seen: Seen) {
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|u| u.mac != seen.mac);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(seen);
    }

    /// The MAC of the entry this replica read at `seq`, if it still remembers it.
    fn mac_at(&self, seq: u64) -> Option<String> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|s| s.seq == seq)
            .map(|s| s.mac.clone())
    }

    /// Whether the log still holds, unchanged, the last entry this replica read and every
    /// entry it appended and has not read back. `None` if it does; `Some("trimmed")` if they
    /// were trimmed away (the log moved on past this replica); `Some("rollback")` if the log
    /// went back in time: Redis restarted from an older snapshot or AOF, failed over to a
    /// replica that had not caught up, or another Redis answers at the address.
    async fn check_log(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<&'static str>> {
        let mut expect: Vec<(String, String)> = Vec::new();
        if let Some(anchor) = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .back()
        {
            expect.push((anchor.id.clone(), anchor.mac.clone()));
        }
        expect.extend(
            self.unread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|u| (u.id.clone(), u.mac.clone())),
        );
        if expect.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        pipe.get(&self.names.seq)
            .cmd("XRANGE")
            .arg(&self.names.log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        for (id, _) in &expect {
            pipe.cmd("XRANGE").arg(&self.names.log).arg(id).arg(id);
        }
        let mut replies: Vec<Value> = pipe.query_async(conn).await?;
        let rest = replies.split_off(2.min(replies.len()));
        let seq = replies
            .first()
            .and_then(text)
            .and_then(|s| s.parse::<u64>().ok());
        if seq.unwrap_or(0) < self.position().seq {
            return Ok(Some("rollback"));
        }
        let first = replies
            .get(1)
            .and_then(|r| stream_entries(r).into_iter().next())
            .map(|(id, _)| id);
        for ((id, mac), reply) in expect.iter().zip(&rest) {
            match stream_entries(reply).first() {
                Some((_, fields)) if field_of(fields, "mac") == Some(mac.as_str()) => {}
                // Another entry under that id: rewritten.
                Some(_) => return Ok(Some("rollback")),
                // Gone: trimmed if the log now starts after it, else lost.
                None if first.as_deref().is_some_and(|f| stream_id_after(f, id)) => {
                    return Ok(Some("trimmed"));
                }
                None => return Ok(Some("rollback")),
            }
        }
        Ok(None)
    }

    fn advance_id(&self, id: String) {
        self.pos.lock().unwrap_or_else(PoisonError::into_inner).id = id;
    }

    /// One connected session of the tail: sync if needed, then read until an error.
    async fn session(
        &self,
        node: &dyn Apply,
        ready: &mut Option<oneshot::Sender<()>>,
    ) -> redis::RedisResult<()> {
        let (mut conn, node_a) = self.connect_to(Some(self.settings.timeout)).await?;
        // The blocking read gets its own connection with no response timeout of its own.
        let (mut tail, node_b) = self.connect_to(None).await?;
        if node_a != node_b {
            // A failover between the two connects: start over on one node.
            return Err(connect::demoted(&format!(
                "the primary moved from {node_a} to {node_b} while connecting"
            )));
        }
        let pos = self.position();
        if pos.known {
            // Back after an outage, a restart or a failover: the log may have started over or
            // gone back in time meanwhile.
            let current = self.epoch(&mut conn).await?;
            if current != *pos.epoch {
                self.full_sync(&mut conn, node, "epoch").await?;
            } else if let Some(reason) = self.check_log(&mut conn).await? {
                self.full_sync(&mut conn, node, reason).await?;
            }
        } else {
            self.full_sync(&mut conn, node, "start").await?;
        }
        self.set_up(true);
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let mut last_prune = Instant::now() - PRUNE_EVERY;
        let mut last_round = Instant::now();
        loop {
            if last_round.elapsed() >= BLOCK {
                self.still_primary(&mut conn).await?;
                // Busy or quiet, the log may go back in time without this replica's
                // connections dropping (a restore behind a proxy, say): look every round.
                if let Some(reason) = self.check_log(&mut conn).await? {
                    self.full_sync(&mut conn, node, reason).await?;
                }
                self.reload_if_reseeded(&mut conn, node).await?;
                last_round = Instant::now();
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                let _: () = redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&self.names.revocations)
                    .arg("-inf")
                    .arg(format!("({}", unix_now()))
                    .query_async(&mut conn)
                    .await?;
                last_prune = Instant::now();
            }
            let from = self.position().id;
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(2000))
                .arg("STREAMS")
                .arg(&self.names.log)
                .arg(&from);
            let read = xread.query_async::<Value>(&mut tail);
            let reply = tokio::time::timeout(BLOCK + self.settings.timeout, read)
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "tail read timed out",
                    ))
                })??;
            let entries = match &reply {
                Value::Nil => {
                    // Quiet: make sure the log did not start over under us. (Whether it went
                    // back in time is checked every round, at the top of the loop.)
                    let current = self.epoch(&mut conn).await?;
                    if current != *self.position().epoch {
                        self.full_sync(&mut conn, node, "epoch").await?;
                    }
                    continue;
                }
                other => xread_entries(other),
            };
            for (id, fields) in entries {
                if let Some(reason) = self.receive(&mut conn, node, id, fields).await? {
                    self.full_sync(&mut conn, node, reason).await?;
                    break;
                }
            }
        }
    }
}

fn cursor_of(p: &Position) -> Cursor {
    Cursor {
        epoch: Arc::clone(&p.epoch),
        seq: p.seq,
        pos: p.id.as_str().into(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn score(expiry: Option<i64>) -> String {
    expiry.map_or_else(|| "+inf".to_owned(), |e| e.to_string())
}

/// Whether stream id `a` sorts after `b` (`ms-seq`).
fn stream_id_after(a: &str, b: &str) -> bool {
    fn parts(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a) > parts(b)
}

/// The value of field `name` of a stream entry.
fn field_of<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().collect(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// `[[id, [f, v, ...]], ...]`, as XRANGE and XREVRANGE answer. Malformed items are skipped.
fn stream_entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    items(v)
        .into_iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text(parts.first()?)?;
            let flat = items(parts.get(1)?);
            let fields = flat
                .chunks_exact(2)
                .filter_map(|kv| Some((text(kv[0])?, text(kv[1])?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// `[[stream, entries]]` (RESP2) or `{stream: entries}` (RESP3), as XREAD answers.
fn xread_entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    match v {
        Value::Map(m) => m.iter().flat_map(|(_, e)| stream_entries(e)).collect(),
        other => items(other)
            .into_iter()
            .flat_map(|s| {
                items(s)
                    .get(1)
                    .map(|e| stream_entries(e))
                    .unwrap_or_default()
            })
            .collect(),
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<Cursor, BusError>> {
        Box::pin(async move { self.append(&event).await })
    }

    fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.tx.subscribe()
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
            let reply: Value = redis::cmd("XRANGE")
                .arg(&self.names.log)
                .arg(format!("({}", after.pos))
                .arg(&pos.id)
                .query_async(&mut conn)
                .await
                .map_err(|_| HistoryGone)?;
            let mut out = Vec::new();
            let mut expect = after.seq + 1;
            for (id, fields) in stream_entries(&reply) {
                let Ok(envelope) =
                    SignedEntry::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                        .and_then(|e| wire::decode(&self.settings.keys, &e))
                else {
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
                        pos: id.as_str().into(),
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

    fn status(&self) -> BusStatus {
        let pos = self.position();
        let up = self.up.load(Ordering::Acquire);
        let lag = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        let c = &self.counters;
        let counts = |slots: &[AtomicU64], names: &[&'static str]| {
            names
                .iter()
                .zip(slots)
                .map(|(n, s)| (*n, s.load(Ordering::Relaxed)))
                .collect()
        };
        BusStatus {
            primary: self
                .primary
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            last_resync: *self
                .last_resync
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            last_seq: pos.seq,
            lag_seconds: lag,
            published: c.published.load(Ordering::Relaxed),
            applied: c.applied.load(Ordering::Relaxed),
            rejected: counts(&c.rejected, &REJECT_REASONS),
            resyncs: counts(&c.resyncs, &RESYNC_REASONS),
            ..BusStatus::new(
                "redis",
                if up { BusState::Ok } else { BusState::Degraded },
                pos.epoch,
            )
        }
    }

    fn shares_key_sets(&self) -> bool {
        true
    }

    fn run(
        self: Arc<Self>,
        node: Arc<dyn Apply>,
        ready: oneshot::Sender<()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut ready = Some(ready);
            let mut backoff = BACKOFF_MIN;
            loop {
                let started = Instant::now();
                if let Err(e) = self.session(&*node, &mut ready).await {
                    self.set_up(false);
                    *self.conn.lock().await = None;
                    tracing::warn!(error = %e, "redis bus: connection lost; retrying");
                }
                // Never wait for Redis to start serving: a replica verifies without it.
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                if started.elapsed() > BACKOFF_MAX * 2 {
                    backoff = BACKOFF_MIN;
                }
                let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
    }
}

/// The key exchange over the log.
struct Exchange {
    bus: Arc<RedisBus>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange").finish_non_exhaustive()
    }
}

impl Exchange {
    fn newer(
        &self,
        id: &ProviderId,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<PublishedKeySet> {
        let now = SystemTime::now();
        self.bus
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .filter(|s| {
                s.flush.as_ref() == flush
                    && held.is_none_or(|h| s.fetched_at > h)
                    && s.fresh_until > now
            })
            .cloned()
    }

    /// The provider's set as Redis keeps it (the last one published), if it is newer than
    /// `held`, fetched under `flush` and still fresh; noted as the newest seen.
    async fn shared_set(
        &self,
        conn: &mut MultiplexedConnection,
        id: &ProviderId,
        held: Option<SystemTime>,
        flush: Option<&FlushId>,
    ) -> Option<PublishedKeySet> {
        let stored: Option<String> = redis::cmd("HGET")
            .arg(&self.bus.names.keysets)
            .arg(id.to_string())
            .query_async(conn)
            .await
            .ok()?;
        let entry = SignedEntry::from_json(&stored?).ok()?;
        match wire::decode(&self.bus.settings.keys, &entry) {
            Ok(Envelope {
                event: Event::KeySet { provider, set },
                ..
            }) if provider == *id => {
                self.bus.note_key_set(&provider, &set);
                self.newer(id, held, flush)
            }
            Ok(_) => {
                self.bus.reject("state");
                None
            }
            Err(e) => {
                self.bus.reject(e.reason());
                None
            }
        }
    }

    /// The fetch lease of `id` under `flush`: after a flush, the replicas race for a lease of
    /// their own, never waiting for a fetch that began before it.
    fn lease(&self, id: &ProviderId, flush: Option<&FlushId>) -> String {
        match flush {
            Some(flush) => format!("{}{id}#{flush}", self.bus.names.lease),
            None => format!("{}{id}", self.bus.names.lease),
        }
    }
}

impl KeyExchange for Exchange {
    fn before_fetch<'a>(
        &'a self,
        id: &'a ProviderId,
        held: Option<SystemTime>,
        flush: Option<&'a FlushId>,
    ) -> BoxFuture<'a, Option<PublishedKeySet>> {
        Box::pin(async move {
            // What the log brought is good even before the bus is up (loading shared state
            // at start applies flushes, whose refetch finds the shared set here).
            if let Some(set) = self.newer(id, held, flush) {
                return Some(set);
            }
            if !self.bus.up.load(Ordering::Acquire) {
                return None;
            }
            let mut changed = self.bus.latest_changed.subscribe();
            let mut conn = self.bus.connection().await.ok()?;
            let lease_ms = u64::try_from(self.bus.settings.fetch_lease.as_millis()).unwrap_or(5000);
            let lease = self.lease(id, flush);
            let won: Option<String> = redis::cmd("SET")
                .arg(&lease)
                .arg(&*self.bus.origin)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut conn)
                .await
                .ok()?;
            if won.is_some() {
                // A peer may have published its set and released the lease between our look
                // at the log and now, before our tail read it: the set is in Redis already.
                let shared = self.shared_set(&mut conn, id, held, flush).await;
                if shared.is_some() {
                    let _: Result<i64, _> = self
                        .bus
                        .release
                        .key(&lease)
                        .arg(&*self.bus.origin)
                        .invoke_async(&mut conn)
                        .await;
                }
                return shared;
            }
            // A lease this replica still holds from an earlier fetch is its own to use.
            let holder: Option<String> = redis::cmd("GET")
                .arg(&lease)
                .query_async(&mut conn)
                .await
                .ok()?;
            if holder.as_deref() == Some(&*self.bus.origin) {
                return None;
            }
            // A peer is fetching: wait for its set, but never longer than its lease.
            let wait = tokio::time::timeout(self.bus.settings.fetch_lease, async {
                loop {
                    if let Some(set) = self.newer(id, held, flush) {
                        return Some(set);
                    }
                    if changed.changed().await.is_err() {
                        return None;
                    }
                }
            });
            wait.await.ok().flatten()
        })
    }

    fn fetched(&self, id: &ProviderId, set: &PublishedKeySet) {
        let bus = Arc::clone(&self.bus);
        let lease = self.lease(id, set.flush.as_ref());
        let event = Event::KeySet {
            provider: id.clone(),
            set: set.clone(),
        };
        let id = id.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.publish(event).await {
                tracing::warn!(provider = %id, error = %e, "could not share a fetched key set");
            }
            // The set is out: the next fetch of this provider, by anyone, needs no waiting.
            if let Ok(mut conn) = bus.connection().await {
                let _: Result<i64, _> = bus
                    .release
                    .key(lease)
                    .arg(&*bus.origin)
                    .invoke_async(&mut conn)
                    .await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(stream_id_after("10-0", "9-5"));
        assert!(stream_id_after("9-6", "9-5"));
        assert!(!stream_id_after("9-5", "9-5"));
        assert!(stream_id_after("1-0", "0-0"));
    }

    #[test]
    fn replies_of_both_protocols_parse_and_junk_is_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("v"), bulk("1"), bulk("type"), bulk("app")]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("{k}:log"),
            Value::Array(vec![entry.clone(), Value::Int(3), Value::Nil]),
        ])]);
        let resp3 = Value::Map(vec![(bulk("{k}:log"), Value::Array(vec![entry]))]);
        for reply in [resp2, resp3] {
            let entries = xread_entries(&reply);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].0, "1-0");
            assert_eq!(
                entries[0].1,
                vec![("v".into(), "1".into()), ("type".into(), "app".into())]
            );
        }
        assert!(xread_entries(&Value::Okay).is_empty());
    }

    #[test]
    fn debug_output_never_shows_the_redis_password() {
        let keys = MacKeys::new(vec![wire::MacKey::new("k1", &[7; 32])]).unwrap();
        let settings = RedisSettings::new(
            "redis://user:hunter2-secret@10.0.0.5:6379/0".into(),
            "kg".into(),
            keys,
        );
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("REDACTED") && shown.contains("10.0.0.5"),
            "{shown}"
        );
        assert_eq!(redacted_url("not a url"), "<unparsable URL>");
    }

    #[test]
    fn every_key_shares_one_hash_tag() {
        let n = Names::new("kg");
        for k in [
            &n.epoch,
            &n.seq,
            &n.log,
            &n.revocations,
            &n.keysets,
            &n.flushes,
            &n.flush_ids,
            &n.lease,
            &n.reseeded,
        ] {
            assert!(k.starts_with("{kg}:"), "{k}");
        }
    }
}
