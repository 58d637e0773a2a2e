//! The admin listener: the admin API (`/admin/v1/...`, JSON, API-key auth), `/metrics`,
//! `/healthz`, `/readyz`, and the OpenAPI document of the admin API, generated from the
//! handlers and types below by `utoipa`.
//!
//! Authentication: `Authorization: Bearer <key>`; the key is checked against the hashed keys
//! of the config in constant time (see [`crate::apikey`]). A missing or unknown key gets 401,
//! a key without the route's scope 403. Every admin action is logged as an audit event under
//! the `keygate::audit` target: key id, client address, action, target, outcome. Never the
//! key, never a token.
//!
//! Errors become responses in one place: [`ApiError`]'s `IntoResponse`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use keygate::{FlushId, ProviderId, ProviderStatus, RefreshError, Revocation};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{OpenApi, ToSchema};

use crate::apikey::{ApiKey, Denied, Scope};
use crate::bus::{BusError, Event};
use crate::metrics::{self, Scrape};
use crate::serve::Shared;

/// The largest admin request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router for the admin listener. Serve it with connect info (`SocketAddr`) so audit
/// events name the client.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/providers/{tenant}/{provider}/flush", post(flush))
        .route(
            "/admin/v1/providers/{tenant}/{provider}/refresh",
            post(refresh),
        )
        .route("/admin/v1/revocations", post(revoke).get(list_revocations))
        .route("/admin/v1/events", post(crate::events::publish_event))
        .route("/admin/v1/events/stream", get(crate::events::stream_events))
        .route("/admin/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Last on the way out: answers made by axum itself (413 from the body limit, 405,
        // a path that does not parse) become the JSON error body like every other error.
        .layer(axum::middleware::map_response(json_errors))
        .with_state(shared)
}

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate admin API",
        description = "Operator controls of the keygate sidecar. Authenticate with `Authorization: Bearer <API key>`; each route needs one scope."
    ),
    paths(
        status,
        flush,
        refresh,
        revoke,
        list_revocations,
        crate::events::publish_event,
        crate::events::stream_events,
        openapi_json,
        metrics_text,
        healthz,
        readyz
    ),
    components(schemas(
        StatusBody,
        ProviderView,
        LastErrorView,
        SourceView,
        CountersView,
        BusView,
        ResyncView,
        ActionBody,
        RefreshBody,
        RevocationRequest,
        JtiRevocation,
        SubjectRevocation,
        KidRevocation,
        RevocationView,
        RevokedBody,
        RevocationList,
        crate::events::AppEventRequest,
        crate::events::PublishedEvent,
        crate::events::InvalidateData,
        crate::events::ResyncData,
        HealthBody,
        ReadyBody,
        NotReadyView,
        ErrorBody
    )),
    modifiers(&BearerKey),
    tags((name = "admin", description = "keygate admin API"))
)]
pub struct ApiDoc;

/// The document as JSON.
#[must_use]
pub fn openapi_document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::Header;
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin API key (see `keygate admin new-key`)"))
                    .build(),
            ),
        );
        // Every route that takes a key can answer 429 (see `authorize`); said once here
        // rather than on each handler.
        let too_many = ResponseBuilder::new()
            .description(
                "Too many wrong API keys from this address; every key is refused for \
                 `Retry-After` seconds",
            )
            .header(
                "Retry-After",
                Header::new(schema::Object::with_type(schema::Type::Integer)),
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        // Every route that reads a body refuses one over MAX_BODY_BYTES.
        let too_large = ResponseBuilder::new()
            .description(format!(
                "The body is larger than {MAX_BODY_BYTES} bytes (error `payload_too_large`)"
            ))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    operation
                        .responses
                        .responses
                        .insert("429".to_owned(), too_many.clone().into());
                }
                if operation.request_body.is_some() {
                    operation
                        .responses
                        .responses
                        .insert("413".to_owned(), too_large.clone().into());
                }
            }
        }
    }
}

/// `GET /admin/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// keygate's version.
    pub version: &'static str,
    /// The server's time (unix seconds).
    pub now: i64,
    /// This replica's name on the bus.
    pub node: String,
    /// Every provider, in configuration order.
    pub providers: Vec<ProviderView>,
    /// The invalidation bus.
    pub bus: BusView,
    /// Revocations in force.
    pub revocations: usize,
    /// Entries in the verified-token cache.
    pub cached_tokens: usize,
}

/// One provider's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// Issuer (`iss`).
    pub issuer: String,
    /// JWKS URL, configured or discovered.
    pub jwks_uri: Option<String>,
    /// `fresh`, `stale`, `failing`, `unavailable` or `empty`.
    pub state: &'static str,
    /// `kid`s of the cached keys.
    pub kids: Vec<String>,
    /// Entries of the cached set that were skipped as broken or unsupported.
    pub skipped_keys: usize,
    /// When the cached set was fetched (unix seconds).
    pub fetched_at: Option<i64>,
    /// When it stops being fresh (unix seconds).
    pub expires_at: Option<i64>,
    /// When it stops being served at all (unix seconds).
    pub usable_until: Option<i64>,
    /// The last refresh failure, cleared by a success.
    pub last_error: Option<LastErrorView>,
    /// Event counters.
    pub counters: CountersView,
    /// A provider with several JWKS URLs (`jwks_uris`): each URL's state, in configuration
    /// order (then `jwks_uri` is null, `kids` the union, and `state` is `failing` while any
    /// URL fails). Absent for a provider with one URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceView>,
}

/// One JWKS URL of a provider with several.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// The URL.
    pub url: String,
    /// `fresh`, `stale`, `failing`, `unavailable` or `empty`.
    pub state: &'static str,
    /// `kid`s of its document.
    pub kids: Vec<String>,
    /// Entries of its document that were skipped as broken or unsupported.
    pub skipped_keys: usize,
    /// When its document was fetched (unix seconds).
    pub fetched_at: Option<i64>,
    /// When it stops being fresh (unix seconds).
    pub expires_at: Option<i64>,
    /// When its keys stop being served (unix seconds).
    pub usable_until: Option<i64>,
    /// Its last failure, cleared by a success.
    pub last_error: Option<LastErrorView>,
    /// Successful fetches of this URL.
    pub refreshes: u64,
    /// Failed fetches of this URL.
    pub refresh_errors: u64,
}

/// A refresh failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastErrorView {
    /// When (unix seconds).
    pub at: i64,
    /// Stable reason code.
    pub reason: &'static str,
    /// Human-readable description.
    pub message: String,
}

/// Per-provider counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountersView {
    /// Verifications that found their key cached.
    pub hits: u64,
    /// Verifications whose key was not cached.
    pub misses: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_errors: u64,
    /// Key sets adopted from another replica instead of fetched.
    pub adopted: u64,
    /// Tokens refused with `unknown_kid`.
    pub unknown_kid_rejections: u64,
    /// Verifications answered from the verified-token cache.
    pub token_cache_hits: u64,
}

/// The bus's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct BusView {
    /// `local` or `redis`.
    pub backend: &'static str,
    /// `ok` or `degraded`.
    pub state: &'static str,
    /// Sequence number of the last event published or applied.
    pub last_seq: u64,
    /// How far behind this replica is, in seconds (while degraded: since when).
    pub lag_seconds: f64,
    /// The log's epoch.
    pub epoch: String,
    /// Events from other replicas applied here.
    pub applied: u64,
    /// Entries dropped unapplied (bad MAC, replay, malformed), in all.
    pub rejected: u64,
    /// Full resyncs, in all.
    pub resyncs: u64,
    /// Whether `/verify` accepts tokens while the bus is degraded.
    pub accept_while_degraded: bool,
    /// The Redis node this replica writes to, `host:port` (redis backend only).
    pub primary: Option<String>,
    /// When this replica last loaded the shared state from scratch, and why.
    pub last_resync: Option<ResyncView>,
}

/// A load of the shared state from scratch.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResyncView {
    /// When (unix seconds).
    pub at: i64,
    /// Why: `start`, `epoch`, `gap` or `trimmed`.
    pub reason: &'static str,
}

/// The answer to a flush.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionBody {
    /// `flush`.
    pub action: &'static str,
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// The event's sequence number on the bus.
    pub seq: u64,
}

/// The answer to a refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshBody {
    /// `refresh`.
    pub action: &'static str,
    /// Tenant.
    pub tenant: String,
    /// Provider name.
    pub provider: String,
    /// The event's sequence number on the bus.
    pub seq: u64,
    /// The provider's state after the refresh.
    pub state: &'static str,
    /// The `kid`s now cached.
    pub kids: Vec<String>,
}

/// `POST /admin/v1/revocations`: one of three shapes.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RevocationRequest {
    /// One token.
    Jti(JtiRevocation),
    /// Every token of a subject issued before a time.
    Subject(SubjectRevocation),
    /// One signing key of a provider.
    Kid(KidRevocation),
}

/// Revoke one token by its `jti`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JtiRevocation {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp` (unix seconds); the revocation is dropped after it.
    pub exp: i64,
}

/// Revoke every token of a subject issued before a time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubjectRevocation {
    /// The tenant.
    pub tenant: String,
    /// The subject (`sub`).
    pub sub: String,
    /// Tokens with `iat` before this (unix seconds) are refused.
    pub before: i64,
    /// When the revocation may be dropped (unix seconds); default `before` plus
    /// `revocations.max_token_lifetime`.
    pub until: Option<i64>,
}

/// Distrust one signing key at once, even while the issuer still publishes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KidRevocation {
    /// The tenant.
    pub tenant: String,
    /// The provider name.
    pub provider: String,
    /// The key's `kid`.
    pub kid: String,
    /// When the revocation may be dropped (unix seconds); kept until removed if absent.
    pub until: Option<i64>,
}

/// A revocation in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RevocationView {
    /// One token.
    Jti {
        /// The token id.
        jti: String,
        /// Its expiry (unix seconds).
        exp: i64,
    },
    /// A subject's tokens issued before a time.
    Subject {
        /// The tenant.
        tenant: String,
        /// The subject.
        sub: String,
        /// Tokens issued before this are refused (unix seconds).
        before: i64,
        /// When the entry is dropped (unix seconds).
        until: i64,
    },
    /// A signing key.
    Kid {
        /// The tenant.
        tenant: String,
        /// The provider name.
        provider: String,
        /// The key id.
        kid: String,
        /// When the entry is dropped (unix seconds), if ever.
        until: Option<i64>,
    },
}

/// The answer to a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedBody {
    /// What was revoked.
    pub revoked: RevocationView,
    /// The event's sequence number on the bus.
    pub seq: u64,
}

/// `GET /admin/v1/revocations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationList {
    /// Every revocation in force.
    pub revocations: Vec<RevocationView>,
}

/// `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`: the process answers.
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// The providers without usable keys.
    pub not_ready: Vec<NotReadyView>,
    /// The bus's state: `ok`, `degraded`, ...
    pub bus: &'static str,
    /// The bus backend: `local` or `redis`.
    pub bus_backend: &'static str,
    /// Whether tokens are verified although the bus is not `ok`.
    pub accepting_while_degraded: bool,
}

/// A provider that keeps the replica from being ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReadyView {
    /// The tenant.
    pub tenant: String,
    /// The provider name.
    pub provider: String,
    /// Its key state.
    pub state: &'static str,
    /// The reason code of its last failed fetch, if any.
    pub last_error: Option<&'static str>,
}

/// Every error answer of the admin listener, whatever the path (404 and 405 included).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `bad_request`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `bus_unavailable`, `refresh_failed`,
    /// `conflict`, `too_many_requests`, `request_rejected` (another refusal of the HTTP
    /// layer; the status says which).
    pub error: &'static str,
    /// A human-readable description.
    pub message: String,
    /// The body field at fault, for `bad_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The reason code of a failed refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// An admin API failure; its `IntoResponse` is the only place one becomes a response.
#[derive(Debug)]
pub enum ApiError {
    /// No key, or an unknown one: 401.
    Unauthorized(&'static str),
    /// The key lacks the scope: 403.
    Forbidden(Scope),
    /// The body is wrong: 400, naming the field.
    BadRequest {
        /// The field at fault (`body` when the body as a whole is).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such provider or tenant: 404.
    NotFound(String),
    /// The bus could not take the event: 503.
    Bus(BusError),
    /// A refresh's fetch failed: 502.
    RefreshFailed {
        /// Stable reason code.
        reason: &'static str,
        /// Description.
        message: String,
    },
    /// The operation does not apply (a static key set cannot be refreshed): 409.
    Conflict(String),
    /// The client's address presented too many wrong API keys recently: 429 with
    /// `Retry-After`, whatever key it presents now.
    TooManyRequests {
        /// How long the lockout lasts.
        retry_after: Duration,
    },
    /// The body is over [`MAX_BODY_BYTES`]: 413.
    PayloadTooLarge,
    /// The path exists but not with this method: 405 (the `Allow` header is kept).
    MethodNotAllowed,
    /// Another refusal by the HTTP layer (a path segment that does not decode, say), with
    /// its status.
    Rejected(StatusCode),
}

impl ApiError {
    pub(crate) fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Bus(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RefreshFailed { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Rejected(status) => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Whole seconds, rounded up: a client retrying on the dot is not refused again.
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        let (error, message, field, reason) = match self {
            ApiError::Unauthorized(m) => ("unauthorized", m.to_owned(), None, None),
            ApiError::Forbidden(scope) => (
                "forbidden",
                format!("this API key lacks the scope {scope}"),
                None,
                None,
            ),
            ApiError::BadRequest { field, message } => ("bad_request", message, Some(field), None),
            ApiError::NotFound(m) => ("not_found", m, None, None),
            ApiError::Bus(e) => (
                "bus_unavailable",
                format!(
                    "{e}; the bus did not confirm the event, so other replicas may not have \
                     it (an invalidation was applied on this replica): retry, repeating it is \
                     harmless"
                ),
                None,
                None,
            ),
            ApiError::RefreshFailed { reason, message } => {
                ("refresh_failed", message, None, Some(reason))
            }
            ApiError::Conflict(m) => ("conflict", m, None, None),
            ApiError::TooManyRequests { .. } => (
                "too_many_requests",
                format!(
                    "too many wrong API keys from this address; retry in {} s",
                    retry_after.unwrap_or(1)
                ),
                None,
                None,
            ),
            ApiError::PayloadTooLarge => (
                "payload_too_large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                None,
                None,
            ),
            ApiError::MethodNotAllowed => (
                "method_not_allowed",
                "this path does not take this method (see the Allow header)".to_owned(),
                None,
                None,
            ),
            ApiError::Rejected(status) => (
                "request_rejected",
                format!(
                    "the request was refused: {}",
                    status
                        .canonical_reason()
                        .unwrap_or("error")
                        .to_ascii_lowercase()
                ),
                None,
                None,
            ),
        };
        let mut response = json_response(
            status,
            &ErrorBody {
                error,
                message,
                field,
                reason,
            },
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keygate-admin\""),
            );
        } else if status == StatusCode::FORBIDDEN {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"keygate-admin\", error=\"insufficient_scope\"",
                ),
            );
        }
        response
    }
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        text,
    )
        .into_response()
}

/// Checks the request's API key and scope; logs failures as audit events.
///
/// An address that presented too many wrong keys recently gets 429 for every call that
/// needs a key, before its key is looked at (see [`crate::apikey::KeyRing::authenticate_from`]).
/// Neither the audit events nor the answers ever contain the presented key.
pub(crate) async fn authorize(
    app: &Shared,
    peer: SocketAddr,
    headers: &HeaderMap,
    scope: Scope,
    action: &'static str,
) -> Result<Arc<ApiKey>, ApiError> {
    let rate_limited = |retry_after: Duration| {
        tracing::info!(
            target: "keygate::audit",
            %peer,
            action,
            outcome = "denied",
            why = "address locked out after too many wrong API keys",
            retry_after_seconds = retry_after.as_secs(),
        );
        app.metrics.observe_admin(action, 429);
        ApiError::TooManyRequests { retry_after }
    };
    if let Some(retry_after) = app.keys.lockout(peer.ip()) {
        return Err(rate_limited(retry_after));
    }
    // The library's one bearer parser: what `/verify` and the middleware accept, and no more.
    let presented = keygate::bearer::bearer_token(headers).ok();
    let Some(presented) = presented else {
        tracing::warn!(target: "keygate::audit", %peer, action, outcome = "denied", why = "no API key");
        app.metrics.observe_admin(action, 401);
        return Err(ApiError::Unauthorized(
            "an API key is required: Authorization: Bearer <key>",
        ));
    };
    let key = match app.keys.authenticate_from(peer.ip(), presented).await {
        Ok(key) => key,
        Err(Denied::TooManyFailures { retry_after }) => return Err(rate_limited(retry_after)),
        Err(Denied::UnknownKey { locked_out }) => {
            tracing::warn!(target: "keygate::audit", %peer, action, outcome = "denied", why = "unknown API key");
            if locked_out {
                let limit = app.keys.failure_limit();
                tracing::warn!(
                    target: "keygate::audit",
                    %peer,
                    action,
                    outcome = "locked_out",
                    why = "too many wrong API keys",
                    max_failures = limit.max_failures,
                    window_seconds = limit.window.as_secs_f64(),
                );
            }
            app.metrics.observe_admin(action, 401);
            return Err(ApiError::Unauthorized("unknown API key"));
        }
    };
    if !key.allows(scope) {
        tracing::warn!(target: "keygate::audit", %peer, key = %key.id, action, outcome = "denied", why = "missing scope", scope = %scope);
        app.metrics.observe_admin(action, 403);
        return Err(ApiError::Forbidden(scope));
    }
    Ok(key)
}

/// Logs the outcome of an authorized action and counts it.
pub(crate) fn audit(
    app: &Shared,
    peer: SocketAddr,
    key: &ApiKey,
    action: &'static str,
    target: &str,
    result: &Result<Response, ApiError>,
) {
    let status = match result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    app.metrics.observe_admin(action, status.as_u16());
    tracing::info!(
        target: "keygate::audit",
        %peer,
        key = %key.id,
        action,
        target,
        status = status.as_u16(),
        outcome = if status.is_success() { "done" } else { "failed" },
    );
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn provider_view(s: &ProviderStatus) -> ProviderView {
    ProviderView {
        tenant: s.id.tenant().to_owned(),
        provider: s.id.name().to_owned(),
        issuer: s.issuer.clone(),
        jwks_uri: s.jwks_uri.clone(),
        state: s.state.as_str(),
        kids: s.kids.clone(),
        skipped_keys: s.skipped_keys,
        fetched_at: s.fetched_at.map(unix),
        expires_at: s.expires_at.map(unix),
        usable_until: s.usable_until.map(unix),
        last_error: s.last_error.as_ref().map(|e| LastErrorView {
            at: unix(e.at),
            reason: e.reason,
            message: e.message.clone(),
        }),
        counters: CountersView {
            hits: s.counters.hits,
            misses: s.counters.misses,
            refreshes: s.counters.refreshes,
            refresh_errors: s.counters.refresh_errors,
            adopted: s.counters.adopted,
            unknown_kid_rejections: s.counters.unknown_kid_rejections,
            token_cache_hits: s.counters.token_cache_hits,
        },
        sources: s
            .sources
            .iter()
            .map(|u| SourceView {
                url: u.url.clone(),
                state: u.state.as_str(),
                kids: u.kids.clone(),
                skipped_keys: u.skipped_keys,
                fetched_at: u.fetched_at.map(unix),
                expires_at: u.expires_at.map(unix),
                usable_until: u.usable_until.map(unix),
                last_error: u.last_error.as_ref().map(|e| LastErrorView {
                    at: unix(e.at),
                    reason: e.reason,
                    message: e.message.clone(),
                }),
                refreshes: u.refreshes,
                refresh_errors: u.refresh_errors,
            })
            .collect(),
    }
}

/// Providers, their keys and counters, and the bus.
#[utoipa::path(
    get,
    path = "/admin/v1/status",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "State of every provider and the bus (scope status:read)", body = StatusBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks status:read", body = ErrorBody),
    )
)]
async fn status(
    State(app): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&app, peer, &headers, Scope::StatusRead, "status").await?;
    app.metrics.observe_admin("status", 200);
    let bus = app.bus.status();
    let body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        now: unix(app.verifier.clock().now()),
        node: app.node_id.to_string(),
        providers: app.verifier.status().iter().map(provider_view).collect(),
        bus: BusView {
            backend: bus.backend,
            state: bus.state.as_str(),
            last_seq: bus.last_seq,
            lag_seconds: bus.lag_seconds,
            epoch: bus.epoch.to_string(),
            applied: bus.applied,
            rejected: bus.rejected.iter().map(|(_, n)| n).sum(),
            resyncs: bus.resyncs.iter().map(|(_, n)| n).sum(),
            accept_while_degraded: app.accept_while_degraded,
            primary: bus.primary.clone(),
            last_resync: bus.last_resync.map(|(at, reason)| ResyncView {
                at: unix(at),
                reason,
            }),
        },
        revocations: app.revocations.len(),
        cached_tokens: app.verifier.cached_tokens(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn provider_id(app: &Shared, tenant: &str, provider: &str) -> Result<ProviderId, ApiError> {
    let id = ProviderId::new(tenant, provider);
    if app.verifier.providers().any(|p| *p == id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!(
            "no provider {tenant}/{provider}"
        )))
    }
}

async fn publish(app: &Shared, event: Event) -> Result<u64, ApiError> {
    app.bus
        .publish(event)
        .await
        .map(|cursor| cursor.seq)
        .map_err(ApiError::Bus)
}

/// Drop a provider's cached JWKS and its verified tokens, on every replica the bus reaches.
#[utoipa::path(
    post,
    path = "/admin/v1/providers/{tenant}/{provider}/flush",
    tag = "admin",
    security(("api_key" = [])),
    params(
        ("tenant" = String, Path, description = "Tenant"),
        ("provider" = String, Path, description = "Provider name"),
    ),
    responses(
        (status = 200, description = "Flushed here and published (scope jwks:flush)", body = ActionBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks jwks:flush", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
async fn flush(
    State(app): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, provider)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = authorize(&app, peer, &headers, Scope::JwksFlush, "flush").await?;
    let result = async {
        let id = provider_id(&app, &tenant, &provider)?;
        let event = Event::Flush {
            provider: id,
            flush: FlushId::random(),
        };
        // Published before it is applied here: the refetch this replica then starts publishes
        // its set under the new flush, which the log takes only once it holds the flush. If the
        // log cannot take it, the flush still happens here (and the caller gets a 503).
        let published = publish(&app, event.clone()).await;
        app.apply(&event);
        let seq = published?;
        Ok(json_response(
            StatusCode::OK,
            &ActionBody {
                action: "flush",
                tenant: tenant.clone(),
                provider: provider.clone(),
                seq,
            },
        ))
    }
    .await;
    audit(
        &app,
        peer,
        &key,
        "flush",
        &format!("{tenant}/{provider}"),
        &result,
    );
    result
}

/// Refetch a provider's JWKS now.
#[utoipa::path(
    post,
    path = "/admin/v1/providers/{tenant}/{provider}/refresh",
    tag = "admin",
    security(("api_key" = [])),
    params(
        ("tenant" = String, Path, description = "Tenant"),
        ("provider" = String, Path, description = "Provider name"),
    ),
    responses(
        (status = 200, description = "Refetched (scope jwks:refresh)", body = RefreshBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks jwks:refresh", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "The provider's key set is static", body = ErrorBody),
        (status = 502, description = "The fetch failed; cached keys were kept", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
async fn refresh(
    State(app): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((tenant, provider)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = authorize(&app, peer, &headers, Scope::JwksRefresh, "refresh").await?;
    let result = async {
        let id = provider_id(&app, &tenant, &provider)?;
        app.verifier.refresh(&id).await.map_err(|e| match e {
            RefreshError::UnknownProvider(u) => ApiError::NotFound(u.to_string()),
            RefreshError::Static(id) => {
                ApiError::Conflict(format!("provider {id} has a static key set"))
            }
            RefreshError::Failed(e) => ApiError::RefreshFailed {
                reason: e.cause_reason(),
                message: e.to_string(),
            },
            other => ApiError::RefreshFailed {
                reason: "keys_unavailable",
                message: other.to_string(),
            },
        })?;
        let seq = publish(&app, Event::Refresh(id.clone())).await?;
        let status = app.verifier.status().into_iter().find(|s| s.id == id);
        Ok(json_response(
            StatusCode::OK,
            &RefreshBody {
                action: "refresh",
                tenant: tenant.clone(),
                provider: provider.clone(),
                seq,
                state: status.as_ref().map_or("empty", |s| s.state.as_str()),
                kids: status.map(|s| s.kids).unwrap_or_default(),
            },
        ))
    }
    .await;
    audit(
        &app,
        peer,
        &key,
        "refresh",
        &format!("{tenant}/{provider}"),
        &result,
    );
    result
}

/// Revoke a token (`jti`), a subject's tokens issued before a time, or a signing key.
#[utoipa::path(
    post,
    path = "/admin/v1/revocations",
    tag = "admin",
    security(("api_key" = [])),
    request_body = RevocationRequest,
    responses(
        (status = 200, description = "Revoked here and published (scope tokens:revoke)", body = RevokedBody),
        (status = 400, description = "Bad body; `field` names the field at fault", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks tokens:revoke", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
async fn revoke(
    State(app): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = authorize(&app, peer, &headers, Scope::TokensRevoke, "revoke").await?;
    let mut target = String::from("-");
    let result = async {
        let request = parse_revocation(&body)?;
        let revocation = app.resolve_revocation(&request)?;
        target = match &revocation {
            Revocation::Jti { .. } => "jti".to_owned(),
            Revocation::Subject { tenant, .. } => format!("subject in {tenant}"),
            Revocation::Kid {
                tenant,
                provider,
                kid,
                ..
            } => format!("kid {kid} of {tenant}/{provider}"),
            _ => "other".to_owned(),
        };
        app.apply(&Event::Revoke(revocation.clone()));
        let seq = publish(&app, Event::Revoke(revocation.clone())).await?;
        Ok(json_response(
            StatusCode::OK,
            &RevokedBody {
                revoked: revocation_view(&revocation),
                seq,
            },
        ))
    }
    .await;
    audit(&app, peer, &key, "revoke", &target, &result);
    result
}

/// What is revoked now.
#[utoipa::path(
    get,
    path = "/admin/v1/revocations",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Revocations in force (scope status:read)", body = RevocationList),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks status:read", body = ErrorBody),
    )
)]
async fn list_revocations(
    State(app): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&app, peer, &headers, Scope::StatusRead, "list_revocations").await?;
    app.metrics.observe_admin("list_revocations", 200);
    let mut revocations: Vec<RevocationView> =
        app.revocations.list().iter().map(revocation_view).collect();
    revocations.sort_by_cached_key(|r| serde_json::to_string(r).unwrap_or_default());
    Ok(json_response(
        StatusCode::OK,
        &RevocationList { revocations },
    ))
}

/// The view of a library revocation.
#[must_use]
pub fn revocation_view(r: &Revocation) -> RevocationView {
    match r {
        Revocation::Jti { jti, exp } => RevocationView::Jti {
            jti: jti.clone(),
            exp: *exp,
        },
        Revocation::Subject {
            tenant,
            sub,
            before,
            until,
        } => RevocationView::Subject {
            tenant: tenant.clone(),
            sub: sub.clone(),
            before: *before,
            until: *until,
        },
        Revocation::Kid {
            tenant,
            provider,
            kid,
            until,
        } => RevocationView::Kid {
            tenant: tenant.clone(),
            provider: provider.clone(),
            kid: kid.clone(),
            until: *until,
        },
        // The library may add kinds; show them without inventing fields.
        _ => RevocationView::Jti {
            jti: String::new(),
            exp: 0,
        },
    }
}

/// The longest `jti`, `sub`, `kid` or name accepted in a revocation.
const MAX_FIELD_BYTES: usize = 1024;

/// Parses a revocation body, naming the field at fault.
///
/// # Errors
/// [`ApiError::BadRequest`] with the field.
pub fn parse_revocation(body: &[u8]) -> Result<RevocationRequest, ApiError> {
    let map = json_object(body, "expected a JSON object")?;
    let kinds: Vec<&str> = ["jti", "sub", "kid"]
        .into_iter()
        .filter(|k| map.contains_key(*k))
        .collect();
    let allowed: &[&str] = match kinds.as_slice() {
        ["jti"] => &["jti", "exp"],
        ["sub"] => &["tenant", "sub", "before", "until"],
        [_] => &["tenant", "provider", "kid", "until"],
        [] => {
            return Err(ApiError::bad(
                "body",
                "expected one of {\"jti\",\"exp\"}, {\"tenant\",\"sub\",\"before\"} or {\"tenant\",\"provider\",\"kid\"}",
            ));
        }
        [_, second, ..] => {
            return Err(ApiError::bad(
                second,
                "a revocation is by jti, by sub or by kid, not several at once",
            ));
        }
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(
            extra,
            format!("unknown field; expected {}", allowed.join(", ")),
        ));
    }
    Ok(match kinds[0] {
        "jti" => RevocationRequest::Jti(JtiRevocation {
            jti: text(&map, "jti")?,
            exp: number(&map, "exp")?,
        }),
        "sub" => RevocationRequest::Subject(SubjectRevocation {
            tenant: text(&map, "tenant")?,
            sub: text(&map, "sub")?,
            before: number(&map, "before")?,
            until: optional_number(&map, "until")?,
        }),
        _ => RevocationRequest::Kid(KidRevocation {
            tenant: text(&map, "tenant")?,
            provider: text(&map, "provider")?,
            kid: text(&map, "kid")?,
            until: optional_number(&map, "until")?,
        }),
    })
}

/// Parses a body that must be one JSON object whose member names are unique: with
/// `{"jti":"a","exp":1,"jti":"b"}` the caller meant something, and last-one-wins would
/// silently pick for them. `not_object` is the message when the body is another JSON value.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `body`, or the repeated member.
pub(crate) fn json_object(body: &[u8], not_object: &str) -> Result<Map<String, Value>, ApiError> {
    use std::cell::RefCell;

    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};

    /// Reads a top-level object, remembering the first repeated member name.
    struct Unique<'a>(&'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = Option<Map<String, Value>>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = Option<Map<String, Value>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = Map::new();
            while let Some(name) = access.next_key::<String>()? {
                let value: Value = access.next_value()?;
                if map.contains_key(&name) {
                    *self.0.borrow_mut() = Some(name);
                    return Err(A::Error::custom("repeated member"));
                }
                map.insert(name, value);
            }
            Ok(Some(map))
        }

        // Any other JSON value: well-formed, but not an object.
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Unique(&repeated)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, repeated.into_inner()) {
        (_, Some(name)) => Err(ApiError::bad(&name, "appears more than once")),
        (Ok(Some(map)), None) => Ok(map),
        (Ok(None), None) => Err(ApiError::bad("body", not_object)),
        (Err(e), None) => Err(ApiError::bad("body", format!("not valid JSON: {e}"))),
    }
}

fn text(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match map.get(field) {
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::bad(field, "must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => Err(ApiError::bad(
            field,
            format!("longer than {MAX_FIELD_BYTES} bytes"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad(field, "must be a string")),
        None => Err(ApiError::bad(field, "missing")),
    }
}

fn number(map: &Map<String, Value>, field: &str) -> Result<i64, ApiError> {
    optional_number(map, field)?.ok_or_else(|| ApiError::bad(field, "missing"))
}

fn optional_number(map: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=253_402_300_799).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::bad(
                field,
                "must be a whole number of seconds since 1970 (0 to 253402300799)",
            )),
        },
        Some(_) => Err(ApiError::bad(field, "must be a number (unix seconds)")),
    }
}

/// Turns an error answer that is not JSON (made by axum's extractors or router, not by a
/// handler) into the [`ErrorBody`] of [`ApiError`], so that every error of this listener
/// has one shape. The `Allow` header of a 405 is kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(http::header::ALLOW).cloned();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::NOT_FOUND => ApiError::NotFound("no such admin endpoint".to_owned()),
        other => ApiError::Rejected(other),
    };
    let mut json = error.into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(http::header::ALLOW, allow);
    }
    json
}

/// This document.
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "admin",
    responses(
        (status = 200, description = "The OpenAPI document of the admin API (no key needed)", content_type = "application/json"),
    )
)]
async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        openapi_document(),
    )
        .into_response()
}

/// Prometheus metrics, text exposition format (no key needed: keep the listener private).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
async fn metrics_text(State(app): State<Arc<Shared>>) -> Response {
    let providers = app.verifier.status();
    let bus = app.bus.status();
    let text = app.metrics.render(&Scrape {
        providers: &providers,
        bus: &bus,
        revocations: app.revocations.len(),
        cached_tokens: app.verifier.cached_tokens(),
        accept_while_degraded: app.accept_while_degraded,
        now: app.verifier.clock().now(),
    });
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// Liveness: 200 while the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "admin",
    responses((status = 200, description = "The process answers", body = HealthBody))
)]
async fn healthz() -> Response {
    json_response(StatusCode::OK, &HealthBody { status: "ok" })
}

/// Readiness: 200 when every provider has usable keys, 503 listing those that have not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "admin",
    responses(
        (status = 200, description = "Every provider has usable keys", body = ReadyBody),
        (status = 503, description = "Some provider has no usable keys, or the bus is degraded and accept_while_degraded is false", body = ReadyBody),
    )
)]
async fn readyz(State(app): State<Arc<Shared>>) -> Response {
    let not_ready: Vec<NotReadyView> = app
        .verifier
        .status()
        .iter()
        // A flushed provider whose refetch is under way (and has not failed) stays ready:
        // verifications wait for that one fetch. A flush is not an outage.
        .filter(|s| !s.state.has_usable_keys() && !s.refetching_after_flush)
        .map(|s| NotReadyView {
            tenant: s.id.tenant().to_owned(),
            provider: s.id.name().to_owned(),
            state: s.state.as_str(),
            last_error: s.last_error.as_ref().map(|e| e.reason),
        })
        .collect();
    let bus = app.bus.status();
    // A degraded bus keeps the replica ready (it still verifies) unless the configuration
    // says to refuse tokens while revocations may be behind.
    let refusing = app.refusing_while_degraded();
    let ready = not_ready.is_empty() && !refusing;
    json_response(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &ReadyBody {
            status: if ready { "ready" } else { "not_ready" },
            not_ready,
            bus: bus.state.as_str(),
            bus_backend: bus.backend,
            accepting_while_degraded: app.accept_while_degraded
                && bus.state != crate::bus::BusState::Ok,
        },
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such admin endpoint".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_revocation(body.as_bytes()) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn revocation_bodies_parse_into_their_shape() {
        assert!(matches!(
            parse_revocation(br#"{"jti":"a","exp":10}"#).unwrap(),
            RevocationRequest::Jti(JtiRevocation { ref jti, exp: 10 }) if jti == "a"
        ));
        assert!(matches!(
            parse_revocation(br#"{"tenant":"t","sub":"s","before":5}"#).unwrap(),
            RevocationRequest::Subject(SubjectRevocation {
                before: 5,
                until: None,
                ..
            })
        ));
        assert!(matches!(
            parse_revocation(br#"{"tenant":"t","provider":"p","kid":"k","until":9}"#).unwrap(),
            RevocationRequest::Kid(KidRevocation { until: Some(9), .. })
        ));
    }

    #[test]
    fn bad_revocation_bodies_name_the_field() {
        let cases = [
            ("not json", "body"),
            ("[1]", "body"),
            ("{}", "body"),
            (r#"{"jti":"a"}"#, "exp"),
            (r#"{"jti":"a","exp":"soon"}"#, "exp"),
            (r#"{"jti":"a","exp":-1}"#, "exp"),
            (r#"{"jti":"a","exp":1.5}"#, "exp"),
            (r#"{"jti":"","exp":1}"#, "jti"),
            (r#"{"jti":7,"exp":1}"#, "jti"),
            (r#"{"jti":"a","exp":1,"tenant":"t"}"#, "tenant"),
            (r#"{"sub":"s","before":1}"#, "tenant"),
            (r#"{"tenant":"t","sub":"s"}"#, "before"),
            (r#"{"tenant":"t","provider":"p"}"#, "body"),
            (r#"{"tenant":"t","kid":"k"}"#, "provider"),
            (r#"{"jti":"a","sub":"s","exp":1}"#, "sub"),
            // A repeated member is refused, not decided by last-one-wins.
            (r#"{"jti":"a","exp":1,"jti":"b"}"#, "jti"),
            (
                r#"{"tenant":"t","sub":"s","before":1,"before":2}"#,
                "before",
            ),
            (r#"{"jti":"a","exp":1} trailing"#, "body"),
            ("\"just a string\"", "body"),
            ("", "body"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body), field, "{body}");
        }
        let long = format!(r#"{{"jti":"{}","exp":1}}"#, "x".repeat(MAX_FIELD_BYTES + 1));
        assert_eq!(field_of(&long), "jti");
    }

    #[test]
    fn openapi_document_lists_every_admin_path() {
        let doc: Value = serde_json::from_str(&openapi_document()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/admin/v1/status",
            "/admin/v1/providers/{tenant}/{provider}/flush",
            "/admin/v1/providers/{tenant}/{provider}/refresh",
            "/admin/v1/revocations",
            "/admin/v1/events",
            "/admin/v1/events/stream",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert!(doc["paths"]["/admin/v1/events"]["post"]["requestBody"].is_object());
        assert!(
            doc["paths"]["/admin/v1/events/stream"]["get"]["responses"]["200"]["content"]
                ["text/event-stream"]
                .is_object()
        );
        assert!(doc["paths"]["/admin/v1/revocations"]["post"]["requestBody"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
        // Every route that takes a key documents the lockout.
        let too_many = &doc["paths"]["/admin/v1/status"]["get"]["responses"]["429"];
        assert!(too_many["headers"]["Retry-After"].is_object(), "{too_many}");
        assert!(
            doc["paths"]["/admin/v1/events"]["post"]["responses"]["429"].is_object()
                && doc["paths"]["/admin/v1/providers/{tenant}/{provider}/flush"]["post"]
                    ["responses"]["429"]
                    .is_object()
        );
        assert!(doc["components"]["schemas"]["RevocationRequest"].is_object());
    }

    #[test]
    fn openapi_document_lists_the_unauthenticated_paths_and_413() {
        let doc: Value = serde_json::from_str(&openapi_document()).unwrap();
        for p in ["/metrics", "/healthz", "/readyz", "/admin/v1/openapi.json"] {
            assert!(
                doc["paths"][p]["get"]["responses"]["200"].is_object(),
                "{p}"
            );
        }
        assert!(doc["paths"]["/readyz"]["get"]["responses"]["503"].is_object());
        for p in ["/admin/v1/revocations", "/admin/v1/events"] {
            let too_large = &doc["paths"][p]["post"]["responses"]["413"];
            assert_eq!(
                too_large["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{p}"
            );
        }
        // Routes without a body do not claim one.
        assert!(doc["paths"]["/admin/v1/status"]["get"]["responses"]["413"].is_null());
    }
}
