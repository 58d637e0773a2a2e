//! The node: the one owner of this replica's state — the verifier, the revocations it
//! consults, the handle to the invalidation bus and the sidecar's counters — and the one way
//! to change that state, [`Node::invalidate`], which applies an event here and publishes it
//! to the other replicas.
//!
//! The routers hold an `Arc<Node>` (or less) and never the runner that binds them
//! (`serve`). What an event does to a replica, whether it comes from this node's admin API
//! or from the log, is in one place: the cluster crate's [`Member`], which the node wraps,
//! the same one an in-process Rust service joins the log with.

use std::sync::Arc;

use keygate::{FlushId, ProviderId, Revocation, Revocations, Verifier};
use keygate_cluster::{
    Apply, Bus, BusError, BusState, Cursor, Envelope, Event, Member, SharedState,
};

use crate::metrics::Metrics;

/// One replica's state and its one way to change it.
///
/// The accessors are for observing the node (the routers, tests and benches read the bus
/// status, the verifier's status and the node's name on the bus); state changes go through
/// [`Node::invalidate`].
#[derive(Debug)]
pub struct Node {
    member: Member,
    node_id: Arc<str>,
    metrics: Metrics,
    accept_while_degraded: bool,
}

impl Node {
    /// A node around a verifier built to consult `revocations`.
    #[must_use]
    pub fn new(
        verifier: Verifier,
        revocations: Revocations,
        bus: Arc<dyn Bus>,
        node_id: Arc<str>,
        accept_while_degraded: bool,
    ) -> Node {
        Node {
            member: Member::new(verifier, revocations, bus),
            node_id,
            metrics: Metrics::new(),
            accept_while_degraded,
        }
    }

    /// The verifier (its clones share caches and refreshers).
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        self.member.verifier()
    }

    /// The invalidation bus.
    #[must_use]
    pub fn bus(&self) -> &Arc<dyn Bus> {
        self.member.bus()
    }

    /// This replica's name on the bus (the configured node id and a random suffix).
    #[must_use]
    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// The revocations the verifier consults.
    #[must_use]
    pub fn revocations(&self) -> &Revocations {
        self.member.held_revocations()
    }

    /// Counters for `/metrics`.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `/verify` accepts tokens while the bus is degraded.
    #[must_use]
    pub fn accept_while_degraded(&self) -> bool {
        self.accept_while_degraded
    }

    /// Whether `/verify` must refuse tokens now: the bus is degraded and the configuration
    /// says not to accept while revocations may be behind.
    #[must_use]
    pub fn refusing_while_degraded(&self) -> bool {
        !self.accept_while_degraded && self.bus().status().state != BusState::Ok
    }

    /// Applies `event` to this replica and publishes it to the others; answers its position
    /// in the log.
    ///
    /// The order depends on the event:
    /// - a flush is published before it is applied here: the refetch this replica then
    ///   starts publishes its set under the new flush, which the log takes only once it holds
    ///   the flush. If the log cannot take it, the flush still happens here (and the error is
    ///   returned);
    /// - a refresh is only published: the caller refreshed this replica already (and awaited
    ///   it, to answer with its outcome), and applying it would fetch a second time;
    /// - anything else (a revocation, an application event) is applied here, then published.
    ///
    /// # Errors
    /// [`BusError`] when the log did not confirm the event.
    pub async fn invalidate(&self, event: Event) -> Result<Cursor, BusError> {
        match &event {
            Event::Flush { .. } => {
                let published = self.bus().publish(event.clone()).await;
                self.member.apply(&event);
                published
            }
            Event::Refresh(_) => self.bus().publish(event).await,
            _ => {
                self.member.apply(&event);
                self.bus().publish(event).await
            }
        }
    }

    /// Fetches every provider's keys once at start; failures show in `/readyz` and status.
    pub async fn warm_up(&self) {
        self.verifier().warm_up().await;
        for s in self.verifier().status() {
            if s.state.has_usable_keys() {
                tracing::info!(provider = %s.id, kids = s.kids.len(), "keys loaded");
            } else if let Some(e) = &s.last_error {
                tracing::warn!(provider = %s.id, reason = e.reason, error = %e.message, "keys not loaded yet");
            }
        }
    }

    /// Drops revocations once no token they cover can still be valid, every minute, forever.
    pub async fn prune_revocations(&self) {
        self.member.keep_pruning().await;
    }
}

/// The bus drives the node's [`Member`]: what another replica's event does here is what the
/// node's own does.
impl Apply for Node {
    fn apply(&self, envelope: &Envelope) {
        Apply::apply(&self.member, envelope);
    }

    fn load(&self, state: SharedState) {
        Apply::load(&self.member, state);
    }

    fn resync(&self, state: SharedState) {
        Apply::resync(&self.member, state);
    }

    fn revocations(&self) -> Vec<Revocation> {
        Apply::revocations(&self.member)
    }

    fn flushes(&self) -> Vec<(ProviderId, FlushId)> {
        Apply::flushes(&self.member)
    }
}
