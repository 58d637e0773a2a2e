//! Shared fixtures: a stub IdP with a verifier pointed at it, token minting, an inner
//! service that reports what it saw, and one-request helpers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use keygate::{Clock as _, HttpFetcher, ProviderConfig, SystemClock, Verifier};
use keygate_test_support::{
    StubIdp, TestKey, TokenBuilder, jwks, loopback_fetcher, test_retry, typical_claims,
};
use keygate_tower::Authenticated;
use tower::{Service, ServiceExt, service_fn};

pub(crate) const AUD: &str = "api";

/// A stub IdP serving one P-256 key (`k1`) and a verifier trusting it.
pub(crate) struct Fixture {
    pub(crate) idp: StubIdp,
    pub(crate) verifier: Verifier,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let idp = StubIdp::start().await;
        idp.set_jwks(jwks(&[TestKey::shared_p256("k1")]));
        let verifier = Verifier::builder()
            .provider(provider(&idp).build().unwrap())
            .fetcher(fetcher())
            .token_cache(1000)
            .build()
            .unwrap();
        Fixture { idp, verifier }
    }

    /// A valid token signed by `key`.
    pub(crate) fn token(&self, key: &TestKey) -> String {
        self.token_with(key, |b| b)
    }

    /// A token signed by `key` from typical claims, after `edit`.
    pub(crate) fn token_with(
        &self,
        key: &TestKey,
        edit: impl FnOnce(TokenBuilder<'_>) -> TokenBuilder<'_>,
    ) -> String {
        let builder = TokenBuilder::new(key).claims(typical_claims(&self.idp.issuer(), AUD, now()));
        edit(builder).sign()
    }

    /// A valid token signed by the key the stub serves.
    pub(crate) fn good_token(&self) -> String {
        self.token(TestKey::shared_p256("k1"))
    }
}

/// The provider `acme/idp` for `idp`, with retries short enough for tests.
pub(crate) fn provider(idp: &StubIdp) -> keygate::ProviderConfigBuilder {
    let retry = test_retry(
        2,
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_secs(2),
        Duration::from_secs(4),
    );
    ProviderConfig::builder("acme", "idp", idp.issuer())
        .jwks_uri(idp.jwks_url())
        .audiences([AUD])
        .retry(retry)
}

pub(crate) fn fetcher() -> Arc<HttpFetcher> {
    loopback_fetcher(Duration::from_secs(2))
}

pub(crate) fn now() -> i64 {
    let secs = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Counts the requests that reached it and answers 200 with the subject of the
/// [`Authenticated`] extension and, in `x-authorization-sensitive`, whether the
/// `Authorization` header arrived marked sensitive.
#[derive(Clone, Default)]
pub(crate) struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Echo {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn service(
        &self,
    ) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
    + use<> {
        let calls = Arc::clone(&self.calls);
        service_fn(move |request: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let subject = request
                    .extensions()
                    .get::<Authenticated>()
                    .map(|auth| auth.subject().unwrap_or("").to_owned())
                    .unwrap_or_else(|| "<no extension>".to_owned());
                let sensitive = request
                    .headers()
                    .get(AUTHORIZATION)
                    .is_some_and(HeaderValue::is_sensitive);
                let mut response = Response::new(subject);
                response.headers_mut().insert(
                    "x-authorization-sensitive",
                    HeaderValue::from_static(if sensitive { "true" } else { "false" }),
                );
                Ok::<_, Infallible>(response)
            }
        })
    }
}

/// Sends one request with these `Authorization` values through `service`.
pub(crate) async fn send<S>(service: S, authorization: &[&[u8]]) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    let mut request = Request::builder().uri("/").body(String::new()).unwrap();
    for value in authorization {
        request
            .headers_mut()
            .append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
    }
    service.oneshot(request).await.unwrap()
}

/// Sends `token` as a bearer token through `service`.
pub(crate) async fn send_bearer<S>(service: S, token: &str) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    send(service, &[format!("Bearer {token}").as_bytes()]).await
}

/// The `WWW-Authenticate` header, if any.
pub(crate) fn challenge<B>(response: &Response<B>) -> Option<&str> {
    response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap())
}

/// Asserts a 401 whose challenge is `invalid_token` with this reason code.
pub(crate) fn assert_invalid_token<B>(response: &Response<B>, reason: &str) {
    assert_unauthorized(
        response,
        &format!(r#"Bearer error="invalid_token", error_description="{reason}""#),
    );
}

/// Asserts a 401 with this `WWW-Authenticate` challenge.
pub(crate) fn assert_unauthorized<B>(response: &Response<B>, challenge: &str) {
    assert_refused(response, StatusCode::UNAUTHORIZED, Some(challenge));
}

/// Asserts the status and the exact challenge of `response`.
#[track_caller]
pub(crate) fn assert_refused<B>(
    response: &Response<B>,
    status: StatusCode,
    expected: Option<&str>,
) {
    assert_eq!(response.status(), status);
    assert_eq!(challenge(response), expected);
}
