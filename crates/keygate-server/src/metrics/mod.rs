//! Prometheus metrics: the counters the sidecar keeps and their text rendering.
//!
//! Verification outcomes are counted on the hot path, so [`Metrics::observe_verification`]
//! only bumps atomics in fixed arrays: no lock, no allocation, no map lookup. Everything else
//! the scrape shows (per-provider counters, key ages, the bus) is read when `/metrics` is
//! scraped, from the [`Scrape`] the caller assembles, so it cannot drift from what
//! `/admin/v1/status` reports.
//!
//! The output is the Prometheus text exposition format 0.0.4, written by hand (`text.rs`):
//! the format is small. `prometheus-client` would not keep the hot path lock-free (a labelled
//! `Family` takes a read lock on its map for every lookup) and writes OpenMetrics instead
//! (`# EOF`, `_total` appended to counter names), which would change what scrapers see.
//!
//! `verifications.rs` holds the hot-path counters' layout and rendering, `providers.rs` and
//! `bus.rs` the families read from a [`Scrape`], `policy.rs` the policy's decisions (counted
//! by the compiled policy itself, one atomic per route and reason).

mod bus;
mod policy;
mod providers;
#[cfg(test)]
mod tests;
mod text;
mod verifications;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use keygate::ProviderStatus;

use crate::policy::SharedPolicy;
use keygate_cluster::BusStatus;
use text::Out;
use verifications::{BUCKETS, REASON_SLOTS, reason_slot};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How one request to the forward-auth endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The token verified.
    Valid,
    /// The request carried no token.
    MissingToken,
    /// The token was refused; the payload is a [`VerifyError::reason`](keygate::VerifyError::reason) code.
    Refused(&'static str),
}

/// The sidecar's own counters. Cheap to share: every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    valid: AtomicU64,
    missing: AtomicU64,
    /// Refusals by the reason's index in [`Reason::ALL`](keygate::Reason::ALL); the last slot counts
    /// reasons not in that list.
    refused: [AtomicU64; REASON_SLOTS],
    /// Observations per bucket, *not* cumulative: each observation bumps exactly one slot,
    /// the last one being the overflow above the largest bound. The rendering sums them, so
    /// `+Inf` and `_count` always agree with the buckets within one scrape.
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
    /// Admin requests by (action, HTTP status). Admin traffic is rare, so a lock is fine.
    admin: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Configuration reloads that applied a new file.
    reloads_ok: AtomicU64,
    /// Configuration reloads refused (bad file, a change that needs a restart, no file).
    reloads_error: AtomicU64,
    /// The running policy, whose own counters `keygate_policy_decisions_total` renders.
    policy: OnceLock<SharedPolicy>,
}

/// What a scrape shows besides the counters [`Metrics`] keeps itself.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    /// Every provider's state, e.g. from `Verifier::status`.
    pub providers: &'a [ProviderStatus],
    /// The invalidation bus.
    pub bus: &'a BusStatus,
    /// Revocations currently held.
    pub revocations: usize,
    /// Entries in the verified-token cache.
    pub cached_tokens: usize,
    /// Whether `/verify` accepts tokens while the bus is degraded.
    pub accept_while_degraded: bool,
    /// The instant key ages and expiries are measured from.
    pub now: SystemTime,
}

impl Metrics {
    /// All counters at zero.
    #[must_use]
    pub fn new() -> Self {
        Metrics {
            valid: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            refused: [const { AtomicU64::new(0) }; REASON_SLOTS],
            duration_buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            duration_sum_nanos: AtomicU64::new(0),
            admin: Mutex::new(BTreeMap::new()),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
            policy: OnceLock::new(),
        }
    }

    /// Counts one verification and how long it took. Lock-free and allocation-free.
    pub fn observe_verification(&self, outcome: VerifyOutcome, elapsed: Duration) {
        let counter = match outcome {
            VerifyOutcome::Valid => &self.valid,
            VerifyOutcome::MissingToken => &self.missing,
            VerifyOutcome::Refused(reason) => &self.refused[reason_slot(reason)],
        };
        counter.fetch_add(1, Ordering::Relaxed);

        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is >= the observation (`le` is inclusive); past the
        // last bound this is the overflow slot.
        let bucket = BUCKETS.partition_point(|&(_, bound)| bound < nanos);
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Renders the decisions of `policy` (whichever policy it holds at scrape time) as
    /// `keygate_policy_decisions_total`. Only the first call takes effect.
    pub fn attach_policy(&self, policy: SharedPolicy) {
        let _ = self.policy.set(policy);
    }

    /// Counts one admin API request: `action` is a stable name such as `"flush"`, `status`
    /// the HTTP status it was answered with.
    pub fn observe_admin(&self, action: &'static str, status: u16) {
        // The map only ever holds complete counts, so a panic elsewhere cannot leave it in a
        // state worth refusing to read.
        let mut admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        *admin.entry((action, status)).or_insert(0) += 1;
    }

    /// Counts one configuration reload (SIGHUP or the admin API): applied or refused.
    pub fn observe_reload(&self, applied: bool) {
        let counter = if applied {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The whole scrape in the text exposition format ([`CONTENT_TYPE`]).
    #[must_use]
    pub fn render(&self, s: &Scrape<'_>) -> String {
        let mut out = Out::with_capacity(8192 + 4096 * s.providers.len());
        self.render_verifications(&mut out);
        if let Some(policy) = self.policy.get() {
            policy::render(&mut out, &policy.load());
        }
        providers::render(&mut out, s.providers, s.now);
        bus::render(&mut out, s.bus, s.accept_while_degraded);
        out.single(
            "keygate_revocations",
            "Revocations currently held (tokens, subjects and keys).",
            "gauge",
            s.revocations,
        );
        out.single(
            "keygate_verified_tokens_cached",
            "Entries in the verified-token cache.",
            "gauge",
            s.cached_tokens,
        );

        out.family(
            "keygate_admin_requests_total",
            "Admin API requests by action and HTTP status.",
            "counter",
        );
        let admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        for (&(action, status), count) in admin.iter() {
            let status = status.to_string();
            out.sample(
                "keygate_admin_requests_total",
                &[("action", action), ("status", &status)],
                count,
            );
        }
        drop(admin);
        out.family(
            "keygate_config_reloads_total",
            "Configuration reloads (SIGHUP, POST /admin/v1/reload) by result: ok applied, error refused.",
            "counter",
        );
        for (result, counter) in [("ok", &self.reloads_ok), ("error", &self.reloads_error)] {
            out.sample(
                "keygate_config_reloads_total",
                &[("result", result)],
                counter.load(Ordering::Relaxed),
            );
        }
        out.into_string()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
