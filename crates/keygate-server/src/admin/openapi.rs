//! The OpenAPI document of the admin API, generated from the handlers and types by
//! `utoipa`, and the route that serves it.

use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use utoipa::OpenApi;

use super::dto::{
    ActionBody, BusView, CountersView, HealthBody, KeysView, LastErrorView, NotReadyView,
    ProviderView, ReadyBody, RefreshBody, ResyncView, SourceView, StatusBody,
};
use super::reload::{ProvidersReloaded, ReloadBody};
use super::revocation::{
    JtiRevocation, KidRevocation, RevocationList, RevocationRequest, RevocationView, RevokedBody,
    SubjectRevocation, TokenRevocation,
};
use super::{ErrorBody, MAX_BODY_BYTES, events, handlers, health, reload};

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate admin API",
        description = "Operator controls of the keygate sidecar. Authenticate with `Authorization: Bearer <API key>`; each route needs one scope."
    ),
    paths(
        handlers::status,
        handlers::flush,
        handlers::refresh,
        handlers::revoke,
        handlers::list_revocations,
        events::publish_event,
        events::stream_events,
        reload::reload,
        openapi_json,
        health::metrics_text,
        health::healthz,
        health::readyz
    ),
    components(schemas(
        StatusBody,
        ProviderView,
        KeysView,
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
        TokenRevocation,
        RevocationView,
        RevokedBody,
        RevocationList,
        events::AppEventRequest,
        events::PublishedEvent,
        events::InvalidateData,
        events::ResyncData,
        ReloadBody,
        ProvidersReloaded,
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
        // Both answer with the ErrorBody.
        let error_body = |description: String| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        // Every route that takes a key can answer 401 and 429 (see the `Authorized`
        // extractor); said once here rather than on each handler.
        let unauthorized = error_body("Missing or unknown API key".to_owned()).build();
        let too_many = error_body(
            "Too many wrong API keys from this address; every key is refused for \
             `Retry-After` seconds"
                .to_owned(),
        )
        .header(
            "Retry-After",
            Header::new(schema::Object::with_type(schema::Type::Integer)),
        )
        .build();
        // Every route that reads a body refuses one over MAX_BODY_BYTES.
        let too_large = error_body(format!(
            "The body is larger than {MAX_BODY_BYTES} bytes (error `payload_too_large`)"
        ))
        .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    let responses = &mut operation.responses.responses;
                    responses.insert("401".to_owned(), unauthorized.clone().into());
                    responses.insert("429".to_owned(), too_many.clone().into());
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

/// This document.
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "admin",
    responses(
        (status = 200, description = "The OpenAPI document of the admin API (no key needed)", content_type = "application/json"),
    )
)]
pub(super) async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        openapi_document(),
    )
        .into_response()
}
