//! A scriptable stub identity provider on a loopback port.
//!
//! [`StubIdp`] serves `GET /jwks` and `GET /.well-known/openid-configuration` out of the box.
//! Tests script any path with [`StubResponse`]s (status, headers, delay, and bodies that are
//! huge, endless or trickle in), and read back how many requests arrived and with which
//! headers. Requests are counted by path (the query string is ignored) as soon as they
//! arrive, before any scripted delay.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The path the default key set is served on.
const JWKS_PATH: &str = "/jwks";
/// The path the default discovery document is served on.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Size of each chunk of the streamed bodies.
const CHUNK_LEN: usize = 16 * 1024;
static FILLER: [u8; CHUNK_LEN] = [b' '; CHUNK_LEN];

/// A body a [`StubResponse`] can send.
#[derive(Debug, Clone)]
pub enum StubBody {
    /// Exactly these bytes, with a `Content-Length`.
    Bytes(Bytes),
    /// Chunk after chunk of filler, forever (chunked encoding).
    Endless,
    /// A slow-loris body: `chunk` straight away, then again every `interval`, forever.
    Trickle {
        /// What each write sends.
        chunk: Bytes,
        /// The pause between writes.
        interval: Duration,
    },
    /// Exactly this many bytes of filler (spaces), streamed in chunks without holding them in
    /// memory. Sent chunked unless the response sets its own `Content-Length` header.
    Huge(usize),
}

/// One scripted response: status, headers, body and a delay before the headers are sent.
#[derive(Debug, Clone)]
pub struct StubResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers, in order; repeated names are all sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: StubBody,
    /// How long to wait after the request arrives before answering.
    pub delay: Duration,
}

impl StubResponse {
    /// `status` with `body` serialised as JSON and `Content-Type: application/json`.
    #[must_use]
    pub fn json(status: u16, body: Value) -> Self {
        Self::bytes(status, body.to_string()).header(CONTENT_TYPE.as_str(), "application/json")
    }

    /// `status` with an empty body.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self::bytes(status, Bytes::new())
    }

    /// `status` with these body bytes and no content type.
    #[must_use]
    pub fn bytes(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: StubBody::Bytes(body.into()),
            delay: Duration::ZERO,
        }
    }

    /// A 200 whose body is a slow loris: one space straight away, then another every
    /// `interval`, forever ([`StubBody::Trickle`]).
    #[must_use]
    pub fn trickle(interval: Duration) -> Self {
        Self::status(200).body(StubBody::Trickle {
            chunk: Bytes::from_static(b" "),
            interval,
        })
    }

    /// A redirect (`status` should be 3xx) to `location`, with an empty body.
    #[must_use]
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).header(LOCATION.as_str(), location)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    #[must_use]
    pub fn body(mut self, body: StubBody) -> Self {
        self.body = body;
        self
    }

    /// Waits `delay` after the request arrives before answering.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A loopback HTTP (or HTTPS) identity provider whose answers a test scripts.
///
/// Cloning gives another handle to the same server. The server stops when the last handle
/// is dropped or [`shutdown`](Self::shutdown) is called; open connections (including
/// endless bodies) are cut at that point.
///
/// Responses for a path are chosen in this order: the one-shot queue
/// ([`push_response`](Self::push_response)), the persistent override
/// ([`set_response`](Self::set_response)), the built-in routes, then `404`.
///
/// Built-in routes:
/// - `/jwks`: `200` with the [`set_jwks`](Self::set_jwks) document (initially
///   `{"keys": []}`), `Content-Type: application/json` and the
///   [default headers](Self::set_default_headers). If those include an `ETag` and the request's
///   `If-None-Match` matches it, `304` with the default headers and no body instead.
/// - `/.well-known/openid-configuration`: `{"issuer": issuer(), "jwks_uri": jwks_url()}`.
#[derive(Clone)]
pub struct StubIdp {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    addr: SocketAddr,
    base_url: String,
    tls: Option<TlsInfo>,
    server: AbortHandle,
}

struct TlsInfo {
    cert_der: Vec<u8>,
    spki_sha256: [u8; 32],
}

struct State {
    base_url: String,
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    jwks: Value,
    default_headers: Vec<(String, String)>,
    persistent: HashMap<String, StubResponse>,
    queued: HashMap<String, VecDeque<StubResponse>>,
    counts: HashMap<String, usize>,
    total: usize,
    last_headers: HashMap<String, HeaderMap>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts every connection task.
        self.server.abort();
    }
}

impl StubIdp {
    /// Starts a plain-HTTP stub on `127.0.0.1:0`, served on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if binding fails.
    pub async fn start() -> Self {
        Self::spawn(None).await
    }

    /// Starts a plain-HTTP stub (see [`start`](Self::start)) that answers `path` with
    /// `response` (see [`set_response`](Self::set_response)).
    ///
    /// # Panics
    /// Outside a tokio runtime, or if binding fails.
    pub async fn answering(path: &str, response: StubResponse) -> Self {
        let idp = Self::start().await;
        idp.set_response(path, response);
        idp
    }

    /// Starts an HTTPS stub on `127.0.0.1:0` with a fresh self-signed certificate for
    /// `localhost` and `127.0.0.1`; trust [`ca_cert_der`](Self::ca_cert_der) to talk to it.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if binding or certificate generation fails.
    pub async fn start_tls() -> Self {
        use rcgen::PublicKeyData as _;

        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generate self-signed certificate");
        let cert_der = cert.der().to_vec();
        let spki = signing_key.subject_public_key_info();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
        let spki_sha256 = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
            )
            .expect("TLS server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let info = TlsInfo {
            cert_der,
            spki_sha256,
        };
        Self::spawn(Some((acceptor, info))).await
    }

    async fn spawn(tls: Option<(TlsAcceptor, TlsInfo)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let state = Arc::new(State {
            base_url: base_url.clone(),
            script: Mutex::new(Script {
                jwks: json!({"keys": []}),
                ..Script::default()
            }),
        });
        let (acceptor, tls) = match tls {
            Some((acceptor, info)) => (Some(acceptor), Some(info)),
            None => (None, None),
        };
        let server = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&state)));
        Self {
            inner: Arc::new(Inner {
                state,
                addr,
                base_url,
                tls,
                server: server.abort_handle(),
            }),
        }
    }

    /// Stops serving now, for every handle: the listener closes and open connections are cut.
    pub fn shutdown(&self) {
        self.inner.server.abort();
    }

    /// `http://127.0.0.1:PORT` (or `https://…`), without a trailing slash.
    #[must_use]
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// [`base_url`](Self::base_url) followed by `path` (which should start with `/`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    /// The issuer the discovery document names: the base URL.
    #[must_use]
    pub fn issuer(&self) -> String {
        self.base_url()
    }

    /// The URL of the built-in key set route, `/jwks`.
    #[must_use]
    pub fn jwks_url(&self) -> String {
        self.url(JWKS_PATH)
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The DER of the self-signed server certificate, to add as a trusted root.
    ///
    /// # Panics
    /// If the stub was started without TLS.
    #[must_use]
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.tls().cert_der.clone()
    }

    /// SHA-256 of the server certificate's DER `SubjectPublicKeyInfo`, for pinning tests.
    ///
    /// # Panics
    /// If the stub was started without TLS.
    #[must_use]
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.tls().spki_sha256
    }

    fn tls(&self) -> &TlsInfo {
        self.inner
            .tls
            .as_ref()
            .expect("StubIdp was started without TLS; use StubIdp::start_tls")
    }

    /// Sets the document the built-in `/jwks` route serves.
    pub fn set_jwks(&self, jwks: Value) {
        self.inner.state.script().jwks = jwks;
    }

    /// Sets extra headers for the built-in `/jwks` route (e.g. `Cache-Control`, `ETag`),
    /// replacing any set before.
    pub fn set_default_headers<I, K, V>(&self, headers: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.inner.state.script().default_headers = headers
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    }

    /// Answers every request for `path` with `response` until cleared.
    pub fn set_response(&self, path: &str, response: StubResponse) {
        self.inner
            .state
            .script()
            .persistent
            .insert(path.to_owned(), response);
    }

    /// Answers the next request for `path` with `response`, once. Pushed responses are used
    /// in order, before any persistent or built-in one.
    pub fn push_response(&self, path: &str, response: StubResponse) {
        self.inner
            .state
            .script()
            .queued
            .entry(path.to_owned())
            .or_default()
            .push_back(response);
    }

    /// Forgets the persistent and queued responses for `path`.
    pub fn clear_responses(&self, path: &str) {
        let mut script = self.inner.state.script();
        script.persistent.remove(path);
        script.queued.remove(path);
    }

    /// How many requests for `path` have arrived (query strings ignored).
    #[must_use]
    pub fn requests(&self, path: &str) -> usize {
        self.inner
            .state
            .script()
            .counts
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// How many requests have arrived for any path.
    #[must_use]
    pub fn total_requests(&self) -> usize {
        self.inner.state.script().total
    }

    /// Sets every request count back to zero and forgets the recorded headers.
    pub fn reset_counts(&self) {
        let mut script = self.inner.state.script();
        script.counts.clear();
        script.total = 0;
        script.last_headers.clear();
    }

    /// The headers of the latest request for `path`, if any arrived.
    #[must_use]
    pub fn last_request_headers(&self, path: &str) -> Option<HeaderMap> {
        self.inner.state.script().last_headers.get(path).cloned()
    }
}

impl fmt::Debug for StubIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StubIdp")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl State {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A test that panicked mid-way must not take the stub down for the others.
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the request and picks its response, all under one lock.
    fn respond_to(&self, path: &str, headers: &HeaderMap) -> StubResponse {
        let mut script = self.script();
        *script.counts.entry(path.to_owned()).or_default() += 1;
        script.total += 1;
        script.last_headers.insert(path.to_owned(), headers.clone());

        if let Some(response) = script.queued.get_mut(path).and_then(VecDeque::pop_front) {
            return response;
        }
        if let Some(response) = script.persistent.get(path) {
            return response.clone();
        }
        match path {
            JWKS_PATH => script.default_jwks(headers),
            DISCOVERY_PATH => StubResponse::json(
                200,
                json!({
                    "issuer": self.base_url,
                    "jwks_uri": format!("{}{JWKS_PATH}", self.base_url),
                }),
            ),
            _ => StubResponse::status(404),
        }
    }
}

impl Script {
    fn default_jwks(&self, request: &HeaderMap) -> StubResponse {
        let etag = self
            .default_headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(ETAG.as_str()))
            .map(|(_, value)| value.as_str());
        let revalidated = match (etag, request.get(IF_NONE_MATCH)) {
            (Some(etag), Some(if_none_match)) => if_none_match
                .to_str()
                .is_ok_and(|candidates| etag_matches(etag, candidates)),
            _ => false,
        };
        let mut response = if revalidated {
            StubResponse::status(304)
        } else {
            StubResponse::json(200, self.jwks.clone())
        };
        response
            .headers
            .extend(self.default_headers.iter().cloned());
        response
    }
}

/// Weak comparison of `etag` against an `If-None-Match` list (RFC 9110 section 13.1.2).
fn etag_matches(etag: &str, candidates: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    candidates.trim() == "*"
        || candidates
            .split(',')
            .any(|candidate| opaque(candidate) == opaque(etag))
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(serve_connection(stream, tls.clone(), Arc::clone(&state)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let service = service_fn(move |request| handle(Arc::clone(&state), request));
    // No timer, so no header-read timeout: tests that pause and advance tokio time must not
    // see the stub drop idle keep-alive connections behind their back.
    let builder = http1::Builder::new();
    // Connection errors (client hung up mid-body, bad TLS) are part of what tests provoke.
    match tls {
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}

type StubResponseBody = BoxBody<Bytes, Infallible>;

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<StubResponseBody>, Infallible> {
    let scripted = state.respond_to(request.uri().path(), request.headers());
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    Ok(into_response(scripted))
}

fn into_response(scripted: StubResponse) -> Response<StubResponseBody> {
    let body = match scripted.body {
        StubBody::Bytes(bytes) if bytes.is_empty() => Empty::new().boxed(),
        StubBody::Bytes(bytes) => Full::new(bytes).boxed(),
        StubBody::Endless => {
            let chunk = Bytes::from_static(&FILLER);
            StreamBody::new(stream::repeat_with(move || Ok(Frame::data(chunk.clone())))).boxed()
        }
        StubBody::Trickle { chunk, interval } => {
            let frames = stream::unfold(true, move |first| {
                let chunk = chunk.clone();
                async move {
                    if !first {
                        tokio::time::sleep(interval).await;
                    }
                    Some((Ok(Frame::data(chunk)), false))
                }
            });
            StreamBody::new(frames).boxed()
        }
        StubBody::Huge(len) => {
            let frames = stream::unfold(len, |remaining| async move {
                (remaining > 0).then(|| {
                    let n = remaining.min(CHUNK_LEN);
                    (
                        Ok(Frame::data(Bytes::from_static(&FILLER[..n]))),
                        remaining - n,
                    )
                })
            });
            StreamBody::new(frames).boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(scripted.status)
        .unwrap_or_else(|_| panic!("invalid scripted status {}", scripted.status));
    let headers = response.headers_mut();
    for (name, value) in scripted.headers {
        let name = HeaderName::try_from(name.as_str())
            .unwrap_or_else(|_| panic!("invalid scripted header name {name:?}"));
        let value = HeaderValue::try_from(value.as_str())
            .unwrap_or_else(|_| panic!("invalid scripted header value {value:?}"));
        headers.append(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparison_is_weak() {
        // (the stub's ETag, the request's If-None-Match, whether they match)
        let cases = [
            ("\"v1\"", "\"v1\"", true),
            ("\"v1\"", "W/\"v1\"", true),
            ("W/\"v1\"", "\"v0\", \"v1\"", true),
            ("\"v1\"", "*", true),
            ("\"v1\"", "\"v2\"", false),
        ];
        for (etag, if_none_match, matches) in cases {
            assert_eq!(
                etag_matches(etag, if_none_match),
                matches,
                "{etag} against {if_none_match}"
            );
        }
    }
}
