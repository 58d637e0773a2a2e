//! Errors of the admin listener and their one mapping to responses: [`ApiError`]'s
//! `IntoResponse`, plus [`json_errors`] for the answers axum makes itself.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::MAX_BODY_BYTES;
use super::reload::ReloadError;
use crate::apikey::Scope;
use keygate_cluster::BusError;

/// Every error answer of the admin listener, whatever the path (404 and 405 included).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `bad_request`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `bus_unavailable`, `refresh_failed`,
    /// `conflict`, `too_many_requests`, `request_rejected` (another refusal of the HTTP
    /// layer; the status says which); for `POST /admin/v1/reload`: `config` (the file does
    /// not validate; `field` names the key), `restart_required` (`field` names the setting
    /// only a restart applies), `no_config_file`.
    pub error: &'static str,
    /// A human-readable description.
    pub message: String,
    /// The body field at fault, for `bad_request`; the config key, for `config` and
    /// `restart_required`.
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
    /// A configuration reload changed nothing: 400 for a bad file or a change that needs a
    /// restart, 409 when there is no file to reload.
    Reload(ReloadError),
}

impl ApiError {
    pub(crate) fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
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
            ApiError::Reload(ReloadError::NoFile) => StatusCode::CONFLICT,
            ApiError::Reload(_) => StatusCode::BAD_REQUEST,
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
            ApiError::Reload(e) => {
                let message = e.to_string();
                match e {
                    ReloadError::Config(c) => ("config", c.problem, Some(c.key), None),
                    ReloadError::RestartRequired { setting } => {
                        ("restart_required", message, Some(setting.to_owned()), None)
                    }
                    _ => ("no_config_file", message, None, None),
                }
            }
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

pub(crate) use crate::json::json_response;

/// Turns an error answer that is not JSON (made by axum's extractors or router, not by a
/// handler) into the [`ErrorBody`] of [`ApiError`], so that every error of this listener
/// has one shape. The `Allow` header of a 405 is kept.
pub(super) async fn json_errors(response: Response) -> Response {
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

/// The fallback of the admin router.
pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("no such admin endpoint".to_owned())
}

/// A 200 answer with `body` as JSON: what an admin handler returns when it succeeds.
pub(crate) fn ok_json<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}
