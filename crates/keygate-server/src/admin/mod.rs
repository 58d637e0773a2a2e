//! The admin listener: the admin API (`/admin/v1/...`, JSON, API-key auth), `/metrics`,
//! `/healthz`, `/readyz`, and the OpenAPI document of the admin API, generated from the
//! handlers and types by `utoipa`.
//!
//! Authentication: `Authorization: Bearer <key>`; the key is checked against the hashed keys
//! of the config in constant time (see [`crate::apikey`]). A missing or unknown key gets 401,
//! a key without the route's scope 403. Every admin action is logged as an audit event under
//! the `keygate::audit` target: key id, client address, action, target, outcome. Never the
//! key, never a token.
//!
//! - `auth.rs`: the extractor that authenticates a key for a route's scope, and the layer
//!   that counts and audits every call;
//! - `error.rs`: [`ApiError`] and its `IntoResponse`, the one place an error becomes a
//!   response;
//! - `dto.rs`, [`revocation`]: the request and answer bodies, shared with the CLI client;
//! - `body.rs`: reading JSON bodies, naming the field at fault;
//! - `handlers.rs`, [`events`], `reload.rs`, `health.rs`: the routes; `openapi.rs`: the
//!   document.

mod auth;
mod body;
mod dto;
mod error;
pub mod events;
mod handlers;
mod health;
mod openapi;
mod reload;
pub mod revocation;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use keygate_cluster::{Cursor, Event};
use tokio::sync::watch;

pub use body::MAX_FIELD_BYTES;
pub use dto::{
    ActionBody, BusView, CountersView, HealthBody, KeysView, LastErrorView, NotReadyView,
    ProviderView, ReadyBody, RefreshBody, ResyncView, SourceView, StatusBody,
};
pub use error::{ApiError, ErrorBody};
pub(crate) use error::{json_response, ok_json};
pub use openapi::{ApiDoc, openapi_document};
pub use reload::{ProvidersReloaded, Reload, ReloadBody, ReloadError};
pub use revocation::{
    JtiRevocation, KidRevocation, RevocationList, RevocationPolicy, RevocationRequest,
    RevocationView, RevokedBody, SubjectRevocation, TokenRevocation, parse_revocation,
};

use crate::apikey::KeyRing;
use crate::node::Node;

/// The largest admin request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the admin listener needs.
#[non_exhaustive]
pub struct Admin {
    /// The node the admin API reads and changes.
    pub node: Arc<Node>,
    /// Admin API keys.
    pub keys: KeyRing,
    /// What revocation requests are checked against; a reload replaces it.
    pub revocations: Arc<ArcSwap<RevocationPolicy>>,
    /// What `POST /admin/v1/reload` calls; without one, the route answers 409.
    pub reloader: Option<Arc<dyn Reload>>,
    /// Turns `true` when the server starts shutting down; long-lived responses (the event
    /// stream) end then, so they do not hold the drain open.
    pub stopping: watch::Receiver<bool>,
}

impl Admin {
    /// The admin listener's state.
    #[must_use]
    pub fn new(
        node: Arc<Node>,
        keys: KeyRing,
        revocations: RevocationPolicy,
        stopping: watch::Receiver<bool>,
    ) -> Admin {
        Admin {
            node,
            keys,
            revocations: Arc::new(ArcSwap::from_pointee(revocations)),
            reloader: None,
            stopping,
        }
    }

    /// Applies `event` on this node and publishes it to the others: the "act" of every
    /// handler that changes state.
    ///
    /// # Errors
    /// [`ApiError::Bus`] when the bus cannot take the event.
    pub(crate) async fn publish(&self, event: Event) -> Result<Cursor, ApiError> {
        self.node.invalidate(event).await.map_err(ApiError::Bus)
    }
}

/// The router for the admin listener. Serve it with connect info (`SocketAddr`) so audit
/// events name the client.
pub fn router(admin: Admin) -> Router {
    let admin = Arc::new(admin);
    Router::new()
        .route("/admin/v1/status", get(handlers::status))
        .route(
            "/admin/v1/providers/{tenant}/{provider}/flush",
            post(handlers::flush),
        )
        .route(
            "/admin/v1/providers/{tenant}/{provider}/refresh",
            post(handlers::refresh),
        )
        .route(
            "/admin/v1/revocations",
            post(handlers::revoke).get(handlers::list_revocations),
        )
        .route("/admin/v1/events", post(events::publish_event))
        .route("/admin/v1/events/stream", get(events::stream_events))
        .route("/admin/v1/reload", post(reload::reload))
        // Counts every call that reached the key check, and audits the authorized ones.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&admin),
            auth::record,
        ))
        .route("/admin/v1/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(health::metrics_text))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Last on the way out: answers made by axum itself (413 from the body limit, 405,
        // a path that does not parse) become the JSON error body like every other error.
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(admin)
}

#[cfg(test)]
mod tests;
