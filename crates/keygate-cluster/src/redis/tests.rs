use ::redis::streams::StreamReadReply;
use ::redis::{FromRedisValue, Value};

use super::*;
use crate::wire::{MacKey, MacKeys};

#[test]
fn replies_of_both_protocols_parse() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let entry = Value::Array(vec![
        bulk("1-0"),
        Value::Array(vec![bulk("v"), bulk("1"), bulk("type"), bulk("app")]),
    ]);
    let resp2 = Value::Array(vec![Value::Array(vec![
        bulk("{k}:log"),
        Value::Array(vec![entry.clone()]),
    ])]);
    let resp3 = Value::Map(vec![(bulk("{k}:log"), Value::Array(vec![entry]))]);
    for reply in [resp2, resp3] {
        let reply = StreamReadReply::from_redis_value(reply).unwrap();
        let entries: Vec<&StreamId> = reply.keys.iter().flat_map(|k| &k.ids).collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "1-0");
        let mut fields: Vec<(&str, &str)> = entry_fields(entries[0]).collect();
        fields.sort_unstable();
        assert_eq!(fields, vec![("type", "app"), ("v", "1")]);
    }
    assert!(
        Option::<StreamReadReply>::from_redis_value(Value::Nil)
            .unwrap()
            .is_none()
    );
}

#[test]
fn debug_output_never_shows_the_redis_password() {
    let keys = MacKeys::new(vec![MacKey::new("k1", &[7; 32])]).unwrap();
    let settings = RedisSettings::new(
        "redis://user:hunter2-secret@10.0.0.5:6379/0".into(),
        "kg".into(),
        keys,
    );
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("REDACTED") && shown.contains("10.0.0.5"),
        "{shown}"
    );
    assert_eq!(redacted_url("not a url"), "<unparsable URL>");
}

#[test]
fn every_key_shares_one_hash_tag() {
    let n = Names::new("kg");
    for k in [
        &n.epoch,
        &n.seq,
        &n.log,
        &n.revocations,
        &n.keysets,
        &n.flushes,
        &n.flush_ids,
        &n.lease,
        &n.reseeded,
    ] {
        assert!(k.starts_with("{kg}:"), "{k}");
    }
}
