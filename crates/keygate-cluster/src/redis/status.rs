//! What the Redis bus counts and reports: entries dropped and resyncs by reason, whether it
//! is delivering, and the [`BusStatus`] built from them.

use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::RedisBus;
use crate::{BusState, BusStatus};

/// What the bus counts, for [`BusStatus`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) applied: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS.len()],
    resyncs: [AtomicU64; RESYNC_REASONS.len()],
}

/// Why entries are dropped unapplied.
const REJECT_REASONS: [&str; 6] = [
    "mac",
    "malformed",
    "version",
    "unknown_type",
    "replay",
    "state",
];
/// Why a replica loads shared state from scratch.
const RESYNC_REASONS: [&str; 4] = ["epoch", "gap", "trimmed", "rollback"];

fn bump(slots: &[AtomicU64], names: &[&str], name: &str) {
    if let Some(i) = names.iter().position(|n| *n == name) {
        slots[i].fetch_add(1, Ordering::Relaxed);
    }
}

impl RedisBus {
    /// Records whether the bus is delivering, and since when it is not.
    pub(super) fn set_up(&self, up: bool) {
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

    /// Counts an entry dropped unapplied.
    pub(super) fn reject(&self, reason: &'static str) {
        bump(&self.counters.rejected, &REJECT_REASONS, reason);
    }

    /// Counts a resync.
    pub(super) fn count_resync(&self, reason: &'static str) {
        bump(&self.counters.resyncs, &RESYNC_REASONS, reason);
    }
}

impl RedisBus {
    /// The bus's state as [`crate::Bus::status`] reports it.
    pub(super) fn current_status(&self) -> BusStatus {
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
}
