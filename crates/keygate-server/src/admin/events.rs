//! Application events on the admin listener: an application says "this entry of my cache
//! changed" (`POST /admin/v1/events`, scope `events:publish`) and its subscribers, on every
//! replica the bus reaches, follow those events as server-sent events
//! (`GET /admin/v1/events/stream`, scope `events:read`).
//!
//! The stream is built on [`Subscription`]: it carries only [`Event::App`] events, in log
//! order, each with its position as the SSE `id:`, so a client that reconnects with
//! `Last-Event-ID` resumes right after the last event it saw. Where that is not possible (the
//! id is not one of ours, the log was trimmed or started over, the client fell behind) the
//! stream says `resync` instead, and the client must drop everything it caches. On the wire:
//!
//! ```text
//! event: invalidate
//! id: 3f9c0e1a2b4d5f60:7:7
//! data: {"namespace":"users","key":"42","seq":7,"origin":"node-a#1f2e3d4c","at":1700000000000}
//!
//! event: resync
//! id: 3f9c0e1a2b4d5f60:7:7
//! data: {"reason":"trimmed"}
//!
//! :
//! ```
//!
//! The last line is the keep-alive comment, sent after [`KEEP_ALIVE`] without an event so that
//! proxies and load balancers do not close an idle stream.
//!
//! A stream opened without `Last-Event-ID` starts with a `resync` (reason `start`): the server
//! cannot know what the subscriber cached before it connected, and the event gives the client
//! an id to resume from even if it disconnects before the first invalidation. An unparseable
//! `Last-Event-ID` gets a `resync` (reason `bad_id`) rather than a 400, since clients resend
//! whatever id they last saw.
//!
//! A stream ends when the client goes away. It does not end by itself when the server shuts
//! down: the admin listener's drain waits for open streams until `shutdown_grace` runs out.

use std::convert::Infallible;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt as _};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Authorized, AuthorizedBody, PublishEventRoute, StreamEventsRoute};
use super::body::{MAX_FIELD_BYTES, json_object, text};
use super::{Admin, ApiError, ErrorBody, ok_json};
use keygate::clock::unix_millis;
use keygate_cluster::{Bus, Cursor, Delivery, Event, Subscription};
/// The most namespaces one stream may filter on.
pub const MAX_FILTER_NAMESPACES: usize = 64;
/// How long a stream stays silent before it sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `POST /admin/v1/events`: an entry of an application's cache changed. No other members are
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AppEventRequest {
    /// The kind of thing, e.g. `users`: 1 to 1024 bytes of `A-Z a-z 0-9 . _ : -`.
    pub namespace: String,
    /// Which one: 1 to 1024 bytes of UTF-8 without control characters.
    pub key: String,
}

/// The answer to `POST /admin/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublishedEvent {
    /// The event's sequence number on the bus.
    pub seq: u64,
    /// The event's position, as the stream's `id:` carries it (`<epoch>:<seq>:<pos>`). If this
    /// replica did not see its own event come back within a second, the position just before
    /// the event: a stream resumed from it still delivers the event.
    pub id: String,
}

/// The `data:` of an `invalidate` event of `GET /admin/v1/events/stream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InvalidateData {
    /// The namespace, as published.
    pub namespace: String,
    /// The key, as published.
    pub key: String,
    /// The event's sequence number on the bus.
    pub seq: u64,
    /// The replica that published it.
    pub origin: String,
    /// When it was published (unix milliseconds).
    pub at: u64,
}

/// The `data:` of a `resync` event of `GET /admin/v1/events/stream`: events may have been
/// missed, so drop everything cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResyncData {
    /// `start` (a new stream), `bad_id` (an unreadable `Last-Event-ID`), `trimmed` (the events
    /// after `Last-Event-ID` are gone), `lagged` (the client fell behind), `epoch`, `gap`.
    pub reason: &'static str,
}

/// Parses a `POST /admin/v1/events` body, naming the field at fault.
///
/// # Errors
/// [`ApiError::BadRequest`] with the field: `body` when the body is not a JSON object, the
/// member's name when it is unknown, `namespace` or `key` when that one is missing, empty,
/// too long, not a string or has a character it may not have.
pub fn parse_app_event(body: &[u8]) -> Result<AppEventRequest, ApiError> {
    let map = json_object(body, "expected a JSON object {\"namespace\",\"key\"}")?;
    if let Some(extra) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "namespace" | "key"))
    {
        return Err(ApiError::bad(
            extra,
            "unknown field; expected namespace, key",
        ));
    }
    let namespace = text(&map, "namespace")?;
    if !is_namespace(&namespace) {
        return Err(ApiError::bad(
            "namespace",
            "may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    let key = text(&map, "key")?;
    if key.chars().any(char::is_control) {
        return Err(ApiError::bad("key", "must not contain control characters"));
    }
    Ok(AppEventRequest { namespace, key })
}

/// Parses the `namespace` query parameter of the stream: comma-separated namespaces, none
/// empty, at most [`MAX_FILTER_NAMESPACES`]. `None` means every namespace.
///
/// # Errors
/// [`ApiError::BadRequest`] with field `namespace`.
pub fn parse_namespace_filter(raw: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut names: Vec<String> = Vec::new();
    for name in raw.split(',') {
        if name.is_empty() {
            return Err(ApiError::bad(
                "namespace",
                "expected comma-separated namespaces, none empty",
            ));
        }
        if name.len() > MAX_FIELD_BYTES || !is_namespace(name) {
            return Err(ApiError::bad(
                "namespace",
                format!(
                    "each namespace is 1 to {MAX_FIELD_BYTES} bytes of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
                ),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        if names.len() > MAX_FILTER_NAMESPACES {
            return Err(ApiError::bad(
                "namespace",
                format!("at most {MAX_FILTER_NAMESPACES} namespaces"),
            ));
        }
    }
    Ok(Some(names))
}

/// Publish an application event: every subscriber of the stream, on every replica the bus
/// reaches, receives it.
#[utoipa::path(
    post,
    path = "/admin/v1/events",
    tag = "admin",
    security(("api_key" = [])),
    request_body = AppEventRequest,
    responses(
        (status = 200, description = "Published on the bus (scope events:publish)", body = PublishedEvent),
        (status = 400, description = "Bad body; `field` names the field at fault", body = ErrorBody),
        (status = 403, description = "The key lacks events:publish", body = ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB"),
        (status = 503, description = "The bus could not take the event; it did not go out", body = ErrorBody),
    )
)]
pub(crate) async fn publish_event(
    State(app): State<Arc<Admin>>,
    AuthorizedBody(auth, body): AuthorizedBody<PublishEventRoute>,
) -> Result<Response, ApiError> {
    let request = parse_app_event(&body)?;
    // The key is the application's and may be anything, a session id included: only the
    // namespace goes into the audit log.
    auth.target(format!("namespace {}", request.namespace));
    let event = Event::App {
        namespace: request.namespace,
        key: request.key,
    };
    let cursor = app.publish(event).await?;
    ok_json(&PublishedEvent {
        seq: cursor.seq,
        id: cursor.to_string(),
    })
}

/// Follow application events as server-sent events: `invalidate` for each event, `resync`
/// when events may have been missed (drop everything cached).
#[utoipa::path(
    get,
    path = "/admin/v1/events/stream",
    tag = "admin",
    security(("api_key" = [])),
    params(
        ("namespace" = Option<String>, Query, description = "Only events of these namespaces, comma-separated; `resync` events always come"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this event id (`<epoch>:<seq>:<pos>`); one that cannot be resumed from gets a `resync` first"),
    ),
    responses(
        (status = 200, description = "The stream (scope events:read): `event: invalidate` with `data:` an InvalidateData, `event: resync` with `data:` a ResyncData, each with `id: <epoch>:<seq>:<pos>`; a `:` comment after 15 s of silence", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad namespace filter; `field` is `namespace`", body = ErrorBody),
        (status = 403, description = "The key lacks events:read", body = ErrorBody),
    )
)]
pub(crate) async fn stream_events(
    State(app): State<Arc<Admin>>,
    auth: Authorized<StreamEventsRoute>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::bad(
            "namespace",
            "expected at most one `namespace` parameter",
        ));
    };
    let filter = parse_namespace_filter(query.namespace.as_deref())?;
    auth.target(filter_target(filter.as_deref()));
    let (first, subscription) = subscribe(
        app.node.bus(),
        headers.get(HeaderName::from_static("last-event-id")),
    )
    .await;
    let mut stopping = app.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let events = event_stream(first, subscription, filter).take_until(stopped);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx buffers proxied responses unless told otherwise, which would hold events back.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// The query of `GET /admin/v1/events/stream`; other parameters (cache busters) are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    namespace: Option<String>,
}

/// Opens the subscription a stream reads, and the resync it starts with, if any.
async fn subscribe(
    bus: &Arc<dyn Bus>,
    last_event_id: Option<&HeaderValue>,
) -> (Option<Delivery>, Subscription) {
    let resume = match last_event_id.map(HeaderValue::to_str) {
        None | Some(Ok("")) => Err("start"),
        Some(Ok(id)) => id.parse::<Cursor>().map_err(|_| "bad_id"),
        Some(Err(_)) => Err("bad_id"),
    };
    match resume {
        Ok(after) => (None, Subscription::new(Arc::clone(bus), Some(after)).await),
        Err(reason) => {
            // Taken before subscribing: the resync's id is then at or before the first event
            // the subscription yields, so a client resuming from it misses nothing.
            let cursor = bus.cursor();
            let subscription = Subscription::new(Arc::clone(bus), None).await;
            (Some(Delivery::Resync { cursor, reason }), subscription)
        }
    }
}

/// The events of a stream: `first`, then the subscription's deliveries that pass `filter`.
fn event_stream(
    first: Option<Delivery>,
    subscription: Subscription,
    filter: Option<Vec<String>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let live = stream::unfold(subscription, |mut subscription| async move {
        let delivery = subscription.next().await?;
        Some((delivery, subscription))
    });
    stream::iter(first)
        .chain(live)
        .filter_map(move |delivery| ready(sse_event(&delivery, filter.as_deref()).map(Ok)))
}

/// The SSE event of a delivery; `None` for events the stream does not carry.
fn sse_event(delivery: &Delivery, filter: Option<&[String]>) -> Option<SseEvent> {
    let (name, cursor, data) = match delivery {
        Delivery::Event { cursor, envelope } => {
            let Event::App { namespace, key } = &envelope.event else {
                return None;
            };
            if filter.is_some_and(|f| !f.iter().any(|n| n == namespace)) {
                return None;
            }
            let data = InvalidateData {
                namespace: namespace.clone(),
                key: key.clone(),
                seq: envelope.seq,
                origin: envelope.origin.to_string(),
                at: unix_millis(envelope.at),
            };
            ("invalidate", cursor, serde_json::to_string(&data))
        }
        Delivery::Resync { cursor, reason } => (
            "resync",
            cursor,
            serde_json::to_string(&ResyncData { reason }),
        ),
    };
    // Strings and integers always serialize; an empty object would still be a valid event.
    let data = data.unwrap_or_else(|_| "{}".to_owned());
    let mut event = SseEvent::default().event(name);
    // An id that would not come back as a valid `Last-Event-ID` (or would break the framing)
    // is left out: the client then keeps its previous id, which repeats events, never loses
    // them.
    let id = cursor.to_string();
    if id.parse::<Cursor>().is_ok() {
        event = event.id(id);
    }
    Some(event.data(data))
}

/// The audit target of a stream: its filter, cut short.
fn filter_target(filter: Option<&[String]>) -> String {
    let Some(names) = filter else {
        return "all namespaces".to_owned();
    };
    let mut target = format!("namespaces {}", names.join(","));
    // Namespaces are ASCII, so any byte index is a character boundary.
    if target.len() > 200 {
        target.truncate(200);
        target.push_str("...");
    }
    target
}

fn is_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::ProviderId;
    use keygate_cluster::Envelope;

    fn field_of(body: &str) -> String {
        match parse_app_event(body.as_bytes()) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn cursor(seq: u64) -> Cursor {
        Cursor {
            epoch: "00ab".into(),
            seq,
            pos: seq.to_string().into(),
        }
    }

    fn delivery(seq: u64, event: Event) -> Delivery {
        Delivery::Event {
            cursor: cursor(seq),
            envelope: Arc::new(Envelope {
                seq,
                epoch: "00ab".into(),
                origin: "node-a#01".into(),
                at: std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                event,
            }),
        }
    }

    fn app(namespace: &str, key: &str) -> Event {
        Event::App {
            namespace: namespace.into(),
            key: key.into(),
        }
    }

    /// What a stream of these deliveries puts on the wire.
    async fn wire(deliveries: Vec<Delivery>, filter: Option<&[&str]>) -> String {
        let filter = filter.map(|f| f.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>());
        let events = stream::iter(deliveries)
            .filter_map(move |d| ready(sse_event(&d, filter.as_deref()).map(Ok::<_, Infallible>)));
        let body = Sse::new(events).into_response().into_body();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn event_bodies_parse() {
        assert_eq!(
            parse_app_event(br#"{"namespace":"users.v2:eu-1_a","key":"42 \u00e9/\u2603"}"#)
                .unwrap(),
            AppEventRequest {
                namespace: "users.v2:eu-1_a".into(),
                key: "42 \u{e9}/\u{2603}".into(),
            }
        );
        let longest = format!(
            r#"{{"namespace":"{}","key":"{}"}}"#,
            "n".repeat(MAX_FIELD_BYTES),
            "k".repeat(MAX_FIELD_BYTES)
        );
        assert!(parse_app_event(longest.as_bytes()).is_ok());
    }

    #[test]
    fn bad_event_bodies_name_the_field() {
        let cases = [
            ("", "body"),
            ("not json", "body"),
            ("[1]", "body"),
            (r#""users""#, "body"),
            ("{}", "namespace"),
            (r#"{"key":"k"}"#, "namespace"),
            (r#"{"namespace":"users"}"#, "key"),
            (r#"{"namespace":"","key":"k"}"#, "namespace"),
            (r#"{"namespace":"users","key":""}"#, "key"),
            (r#"{"namespace":7,"key":"k"}"#, "namespace"),
            (r#"{"namespace":"users","key":null}"#, "key"),
            (r#"{"namespace":"users","key":["k"]}"#, "key"),
            (r#"{"namespace":"users","key":"a","key":"b"}"#, "key"),
            (r#"{"namespace":"us ers","key":"k"}"#, "namespace"),
            (r#"{"namespace":"users,admins","key":"k"}"#, "namespace"),
            (r#"{"namespace":"us\u00e9rs","key":"k"}"#, "namespace"),
            (r#"{"namespace":"users","key":"a\nb"}"#, "key"),
            (r#"{"namespace":"users","key":"a\u0000b"}"#, "key"),
            (r#"{"namespace":"users","key":"a\u007fb"}"#, "key"),
            (r#"{"namespace":"users","key":"a\u0085b"}"#, "key"),
            (r#"{"namespace":"users","key":"k","colour":1}"#, "colour"),
            (r#"{"namespace":"users","key":"k","Key":"k"}"#, "Key"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body), field, "{body}");
        }
        let long_key = format!(
            r#"{{"namespace":"users","key":"{}"}}"#,
            "k".repeat(MAX_FIELD_BYTES + 1)
        );
        assert_eq!(field_of(&long_key), "key");
        let long_namespace = format!(
            r#"{{"namespace":"{}","key":"k"}}"#,
            "n".repeat(MAX_FIELD_BYTES + 1)
        );
        assert_eq!(field_of(&long_namespace), "namespace");
    }

    #[test]
    fn namespace_filters_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_namespace_filter(None).unwrap(), None);
        assert_eq!(
            parse_namespace_filter(Some("users,orders,users")).unwrap(),
            Some(vec!["users".to_owned(), "orders".to_owned()])
        );
        let many = (0..MAX_FILTER_NAMESPACES)
            .map(|i| format!("n{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_namespace_filter(Some(&many)).is_ok());
        let too_many = format!("{many},one-more");
        let long = "n".repeat(MAX_FIELD_BYTES + 1);
        for bad in ["", ",", "users,", "a,,b", "us ers", "a;b", &too_many, &long] {
            match parse_namespace_filter(Some(bad)) {
                Err(ApiError::BadRequest { field, .. }) => assert_eq!(field, "namespace"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn invalidations_and_resyncs_have_their_exact_wire_format() {
        let text = wire(
            vec![
                Delivery::Resync {
                    cursor: cursor(0),
                    reason: "start",
                },
                delivery(1, app("users", "42 \"quoted\"\nline")),
            ],
            None,
        )
        .await;
        assert_eq!(
            text,
            "event: resync\nid: 00ab:0:0\ndata: {\"reason\":\"start\"}\n\n\
             event: invalidate\nid: 00ab:1:1\ndata: {\"namespace\":\"users\",\
             \"key\":\"42 \\\"quoted\\\"\\nline\",\"seq\":1,\"origin\":\"node-a#01\",\
             \"at\":1700000000123}\n\n"
        );
    }

    #[tokio::test]
    async fn the_stream_carries_only_app_events_of_the_filter_and_every_resync() {
        let id = ProviderId::new("t", "p");
        let deliveries = vec![
            delivery(
                1,
                Event::Flush {
                    provider: id.clone(),
                    flush: keygate::FlushId::random(),
                },
            ),
            delivery(2, app("users", "1")),
            delivery(3, Event::Refresh(id)),
            delivery(4, app("orders", "2")),
            Delivery::Resync {
                cursor: cursor(4),
                reason: "lagged",
            },
            delivery(5, app("carts", "3")),
        ];
        let ids = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix("id: "))
                .map(str::to_owned)
                .collect()
        };
        let all = wire(deliveries.clone(), None).await;
        assert_eq!(ids(&all), ["00ab:2:2", "00ab:4:4", "00ab:4:4", "00ab:5:5"]);
        assert!(!all.contains("flush") && !all.contains("refresh"), "{all}");
        let some = wire(deliveries, Some(&["users", "carts"])).await;
        assert_eq!(ids(&some), ["00ab:2:2", "00ab:4:4", "00ab:5:5"]);
        assert!(
            some.contains("event: resync") && !some.contains("orders"),
            "{some}"
        );
    }

    #[tokio::test]
    async fn an_id_that_would_not_parse_back_is_left_out() {
        let odd = Delivery::Resync {
            cursor: Cursor {
                epoch: "new\nline".into(),
                seq: 1,
                pos: "1".into(),
            },
            reason: "epoch",
        };
        assert_eq!(
            wire(vec![odd], None).await,
            "event: resync\ndata: {\"reason\":\"epoch\"}\n\n"
        );
    }

    #[test]
    fn long_filters_are_cut_short_in_the_audit_log() {
        assert_eq!(filter_target(None), "all namespaces");
        assert_eq!(
            filter_target(Some(&["a".to_owned(), "b".to_owned()])),
            "namespaces a,b"
        );
        let long = vec!["n".repeat(MAX_FIELD_BYTES)];
        assert_eq!(filter_target(Some(&long)).len(), 203);
    }
}
