//! `[server]` (the listeners and process-wide settings), `[dev_issuer]` and `[revocations]`.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;

use super::file::{FileDevIssuer, FileRevocations, FileServer};
use super::names::check_name;
use super::{
    ConfigError, DEFAULT_ADMIN_LISTEN, DEFAULT_DEV_ISSUER_LISTEN, DEFAULT_LISTEN, DEV_AUDIENCE,
    DevIssuerConfig, RevocationConfig, ServerConfig,
};

impl FileServer {
    pub(super) fn validate(self) -> Result<ServerConfig, ConfigError> {
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
        if let Some(name) = &self.token_cookie {
            // RFC 6265 section 4.1.1: a cookie name is a token.
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                return Err(ConfigError::new(
                    "server.token_cookie",
                    format!("{name:?} is not a cookie name"),
                ));
            }
        }
        if let Some(url) = &self.resource_metadata {
            let parsed = url::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
            // It is quoted in a challenge: a '"' or '\\' would end or escape the quoted string.
            if parsed.is_none() || url.contains(['"', '\\']) || !url.is_ascii() {
                return Err(ConfigError::new(
                    "server.resource_metadata",
                    format!("{url:?} is not an absolute http(s) URL"),
                ));
            }
        }
        let external_url = self.external_url.as_deref().map(external_url).transpose()?;
        Ok(ServerConfig {
            external_url,
            token_cookie: self.token_cookie,
            resource_metadata: self.resource_metadata,
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

/// `server.external_url`: an absolute `http(s)` URL naming only an origin (its path `/`).
fn external_url(text: &str) -> Result<url::Url, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "server.external_url",
            format!("{text:?} {why}; expected a base URL like \"https://api.example.com\""),
        )
    };
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(bad("is not an absolute http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("has credentials"));
    }
    if url.path() != "/" {
        return Err(bad(
            "has a path (a DPoP proof's htu is the request's own path under it)",
        ));
    }
    Ok(url)
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
        .unwrap_or_else(|| {
            format!(
                "keygate-{:08x}",
                u32::from_le_bytes(crate::apikey::random_bytes())
            )
        })
}

impl FileDevIssuer {
    pub(super) fn validate(self) -> Result<DevIssuerConfig, ConfigError> {
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

impl FileRevocations {
    pub(super) fn validate(self) -> Result<RevocationConfig, ConfigError> {
        let max_token_lifetime = self
            .max_token_lifetime
            .map_or(Duration::from_secs(24 * 3600), |d| d.0);
        if max_token_lifetime.is_zero() {
            return Err(ConfigError::new(
                "revocations.max_token_lifetime",
                "must be positive",
            ));
        }
        Ok(RevocationConfig { max_token_lifetime })
    }
}
