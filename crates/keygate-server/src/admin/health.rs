//! The unauthenticated routes of the admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

use super::dto::{HealthBody, NotReadyView, ReadyBody};
use super::{Admin, json_response};
use crate::metrics::{self, Scrape};

/// Prometheus metrics, text exposition format (no key needed: keep the listener private).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
pub(super) async fn metrics_text(State(app): State<Arc<Admin>>) -> Response {
    let node = &app.node;
    let providers = node.verifier().status();
    let bus = node.bus().status();
    let text = node.metrics().render(&Scrape {
        providers: &providers,
        bus: &bus,
        revocations: node.revocations().len(),
        cached_tokens: node.verifier().cached_tokens(),
        accept_while_degraded: node.accept_while_degraded(),
        now: node.verifier().clock().now(),
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
pub(super) async fn healthz() -> Response {
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
pub(super) async fn readyz(State(app): State<Arc<Admin>>) -> Response {
    let node = &app.node;
    let not_ready: Vec<NotReadyView> = node
        .verifier()
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
    let bus = node.bus().status();
    // A degraded bus keeps the replica ready (it still verifies) unless the configuration
    // says to refuse tokens while revocations may be behind.
    let refusing = node.refusing_while_degraded();
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
            accepting_while_degraded: node.accept_while_degraded()
                && bus.state != keygate_cluster::BusState::Ok,
        },
    )
}
