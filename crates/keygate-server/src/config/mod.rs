//! The server's configuration: the TOML file at the edge, validated into a [`Config`].
//!
//! The file types (`File*`) are private serde shapes with `deny_unknown_fields`, so a typo is
//! an error rather than a silently ignored setting. [`Config::parse`] turns them into checked
//! values and names the key at fault (`providers[1].audiences: ...`) when something is wrong;
//! the CLI exits 64 with that message. Loading never binds a port or touches the network.
//!
//! Secrets can come from the environment instead of the file (Kubernetes secrets): the hash
//! of admin key `ops` is read from `KEYGATE_ADMIN_KEY_OPS_HASH` when that is set, and it wins
//! over the file; so is the introspection secret of provider `acme`/`main`, from
//! `KEYGATE_PROVIDER_ACME_MAIN_INTROSPECTION_SECRET`.
//!
//! One file per concern: `file.rs` holds the serde shapes, and each section is validated in a
//! file of its own (`server.rs` for the listeners, the development issuer and revocations,
//! `providers.rs`, `cluster.rs` with `connection.rs` for reaching Redis, `admin.rs`);
//! durations and names have their own small parsers, and `error.rs` holds the error type.

mod admin;
mod cluster;
mod connection;
mod duration;
mod error;
mod file;
mod introspection;
mod names;
#[cfg(test)]
mod provider_tests;
mod providers;
mod server;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use keygate::{Algorithm, HttpFetcher, ProviderConfig};

use crate::apikey::{ApiKey, FailureLimit};
use crate::policy::Policy;
use keygate_cluster::redis::RedisSettings;

pub use admin::hash_env_var;
pub use cluster::{MIN_CLUSTER_SECRET_BYTES, cluster_secret_env_var};
pub use connection::REDIS_PASSWORD_ENV;
pub use error::ConfigError;
pub use introspection::introspection_secret_env_var;
pub use names::check_name;

use error::syntax_error;
use file::{FileConfig, FileDevIssuer};

/// The default address of the verification endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default address of the admin API and metrics.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// The default address of the embedded development issuer.
pub const DEFAULT_DEV_ISSUER_LISTEN: &str = "127.0.0.1:8082";
/// The default audience of tokens minted by the development issuer.
pub const DEV_AUDIENCE: &str = "keygate-dev";

/// Headers `/verify` sets itself; a `claims_to_headers` entry may not reuse them.
pub const RESERVED_HEADERS: [&str; 6] = [
    "x-auth-subject",
    "x-auth-issuer",
    "x-auth-tenant",
    "x-auth-provider",
    "x-auth-reason",
    "x-auth-route",
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
    /// `[policy]`, compiled; [`Policy::unconfigured`] without the section.
    pub policy: Arc<Policy>,
    /// A digest of the `[cluster]` section as the file wrote it (but `state_file` and
    /// `accept_while_degraded`, compared by value), so a reload can tell whether the Redis
    /// settings changed: they cannot all be compared directly (key rings, TLS material), and
    /// none can change without a restart.
    pub(crate) cluster_digest: SectionDigest,
}

/// The SHA-256 of a configuration section's text. Its `Debug` shows nothing: the section may
/// hold secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SectionDigest([u8; 32]);

impl SectionDigest {
    fn of(text: &str) -> SectionDigest {
        let mut out = [0; 32];
        out.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
        );
        SectionDigest(out)
    }
}

impl std::fmt::Debug for SectionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SectionDigest(..)")
    }
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
    /// The cookie `/verify` reads the token from when there is no `Authorization` header.
    pub token_cookie: Option<String>,
    /// The protected resource metadata URL (RFC 9728) every 401 names in its challenge.
    pub resource_metadata: Option<String>,
    /// The public base URL of the protected service (`https://api.example.com/`): a DPoP
    /// proof's `htu` is checked against the request's path under it when the proxy sends
    /// neither scheme nor host. Absolute `http(s)`, no query, fragment, credentials or path
    /// but `/`.
    pub external_url: Option<url::Url>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let providers = providers::validate_all(
            self.providers,
            &server.tenant_header,
            dev_issuer.as_ref(),
            env,
        )?;
        let admin = self.admin.validate(env)?;
        let revocations = self.revocations.validate()?;
        // Debug of the file's own shape: every key the section may hold. The two keys a local
        // bus has are left out: a reload compares their validated values, so writing out a
        // default is no change.
        let mut file_cluster = self.cluster;
        let local_keys = (
            file_cluster.state_file.take(),
            file_cluster.accept_while_degraded.take(),
        );
        let cluster_digest = SectionDigest::of(&format!("{file_cluster:?}"));
        (file_cluster.state_file, file_cluster.accept_while_degraded) = local_keys;
        let cluster = file_cluster.validate(env)?;
        let policy = match self.policy {
            Some(policy) => {
                let mut known: Vec<(String, String)> = providers
                    .iter()
                    .map(|p| (p.config.tenant().to_owned(), p.config.name().to_owned()))
                    .collect();
                if let Some(dev) = &dev_issuer {
                    known.push((dev.tenant.clone(), dev.provider.clone()));
                }
                Arc::new(policy.compile(&known)?)
            }
            None => Arc::new(Policy::unconfigured()),
        };
        Ok(Config {
            policy,
            server,
            providers,
            admin,
            revocations,
            dev_issuer,
            cluster,
            cluster_digest,
        })
    }
}
