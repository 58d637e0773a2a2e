//! The bodies of the admin API's answers, other than revocations and events: status,
//! flush, refresh, health and readiness; and how a provider's status becomes its view.

use keygate::{LastError, ProviderStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /admin/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// keygate's version.
    pub version: &'static str,
    /// The server's time (unix seconds).
    pub now: i64,
    /// This replica's name on the bus.
    pub node: String,
    /// Every provider, in configuration order.
    pub providers: Vec<ProviderView>,
    /// The invalidation bus.
    pub bus: BusView,
    /// Revocations in force.
    pub revocations: usize,
    /// Entries in the verified-token cache.
    pub cached_tokens: usize,
}

/// One provider's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// Issuer (`iss`).
    pub issuer: String,
    /// JWKS URL, configured or discovered.
    pub jwks_uri: Option<String>,
    /// The cached key set.
    #[serde(flatten)]
    pub keys: KeysView,
    /// Event counters.
    pub counters: CountersView,
    /// A provider with several JWKS URLs (`jwks_uris`): each URL's state, in configuration
    /// order (then `jwks_uri` is null, `kids` the union, and `state` is `failing` while any
    /// URL fails). Absent for a provider with one URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceView>,
}

/// One JWKS URL of a provider with several.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// The URL.
    pub url: String,
    /// Its document's keys.
    #[serde(flatten)]
    pub keys: KeysView,
    /// Successful fetches of this URL.
    pub refreshes: u64,
    /// Failed fetches of this URL.
    pub refresh_errors: u64,
}

/// The keys of a provider, or of one of its JWKS URLs.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysView {
    /// `fresh`, `stale`, `failing`, `unavailable` or `empty`.
    pub state: &'static str,
    /// `kid`s of the cached keys.
    pub kids: Vec<String>,
    /// Entries of the cached document that were skipped as broken or unsupported.
    pub skipped_keys: usize,
    /// When the cached document was fetched (unix seconds).
    pub fetched_at: Option<i64>,
    /// When it stops being fresh (unix seconds).
    pub expires_at: Option<i64>,
    /// When its keys stop being served at all (unix seconds).
    pub usable_until: Option<i64>,
    /// The last refresh failure, cleared by a success.
    pub last_error: Option<LastErrorView>,
}

/// The [`KeysView`] of a library status (a provider's or a source's: their fields have the
/// same names).
macro_rules! keys_view {
    ($s:expr) => {
        KeysView {
            state: $s.state.as_str(),
            kids: $s.kids.clone(),
            skipped_keys: $s.skipped_keys,
            fetched_at: $s.fetched_at.map(unix),
            expires_at: $s.expires_at.map(unix),
            usable_until: $s.usable_until.map(unix),
            last_error: $s.last_error.as_ref().map(LastErrorView::from),
        }
    };
}

/// A refresh failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastErrorView {
    /// When (unix seconds).
    pub at: i64,
    /// Stable reason code.
    pub reason: &'static str,
    /// Human-readable description.
    pub message: String,
}

/// Per-provider counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountersView {
    /// Verifications that found their key cached.
    pub hits: u64,
    /// Verifications whose key was not cached.
    pub misses: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_errors: u64,
    /// Key sets adopted from another replica instead of fetched.
    pub adopted: u64,
    /// Tokens refused with `unknown_kid`.
    pub unknown_kid_rejections: u64,
    /// Verifications answered from the verified-token cache.
    pub token_cache_hits: u64,
    /// Calls to the introspection endpoint (all outcomes).
    pub introspections: u64,
    /// Opaque tokens answered from the introspection cache.
    pub introspection_cache_hits: u64,
    /// Opaque tokens answered 503 unchecked because the introspection budget was spent.
    pub introspections_over_budget: u64,
}

/// The bus's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusView {
    /// `local` or `redis`.
    pub backend: &'static str,
    /// `ok` or `degraded`.
    pub state: &'static str,
    /// Sequence number of the last event published or applied.
    pub last_seq: u64,
    /// How far behind this replica is, in seconds (while degraded: since when).
    pub lag_seconds: f64,
    /// The log's epoch.
    pub epoch: String,
    /// Events from other replicas applied here.
    pub applied: u64,
    /// Entries dropped unapplied (bad MAC, replay, malformed), in all.
    pub rejected: u64,
    /// Full resyncs, in all.
    pub resyncs: u64,
    /// Whether `/verify` accepts tokens while the bus is degraded.
    pub accept_while_degraded: bool,
    /// The Redis node this replica writes to, `host:port` (redis backend only).
    pub primary: Option<String>,
    /// When this replica last loaded the shared state from scratch, and why.
    pub last_resync: Option<ResyncView>,
}

/// A load of the shared state from scratch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResyncView {
    /// When (unix seconds).
    pub at: i64,
    /// Why: `start`, `epoch`, `gap` or `trimmed`.
    pub reason: &'static str,
}

/// The answer to a flush.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionBody {
    /// `flush`.
    pub action: String,
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// The event's sequence number on the bus.
    pub seq: u64,
}

/// The answer to a refresh.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefreshBody {
    /// `refresh`.
    pub action: String,
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// The event's sequence number on the bus.
    pub seq: u64,
    /// The provider's state after the refresh.
    pub state: String,
    /// The `kid`s now cached.
    #[serde(default)]
    pub kids: Vec<String>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`: the process answers.
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// The providers without usable keys.
    pub not_ready: Vec<NotReadyView>,
    /// The bus's state: `ok`, `degraded`, ...
    pub bus: &'static str,
    /// The bus backend: `local` or `redis`.
    pub bus_backend: &'static str,
    /// Whether tokens are verified although the bus is not `ok`.
    pub accepting_while_degraded: bool,
}

/// A provider that keeps the replica from being ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReadyView {
    /// The tenant.
    pub tenant: String,
    /// The provider name.
    pub provider: String,
    /// Its key state.
    pub state: &'static str,
    /// The reason code of its last failed fetch, if any.
    pub last_error: Option<&'static str>,
}

/// Unix seconds of `t`, negative before 1970.
pub(crate) use keygate::clock::unix_seconds as unix;

impl From<&ProviderStatus> for ProviderView {
    fn from(s: &ProviderStatus) -> ProviderView {
        ProviderView {
            tenant: s.id.tenant().to_owned(),
            provider: s.id.name().to_owned(),
            issuer: s.issuer.clone(),
            jwks_uri: s.jwks_uri.clone(),
            keys: keys_view!(s),
            counters: CountersView {
                hits: s.counters.hits,
                misses: s.counters.misses,
                refreshes: s.counters.refreshes,
                refresh_errors: s.counters.refresh_errors,
                adopted: s.counters.adopted,
                unknown_kid_rejections: s.counters.unknown_kid_rejections,
                token_cache_hits: s.counters.token_cache_hits,
                introspections: s.counters.introspections.values().sum(),
                introspection_cache_hits: s.counters.introspection_cache_hits,
                introspections_over_budget: s.counters.introspections_over_budget,
            },
            sources: s
                .sources
                .iter()
                .map(|u| SourceView {
                    url: u.url.clone(),
                    keys: keys_view!(u),
                    refreshes: u.refreshes,
                    refresh_errors: u.refresh_errors,
                })
                .collect(),
        }
    }
}

impl From<&LastError> for LastErrorView {
    fn from(e: &LastError) -> LastErrorView {
        LastErrorView {
            at: unix(e.at),
            reason: e.reason,
            message: e.message.clone(),
        }
    }
}
