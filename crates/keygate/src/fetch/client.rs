//! [`HttpFetcher`], the hardened default [`Fetch`] implementation on top of reqwest, and its
//! builder.
//!
//! Redirects are followed here rather than by reqwest, so that every hop goes through the same
//! [`UrlPolicy`] check as the first URL and a refused hop comes back as a typed error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, AUTHORIZATION, COOKIE, HOST, LOCATION, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use url::Url;

use super::policy::{self, UrlPolicy};
use super::{BoxFuture, Fetch, FetchError, FetchRequest, FetchResponse, PostRequest, tls};

const DEFAULT_MAX_REDIRECTS: usize = 3;
/// Also the cap on a key set handed over by another replica (see [`crate::exchange`]).
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most we allocate up front from a server's `Content-Length`; the rest grows as data
/// actually arrives.
const MAX_PREALLOCATION: usize = 64 * 1024;

const ACCEPT_VALUE: &str = "application/jwk-set+json, application/json";
const USER_AGENT_VALUE: &str = concat!("keygate/", env!("CARGO_PKG_VERSION"));

/// The hardened default [`Fetch`]: HTTPS only, bounded in redirects, body size and time.
///
/// Cheap to clone; clones share one connection pool.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// use keygate::fetch::HttpFetcher;
///
/// # fn main() -> Result<(), keygate::fetch::FetchError> {
/// let fetcher = HttpFetcher::builder()
///     .allowed_hosts(["login.example.com".to_owned(), "*.auth.example.com".to_owned()])
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// # let _ = fetcher;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HttpFetcher {
    inner: Arc<Inner>,
}

/// Configures an [`HttpFetcher`]. Every default is the safe choice.
#[derive(Clone)]
#[must_use]
pub struct HttpFetcherBuilder {
    allow_http_loopback: bool,
    allowed_hosts: Vec<String>,
    max_redirects: usize,
    max_body_bytes: usize,
    connect_timeout: Duration,
    timeout: Duration,
    spki_pins: Vec<[u8; 32]>,
    extra_roots: Vec<Vec<u8>>,
}

impl HttpFetcher {
    /// A builder with the defaults: HTTPS only, any host, 3 redirects, a 1 MiB body cap, a
    /// 5 s connect timeout, a 10 s total timeout, the OS trust store and no pins.
    pub fn builder() -> HttpFetcherBuilder {
        HttpFetcherBuilder {
            allow_http_loopback: false,
            allowed_hosts: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            spki_pins: Vec::new(),
            extra_roots: Vec::new(),
        }
    }

    /// A fetcher with the [`builder`](HttpFetcher::builder) defaults.
    ///
    /// # Errors
    /// [`FetchError::Config`] if the TLS configuration cannot be built.
    pub fn new() -> Result<HttpFetcher, FetchError> {
        HttpFetcher::builder().build()
    }
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("HttpFetcher")
            .field("policy", &inner.policy)
            .field("max_redirects", &inner.max_redirects)
            .field("max_body_bytes", &inner.max_body_bytes)
            .field("timeout", &inner.timeout)
            .field("spki_pins", &inner.spki_pins)
            .finish_non_exhaustive()
    }
}

impl Fetch for HttpFetcher {
    fn fetch(
        &self,
        request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.fetch(request).await })
    }

    fn post(&self, request: PostRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::time::timeout(inner.timeout, inner.post(request))
                .await
                .unwrap_or(Err(FetchError::Timeout))
        })
    }

    fn settings(&self) -> Option<&str> {
        Some(&self.inner.settings)
    }
}

impl HttpFetcherBuilder {
    /// **Dangerous.** Allows plain `http://` URLs, but only to loopback: the host must be
    /// `localhost`, an address in 127.0.0.0/8 or `::1`, and the connected peer is checked to
    /// be a loopback address too. Meant for tests and local development; default `false`.
    pub fn danger_allow_http_loopback(mut self, allow: bool) -> Self {
        self.allow_http_loopback = allow;
        self
    }

    /// Restricts the hosts that may be fetched, including redirect targets. Each entry is an
    /// exact host (`login.example.com`, `127.0.0.1`, `::1`) or `*.example.com`, which matches
    /// any subdomain of `example.com` at any depth but not `example.com` itself. Replaces any
    /// earlier list; an empty list (the default) allows any host.
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// The most redirects followed per fetch; one more is [`FetchError::TooManyRedirects`].
    /// Default 3; 0 disables following redirects.
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// The largest body accepted, in bytes; a larger one is [`FetchError::BodyTooLarge`],
    /// detected from `Content-Length` or while streaming. Default 1 MiB.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// How long establishing a connection (TCP and TLS) may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole fetch may take: connecting, every redirect hop and reading the whole
    /// body. Default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Pins the server key: the SHA-256 of the end-entity certificate's DER-encoded
    /// SubjectPublicKeyInfo must equal one of these, on top of normal certificate validation.
    /// A mismatch is [`FetchError::PinMismatch`]. Replaces any earlier pins; empty (the
    /// default) disables pinning. Configure a backup pin to survive key rotation.
    pub fn spki_pins<I>(mut self, pins: I) -> Self
    where
        I: IntoIterator<Item = [u8; 32]>,
    {
        self.spki_pins = pins.into_iter().collect();
        self
    }

    /// Trusts an extra root certificate (DER), in addition to the OS trust store.
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.extra_roots.push(der);
        self
    }

    /// Builds the fetcher.
    ///
    /// # Errors
    /// [`FetchError::Config`] for an invalid allow-list entry or root certificate, a zero
    /// timeout, or a TLS or HTTP client that cannot be built.
    pub fn build(self) -> Result<HttpFetcher, FetchError> {
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(FetchError::Config(
                "timeouts must be greater than zero".into(),
            ));
        }
        let policy = UrlPolicy::new(self.allow_http_loopback, &self.allowed_hosts)?;
        // Every builder setting, pins and roots in full: two fetchers built alike compare
        // equal (see `Fetch::settings`), any difference makes them differ.
        let settings = format!(
            "loopback={} hosts={:?} redirects={} body={} connect={:?} timeout={:?} pins={:?} roots={:?}",
            self.allow_http_loopback,
            self.allowed_hosts,
            self.max_redirects,
            self.max_body_bytes,
            self.connect_timeout,
            self.timeout,
            self.spki_pins,
            self.extra_roots,
        )
        .into_boxed_str();
        let tls = tls::client_config(&self.extra_roots, &self.spki_pins)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(self.connect_timeout)
            // Redirects are followed by hand so every hop is re-checked (see `Inner::fetch`).
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            // Proxy settings from the environment would route key fetches through a host the
            // caller never configured.
            .no_proxy()
            // `localhost` never goes through DNS (RFC 6761 §6.3), so it cannot be pointed at
            // another machine; the peer address is still checked after connecting.
            .resolve_to_addrs("localhost", &policy::LOCALHOST_ADDRS)
            .build()
            .map_err(|e| FetchError::Config(format!("http client: {}", describe(e))))?;
        Ok(HttpFetcher {
            inner: Arc::new(Inner {
                client,
                policy,
                max_redirects: self.max_redirects,
                max_body_bytes: self.max_body_bytes,
                timeout: self.timeout,
                spki_pins: self.spki_pins.len(),
                settings,
            }),
        })
    }
}

impl fmt::Debug for HttpFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcherBuilder")
            .field("allow_http_loopback", &self.allow_http_loopback)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("max_redirects", &self.max_redirects)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("spki_pins", &self.spki_pins.len())
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

struct Inner {
    client: reqwest::Client,
    policy: UrlPolicy,
    max_redirects: usize,
    max_body_bytes: usize,
    timeout: Duration,
    /// How many pins are configured; for `Debug` only.
    spki_pins: usize,
    /// The builder's settings as text, for `Fetch::settings`.
    settings: Box<str>,
}

impl Inner {
    async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        // One deadline over everything, body included: per-read timeouts would let a server
        // that trickles a byte at a time hold the fetch open forever.
        tokio::time::timeout(self.timeout, self.fetch_within_deadline(request))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    async fn fetch_within_deadline(
        &self,
        request: FetchRequest,
    ) -> Result<FetchResponse, FetchError> {
        let FetchRequest { mut url, headers } = request;
        let mut headers = request_headers(headers);
        let mut redirects = 0;
        loop {
            self.policy.check(&url)?;
            tracing::debug!(url = %policy::redact(&url), "fetching");
            let response = self
                .client
                .get(url.clone())
                .headers(headers.clone())
                .send()
                .await
                .map_err(map_error)?;
            self.check_peer(&url, &response)?;

            let status = response.status();
            if let Some(next) = redirect_target(&url, status, response.headers())? {
                if redirects == self.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.max_redirects));
                }
                redirects += 1;
                refuse_downgrade(&url, &next)?;
                if next.origin() != url.origin() {
                    // Credentials meant for one origin must not follow a redirect to another.
                    for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
                        headers.remove(name);
                    }
                }
                tracing::debug!(
                    from = %policy::redact(&url),
                    to = %policy::redact(&next),
                    status = status.as_u16(),
                    "following redirect"
                );
                url = next;
                continue;
            }

            let headers = response.headers().clone();
            let body = self.read_body(response).await?;
            return Ok(FetchResponse {
                status,
                headers,
                body,
            });
        }
    }

    /// One form POST under the same URL policy, peer check and body cap as a GET; a redirect
    /// answer is returned as it is, never followed.
    async fn post(&self, request: PostRequest) -> Result<FetchResponse, FetchError> {
        let PostRequest { url, headers, body } = request;
        self.policy.check(&url)?;
        tracing::debug!(url = %policy::redact(&url), "posting");
        let mut headers = request_headers(headers);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let response = self
            .client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(map_error)?;
        self.check_peer(&url, &response)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.read_body(response).await?;
        Ok(FetchResponse {
            status,
            headers,
            body,
        })
    }

    /// Over plain HTTP, the peer we actually reached must be loopback, whatever the name said.
    fn check_peer(&self, url: &Url, response: &reqwest::Response) -> Result<(), FetchError> {
        if url.scheme() != "http" {
            return Ok(());
        }
        match response.remote_addr() {
            Some(addr) if policy::is_loopback_addr(addr) => Ok(()),
            _ => Err(FetchError::InsecureUrl(format!(
                "plain http connection to a non-loopback peer: {}",
                policy::redact(url)
            ))),
        }
    }

    /// Reads the body, stopping as soon as it exceeds the cap: a huge or endless body is never
    /// buffered beyond `max_body_bytes`.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, FetchError> {
        let cap = self.max_body_bytes;
        let declared = response.content_length();
        if declared.is_some_and(|len| len > cap as u64) {
            return Err(FetchError::BodyTooLarge(cap));
        }
        let capacity = declared.map_or(0, |len| usize::try_from(len).unwrap_or(cap));
        let mut body = BytesMut::with_capacity(capacity.min(cap).min(MAX_PREALLOCATION));
        while let Some(chunk) = response.chunk().await.map_err(map_error)? {
            if chunk.len() > cap - body.len() {
                return Err(FetchError::BodyTooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

/// Our fixed headers plus the caller's. The caller's value wins for a header both set, except
/// `Host`, which always comes from the URL.
fn request_headers(extra: HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_VALUE));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for name in extra.keys() {
        headers.remove(name);
    }
    for (name, value) in &extra {
        if name != HOST {
            headers.append(name, value.clone());
        }
    }
    headers
}

/// The next URL when `status` is a redirect with a `Location`. A redirect status without a
/// `Location` is an ordinary final response (RFC 9110 §15.4 makes the header optional for
/// some of them); 304 Not Modified is never a redirect.
fn redirect_target(
    current: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Option<Url>, FetchError> {
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return Ok(None);
    }
    let Some(location) = headers.get(LOCATION) else {
        return Ok(None);
    };
    location
        .to_str()
        .ok()
        .and_then(|location| current.join(location).ok())
        .map(Some)
        .ok_or_else(|| FetchError::Transport(format!("invalid redirect location ({status})")))
}

/// A redirect may not leave TLS. The policy alone would let an `https://` key set redirect to
/// `http://127.0.0.1:...` when plain loopback HTTP is allowed for development: whatever
/// listens on that port of this host (another user's process, say) would then hand out the
/// keys that the TLS-authenticated issuer was trusted for.
fn refuse_downgrade(from: &Url, to: &Url) -> Result<(), FetchError> {
    if from.scheme() == "https" && to.scheme() != "https" {
        return Err(FetchError::InsecureUrl(format!(
            "redirect from https to {}",
            policy::redact(to)
        )));
    }
    Ok(())
}

/// Turns a reqwest error into the typed variant a caller can act on.
fn map_error(err: reqwest::Error) -> FetchError {
    if tls::is_pin_mismatch(&err) {
        FetchError::PinMismatch
    } else if err.is_connect() {
        // Connect-phase timeouts land here too: "could not reach the host" is the useful fact.
        FetchError::Connect(describe(err))
    } else if err.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Transport(describe(err))
    }
}

/// A one-line description of an error and its causes, without the URL (which may carry a
/// query string) that reqwest puts in its own message.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_message = cause.to_string();
        if !message.contains(&cause_message) {
            message.push_str(": ");
            message.push_str(&cause_message);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_headers_override_defaults_but_not_host() {
        let mut extra = HeaderMap::new();
        extra.insert(ACCEPT, HeaderValue::from_static("application/json"));
        extra.insert(HOST, HeaderValue::from_static("evil.example"));
        extra.append("if-none-match", HeaderValue::from_static("\"a\""));
        extra.append("if-none-match", HeaderValue::from_static("\"b\""));
        let headers = request_headers(extra);
        assert_eq!(headers[ACCEPT], "application/json");
        assert_eq!(headers[USER_AGENT], USER_AGENT_VALUE);
        assert!(headers.get(HOST).is_none());
        assert_eq!(headers.get_all("if-none-match").iter().count(), 2);
    }

    #[test]
    fn redirect_targets() {
        let base = Url::parse("https://idp.example/a/jwks").unwrap();
        let with = |location: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(LOCATION, HeaderValue::from_str(location).unwrap());
            headers
        };
        let target = redirect_target(&base, StatusCode::FOUND, &with("/b/keys")).unwrap();
        assert_eq!(target.unwrap().as_str(), "https://idp.example/b/keys");
        let target = redirect_target(
            &base,
            StatusCode::PERMANENT_REDIRECT,
            &with("http://x.example/"),
        );
        assert_eq!(target.unwrap().unwrap().as_str(), "http://x.example/");
        assert_eq!(
            redirect_target(&base, StatusCode::NOT_MODIFIED, &with("/b")).unwrap(),
            None
        );
        assert_eq!(
            redirect_target(&base, StatusCode::FOUND, &HeaderMap::new()).unwrap(),
            None
        );
        assert!(redirect_target(&base, StatusCode::FOUND, &with("https://[::z]/")).is_err());
    }

    #[test]
    fn redirects_never_leave_tls() {
        // Regression: with `danger_allow_http_loopback`, an https key set could redirect to
        // plain http on loopback, and the fetcher followed.
        let url = |s: &str| Url::parse(s).unwrap();
        let https = url("https://idp.example/jwks");
        for to in [
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "ftp://x/",
        ] {
            let err = refuse_downgrade(&https, &url(to)).unwrap_err();
            assert_eq!(err.reason(), "insecure_url", "{to}");
        }
        assert!(refuse_downgrade(&https, &url("https://other.example/jwks")).is_ok());
        let plain = url("http://127.0.0.1:1/jwks");
        assert!(refuse_downgrade(&plain, &url("http://127.0.0.1:2/jwks")).is_ok());
        assert!(refuse_downgrade(&plain, &url("https://idp.example/jwks")).is_ok());
    }

    #[test]
    fn defaults_build() {
        let fetcher = HttpFetcher::new().unwrap();
        let debug = format!("{fetcher:?}");
        assert!(debug.contains("max_redirects: 3"), "{debug}");
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let zero = HttpFetcher::builder().timeout(Duration::ZERO).build();
        assert_eq!(zero.unwrap_err().reason(), "config");
        let bad_host = HttpFetcher::builder().allowed_hosts(["*"]).build();
        assert_eq!(bad_host.unwrap_err().reason(), "config");
        let bad_root = HttpFetcher::builder()
            .add_root_certificate(b"not a certificate".to_vec())
            .build();
        assert_eq!(bad_root.unwrap_err().reason(), "config");
    }
}
