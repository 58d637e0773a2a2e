//! The hot path's counters: the reason slots and histogram buckets [`Metrics`] counts into,
//! and their rendering as `keygate_verifications_total` and
//! `keygate_verification_duration_seconds`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keygate::Reason;

use super::Metrics;
use super::text::{Float, Out};

impl Metrics {
    pub(super) fn render_verifications(&self, out: &mut Out) {
        const TOTAL: &str = "keygate_verifications_total";
        out.family(
            TOTAL,
            "Tokens verified, by result (valid, missing, invalid, unavailable) and reason code.",
            "counter",
        );
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.sample(
            TOTAL,
            &[("result", "valid"), ("reason", "ok")],
            load(&self.valid),
        );
        out.sample(
            TOTAL,
            &[("result", "missing"), ("reason", "missing_token")],
            load(&self.missing),
        );
        // Every reason is rendered, zeros included, so that rate() and absent() work from the
        // first scrape on.
        for (reason, counter) in REASONS.iter().zip(&self.refused) {
            out.sample(
                TOTAL,
                &[("result", result_of(reason)), ("reason", reason)],
                load(counter),
            );
        }
        out.sample(
            TOTAL,
            &[("result", "invalid"), ("reason", OTHER_REASON)],
            load(&self.refused[REASONS.len()]),
        );

        const DURATION: &str = "keygate_verification_duration_seconds";
        out.family(
            DURATION,
            "Time spent verifying one token, whatever the outcome.",
            "histogram",
        );
        let bucket = format!("{DURATION}_bucket");
        let mut cumulative = 0;
        for (&(le, _), counter) in BUCKETS.iter().zip(&self.duration_buckets) {
            cumulative += load(counter);
            out.sample(&bucket, &[("le", le)], cumulative);
        }
        cumulative += load(&self.duration_buckets[BUCKETS.len()]);
        out.sample(&bucket, &[("le", "+Inf")], cumulative);
        let sum = Duration::from_nanos(load(&self.duration_sum_nanos)).as_secs_f64();
        out.sample(&format!("{DURATION}_sum"), &[], Float(sum));
        out.sample(&format!("{DURATION}_count"), &[], cumulative);
    }
}

/// The library's reason codes, then the sidecar's own.
pub(super) const REASONS: [&str; Reason::ALL.len() + 1] = {
    let mut out = [""; Reason::ALL.len() + 1];
    let mut i = 0;
    while i < Reason::ALL.len() {
        out[i] = Reason::ALL[i].as_str();
        i += 1;
    }
    out[i] = "revocations_behind";
    out
};

/// One slot per reason code plus one for codes not in the list.
pub(super) const REASON_SLOTS: usize = REASONS.len() + 1;

/// The `reason` label of refusals whose code is not in [`Reason::ALL`].
const OTHER_REASON: &str = "other";

/// Histogram bounds: the `le` label as written, and the bound in nanoseconds. A cached
/// verification takes microseconds, a first verification with a fetch up to seconds.
pub(super) const BUCKETS: [(&str, u64); 15] = [
    ("0.00001", 10_000),
    ("0.000025", 25_000),
    ("0.00005", 50_000),
    ("0.0001", 100_000),
    ("0.00025", 250_000),
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("5", 5_000_000_000),
];

/// The slot of `reason` in [`Metrics::refused`]. At most 22 short comparisons, no hashing.
pub(super) fn reason_slot(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|&known| known == reason)
        .unwrap_or(REASONS.len())
}

/// The `result` label of a refusal: a provider whose keys cannot be had is an outage, not a
/// bad token, and alerts should tell the two apart.
pub(super) fn result_of(reason: &str) -> &'static str {
    match reason {
        "keys_unavailable" | "malformed_jwks" | "revocations_behind" => "unavailable",
        _ => "invalid",
    }
}
