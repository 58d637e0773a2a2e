//! The file's serde shapes. Every table denies unknown fields, so a typo is an error rather
//! than a silently ignored setting; the sibling modules turn them into checked values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::FileDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) providers: Vec<FileProvider>,
    #[serde(default)]
    pub(super) admin: FileAdmin,
    #[serde(default)]
    pub(super) revocations: FileRevocations,
    pub(super) dev_issuer: Option<FileDevIssuer>,
    #[serde(default)]
    pub(super) cluster: FileCluster,
    pub(super) policy: Option<crate::policy::FilePolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    #[serde(default)]
    pub(super) backend: FileBackend,
    pub(super) state_file: Option<PathBuf>,
    pub(super) redis_url: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) accept_while_degraded: Option<bool>,
    pub(super) max_log_len: Option<u64>,
    pub(super) max_revocations: Option<u64>,
    pub(super) fetch_lease: Option<FileDuration>,
    pub(super) timeout: Option<FileDuration>,
    #[serde(default)]
    pub(super) keys: Vec<FileClusterKey>,
    pub(super) sentinels: Option<Vec<String>>,
    pub(super) sentinel_master: Option<String>,
    pub(super) redis_username: Option<String>,
    pub(super) redis_password: Option<String>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) tls_client_cert: Option<PathBuf>,
    pub(super) tls_client_key: Option<PathBuf>,
    pub(super) min_replicas_ack: Option<u32>,
    pub(super) replica_ack_timeout: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileClusterKey {
    pub(super) id: String,
    pub(super) secret: Option<String>,
}

/// `cluster.backend`: `"local"` (the default) or `"redis"`, spelled exactly so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum FileBackend {
    /// The in-process bus.
    #[default]
    Local,
    /// The signed log on Redis.
    Redis,
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "local" => Ok(FileBackend::Local),
            "redis" => Ok(FileBackend::Redis),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a backend; expected \"local\" or \"redis\""
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<String>,
    pub(super) shutdown_grace: Option<FileDuration>,
    pub(super) token_cache: Option<usize>,
    pub(super) max_token_bytes: Option<usize>,
    pub(super) tenant_header: Option<String>,
    pub(super) node_id: Option<String>,
    pub(super) header_read_timeout: Option<FileDuration>,
    pub(super) token_cookie: Option<String>,
    pub(super) resource_metadata: Option<String>,
    pub(super) external_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileProvider {
    pub(super) tenant: String,
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) jwks_uri: Option<String>,
    /// Several JWKS URLs whose keys the provider trusts together (instead of `jwks_uri`).
    pub(super) jwks_uris: Option<Vec<String>>,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    #[serde(default)]
    pub(super) skip_audience_check: bool,
    #[serde(default)]
    pub(super) algorithms: Vec<String>,
    pub(super) leeway: Option<FileDuration>,
    pub(super) require_exp: Option<bool>,
    pub(super) required_typ: Option<String>,
    #[serde(default)]
    pub(super) refuse_embedded_keys: bool,
    pub(super) min_ttl: Option<FileDuration>,
    pub(super) max_ttl: Option<FileDuration>,
    pub(super) default_ttl: Option<FileDuration>,
    pub(super) refresh_ahead: Option<FileDuration>,
    pub(super) refresh_jitter: Option<FileDuration>,
    pub(super) stale_window: Option<FileDuration>,
    pub(super) unknown_kid_burst: Option<u32>,
    pub(super) unknown_kid_refill: Option<FileDuration>,
    pub(super) negative_ttl: Option<FileDuration>,
    pub(super) max_keys: Option<usize>,
    pub(super) max_jwks_bytes: Option<usize>,
    pub(super) fetch_timeout: Option<FileDuration>,
    pub(super) fetch_attempts: Option<u32>,
    pub(super) fetch_deadline: Option<FileDuration>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<String>,
    #[serde(default)]
    pub(super) allow_insecure_http: bool,
    #[serde(default)]
    pub(super) claims_to_headers: BTreeMap<String, String>,
    pub(super) introspection_client_id: Option<String>,
    pub(super) introspection_client_secret: Option<FileSecret>,
    pub(super) introspection_client_key_file: Option<std::path::PathBuf>,
    pub(super) introspection_endpoint: Option<String>,
    pub(super) introspection_cache_ttl: Option<FileDuration>,
    pub(super) introspection_negative_ttl: Option<FileDuration>,
    pub(super) introspection_rate_limit: Option<u32>,
    pub(super) introspection_burst: Option<u32>,
    pub(super) introspection_max_concurrent: Option<usize>,
    pub(super) introspection_cache_entries: Option<usize>,
    pub(super) dpop: Option<String>,
    pub(super) dpop_iat_window: Option<FileDuration>,
}

/// A secret written in the file. Its `Debug` shows nothing, so no dump of the file's shape
/// (errors, digests, logs) can carry it.
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct FileSecret(pub(super) String);

impl std::fmt::Debug for FileSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileSecret(..)")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    #[serde(default)]
    pub(super) keys: Vec<FileApiKey>,
    pub(super) max_failures: Option<u32>,
    pub(super) failure_window: Option<FileDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileApiKey {
    pub(super) id: String,
    pub(super) hash: Option<String>,
    pub(super) scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRevocations {
    pub(super) max_token_lifetime: Option<FileDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDevIssuer {
    pub(super) listen: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) provider: Option<String>,
}
