//! Prometheus metrics: the counters the sidecar keeps and their text rendering.
//!
//! Verification outcomes are counted on the hot path, so [`Metrics::observe_verification`]
//! only bumps atomics in fixed arrays: no lock, no allocation, no map lookup. Everything else
//! the scrape shows (per-provider counters, key ages, the bus) is read when `/metrics` is
//! scraped, from the [`Scrape`] the caller assembles, so it cannot drift from what
//! `/admin/v1/status` reports.
//!
//! The output is the Prometheus text exposition format 0.0.4, written by hand: the format is
//! small, and a metrics crate would bring a registry and a global we do not need.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keygate::{ProviderState, ProviderStatus, Reason};

use crate::bus::{BusState, BusStatus};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How one request to the forward-auth endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The token verified.
    Valid,
    /// The request carried no token.
    MissingToken,
    /// The token was refused; the payload is a [`keygate::VerifyError::reason`] code.
    Refused(&'static str),
}

/// The sidecar's own counters. Cheap to share: every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    valid: AtomicU64,
    missing: AtomicU64,
    /// Refusals by the reason's index in [`Reason::ALL`]; the last slot counts
    /// reasons not in that list.
    refused: [AtomicU64; REASON_SLOTS],
    /// Observations per bucket, *not* cumulative: each observation bumps exactly one slot,
    /// the last one being the overflow above the largest bound. The rendering sums them, so
    /// `+Inf` and `_count` always agree with the buckets within one scrape.
    duration_buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
    /// Admin requests by (action, HTTP status). Admin traffic is rare, so a lock is fine.
    admin: Mutex<BTreeMap<(&'static str, u16), u64>>,
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

    /// Counts one admin API request: `action` is a stable name such as `"flush"`, `status`
    /// the HTTP status it was answered with.
    pub fn observe_admin(&self, action: &'static str, status: u16) {
        // The map only ever holds complete counts, so a panic elsewhere cannot leave it in a
        // state worth refusing to read.
        let mut admin = self.admin.lock().unwrap_or_else(PoisonError::into_inner);
        *admin.entry((action, status)).or_insert(0) += 1;
    }

    /// The whole scrape in the text exposition format ([`CONTENT_TYPE`]).
    #[must_use]
    pub fn render(&self, s: &Scrape<'_>) -> String {
        let mut out = Out(String::with_capacity(8192 + 4096 * s.providers.len()));
        self.render_verifications(&mut out);
        render_providers(&mut out, s.providers, s.now);
        render_bus(&mut out, s.bus, s.accept_while_degraded);

        out.family(
            "keygate_revocations",
            "Revocations currently held (tokens, subjects and keys).",
            "gauge",
        );
        out.sample("keygate_revocations", &[], s.revocations);
        out.family(
            "keygate_verified_tokens_cached",
            "Entries in the verified-token cache.",
            "gauge",
        );
        out.sample("keygate_verified_tokens_cached", &[], s.cached_tokens);

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
        out.0
    }

    fn render_verifications(&self, out: &mut Out) {
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The library's reason codes, then the sidecar's own.
const REASONS: [&str; Reason::ALL.len() + 1] = {
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
const REASON_SLOTS: usize = REASONS.len() + 1;

/// The `reason` label of refusals whose code is not in [`Reason::ALL`].
const OTHER_REASON: &str = "other";

/// Histogram bounds: the `le` label as written, and the bound in nanoseconds. A cached
/// verification takes microseconds, a first verification with a fetch up to seconds.
const BUCKETS: [(&str, u64); 15] = [
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

/// The provider states, each rendered as its own series of `keygate_provider_state`.
const STATES: [ProviderState; 5] = [
    ProviderState::Fresh,
    ProviderState::Stale,
    ProviderState::Failing,
    ProviderState::Unavailable,
    ProviderState::Empty,
];

/// The slot of `reason` in [`Metrics::refused`]. At most 22 short comparisons, no hashing.
fn reason_slot(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|&known| known == reason)
        .unwrap_or(REASONS.len())
}

/// The `result` label of a refusal: a provider whose keys cannot be had is an outage, not a
/// bad token, and alerts should tell the two apart.
fn result_of(reason: &str) -> &'static str {
    match reason {
        "keys_unavailable" | "malformed_jwks" | "revocations_behind" => "unavailable",
        _ => "invalid",
    }
}

fn render_providers(out: &mut Out, providers: &[ProviderStatus], now: SystemTime) {
    // The text format wants each family's samples together, so the loop over providers sits
    // inside the loop over families.

    const FETCHES: &str = "keygate_jwks_fetches_total";
    out.family(
        FETCHES,
        "JWKS refresh cycles by result (ok, error); see keygate_jwks_requests_total for requests.",
        "counter",
    );
    for p in providers {
        let [tenant, provider] = labels(p);
        for (result, count) in [
            ("ok", p.counters.refreshes),
            ("error", p.counters.refresh_errors),
        ] {
            out.sample(FETCHES, &[tenant, provider, ("result", result)], count);
        }
    }

    // Every HTTP request to the IdP (retries and discovery included): the load it sees.
    const REQUESTS: &str = "keygate_jwks_requests_total";
    out.family(
        REQUESTS,
        "HTTP requests to the IdP by status (the code, or timeout, error), retries included.",
        "counter",
    );
    for p in providers {
        let [tenant, provider] = labels(p);
        for (status, count) in &p.counters.requests {
            out.sample(REQUESTS, &[tenant, provider, ("status", status)], count);
        }
    }

    type Counter = fn(&ProviderStatus) -> u64;
    let counters: [(&str, &str, Counter); 5] = [
        (
            "keygate_key_cache_hits_total",
            "Verifications that found their key cached.",
            |p| p.counters.hits,
        ),
        (
            "keygate_key_cache_misses_total",
            "Verifications whose key was not cached.",
            |p| p.counters.misses,
        ),
        (
            "keygate_token_cache_hits_total",
            "Verifications answered from the verified-token cache.",
            |p| p.counters.token_cache_hits,
        ),
        (
            "keygate_unknown_kid_rejections_total",
            "Tokens refused because their kid is not in the key set.",
            |p| p.counters.unknown_kid_rejections,
        ),
        (
            "keygate_jwks_adopted_total",
            "Key sets adopted from another replica instead of fetched from the IdP.",
            |p| p.counters.adopted,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, help, "counter");
        for p in providers {
            out.sample(name, &labels(p), value(p));
        }
    }

    const KEYS: &str = "keygate_jwks_keys";
    out.family(KEYS, "Usable keys in the cached key set.", "gauge");
    for p in providers {
        out.sample(KEYS, &labels(p), p.kids.len());
    }

    const AGE: &str = "keygate_jwks_key_age_seconds";
    out.family(
        AGE,
        "Seconds since the cached key set was fetched (absent when none is cached).",
        "gauge",
    );
    for p in providers {
        if let Some(fetched_at) = p.fetched_at {
            out.sample(AGE, &labels(p), Float(seconds_between(fetched_at, now)));
        }
    }

    const EXPIRES: &str = "keygate_jwks_expires_in_seconds";
    out.family(
        EXPIRES,
        "Seconds until the cached key set stops being fresh; negative once stale \
         (absent for static sets and when none is cached).",
        "gauge",
    );
    for p in providers {
        if let Some(expires_at) = p.expires_at {
            out.sample(EXPIRES, &labels(p), Float(seconds_between(now, expires_at)));
        }
    }

    const STATE: &str = "keygate_provider_state";
    out.family(
        STATE,
        "1 for the provider's current key state, 0 for the others.",
        "gauge",
    );
    for p in providers {
        let [tenant, provider] = labels(p);
        for state in STATES {
            let value = u8::from(state == p.state);
            out.sample(STATE, &[tenant, provider, ("state", state.as_str())], value);
        }
        // A state added to the library after this list was written still shows up.
        if !STATES.contains(&p.state) {
            out.sample(STATE, &[tenant, provider, ("state", p.state.as_str())], 1);
        }
    }

    const USABLE: &str = "keygate_provider_usable";
    out.family(
        USABLE,
        "1 if the provider's tokens can be verified without fetching, 0 otherwise.",
        "gauge",
    );
    for p in providers {
        out.sample(USABLE, &labels(p), u8::from(p.state.has_usable_keys()));
    }

    render_sources(out, providers, now);
}

/// Per-URL series of providers with several JWKS URLs (`jwks_uris`), labelled `url`; the
/// families appear only when some provider has several URLs.
fn render_sources(out: &mut Out, providers: &[ProviderStatus], now: SystemTime) {
    if providers.iter().all(|p| p.sources.is_empty()) {
        return;
    }
    let each = || {
        providers.iter().flat_map(|p| {
            let [tenant, provider] = labels(p);
            p.sources
                .iter()
                .map(move |u| ([tenant, provider, ("url", u.url.as_str())], u))
        })
    };

    const FETCHES: &str = "keygate_jwks_source_fetches_total";
    out.family(
        FETCHES,
        "Fetches of one JWKS URL of a provider with several, by result (ok, error).",
        "counter",
    );
    for ([t, p, url], u) in each() {
        for (result, count) in [("ok", u.refreshes), ("error", u.refresh_errors)] {
            out.sample(FETCHES, &[t, p, url, ("result", result)], count);
        }
    }

    const KEYS: &str = "keygate_jwks_source_keys";
    out.family(KEYS, "Keys in one JWKS URL's cached document.", "gauge");
    for (l, u) in each() {
        out.sample(KEYS, &l, u.kids.len());
    }

    const EXPIRES: &str = "keygate_jwks_source_expires_in_seconds";
    out.family(
        EXPIRES,
        "Seconds until one JWKS URL's document stops being fresh; negative once stale.",
        "gauge",
    );
    for (l, u) in each() {
        if let Some(expires_at) = u.expires_at {
            out.sample(EXPIRES, &l, Float(seconds_between(now, expires_at)));
        }
    }

    const STATE: &str = "keygate_jwks_source_state";
    out.family(
        STATE,
        "1 for one JWKS URL's current state, 0 for the others.",
        "gauge",
    );
    for ([t, p, url], u) in each() {
        for state in STATES {
            let value = u8::from(state == u.state);
            out.sample(STATE, &[t, p, url, ("state", state.as_str())], value);
        }
    }
}

fn render_bus(out: &mut Out, bus: &BusStatus, accept_while_degraded: bool) {
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
    out.family(
        "keygate_bus_lag_seconds",
        "How far behind the newest bus event this replica is.",
        "gauge",
    );
    out.sample("keygate_bus_lag_seconds", &[], Float(bus.lag_seconds));
    out.family(
        "keygate_bus_last_seq",
        "Sequence number of the last bus event published or applied.",
        "gauge",
    );
    out.sample("keygate_bus_last_seq", &[], bus.last_seq);
    out.family(
        "keygate_bus_published_total",
        "Bus events this replica published.",
        "counter",
    );
    out.sample("keygate_bus_published_total", &[], bus.published);
    out.family(
        "keygate_bus_applied_total",
        "Bus events from other replicas this replica applied.",
        "counter",
    );
    out.sample("keygate_bus_applied_total", &[], bus.applied);
    out.family(
        "keygate_bus_rejected_total",
        "Bus entries dropped unapplied: bad MAC, malformed, replayed, unknown version or type.",
        "counter",
    );
    for (reason, n) in &bus.rejected {
        out.sample("keygate_bus_rejected_total", &[("reason", reason)], *n);
    }
    out.family(
        "keygate_bus_resyncs_total",
        "Full resyncs: the log started over (epoch), was trimmed past this replica, had a gap, or went back in time (rollback).",
        "counter",
    );
    for (reason, n) in &bus.resyncs {
        out.sample("keygate_bus_resyncs_total", &[("reason", reason)], *n);
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
    out.family(
        "keygate_bus_accepting_while_degraded",
        "1 while the bus is degraded and tokens are still accepted (revocations may be behind).",
        "gauge",
    );
    out.sample(
        "keygate_bus_accepting_while_degraded",
        &[],
        u8::from(accept_while_degraded && bus.state != BusState::Ok),
    );
}

/// The `tenant` and `provider` labels of a provider's series.
fn labels(p: &ProviderStatus) -> [(&'static str, &str); 2] {
    [("tenant", p.id.tenant()), ("provider", p.id.name())]
}

/// `to - from` in seconds, negative when `to` is earlier.
fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The output being built.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(label);
                self.0.push_str("=\"");
                escape_label_value(&mut self.0, value);
                self.0.push('"');
            }
            self.0.push('}');
        }
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.0, " {value}");
    }
}

/// Appends `value` escaped as the text format requires inside a quoted label value. Tenant
/// and provider names come from configuration and may hold anything.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the text format spells floats: `+Inf`, `-Inf` and `NaN` included.
struct Float(f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use keygate::{ProviderConfig, Verifier};
    use keygate_test_support::{ManualClock, TestKey, TokenBuilder, jwks, typical_claims};

    use super::*;

    const T0: u64 = 1_800_000_000;
    const ISS: &str = "https://issuer.test";

    fn bus() -> BusStatus {
        BusStatus {
            last_seq: 7,
            lag_seconds: 0.25,
            published: 5,
            applied: 2,
            rejected: vec![("mac", 1)],
            resyncs: vec![("epoch", 0)],
            primary: Some("127.0.0.1:6380".to_owned()),
            last_resync: Some((UNIX_EPOCH + Duration::from_secs(T0), "start")),
            ..BusStatus::new("local", BusState::Ok, "e".into())
        }
    }

    /// Two providers: a static set (fresh, fetched at `T0`) that has verified one token, and
    /// a URL provider never fetched (empty), whose tenant needs escaping.
    async fn providers() -> Vec<ProviderStatus> {
        let key = TestKey::shared_p256("metrics-k1");
        let clock = Arc::new(ManualClock::at_unix(T0));
        let fixed = ProviderConfig::builder("acme", "idp", ISS)
            .audiences(["api"])
            .static_jwks(serde_json::to_vec(&jwks(&[key])).unwrap())
            .build()
            .unwrap();
        let remote = ProviderConfig::builder("we\"ird\\ten\nant", "remote", "https://other.test")
            .audiences(["api"])
            .jwks_uri("https://other.test/jwks")
            .build()
            .unwrap();
        let verifier = Verifier::builder()
            .provider(fixed)
            .provider(remote)
            .clock(clock)
            .build()
            .unwrap();
        let token = TokenBuilder::new(key)
            .claims(typical_claims(ISS, "api", i64::try_from(T0).unwrap()))
            .sign();
        verifier.verify(&token).await.unwrap();
        verifier.status()
    }

    fn scrape_at<'a>(providers: &'a [ProviderStatus], bus: &'a BusStatus) -> Scrape<'a> {
        Scrape {
            providers,
            bus,
            revocations: 3,
            cached_tokens: 2,
            accept_while_degraded: true,
            now: UNIX_EPOCH + Duration::from_secs(T0 + 12),
        }
    }

    /// The value of the sample written exactly as `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    /// Checks that every line is a `# HELP`/`# TYPE` comment or a well-formed sample of the
    /// family announced last, and that no family is announced twice. Returns the families.
    fn check_lines(text: &str) -> HashSet<String> {
        assert!(text.ends_with('\n'), "no final newline");
        let mut families = HashSet::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(is_metric_name(name) && !help.is_empty(), "{line}");
                assert!(families.insert(name.to_owned()), "family twice: {line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                assert!(families.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                current = Some((name.to_owned(), kind.to_owned()));
            } else {
                let (family, kind) = current.as_ref().expect("sample before any TYPE");
                let name = check_sample(line);
                let belongs = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{family}{suffix}")),
                    _ => name == *family,
                };
                assert!(belongs, "sample outside its family {family}: {line}");
            }
        }
        families
    }

    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `name{label="value",...} value`, returning the name.
    fn check_sample(line: &str) -> &str {
        let end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..end];
        assert!(is_metric_name(name), "bad name: {line}");
        let mut rest = &line[end..];
        if let Some(mut labels) = rest.strip_prefix('{') {
            loop {
                let eq = labels.find('=').unwrap_or_else(|| panic!("no '=': {line}"));
                assert!(is_metric_name(&labels[..eq]), "bad label name: {line}");
                let value = labels[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                let after = &value[closing_quote(value, line) + 1..];
                if let Some(more) = after.strip_prefix(',') {
                    labels = more;
                    continue;
                }
                rest = after
                    .strip_prefix('}')
                    .unwrap_or_else(|| panic!("bad label list: {line}"));
                break;
            }
        }
        check_value(line, rest);
        name
    }

    /// The index of the quote closing a label value, allowing only the three escapes.
    fn closing_quote(value: &str, line: &str) -> usize {
        let mut chars = value.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => assert!(
                    matches!(chars.next(), Some((_, '\\' | '"' | 'n'))),
                    "bad escape: {line}"
                ),
                '"' => return i,
                _ => {}
            }
        }
        panic!("unterminated label value: {line}")
    }

    fn check_value(line: &str, rest: &str) {
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let ok = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
        assert!(ok, "bad value: {line}");
    }

    #[test]
    fn bucket_labels_match_their_bounds_and_ascend() {
        for pair in BUCKETS.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{pair:?}");
        }
        for (le, nanos) in BUCKETS {
            let secs: f64 = le.parse().unwrap();
            assert_eq!(Duration::from_secs_f64(secs), Duration::from_nanos(nanos));
        }
    }

    #[test]
    fn reasons_map_to_slots_and_results() {
        assert_eq!(reason_slot("malformed"), 0);
        assert_eq!(reason_slot("keys_unavailable"), 21);
        assert_eq!(reason_slot("no_such_reason"), REASONS.len());
        assert_eq!(result_of("malformed_jwks"), "unavailable");
        assert_eq!(result_of("keys_unavailable"), "unavailable");
        assert_eq!(result_of("expired"), "invalid");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd é");
        assert_eq!(out, r#"a\\b\"c\nd é"#);
    }

    #[test]
    fn floats_are_spelled_as_the_format_wants() {
        assert_eq!(Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Float(f64::NEG_INFINITY).to_string(), "-Inf");
        assert_eq!(Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Float(-1.5).to_string(), "-1.5");
        assert_eq!(Float(12.0).to_string(), "12");
    }

    #[test]
    fn verifications_are_counted_by_result_and_reason_with_zeros_shown() {
        let metrics = Metrics::new();
        metrics.observe_verification(VerifyOutcome::Valid, Duration::from_micros(5));
        metrics.observe_verification(VerifyOutcome::Valid, Duration::from_micros(5));
        metrics.observe_verification(VerifyOutcome::MissingToken, Duration::ZERO);
        metrics.observe_verification(VerifyOutcome::Refused("expired"), Duration::ZERO);
        metrics.observe_verification(VerifyOutcome::Refused("keys_unavailable"), Duration::ZERO);
        metrics.observe_verification(VerifyOutcome::Refused("from_the_future"), Duration::ZERO);
        let bus = bus();
        let text = metrics.render(&scrape_at(&[], &bus));
        check_lines(&text);

        let total = |result: &str, reason: &str| {
            value(
                &text,
                &format!(r#"keygate_verifications_total{{result="{result}",reason="{reason}"}}"#),
            )
        };
        assert_eq!(total("valid", "ok").as_deref(), Some("2"));
        assert_eq!(total("missing", "missing_token").as_deref(), Some("1"));
        assert_eq!(total("invalid", "expired").as_deref(), Some("1"));
        assert_eq!(
            total("unavailable", "keys_unavailable").as_deref(),
            Some("1")
        );
        assert_eq!(total("invalid", "other").as_deref(), Some("1"));
        // Never observed, still present.
        assert_eq!(total("unavailable", "malformed_jwks").as_deref(), Some("0"));
        assert_eq!(total("invalid", "bad_signature").as_deref(), Some("0"));
        let series = text
            .lines()
            .filter(|l| l.starts_with("keygate_verifications_total{"))
            .count();
        assert_eq!(series, 2 + REASONS.len() + 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let metrics = Metrics::new();
        let observations = [
            Duration::from_nanos(500), // first bucket
            Duration::from_micros(10), // exactly on the first bound: le is inclusive
            Duration::from_micros(11), // second bucket
            Duration::from_millis(3),  // 0.005
            Duration::from_secs(2),    // 5
            Duration::from_secs(60),   // above every bound: +Inf only
        ];
        for d in observations {
            metrics.observe_verification(VerifyOutcome::Valid, d);
        }
        let bus = bus();
        let text = metrics.render(&scrape_at(&[], &bus));
        check_lines(&text);
        let bucket = |le: &str| {
            let series = format!(r#"keygate_verification_duration_seconds_bucket{{le="{le}"}}"#);
            value(&text, &series)
                .unwrap_or_else(|| panic!("no {series}"))
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(bucket("0.00001"), 2);
        assert_eq!(bucket("0.000025"), 3);
        assert_eq!(bucket("0.0025"), 3);
        assert_eq!(bucket("0.005"), 4);
        assert_eq!(bucket("1"), 4);
        assert_eq!(bucket("5"), 5);
        assert_eq!(bucket("+Inf"), 6);
        let mut previous = 0;
        for (le, _) in BUCKETS {
            assert!(bucket(le) >= previous, "not cumulative at {le}");
            previous = bucket(le);
        }
        assert_eq!(
            value(&text, "keygate_verification_duration_seconds_count").as_deref(),
            Some("6")
        );
        let sum: f64 = value(&text, "keygate_verification_duration_seconds_sum")
            .unwrap()
            .parse()
            .unwrap();
        let want: Duration = observations.iter().sum();
        assert!((sum - want.as_secs_f64()).abs() < 1e-9, "{sum}");
    }

    #[tokio::test]
    async fn providers_bus_and_gauges_are_rendered() {
        let providers = providers().await;
        let bus = bus();
        let metrics = Metrics::new();
        metrics.observe_admin("flush", 200);
        metrics.observe_admin("flush", 200);
        metrics.observe_admin("revoke", 400);
        let text = metrics.render(&scrape_at(&providers, &bus));
        let families = check_lines(&text);
        for family in [
            "keygate_verifications_total",
            "keygate_verification_duration_seconds",
            "keygate_jwks_fetches_total",
            "keygate_jwks_requests_total",
            "keygate_key_cache_hits_total",
            "keygate_key_cache_misses_total",
            "keygate_token_cache_hits_total",
            "keygate_unknown_kid_rejections_total",
            "keygate_jwks_adopted_total",
            "keygate_jwks_keys",
            "keygate_jwks_key_age_seconds",
            "keygate_jwks_expires_in_seconds",
            "keygate_provider_state",
            "keygate_provider_usable",
            "keygate_bus_up",
            "keygate_bus_lag_seconds",
            "keygate_bus_last_seq",
            "keygate_bus_published_total",
            "keygate_bus_applied_total",
            "keygate_bus_rejected_total",
            "keygate_bus_resyncs_total",
            "keygate_bus_accepting_while_degraded",
            "keygate_bus_primary_info",
            "keygate_bus_last_resync_timestamp_seconds",
            "keygate_revocations",
            "keygate_verified_tokens_cached",
            "keygate_admin_requests_total",
        ] {
            assert!(families.contains(family), "missing family {family}");
        }

        let acme = r#"tenant="acme",provider="idp""#;
        let weird = r#"tenant="we\"ird\\ten\nant",provider="remote""#;
        let get = |series: String| value(&text, &series);
        assert_eq!(
            get(format!("keygate_jwks_keys{{{acme}}}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            get(format!("keygate_jwks_keys{{{weird}}}")).as_deref(),
            Some("0")
        );
        assert_eq!(
            get(format!("keygate_key_cache_hits_total{{{acme}}}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            get(format!(
                r#"keygate_jwks_fetches_total{{{acme},result="ok"}}"#
            ))
            .as_deref(),
            Some("0")
        );
        assert_eq!(
            get(format!(
                r#"keygate_jwks_fetches_total{{{weird},result="error"}}"#
            ))
            .as_deref(),
            Some("0")
        );
        // Fetched at T0, scraped at T0 + 12 s; the empty provider has no age at all.
        assert_eq!(
            get(format!("keygate_jwks_key_age_seconds{{{acme}}}")).as_deref(),
            Some("12")
        );
        assert_eq!(
            get(format!("keygate_jwks_key_age_seconds{{{weird}}}")),
            None
        );
        // A static set never expires; the empty one has nothing to expire.
        assert!(!text.contains("keygate_jwks_expires_in_seconds{"), "{text}");

        let state = |labels: &str, state: &str| {
            get(format!(
                r#"keygate_provider_state{{{labels},state="{state}"}}"#
            ))
        };
        assert_eq!(state(acme, "fresh").as_deref(), Some("1"));
        for other in ["stale", "failing", "unavailable", "empty"] {
            assert_eq!(state(acme, other).as_deref(), Some("0"), "{other}");
        }
        assert_eq!(state(weird, "empty").as_deref(), Some("1"));
        assert_eq!(state(weird, "fresh").as_deref(), Some("0"));
        assert_eq!(
            get(format!("keygate_provider_usable{{{acme}}}")).as_deref(),
            Some("1")
        );
        assert_eq!(
            get(format!("keygate_provider_usable{{{weird}}}")).as_deref(),
            Some("0")
        );

        assert_eq!(
            value(&text, r#"keygate_bus_up{backend="local"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&text, "keygate_bus_lag_seconds").as_deref(),
            Some("0.25")
        );
        assert_eq!(value(&text, "keygate_bus_last_seq").as_deref(), Some("7"));
        assert_eq!(
            value(&text, r#"keygate_bus_primary_info{node="127.0.0.1:6380"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(
                &text,
                r#"keygate_bus_last_resync_timestamp_seconds{reason="start"}"#
            )
            .as_deref(),
            Some(T0.to_string().as_str())
        );
        assert_eq!(
            value(&text, "keygate_bus_published_total").as_deref(),
            Some("5")
        );
        assert_eq!(value(&text, "keygate_revocations").as_deref(), Some("3"));
        assert_eq!(
            value(&text, "keygate_verified_tokens_cached").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(
                &text,
                r#"keygate_admin_requests_total{action="flush",status="200"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            value(
                &text,
                r#"keygate_admin_requests_total{action="revoke",status="400"}"#
            )
            .as_deref(),
            Some("1")
        );
    }

    #[tokio::test]
    async fn each_url_of_a_provider_with_several_has_its_series() {
        let split = ProviderConfig::builder("acme", "split", "https://split.test")
            .audiences(["api"])
            .jwks_uris(["https://a.split.test/jwks", "https://b.split.test/jwks"])
            .build()
            .unwrap();
        let verifier = Verifier::builder()
            .provider(split)
            .clock(Arc::new(ManualClock::at_unix(T0)))
            .build()
            .unwrap();
        let status = verifier.status();
        let bus = bus();
        let text = Metrics::new().render(&scrape_at(&status, &bus));
        check_lines(&text);
        for url in ["https://a.split.test/jwks", "https://b.split.test/jwks"] {
            let l = format!(r#"tenant="acme",provider="split",url="{url}""#);
            let get = |series: String| value(&text, &series);
            assert_eq!(
                get(format!(r#"keygate_jwks_source_state{{{l},state="empty"}}"#)).as_deref(),
                Some("1")
            );
            assert_eq!(
                get(format!(r#"keygate_jwks_source_state{{{l},state="fresh"}}"#)).as_deref(),
                Some("0")
            );
            assert_eq!(
                get(format!("keygate_jwks_source_keys{{{l}}}")).as_deref(),
                Some("0")
            );
            assert_eq!(
                get(format!(
                    r#"keygate_jwks_source_fetches_total{{{l},result="error"}}"#
                ))
                .as_deref(),
                Some("0")
            );
        }
        // Providers with one URL add no per-URL families.
        let one = providers().await;
        let text = Metrics::new().render(&scrape_at(&one, &bus));
        assert!(!text.contains("keygate_jwks_source_"));
    }

    #[test]
    fn degraded_bus_is_down_and_expiry_may_be_negative() {
        let bus = BusStatus {
            lag_seconds: 1.5,
            ..BusStatus::new("redis", BusState::Degraded, "e".into())
        };
        let text = Metrics::new().render(&scrape_at(&[], &bus));
        check_lines(&text);
        assert_eq!(
            value(&text, r#"keygate_bus_up{backend="redis"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            value(&text, "keygate_bus_accepting_while_degraded").as_deref(),
            Some("1")
        );
        let before = UNIX_EPOCH + Duration::from_secs(T0);
        let after = before + Duration::from_secs(30);
        assert!((seconds_between(after, before) + 30.0).abs() < f64::EPSILON);
        assert!((seconds_between(before, after) - 30.0).abs() < f64::EPSILON);
    }

    #[test]
    fn the_line_checker_rejects_malformed_lines() {
        for bad in [
            "# HELP x help\n# TYPE x gauge\nx{a=\"b} 1\n",
            "# HELP x help\n# TYPE x gauge\nx{a=\"b\\q\"} 1\n",
            "# HELP x help\n# TYPE x gauge\nx 1 2 three\n",
            "# HELP x help\n# TYPE x gauge\ny 1\n",
            "x 1\n",
        ] {
            let result = std::panic::catch_unwind(|| check_lines(bad));
            assert!(result.is_err(), "accepted {bad:?}");
        }
        check_lines("# HELP x help\n# TYPE x gauge\nx{a=\"b\\\"\",c=\"d\"} 1\n");
    }
}
