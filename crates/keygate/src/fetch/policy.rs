//! Which URLs the fetcher may reach: the scheme rule (HTTPS, or plain HTTP to loopback only
//! when explicitly allowed) and the optional host allow-list.
//!
//! The same check runs on the first URL and on every redirect hop, so a redirect can never
//! take a fetch somewhere the caller could not have asked for directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use super::FetchError;

/// The checks every URL (first request and each redirect target) must pass.
#[derive(Debug, Clone)]
pub(super) struct UrlPolicy {
    allow_http_loopback: bool,
    /// Empty means any host.
    allowed_hosts: Vec<HostPattern>,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// Exactly this host (a lowercase ASCII domain or an IP address in canonical form).
    Exact(String),
    /// Any proper subdomain of this domain, at any depth; not the domain itself.
    Subdomains(String),
}

impl UrlPolicy {
    /// Builds the policy, parsing the allow-list entries.
    pub(super) fn new(
        allow_http_loopback: bool,
        allowed_hosts: &[String],
    ) -> Result<UrlPolicy, FetchError> {
        let allowed_hosts = allowed_hosts
            .iter()
            .map(|entry| HostPattern::parse(entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UrlPolicy {
            allow_http_loopback,
            allowed_hosts,
        })
    }

    /// Checks the scheme rule and the allow-list for `url`.
    pub(super) fn check(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http_loopback && is_loopback_host(url) => {}
            "http" if self.allow_http_loopback => {
                return Err(FetchError::InsecureUrl(format!(
                    "plain http is only allowed to loopback: {}",
                    redact(url)
                )));
            }
            _ => return Err(FetchError::InsecureUrl(redact(url))),
        }
        let Some(host) = host_key(url) else {
            return Err(FetchError::InsecureUrl(format!("no host: {}", redact(url))));
        };
        if self.allowed_hosts.is_empty()
            || self
                .allowed_hosts
                .iter()
                .any(|pattern| pattern.matches(&host))
        {
            Ok(())
        } else {
            Err(FetchError::HostNotAllowed(host))
        }
    }
}

impl HostPattern {
    /// Parses `example.com`, `*.example.com`, `127.0.0.1`, `::1` or `[::1]`.
    fn parse(entry: &str) -> Result<HostPattern, FetchError> {
        let invalid = || FetchError::Config(format!("invalid allowed host: {entry:?}"));
        let entry = entry.trim();
        let (wildcard, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if name.is_empty() || name.contains('*') {
            return Err(invalid());
        }
        // `Host::parse` wants IPv6 literals in brackets; accept them bare as well.
        let bracketed;
        let name = if name.contains(':') && !name.starts_with('[') {
            bracketed = format!("[{name}]");
            bracketed.as_str()
        } else {
            name
        };
        // Parsing normalises case and IDNA exactly as `Url` does for the URLs we match against.
        let host = Host::parse(name).map_err(|_| invalid())?;
        match (wildcard, host) {
            (true, Host::Domain(domain)) => Ok(HostPattern::Subdomains(domain)),
            (true, _) => Err(invalid()),
            (false, host) => Ok(HostPattern::Exact(canonical(&host))),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Subdomains(base) => host
                .strip_suffix(base.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
        }
    }
}

/// Whether a connected peer address is loopback. Checked after connecting over plain HTTP,
/// in case name resolution sent `localhost` somewhere else.
pub(super) fn is_loopback_addr(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The addresses `localhost` is pinned to, so it never goes through DNS (RFC 6761 §6.3).
pub(super) const LOCALHOST_ADDRS: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
];

/// A URL safe to log or put in an error: no credentials, no query, no fragment.
pub(super) fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // These only fail for URLs that cannot have credentials, which is fine to ignore.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The host of `url` in the same canonical form as allow-list entries.
fn host_key(url: &Url) -> Option<String> {
    url.host().map(|host| canonical(&host))
}

fn canonical<S: AsRef<str>>(host: &Host<S>) -> String {
    match host {
        Host::Domain(domain) => domain.as_ref().to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(loopback: bool, hosts: &[&str]) -> UrlPolicy {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        UrlPolicy::new(loopback, &hosts).unwrap()
    }

    fn check(policy: &UrlPolicy, url: &str) -> Result<(), &'static str> {
        policy
            .check(&Url::parse(url).unwrap())
            .map_err(|e| e.reason())
    }

    #[test]
    fn scheme_rule() {
        let strict = policy(false, &[]);
        assert_eq!(check(&strict, "https://idp.example/jwks"), Ok(()));
        assert_eq!(check(&strict, "http://127.0.0.1/jwks"), Err("insecure_url"));
        assert_eq!(check(&strict, "ftp://idp.example/"), Err("insecure_url"));

        let loopback = policy(true, &[]);
        for ok in [
            "http://localhost:8080/",
            "http://LOCALHOST/",
            "http://127.0.0.1/",
            "http://127.9.8.7/",
            "http://[::1]:1/",
            "https://idp.example/",
        ] {
            assert_eq!(check(&loopback, ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://example.com/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "http://[::2]/",
            "http://0.0.0.0/",
        ] {
            assert_eq!(check(&loopback, bad), Err("insecure_url"), "{bad}");
        }
    }

    #[test]
    fn allow_list() {
        let p = policy(
            true,
            &["idp.example", "*.tenant.example", "::1", "127.0.0.1"],
        );
        for ok in [
            "https://idp.example/",
            "https://IDP.Example/",
            "https://a.tenant.example/",
            "https://a.b.tenant.example/",
            "http://[::1]/",
            "http://127.0.0.1:9/",
        ] {
            assert_eq!(check(&p, ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "https://tenant.example/",
            "https://xtenant.example/",
            "https://idp.example.evil/",
            "https://sub.idp.example/",
            "http://localhost/",
        ] {
            assert_eq!(check(&p, bad), Err("host_not_allowed"), "{bad}");
        }
    }

    #[test]
    fn allow_list_entries_are_validated() {
        for bad in ["", "*", "*.", "a.*.example", "*.127.0.0.1", "exa mple.com"] {
            let result = UrlPolicy::new(false, &[bad.to_owned()]);
            assert!(result.is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            HostPattern::parse("  IDP.Example ").unwrap(),
            HostPattern::Exact("idp.example".to_owned())
        );
        assert_eq!(
            HostPattern::parse("[::1]").unwrap(),
            HostPattern::Exact("::1".to_owned())
        );
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback_addr("127.0.0.1:80".parse().unwrap()));
        assert!(is_loopback_addr("[::1]:80".parse().unwrap()));
        assert!(is_loopback_addr("[::ffff:127.0.0.1]:80".parse().unwrap()));
        assert!(!is_loopback_addr("10.0.0.1:80".parse().unwrap()));
        assert!(!is_loopback_addr("[::ffff:10.0.0.1]:80".parse().unwrap()));
    }

    #[test]
    fn redaction() {
        let url = Url::parse("https://user:pw@idp.example/jwks?secret=1#frag").unwrap();
        assert_eq!(redact(&url), "https://idp.example/jwks");
    }
}
