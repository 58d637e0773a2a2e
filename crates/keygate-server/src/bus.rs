//! The invalidation bus: every flush, refresh and revocation an operator makes goes out as an
//! [`Event`] so that every replica the bus reaches applies it.
//!
//! The admin API applies an event on its own replica first and then publishes it; a replica
//! ignores its own events when they come back. [`LocalBus`] is the embedded default for a
//! single node: events are sequenced and handed to in-process subscribers, and nothing leaves
//! the process. The cluster backend (a durable log on Redis) implements the same trait.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use keygate::{ProviderId, Revocation};
use tokio::sync::broadcast;

/// One invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Drop a provider's cached key set and its verified tokens.
    Flush(ProviderId),
    /// Refetch a provider's key set now.
    Refresh(ProviderId),
    /// Add a revocation.
    Revoke(Revocation),
}

impl Event {
    /// A stable lowercase name for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Flush(_) => "flush",
            Event::Refresh(_) => "refresh",
            Event::Revoke(_) => "revoke",
        }
    }
}

/// An event as the bus delivers it: sequenced and stamped with its origin.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Position in the bus's order, starting at 1.
    pub seq: u64,
    /// The replica that published it.
    pub origin: Arc<str>,
    /// When it was published.
    pub at: SystemTime,
    /// What to do.
    pub event: Event,
}

/// Why an event could not be published.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The bus cannot take events right now; the event did not go out.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
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
    /// The sequence number of the last event published or applied.
    pub last_seq: u64,
    /// How far behind the newest event this replica is, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events this replica published.
    pub published: u64,
}

/// Publishes events to every replica the bus reaches.
pub trait Bus: Send + Sync + fmt::Debug + 'static {
    /// Publishes `event`; resolves to its sequence number once the bus has taken it.
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<u64, BusError>>;

    /// Subscribes to events published from now on, this replica's own included.
    fn subscribe(&self) -> broadcast::Receiver<Envelope>;

    /// The bus's state.
    fn status(&self) -> BusStatus;
}

/// The in-process bus of a single node.
#[derive(Debug)]
pub struct LocalBus {
    origin: Arc<str>,
    seq: AtomicU64,
    tx: broadcast::Sender<Envelope>,
}

impl LocalBus {
    /// A bus whose events are stamped with `origin`.
    #[must_use]
    pub fn new(origin: impl Into<Arc<str>>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        LocalBus {
            origin: origin.into(),
            seq: AtomicU64::new(0),
            tx,
        }
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Event) -> BoxFuture<'_, Result<u64, BusError>> {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        // No subscriber is not an error: a single node has applied the event already.
        let _ = self.tx.send(Envelope {
            seq,
            origin: Arc::clone(&self.origin),
            at: SystemTime::now(),
            event,
        });
        Box::pin(std::future::ready(Ok(seq)))
    }

    fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.tx.subscribe()
    }

    fn status(&self) -> BusStatus {
        let seq = self.seq.load(Ordering::Acquire);
        BusStatus {
            backend: "local",
            state: BusState::Ok,
            last_seq: seq,
            lag_seconds: 0.0,
            published: seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_bus_sequences_and_delivers() {
        let bus = LocalBus::new("node-a");
        let mut rx = bus.subscribe();
        let id = ProviderId::new("t", "p");
        assert_eq!(bus.publish(Event::Flush(id.clone())).await.unwrap(), 1);
        assert_eq!(bus.publish(Event::Refresh(id.clone())).await.unwrap(), 2);
        let first = rx.recv().await.unwrap();
        assert_eq!((first.seq, &*first.origin), (1, "node-a"));
        assert_eq!(first.event, Event::Flush(id));
        assert_eq!(rx.recv().await.unwrap().event.kind(), "refresh");
        let status = bus.status();
        assert_eq!(
            (status.backend, status.state, status.last_seq),
            ("local", BusState::Ok, 2)
        );
    }
}
