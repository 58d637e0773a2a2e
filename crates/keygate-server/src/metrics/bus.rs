//! The invalidation bus's families: whether it delivers, how far behind this replica is,
//! what it published, applied, rejected and resynced.

use std::time::SystemTime;

use super::providers::seconds_between;
use super::text::{Float, Out};
use keygate_cluster::{BusState, BusStatus};

/// Renders the bus's families.
pub(super) fn render(out: &mut Out, bus: &BusStatus, accept_while_degraded: bool) {
    out.family(
        "keygate_bus_up",
        "1 if the invalidation bus is delivering, 0 if degraded.",
        "gauge",
    );
    out.sample(
        "keygate_bus_up",
        &[("backend", bus.backend)],
        u8::from(bus.state == BusState::Ok),
    );
    out.single(
        "keygate_bus_lag_seconds",
        "How far behind the newest bus event this replica is.",
        "gauge",
        Float(bus.lag_seconds),
    );
    out.single(
        "keygate_bus_last_seq",
        "Sequence number of the last bus event published or applied.",
        "gauge",
        bus.last_seq,
    );
    out.single(
        "keygate_bus_published_total",
        "Bus events this replica published.",
        "counter",
        bus.published,
    );
    out.single(
        "keygate_bus_applied_total",
        "Bus events from other replicas this replica applied.",
        "counter",
        bus.applied,
    );
    for (name, help, by_reason) in [
        (
            "keygate_bus_rejected_total",
            "Bus entries dropped unapplied: bad MAC, malformed, replayed, unknown version or type.",
            &bus.rejected,
        ),
        (
            "keygate_bus_resyncs_total",
            "Full resyncs: the log started over (epoch), was trimmed past this replica, had a gap, or went back in time (rollback).",
            &bus.resyncs,
        ),
    ] {
        out.family(name, help, "counter");
        for (reason, n) in by_reason {
            out.sample(name, &[("reason", reason)], *n);
        }
    }
    if let Some(node) = &bus.primary {
        out.family(
            "keygate_bus_primary_info",
            "The Redis node this replica writes to (always 1; the node is the label).",
            "gauge",
        );
        out.sample("keygate_bus_primary_info", &[("node", node)], 1);
    }
    if let Some((at, reason)) = bus.last_resync {
        out.family(
            "keygate_bus_last_resync_timestamp_seconds",
            "When this replica last loaded the shared state from scratch (unix seconds), and why.",
            "gauge",
        );
        out.sample(
            "keygate_bus_last_resync_timestamp_seconds",
            &[("reason", reason)],
            Float(seconds_between(SystemTime::UNIX_EPOCH, at)),
        );
    }
    out.single(
        "keygate_bus_accepting_while_degraded",
        "1 while the bus is degraded and tokens are still accepted (revocations may be behind).",
        "gauge",
        u8::from(accept_while_degraded && bus.state != BusState::Ok),
    );
}
