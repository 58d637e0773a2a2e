//! How the Redis bus is reached: one URL or a set of Sentinels, and the TLS files.

use std::path::Path;

use url::Url;

use super::ConfigError;
use keygate_cluster::redis::{SENTINEL_DEFAULT_PORT, SentinelSettings};

/// The environment variable the data nodes' Redis password is read from; it wins over
/// `cluster.redis_password`.
pub const REDIS_PASSWORD_ENV: &str = "KEYGATE_CLUSTER_REDIS_PASSWORD";

/// How the bus reaches Redis, checked: a URL or Sentinels, and the TLS material.
pub(super) struct FileConnection {
    pub(super) url: String,
    pub(super) sentinel: Option<SentinelSettings>,
    pub(super) tls: Option<redis::TlsCertificates>,
}

impl FileConnection {
    pub(super) fn validate(
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
