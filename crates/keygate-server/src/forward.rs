//! The forward-auth endpoint: `/verify`, any method, any path suffix, so that nginx
//! `auth_request`, Traefik ForwardAuth and Envoy ext_authz (HTTP) work without rewriting.
//!
//! The bearer token comes from `Authorization`. Its `iss` selects the provider; a tenant named
//! by the first path segment after `/verify/` (when it is a configured tenant) or by the tenant
//! header narrows the choice to that tenant's providers. Narrowing can only refuse more: a
//! client that sets the header itself cannot make a token valid that was not.
//!
//! Answers, all with `X-Auth-Reason` and `Cache-Control: no-store`:
//! - 200 with `X-Auth-Subject`, `X-Auth-Issuer`, `X-Auth-Tenant`, `X-Auth-Provider` and the
//!   provider's `claims_to_headers`. These are built from the verified token only; nothing in
//!   the request is ever copied into a response, so a client's own `X-Auth-Subject` is never
//!   trusted by a proxy that copies keygate's headers (nginx `auth_request_set`, Traefik
//!   `authResponseHeaders`, Envoy `allowed_upstream_headers`).
//! - 401 `WWW-Authenticate: Bearer` when there is no bearer token (RFC 6750 section 3.1: no
//!   error code when the request has no credentials).
//! - 401 `WWW-Authenticate: Bearer error="invalid_token", error_description="..."` for a
//!   refused token, or `error="invalid_request"` for a malformed `Authorization` header. The
//!   description is a fixed phrase per reason and never echoes the token.
//! - 503 when the provider's keys cannot be obtained (nothing was verified either way).
//!
//! With `[server] token_cookie`, a request without `Authorization` may carry the token in that
//! cookie. With `[server] resource_metadata`, every 401 challenge names the protected resource
//! metadata URL (RFC 9728 section 5.1).
//!
//! With a `[policy]` section, the request being authorized (method, path, host: see
//! `forward/target.rs`) is first matched against the routes. An anonymous route answers 200
//! without looking at any token (a present token, valid or not, is ignored, and no identity
//! headers are sent); no route with `default = "deny"`, or a path that cannot be normalized,
//! answers 403 before any token is looked at; otherwise the token is verified as above and
//! then the route's providers, scopes and claims are checked: 403 with `X-Auth-Reason`
//! `insufficient_scope` (and the RFC 6750 section 3.1 challenge naming the scopes),
//! `claim_unmet` or `provider_not_allowed`. Every answer a route decided carries
//! `X-Auth-Route`. Statuses stay 200, 401, 403 and 503: nginx `auth_request` turns anything
//! else into a 500.
//!
//! Every refusal becomes a response in one function, `refusal_response`.
//!
//! What a configuration reload changes here ([`ForwardSettings`]: claim headers, tenants,
//! tenant header, token cookie, resource metadata) sits behind one `ArcSwap`, and the policy
//! behind its own ([`SharedPolicy`]); a request loads each once, so it is answered wholly
//! under one version of each.

mod dpop;
mod target;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use keygate::bearer::{BearerError, Scheme};
use keygate::{ProviderId, ReasonClass, VerifiedToken, VerifyError};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;

use crate::config::{ProviderSpec, ServerConfig};
use crate::metrics::VerifyOutcome;
use crate::node::Node;
use crate::policy::{NormalizedPath, Policy, PolicyReason, Selected, SharedPolicy, Target};

/// The header carrying the reason code of every answer (`ok` for a valid token).
pub const REASON_HEADER: HeaderName = HeaderName::from_static("x-auth-reason");
/// The verified subject (`sub`).
pub const SUBJECT_HEADER: HeaderName = HeaderName::from_static("x-auth-subject");
/// The verified issuer (`iss`).
pub const ISSUER_HEADER: HeaderName = HeaderName::from_static("x-auth-issuer");
/// The tenant of the provider that verified the token.
pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-auth-tenant");
/// The name of the provider that verified the token.
pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-auth-provider");
/// The policy route that decided the answer.
pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-auth-route");

/// The longest identity header value sent; a longer claim is left out rather than cut.
const MAX_HEADER_VALUE: usize = 4096;

/// What `/verify` needs: the node (its verifier, counters and bus state), the settings of
/// the endpoint and the policy, both of which a reload replaces.
#[derive(Debug)]
pub struct Forward {
    /// The node whose verifier answers.
    pub node: Arc<Node>,
    /// The settings in force; the reloader swaps in new ones.
    pub settings: Arc<ArcSwap<ForwardSettings>>,
    /// The running policy; the reloader swaps it.
    pub policy: SharedPolicy,
}

/// The settings of `/verify` that come from the configuration file and reload with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForwardSettings {
    /// `claims_to_headers` per provider.
    pub claim_headers: HashMap<ProviderId, Vec<(String, HeaderName)>>,
    /// Every configured tenant.
    pub tenants: HashSet<String>,
    /// The request header that narrows `/verify` to a tenant.
    pub tenant_header: HeaderName,
    /// The cookie the token may come from when there is no `Authorization` header.
    pub token_cookie: Option<String>,
    /// The RFC 9728 metadata URL every 401 challenge names.
    pub resource_metadata: Option<String>,
    /// The external base URL a DPoP proof's `htu` is judged against when the proxy sends no
    /// scheme or host.
    pub external_url: Option<url::Url>,
    /// Whether any provider checks DPoP. When none does, `Authorization: DPoP` is another
    /// scheme, as it always was: no bearer token.
    pub dpop: bool,
}

impl ForwardSettings {
    /// The settings of `config`'s providers (`providers` as the verifier has them, the
    /// development issuer's included) and its `[server]` section.
    #[must_use]
    pub fn new(providers: &[ProviderSpec], server: &ServerConfig) -> ForwardSettings {
        let mut claim_headers = HashMap::new();
        let mut tenants = HashSet::new();
        let mut dpop = false;
        for spec in providers {
            dpop |= spec.config.dpop() != keygate::dpop::DpopMode::Off;
            let id = ProviderId::new(spec.config.tenant(), spec.config.name());
            tenants.insert(id.tenant().to_owned());
            claim_headers.insert(id, spec.claims_to_headers.clone());
        }
        ForwardSettings {
            claim_headers,
            tenants,
            tenant_header: server.tenant_header.clone(),
            token_cookie: server.token_cookie.clone(),
            resource_metadata: server.resource_metadata.clone(),
            external_url: server.external_url.clone(),
            dpop,
        }
    }
}

/// The router for the verification listener.
pub fn router(forward: Forward) -> Router {
    Router::new()
        .route("/verify", any(verify))
        .route("/verify/", any(verify))
        .route("/verify/{*rest}", any(verify))
        .with_state(Arc::new(forward))
}

/// Why `/verify` said no, before or after the verifier ran.
#[derive(Debug)]
enum Refusal {
    /// No bearer credentials at all.
    MissingToken,
    /// An `Authorization` header that is not a well-formed bearer credential.
    InvalidRequest,
    /// The verifier refused the token.
    Token(VerifyError),
    /// The token's DPoP binding was not proven (or the replay store could not be asked); the
    /// provider's proof algorithms go into the challenge.
    Dpop {
        /// What failed.
        error: VerifyError,
        /// The `algs` of the `WWW-Authenticate: DPoP` challenge.
        algs: String,
    },
    /// The tenant named by the path and the one named by the header differ.
    TenantConflict,
    /// The bus is degraded and `cluster.accept_while_degraded` is off: a revocation made on
    /// another replica might not have arrived.
    RevocationsBehind,
    /// The policy refused the request (403), with the route's scope challenge for
    /// `insufficient_scope`.
    Denied(PolicyReason, Option<String>),
}

async fn verify(
    State(app): State<Arc<Forward>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // One load per request: the whole answer comes from one policy and one set of settings,
    // even across a reload. A guard, not a clone, so requests on many cores do not contend
    // for one reference count.
    let policy = app.policy.load();
    let settings = app.settings.load();
    let s: &ForwardSettings = &settings;
    if !policy.is_configured() {
        return match authenticate(&app, s, (&method, &uri, &headers)).await {
            Ok(token) => granted(s, &token),
            Err(refusal) => refusal_response(s, &refusal),
        };
    }
    let (route, reason, outcome) = authorize(&app, s, &policy, &method, &uri, &headers).await;
    policy.record(route, reason);
    let route = route.map(|i| &policy.routes()[i]);
    tracing::debug!(
        route = route.map(|r| r.name()),
        decision = reason.decision(),
        reason = reason.as_str(),
        "/verify"
    );
    let mut response = match outcome {
        Ok(Some(token)) => granted(s, &token),
        Ok(None) => anonymous(),
        Err(refusal) => refusal_response(s, &refusal),
    };
    if let Some(route) = route {
        response
            .headers_mut()
            .insert(ROUTE_HEADER, route.header().clone());
    }
    response
}

/// What the policy makes of a request: the route that decided (if any), the reason, and the
/// verified token (none for an anonymous route) or the refusal.
async fn authorize(
    app: &Forward,
    s: &ForwardSettings,
    policy: &Policy,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> (
    Option<usize>,
    PolicyReason,
    Result<Option<Arc<VerifiedToken>>, Refusal>,
) {
    let deny = |route: Option<usize>, reason| {
        let challenge = route
            .filter(|_| reason == PolicyReason::InsufficientScope)
            .and_then(|i| policy.routes()[i].scope_challenge())
            .map(str::to_owned);
        (route, reason, Err(Refusal::Denied(reason, challenge)))
    };
    let target = match target::raw_target(method, uri, headers) {
        Ok(t) => t,
        Err(reason) => return deny(None, reason),
    };
    let Ok(path) = NormalizedPath::new(target.uri) else {
        return deny(None, PolicyReason::InvalidPath);
    };
    let selected = policy.select(&Target {
        method: target.method,
        path: &path,
        host: target.host,
    });
    let route = match selected {
        Selected::NoRoute => return deny(None, PolicyReason::NoRoute),
        Selected::Route(i) if policy.routes()[i].is_anonymous() => {
            return (Some(i), PolicyReason::Anonymous, Ok(None));
        }
        Selected::Route(i) => Some(i),
        Selected::Default => None,
    };
    let token = match authenticate(app, s, (method, uri, headers)).await {
        Ok(token) => token,
        Err(refusal) => {
            let reason = match &refusal {
                Refusal::MissingToken => PolicyReason::MissingToken,
                Refusal::RevocationsBehind => PolicyReason::Unavailable,
                Refusal::Token(e) | Refusal::Dpop { error: e, .. }
                    if e.reason().class() == ReasonClass::Unavailable =>
                {
                    PolicyReason::Unavailable
                }
                _ => PolicyReason::InvalidToken,
            };
            return (route, reason, Err(refusal));
        }
    };
    if let Some(i) = route {
        // Only the claims the route looks at are parsed.
        let claims = policy.claims_for(i, token.claims_json());
        let provider = token.provider();
        if let Err(reason) =
            policy.authorize(i, Some((provider.tenant(), provider.name())), &claims)
        {
            return deny(route, reason);
        }
    }
    (route, PolicyReason::Ok, Ok(Some(token)))
}

/// The request `/verify` answers: its method, URI and headers.
type Request<'a> = (&'a Method, &'a Uri, &'a HeaderMap);

/// Verifies the request's token and counts the outcome.
async fn authenticate(
    app: &Forward,
    s: &ForwardSettings,
    request: Request<'_>,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let started = tokio::time::Instant::now();
    let result = check(app, s, request).await;
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(_) => VerifyOutcome::Valid,
        Err(Refusal::MissingToken) => VerifyOutcome::MissingToken,
        Err(Refusal::InvalidRequest) => VerifyOutcome::Refused("malformed"),
        Err(Refusal::Token(e) | Refusal::Dpop { error: e, .. }) => {
            VerifyOutcome::Refused(e.reason().as_str())
        }
        Err(Refusal::TenantConflict) => VerifyOutcome::Refused("bad_issuer"),
        Err(Refusal::RevocationsBehind) => VerifyOutcome::Refused("revocations_behind"),
        // `check` never returns a policy refusal: they come before or after verification.
        Err(Refusal::Denied(..)) => VerifyOutcome::Valid,
    };
    app.node.metrics().observe_verification(outcome, elapsed);
    result
}

async fn check(
    app: &Forward,
    s: &ForwardSettings,
    request: Request<'_>,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let (_, uri, headers) = request;
    let (scheme, token) = match (credentials(headers, s.dpop), &s.token_cookie) {
        (Err(Refusal::MissingToken), Some(cookie))
            if !headers.contains_key(http::header::AUTHORIZATION) =>
        {
            let token = target::cookie_token(headers, cookie)
                .map_err(|()| Refusal::InvalidRequest)?
                .ok_or(Refusal::MissingToken)?;
            (Scheme::Bearer, token)
        }
        (result, _) => result?,
    };
    if app.node.refusing_while_degraded() {
        return Err(Refusal::RevocationsBehind);
    }
    let path_tenant = uri
        .path()
        .strip_prefix("/verify/")
        .and_then(|rest| rest.split('/').next())
        .filter(|seg| s.tenants.contains(*seg));
    let header_tenant = match headers.get(&s.tenant_header) {
        Some(v) => Some(v.to_str().map_err(|_| Refusal::InvalidRequest)?),
        None => None,
    };
    let tenant = match (path_tenant, header_tenant) {
        (Some(p), Some(h)) if p != h => return Err(Refusal::TenantConflict),
        (Some(t), _) | (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    let verified = match tenant {
        Some(t) => app.node.verifier().verify_for_tenant(t, token).await,
        None => app.node.verifier().verify(token).await,
    }
    .map_err(Refusal::Token)?;
    dpop::check_binding(app, s, request, scheme, token, &verified).await?;
    Ok(verified)
}

/// The token of the request and how it was sent: `Bearer` (RFC 6750 section 2.1) or, when
/// `dpop` (some provider checks it), `DPoP` (RFC 9449 section 7.1); read by the library's
/// one parser.
fn credentials(headers: &HeaderMap, dpop: bool) -> Result<(Scheme, &str), Refusal> {
    let parsed = match keygate::bearer::credentials(headers) {
        Ok((Scheme::Dpop, _)) if !dpop => Err(BearerError::Missing),
        other => other,
    };
    parsed.map_err(|e| match e {
        // Another scheme (Basic, ...) carries no bearer credentials: section 3.1 says to
        // answer as for a request without any.
        BearerError::Missing => Refusal::MissingToken,
        // Two credentials (which one a proxy or the upstream would use is anyone's guess),
        // an empty one, or one that is not a b64token.
        _ => Refusal::InvalidRequest,
    })
}

fn granted(s: &ForwardSettings, token: &VerifiedToken) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, HeaderValue::from_static("ok"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let provider = token.provider();
    for (name, value) in [
        (TENANT_HEADER, provider.tenant()),
        (PROVIDER_HEADER, provider.name()),
        (ISSUER_HEADER, token.issuer()),
    ] {
        if let Some(v) = header_value(value) {
            headers.insert(name, v);
        }
    }
    if let Some(v) = token.subject().and_then(header_value) {
        headers.insert(SUBJECT_HEADER, v);
    }
    if let Some(mapping) = s.claim_headers.get(provider)
        && !mapping.is_empty()
    {
        let claims = token.claims();
        for (claim, header) in mapping {
            // Config loading refuses these names; a `Config` built in code is checked here
            // too, so no claim can reframe or make cacheable the answer.
            if crate::config::refused_claim_header(header, &s.tenant_header).is_some() {
                continue;
            }
            if let Some(v) = claims
                .get(claim)
                .and_then(claim_text)
                .as_deref()
                .and_then(header_value)
            {
                headers.insert(header.clone(), v);
            }
        }
    }
    (StatusCode::OK, headers).into_response()
}

/// The answer of an anonymous route: no identity at all.
fn anonymous() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, HeaderValue::from_static("anonymous"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers).into_response()
}

/// The one place a refusal becomes a response.
fn refusal_response(s: &ForwardSettings, refusal: &Refusal) -> Response {
    let (status, reason, mut challenge) = refusal_parts(refusal);
    if status == StatusCode::UNAUTHORIZED
        && let (Some(url), Some(c)) = (&s.resource_metadata, challenge.as_mut())
    {
        // RFC 9728 section 5.1: a parameter of the Bearer challenge; the URL was checked at
        // load to hold no '"' or '\'.
        if c == "Bearer" {
            c.push(' ');
        } else {
            c.push_str(", ");
        }
        c.push_str(&format!("resource_metadata=\"{url}\""));
    }
    let mut headers = HeaderMap::new();
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(challenge) = challenge {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")),
        );
    }
    // A token keygate could not check (the introspection budget spent, the IdP down): when
    // to try again, in whole seconds, at least one.
    if let Refusal::Token(e) | Refusal::Dpop { error: e, .. } = refusal
        && let Some(wait) = e.retry_after()
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    let error = match refusal {
        Refusal::MissingToken => "missing_token",
        Refusal::InvalidRequest => "invalid_request",
        Refusal::Token(e) if e.reason().class() == ReasonClass::Unavailable => {
            "temporarily_unavailable"
        }
        Refusal::RevocationsBehind => "temporarily_unavailable",
        Refusal::Dpop { error, .. } if error.reason().class() == ReasonClass::Unavailable => {
            "temporarily_unavailable"
        }
        Refusal::Dpop { error, .. } => match error {
            VerifyError::Dpop(e) if !e.is_proof_error() => "invalid_token",
            _ => "invalid_dpop_proof",
        },
        Refusal::Token(_) | Refusal::TenantConflict => "invalid_token",
        Refusal::Denied(PolicyReason::InsufficientScope, _) => "insufficient_scope",
        Refusal::Denied(..) => "access_denied",
    };
    let body = serde_json::json!({ "error": error, "reason": reason }).to_string();
    (status, headers, body).into_response()
}

/// Status, reason code and `WWW-Authenticate` challenge for a refusal.
fn refusal_parts(refusal: &Refusal) -> (StatusCode, &'static str, Option<String>) {
    match refusal {
        Refusal::MissingToken => (
            StatusCode::UNAUTHORIZED,
            "missing_token",
            Some("Bearer".to_owned()),
        ),
        Refusal::InvalidRequest => (
            StatusCode::UNAUTHORIZED,
            "malformed",
            Some(
                "Bearer error=\"invalid_request\", error_description=\"malformed Authorization header\""
                    .to_owned(),
            ),
        ),
        Refusal::TenantConflict => (
            StatusCode::UNAUTHORIZED,
            "bad_issuer",
            Some(invalid_token("issuer not accepted for this tenant")),
        ),
        Refusal::RevocationsBehind => (StatusCode::SERVICE_UNAVAILABLE, "revocations_behind", None),
        Refusal::Dpop { error, algs } => {
            let reason = error.reason();
            match reason.class() {
                ReasonClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, reason.as_str(), None),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    reason.as_str(),
                    Some(dpop::challenge(error, algs)),
                ),
            }
        }
        // RFC 6750 section 3.1: a scope refusal names the scopes the route requires.
        Refusal::Denied(reason, challenge) => {
            (StatusCode::FORBIDDEN, reason.as_str(), challenge.clone())
        }
        // The reason's class decides: keys that cannot be had are an outage (503, no
        // challenge), anything else a judged refusal with the reason's fixed description
        // (never anything taken from the token).
        Refusal::Token(e) => {
            let reason = e.reason();
            match reason.class() {
                ReasonClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, reason.as_str(), None),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    reason.as_str(),
                    Some(invalid_token(reason.description())),
                ),
            }
        }
    }
}

fn invalid_token(description: &str) -> String {
    format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
}

/// A claim as header text: strings as they are, numbers and booleans printed, arrays of
/// them joined with commas, objects as compact JSON; `null` is left out.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => Some(value.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// A header value for claim text: visible ASCII and spaces pass as they are; `%`, control
/// characters and non-ASCII bytes are percent-encoded (UTF-8), so the value is unambiguous
/// and can never split a header. Over [`MAX_HEADER_VALUE`] bytes the header is left out.
fn header_value(text: &str) -> Option<HeaderValue> {
    let value = utf8_percent_encode(text, ENCODED).to_string();
    if value.len() > MAX_HEADER_VALUE {
        return None;
    }
    HeaderValue::from_str(value.trim()).ok()
}

/// What [`header_value`] percent-encodes besides non-ASCII: control characters (DEL
/// included) and `%` itself.
const ENCODED: &AsciiSet = &CONTROLS.add(b'%');

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    fn auth(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_follow_rfc6750_and_rfc9449() {
        let token_of = |h: &HeaderMap| credentials(h, true).map(|(_, t)| t.to_owned());
        assert_eq!(
            token_of(&auth(&["Bearer abc.def.ghi"])).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(token_of(&auth(&["bearer  abc"])).unwrap(), "abc");
        let h = auth(&["DPoP abc"]);
        assert!(matches!(credentials(&h, true), Ok((Scheme::Dpop, "abc"))));
        // No provider checks DPoP: another scheme, so no bearer token, as before.
        assert!(matches!(credentials(&h, false), Err(Refusal::MissingToken)));
        assert!(matches!(
            credentials(&auth(&[]), true),
            Err(Refusal::MissingToken)
        ));
        assert!(matches!(
            credentials(&auth(&["Basic dXNlcjpwdw=="]), true),
            Err(Refusal::MissingToken)
        ));
        for bad in ["Bearer", "Bearer ", "Bearer a b", "Bearer a\"b", "DPoP"] {
            assert!(
                matches!(
                    credentials(&auth(&[bad]), true),
                    Err(Refusal::InvalidRequest)
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            credentials(&auth(&["Bearer a", "DPoP b"]), true),
            Err(Refusal::InvalidRequest)
        ));
    }

    #[test]
    fn header_values_never_split_or_mislead() {
        assert_eq!(header_value("alice").unwrap(), "alice");
        assert_eq!(header_value("a\r\nX-Evil: 1").unwrap(), "a%0D%0AX-Evil: 1");
        assert_eq!(header_value("Zoë").unwrap(), "Zo%C3%AB");
        assert_eq!(header_value("100%").unwrap(), "100%25");
        assert!(header_value(&"x".repeat(MAX_HEADER_VALUE + 1)).is_none());
    }

    #[test]
    fn claim_text_flattens_json() {
        use serde_json::json;
        assert_eq!(claim_text(&json!("a")).unwrap(), "a");
        assert_eq!(claim_text(&json!(3)).unwrap(), "3");
        assert_eq!(claim_text(&json!(["r1", "r2", 3])).unwrap(), "r1,r2,3");
        assert_eq!(claim_text(&json!({"k": 1})).unwrap(), "{\"k\":1}");
        assert!(claim_text(&Value::Null).is_none());
    }

    #[test]
    fn every_reason_has_a_description_and_status() {
        for reason in keygate::Reason::ALL {
            if !matches!(
                reason.as_str(),
                "keys_unavailable"
                    | "malformed_jwks"
                    | "introspection_busy"
                    | "introspection_unavailable"
                    | "dpop_replay_unavailable"
            ) {
                assert_ne!(reason.description(), "token refused", "{reason}");
                assert_eq!(reason.class(), ReasonClass::Unauthorized, "{reason}");
            } else {
                assert_eq!(reason.class(), ReasonClass::Unavailable, "{reason}");
            }
        }
    }
}
