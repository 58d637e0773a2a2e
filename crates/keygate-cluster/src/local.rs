//! [`LocalBus`], the in-process bus of a single node: events are sequenced in process and
//! kept for resuming subscribers; with a state file, revocations survive a restart.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use keygate::{Clock, SystemClock};
use tokio::sync::{broadcast, oneshot};

use crate::state_file::{self, StateFile};
use crate::{
    Apply, Bus, BusError, BusState, BusStatus, Cursor, DELIVERY_CAPACITY, Delivery, Envelope,
    Event, HistoryGone, SharedState, new_epoch,
};

/// How many recent events the local bus keeps for resuming subscribers.
pub(crate) const LOCAL_HISTORY: usize = 4096;
/// The in-process bus of a single node, with an optional state file for revocations.
#[derive(Debug)]
pub struct LocalBus {
    origin: Arc<str>,
    epoch: Arc<str>,
    seq: AtomicU64,
    tx: broadcast::Sender<Delivery>,
    history: Mutex<VecDeque<Delivery>>,
    state: Option<Arc<StateFile>>,
    /// Stamps events and judges what in the state file expired.
    clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
        }
    }

    /// The same bus, reading wall time (event stamps, state file expiry) from `clock`.
    #[must_use]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        LocalBus { clock, ..self }
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
                    at: self.clock.now(),
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
                let now = self.clock.now();
                let outcome = tokio::task::spawn_blocking(move || state.compact(now)).await;
                if let Ok(Err(e)) = outcome {
                    tracing::error!(error = %e, "could not compact the state file");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use keygate::{FlushId, ProviderId};

    use super::*;

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

    #[tokio::test]
    async fn a_member_applies_a_token_revocation_by_digest() {
        use keygate::{Revocation, RevocationCheck, Revocations, TokenFacts};
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new("node-a"));
        let provider = keygate::ProviderConfig::builder("t", "p", "https://issuer.example")
            .static_jwks(r#"{"keys":[]}"#)
            .audiences(["a"])
            .build()
            .unwrap();
        let verifier = keygate::Verifier::builder()
            .provider(provider)
            .build()
            .unwrap();
        let revocations = Revocations::new();
        let member = crate::Member::new(verifier, revocations.clone(), bus);
        member.apply(&Event::Revoke(Revocation::Token {
            sha256: keygate::token_sha256("opaque-1"),
            exp: i64::MAX,
        }));
        let provider = ProviderId::new("t", "p");
        let mut facts = TokenFacts {
            provider: &provider,
            kid: None,
            jti: None,
            sub: None,
            iat: None,
            token: Some("opaque-1"),
        };
        assert!(revocations.check(&facts).is_some());
        facts.token = Some("opaque-2");
        assert!(revocations.check(&facts).is_none());
    }
}
