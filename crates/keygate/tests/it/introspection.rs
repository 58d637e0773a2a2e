//! Opaque tokens by introspection (RFC 7662), against an in-memory endpoint in paused time:
//! judging, caching by digest, one call per token, the call budget, outages, invalidation and
//! which provider is asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use keygate::fetch::{BoxFuture, FetchRequest, FetchResponse};
use keygate::introspect::{ClientSecret, IntrospectionConfig, IntrospectionEndpoint};
use keygate::{
    Fetch, FetchError, PostRequest, ProviderConfig, ProviderId, Revocations, Verifier, token_sha256,
};
use keygate_test_support::ManualClock;
use serde_json::{Value, json};
use tokio::sync::watch;

const T0: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.test";
const ENDPOINT: &str = "https://idp.test/introspect";

/// An introspection endpoint in memory: answers per token, a count of calls, the bodies and
/// credentials it got, an outage switch and a gate that holds answers back.
#[derive(Debug)]
struct Endpoint {
    answers: Mutex<HashMap<String, Value>>,
    calls: AtomicUsize,
    discovery_calls: AtomicUsize,
    seen: Mutex<Vec<(String, String)>>,
    down: Mutex<bool>,
    gate: watch::Sender<bool>,
}

impl Endpoint {
    fn new() -> Arc<Endpoint> {
        Arc::new(Endpoint {
            answers: Mutex::new(HashMap::new()),
            calls: AtomicUsize::new(0),
            discovery_calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            down: Mutex::new(false),
            gate: watch::channel(true).0,
        })
    }

    fn answer(&self, token: &str, answer: Value) {
        self.answers.lock().unwrap().insert(token.into(), answer);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The URLs posted to, in order.
    fn urls(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }
}

/// The reason `token` is refused for.
async fn refusal(v: &Verifier, token: &str) -> keygate::Reason {
    v.verify(token).await.unwrap_err().reason()
}

fn token_of(body: &[u8]) -> String {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Fetch for Endpoint {
    fn fetch(
        &self,
        request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        self.discovery_calls.fetch_add(1, Ordering::SeqCst);
        let body = if request.url.path() == "/.well-known/openid-configuration" {
            json!({"issuer": ISSUER, "jwks_uri": "https://idp.test/jwks",
                   "introspection_endpoint": "https://idp.test/discovered-introspect"})
        } else {
            json!({"keys": []})
        };
        Box::pin(async move {
            Ok(FetchResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: body.to_string().into(),
            })
        })
    }

    fn post(&self, request: PostRequest) -> BoxFuture<'static, Result<FetchResponse, FetchError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = token_of(&request.body);
        let auth = request
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.seen
            .lock()
            .unwrap()
            .push((request.url.to_string(), auth));
        let down = *self.down.lock().unwrap();
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get(&token)
            .cloned()
            .unwrap_or(json!({"active": false}));
        let mut gate = self.gate.subscribe();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            if down {
                return Err(FetchError::Connect("connection refused".into()));
            }
            Ok(FetchResponse {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: answer.to_string().into(),
            })
        })
    }
}

fn introspection(endpoint: IntrospectionEndpoint) -> IntrospectionConfig {
    IntrospectionConfig::new(endpoint, "rs", ClientSecret::new("s3cret"))
}

fn provider(
    tenant: &str,
    name: &str,
    issuer: &str,
    config: Option<IntrospectionConfig>,
) -> ProviderConfig {
    let mut b = ProviderConfig::builder(tenant, name, issuer)
        .static_jwks(br#"{"keys":[]}"#.to_vec())
        .audiences(["api"]);
    if let Some(c) = config {
        b = b.introspection(c);
    }
    b.build().unwrap()
}

struct Rig {
    verifier: Verifier,
    endpoint: Arc<Endpoint>,
    clock: Arc<ManualClock>,
    revocations: Revocations,
}

fn rig_with(providers: Vec<ProviderConfig>) -> Rig {
    let endpoint = Endpoint::new();
    let clock = Arc::new(ManualClock::at_unix(T0));
    let revocations = Revocations::new();
    let mut builder = Verifier::builder()
        .clock(clock.clone())
        .fetcher(endpoint.clone())
        .revocations(Arc::new(revocations.clone()));
    for p in providers {
        builder = builder.provider(p);
    }
    Rig {
        verifier: builder.build().unwrap(),
        endpoint,
        clock,
        revocations,
    }
}

fn rig(config: IntrospectionConfig) -> Rig {
    rig_with(vec![provider("acme", "idp", ISSUER, Some(config))])
}

fn url() -> IntrospectionEndpoint {
    IntrospectionEndpoint::Url(ENDPOINT.parse().unwrap())
}

fn active(sub: &str, exp_in: i64) -> Value {
    let now = i64::try_from(T0).unwrap();
    json!({"active": true, "iss": ISSUER, "aud": "api", "sub": sub, "jti": format!("j-{sub}"),
           "exp": now + exp_in, "iat": now, "scope": "read write", "client_id": "app"})
}

#[tokio::test(start_paused = true)]
async fn an_active_token_is_accepted_once_asked_and_then_served_from_the_cache() {
    let r = rig(introspection(url()));
    r.endpoint.answer("opaque-alice", active("alice", 600));
    let t = r.verifier.verify("opaque-alice").await.unwrap();
    assert!(t.is_introspected());
    assert_eq!(t.algorithm(), None);
    assert_eq!(t.subject(), Some("alice"));
    assert_eq!(t.jti(), Some("j-alice"));
    assert_eq!(t.issuer(), ISSUER);
    assert_eq!(t.provider(), &ProviderId::new("acme", "idp"));
    assert_eq!(t.claims()["scope"], "read write");
    for _ in 0..5 {
        r.verifier.verify("opaque-alice").await.unwrap();
    }
    assert_eq!(r.endpoint.calls(), 1, "one call, then the cache");
    let (url, auth) = r.endpoint.seen.lock().unwrap()[0].clone();
    assert_eq!(url, ENDPOINT);
    assert_eq!(
        auth, "Basic cnM6czNjcmV0",
        "client_secret_basic for rs:s3cret"
    );
    let status = &r.verifier.status()[0];
    assert_eq!(status.counters.introspection_cache_hits, 5);
    assert_eq!(status.counters.introspections.get("200"), Some(&1));
    // The positive bound (60 s by default) ends the reuse before `exp` (600 s).
    r.clock.advance(Duration::from_secs(61));
    r.verifier.verify("opaque-alice").await.unwrap();
    assert_eq!(r.endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cached_answer_never_outlives_the_tokens_exp() {
    let r = rig(introspection(url()));
    r.endpoint.answer("short", active("bob", 10));
    r.verifier.verify("short").await.unwrap();
    r.clock.advance(Duration::from_secs(10));
    // The IdP now says inactive; the cache would have said yes for 50 s more.
    r.endpoint.answer("short", json!({"active": false}));
    let err = r.verifier.verify("short").await.unwrap_err();
    assert_eq!(err.reason(), "inactive");
    assert_eq!(r.endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_inactive_token_is_refused_and_the_refusal_cached_briefly() {
    let r = rig(introspection(url()).negative_ttl(Duration::from_secs(5)));
    for _ in 0..3 {
        let err = r.verifier.verify("unknown").await.unwrap_err();
        assert_eq!(err.reason(), "inactive");
    }
    assert_eq!(r.endpoint.calls(), 1);
    r.clock.advance(Duration::from_secs(5));
    r.verifier.verify("unknown").await.unwrap_err();
    assert_eq!(r.endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_active_answer_is_judged_like_a_jwt() {
    let r = rig(introspection(url()));
    let now = i64::try_from(T0).unwrap();
    let cases = [
        (
            "wrong-aud",
            json!({"active": true, "aud": "other", "exp": now + 60}),
            "bad_audience",
        ),
        (
            "no-aud",
            json!({"active": true, "exp": now + 60}),
            "missing_claim",
        ),
        (
            "wrong-iss",
            json!({"active": true, "iss": "https://evil.test", "aud": "api", "exp": now + 60}),
            "bad_issuer",
        ),
        (
            "expired",
            json!({"active": true, "aud": "api", "exp": now - 3600}),
            "expired",
        ),
        (
            "no-exp",
            json!({"active": true, "aud": "api"}),
            "missing_claim",
        ),
        (
            "future-nbf",
            json!({"active": true, "aud": "api", "exp": now + 7200, "nbf": now + 3600}),
            "not_yet_valid",
        ),
        (
            "bad-sub",
            json!({"active": true, "aud": "api", "exp": now + 60, "sub": 7}),
            "invalid_claim",
        ),
    ];
    for (token, answer, reason) in cases {
        r.endpoint.answer(token, answer);
        let err = r.verifier.verify(token).await.unwrap_err();
        assert_eq!(err.reason(), reason, "{token}");
    }
    // No `iss` is fine (RFC 7662 makes it optional): the provider asked is the issuer.
    r.endpoint.answer(
        "no-iss",
        json!({"active": true, "aud": ["x", "api"], "exp": now + 60}),
    );
    assert_eq!(r.verifier.verify("no-iss").await.unwrap().issuer(), ISSUER);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_for_one_token_share_one_call() {
    let r = rig(introspection(url()));
    r.endpoint.answer("hot", active("carol", 600));
    r.endpoint.gate.send_replace(false);
    let verifier = r.verifier.clone();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let v = verifier.clone();
            tokio::spawn(async move {
                v.verify("hot")
                    .await
                    .map(|t| t.subject().map(str::to_owned))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    r.endpoint.gate.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_deref(), Some("carol"));
    }
    assert_eq!(r.endpoint.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_random_tokens_costs_the_idp_at_most_its_budget_and_waits_for_nothing() {
    let r = rig(introspection(url()).rate_limit(10, 10));
    let mut busy = 0;
    let mut refused = 0;
    for i in 0..1_000 {
        let started = tokio::time::Instant::now();
        match r.verifier.verify(&format!("random-{i}")).await {
            Err(e) if e.reason() == "introspection_busy" => {
                busy += 1;
                let wait = e.retry_after().unwrap();
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(1),
                    "{wait:?}"
                );
            }
            Err(e) => {
                assert_eq!(e.reason(), "inactive");
                refused += 1;
            }
            Ok(_) => panic!("a random token was accepted"),
        }
        assert_eq!(started.elapsed(), Duration::ZERO, "never a wait");
    }
    assert_eq!(refused, 10, "the burst");
    assert_eq!(busy, 990);
    assert_eq!(r.endpoint.calls(), 10);
    assert_eq!(
        r.verifier.status()[0].counters.introspections_over_budget,
        990
    );
    // The bucket refills at its rate: one more second, ten more calls.
    tokio::time::advance(Duration::from_secs(1)).await;
    for i in 0..20 {
        let _ = r.verifier.verify(&format!("later-{i}")).await;
    }
    assert_eq!(r.endpoint.calls(), 20);
    // A known token still answers from the cache while the budget is spent.
    r.endpoint.answer("known", active("dave", 600));
    tokio::time::advance(Duration::from_secs(1)).await;
    r.verifier.verify("known").await.unwrap();
    for i in 0..20 {
        let _ = r.verifier.verify(&format!("again-{i}")).await;
    }
    r.verifier.verify("known").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_cap_refuses_at_once_while_calls_hang() {
    let r = rig(introspection(url()).max_concurrent(2));
    r.endpoint.gate.send_replace(false);
    let v = r.verifier.clone();
    let a = tokio::spawn({
        let v = v.clone();
        async move { v.verify("slow-1").await.map(drop) }
    });
    let b = tokio::spawn({
        let v = v.clone();
        async move { v.verify("slow-2").await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = v.verify("slow-3").await.unwrap_err();
    assert_eq!(err.reason(), "introspection_busy");
    r.endpoint.gate.send_replace(true);
    assert_eq!(a.await.unwrap().unwrap_err().reason(), "inactive");
    assert_eq!(b.await.unwrap().unwrap_err().reason(), "inactive");
    assert_eq!(v.verify("slow-3").await.unwrap_err().reason(), "inactive");
}

#[tokio::test(start_paused = true)]
async fn an_outage_gives_a_clean_503_for_unknown_tokens_while_cached_ones_serve() {
    let r = rig(introspection(url()));
    r.endpoint.answer("cached", active("erin", 600));
    r.verifier.verify("cached").await.unwrap();
    *r.endpoint.down.lock().unwrap() = true;
    let err = r.verifier.verify("new-one").await.unwrap_err();
    assert_eq!(err.reason(), "introspection_unavailable");
    assert_eq!(err.reason().class(), keygate::ReasonClass::Unavailable);
    assert!(err.retry_after().is_some());
    r.verifier.verify("cached").await.unwrap();
    // Failures are not cached: the IdP back, the token is checked.
    *r.endpoint.down.lock().unwrap() = false;
    r.endpoint.answer("new-one", active("frank", 600));
    r.verifier.verify("new-one").await.unwrap();
    // The bounded reuse ends even in an outage.
    *r.endpoint.down.lock().unwrap() = true;
    r.clock.advance(Duration::from_secs(61));
    assert_eq!(
        refusal(&r.verifier, "cached").await,
        "introspection_unavailable"
    );
}

#[tokio::test(start_paused = true)]
async fn revocations_drop_cached_answers_without_asking_again() {
    let r = rig(introspection(url()));
    for sub in ["alice", "bob", "carol"] {
        r.endpoint.answer(&format!("t-{sub}"), active(sub, 600));
        r.verifier.verify(&format!("t-{sub}")).await.unwrap();
    }
    r.revocations
        .revoke_jti("j-alice", i64::try_from(T0).unwrap() + 600);
    r.revocations.revoke_subject(
        "acme",
        "bob",
        i64::try_from(T0).unwrap() + 1,
        i64::try_from(T0).unwrap() + 600,
    );
    r.revocations
        .revoke_token(&token_sha256("t-carol"), i64::try_from(T0).unwrap() + 600);
    for (token, by) in [
        ("t-alice", "jti"),
        ("t-bob", "subject"),
        ("t-carol", "token_sha256"),
    ] {
        match r.verifier.verify(token).await {
            Err(keygate::VerifyError::Revoked(b)) => assert_eq!(b.to_string(), by),
            other => panic!("{token}: {other:?}"),
        }
    }
    assert_eq!(r.endpoint.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_flush_asks_again_so_a_token_revoked_at_the_idp_is_refused() {
    let r = rig(introspection(url()));
    r.endpoint.answer("t", active("gina", 600));
    r.verifier.verify("t").await.unwrap();
    r.endpoint.answer("t", json!({"active": false}));
    r.verifier.verify("t").await.unwrap();
    r.verifier.flush(&ProviderId::new("acme", "idp")).unwrap();
    assert_eq!(refusal(&r.verifier, "t").await, "inactive");
    // And a resync (forget everything) does the same.
    r.endpoint.answer("u", active("hal", 600));
    r.verifier.verify("u").await.unwrap();
    r.endpoint.answer("u", json!({"active": false}));
    r.verifier.forget_verified_tokens();
    assert_eq!(refusal(&r.verifier, "u").await, "inactive");
    assert_eq!(
        r.verifier.cached_introspections(),
        1,
        "only the answer asked since"
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_asked_before_a_flush_is_not_cached_after_it() {
    let r = rig(introspection(url()));
    r.endpoint.answer("t", active("ian", 600));
    r.endpoint.gate.send_replace(false);
    let v = r.verifier.clone();
    let pending = tokio::spawn(async move { v.verify("t").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(1)).await;
    r.verifier.flush(&ProviderId::new("acme", "idp")).unwrap();
    r.endpoint.answer("t", json!({"active": false}));
    r.endpoint.gate.send_replace(true);
    // The caller that asked before the flush gets the answer it asked for...
    pending.await.unwrap().unwrap();
    // ...but nobody after the flush does.
    assert_eq!(refusal(&r.verifier, "t").await, "inactive");
    assert_eq!(r.endpoint.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_tenant_chooses_the_provider_and_no_opted_out_provider_is_ever_asked() {
    let r = rig_with(vec![
        provider("plain", "jwt-only", "https://jwt.test", None),
        provider("acme", "idp", ISSUER, Some(introspection(url()))),
        provider(
            "globex",
            "idp",
            "https://globex.test",
            Some(introspection(IntrospectionEndpoint::Url(
                "https://globex.test/introspect".parse().unwrap(),
            ))),
        ),
    ]);
    r.endpoint.answer("t", active("jo", 600));
    let err = r.verifier.verify("t").await.unwrap_err();
    assert_eq!(err.reason(), "tenant_required");
    assert_eq!(r.endpoint.calls(), 0, "sent to no one");
    assert_eq!(
        r.verifier
            .verify_for_tenant("plain", "t")
            .await
            .unwrap_err()
            .reason(),
        "malformed",
        "a tenant without introspection refuses opaque tokens as before"
    );
    assert_eq!(r.endpoint.calls(), 0);
    let t = r.verifier.verify_for_tenant("acme", "t").await.unwrap();
    assert_eq!(t.provider(), &ProviderId::new("acme", "idp"));
    // globex's endpoint is asked for globex only (and judges by its own issuer).
    let err = r
        .verifier
        .verify_for_tenant("globex", "t")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "bad_issuer");
    let urls = r.endpoint.urls();
    assert_eq!(urls, [ENDPOINT, "https://globex.test/introspect"]);
}

#[tokio::test(start_paused = true)]
async fn without_any_introspecting_provider_nothing_is_sent() {
    let r = rig_with(vec![provider("acme", "idp", ISSUER, None)]);
    assert_eq!(refusal(&r.verifier, "opaque").await, "malformed");
    assert_eq!(refusal(&r.verifier, "a.b.c.d.e").await, "unsupported_token");
    assert_eq!(r.endpoint.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_may_come_from_discovery() {
    let r = rig(introspection(IntrospectionEndpoint::Discovered));
    r.endpoint.answer("t", active("kim", 600));
    r.verifier.verify("t").await.unwrap();
    r.endpoint.answer("u", active("lee", 600));
    r.verifier.verify("u").await.unwrap();
    let urls = r.endpoint.urls();
    assert_eq!(urls, ["https://idp.test/discovered-introspect"; 2]);
    assert_eq!(
        r.endpoint.discovery_calls.load(Ordering::SeqCst),
        1,
        "discovered once"
    );
}

/// The same calls over real loopback HTTP, through the hardened fetcher: the form POST, the
/// credentials, what an endpoint's failures become, and no redirect followed.
mod over_http {
    use super::*;
    use keygate::HttpFetcher;
    use keygate_test_support::{StubIdp, StubResponse, loopback_fetcher};

    async fn http_rig(idp: &StubIdp, fetcher: Arc<HttpFetcher>) -> Verifier {
        Verifier::builder()
            .provider(
                ProviderConfig::builder("acme", "idp", idp.issuer())
                    .static_jwks(br#"{"keys":[]}"#.to_vec())
                    .audiences(["api"])
                    .introspection(introspection(IntrospectionEndpoint::Url(
                        idp.url("/introspect").parse().unwrap(),
                    )))
                    .build()
                    .unwrap(),
            )
            .fetcher(fetcher)
            .build()
            .unwrap()
    }

    fn live(idp: &StubIdp) -> Value {
        // The system clock judges here: an `exp` far in the future.
        json!({"active": true, "iss": idp.issuer(), "aud": "api", "sub": "zoe", "exp": 4_000_000_000_i64})
    }

    #[tokio::test]
    async fn a_form_post_with_basic_credentials_and_what_failures_become() {
        let idp = StubIdp::start().await;
        idp.set_response("/introspect", StubResponse::json(200, live(&idp)));
        let v = http_rig(&idp, loopback_fetcher(Duration::from_secs(2))).await;
        assert_eq!(v.verify("opaque-zoe").await.unwrap().subject(), Some("zoe"));
        let headers = idp.last_request_headers("/introspect").unwrap();
        assert_eq!(headers["authorization"], "Basic cnM6czNjcmV0");
        assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
        for (token, response) in [
            (
                "t401",
                StubResponse::json(401, json!({"error": "invalid_client"})),
            ),
            ("t500", StubResponse::status(500)),
            ("thtml", StubResponse::bytes(200, "<html>")),
            (
                "tredirect",
                StubResponse::redirect(307, "http://127.0.0.1:1/introspect"),
            ),
            (
                "tslow",
                StubResponse::json(200, live(&idp)).delay(Duration::from_secs(5)),
            ),
        ] {
            idp.push_response("/introspect", response);
            let err = v.verify(token).await.unwrap_err();
            assert_eq!(err.reason(), "introspection_unavailable", "{token}");
        }
        let counted = &v.status()[0].counters.introspections;
        assert_eq!(counted.get("401"), Some(&1));
        assert_eq!(counted.get("307"), Some(&1));
        assert_eq!(counted.get("timeout"), Some(&1));
    }

    #[tokio::test]
    async fn plain_http_is_refused_unless_loopback_was_allowed() {
        let idp = StubIdp::start().await;
        idp.set_response("/introspect", StubResponse::json(200, live(&idp)));
        let strict = Arc::new(HttpFetcher::builder().build().unwrap());
        let v = http_rig(&idp, strict).await;
        let err = v.verify("opaque").await.unwrap_err();
        assert_eq!(err.reason(), "introspection_unavailable");
        assert_eq!(idp.requests("/introspect"), 0, "never sent over plain http");
    }
}
