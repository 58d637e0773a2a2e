//! The server's configuration: the TOML file at the edge, validated into a [`Config`].
//!
//! The file types (`File*`) are private serde shapes with `deny_unknown_fields`, so a typo is
//! an error rather than a silently ignored setting. [`Config::parse`] turns them into checked
//! values and names the key at fault (`providers[1].audiences: ...`) when something is wrong;
//! the CLI exits 64 with that message. Loading never binds a port or touches the network.
//!
//! Secrets can come from the environment instead of the file (Kubernetes secrets): the hash
//! of admin key `ops` is read from `KEYGATE_ADMIN_KEY_OPS_HASH` when that is set, and it wins
//! over the file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use keygate::{Algorithm, CacheSettings, HttpFetcher, ProviderConfig, RetrySettings, TtlPolicy};
use serde::Deserialize;
use url::Url;

use crate::apikey::{ApiKey, FailureLimit, KeyHash, Scope};
use crate::bus::redis::{RedisSettings, SENTINEL_DEFAULT_PORT, SentinelSettings};
use crate::bus::wire::{MacKey, MacKeys};

/// The default address of the verification endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default address of the admin API and metrics.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// The default address of the embedded development issuer.
pub const DEFAULT_DEV_ISSUER_LISTEN: &str = "127.0.0.1:8082";
/// The default audience of tokens minted by the development issuer.
pub const DEV_AUDIENCE: &str = "keygate-dev";

/// Headers `/verify` sets itself; a `claims_to_headers` entry may not reuse them.
pub const RESERVED_HEADERS: [&str; 5] = [
    "x-auth-subject",
    "x-auth-issuer",
    "x-auth-tenant",
    "x-auth-provider",
    "x-auth-reason",
];

/// Headers that frame, route or cache an HTTP answer, or that belong to the server: a
/// claim copied into one of them could change how the proxy reads keygate's answer (a
/// `Cache-Control: public` in a token would let a cache replay a grant), so
/// `claims_to_headers` may not name them.
pub const CONTROL_HEADERS: [&str; 28] = [
    "cache-control",
    "pragma",
    "expires",
    "age",
    "vary",
    "etag",
    "last-modified",
    "transfer-encoding",
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "host",
    "location",
    "set-cookie",
    "www-authenticate",
    "proxy-authenticate",
    "date",
    "retry-after",
    "server",
    "alt-svc",
    "strict-transport-security",
];

/// Why a claim may not be copied into `header`, if it may not: a header keygate sets or
/// reads itself ([`RESERVED_HEADERS`], the tenant header) or one of [`CONTROL_HEADERS`].
/// Other `X-Auth-*` names (`X-Auth-Email`, `X-Auth-Scope`) stay available for claims: they
/// are how claims have always been passed on, and the embedded default uses one.
#[must_use]
pub fn refused_claim_header(
    header: &HeaderName,
    tenant_header: &HeaderName,
) -> Option<&'static str> {
    let name = header.as_str();
    if RESERVED_HEADERS.contains(&name) {
        Some("keygate sets it itself")
    } else if header == tenant_header {
        Some("it is server.tenant_header, which keygate reads")
    } else if CONTROL_HEADERS.contains(&name) {
        Some("it frames, routes or caches the answer")
    } else {
        None
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Listeners and process-wide settings.
    pub server: ServerConfig,
    /// The trusted issuers, in file order.
    pub providers: Vec<ProviderSpec>,
    /// Admin API keys.
    pub admin: AdminConfig,
    /// Revocation settings.
    pub revocations: RevocationConfig,
    /// The embedded development issuer, when enabled.
    pub dev_issuer: Option<DevIssuerConfig>,
    /// How replicas share invalidations.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: the invalidation bus.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Which bus.
    pub backend: ClusterBackend,
    /// Whether `/verify` keeps accepting tokens while the bus is degraded, when revocations
    /// made on other replicas may not have arrived yet. With `false`, it answers 503 instead
    /// and `/readyz` reports not ready.
    pub accept_while_degraded: bool,
}

/// `cluster.backend`.
#[derive(Debug, Clone)]
#[non_exhaustive]
// Built once at start and never moved in a loop: boxing would only complicate every match.
#[allow(clippy::large_enum_variant)]
pub enum ClusterBackend {
    /// One node: the in-process bus, and revocations in `state_file` when set.
    Local {
        /// Where revocations are kept across restarts; `None` keeps them in memory only.
        state_file: Option<PathBuf>,
    },
    /// Replicas sharing a signed log on Redis.
    Redis(RedisSettings),
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backend: ClusterBackend::Local { state_file: None },
            accept_while_degraded: true,
        }
    }
}

/// The state file of a config file without `cluster.state_file`, beside the file.
pub const DEFAULT_STATE_FILE: &str = "keygate-state.jsonl";

/// `[server]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The verification endpoint's address.
    pub listen: SocketAddr,
    /// The admin API's (and metrics') address.
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Capacity of the verified-token cache (0 disables it).
    pub token_cache: usize,
    /// The longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// The request header that may narrow verification to one tenant.
    pub tenant_header: HeaderName,
    /// This replica's name on the bus.
    pub node_id: String,
    /// How long a client may take to send a request's headers (and how long an idle
    /// keep-alive connection is kept waiting for the next request): slow clients cannot hold
    /// connections open forever.
    pub header_read_timeout: Duration,
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderSpec {
    /// The library's provider configuration, fetcher included.
    pub config: ProviderConfig,
    /// Claims copied into response headers of `/verify`: (claim name, header).
    pub claims_to_headers: Vec<(String, HeaderName)>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AdminConfig {
    /// The API keys; with none, every admin call is refused.
    pub keys: Vec<ApiKey>,
    /// `max_failures` wrong API keys from one address within `failure_window` lock that
    /// address out of the admin API for `failure_window` (429). Default 10 per 60 s.
    pub failure_limit: FailureLimit,
}

/// `[revocations]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RevocationConfig {
    /// The longest lifetime of a token any provider issues. A subject revocation is kept this
    /// long after its `before` time, after which no token it covers can still be valid.
    pub max_token_lifetime: Duration,
}

/// `[dev_issuer]`: the embedded development issuer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DevIssuerConfig {
    /// Where it listens; always a loopback address.
    pub listen: SocketAddr,
    /// The audience of the tokens it mints.
    pub audience: String,
    /// The tenant of its provider.
    pub tenant: String,
    /// The name of its provider.
    pub provider: String,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The key at fault, as a path into the file (`providers[0].issuer`), or the file name for
    /// a syntax error.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`, with secrets overridable from the process
    /// environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key at fault, or the file if it cannot be read.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        let mut config =
            Config::parse(&text, &|name| std::env::var(name).ok()).map_err(|mut e| {
                if e.key.is_empty() {
                    e.key = path.display().to_string();
                }
                e
            })?;
        // A single node keeps its revocations beside its config file unless told otherwise.
        if let ClusterBackend::Local { state_file } = &mut config.cluster.backend {
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            let file = state_file
                .take()
                .unwrap_or_else(|| DEFAULT_STATE_FILE.into());
            *state_file = Some(if file.is_relative() {
                dir.join(file)
            } else {
                file
            });
        }
        Ok(config)
    }

    /// Validates a configuration document. `env` looks up environment variables.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key at fault. A syntax error has an empty key and says
    /// where (line and column) in its problem.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let document = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, "", &e))?;
        // The path tracker names the key whose value serde refused (`server.admin_listen`,
        // `providers[1].audiences`); toml alone would say only where it is in the text.
        let file: FileConfig = serde_path_to_error::deserialize(document).map_err(|e| {
            let path = e.path().to_string();
            // "." is the document itself; "?" marks a segment the tracker could not name.
            let key = if path == "." || path.contains('?') {
                String::new()
            } else {
                path
            };
            syntax_error(text, &key, e.inner())
        })?;
        file.validate(env)
    }

    /// The embedded default: the development issuer on loopback and one provider trusting
    /// it, the in-process bus, default listeners.
    #[must_use]
    pub fn embedded_default() -> Config {
        let file = FileConfig {
            dev_issuer: Some(FileDevIssuer::default()),
            ..FileConfig::default()
        };
        file.validate(&|_| None)
            .expect("the embedded default is a valid configuration")
    }
}

/// The provider configuration for the development issuer once its address is known.
///
/// # Errors
/// A [`ConfigError`] if the issuer URL is unusable (it never is for a loopback address).
pub fn dev_provider(dev: &DevIssuerConfig, issuer: &str) -> Result<ProviderSpec, ConfigError> {
    let fetcher = HttpFetcher::builder()
        .danger_allow_http_loopback(true)
        .build()
        .map_err(|e| ConfigError::new("dev_issuer", e.to_string()))?;
    let config = ProviderConfig::builder(&dev.tenant, &dev.provider, issuer)
        .jwks_uri(format!("{issuer}/jwks.json"))
        .audiences([dev.audience.clone()])
        .algorithms([Algorithm::ES256])
        .fetcher(Arc::new(fetcher))
        .build()
        .map_err(|e| ConfigError::new(format!("dev_issuer.{}", e.field), e.problem))?;
    Ok(ProviderSpec {
        config,
        claims_to_headers: vec![("scope".to_owned(), HeaderName::from_static("x-auth-scope"))],
    })
}

/// A duration in the file: whole seconds (`30`) or a number with a unit (`500ms`, `30s`,
/// `5m`, `1h`, `1d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileDuration(Duration);

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: seconds, or a string like \"500ms\", \"30s\", \"5m\", \"1h\"",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileDuration, E> {
                u64::try_from(v)
                    .map(|s| FileDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileDuration, E> {
                parse_duration(v).map(FileDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` or bare seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\""))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        other => Err(format!(
            "unknown unit {other:?} in {s:?}: use ms, s, m, h or d"
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    providers: Vec<FileProvider>,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    revocations: FileRevocations,
    dev_issuer: Option<FileDevIssuer>,
    #[serde(default)]
    cluster: FileCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    backend: Option<String>,
    state_file: Option<PathBuf>,
    redis_url: Option<String>,
    prefix: Option<String>,
    accept_while_degraded: Option<bool>,
    max_log_len: Option<u64>,
    max_revocations: Option<u64>,
    fetch_lease: Option<FileDuration>,
    timeout: Option<FileDuration>,
    #[serde(default)]
    keys: Vec<FileClusterKey>,
    sentinels: Option<Vec<String>>,
    sentinel_master: Option<String>,
    redis_username: Option<String>,
    redis_password: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_client_cert: Option<PathBuf>,
    tls_client_key: Option<PathBuf>,
    min_replicas_ack: Option<u32>,
    replica_ack_timeout: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClusterKey {
    id: String,
    secret: Option<String>,
}

/// The shortest cluster MAC secret accepted, in bytes.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// The environment variable that overrides the secret of cluster key `id`:
/// `KEYGATE_CLUSTER_KEY_<ID>_SECRET`, with the id upper-cased and `-` and `.` turned into `_`.
#[must_use]
pub fn cluster_secret_env_var(id: &str) -> String {
    format!("KEYGATE_CLUSTER_KEY_{}_SECRET", env_id(id))
}

/// Refuses a key id whose environment variable another id of the list already reads
/// (`a-b` and `a_b` both read `..._A_B_...`): the variable would silently set both keys.
/// `seen` maps each variable to the first id that reads it and where that id is.
fn one_env_var_each(
    seen: &mut BTreeMap<String, (String, String)>,
    key: &str,
    id: &str,
    var_of: fn(&str) -> String,
) -> Result<(), ConfigError> {
    let var = var_of(id);
    if let Some((other_key, other_id)) = seen.get(&var) {
        return Err(ConfigError::new(
            format!("{key}.id"),
            format!(
                "key ids {id:?} and {other_id:?} ({other_key}.id) both read {var}; rename one of them"
            ),
        ));
    }
    seen.insert(var, (key.to_owned(), id.to_owned()));
    Ok(())
}

fn env_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl FileCluster {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<ClusterConfig, ConfigError> {
        let accept_while_degraded = self.accept_while_degraded.unwrap_or(true);
        let redis_only = [
            ("cluster.redis_url", self.redis_url.is_some()),
            ("cluster.prefix", self.prefix.is_some()),
            ("cluster.max_log_len", self.max_log_len.is_some()),
            ("cluster.max_revocations", self.max_revocations.is_some()),
            ("cluster.fetch_lease", self.fetch_lease.is_some()),
            ("cluster.timeout", self.timeout.is_some()),
            ("cluster.keys", !self.keys.is_empty()),
            ("cluster.sentinels", self.sentinels.is_some()),
            ("cluster.sentinel_master", self.sentinel_master.is_some()),
            ("cluster.redis_username", self.redis_username.is_some()),
            ("cluster.redis_password", self.redis_password.is_some()),
            ("cluster.tls_ca_file", self.tls_ca_file.is_some()),
            ("cluster.tls_client_cert", self.tls_client_cert.is_some()),
            ("cluster.tls_client_key", self.tls_client_key.is_some()),
            ("cluster.min_replicas_ack", self.min_replicas_ack.is_some()),
            (
                "cluster.replica_ack_timeout",
                self.replica_ack_timeout.is_some(),
            ),
        ];
        match self.backend.as_deref().unwrap_or("local") {
            "local" => {
                if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::new(
                        *key,
                        "only used with cluster.backend = \"redis\"",
                    ));
                }
                Ok(ClusterConfig {
                    backend: ClusterBackend::Local {
                        state_file: self.state_file,
                    },
                    accept_while_degraded,
                })
            }
            "redis" => {
                if self.state_file.is_some() {
                    return Err(ConfigError::new(
                        "cluster.state_file",
                        "only used with cluster.backend = \"local\": the redis backend keeps revocations in Redis",
                    ));
                }
                let connection = FileConnection::validate(
                    self.redis_url,
                    self.sentinels,
                    self.sentinel_master,
                    self.tls_ca_file.as_deref(),
                    self.tls_client_cert.as_deref(),
                    self.tls_client_key.as_deref(),
                )?;
                let prefix = self.prefix.unwrap_or_else(|| "keygate".to_owned());
                check_name("cluster.prefix", &prefix)?;
                if self.keys.is_empty() {
                    return Err(ConfigError::new(
                        "cluster.keys",
                        "at least one [[cluster.keys]] entry (id, secret) is required: entries are signed",
                    ));
                }
                let mut keys = Vec::with_capacity(self.keys.len());
                let mut ids = HashSet::new();
                let mut vars = BTreeMap::new();
                for (i, k) in self.keys.into_iter().enumerate() {
                    let key = format!("cluster.keys[{i}]");
                    check_name(&format!("{key}.id"), &k.id)?;
                    if !ids.insert(k.id.clone()) {
                        return Err(ConfigError::new(
                            format!("{key}.id"),
                            format!("key id {:?} is used twice", k.id),
                        ));
                    }
                    one_env_var_each(&mut vars, &key, &k.id, cluster_secret_env_var)?;
                    let var = cluster_secret_env_var(&k.id);
                    let (secret_key, secret) = match env(&var) {
                        Some(s) => (var, s),
                        None => (
                            format!("{key}.secret"),
                            k.secret.ok_or_else(|| {
                                ConfigError::new(
                                    format!("{key}.secret"),
                                    format!("missing: set it here or in {var}"),
                                )
                            })?,
                        ),
                    };
                    if secret.len() < MIN_CLUSTER_SECRET_BYTES {
                        return Err(ConfigError::new(
                            secret_key,
                            format!(
                                "must be at least {MIN_CLUSTER_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
                            ),
                        ));
                    }
                    keys.push(MacKey::new(&k.id, secret.as_bytes()));
                }
                let mut settings = RedisSettings::new(
                    connection.url,
                    prefix,
                    MacKeys::new(keys).expect("at least one key was checked above"),
                );
                settings.sentinel = connection.sentinel;
                settings.tls = connection.tls;
                if let Some(user) = self.redis_username {
                    if user.is_empty() {
                        return Err(ConfigError::new(
                            "cluster.redis_username",
                            "must not be empty",
                        ));
                    }
                    settings.username = Some(user);
                }
                settings.password = match env(REDIS_PASSWORD_ENV) {
                    Some(p) => Some(p),
                    None => self.redis_password,
                };
                if settings.password.as_deref() == Some("") {
                    return Err(ConfigError::new(
                        "cluster.redis_password",
                        format!("must not be empty (it may come from {REDIS_PASSWORD_ENV})"),
                    ));
                }
                if let Some(n) = self.min_replicas_ack {
                    if n > 64 {
                        return Err(ConfigError::new(
                            "cluster.min_replicas_ack",
                            "must be at most 64",
                        ));
                    }
                    settings.min_replicas_ack = n;
                }
                if let Some(n) = self.max_log_len {
                    if n < 1000 {
                        return Err(ConfigError::new(
                            "cluster.max_log_len",
                            "must be at least 1000: a shorter log makes replicas resync after short outages",
                        ));
                    }
                    settings.max_log_len = n;
                }
                if let Some(n) = self.max_revocations {
                    if n == 0 {
                        return Err(ConfigError::new(
                            "cluster.max_revocations",
                            "must be positive",
                        ));
                    }
                    settings.max_revocations = n;
                }
                for (key, value, slot) in [
                    (
                        "cluster.fetch_lease",
                        self.fetch_lease,
                        &mut settings.fetch_lease,
                    ),
                    ("cluster.timeout", self.timeout, &mut settings.timeout),
                    (
                        "cluster.replica_ack_timeout",
                        self.replica_ack_timeout,
                        &mut settings.replica_ack_timeout,
                    ),
                ] {
                    if let Some(d) = value {
                        if d.0.is_zero() || d.0 > Duration::from_secs(60) {
                            return Err(ConfigError::new(key, "must be between 1ms and 60s"));
                        }
                        *slot = d.0;
                    }
                }
                Ok(ClusterConfig {
                    backend: ClusterBackend::Redis(settings),
                    accept_while_degraded,
                })
            }
            other => Err(ConfigError::new(
                "cluster.backend",
                format!("{other:?} is not a backend; expected \"local\" or \"redis\""),
            )),
        }
    }
}

/// The environment variable the data nodes' Redis password is read from; it wins over
/// `cluster.redis_password`.
pub const REDIS_PASSWORD_ENV: &str = "KEYGATE_CLUSTER_REDIS_PASSWORD";

/// How the bus reaches Redis, checked: a URL or Sentinels, and the TLS material.
struct FileConnection {
    url: String,
    sentinel: Option<SentinelSettings>,
    tls: Option<redis::TlsCertificates>,
}

impl FileConnection {
    fn validate(
        redis_url: Option<String>,
        sentinels: Option<Vec<String>>,
        sentinel_master: Option<String>,
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<FileConnection, ConfigError> {
        let (url, sentinel, tls_scheme) = match (redis_url, sentinels) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "cluster.sentinels",
                    "set either cluster.redis_url or cluster.sentinels, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    "required with cluster.backend = \"redis\" (or cluster.sentinels with cluster.sentinel_master)",
                ));
            }
            (Some(url), None) => {
                if sentinel_master.is_some() {
                    return Err(ConfigError::new(
                        "cluster.sentinel_master",
                        "only used with cluster.sentinels",
                    ));
                }
                let tls = check_redis_url("cluster.redis_url", &url)?;
                (url, None, tls)
            }
            (None, Some(urls)) => {
                if urls.is_empty() {
                    return Err(ConfigError::new(
                        "cluster.sentinels",
                        "list at least one Sentinel (redis://HOST:PORT)",
                    ));
                }
                let master = sentinel_master.ok_or_else(|| {
                    ConfigError::new(
                        "cluster.sentinel_master",
                        "required with cluster.sentinels: the name the Sentinels monitor the primary under",
                    )
                })?;
                if master.is_empty()
                    || master.len() > 128
                    || !master.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ConfigError::new(
                        "cluster.sentinel_master",
                        "must be 1 to 128 printable characters without spaces",
                    ));
                }
                let mut checked = Vec::with_capacity(urls.len());
                let mut tls = None;
                for (i, url) in urls.into_iter().enumerate() {
                    let key = format!("cluster.sentinels[{i}]");
                    let this = check_redis_url(&key, &url)?;
                    if tls.is_some_and(|t| t != this) {
                        return Err(ConfigError::new(
                            key,
                            "mixes redis:// and rediss://: all Sentinels use TLS or none does",
                        ));
                    }
                    tls = Some(this);
                    let mut parsed = Url::parse(&url)
                        .map_err(|e| ConfigError::new(key.as_str(), format!("not a URL: {e}")))?;
                    if parsed.port().is_none() {
                        let _ = parsed.set_port(Some(SENTINEL_DEFAULT_PORT));
                    }
                    checked.push(parsed.to_string());
                }
                (
                    String::new(),
                    Some(SentinelSettings::new(checked, master)),
                    tls.unwrap_or(false),
                )
            }
        };
        let tls = tls_files(ca_file, client_cert, client_key, tls_scheme)?;
        Ok(FileConnection { url, sentinel, tls })
    }
}

/// Checks a `redis://` or `rediss://` URL; returns whether it is `rediss://`.
fn check_redis_url(key: &str, url: &str) -> Result<bool, ConfigError> {
    let parsed = Url::parse(url).map_err(|e| ConfigError::new(key, format!("not a URL: {}", e)))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(ConfigError::new(key, "must be a redis:// or rediss:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, "names no host"));
    }
    redis_client_check(url).map_err(|e| ConfigError::new(key, e))?;
    Ok(parsed.scheme() == "rediss")
}

/// Reads and checks the TLS files: PEM, with at least one certificate (and a key).
fn tls_files(
    ca_file: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
    tls: bool,
) -> Result<Option<redis::TlsCertificates>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let any = [
        ("cluster.tls_ca_file", ca_file),
        ("cluster.tls_client_cert", client_cert),
        ("cluster.tls_client_key", client_key),
    ]
    .into_iter()
    .find(|(_, f)| f.is_some());
    if let Some((key, _)) = any {
        if !tls {
            return Err(ConfigError::new(key, "only used with rediss:// (TLS) URLs"));
        }
    } else {
        return Ok(None);
    }
    let read = |key: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
    };
    let certs = |key: &str, pem: &[u8]| {
        let n = CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(drop))
            .collect::<Result<Vec<()>, _>>()
            .map_err(|e| ConfigError::new(key, format!("not a PEM certificate file: {e}")))?
            .len();
        if n == 0 {
            return Err(ConfigError::new(key, "holds no PEM certificate"));
        }
        Ok(())
    };
    let root_cert = match ca_file {
        Some(path) => {
            let pem = read("cluster.tls_ca_file", path)?;
            certs("cluster.tls_ca_file", &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (client_cert, client_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "cluster.tls_client_key",
                "required with cluster.tls_client_cert",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "cluster.tls_client_cert",
                "required with cluster.tls_client_key",
            ));
        }
        (Some(cert), Some(key)) => {
            let client_cert = read("cluster.tls_client_cert", cert)?;
            certs("cluster.tls_client_cert", &client_cert)?;
            let client_key = read("cluster.tls_client_key", key)?;
            // The error never shows the file's content: it is a private key.
            PrivateKeyDer::from_pem_slice(&client_key).map_err(|_| {
                ConfigError::new(
                    "cluster.tls_client_key",
                    format!("{} holds no PEM private key", key.display()),
                )
            })?;
            Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn redis_client_check(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    shutdown_grace: Option<FileDuration>,
    token_cache: Option<usize>,
    max_token_bytes: Option<usize>,
    tenant_header: Option<String>,
    node_id: Option<String>,
    header_read_timeout: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    tenant: String,
    name: String,
    issuer: String,
    jwks_uri: Option<String>,
    /// Several JWKS URLs whose keys the provider trusts together (instead of `jwks_uri`).
    jwks_uris: Option<Vec<String>>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    skip_audience_check: bool,
    #[serde(default)]
    algorithms: Vec<String>,
    leeway: Option<FileDuration>,
    require_exp: Option<bool>,
    required_typ: Option<String>,
    #[serde(default)]
    refuse_embedded_keys: bool,
    min_ttl: Option<FileDuration>,
    max_ttl: Option<FileDuration>,
    default_ttl: Option<FileDuration>,
    refresh_ahead: Option<FileDuration>,
    refresh_jitter: Option<FileDuration>,
    stale_window: Option<FileDuration>,
    unknown_kid_burst: Option<u32>,
    unknown_kid_refill: Option<FileDuration>,
    negative_ttl: Option<FileDuration>,
    max_keys: Option<usize>,
    max_jwks_bytes: Option<usize>,
    fetch_timeout: Option<FileDuration>,
    fetch_attempts: Option<u32>,
    fetch_deadline: Option<FileDuration>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allow_insecure_http: bool,
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    #[serde(default)]
    keys: Vec<FileApiKey>,
    max_failures: Option<u32>,
    failure_window: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiKey {
    id: String,
    hash: Option<String>,
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRevocations {
    max_token_lifetime: Option<FileDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevIssuer {
    listen: Option<String>,
    audience: Option<String>,
    tenant: Option<String>,
    provider: Option<String>,
}

impl FileConfig {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let server = self.server.validate()?;
        let dev_issuer = self.dev_issuer.map(FileDevIssuer::validate).transpose()?;
        if self.providers.is_empty() && dev_issuer.is_none() {
            return Err(ConfigError::new(
                "providers",
                "at least one [[providers]] entry is required",
            ));
        }
        let mut fetchers = Fetchers::default();
        let mut seen = HashSet::new();
        let mut issuers = HashSet::new();
        let mut providers = Vec::with_capacity(self.providers.len());
        for (i, p) in self.providers.into_iter().enumerate() {
            let key = format!("providers[{i}]");
            let spec = p.validate(&key, &mut fetchers, &server.tenant_header)?;
            let id = (
                spec.config.tenant().to_owned(),
                spec.config.name().to_owned(),
            );
            if !seen.insert(id.clone()) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("provider {}/{} is configured twice", id.0, id.1),
                ));
            }
            if !issuers.insert((id.0.clone(), spec.config.issuer().to_owned())) {
                return Err(ConfigError::new(
                    format!("{key}.issuer"),
                    format!(
                        "issuer {} appears twice in tenant {}: a token could not say which provider it belongs to",
                        spec.config.issuer(),
                        id.0
                    ),
                ));
            }
            providers.push(spec);
        }
        if let Some(dev) = &dev_issuer
            && seen.contains(&(dev.tenant.clone(), dev.provider.clone()))
        {
            return Err(ConfigError::new(
                "dev_issuer.provider",
                format!(
                    "provider {}/{} is also configured in [[providers]]",
                    dev.tenant, dev.provider
                ),
            ));
        }
        let admin = self.admin.validate(env)?;
        let revocations = RevocationConfig {
            max_token_lifetime: self
                .revocations
                .max_token_lifetime
                .map_or(Duration::from_secs(24 * 3600), |d| d.0),
        };
        if revocations.max_token_lifetime.is_zero() {
            return Err(ConfigError::new(
                "revocations.max_token_lifetime",
                "must be positive",
            ));
        }
        let cluster = self.cluster.validate(env)?;
        Ok(Config {
            server,
            providers,
            admin,
            revocations,
            dev_issuer,
            cluster,
        })
    }
}

impl FileServer {
    fn validate(self) -> Result<ServerConfig, ConfigError> {
        let addr = |key: &str, v: Option<String>, default: &str| {
            let v = v.unwrap_or_else(|| default.to_owned());
            v.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    format!("server.{key}"),
                    format!("{v:?} is not an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
                )
            })
        };
        let listen = addr("listen", self.listen, DEFAULT_LISTEN)?;
        let admin_listen = addr("admin_listen", self.admin_listen, DEFAULT_ADMIN_LISTEN)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::new(
                "server.admin_listen",
                "must differ from server.listen: the admin API has its own listener so it can stay private",
            ));
        }
        let tenant_header = self
            .tenant_header
            .unwrap_or_else(|| "x-keygate-tenant".to_owned());
        let tenant_header = HeaderName::try_from(tenant_header.as_str()).map_err(|_| {
            ConfigError::new(
                "server.tenant_header",
                format!("{tenant_header:?} is not a valid header name"),
            )
        })?;
        let max_token_bytes = self
            .max_token_bytes
            .unwrap_or(keygate::DEFAULT_MAX_TOKEN_BYTES);
        if !(256..=1024 * 1024).contains(&max_token_bytes) {
            return Err(ConfigError::new(
                "server.max_token_bytes",
                "must be between 256 and 1048576",
            ));
        }
        let node_id = self.node_id.unwrap_or_else(default_node_id);
        if node_id.is_empty() || node_id.len() > 128 {
            return Err(ConfigError::new(
                "server.node_id",
                "must be 1 to 128 characters",
            ));
        }
        let header_read_timeout = self
            .header_read_timeout
            .map_or(Duration::from_secs(30), |d| d.0);
        if header_read_timeout.is_zero() || header_read_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "server.header_read_timeout",
                "must be between 1ms and 1h",
            ));
        }
        Ok(ServerConfig {
            listen,
            admin_listen,
            header_read_timeout,
            shutdown_grace: self.shutdown_grace.map_or(Duration::from_secs(10), |d| d.0),
            token_cache: self.token_cache.unwrap_or(100_000),
            max_token_bytes,
            tenant_header,
            node_id,
        })
    }
}

/// The host name, or a random id when there is none.
fn default_node_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("keygate-{:08x}", fastrand_u32()))
}

fn fastrand_u32() -> u32 {
    let mut b = [0u8; 4];
    // A node id only needs to differ between replicas; if the system RNG fails the id is
    // still valid, just less likely to be unique.
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}

/// The two shared fetchers: strict, and loopback-http-allowed. Providers with their own
/// limits (`allowed_hosts`, `max_jwks_bytes`, `fetch_timeout`) get their own.
#[derive(Default)]
struct Fetchers {
    strict: Option<Arc<HttpFetcher>>,
    loopback: Option<Arc<HttpFetcher>>,
}

impl Fetchers {
    fn shared(&mut self, key: &str, allow_http: bool) -> Result<Arc<HttpFetcher>, ConfigError> {
        let slot = if allow_http {
            &mut self.loopback
        } else {
            &mut self.strict
        };
        if let Some(f) = slot {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(
            HttpFetcher::builder()
                .danger_allow_http_loopback(allow_http)
                .build()
                .map_err(|e| ConfigError::new(key, e.to_string()))?,
        );
        *slot = Some(Arc::clone(&f));
        Ok(f)
    }
}

/// A tenant, provider or key name: it appears in URL paths, metric labels and environment
/// variable names. `key` names the setting (or flag) in the error.
///
/// # Errors
/// A [`ConfigError`] naming `key` when `value` is empty, longer than 64 bytes, or holds a
/// character other than A-Z, a-z, 0-9, `-`, `_` or `.`.
pub fn check_name(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'"),
        ))
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl FileProvider {
    /// Checks one URL keys are fetched from (`at` is its key path): https, or plain http
    /// to loopback with `allow_insecure_http`.
    fn check_fetch_url(
        &self,
        at: &str,
        fetch_url: &str,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let url = Url::parse(fetch_url)
            .map_err(|e| ConfigError::new(at, format!("{fetch_url:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http && is_loopback_host(&url) => {}
            "http" if self.allow_insecure_http => {
                return Err(ConfigError::new(
                    k("allow_insecure_http"),
                    format!(
                        "plain http is honoured only for loopback addresses, not {}",
                        url.host_str().unwrap_or("")
                    ),
                ));
            }
            "http" => {
                return Err(ConfigError::new(
                    at,
                    "plain http is refused; use https (or allow_insecure_http = true for a loopback test issuer)",
                ));
            }
            other => {
                return Err(ConfigError::new(
                    at,
                    format!("scheme {other:?} is not supported; use https"),
                ));
            }
        }
        Ok(())
    }

    fn validate(
        self,
        key: &str,
        fetchers: &mut Fetchers,
        tenant_header: &HeaderName,
    ) -> Result<ProviderSpec, ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        check_name(&k("tenant"), &self.tenant)?;
        check_name(&k("name"), &self.name)?;
        // Where keys will be fetched from: the JWKS URL(s), or the issuer for discovery.
        let fetch_from: Vec<(String, &str)> = match (&self.jwks_uri, &self.jwks_uris) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    k("jwks_uris"),
                    "set either jwks_uri or jwks_uris, not both",
                ));
            }
            (None, Some(uris)) if uris.is_empty() || uris.len() > keygate::MAX_JWKS_URIS => {
                return Err(ConfigError::new(
                    k("jwks_uris"),
                    format!("list 1 to {} URLs", keygate::MAX_JWKS_URIS),
                ));
            }
            (None, Some(uris)) => {
                let mut seen = HashSet::new();
                let mut each = Vec::with_capacity(uris.len());
                for (j, u) in uris.iter().enumerate() {
                    let at = k(&format!("jwks_uris[{j}]"));
                    if !seen.insert(u.as_str()) {
                        return Err(ConfigError::new(at, format!("{u:?} is listed twice")));
                    }
                    each.push((at, u.as_str()));
                }
                each
            }
            (Some(u), None) => vec![(k("jwks_uri"), u.as_str())],
            (None, None) => vec![(k("issuer"), self.issuer.as_str())],
        };
        for (at, fetch_url) in &fetch_from {
            self.check_fetch_url(at, fetch_url, &k)?;
        }
        if self.audiences.is_empty() && !self.skip_audience_check {
            return Err(ConfigError::new(
                k("audiences"),
                "at least one audience is required (or skip_audience_check = true, for issuers that mint tokens for this service alone)",
            ));
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for (j, name) in self.algorithms.iter().enumerate() {
            let alg = name.parse::<Algorithm>().map_err(|e| {
                let all = Algorithm::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                // HMAC names are refused with the reason (key confusion), not as a typo.
                let problem = if e.is_hmac() {
                    format!("{e}; use one of {all}")
                } else {
                    format!("{name:?} is not a supported algorithm; use one of {all}")
                };
                ConfigError::new(format!("{key}.algorithms[{j}]"), problem)
            })?;
            algorithms.push(alg);
        }
        let d = CacheSettings::default();
        let ttl_default = TtlPolicy::default();
        let mut ttl = TtlPolicy::default();
        ttl.min_ttl = self.min_ttl.map_or(ttl_default.min_ttl, |v| v.0);
        ttl.max_ttl = self.max_ttl.map_or(ttl_default.max_ttl, |v| v.0);
        ttl.default_ttl = self.default_ttl.map_or(
            ttl_default
                .default_ttl
                .clamp(ttl.min_ttl, ttl.max_ttl.max(ttl.min_ttl)),
            |v| v.0,
        );
        if let Err(problem) = ttl.validate() {
            // The library's messages start with the setting they blame.
            let field = problem.split(' ').next().unwrap_or("min_ttl");
            return Err(ConfigError::new(k(field), problem));
        }
        let mut cache = CacheSettings::default();
        cache.ttl = ttl;
        cache.refresh_ahead = self.refresh_ahead.map_or(d.refresh_ahead, |v| v.0);
        cache.refresh_jitter = self.refresh_jitter.map_or(d.refresh_jitter, |v| v.0);
        cache.stale_window = self.stale_window.map_or(d.stale_window, |v| v.0);
        cache.unknown_kid_burst = self.unknown_kid_burst.unwrap_or(d.unknown_kid_burst);
        cache.unknown_kid_refill = self
            .unknown_kid_refill
            .map_or(d.unknown_kid_refill, |v| v.0);
        cache.negative_ttl = self.negative_ttl.map_or(d.negative_ttl, |v| v.0);
        cache.max_keys = self.max_keys.unwrap_or(d.max_keys);
        if cache.unknown_kid_burst == 0 {
            return Err(ConfigError::new(
                k("unknown_kid_burst"),
                "must be at least 1: with 0, tokens of a new key are refused until the next \
                 scheduled refresh; to call the IdP less often, lengthen unknown_kid_refill",
            ));
        }
        if cache.unknown_kid_refill.is_zero() {
            return Err(ConfigError::new(
                k("unknown_kid_refill"),
                "must be positive",
            ));
        }
        if cache.max_keys == 0 {
            return Err(ConfigError::new(k("max_keys"), "must be positive"));
        }
        if cache.refresh_ahead >= ttl.min_ttl {
            return Err(ConfigError::new(
                k("refresh_ahead"),
                "must be shorter than min_ttl, or every refresh would be due at once",
            ));
        }

        // `fetch_timeout` bounds each attempt twice, in the HTTP client and in the retry loop;
        // both get it, or the shorter one would win whatever the file says.
        let mut retry = RetrySettings::default();
        if let Some(t) = self.fetch_timeout {
            retry.attempt_timeout = t.0;
            retry.deadline = retry.deadline.max(t.0);
        }
        if let Some(n) = self.fetch_attempts {
            if n == 0 {
                return Err(ConfigError::new(k("fetch_attempts"), "must be at least 1"));
            }
            retry.attempts = n;
        }
        if let Some(d) = self.fetch_deadline {
            if d.0 < retry.attempt_timeout {
                return Err(ConfigError::new(
                    k("fetch_deadline"),
                    format!(
                        "must be at least fetch_timeout ({:?}), or no attempt could take all of it",
                        retry.attempt_timeout
                    ),
                ));
            }
            retry.deadline = d.0;
        }

        let custom_fetch = !self.allowed_hosts.is_empty()
            || self.max_jwks_bytes.is_some()
            || self.fetch_timeout.is_some();
        let fetcher = if custom_fetch {
            let mut b = HttpFetcher::builder().danger_allow_http_loopback(self.allow_insecure_http);
            if !self.allowed_hosts.is_empty() {
                b = b.allowed_hosts(self.allowed_hosts.iter().cloned());
            }
            if let Some(max) = self.max_jwks_bytes {
                if max == 0 {
                    return Err(ConfigError::new(k("max_jwks_bytes"), "must be positive"));
                }
                b = b.max_body_bytes(max);
            }
            if let Some(t) = self.fetch_timeout {
                if t.0.is_zero() {
                    return Err(ConfigError::new(k("fetch_timeout"), "must be positive"));
                }
                b = b.timeout(t.0);
            }
            Arc::new(
                b.build()
                    .map_err(|e| ConfigError::new(key, e.to_string()))?,
            )
        } else {
            fetchers.shared(key, self.allow_insecure_http)?
        };

        let mut claims_to_headers = Vec::with_capacity(self.claims_to_headers.len());
        let mut headers_seen = HashSet::new();
        for (claim, header) in &self.claims_to_headers {
            let hkey = format!("{key}.claims_to_headers.{claim}");
            let name = HeaderName::try_from(header.as_str()).map_err(|_| {
                ConfigError::new(&hkey, format!("{header:?} is not a valid header name"))
            })?;
            if let Some(why) = refused_claim_header(&name, tenant_header) {
                return Err(ConfigError::new(
                    &hkey,
                    format!("{header} may not carry a claim: {why}"),
                ));
            }
            if !headers_seen.insert(name.clone()) {
                return Err(ConfigError::new(
                    &hkey,
                    format!("{header} is the target of two claims"),
                ));
            }
            claims_to_headers.push((claim.clone(), name));
        }

        let mut b = ProviderConfig::builder(&self.tenant, &self.name, &self.issuer)
            .audiences(self.audiences)
            .algorithms(algorithms)
            .cache(cache)
            .retry(retry)
            .fetcher(fetcher);
        if self.skip_audience_check {
            b = b.dangerous_skip_audience_check();
        }
        if let Some(uri) = &self.jwks_uri {
            b = b.jwks_uri(uri);
        }
        if let Some(uris) = &self.jwks_uris {
            b = b.jwks_uris(uris.iter().cloned());
        }
        if let Some(l) = self.leeway {
            if l.0 > Duration::from_secs(300) {
                return Err(ConfigError::new(k("leeway"), "must be at most 5 minutes"));
            }
            b = b.leeway(l.0);
        }
        if let Some(r) = self.require_exp {
            b = b.require_exp(r);
        }
        if let Some(t) = self.required_typ {
            b = b.required_typ(t);
        }
        b = b.refuse_embedded_keys(self.refuse_embedded_keys);
        let config = b
            .build()
            .map_err(|e| ConfigError::new(k(e.field), e.problem))?;
        Ok(ProviderSpec {
            config,
            claims_to_headers,
        })
    }
}

impl FileAdmin {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<AdminConfig, ConfigError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        let mut ids = HashSet::new();
        let mut vars = BTreeMap::new();
        for (i, k) in self.keys.into_iter().enumerate() {
            let key = format!("admin.keys[{i}]");
            check_name(&format!("{key}.id"), &k.id)?;
            if !ids.insert(k.id.clone()) {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    format!("key id {:?} is used twice", k.id),
                ));
            }
            one_env_var_each(&mut vars, &key, &k.id, hash_env_var)?;
            let var = hash_env_var(&k.id);
            let (hash_key, hash) = match env(&var) {
                Some(h) => (var, h),
                None => (
                    format!("{key}.hash"),
                    k.hash.ok_or_else(|| {
                        ConfigError::new(
                            format!("{key}.hash"),
                            format!(
                                "missing: paste the output of `keygate admin hash-key`, or set {var}"
                            ),
                        )
                    })?,
                ),
            };
            let hash: KeyHash = hash
                .trim()
                .parse()
                .map_err(|e| ConfigError::new(hash_key, format!("{e}")))?;
            if k.scopes.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.scopes"),
                    "at least one scope is required",
                ));
            }
            let mut scopes = Vec::with_capacity(k.scopes.len());
            for (j, s) in k.scopes.iter().enumerate() {
                scopes.push(
                    s.parse::<Scope>().map_err(|e| {
                        ConfigError::new(format!("{key}.scopes[{j}]"), e.to_string())
                    })?,
                );
            }
            keys.push(ApiKey {
                id: k.id,
                hash,
                scopes,
            });
        }
        let d = FailureLimit::default();
        let max_failures = self.max_failures.unwrap_or(d.max_failures);
        let window = self.failure_window.map_or(d.window, |w| w.0);
        FailureLimit::new(max_failures, d.window)
            .map_err(|problem| ConfigError::new("admin.max_failures", problem))?;
        if window > MAX_FAILURE_WINDOW {
            return Err(ConfigError::new(
                "admin.failure_window",
                "must be at most 1d: a longer lockout would shut operators out too",
            ));
        }
        let failure_limit = FailureLimit::new(max_failures, window)
            .map_err(|problem| ConfigError::new("admin.failure_window", problem))?;
        Ok(AdminConfig {
            keys,
            failure_limit,
        })
    }
}

/// The longest `admin.failure_window`.
const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

/// The environment variable that overrides the hash of admin key `id`:
/// `KEYGATE_ADMIN_KEY_<ID>_HASH`, with the id upper-cased and `-` and `.` turned into `_`.
#[must_use]
pub fn hash_env_var(id: &str) -> String {
    format!("KEYGATE_ADMIN_KEY_{}_HASH", env_id(id))
}

impl FileDevIssuer {
    fn validate(self) -> Result<DevIssuerConfig, ConfigError> {
        let listen = self
            .listen
            .unwrap_or_else(|| DEFAULT_DEV_ISSUER_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::new(
                "dev_issuer.listen",
                format!("{listen:?} is not an address like \"127.0.0.1:8082\""),
            )
        })?;
        if !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "dev_issuer.listen",
                "the development issuer mints tokens for anyone who asks: it listens on loopback only",
            ));
        }
        let tenant = self.tenant.unwrap_or_else(|| "dev".to_owned());
        let provider = self.provider.unwrap_or_else(|| "dev".to_owned());
        check_name("dev_issuer.tenant", &tenant)?;
        check_name("dev_issuer.provider", &provider)?;
        let audience = self.audience.unwrap_or_else(|| DEV_AUDIENCE.to_owned());
        if audience.is_empty() {
            return Err(ConfigError::new("dev_issuer.audience", "must not be empty"));
        }
        Ok(DevIssuerConfig {
            listen,
            audience,
            tenant,
            provider,
        })
    }
}

/// Turns a TOML error into a [`ConfigError`] naming `key` (empty for the document as a
/// whole) and saying where in the text it is.
fn syntax_error(text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let location = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {col}: ")
    });
    ConfigError::new(
        key,
        format!("{}{}", location.unwrap_or_default(), e.message().trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &|_| None)
    }

    /// `fetch_timeout` governs each attempt, not only the HTTP client: an IdP that answers in
    /// 6 s is fetched with `fetch_timeout = "10s"` (it used to be cut at the retry loop's own
    /// 5 s per attempt, three times, and never loaded). Real time: the delay is the IdP's.
    #[tokio::test]
    async fn a_fetch_timeout_above_five_seconds_lets_a_six_second_idp_load() {
        use keygate_test_support::{StubIdp, StubResponse, TestKey, jwks};
        let idp = StubIdp::start().await;
        let key = TestKey::shared_p256("slow-idp");
        idp.set_response(
            "/jwks",
            StubResponse::json(200, jwks(&[key])).delay(Duration::from_secs(6)),
        );
        let text = format!(
            "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"{}\"\n\
             jwks_uri = \"{}\"\naudiences = [\"x\"]\nallow_insecure_http = true\n\
             fetch_timeout = \"10s\"\nfetch_attempts = 2",
            idp.issuer(),
            idp.jwks_url()
        );
        let mut config = parse(&text).unwrap();
        let verifier = keygate::Verifier::builder()
            .provider(config.providers.remove(0).config)
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        verifier.warm_up().await;
        let status = verifier.status().remove(0);
        assert!(status.state.has_usable_keys(), "{status:?}");
        assert_eq!(status.kids, ["slow-idp"]);
        assert_eq!(idp.requests("/jwks"), 1);
        assert_eq!(status.counters.requests.get("200"), Some(&1));
        assert!(started.elapsed() >= Duration::from_secs(6));
    }

    const MINIMAL: &str = r#"
        [[providers]]
        tenant = "acme"
        name = "auth0"
        issuer = "https://acme.example/"
        audiences = ["api"]
    "#;

    #[test]
    fn minimal_file_gets_safe_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.server.admin_listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.providers.len(), 1);
        assert!(c.admin.keys.is_empty());
        assert!(c.dev_issuer.is_none());
        assert_eq!(c.providers[0].config.cache(), &CacheSettings::default());
    }

    #[test]
    fn embedded_keys_are_ignored_unless_refused_and_hmac_says_why() {
        assert!(
            !parse(MINIMAL).unwrap().providers[0]
                .config
                .refuses_embedded_keys()
        );
        let c = parse(&format!("{MINIMAL}\nrefuse_embedded_keys = true")).unwrap();
        assert!(c.providers[0].config.refuses_embedded_keys());
        let e = parse(&format!("{MINIMAL}\nalgorithms = [\"ES512\", \"HS512\"]")).unwrap_err();
        assert_eq!(e.key, "providers[0].algorithms[1]");
        assert!(e.problem.contains("key-confusion"), "{}", e.problem);
        let e = parse(&format!("{MINIMAL}\nalgorithms = [\"XS1\"]")).unwrap_err();
        assert!(
            e.problem.contains("not a supported algorithm"),
            "{}",
            e.problem
        );
    }

    #[test]
    fn several_jwks_uris_make_one_provider() {
        let c = parse(&format!(
            "{MINIMAL}\njwks_uris = [\"https://a.example/jwks\", \"https://b.example/keys\"]"
        ))
        .unwrap();
        let urls: Vec<&str> = c.providers[0]
            .config
            .jwks_uris()
            .iter()
            .map(url::Url::as_str)
            .collect();
        assert_eq!(urls, ["https://a.example/jwks", "https://b.example/keys"]);
        let nine: Vec<String> = (0..9)
            .map(|i| format!("\"https://a.example/{i}\""))
            .collect();
        let err = parse(&format!("{MINIMAL}\njwks_uris = [{}]", nine.join(", "))).unwrap_err();
        assert_eq!(err.key, "providers[0].jwks_uris");
    }

    #[test]
    fn durations_accept_units_and_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        let c = parse(&format!("{MINIMAL}\nstale_window = \"2h\"\nleeway = 10")).unwrap();
        assert_eq!(
            c.providers[0].config.cache().stale_window,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let cases: &[(&str, &str)] = &[
            ("", "providers"),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            (
                "[server]\nlisten = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"",
                "server.admin_listen",
            ),
            (
                "[[providers]]\ntenant = \"a b\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]",
                "providers[0].tenant",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nunknown_kid_burst = 0",
                "providers[0].unknown_kid_burst",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nfetch_attempts = 0",
                "providers[0].fetch_attempts",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nfetch_timeout = \"10s\"\nfetch_deadline = \"8s\"",
                "providers[0].fetch_deadline",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"",
                "providers[0].audiences",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://idp.example\"\naudiences = [\"x\"]",
                "providers[0].issuer",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uri = \"http://idp.example/jwks\"\nallow_insecure_http = true\naudiences = [\"x\"]",
                "providers[0].allow_insecure_http",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nalgorithms = [\"HS256\"]",
                "providers[0].algorithms[0]",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"http://b.example/jwks\"]\naudiences = [\"x\"]",
                "providers[0].jwks_uris[1]",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"nope\"]\naudiences = [\"x\"]",
                "providers[0].jwks_uris[1]",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = [\"https://a/jwks\", \"https://b/jwks\", \"https://a/jwks\"]\naudiences = [\"x\"]",
                "providers[0].jwks_uris[2]",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uri = \"https://a/jwks\"\njwks_uris = [\"https://b/jwks\"]\naudiences = [\"x\"]",
                "providers[0].jwks_uris",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\njwks_uris = []\naudiences = [\"x\"]",
                "providers[0].jwks_uris",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\nmin_ttl = \"1h\"\nmax_ttl = \"5m\"",
                "providers[0].min_ttl",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[providers.claims_to_headers]\nsub = \"X-Auth-Subject\"",
                "providers[0].claims_to_headers.sub",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://j\"\naudiences = [\"x\"]",
                "providers[1].name",
            ),
            (
                "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"https://i\"\naudiences = [\"x\"]\n[[providers]]\ntenant = \"t\"\nname = \"q\"\nissuer = \"https://i\"\naudiences = [\"x\"]",
                "providers[1].issuer",
            ),
            (
                "[dev_issuer]\nlisten = \"0.0.0.0:8082\"",
                "dev_issuer.listen",
            ),
            (
                &format!("{MINIMAL}\n[[admin.keys]]\nid = \"ops\"\nscopes = [\"status:read\"]"),
                "admin.keys[0].hash",
            ),
            (
                &format!(
                    "{MINIMAL}\n[[admin.keys]]\nid = \"ops\"\nhash = \"plaintext\"\nscopes = [\"status:read\"]"
                ),
                "admin.keys[0].hash",
            ),
            (
                &format!("{MINIMAL}\n[revocations]\nmax_token_lifetime = 0"),
                "revocations.max_token_lifetime",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
            assert!(!err.problem.is_empty());
        }
    }

    #[test]
    fn syntax_and_unknown_keys_say_where() {
        let err = parse("[server]\nlisn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.problem.contains("lisn"), "{err}");
        assert!(err.problem.contains("line 2"), "{err}");
        let err = parse("[[providers]\n").unwrap_err();
        assert!(err.problem.contains("line 1"), "{err}");
    }

    #[test]
    fn admin_failure_limit_defaults_parses_and_names_the_key() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.admin.failure_limit, FailureLimit::default());
        let c = parse(&format!(
            "{MINIMAL}\n[admin]\nmax_failures = 3\nfailure_window = \"2s\""
        ))
        .unwrap();
        assert_eq!(
            c.admin.failure_limit,
            FailureLimit::new(3, Duration::from_secs(2)).unwrap()
        );
        for (text, key) in [
            ("max_failures = 0", "admin.max_failures"),
            ("failure_window = 0", "admin.failure_window"),
            ("failure_window = \"2d\"", "admin.failure_window"),
        ] {
            let err = parse(&format!("{MINIMAL}\n[admin]\n{text}")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn admin_key_hash_comes_from_the_environment_when_set() {
        let hash = crate::apikey::hash_secret(b"s3cret-s3cret-s3cret").to_string();
        let text = format!(
            "{MINIMAL}\n[[admin.keys]]\nid = \"ci-bot\"\nscopes = [\"status:read\", \"jwks:flush\"]"
        );
        let c = Config::parse(&text, &|name| {
            (name == "KEYGATE_ADMIN_KEY_CI_BOT_HASH").then(|| hash.clone())
        })
        .unwrap();
        assert_eq!(c.admin.keys.len(), 1);
        assert!(c.admin.keys[0].hash.verify(b"s3cret-s3cret-s3cret"));
        assert_eq!(
            c.admin.keys[0].scopes,
            [Scope::StatusRead, Scope::JwksFlush]
        );
        let err = Config::parse(&text, &|name| {
            (name == "KEYGATE_ADMIN_KEY_CI_BOT_HASH").then(|| "nope".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.key, "KEYGATE_ADMIN_KEY_CI_BOT_HASH");
    }

    #[test]
    fn loopback_http_is_allowed_only_when_asked() {
        let text = "[[providers]]\ntenant = \"t\"\nname = \"p\"\nissuer = \"http://127.0.0.1:9/\"\naudiences = [\"x\"]\nallow_insecure_http = true\n[providers.claims_to_headers]\nemail = \"X-Auth-Email\"";
        let c = parse(text).unwrap();
        assert_eq!(
            c.providers[0].claims_to_headers,
            [("email".to_owned(), HeaderName::from_static("x-auth-email"))]
        );
    }

    #[test]
    fn cluster_sections_validate_and_name_the_key_at_fault() {
        let redis = |rest: &str| {
            format!(
                "{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n{rest}"
            )
        };
        let key = "[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        let ok = parse(&redis(key)).unwrap();
        let ClusterBackend::Redis(settings) = &ok.cluster.backend else {
            panic!("expected the redis backend");
        };
        assert_eq!(settings.prefix, "keygate");
        assert!(ok.cluster.accept_while_degraded);
        // The default is one node with no state file (load() puts one beside the file).
        assert!(matches!(
            parse(MINIMAL).unwrap().cluster.backend,
            ClusterBackend::Local { state_file: None }
        ));
        let cases: &[(String, &str)] = &[
            (redis(""), "cluster.keys"),
            (
                format!("{MINIMAL}\n[cluster]\nbackend = \"redis\"\n{key}"),
                "cluster.redis_url",
            ),
            (
                redis("[[cluster.keys]]\nid = \"k1\"\nsecret = \"short\"\n"),
                "cluster.keys[0].secret",
            ),
            (
                redis("[[cluster.keys]]\nid = \"k1\"\n"),
                "cluster.keys[0].secret",
            ),
            (redis(&format!("{key}{key}")), "cluster.keys[1].id"),
            (
                redis(&format!("prefix = \"a{{b}}\"\n{key}")),
                "cluster.prefix",
            ),
            (
                redis(&format!("max_log_len = 10\n{key}")),
                "cluster.max_log_len",
            ),
            (
                redis(&format!("fetch_lease = \"0s\"\n{key}")),
                "cluster.fetch_lease",
            ),
            (
                redis(&format!("state_file = \"x\"\n{key}")),
                "cluster.state_file",
            ),
            (
                format!(
                    "{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"http://x\"\n{key}"
                ),
                "cluster.redis_url",
            ),
            (
                format!("{MINIMAL}\n[cluster]\nbackend = \"etcd\"\n"),
                "cluster.backend",
            ),
            (
                format!("{MINIMAL}\n[cluster]\nredis_url = \"redis://x\"\n"),
                "cluster.redis_url",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, *field, "{e}\n{text}");
        }
        // The secret may come from the environment instead of the file.
        let env = |name: &str| {
            (name == "KEYGATE_CLUSTER_KEY_K1_SECRET")
                .then(|| "fedcba9876543210fedcba9876543210".to_owned())
        };
        let text = redis("[[cluster.keys]]\nid = \"k1\"\n");
        assert!(Config::parse(&text, &env).is_ok());
    }

    /// A file under the temp dir with `content`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, content: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "keygate-config-{}-{:08x}-{name}",
                std::process::id(),
                fastrand::u32(..)
            ));
            std::fs::write(&path, content).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const CLUSTER_KEY: &str =
        "[[cluster.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    fn cluster(body: &str) -> String {
        format!("{MINIMAL}\n[cluster]\nbackend = \"redis\"\n{body}\n{CLUSTER_KEY}")
    }

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn sentinels_tls_and_acknowledgements_validate_and_name_the_key_at_fault() {
        // Sentinels instead of a URL; a URL without a port gets Sentinel's.
        let ok = parse(&cluster(
            "sentinels = [\"redis://:pw@10.0.0.1:26379\", \"redis://10.0.0.2\"]\nsentinel_master = \"kg\"\n\
             redis_username = \"keygate\"\nredis_password = \"data-secret\"\n\
             min_replicas_ack = 1\nreplica_ack_timeout = \"250ms\"\n",
        ))
        .unwrap();
        let ClusterBackend::Redis(settings) = &ok.cluster.backend else {
            panic!("expected the redis backend");
        };
        let sentinel = settings.sentinel.as_ref().unwrap();
        assert_eq!(sentinel.master, "kg");
        assert_eq!(
            sentinel.urls,
            ["redis://:pw@10.0.0.1:26379", "redis://10.0.0.2:26379"]
        );
        assert_eq!(settings.username.as_deref(), Some("keygate"));
        assert_eq!(settings.password.as_deref(), Some("data-secret"));
        assert_eq!(settings.min_replicas_ack, 1);
        assert_eq!(settings.replica_ack_timeout, Duration::from_millis(250));
        assert!(settings.tls.is_none());
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("data-secret") && !shown.contains(":pw@"),
            "{shown}"
        );

        // Defaults: no waiting, a 1 s ack timeout.
        let plain = parse(&cluster("redis_url = \"redis://127.0.0.1:6379/0\"\n")).unwrap();
        let ClusterBackend::Redis(plain) = &plain.cluster.backend else {
            panic!("expected the redis backend");
        };
        assert_eq!(plain.min_replicas_ack, 0);
        assert_eq!(plain.replica_ack_timeout, Duration::from_secs(1));
        assert!(plain.sentinel.is_none());

        // The data nodes' password may come from the environment, and it wins.
        let env = |name: &str| (name == REDIS_PASSWORD_ENV).then(|| "from-env".to_owned());
        let text = cluster("redis_url = \"redis://127.0.0.1/\"\nredis_password = \"file\"\n");
        let c = Config::parse(&text, &env).unwrap();
        let ClusterBackend::Redis(s) = &c.cluster.backend else {
            panic!("expected the redis backend");
        };
        assert_eq!(s.password.as_deref(), Some("from-env"));

        // TLS: rediss:// is accepted, with or without a CA file; the CA must parse.
        let ca = TempFile::new("ca.pem", &test_ca_pem());
        let junk = TempFile::new("junk.pem", "not a certificate\n");
        let key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let client_key = TempFile::new("client.key", &key_pem);
        assert!(parse(&cluster("redis_url = \"rediss://redis.internal:6380/\"\n")).is_ok());
        let with_ca = parse(&cluster(&format!(
            "redis_url = \"rediss://127.0.0.1:6380/\"\ntls_ca_file = \"{}\"\n",
            ca.0.display()
        )))
        .unwrap();
        let ClusterBackend::Redis(s) = &with_ca.cluster.backend else {
            panic!("expected the redis backend");
        };
        let tls = s.tls.as_ref().unwrap();
        assert!(tls.root_cert.is_some() && tls.client_tls.is_none());
        let mutual = parse(&cluster(&format!(
            "redis_url = \"rediss://127.0.0.1:6380/\"\ntls_ca_file = \"{ca}\"\n\
             tls_client_cert = \"{ca}\"\ntls_client_key = \"{key}\"\n",
            ca = ca.0.display(),
            key = client_key.0.display()
        )))
        .unwrap();
        let ClusterBackend::Redis(s) = &mutual.cluster.backend else {
            panic!("expected the redis backend");
        };
        assert!(s.tls.as_ref().unwrap().client_tls.is_some());
        let shown = format!("{s:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        // Sentinels over TLS mean TLS to the data nodes too: the CA applies.
        assert!(
            parse(&cluster(&format!(
                "sentinels = [\"rediss://10.0.0.1:26379\"]\nsentinel_master = \"kg\"\ntls_ca_file = \"{}\"\n",
                ca.0.display()
            )))
            .is_ok()
        );

        let ca_path = ca.0.display().to_string();
        let junk_path = junk.0.display().to_string();
        let key_path = client_key.0.display().to_string();
        let cases: Vec<(String, &str)> = vec![
            (
                cluster(
                    "redis_url = \"redis://a/\"\nsentinels = [\"redis://b\"]\nsentinel_master = \"m\"\n",
                ),
                "cluster.sentinels",
            ),
            (cluster("sentinel_master = \"m\"\n"), "cluster.redis_url"),
            (
                cluster("sentinels = []\nsentinel_master = \"m\"\n"),
                "cluster.sentinels",
            ),
            (
                cluster("sentinels = [\"redis://b\"]\n"),
                "cluster.sentinel_master",
            ),
            (
                cluster("redis_url = \"redis://a/\"\nsentinel_master = \"m\"\n"),
                "cluster.sentinel_master",
            ),
            (
                cluster("sentinels = [\"redis://b\"]\nsentinel_master = \"has space\"\n"),
                "cluster.sentinel_master",
            ),
            (
                cluster("sentinels = [\"redis://a\", \"http://b\"]\nsentinel_master = \"m\"\n"),
                "cluster.sentinels[1]",
            ),
            (
                cluster("sentinels = [\"redis://a\", \"not a url\"]\nsentinel_master = \"m\"\n"),
                "cluster.sentinels[1]",
            ),
            (
                cluster("sentinels = [\"redis://a\", \"rediss://b\"]\nsentinel_master = \"m\"\n"),
                "cluster.sentinels[1]",
            ),
            (
                cluster(&format!(
                    "redis_url = \"redis://a/\"\ntls_ca_file = \"{ca_path}\"\n"
                )),
                "cluster.tls_ca_file",
            ),
            (
                cluster("redis_url = \"rediss://a/\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
                "cluster.tls_ca_file",
            ),
            (
                cluster(&format!(
                    "redis_url = \"rediss://a/\"\ntls_ca_file = \"{junk_path}\"\n"
                )),
                "cluster.tls_ca_file",
            ),
            (
                cluster(&format!(
                    "redis_url = \"rediss://a/\"\ntls_client_cert = \"{ca_path}\"\n"
                )),
                "cluster.tls_client_key",
            ),
            (
                cluster(&format!(
                    "redis_url = \"rediss://a/\"\ntls_client_key = \"{key_path}\"\n"
                )),
                "cluster.tls_client_cert",
            ),
            (
                cluster(&format!(
                    "redis_url = \"rediss://a/\"\ntls_client_cert = \"{ca_path}\"\ntls_client_key = \"{ca_path}\"\n"
                )),
                "cluster.tls_client_key",
            ),
            (
                cluster("redis_url = \"redis://a/\"\nmin_replicas_ack = 65\n"),
                "cluster.min_replicas_ack",
            ),
            (
                cluster("redis_url = \"redis://a/\"\nreplica_ack_timeout = \"0s\"\n"),
                "cluster.replica_ack_timeout",
            ),
            (
                cluster("redis_url = \"redis://a/\"\nredis_password = \"\"\n"),
                "cluster.redis_password",
            ),
            (
                cluster("redis_url = \"redis://a/\"\nredis_username = \"\"\n"),
                "cluster.redis_username",
            ),
            (
                format!("{MINIMAL}\n[cluster]\nsentinels = [\"redis://a\"]\n"),
                "cluster.sentinels",
            ),
            (
                format!("{MINIMAL}\n[cluster]\nmin_replicas_ack = 1\n"),
                "cluster.min_replicas_ack",
            ),
            (
                format!("{MINIMAL}\n[cluster]\ntls_ca_file = \"{ca_path}\"\n"),
                "cluster.tls_ca_file",
            ),
        ];
        for (text, field) in &cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, *field, "{e}\n{text}");
            assert!(!e.problem.contains("PRIVATE KEY"), "{e}");
        }
    }

    #[test]
    fn errors_found_while_parsing_name_the_key_path() {
        let second = "[[providers]]\ntenant = \"t\"\nname = \"q\"\nissuer = \"https://j.example/\"\naudiences = \"api\"\n";
        let cases: &[(String, &str)] = &[
            // Top level.
            ("providers = 5\n".to_owned(), "providers"),
            // Nested.
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = 8081\n".to_owned(),
                "server.admin_listen",
            ),
            (format!("{MINIMAL}\nleeway = true\n"), "providers[0].leeway"),
            // Inside an array of tables.
            (format!("{MINIMAL}\n{second}"), "providers[1].audiences"),
            (
                format!("{MINIMAL}\n[[admin.keys]]\nid = 7\nscopes = [\"status:read\"]\n"),
                "admin.keys[0].id",
            ),
            (
                format!("{MINIMAL}\n[cluster]\nsentinels = [\"redis://a\", 5]\n"),
                "cluster.sentinels[1]",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.key, *key, "{text}: {err}");
            assert!(err.problem.contains("line "), "{text}: {err}");
        }
        // An unknown key is named by its table and spelled out in the problem.
        let err = parse("[server]\nlisn = \"127.0.0.1:1\"").unwrap_err();
        assert_eq!(err.key, "server.lisn", "{err}");
        assert!(err.problem.contains("lisn"), "{err}");
    }

    #[test]
    fn claims_to_headers_refuses_headers_keygate_controls() {
        let refused = [
            "Cache-Control",
            "Pragma",
            "Expires",
            "Age",
            "Vary",
            "ETag",
            "Last-Modified",
            "Transfer-Encoding",
            "Content-Length",
            "Content-Type",
            "Content-Encoding",
            "Content-Range",
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Upgrade",
            "TE",
            "Trailer",
            "Host",
            "Location",
            "Set-Cookie",
            "WWW-Authenticate",
            "Proxy-Authenticate",
            "Date",
            "Retry-After",
            "Server",
            "Alt-Svc",
            "Strict-Transport-Security",
            "X-Auth-Subject",
            "X-Auth-Reason",
            "x-keygate-tenant",
        ];
        for header in refused {
            let text = format!("{MINIMAL}\n[providers.claims_to_headers]\nclaim = \"{header}\"\n");
            let err = parse(&text).expect_err(header);
            assert_eq!(err.key, "providers[0].claims_to_headers.claim", "{err}");
            assert!(err.problem.contains(header), "{err}");
        }
        // The tenant header is refused under whatever name it is configured.
        let text = format!(
            "[server]\ntenant_header = \"x-tenant\"\n{MINIMAL}\n[providers.claims_to_headers]\nt = \"X-Tenant\"\n"
        );
        assert_eq!(
            parse(&text).unwrap_err().key,
            "providers[0].claims_to_headers.t"
        );
        let ok = parse(&format!(
            "{MINIMAL}\n[providers.claims_to_headers]\nemail = \"X-User-Email\"\n"
        ))
        .unwrap();
        assert_eq!(ok.providers[0].claims_to_headers[0].1, "x-user-email");
    }

    #[test]
    fn key_ids_that_share_an_environment_variable_are_refused() {
        let hash = crate::apikey::hash_secret_with_iterations(b"kg_x", 10_000).unwrap();
        let text = format!(
            "{MINIMAL}\n[[admin.keys]]\nid = \"a-b\"\nhash = \"{hash}\"\nscopes = [\"status:read\"]\n\
             [[admin.keys]]\nid = \"a_b\"\nhash = \"{hash}\"\nscopes = [\"status:read\"]\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "admin.keys[1].id", "{err}");
        assert!(
            err.problem.contains("\"a-b\"")
                && err.problem.contains("\"a_b\"")
                && err.problem.contains("KEYGATE_ADMIN_KEY_A_B_HASH"),
            "{err}"
        );
        let secret = "0123456789abcdef0123456789abcdef";
        let text = format!(
            "{MINIMAL}\n[cluster]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1/\"\n\
             [[cluster.keys]]\nid = \"k.1\"\nsecret = \"{secret}\"\n\
             [[cluster.keys]]\nid = \"k-1\"\nsecret = \"{secret}\"\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key, "cluster.keys[1].id", "{err}");
        assert!(
            err.problem.contains("\"k.1\"")
                && err.problem.contains("KEYGATE_CLUSTER_KEY_K_1_SECRET"),
            "{err}"
        );
    }

    /// The keys serde accepts in a table, read from its refusal of an unknown key: the
    /// `File*` types are the one list, so a key added there cannot be forgotten here.
    fn keys_of(table: &str) -> Vec<String> {
        let err = parse(&format!("{table}\nno_such_key_here = 1\n")).unwrap_err();
        let (_, expected) = err
            .problem
            .split_once("expected one of ")
            .or_else(|| err.problem.split_once("expected "))
            .unwrap_or_else(|| panic!("{table}: {err}"));
        let keys: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(!keys.is_empty(), "{table}: {err}");
        keys
    }

    #[test]
    fn the_example_documents_every_key() {
        let example = include_str!("../../../examples/keygate.toml");
        // `key =`, commented or not, or a table header naming it.
        let documented = |key: &str| {
            example.lines().any(|line| {
                let line = line.trim_start().trim_start_matches('#').trim_start();
                line.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
                    || (line.starts_with('[')
                        && line
                            .trim_matches(|c| c == '[' || c == ']')
                            .split('.')
                            .any(|part| part == key))
            })
        };
        let tables = [
            "",
            "[server]",
            "[[providers]]",
            "[providers.claims_to_headers]",
            "[admin]",
            "[[admin.keys]]",
            "[revocations]",
            "[dev_issuer]",
            "[cluster]",
            "[[cluster.keys]]",
        ];
        let mut missing = Vec::new();
        for table in tables {
            if table == "[providers.claims_to_headers]" {
                continue; // free-form: claim = header
            }
            for key in keys_of(table) {
                if !documented(&key) {
                    missing.push(format!("{table} {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "examples/keygate.toml does not document: {missing:?}"
        );
    }

    #[test]
    fn embedded_default_has_the_dev_issuer_and_no_other_provider() {
        let c = Config::embedded_default();
        let dev = c.dev_issuer.unwrap();
        assert_eq!(dev.listen, DEFAULT_DEV_ISSUER_LISTEN.parse().unwrap());
        assert_eq!(dev.audience, DEV_AUDIENCE);
        assert!(c.providers.is_empty());
    }
}
