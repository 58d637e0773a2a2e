//! The invalidation bus: every flush, refresh, revocation, fetched key set and application
//! event goes out as an [`Event`] so that every replica the bus reaches applies it.
//!
//! The admin API applies an event on its own replica first and then publishes it; it answers
//! only once the bus has taken the event (for the Redis log: durably appended), with its
//! sequence number. A replica applies other replicas' events through [`Apply`] and hands every
//! event, its own included, to local subscribers (the server-sent-events stream and
//! [`Subscription`]).
//!
//! Two backends implement [`Bus`]:
//! - [`LocalBus`], the embedded default for a single node: events are sequenced in process,
//!   and revocations are appended to a local state file so a restart loses none.
//! - [`redis::RedisBus`], for a cluster: a signed, sequenced log on a Redis Stream, with
//!   revocations and the last good key set of each provider kept as shared state.
//!
//! [`wire`] is the signed entry format.

pub mod redis;
pub mod state_file;
pub mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use keygate::{FlushId, ProviderId, PublishedKeySet, Revocation};
use tokio::sync::{broadcast, oneshot};

use self::state_file::StateFile;

/// One invalidation, or an application's own event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Drop a provider's cached key set and its verified tokens, and refetch: flush `flush`,
    /// applied once per replica (a replayed one changes nothing). Key sets fetched before it
    /// are never adopted after it.
    Flush {
        /// Whose keys.
        provider: ProviderId,
        /// Which flush.
        flush: FlushId,
    },
    /// Refetch a provider's key set now.
    Refresh(ProviderId),
    /// Add a revocation.
    Revoke(Revocation),
    /// A replica fetched this key set; the others adopt it instead of calling the IdP.
    KeySet {
        /// Whose keys.
        provider: ProviderId,
        /// The document and its freshness.
        set: PublishedKeySet,
    },
    /// An application's cache entry changed (`POST /admin/v1/events`).
    App {
        /// The kind of thing, e.g. `users`.
        namespace: String,
        /// Which one.
        key: String,
    },
}

impl Event {
    /// A stable lowercase name for logs, metrics and the wire.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Flush { .. } => "flush",
            Event::Refresh(_) => "refresh",
            Event::Revoke(_) => "revoke",
            Event::KeySet { .. } => "keyset",
            Event::App { .. } => "app",
        }
    }
}

/// An event as the bus delivers it: sequenced and stamped with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Position in the log, starting at 1 in each epoch, without gaps.
    pub seq: u64,
    /// The log's epoch: it changes when the log starts over (e.g. Redis lost its data).
    pub epoch: Arc<str>,
    /// The replica that published it.
    pub origin: Arc<str>,
    /// When it was published.
    pub at: SystemTime,
    /// What to do.
    pub event: Event,
}

/// A position in the log, as the server-sent-events stream writes it in `id:` and reads it
/// back from `Last-Event-ID`: `<epoch>:<seq>:<position>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The log's epoch.
    pub epoch: Arc<str>,
    /// The last sequence number seen.
    pub seq: u64,
    /// The backend's position of that entry (the stream id on Redis).
    pub pos: Arc<str>,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.epoch, self.seq, self.pos)
    }
}

/// A `Last-Event-ID` that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id of this log")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Cursor, BadCursor> {
        if s.len() > 2 * wire::MAX_NAME_BYTES {
            return Err(BadCursor);
        }
        let mut parts = s.splitn(3, ':');
        let (Some(epoch), Some(seq), Some(pos)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BadCursor);
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid(epoch) || !valid(pos) {
            return Err(BadCursor);
        }
        Ok(Cursor {
            epoch: epoch.into(),
            seq: seq.parse().map_err(|_| BadCursor)?,
            pos: pos.into(),
        })
    }
}

/// What local subscribers receive.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Delivery {
    /// The next event of the log.
    Event {
        /// Its position.
        cursor: Cursor,
        /// The event.
        envelope: Arc<Envelope>,
    },
    /// The subscriber may have missed events (the log was trimmed past it, started over, or
    /// it fell behind): drop everything cached and continue from `cursor`.
    Resync {
        /// Where the log is now.
        cursor: Cursor,
        /// Why: `trimmed`, `epoch`, `gap`, `lagged`, `start`.
        reason: &'static str,
    },
}

/// The events a resuming subscriber asked for are gone (trimmed, or another epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log no longer holds the events after that position")]
pub struct HistoryGone;

/// Why an event could not be published.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus cannot take events right now; the event did not go out.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus took the event but could not confirm it is durable (too few Redis replicas
    /// acknowledged it): it may or may not reach other replicas. Publishing it again is safe.
    #[error("bus did not confirm the event: {0}")]
    Unconfirmed(String),
}

/// Whether the bus is delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusState {
    /// Events go out and come in.
    Ok,
    /// The bus is unreachable: local verification goes on, invalidations may be behind.
    Degraded,
}

impl BusState {
    /// A stable lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BusState::Ok => "ok",
            BusState::Degraded => "degraded",
        }
    }
}

/// The bus's state, for `/admin/v1/status`, `/readyz` and metrics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BusStatus {
    /// `"local"` or `"redis"`.
    pub backend: &'static str,
    /// Whether it is delivering.
    pub state: BusState,
    /// The log's epoch.
    pub epoch: Arc<str>,
    /// The sequence number of the last event published or applied.
    pub last_seq: u64,
    /// How far behind the newest event this replica is, in seconds (0 when caught up; while
    /// degraded, the time since the bus was last seen delivering).
    pub lag_seconds: f64,
    /// Events this replica published.
    pub published: u64,
    /// Events from other replicas this replica applied.
    pub applied: u64,
    /// Entries dropped unapplied, by reason (`mac`, `malformed`, `version`, `unknown_type`).
    pub rejected: Vec<(&'static str, u64)>,
    /// Full resyncs, by reason (`trimmed`, `epoch`, `gap`).
    pub resyncs: Vec<(&'static str, u64)>,
    /// The Redis node this replica writes to, `host:port` (the last one it connected to).
    pub primary: Option<String>,
    /// When this replica last loaded the shared state from scratch, and why (`start` or a
    /// resync reason).
    pub last_resync: Option<(SystemTime, &'static str)>,
}

impl BusStatus {
    /// A status with no activity yet.
    #[must_use]
    pub fn new(backend: &'static str, state: BusState, epoch: Arc<str>) -> Self {
        BusStatus {
            backend,
            state,
            epoch,
            last_seq: 0,
            lag_seconds: 0.0,
            published: 0,
            applied: 0,
            rejected: Vec::new(),
            resyncs: Vec::new(),
            primary: None,
            last_resync: None,
        }
    }
}

/// State shared by the whole cluster, loaded at start and at every resync.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SharedState {
    /// Revocations still in force.
    pub revocations: Vec<Revocation>,
    /// The last good key set of each provider.
    pub key_sets: Vec<(ProviderId, PublishedKeySet)>,
    /// The last flush of each provider that was ever flushed: a replica applies it before it
    /// adopts key sets, so that a set from before it is refused.
    pub flushes: Vec<(ProviderId, FlushId)>,
}

/// What the bus does to its replica. The server's `Shared` implements it; it is the one
/// place events change state.
pub trait Apply: Send + Sync + 'static {
    /// Applies an event another replica published.
    fn apply(&self, envelope: &Envelope);

    /// Installs `state` at start: revocations are added to what the replica holds (they
    /// only ever grow until they expire), key sets are adopted when newer than the held ones.
    fn load(&self, state: SharedState);

    /// Installs `state` after this replica may have missed events: drops every verified
    /// token, loads `state`, and revalidates the key sets it did not bring.
    fn resync(&self, state: SharedState);

    /// The revocations this replica holds, to restore a log that lost its data.
    fn revocations(&self) -> Vec<Revocation>;

    /// The last flush this replica applied to each provider, to restore a log that lost it.
    fn flushes(&self) -> Vec<(ProviderId, FlushId)>;
}

/// Publishes events to every replica the bus reaches.
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Publishes `event`; resolves to its position in the log (whose `seq` is its sequence
    /// number) once the bus has durably taken it.
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<Cursor, BusError>>;

    /// Live deliveries from now on, this replica's own events included.
    fn subscribe(&self) -> broadcast::Receiver<Delivery>;

    /// The events after `after`, for a subscriber resuming with `Last-Event-ID`.
    fn history<'a>(
        &'a self,
        after: &'a Cursor,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, HistoryGone>>;

    /// Where the log is now.
    fn cursor(&self) -> Cursor;

    /// The bus's state.
    fn status(&self) -> BusStatus;

    /// Whether fetched key sets travel on this bus, so a peer's refresh arrives as a
    /// [`Event::KeySet`] and a replica need not refetch on a [`Event::Refresh`].
    fn shares_key_sets(&self) -> bool {
        false
    }

    /// Runs the replica's side of the bus until dropped: loads shared state into `node`,
    /// sends on `ready` once that is done (or has failed and the bus is degraded), then
    /// applies other replicas' events as they come.
    fn run(
        self: Arc<Self>,
        node: Arc<dyn Apply>,
        ready: oneshot::Sender<()>,
    ) -> BoxFuture<'static, ()>;
}

/// How many recent events the local bus keeps for resuming subscribers.
const LOCAL_HISTORY: usize = 4096;
/// Capacity of the channel to local subscribers; a slower one gets a resync.
pub(crate) const DELIVERY_CAPACITY: usize = 4096;

/// The in-process bus of a single node, with an optional state file for revocations.
#[derive(Debug)]
pub struct LocalBus {
    origin: Arc<str>,
    epoch: Arc<str>,
    seq: AtomicU64,
    tx: broadcast::Sender<Delivery>,
    history: Mutex<VecDeque<Delivery>>,
    state: Option<Arc<StateFile>>,
}

impl LocalBus {
    /// A bus whose events are stamped with `origin`, keeping nothing on disk.
    #[must_use]
    pub fn new(origin: impl Into<Arc<str>>) -> Self {
        let (tx, _) = broadcast::channel(DELIVERY_CAPACITY);
        LocalBus {
            origin: origin.into(),
            epoch: new_epoch().into(),
            seq: AtomicU64::new(0),
            tx,
            history: Mutex::new(VecDeque::new()),
            state: None,
        }
    }

    /// A bus that appends every revocation to the state file at `path` before it answers,
    /// and loads the file's revocations when it runs.
    ///
    /// # Errors
    /// When the file cannot be created, read or rewritten.
    pub fn with_state_file(
        origin: impl Into<Arc<str>>,
        path: PathBuf,
        now: SystemTime,
    ) -> Result<Self, state_file::StateFileError> {
        let state = StateFile::open(path, now)?;
        Ok(LocalBus {
            state: Some(Arc::new(state)),
            ..LocalBus::new(origin)
        })
    }

    fn cursor_at(&self, seq: u64) -> Cursor {
        Cursor {
            epoch: Arc::clone(&self.epoch),
            seq,
            pos: seq.to_string().into(),
        }
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<Cursor, BusError>> {
        Box::pin(async move {
            if let (Some(state), Event::Revoke(r)) = (&self.state, &event) {
                let state = Arc::clone(state);
                let r = r.clone();
                tokio::task::spawn_blocking(move || state.append(&r))
                    .await
                    .map_err(|e| BusError::Unavailable(format!("state file: {e}")))?
                    .map_err(|e| BusError::Unavailable(e.to_string()))?;
            }
            // One lock orders sequence numbers, history and delivery alike.
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            let delivery = Delivery::Event {
                cursor: self.cursor_at(seq),
                envelope: Arc::new(Envelope {
                    seq,
                    epoch: Arc::clone(&self.epoch),
                    origin: Arc::clone(&self.origin),
                    at: SystemTime::now(),
                    event,
                }),
            };
            if history.len() == LOCAL_HISTORY {
                history.pop_front();
            }
            history.push_back(delivery.clone());
            // No subscriber is not an error: a single node has applied the event already.
            let _ = self.tx.send(delivery);
            Ok(self.cursor_at(seq))
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.tx.subscribe()
    }

    fn history<'a>(
        &'a self,
        after: &'a Cursor,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, HistoryGone>> {
        let result = (|| {
            if after.epoch != self.epoch {
                return Err(HistoryGone);
            }
            let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            let newest = self.seq.load(Ordering::Acquire);
            if after.seq > newest {
                return Err(HistoryGone);
            }
            let oldest = newest + 1 - history.len() as u64;
            if after.seq + 1 < oldest {
                return Err(HistoryGone);
            }
            let skip = usize::try_from(after.seq + 1 - oldest).unwrap_or(usize::MAX);
            Ok(history.iter().skip(skip).cloned().collect())
        })();
        Box::pin(std::future::ready(result))
    }

    fn cursor(&self) -> Cursor {
        self.cursor_at(self.seq.load(Ordering::Acquire))
    }

    fn status(&self) -> BusStatus {
        let seq = self.seq.load(Ordering::Acquire);
        BusStatus {
            last_seq: seq,
            published: seq,
            ..BusStatus::new("local", BusState::Ok, Arc::clone(&self.epoch))
        }
    }

    fn run(
        self: Arc<Self>,
        node: Arc<dyn Apply>,
        ready: oneshot::Sender<()>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(state) = &self.state {
                node.load(SharedState {
                    revocations: state.loaded(),
                    ..SharedState::default()
                });
            }
            let _ = ready.send(());
            // Keep the file short: rewrite it with what is still in force now and then.
            let Some(state) = self.state.clone() else {
                return;
            };
            let mut tick = tokio::time::interval(state_file::COMPACT_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let state = Arc::clone(&state);
                let outcome =
                    tokio::task::spawn_blocking(move || state.compact(SystemTime::now())).await;
                if let Ok(Err(e)) = outcome {
                    tracing::error!(error = %e, "could not compact the state file");
                }
            }
        })
    }
}

/// A fresh random epoch name.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A subscription to application events, for Rust services in the same process as the bus:
/// the library face of `GET /admin/v1/events/stream`.
///
/// It yields every [`Event::App`] after the starting cursor in log order, and a
/// [`Delivery::Resync`] whenever events may have been missed; the subscriber must then drop
/// everything it caches.
pub struct Subscription {
    bus: Arc<dyn Bus>,
    live: broadcast::Receiver<Delivery>,
    backlog: VecDeque<Delivery>,
    last: Option<Cursor>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Subscribes from `after` (a resumed stream) or from now on.
    pub async fn new(bus: Arc<dyn Bus>, after: Option<Cursor>) -> Subscription {
        // Subscribe before reading history so nothing falls between the two.
        let live = bus.subscribe();
        let mut backlog = VecDeque::new();
        let last = match after {
            Some(after) => match bus.history(&after).await {
                Ok(events) => {
                    backlog.extend(events);
                    Some(after)
                }
                Err(HistoryGone) => {
                    let cursor = bus.cursor();
                    backlog.push_back(Delivery::Resync {
                        cursor: cursor.clone(),
                        reason: "trimmed",
                    });
                    Some(cursor)
                }
            },
            None => Some(bus.cursor()),
        };
        Subscription {
            bus,
            live,
            backlog,
            last,
        }
    }

    /// The next application event or resync; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let delivery = match self.backlog.pop_front() {
                Some(d) => d,
                None => match self.live.recv().await {
                    Ok(d) => d,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let cursor = self.bus.cursor();
                        self.last = Some(cursor.clone());
                        return Some(Delivery::Resync {
                            cursor,
                            reason: "lagged",
                        });
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            match &delivery {
                Delivery::Event { cursor, envelope } => {
                    let seen = self
                        .last
                        .as_ref()
                        .is_some_and(|l| l.epoch == cursor.epoch && cursor.seq <= l.seq);
                    if seen {
                        continue;
                    }
                    self.last = Some(cursor.clone());
                    if matches!(envelope.event, Event::App { .. }) {
                        return Some(delivery);
                    }
                }
                Delivery::Resync { cursor, .. } => {
                    self.last = Some(cursor.clone());
                    return Some(delivery);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(key: &str) -> Event {
        Event::App {
            namespace: "users".into(),
            key: key.into(),
        }
    }

    fn app_key(d: &Delivery) -> Option<&str> {
        match d {
            Delivery::Event { envelope, .. } => match &envelope.event {
                Event::App { key, .. } => Some(key),
                _ => None,
            },
            Delivery::Resync { .. } => None,
        }
    }

    #[tokio::test]
    async fn local_bus_sequences_and_delivers() {
        let bus = LocalBus::new("node-a");
        let mut rx = bus.subscribe();
        let id = ProviderId::new("t", "p");
        let flush = Event::Flush {
            provider: id.clone(),
            flush: FlushId::random(),
        };
        assert_eq!(bus.publish(flush.clone()).await.unwrap().seq, 1);
        assert_eq!(
            bus.publish(Event::Refresh(id.clone())).await.unwrap().seq,
            2
        );
        let Delivery::Event { cursor, envelope } = rx.recv().await.unwrap() else {
            panic!("expected an event");
        };
        assert_eq!((envelope.seq, &*envelope.origin), (1, "node-a"));
        assert_eq!(envelope.event, flush);
        assert_eq!(cursor.seq, 1);
        let status = bus.status();
        assert_eq!(
            (status.backend, status.state, status.last_seq),
            ("local", BusState::Ok, 2)
        );
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = Cursor {
            epoch: "00ab".into(),
            seq: 42,
            pos: "1700000000000-0".into(),
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for junk in ["", "a:b", "e:x:1", "e:1:", ":1:1", "e:1:1\n", "e/1:1:1"] {
            assert_eq!(junk.parse::<Cursor>(), Err(BadCursor), "{junk:?}");
        }
        assert!("e:1:".repeat(400).parse::<Cursor>().is_err());
    }

    #[tokio::test]
    async fn a_subscription_resumes_after_its_cursor_and_sees_only_app_events() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new("n"));
        bus.publish(app("1")).await.unwrap();
        bus.publish(Event::Flush {
            provider: ProviderId::new("t", "p"),
            flush: FlushId::random(),
        })
        .await
        .unwrap();
        let after_first = Cursor {
            seq: 1,
            pos: "1".into(),
            ..bus.cursor()
        };
        bus.publish(app("3")).await.unwrap();
        let mut sub = Subscription::new(Arc::clone(&bus), Some(after_first)).await;
        assert_eq!(app_key(&sub.next().await.unwrap()), Some("3"));
        bus.publish(app("4")).await.unwrap();
        assert_eq!(app_key(&sub.next().await.unwrap()), Some("4"));
    }

    #[tokio::test]
    async fn a_subscription_from_another_epoch_or_a_trimmed_position_is_told_to_resync() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new("n"));
        for i in 0..(LOCAL_HISTORY + 10) {
            bus.publish(app(&i.to_string())).await.unwrap();
        }
        for stale in [
            Cursor {
                seq: 3,
                pos: "3".into(),
                ..bus.cursor()
            },
            Cursor {
                epoch: "other".into(),
                ..bus.cursor()
            },
        ] {
            let mut sub = Subscription::new(Arc::clone(&bus), Some(stale)).await;
            match sub.next().await.unwrap() {
                Delivery::Resync { cursor, reason } => {
                    assert_eq!((cursor, reason), (bus.cursor(), "trimmed"));
                }
                other => panic!("expected a resync, got {other:?}"),
            }
        }
        // The newest entries are still there.
        let near = Cursor {
            seq: bus.cursor().seq - 1,
            ..bus.cursor()
        };
        let mut sub = Subscription::new(Arc::clone(&bus), Some(near)).await;
        let last = (LOCAL_HISTORY + 9).to_string();
        assert_eq!(app_key(&sub.next().await.unwrap()), Some(last.as_str()));
    }
}
