//! Who may call an admin route, and the record of every call.
//!
//! [`Authorized`] is the one extractor that authenticates an API key: lockout of an address
//! that presented too many wrong keys (429), the key itself (401), the route's scope (403).
//! Each route names its action and scope once, as a [`Route`] type. [`record`] is the one
//! layer that counts every admin call in the metrics (by action and status) and writes the
//! audit event of every authorized action; the extractor logs the refusals it makes itself.
//! Neither the audit events nor the answers ever contain the presented key.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::{Admin, ApiError};
use crate::apikey::{Denied, Scope};

/// An admin route: the action named in metrics and audit events, and the scope it needs.
pub(crate) trait Route: Send + Sync + 'static {
    /// The action, e.g. `flush`.
    const ACTION: &'static str;
    /// The scope a key needs.
    const SCOPE: Scope;
    /// Whether a call that got past authorization is written to the audit log (reads are
    /// only counted).
    const AUDITED: bool = true;
}

macro_rules! routes {
    ($($(#[$doc:meta])* $name:ident: $action:literal, $scope:ident, $audited:literal;)*) => {$(
        $(#[$doc])*
        pub(crate) enum $name {}

        impl Route for $name {
            const ACTION: &'static str = $action;
            const SCOPE: Scope = Scope::$scope;
            const AUDITED: bool = $audited;
        }
    )*};
}

routes! {
    /// `GET /admin/v1/status`.
    StatusRoute: "status", StatusRead, false;
    /// `GET /admin/v1/revocations`.
    ListRevocationsRoute: "list_revocations", StatusRead, false;
    /// `POST /admin/v1/providers/{tenant}/{provider}/flush`.
    FlushRoute: "flush", JwksFlush, true;
    /// `POST /admin/v1/providers/{tenant}/{provider}/refresh`.
    RefreshRoute: "refresh", JwksRefresh, true;
    /// `POST /admin/v1/revocations`.
    RevokeRoute: "revoke", TokensRevoke, true;
    /// `POST /admin/v1/events`.
    PublishEventRoute: "publish_event", EventsPublish, true;
    /// `GET /admin/v1/events/stream`.
    StreamEventsRoute: "stream_events", EventsRead, true;
    /// `POST /admin/v1/reload`.
    ReloadRoute: "reload", ConfigReload, true;
}

/// One admin call as [`record`] sees it once the extractor ran.
struct Call {
    action: &'static str,
    peer: SocketAddr,
    /// The key's id, once authenticated with the route's scope.
    key: Option<String>,
    audited: bool,
    /// What the action was about, for the audit log (`-` until the handler says).
    target: String,
}

/// Where the extractor and the handler leave what [`record`] reports.
#[derive(Clone, Default)]
struct CallSlot(Arc<Mutex<Option<Call>>>);

impl CallSlot {
    fn with<T>(&self, f: impl FnOnce(&mut Option<Call>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A request whose API key is known, valid and has the scope of route `R`.
pub(crate) struct Authorized<R> {
    slot: CallSlot,
    route: PhantomData<R>,
}

impl<R> Authorized<R> {
    /// Names what the action is about in its audit event (default `-`).
    pub(crate) fn target(&self, target: impl Into<String>) {
        let target = target.into();
        self.slot.with(|call| {
            if let Some(call) = call {
                call.target = target;
            }
        });
    }
}

impl<R: Route> FromRequestParts<Arc<Admin>> for Authorized<R> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let slot = parts
            .extensions
            .get::<CallSlot>()
            .cloned()
            .unwrap_or_default();
        slot.with(|call| {
            *call = Some(Call {
                action: R::ACTION,
                peer,
                key: None,
                audited: R::AUDITED,
                target: "-".to_owned(),
            });
        });
        let key = authenticate(app, peer, &parts.headers, R::SCOPE, R::ACTION)
            .await
            .map_err(IntoResponse::into_response)?;
        slot.with(|call| {
            if let Some(call) = call {
                call.key = Some(key);
            }
        });
        Ok(Authorized {
            slot,
            route: PhantomData,
        })
    }
}

/// An authorized request with its body, read before the key is looked at: a body over the
/// limit gets 413 whether or not the key is good, and counts as no failed attempt.
pub(crate) struct AuthorizedBody<R>(pub(crate) Authorized<R>, pub(crate) Bytes);

impl<R: Route> FromRequest<Arc<Admin>> for AuthorizedBody<R> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<Admin>) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let mut head = Request::new(()).into_parts().0;
        head.method = parts.method.clone();
        head.uri = parts.uri.clone();
        head.headers = parts.headers.clone();
        head.extensions = parts.extensions.clone();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        let authorized = Authorized::from_request_parts(&mut head, app).await?;
        Ok(AuthorizedBody(authorized, bytes))
    }
}

/// Checks the request's API key and scope; logs refusals as audit events.
///
/// An address that presented too many wrong keys recently gets 429 for every call that
/// needs a key, before its key is looked at (see
/// [`crate::apikey::KeyRing::authenticate_from`]). Answers the key's id.
async fn authenticate(
    app: &Admin,
    peer: SocketAddr,
    headers: &http::HeaderMap,
    scope: Scope,
    action: &'static str,
) -> Result<String, ApiError> {
    let rate_limited = |retry_after: Duration| {
        tracing::info!(
            target: "keygate::audit",
            %peer,
            action,
            outcome = "denied",
            why = "address locked out after too many wrong API keys",
            retry_after_seconds = retry_after.as_secs(),
        );
        ApiError::TooManyRequests { retry_after }
    };
    if let Some(retry_after) = app.keys.lockout(peer.ip()) {
        return Err(rate_limited(retry_after));
    }
    // The library's one bearer parser: what `/verify` and the middleware accept, and no more.
    let Ok(presented) = keygate::bearer::bearer_token(headers) else {
        tracing::warn!(target: "keygate::audit", %peer, action, outcome = "denied", why = "no API key");
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
            return Err(ApiError::Unauthorized("unknown API key"));
        }
    };
    if !key.allows(scope) {
        tracing::warn!(target: "keygate::audit", %peer, key = %key.id, action, outcome = "denied", why = "missing scope", scope = %scope);
        return Err(ApiError::Forbidden(scope));
    }
    Ok(key.id.clone())
}

/// The layer around every admin route: counts each call that reached [`Authorized`] by
/// action and status, and writes the audit event of each authorized action.
pub(crate) async fn record(
    State(app): State<Arc<Admin>>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = CallSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let Some(call) = slot.with(Option::take) else {
        return response;
    };
    let status = response.status();
    app.node
        .metrics()
        .observe_admin(call.action, status.as_u16());
    if let (Some(key), true) = (&call.key, call.audited) {
        tracing::info!(
            target: "keygate::audit",
            peer = %call.peer,
            key = %key,
            action = call.action,
            target = call.target.as_str(),
            status = status.as_u16(),
            outcome = if status.is_success() { "done" } else { "failed" },
        );
    }
    response
}
