//! [`RedisSettings`]: where the Redis log is, how it is signed, bounded and timed.

use std::fmt;
use std::time::Duration;

use super::SentinelSettings;
use crate::wire::MacKeys;

/// Settings of the Redis bus.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Key prefix; every key is under the hash tag `{prefix}`.
    pub prefix: String,
    /// The MAC key ring.
    pub keys: MacKeys,
    /// The stream is trimmed to about this many entries.
    pub max_log_len: u64,
    /// Most revocations kept in shared state; past it, new ones are refused.
    pub max_revocations: u64,
    /// How long a replica may fetch a provider's keys before another tries.
    pub fetch_lease: Duration,
    /// Connect and response timeout of every command but the blocking tail read.
    pub timeout: Duration,
    /// Find the primary through these Sentinels instead of connecting to `url` (which is
    /// then unused).
    pub sentinel: Option<SentinelSettings>,
    /// TLS material for `rediss://`: a CA to trust instead of the system roots, and a client
    /// certificate for mutual TLS. `None` uses the system roots and no client certificate.
    pub tls: Option<redis::TlsCertificates>,
    /// Username for the data nodes, overriding the URL's.
    pub username: Option<String>,
    /// Password for the data nodes, overriding the URL's.
    pub password: Option<String>,
    /// Replicas that must acknowledge an appended entry (Redis `WAIT`) before a publish
    /// succeeds; 0 does not wait.
    pub min_replicas_ack: u32,
    /// How long a publish waits for those acknowledgements.
    pub replica_ack_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("prefix", &self.prefix)
            .field("keys", &self.keys)
            .field("max_log_len", &self.max_log_len)
            .field("max_revocations", &self.max_revocations)
            .field("fetch_lease", &self.fetch_lease)
            .field("timeout", &self.timeout)
            .field("sentinel", &self.sentinel)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "REDACTED"))
            .field("min_replicas_ack", &self.min_replicas_ack)
            .field("replica_ack_timeout", &self.replica_ack_timeout)
            .finish()
    }
}

/// `url` without its password, for logs and `Debug`.
#[must_use]
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl RedisSettings {
    /// Settings with defaults for everything but the URL, prefix and keys.
    #[must_use]
    pub fn new(url: String, prefix: String, keys: MacKeys) -> Self {
        RedisSettings {
            url,
            prefix,
            keys,
            max_log_len: 10_000,
            max_revocations: 1_000_000,
            fetch_lease: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            sentinel: None,
            tls: None,
            username: None,
            password: None,
            min_replicas_ack: 0,
            replica_ack_timeout: Duration::from_secs(1),
        }
    }

    /// Response timeout of the shared connection: long enough for a `WAIT` after a write.
    pub(super) fn command_timeout(&self) -> Duration {
        if self.min_replicas_ack > 0 {
            self.timeout + self.replica_ack_timeout
        } else {
            self.timeout
        }
    }
}
