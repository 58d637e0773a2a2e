//! Outbound HTTP for key sets and discovery documents, behind the small [`Fetch`] trait.
//!
//! The library reaches the network only through this trait. [`HttpFetcher`] is the hardened
//! default: HTTPS only (plain HTTP to loopback only through an explicit `dangerous` switch),
//! an optional host allow-list, a redirect limit with every hop re-checked, a body cap enforced
//! while streaming, connect and total timeouts, and optional SHA-256 SPKI pinning.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use url::Url;

mod client;
mod policy;
mod retry_after;
mod tls;

pub(crate) use client::DEFAULT_MAX_BODY_BYTES;
pub use client::{HttpFetcher, HttpFetcherBuilder};
#[allow(
    unused_imports,
    reason = "consumed by the refresher, which is written separately"
)]
pub(crate) use retry_after::{MAX_RETRY_AFTER, retry_after};

/// A boxed, `Send` future, as returned by [`Fetch::fetch`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One outbound GET.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The URL to fetch.
    pub url: Url,
    /// Extra request headers, e.g. `If-None-Match` and `If-Modified-Since` on revalidation.
    pub headers: HeaderMap,
}

/// One outbound form POST (`application/x-www-form-urlencoded`), e.g. a token introspection
/// (RFC 7662). Redirects are never followed: a POST carrying a token and client credentials
/// goes to the configured URL or nowhere.
#[derive(Clone)]
pub struct PostRequest {
    /// The URL to post to.
    pub url: Url,
    /// Extra request headers, e.g. `Authorization` with the client's credentials.
    pub headers: HeaderMap,
    /// The form-encoded body.
    pub body: Bytes,
}

impl fmt::Debug for PostRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body holds a token and the headers credentials: neither is printed.
        f.debug_struct("PostRequest")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// A complete response: the final status after redirects, its headers and the whole body.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The final status code (redirects already followed).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most the configured cap.
    pub body: Bytes,
}

/// Something that can perform a GET. Implemented by [`HttpFetcher`]; tests may script their own.
pub trait Fetch: Send + Sync + fmt::Debug + 'static {
    /// Performs one GET and returns the final response, whatever its status.
    ///
    /// # Errors
    /// A [`FetchError`] when the request could not complete within the fetcher's limits.
    fn fetch(&self, request: FetchRequest)
    -> BoxFuture<'static, Result<FetchResponse, FetchError>>;

    /// Performs one form POST and returns the response, whatever its status, without
    /// following redirects. The default refuses: a fetcher that only GETs cannot introspect.
    ///
    /// # Errors
    /// A [`FetchError`] when the request could not complete within the fetcher's limits.
    fn post(&self, request: PostRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        let _ = request;
        Box::pin(async { Err(FetchError::Config("this fetcher cannot POST".into())) })
    }

    /// Everything that decides how this fetcher fetches, as comparable text, when it can say:
    /// two fetchers with equal settings fetch alike. [`Verifier::reconfigure`] keeps a
    /// provider (its keys, refresher and verified tokens) when only its fetcher object was
    /// rebuilt with the same settings. `None`, the default, means only the very same fetcher
    /// object counts as unchanged.
    ///
    /// [`Verifier::reconfigure`]: crate::Verifier::reconfigure
    fn settings(&self) -> Option<&str> {
        None
    }
}

/// Why a fetch (or the refresh built on it) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not HTTPS (and plain HTTP to loopback was not explicitly allowed).
    #[error("insecure url: {0}")]
    InsecureUrl(String),
    /// The host is not on the configured allow-list.
    #[error("host not allowed: {0}")]
    HostNotAllowed(String),
    /// More redirects than allowed.
    #[error("too many redirects (limit {0})")]
    TooManyRedirects(usize),
    /// The body exceeded the size cap.
    #[error("response body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The request did not complete in time.
    #[error("timed out")]
    Timeout,
    /// The connection could not be established.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server's public key did not match any configured SPKI pin.
    #[error("server public key matches no pin")]
    PinMismatch,
    /// The server answered with an unexpected status.
    #[error("unexpected status {status}")]
    Status {
        /// The status received.
        status: StatusCode,
        /// The server's `Retry-After`, when it sent one we understood.
        retry_after: Option<Duration>,
    },
    /// The response was not a usable key set or discovery document.
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// Any other transport failure.
    #[error("http error: {0}")]
    Transport(String),
    /// The fetcher or URL is misconfigured.
    #[error("configuration: {0}")]
    Config(String),
}

impl FetchError {
    /// A stable, machine-readable reason code.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::InsecureUrl(_) => "insecure_url",
            FetchError::HostNotAllowed(_) => "host_not_allowed",
            FetchError::TooManyRedirects(_) => "too_many_redirects",
            FetchError::BodyTooLarge(_) => "body_too_large",
            FetchError::Timeout => "timeout",
            FetchError::Connect(_) => "connect",
            FetchError::PinMismatch => "pin_mismatch",
            FetchError::Status { .. } => "http_status",
            FetchError::InvalidDocument(_) => "invalid_document",
            FetchError::Transport(_) => "transport",
            FetchError::Config(_) => "config",
        }
    }

    /// Whether trying again later could help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Timeout | FetchError::Connect(_) | FetchError::Transport(_) => true,
            FetchError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}
