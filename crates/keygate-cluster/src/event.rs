//! What the log carries and reports: the [`Event`]s, each delivered as a sequenced
//! [`Envelope`] at a [`Cursor`]; what subscribers receive ([`Delivery`]); the shared state a
//! replica loads ([`SharedState`]); and the bus's errors and status.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use keygate::{FlushId, ProviderId, PublishedKeySet, Revocation};

use crate::wire;

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
///
/// Exhaustive on purpose: every consumer (the event stream) must handle each kind.
#[derive(Debug, Clone)]
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
    /// The event cannot be written in the wire format (a revocation of a kind the library
    /// grew after this build); it did not go out.
    #[error("bus cannot carry the event: {0}")]
    Unsupported(#[from] wire::UnknownRevocation),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
