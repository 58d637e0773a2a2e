//! The per-provider families, read from the verifier's status at scrape time: fetches and
//! requests to the IdP, cache counters, the key set's size, age and expiry, the state, and
//! per-URL series of providers with several JWKS URLs.

use std::fmt;
use std::time::SystemTime;

use keygate::{CounterSnapshot, ProviderState, ProviderStatus, SourceStatus};

use super::text::{Float, Out};

/// The provider states, each rendered as its own series of `keygate_provider_state`.
const STATES: [ProviderState; 5] = [
    ProviderState::Fresh,
    ProviderState::Stale,
    ProviderState::Failing,
    ProviderState::Unavailable,
    ProviderState::Empty,
];

// The help texts of the plain per-provider counters.
const HITS: &str = "Verifications that found their key cached.";
const MISSES: &str = "Verifications whose key was not cached.";
const TOKEN_CACHE_HITS: &str = "Verifications answered from the verified-token cache.";
const UNKNOWN_KID: &str = "Tokens refused because their kid is not in the key set.";
const ADOPTED: &str = "Key sets adopted from another replica instead of fetched from the IdP.";
const INTROSPECTION_HITS: &str = "Opaque tokens answered from the introspection cache.";
const OVER_BUDGET: &str =
    "Opaque tokens answered 503 unchecked because the introspection call budget was spent.";

/// The plain per-provider counters (name, help), in the order they are rendered; their
/// values, in the same order, are [`counter_values`].
const COUNTERS: [(&str, &str); 7] = [
    ("keygate_key_cache_hits_total", HITS),
    ("keygate_key_cache_misses_total", MISSES),
    ("keygate_token_cache_hits_total", TOKEN_CACHE_HITS),
    ("keygate_unknown_kid_rejections_total", UNKNOWN_KID),
    ("keygate_jwks_adopted_total", ADOPTED),
    ("keygate_introspection_cache_hits_total", INTROSPECTION_HITS),
    ("keygate_introspection_over_budget_total", OVER_BUDGET),
];

/// The values of [`COUNTERS`] for one provider.
fn counter_values(c: &CounterSnapshot) -> [u64; 7] {
    [
        c.hits,
        c.misses,
        c.token_cache_hits,
        c.unknown_kid_rejections,
        c.adopted,
        c.introspection_cache_hits,
        c.introspections_over_budget,
    ]
}

/// Renders every provider's families.
pub(super) fn render(out: &mut Out, providers: &[ProviderStatus], now: SystemTime) {
    // The text format wants each family's samples together, so the loop over providers sits
    // inside the loop over families.

    each_by(
        out,
        provider_rows(providers),
        (
            "keygate_jwks_fetches_total",
            "JWKS refresh cycles by result (ok, error); see keygate_jwks_requests_total for requests.",
            "counter",
        ),
        "result",
        |p| {
            [
                ("ok", p.counters.refreshes),
                ("error", p.counters.refresh_errors),
            ]
        },
    );
    // Every HTTP request to the IdP (retries and discovery included): the load it sees.
    each_by(
        out,
        provider_rows(providers),
        (
            "keygate_jwks_requests_total",
            "HTTP requests to the IdP by status (the code, or timeout, error), retries included.",
            "counter",
        ),
        "status",
        |p| {
            p.counters
                .requests
                .iter()
                .map(|(status, n)| (status.as_str(), *n))
        },
    );

    // Every call to an introspection endpoint: the load opaque tokens put on the IdP.
    each_by(
        out,
        provider_rows(providers),
        (
            "keygate_introspection_requests_total",
            "Calls to the introspection endpoint by status (the code, or timeout, error).",
            "counter",
        ),
        "status",
        |p| {
            p.counters
                .introspections
                .iter()
                .map(|(status, n)| (status.as_str(), *n))
        },
    );

    for (i, (name, help)) in COUNTERS.into_iter().enumerate() {
        each_provider(out, providers, (name, help, "counter"), |p| {
            Some(counter_values(&p.counters)[i])
        });
    }
    each_provider(
        out,
        providers,
        (
            "keygate_jwks_keys",
            "Usable keys in the cached key set.",
            "gauge",
        ),
        |p| Some(p.kids.len()),
    );
    each_provider(
        out,
        providers,
        (
            "keygate_jwks_key_age_seconds",
            "Seconds since the cached key set was fetched (absent when none is cached).",
            "gauge",
        ),
        |p| p.fetched_at.map(|at| Float(seconds_between(at, now))),
    );
    each_provider(
        out,
        providers,
        (
            "keygate_jwks_expires_in_seconds",
            "Seconds until the cached key set stops being fresh; negative once stale \
             (absent for static sets and when none is cached).",
            "gauge",
        ),
        |p| p.expires_at.map(|at| Float(seconds_between(now, at))),
    );

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

    each_provider(
        out,
        providers,
        (
            "keygate_provider_usable",
            "1 if the provider's tokens can be verified without fetching, 0 otherwise.",
            "gauge",
        ),
        |p| Some(u8::from(p.state.has_usable_keys())),
    );

    render_sources(out, providers, now);
}

/// A family (name, help, type) with one sample per provider, labelled `tenant` and
/// `provider`; a provider whose `value` is `None` has no sample.
fn each_provider<V: fmt::Display>(
    out: &mut Out,
    providers: &[ProviderStatus],
    (name, help, kind): (&str, &str, &str),
    value: impl Fn(&ProviderStatus) -> Option<V>,
) {
    out.family(name, help, kind);
    for p in providers {
        if let Some(v) = value(p) {
            out.sample(name, &labels(p), v);
        }
    }
}

/// A family (name, help, type) with, per row (a provider, or one JWKS URL of a provider
/// with several: see [`provider_rows`] and [`source_rows`]), one sample per value of the
/// label `label`, labelled with the row's labels and `label`: `values` gives each value and
/// its sample.
fn each_by<'p, T: 'p, I, V>(
    out: &mut Out,
    rows: impl IntoIterator<Item = (Vec<(&'static str, &'p str)>, &'p T)>,
    (name, help, kind): (&str, &str, &str),
    label: &'static str,
    values: impl Fn(&'p T) -> I,
) where
    I: IntoIterator<Item = (&'p str, V)>,
    V: fmt::Display,
{
    out.family(name, help, kind);
    for (mut labels, row) in rows {
        for (value, v) in values(row) {
            labels.push((label, value));
            out.sample(name, &labels, v);
            labels.pop();
        }
    }
}

/// Each provider with its `tenant` and `provider` labels.
fn provider_rows(
    providers: &[ProviderStatus],
) -> impl Iterator<Item = (Vec<(&'static str, &str)>, &ProviderStatus)> {
    providers.iter().map(|p| (labels(p).to_vec(), p))
}

/// Each JWKS URL of the providers with several, with its `tenant`, `provider` and `url`
/// labels.
fn source_rows(
    providers: &[ProviderStatus],
) -> impl Iterator<Item = (Vec<(&'static str, &str)>, &SourceStatus)> {
    providers.iter().flat_map(|p| {
        p.sources.iter().map(move |u| {
            let [tenant, provider] = labels(p);
            (vec![tenant, provider, ("url", u.url.as_str())], u)
        })
    })
}

/// Per-URL series of providers with several JWKS URLs (`jwks_uris`), labelled `url`; the
/// families appear only when some provider has several URLs.
fn render_sources(out: &mut Out, providers: &[ProviderStatus], now: SystemTime) {
    if providers.iter().all(|p| p.sources.is_empty()) {
        return;
    }
    each_by(
        out,
        source_rows(providers),
        (
            "keygate_jwks_source_fetches_total",
            "Fetches of one JWKS URL of a provider with several, by result (ok, error).",
            "counter",
        ),
        "result",
        |u| [("ok", u.refreshes), ("error", u.refresh_errors)],
    );
    const KEYS: &str = "keygate_jwks_source_keys";
    out.family(KEYS, "Keys in one JWKS URL's cached document.", "gauge");
    for (l, u) in source_rows(providers) {
        out.sample(KEYS, &l, u.kids.len());
    }
    const EXPIRES: &str = "keygate_jwks_source_expires_in_seconds";
    out.family(
        EXPIRES,
        "Seconds until one JWKS URL's document stops being fresh; negative once stale.",
        "gauge",
    );
    for (l, u) in source_rows(providers) {
        if let Some(expires_at) = u.expires_at {
            out.sample(EXPIRES, &l, Float(seconds_between(now, expires_at)));
        }
    }
    each_by(
        out,
        source_rows(providers),
        (
            "keygate_jwks_source_state",
            "1 for one JWKS URL's current state, 0 for the others.",
            "gauge",
        ),
        "state",
        |u| STATES.map(|state| (state.as_str(), u8::from(state == u.state))),
    );
}

/// The `tenant` and `provider` labels of a provider's series.
fn labels(p: &ProviderStatus) -> [(&'static str, &str); 2] {
    [("tenant", p.id.tenant()), ("provider", p.id.name())]
}

/// `to - from` in seconds, negative when `to` is earlier.
pub(super) fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
