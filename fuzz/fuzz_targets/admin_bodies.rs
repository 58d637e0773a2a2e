//! The admin API's request parsers, all on the same bytes:
//!
//! - `admin::parse_revocation`, the `POST /admin/v1/revocations` body;
//! - `events::parse_app_event`, the `POST /admin/v1/events` body;
//! - `events::parse_namespace_filter`, the stream's `?namespace=` (the bytes as text);
//! - `bus::Cursor`'s `FromStr`, the stream's `Last-Event-ID` (the bytes as text);
//! - `bus::wire::parse_revocation_json`, a line of the single node's revocation state file.
//!
//! Checks besides "no panic": accepted values respect the documented limits; a parsed
//! state-file revocation survives `revocation_json` and back unchanged; a parsed cursor prints
//! back as the same text.

#![no_main]

use keygate_server::admin::{RevocationRequest, parse_revocation};
use keygate_server::bus::Cursor;
use keygate_server::bus::wire::{parse_revocation_json, revocation_json};
use keygate_server::events::{MAX_FILTER_NAMESPACES, parse_app_event, parse_namespace_filter};
use libfuzzer_sys::fuzz_target;

/// The longest `jti`, `sub`, `kid`, namespace or key accepted.
const MAX_FIELD_BYTES: usize = 1024;
/// The latest time a revocation may name: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

fn field(s: &str) {
    assert!(
        !s.is_empty() && s.len() <= MAX_FIELD_BYTES,
        "accepted field {s:?}"
    );
}

fn seconds(t: i64) {
    assert!((0..=MAX_SECONDS).contains(&t), "accepted time {t}");
}

fuzz_target!(|data: &[u8]| {
    match parse_revocation(data) {
        Ok(RevocationRequest::Jti(r)) => {
            field(&r.jti);
            seconds(r.exp);
        }
        Ok(RevocationRequest::Subject(r)) => {
            field(&r.tenant);
            field(&r.sub);
            seconds(r.before);
            r.until.into_iter().for_each(seconds);
        }
        Ok(RevocationRequest::Kid(r)) => {
            field(&r.tenant);
            field(&r.provider);
            field(&r.kid);
            r.until.into_iter().for_each(seconds);
        }
        Err(e) => drop(format!("{e:?}")),
    }

    if let Ok(event) = parse_app_event(data) {
        field(&event.namespace);
        assert!(
            event
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)),
            "accepted namespace {:?}",
            event.namespace
        );
        field(&event.key);
        assert!(
            !event.key.chars().any(char::is_control),
            "accepted key {:?}",
            event.key
        );
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(names)) = parse_namespace_filter(Some(text)) {
        assert!(!names.is_empty() && names.len() <= MAX_FILTER_NAMESPACES);
        names.iter().for_each(|n| field(n));
    }
    if let Ok(cursor) = text.parse::<Cursor>() {
        assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor.clone()));
    }
    if let Ok(revocation) = parse_revocation_json(text) {
        let line = revocation_json(&revocation).expect("a parsed revocation writes back");
        assert_eq!(
            parse_revocation_json(&line),
            Ok(revocation),
            "a state-file line does not survive a round trip"
        );
    }
});
