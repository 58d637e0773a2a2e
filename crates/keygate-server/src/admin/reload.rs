//! `POST /admin/v1/reload`: re-read the config file and apply it (see [`crate::reload`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;

use super::auth::{Authorized, ReloadRoute};
use super::{Admin, ApiError, ErrorBody, json_response};
use crate::reload::{ReloadBody, ReloadError};

/// Re-read the config file the server was started with and apply it, without a restart.
#[utoipa::path(
    post,
    path = "/admin/v1/reload",
    tag = "admin",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Applied (scope config:reload): the providers added, removed, changed and unchanged", body = ReloadBody),
        (status = 400, description = "Nothing changed: the file does not validate (`error` `config`, `field` the key at fault) or changes a setting only a restart applies (`error` `restart_required`, `field` the setting)", body = ErrorBody),
        (status = 403, description = "The key lacks config:reload", body = ErrorBody),
        (status = 409, description = "Started without --config: there is no file to reload (`error` `no_config_file`)", body = ErrorBody),
    )
)]
pub(super) async fn reload(
    State(app): State<Arc<Admin>>,
    auth: Authorized<ReloadRoute>,
) -> Result<Response, ApiError> {
    auth.target("config");
    let Some(reloader) = app.reloader.clone() else {
        return Err(ApiError::Reload(ReloadError::NoFile));
    };
    // Reading the file and building fetchers (which load the trust store) blocks.
    let result = tokio::task::spawn_blocking(move || reloader.reload("admin"))
        .await
        .map_err(|_| ApiError::Rejected(StatusCode::INTERNAL_SERVER_ERROR))?;
    let body = result.map_err(ApiError::Reload)?;
    Ok(json_response(StatusCode::OK, &body))
}
