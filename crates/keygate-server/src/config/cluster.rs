//! `[cluster]`: which bus, and for the Redis one its keys, credentials and limits (the
//! connection itself is checked in `connection.rs`).

use std::time::Duration;

use super::connection::{FileConnection, REDIS_PASSWORD_ENV};
use super::duration::FileDuration;
use super::file::{FileBackend, FileCluster, FileClusterKey};
use super::names::{KeyIds, check_name, env_id, env_or_file};
use super::{ClusterBackend, ClusterConfig, ConfigError};
use keygate_cluster::redis::RedisSettings;
use keygate_cluster::wire::{MacKey, MacKeys};

/// The shortest cluster MAC secret accepted, in bytes.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// The environment variable that overrides the secret of cluster key `id`:
/// `KEYGATE_CLUSTER_KEY_<ID>_SECRET`, with the id upper-cased and `-` and `.` turned into `_`.
#[must_use]
pub fn cluster_secret_env_var(id: &str) -> String {
    format!("KEYGATE_CLUSTER_KEY_{}_SECRET", env_id(id))
}

/// The key (`cluster.<field>`) of the first of `fields` the file sets.
macro_rules! first_set {
    ($file:ident: $($field:ident),+ $(,)?) => {
        [$((concat!("cluster.", stringify!($field)), Set::is_set(&$file.$field))),+]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key))
    };
}

/// Whether a setting appears in the file.
trait Set {
    fn is_set(&self) -> bool;
}

impl<T> Set for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl<T> Set for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl FileCluster {
    pub(super) fn validate(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClusterConfig, ConfigError> {
        let accept_while_degraded = self.accept_while_degraded.unwrap_or(true);
        let backend = match self.backend {
            FileBackend::Local => {
                if let Some(key) = self.first_redis_only_key() {
                    return Err(ConfigError::new(
                        key,
                        "only used with cluster.backend = \"redis\"",
                    ));
                }
                ClusterBackend::Local {
                    state_file: self.state_file,
                }
            }
            FileBackend::Redis => ClusterBackend::Redis(self.redis(env)?),
        };
        Ok(ClusterConfig {
            backend,
            accept_while_degraded,
        })
    }

    /// The first key set that only the Redis backend reads, in the order of the docs.
    fn first_redis_only_key(&self) -> Option<&'static str> {
        first_set!(
            self: redis_url, prefix, max_log_len, max_revocations, fetch_lease, timeout, keys,
            sentinels, sentinel_master, redis_username, redis_password, tls_ca_file,
            tls_client_cert, tls_client_key, min_replicas_ack, replica_ack_timeout,
        )
    }

    /// The settings of `cluster.backend = "redis"`.
    fn redis(self, env: &dyn Fn(&str) -> Option<String>) -> Result<RedisSettings, ConfigError> {
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
        let mut settings = RedisSettings::new(connection.url, prefix, mac_keys(self.keys, env)?);
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
        settings.password = env(REDIS_PASSWORD_ENV).or(self.redis_password);
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
        set_timeout(
            "cluster.fetch_lease",
            self.fetch_lease,
            &mut settings.fetch_lease,
        )?;
        set_timeout("cluster.timeout", self.timeout, &mut settings.timeout)?;
        set_timeout(
            "cluster.replica_ack_timeout",
            self.replica_ack_timeout,
            &mut settings.replica_ack_timeout,
        )?;
        Ok(settings)
    }
}

/// `[[cluster.keys]]`: at least one, ids unique, secrets long enough (from the environment
/// when set there).
fn mac_keys(
    entries: Vec<FileClusterKey>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MacKeys, ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::new(
            "cluster.keys",
            "at least one [[cluster.keys]] entry (id, secret) is required: entries are signed",
        ));
    }
    let mut keys = Vec::with_capacity(entries.len());
    let mut ids = KeyIds::default();
    for (i, k) in entries.into_iter().enumerate() {
        let key = format!("cluster.keys[{i}]");
        let var = ids.check(&key, &k.id, cluster_secret_env_var)?;
        let (secret_key, secret) =
            env_or_file(env, var, format!("{key}.secret"), k.secret, |var| {
                format!("missing: set it here or in {var}")
            })?;
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
    Ok(MacKeys::new(keys).expect("at least one key was checked above"))
}

/// Sets `slot` from the file's `value` at `key`, when given: between 1 ms and 60 s.
fn set_timeout(
    key: &str,
    value: Option<FileDuration>,
    slot: &mut Duration,
) -> Result<(), ConfigError> {
    if let Some(d) = value {
        if d.0.is_zero() || d.0 > Duration::from_secs(60) {
            return Err(ConfigError::new(key, "must be between 1ms and 60s"));
        }
        *slot = d.0;
    }
    Ok(())
}
