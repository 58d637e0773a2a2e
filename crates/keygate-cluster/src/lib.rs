//! The keygate fleet's invalidation log: a signed, sequenced log of [`Event`]s (flushes,
//! refreshes, revocations, fetched key sets, application events) that every replica of a
//! fleet applies, whether it is a `keygate serve` sidecar or a Rust service verifying in
//! process.
//!
//! A replica applies an event on itself first and then publishes it; the bus answers only
//! once it has taken the event (for the Redis log: durably appended), with its position. A
//! replica applies other replicas' events through [`Apply`] and hands every event, its own
//! included, to local subscribers (the sidecar's server-sent-events stream, [`Subscription`]).
//!
//! - [`Event`], [`Envelope`], [`Cursor`], [`Delivery`]: what the log carries and delivers.
//! - [`wire`]: the signed entry format (versioned payloads, HMAC-SHA256 under a key ring).
//! - Two backends implement [`Bus`]: [`LocalBus`], the in-process log of a single node
//!   (revocations kept in a [`state_file`] so a restart loses none), and [`redis::RedisBus`],
//!   the fleet's log on a Redis Stream, with shared state (revocations, flushes, the last
//!   good key set of each provider) and the key exchange that lets one replica fetch a
//!   provider's keys for all.
//! - [`Member`]: a verifier and its revocations as a replica of the log (the one place
//!   events change them); [`join`] / [`Fleet`] start one in a service and return a
//!   [`Joined`] handle that stops it on drop.
//! - [`Subscription`]: application events for a Rust service, resumable from a cursor.

#![warn(missing_docs)]

mod event;
mod join;
mod local;
mod member;
pub mod redis;
pub mod state_file;
mod subscription;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use keygate::{FlushId, ProviderId, Revocation};
use tokio::sync::{broadcast, oneshot};

pub use self::event::{
    BadCursor, BusError, BusState, BusStatus, Cursor, Delivery, Envelope, Event, HistoryGone,
    SharedState,
};
pub use self::join::{BusSettings, Fleet, JoinError, Joined, join};
pub use self::local::LocalBus;
pub use self::member::Member;
pub use self::subscription::Subscription;

/// What the bus does to its replica: the one place events change its state. [`Member`]
/// implements it for a verifier and its revocations.
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

/// Capacity of the channel to local subscribers; a slower one gets a resync.
pub(crate) const DELIVERY_CAPACITY: usize = 4096;

/// A fresh random epoch name.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}
