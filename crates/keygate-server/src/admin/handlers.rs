//! The admin API's handlers: each authorizes through its [`Authorized`] route type, acts on
//! the node, and answers; errors become responses in [`ApiError`], the audit event and the
//! metrics are written by the [`record`](super::auth::record) layer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use keygate::{FlushId, RefreshError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{
    Authorized, AuthorizedBody, FlushRoute, ListRevocationsRoute, RefreshRoute, RevokeRoute,
    StatusRoute,
};
use super::dto::{ActionBody, BusView, ProviderView, RefreshBody, ResyncView, StatusBody, unix};
use super::revocation::{
    RevocationList, RevocationRequest, RevocationView, RevokedBody, audit_target, parse_revocation,
    provider_id,
};
use super::{Admin, ApiError, ErrorBody, ok_json};
use keygate_cluster::Event;

/// Providers, their keys and counters, and the bus.
#[utoipa::path(
    get,
    path = "/admin/v1/status",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "State of every provider and the bus (scope status:read)", body = StatusBody),
        (status = 403, description = "The key lacks status:read", body = ErrorBody),
    )
)]
pub(super) async fn status(
    State(app): State<Arc<Admin>>,
    _: Authorized<StatusRoute>,
) -> Result<Response, ApiError> {
    let node = &app.node;
    let bus = node.bus().status();
    let body = StatusBody {
        version: env!("CARGO_PKG_VERSION"),
        now: unix(node.verifier().clock().now()),
        node: node.node_id().to_string(),
        providers: node
            .verifier()
            .status()
            .iter()
            .map(ProviderView::from)
            .collect(),
        bus: BusView {
            backend: bus.backend,
            state: bus.state.as_str(),
            last_seq: bus.last_seq,
            lag_seconds: bus.lag_seconds,
            epoch: bus.epoch.to_string(),
            applied: bus.applied,
            rejected: bus.rejected.iter().map(|(_, n)| n).sum(),
            resyncs: bus.resyncs.iter().map(|(_, n)| n).sum(),
            accept_while_degraded: node.accept_while_degraded(),
            primary: bus.primary.clone(),
            last_resync: bus.last_resync.map(|(at, reason)| ResyncView {
                at: unix(at),
                reason,
            }),
        },
        revocations: node.revocations().len(),
        cached_tokens: node.verifier().cached_tokens(),
    };
    ok_json(&body)
}

/// Drop a provider's cached JWKS and its verified tokens, on every replica the bus reaches.
#[utoipa::path(
    post,
    path = "/admin/v1/providers/{tenant}/{provider}/flush",
    tag = "admin",
    security(("api_key" = [])),
    params(ProviderPath),
    responses(
        (status = 200, description = "Flushed here and published (scope jwks:flush)", body = ActionBody),
        (status = 403, description = "The key lacks jwks:flush", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
pub(super) async fn flush(
    State(app): State<Arc<Admin>>,
    Path(ProviderPath { tenant, provider }): Path<ProviderPath>,
    auth: Authorized<FlushRoute>,
) -> Result<Response, ApiError> {
    auth.target(format!("{tenant}/{provider}"));
    let id = provider_id(app.node.verifier(), &tenant, &provider)?;
    let event = Event::Flush {
        provider: id,
        flush: FlushId::random(),
    };
    let seq = app.publish(event).await?.seq;
    ok_json(&ActionBody {
        action: "flush".to_owned(),
        tenant,
        provider,
        seq,
    })
}

/// Refetch a provider's JWKS now.
#[utoipa::path(
    post,
    path = "/admin/v1/providers/{tenant}/{provider}/refresh",
    tag = "admin",
    security(("api_key" = [])),
    params(ProviderPath),
    responses(
        (status = 200, description = "Refetched (scope jwks:refresh)", body = RefreshBody),
        (status = 403, description = "The key lacks jwks:refresh", body = ErrorBody),
        (status = 404, description = "No such provider", body = ErrorBody),
        (status = 409, description = "The provider's key set is static", body = ErrorBody),
        (status = 502, description = "The fetch failed; cached keys were kept", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
pub(super) async fn refresh(
    State(app): State<Arc<Admin>>,
    Path(ProviderPath { tenant, provider }): Path<ProviderPath>,
    auth: Authorized<RefreshRoute>,
) -> Result<Response, ApiError> {
    auth.target(format!("{tenant}/{provider}"));
    let node = &app.node;
    let id = provider_id(node.verifier(), &tenant, &provider)?;
    node.verifier().refresh(&id).await.map_err(refresh_error)?;
    let seq = app.publish(Event::Refresh(id.clone())).await?.seq;
    let status = node.verifier().status().into_iter().find(|s| s.id == id);
    ok_json(&RefreshBody {
        action: "refresh".to_owned(),
        tenant,
        provider,
        seq,
        state: status
            .as_ref()
            .map_or("empty", |s| s.state.as_str())
            .to_owned(),
        kids: status.map(|s| s.kids).unwrap_or_default(),
    })
}

/// The provider a route acts on, from its path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct ProviderPath {
    /// Tenant
    tenant: String,
    /// Provider name
    provider: String,
}

fn refresh_error(e: RefreshError) -> ApiError {
    match e {
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
    }
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
        (status = 403, description = "The key lacks tokens:revoke", body = ErrorBody),
        (status = 404, description = "No such tenant or provider", body = ErrorBody),
        (status = 503, description = "The bus could not take the event", body = ErrorBody),
    )
)]
pub(super) async fn revoke(
    State(app): State<Arc<Admin>>,
    AuthorizedBody(auth, body): AuthorizedBody<RevokeRoute>,
) -> Result<Response, ApiError> {
    let request = parse_revocation(&body)?;
    let revocation = app
        .revocations
        .load()
        .resolve(app.node.verifier(), &request)?;
    auth.target(audit_target(&revocation));
    let revoked = RevocationView::try_from(&revocation)
        .map_err(|_| ApiError::Rejected(StatusCode::INTERNAL_SERVER_ERROR))?;
    let seq = app.publish(Event::Revoke(revocation)).await?.seq;
    ok_json(&RevokedBody { revoked, seq })
}

/// What is revoked now.
#[utoipa::path(
    get,
    path = "/admin/v1/revocations",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Revocations in force (scope status:read)", body = RevocationList),
        (status = 403, description = "The key lacks status:read", body = ErrorBody),
    )
)]
pub(super) async fn list_revocations(
    State(app): State<Arc<Admin>>,
    _: Authorized<ListRevocationsRoute>,
) -> Result<Response, ApiError> {
    let mut revocations: Vec<RevocationView> = app
        .node
        .revocations()
        .list()
        .iter()
        .filter_map(|r| match RevocationView::try_from(r) {
            Ok(view) => Some(view),
            Err(e) => {
                tracing::warn!(revocation = ?r, "{e}: not listed");
                None
            }
        })
        .collect();
    revocations.sort_by_cached_key(|r| serde_json::to_string(r).unwrap_or_default());
    ok_json(&RevocationList { revocations })
}
