//! Application events end to end, in process: `POST /admin/v1/events` and the server-sent
//! events of `GET /admin/v1/events/stream` on the default local bus. Every read of a stream is
//! bounded by a timeout, so a missing event fails the test instead of hanging it.

use std::time::{Duration, UNIX_EPOCH};

use keygate::{Clock as _, SystemClock};
use tokio::time::Instant;

use keygate::{FlushId, ProviderId, Revocation};
use keygate_cluster::Event;
use keygate_test_support::{StubIdp, TestKey, jwks};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::get_text;
use crate::support::{ADMIN_SECRET, APP_SECRET, READER_SECRET, TestServer, config_for, now};

/// How long a test waits for the next event of a stream.
const WAIT: Duration = Duration::from_secs(10);

/// Closes the stream, then stops the server (an open stream would hold its drain open).
async fn close_then_stop(stream: Subscriber, server: TestServer) {
    drop(stream);
    server.stop().await;
}

/// Checks that nothing reached the bus, then stops the server.
async fn stop_having_published_nothing(server: TestServer) {
    assert_eq!(server.node.bus().status().last_seq, 0);
    server.stop().await;
}

async fn start() -> (StubIdp, TestServer) {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256("events-a")]));
    let server = TestServer::start(&config_for(&idp, "")).await;
    (idp, server)
}

/// One event of a stream; keep-alive comments are skipped.
#[derive(Debug)]
struct Frame {
    event: String,
    id: Option<String>,
    data: Value,
}

/// An open stream, read frame by frame.
struct Subscriber {
    response: reqwest::Response,
    buffer: String,
}

impl Subscriber {
    async fn open(server: &TestServer, query: &str, last_event_id: Option<&str>) -> Subscriber {
        let mut request = server
            .client
            .get(format!("{}/admin/v1/events/stream{query}", server.admin))
            .bearer_auth(APP_SECRET)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("the stream's headers in time")
            .unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), "text/event-stream");
        assert_eq!(header("cache-control"), "no-cache");
        Subscriber {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, failing the test if none comes within [`WAIT`].
    async fn next(&mut self) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse_frame(&block) {
                    return frame;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {WAIT:?}; have {:?}", self.buffer))
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event, which must be an `invalidate`; returns its id and data.
    async fn invalidate(&mut self) -> (String, Value) {
        let frame = self.next().await;
        assert_eq!(frame.event, "invalidate", "{frame:?}");
        (frame.id.expect("an id"), frame.data)
    }

    /// Checks that the next event is an `invalidate` with this id and key.
    async fn expect_invalidate(&mut self, id: &str, key: &str) {
        let (got_id, data) = self.invalidate().await;
        assert_eq!((got_id.as_str(), &data["key"]), (id, &json!(key)));
    }

    /// The next event, which must be a `resync`; returns its id and reason.
    async fn resync(&mut self) -> (String, String) {
        let frame = self.next().await;
        assert_eq!(frame.event, "resync", "{frame:?}");
        let reason = frame.data["reason"].as_str().unwrap().to_owned();
        (frame.id.expect("an id"), reason)
    }
}

/// One `\n\n`-terminated block; `None` for a comment-only block (keep-alive).
fn parse_frame(block: &str) -> Option<Frame> {
    let (mut event, mut id, mut data) = (None, None, None);
    for line in block.lines().filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = line.split_once(": ").unwrap_or((line, ""));
        match name {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => {
                assert!(data.is_none(), "one data line per event: {block:?}");
                data = Some(serde_json::from_str(value).unwrap());
            }
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    let data = data?;
    Some(Frame {
        event: event.expect("every event is named"),
        id,
        data,
    })
}

/// `POST /admin/v1/events` with `key`; returns the status and the JSON body.
async fn post_raw(server: &TestServer, key: Option<&str>, body: &str) -> (StatusCode, Value) {
    server
        .admin("POST", "/admin/v1/events", key, Some(body))
        .await
}

/// Publishes an event that must succeed; returns `seq` and `id`.
async fn publish(server: &TestServer, namespace: &str, key: &str) -> (u64, String) {
    let (status, body) = post_raw(
        server,
        Some(APP_SECRET),
        &json!({"namespace": namespace, "key": key}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let members: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(members.len(), 2, "{body}");
    (
        body["seq"].as_u64().unwrap(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

fn unix_millis() -> u64 {
    u64::try_from(
        SystemClock
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_event_reaches_the_stream_with_its_id() {
    let (_idp, server) = start().await;
    let mut stream = Subscriber::open(&server, "", None).await;
    // A new stream starts with a resync: it cannot know what the client cached before.
    let (start_id, reason) = stream.resync().await;
    assert_eq!(reason, "start");

    let before = unix_millis();
    let (seq, id) = publish(&server, "users", "42 caf\u{e9}").await;
    let after = unix_millis();
    let (got_id, data) = stream.invalidate().await;
    assert_eq!(got_id, id);
    assert_ne!(got_id, start_id);
    assert_eq!(data["namespace"], "users");
    assert_eq!(data["key"], "42 caf\u{e9}");
    assert_eq!(data["seq"], seq);
    assert_eq!(data["origin"], &**server.node.node_id());
    let at = data["at"].as_u64().unwrap();
    assert!(
        (before..=after).contains(&at),
        "{at} not in {before}..={after}"
    );
    let mut members: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["at", "key", "namespace", "origin", "seq"]);

    // Ids are `<epoch>:<seq>:<pos>`, and sequence numbers follow each other.
    let (seq2, id2) = publish(&server, "users", "43").await;
    assert_eq!(seq2, seq + 1);
    let epoch = id.split(':').next().unwrap();
    assert_eq!(id.split(':').nth(1), Some(seq.to_string().as_str()));
    assert!(id2.starts_with(&format!("{epoch}:{seq2}:")), "{id2}");
    stream.expect_invalidate(&id2, "43").await;
    close_then_stop(stream, server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn last_event_id_resumes_exactly_after_it() {
    let (_idp, server) = start().await;
    let (_, a) = publish(&server, "users", "a").await;
    let (_, b) = publish(&server, "users", "b").await;
    server
        .node
        .bus()
        .publish(Event::Flush {
            provider: ProviderId::new("acme", "main"),
            flush: FlushId::random(),
        })
        .await
        .unwrap();
    let (_, c) = publish(&server, "users", "c").await;

    let mut stream = Subscriber::open(&server, "", Some(&a)).await;
    // No resync: the events after `a` are all still there.
    stream.expect_invalidate(&b, "b").await;
    stream.expect_invalidate(&c, "c").await;
    // Then live events, without a duplicate in between.
    let (_, d) = publish(&server, "users", "d").await;
    stream.expect_invalidate(&d, "d").await;
    drop(stream);

    // Resuming from the newest id gets only what comes next.
    let mut stream = Subscriber::open(&server, "", Some(&d)).await;
    let (_, e) = publish(&server, "users", "e").await;
    let (id, _) = stream.invalidate().await;
    assert_eq!(id, e);
    close_then_stop(stream, server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_of_another_epoch_or_no_id_at_all_gets_a_resync_first() {
    let (_idp, server) = start().await;
    let (seq, id) = publish(&server, "users", "a").await;
    let epoch = id.split(':').next().unwrap().to_owned();
    let other_epoch = format!(
        "{}:{seq}:{seq}",
        if epoch == "ffff" { "eeee" } else { "ffff" }
    );
    let ahead = format!("{epoch}:{}:{}", seq + 100, seq + 100);
    for (last_event_id, reason) in [
        (other_epoch.as_str(), "trimmed"),
        (ahead.as_str(), "trimmed"),
        ("garbage", "bad_id"),
        ("1:2", "bad_id"),
        ("e:1:\u{e9}", "bad_id"),
    ] {
        let mut stream = Subscriber::open(&server, "", Some(last_event_id)).await;
        let (resync_id, got) = stream.resync().await;
        assert_eq!(got, reason, "{last_event_id}");
        assert!(resync_id.starts_with(&format!("{epoch}:")), "{resync_id}");
        // The stream goes on from there.
        let (_, next) = publish(&server, "users", last_event_id).await;
        let (got_id, data) = stream.invalidate().await;
        assert_eq!(got_id, next);
        assert_eq!(data["key"], last_event_id);
        // The resync's id resumes without a loss.
        let mut again = Subscriber::open(&server, "", Some(&resync_id)).await;
        let (got_id, _) = again.invalidate().await;
        assert_eq!(got_id, next);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_filter_lets_only_its_namespaces_through() {
    let (_idp, server) = start().await;
    let mut stream = Subscriber::open(&server, "?namespace=users,carts&_=1", None).await;
    assert_eq!(stream.resync().await.1, "start");
    publish(&server, "orders", "1").await;
    let (_, users) = publish(&server, "users", "2").await;
    publish(&server, "users.archive", "3").await;
    let (_, carts) = publish(&server, "carts", "4").await;
    let (id, data) = stream.invalidate().await;
    assert_eq!((id, &data["namespace"]), (users, &json!("users")));
    let (id, data) = stream.invalidate().await;
    assert_eq!((id, &data["namespace"]), (carts, &json!("carts")));

    for query in [
        "?namespace=",
        "?namespace=a,,b",
        "?namespace=us%20ers",
        "?namespace=a&namespace=b",
    ] {
        let (status, body) = server
            .admin(
                "GET",
                &format!("/admin/v1/events/stream{query}"),
                Some(APP_SECRET),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["field"], "namespace", "{query}");
    }
    close_then_stop(stream, server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keygate_s_own_invalidations_never_appear_in_the_stream() {
    let (_idp, server) = start().await;
    let mut stream = Subscriber::open(&server, "", None).await;
    assert_eq!(stream.resync().await.1, "start");
    let id = ProviderId::new("acme", "main");
    // Through the admin API, and straight on the bus.
    let (status, body) = server
        .post_as_ops("/admin/v1/providers/acme/main/flush")
        .await;
    assert_eq!(status, 200, "{body}");
    for event in [
        Event::Flush {
            provider: id.clone(),
            flush: FlushId::random(),
        },
        Event::Refresh(id),
        Event::Revoke(Revocation::Jti {
            jti: "j".into(),
            exp: now() + 60,
        }),
    ] {
        server.node.bus().publish(event).await.unwrap();
    }
    let (sentinel, _) = publish(&server, "users", "sentinel").await;
    let (_, data) = stream.invalidate().await;
    assert_eq!(data["key"], "sentinel");
    assert_eq!(data["seq"], sentinel, "every earlier event was skipped");
    close_then_stop(stream, server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_endpoints_need_a_key_with_their_scope() {
    let (_idp, server) = start().await;
    let body = r#"{"namespace":"users","key":"1"}"#;
    for key in [None, Some("kg_not_a_key")] {
        let (status, resp) = post_raw(&server, key, body).await;
        assert_eq!(status, 401, "{resp}");
        assert_eq!(resp["error"], "unauthorized");
        let (status, resp) = server
            .admin("GET", "/admin/v1/events/stream", key, None)
            .await;
        assert_eq!(status, 401, "{resp}");
    }
    // Neither the operator's key nor the dashboard's carries the events scopes.
    for key in [ADMIN_SECRET, READER_SECRET] {
        let (status, resp) = post_raw(&server, Some(key), body).await;
        assert_eq!(status, 403, "{resp}");
        assert_eq!(resp["error"], "forbidden");
        assert!(resp["message"].as_str().unwrap().contains("events:publish"));
        let (status, resp) = server
            .admin("GET", "/admin/v1/events/stream", Some(key), None)
            .await;
        assert_eq!(status, 403, "{resp}");
        assert!(resp["message"].as_str().unwrap().contains("events:read"));
    }
    // And the application's key may do nothing else.
    let (status, _) = server
        .admin("GET", "/admin/v1/status", Some(APP_SECRET), None)
        .await;
    assert_eq!(status, 403);
    // Nothing was published by the refused calls.
    stop_having_published_nothing(server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_400_naming_the_field() {
    let (_idp, server) = start().await;
    let long = "k".repeat(1025);
    for (body, field) in [
        (json!({"key": "1"}).to_string(), "namespace"),
        (json!({"namespace": "users", "key": ""}).to_string(), "key"),
        (json!({"namespace": "users"}).to_string(), "key"),
        (
            json!({"namespace": "users", "key": "1", "ttl": 5}).to_string(),
            "ttl",
        ),
        (
            json!({"namespace": "us ers", "key": "1"}).to_string(),
            "namespace",
        ),
        (
            json!({"namespace": "users", "key": "a\nb"}).to_string(),
            "key",
        ),
        (json!({"namespace": "users", "key": 1}).to_string(), "key"),
        (
            json!({"namespace": "users", "key": long}).to_string(),
            "key",
        ),
        (
            json!({"namespace": long, "key": "1"}).to_string(),
            "namespace",
        ),
        ("{not json".to_owned(), "body"),
        (String::new(), "body"),
        (json!(["users", "1"]).to_string(), "body"),
    ] {
        let (status, resp) = post_raw(&server, Some(APP_SECRET), &body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert_eq!(resp["error"], "bad_request");
        assert_eq!(resp["field"], field, "{body}");
    }
    // A body over the admin API's limit is refused before it is buffered, as for revocations.
    let huge = json!({"namespace": "users", "key": "k".repeat(100_000)}).to_string();
    let (status, _) = post_raw(&server, Some(APP_SECRET), &huge).await;
    assert_eq!(status, 413);
    stop_having_published_nothing(server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_both_endpoints() {
    let (_idp, server) = start().await;
    let doc = get_text(
        &server.client,
        format!("{}/admin/v1/openapi.json", server.admin),
    )
    .await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let post = &doc["paths"]["/admin/v1/events"]["post"];
    assert!(post["requestBody"].is_object(), "{post}");
    assert!(post["responses"]["200"].is_object());
    let get = &doc["paths"]["/admin/v1/events/stream"]["get"];
    assert!(
        get["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "{get}"
    );
    for schema in [
        "AppEventRequest",
        "PublishedEvent",
        "InvalidateData",
        "ResyncData",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    server.stop().await;
}

/// An open stream ends when the server shuts down, so it does not hold the drain open until
/// `shutdown_grace` runs out.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_stream_ends_at_shutdown_without_holding_up_the_drain() {
    let idp = StubIdp::start().await;
    idp.set_jwks(jwks(&[TestKey::shared_p256("events-a")]));
    let toml = config_for(&idp, "").replace("shutdown_grace = \"5s\"", "shutdown_grace = \"30s\"");
    let server = TestServer::start(&toml).await;
    let mut stream = Subscriber::open(&server, "", None).await;
    assert_eq!(stream.resync().await.1, "start");
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stopped long before its 30 s grace");
    let end = tokio::time::timeout(WAIT, stream.response.chunk())
        .await
        .expect("the stream ended");
    assert!(matches!(end, Ok(None)), "{end:?}");
}
