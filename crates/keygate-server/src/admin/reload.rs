//! `POST /admin/v1/reload`: re-read the config file and apply it (see [`crate::reload`],
//! which implements [`Reload`] and is handed to the admin listener by `serve`), and the
//! answer and error types that route and `keygate reload` share.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Authorized, ReloadRoute};
use super::{Admin, ApiError, ErrorBody, json_response};
use crate::config::ConfigError;

/// What re-reads and applies the configuration.
pub trait Reload: Send + Sync {
    /// Re-reads the config file and applies it; `via` names what asked (`admin`, `SIGHUP`).
    ///
    /// # Errors
    /// A [`ReloadError`]; the running configuration is then unchanged.
    fn reload(&self, via: &'static str) -> Result<ReloadBody, ReloadError>;
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server runs the embedded default: there is no file to read again.
    #[error("no config file to reload: keygate was started without --config")]
    NoFile,
    /// The file does not validate (or its providers are refused); the key at fault is named
    /// as at start-up.
    #[error("{0}")]
    Config(ConfigError),
    /// The file changes a setting that only a restart applies.
    #[error("{setting} changed: a restart is needed to apply it; nothing was reloaded")]
    RestartRequired {
        /// The setting, as a key of the file (`server.listen`, `cluster`, ...).
        setting: &'static str,
    },
}

/// What a reload did to the providers, by id (`tenant/name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvidersReloaded {
    /// Newly configured: fetching their keys in the background.
    pub added: Vec<String>,
    /// No longer configured: stopped, their tokens refused.
    pub removed: Vec<String>,
    /// Configured differently: rebuilt, their keys fetched afresh.
    pub changed: Vec<String>,
    /// Configured as before: keys and verified tokens kept.
    pub unchanged: Vec<String>,
}

/// The answer of a reload that applied a new file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReloadBody {
    /// Always `true`: a refused reload answers with an error instead.
    pub reloaded: bool,
    /// What became of each provider.
    pub providers: ProvidersReloaded,
}

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
