//! Joining the fleet from a Rust service: [`Fleet`] opens the log (local or Redis), [`join`]
//! makes a verifier a [`Member`] of it and keeps it following the log until the returned
//! [`Joined`] handle is dropped or shut down.

use std::path::PathBuf;
use std::sync::Arc;

use keygate::{Clock, KeyExchange, Revocations, Verifier};
use tokio::task::JoinSet;

use crate::redis::{RedisBus, RedisSettings};
use crate::state_file::StateFileError;
use crate::{Apply, Bus, LocalBus, Member};

/// Which log to join.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BusSettings {
    /// The in-process log of this process alone, keeping revocations in `state_file` when set.
    Local {
        /// Where revocations are kept across restarts.
        state_file: Option<PathBuf>,
    },
    /// The fleet's log on Redis, signed with the fleet's MAC keys.
    Redis(Box<RedisSettings>),
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The local state file cannot be used.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// A Redis URL does not parse or its TLS material is not valid PEM.
    #[error("redis: {0}")]
    Redis(String),
}

/// An opened log, not yet followed: build the verifier with its [`Fleet::key_exchange`] (so
/// that one replica's fetch serves the fleet), then [`Fleet::join`] it.
#[derive(Debug, Clone)]
pub struct Fleet {
    bus: Arc<dyn Bus>,
    exchange: Option<Arc<dyn KeyExchange>>,
}

impl Fleet {
    /// Opens the log of `settings`, publishing as `node_id` (with a random suffix, so two
    /// processes given one name still tell their events apart). Wall time (event stamps,
    /// expiry) comes from `clock`. Connects lazily.
    ///
    /// # Errors
    /// When the state file cannot be opened, or a Redis URL or TLS setting is invalid.
    pub fn open(
        node_id: &str,
        settings: BusSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Fleet, JoinError> {
        let origin: Arc<str> = format!("{node_id}#{:08x}", fastrand::u32(..)).into();
        Ok(match settings {
            BusSettings::Local { state_file: None } => Fleet {
                bus: Arc::new(LocalBus::new(origin).with_clock(clock)),
                exchange: None,
            },
            BusSettings::Local {
                state_file: Some(path),
            } => {
                let now = clock.now();
                let bus = LocalBus::with_state_file(origin, path, now)?.with_clock(clock);
                Fleet {
                    bus: Arc::new(bus),
                    exchange: None,
                }
            }
            BusSettings::Redis(settings) => {
                let bus =
                    RedisBus::with_clock(*settings, origin, clock).map_err(JoinError::Redis)?;
                Fleet {
                    exchange: Some(bus.key_exchange()),
                    bus,
                }
            }
        })
    }

    /// The key exchange to give the verifier's builder (`VerifierBuilder::key_exchange`), if
    /// the log carries key sets.
    #[must_use]
    pub fn key_exchange(&self) -> Option<Arc<dyn KeyExchange>> {
        self.exchange.clone()
    }

    /// The bus, to publish events or [`crate::Subscription`] to application events.
    #[must_use]
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Makes `verifier` a member of this log: loads the shared state into it (waiting until
    /// that is done, or has failed and the bus is degraded), then applies every other
    /// replica's event as it comes, and drops expired revocations now and then.
    /// `revocations` must be the ones the verifier consults.
    pub async fn join(self, verifier: Verifier, revocations: Revocations) -> Joined {
        let member = Arc::new(Member::new(verifier, revocations, self.bus));
        let mut tasks = JoinSet::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let node: Arc<dyn Apply> = Arc::clone(&member) as Arc<dyn Apply>;
        tasks.spawn(Arc::clone(member.bus()).run(node, ready_tx));
        let pruned = Arc::clone(&member);
        tasks.spawn(async move { pruned.keep_pruning().await });
        let _ = ready_rx.await;
        Joined { member, tasks }
    }
}

/// Opens the log of `settings` as `node_id` and makes `verifier` a member of it; see
/// [`Fleet::open`] and [`Fleet::join`]. Wall time comes from the verifier's clock. Without
/// the fleet's key exchange in the verifier, key sets other replicas fetch are still adopted
/// from the log, but this one's own fetches are not shared.
///
/// ```no_run
/// # async fn run(verifier: keygate::Verifier, revocations: keygate::Revocations)
/// # -> Result<(), keygate_cluster::JoinError> {
/// use keygate_cluster::redis::RedisSettings;
/// use keygate_cluster::wire::{MacKey, MacKeys};
/// use keygate_cluster::{BusSettings, join};
///
/// let keys = MacKeys::new(vec![MacKey::new("k1", b"the fleet's secret, 32 bytes or more")])
///     .expect("one key");
/// let settings = RedisSettings::new("redis://127.0.0.1:6379".into(), "keygate".into(), keys);
/// // `revocations` are the ones given to the verifier's builder.
/// let joined = join(verifier, revocations, "my-service", BusSettings::Redis(Box::new(settings)))
///     .await?;
/// // ... serve; revocations and flushes from any replica now reach `verifier` ...
/// joined.shutdown().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// When the log cannot be opened.
pub async fn join(
    verifier: Verifier,
    revocations: Revocations,
    node_id: &str,
    settings: BusSettings,
) -> Result<Joined, JoinError> {
    let fleet = Fleet::open(node_id, settings, Arc::clone(verifier.clock()))?;
    Ok(fleet.join(verifier, revocations).await)
}

/// A verifier following the log. Dropping it stops following (so does [`Joined::shutdown`]);
/// the verifier keeps what it has.
#[derive(Debug)]
pub struct Joined {
    member: Arc<Member>,
    tasks: JoinSet<()>,
}

impl Joined {
    /// The member: its verifier, revocations and bus.
    #[must_use]
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// Stops following the log and waits until the tasks have stopped.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}
