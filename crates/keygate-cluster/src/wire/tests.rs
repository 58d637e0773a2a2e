use keygate::{FlushId, ProviderId, PublishedDocument, PublishedKeySet, Revocation};

use super::payload::from_millis;
use super::*;

fn keys() -> MacKeys {
    MacKeys::new(vec![
        MacKey::new("k2", b"the newer secret of at least thirty-two bytes"),
        MacKey::new("k1", b"the older secret of at least thirty-two bytes!"),
    ])
    .unwrap()
}

fn every_event() -> Vec<Event> {
    let id = ProviderId::new("acme", "main");
    vec![
        Event::Flush {
            provider: id.clone(),
            flush: FlushId::new("f-0123").unwrap(),
        },
        Event::Refresh(id.clone()),
        Event::Revoke(Revocation::Jti {
            jti: "j-1".into(),
            exp: 1_900_000_000,
        }),
        Event::Revoke(Revocation::Subject {
            tenant: "acme".into(),
            sub: "alice".into(),
            before: 1_800_000_000,
            until: 1_800_086_400,
        }),
        Event::Revoke(Revocation::Kid {
            tenant: "acme".into(),
            provider: "main".into(),
            kid: "old".into(),
            until: None,
        }),
        Event::Revoke(Revocation::Token {
            sha256: keygate::token_sha256("an opaque token"),
            exp: 1_900_000_000,
        }),
        Event::KeySet {
            provider: id,
            set: PublishedKeySet::new(
                r#"{"keys":[]}"#,
                from_millis(1_800_000_000_123),
                from_millis(1_800_000_300_000),
                Some("\"v1\"".into()),
            ),
        },
        Event::KeySet {
            provider: ProviderId::new("acme", "other"),
            set: PublishedKeySet::new(
                r#"{"keys":[]}"#,
                from_millis(1_800_000_000_123),
                from_millis(1_800_000_300_000),
                None,
            )
            .after_flush(FlushId::new("f-0123"))
            .withdrawing(vec!["old-1".into(), "old-2".into()]),
        },
        Event::KeySet {
            provider: ProviderId::new("acme", "split"),
            set: PublishedKeySet::from_documents(vec![
                PublishedDocument::new(
                    "https://a.example/jwks",
                    r#"{"keys":[]}"#,
                    from_millis(1_800_000_000_123),
                    from_millis(1_800_000_300_000),
                    Some("\"a1\"".into()),
                ),
                PublishedDocument::new(
                    "https://b.example/jwks",
                    r#"{"keys":[{}]}"#,
                    from_millis(1_800_000_000_456),
                    from_millis(1_800_003_600_000),
                    None,
                ),
            ])
            .after_flush(FlushId::new("f-1")),
        },
        Event::App {
            namespace: "users".into(),
            key: "42".into(),
        },
    ]
}

#[test]
fn every_event_round_trips_through_fields_and_json() {
    let keys = keys();
    let at = from_millis(1_800_000_000_000);
    for (i, event) in every_event().into_iter().enumerate() {
        let seq = i as u64 + 1;
        let entry = encode(&keys, &event, seq, "ep", "node-a", at).unwrap();
        assert_eq!(entry.key, "k2", "the first key signs");
        let back = SignedEntry::from_fields(entry.fields()).unwrap();
        let json = SignedEntry::from_json(&entry.to_json()).unwrap();
        for e in [&entry, &back, &json] {
            let env = decode(&keys, e).unwrap();
            assert_eq!(env.event, event);
            assert_eq!((env.seq, &*env.epoch, &*env.origin), (seq, "ep", "node-a"));
            assert_eq!(env.at, at);
        }
    }
}

#[test]
fn an_older_key_still_verifies_and_an_unknown_one_does_not() {
    let event = Event::Flush {
        provider: ProviderId::new("t", "p"),
        flush: FlushId::random(),
    };
    let old = MacKeys::new(vec![MacKey::new(
        "k1",
        b"the older secret of at least thirty-two bytes!",
    )])
    .unwrap();
    let entry = encode(&old, &event, 1, "ep", "n", SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(decode(&keys(), &entry).unwrap().event, event);
    let stranger = MacKeys::new(vec![MacKey::new("k9", b"x".repeat(32).as_slice())]).unwrap();
    assert_eq!(decode(&stranger, &entry), Err(EntryError::BadMac));
}

#[test]
fn any_tampering_breaks_the_mac() {
    let keys = keys();
    let entry = encode(
        &keys,
        &every_event()[2],
        7,
        "ep",
        "node-a",
        from_millis(5_000),
    )
    .unwrap();
    let tamper: [fn(&mut SignedEntry); 8] = [
        |e| e.kind = "flush".into(),
        |e| e.seq = "8".into(),
        |e| e.epoch = "other".into(),
        |e| e.origin = "node-b".into(),
        |e| e.at = "5001".into(),
        |e| e.payload = e.payload.replace("j-1", "j-2"),
        |e| e.mac = "0".repeat(64),
        |e| e.mac.clear(),
    ];
    for (i, t) in tamper.iter().enumerate() {
        let mut e = entry.clone();
        t(&mut e);
        assert_eq!(decode(&keys, &e), Err(EntryError::BadMac), "tampering #{i}");
    }
    // Moving bytes between fields changes the length prefixes: still caught.
    let mut e = entry;
    e.epoch = "epn".into();
    e.origin = "ode-a".into();
    assert_eq!(decode(&keys, &e), Err(EntryError::BadMac));
}

#[test]
fn malformed_entries_are_typed_errors() {
    let keys = keys();
    assert_eq!(
        SignedEntry::from_fields([("v", "1")]),
        Err(EntryError::Malformed("type"))
    );
    assert_eq!(
        SignedEntry::from_fields([("v", "1"), ("v", "1")]),
        Err(EntryError::Malformed("repeated field"))
    );
    assert!(SignedEntry::from_json("{").is_err());
    // The first flush of `every_event`, changed by `change` and signed again when `resign`.
    let changed = |change: fn(&mut SignedEntry), resign: bool| {
        let mut e = encode(
            &keys,
            &every_event()[0],
            1,
            "ep",
            "n",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        change(&mut e);
        if resign {
            e.mac = hex(hmac::sign(&keys.signer().key, &mac_input(&e)).as_ref());
        }
        e
    };
    let e = changed(|e| e.v = "2".into(), false);
    assert_eq!(decode(&keys, &e), Err(EntryError::Version));
    // A well-signed entry of a type from the future is told apart from a forgery.
    let e = changed(|e| e.kind = "teleport".into(), true);
    assert_eq!(decode(&keys, &e), Err(EntryError::UnknownType));
    // Bad JSON under a good MAC.
    let e = changed(|e| e.payload = "[".into(), true);
    assert_eq!(decode(&keys, &e), Err(EntryError::Malformed("payload")));
}

#[test]
fn hex_round_trips_and_rejects_junk() {
    let bytes: Vec<u8> = (0u8..32).map(|i| i * 8).collect();
    assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    assert!(unhex(&"g".repeat(64)).is_none());
    assert!(
        unhex(&"A".repeat(64)).is_none(),
        "uppercase is not what we write"
    );
    assert!(unhex("00").is_none());
}

#[test]
fn revocations_keep_their_wire_bytes() {
    // Every replica must sign the same bytes for the same revocation, across versions.
    let cases = [
        (
            Revocation::Jti {
                jti: "j-1".into(),
                exp: 5,
            },
            r#"{"kind":"jti","jti":"j-1","exp":5}"#,
        ),
        (
            Revocation::Subject {
                tenant: "t".into(),
                sub: "s".into(),
                before: 1,
                until: 2,
            },
            r#"{"kind":"subject","tenant":"t","sub":"s","before":1,"until":2}"#,
        ),
        (
            Revocation::Kid {
                tenant: "t".into(),
                provider: "p".into(),
                kid: "k".into(),
                until: None,
            },
            r#"{"kind":"kid","tenant":"t","provider":"p","kid":"k","until":null}"#,
        ),
        (
            Revocation::Token {
                sha256: keygate::token_sha256("abc"),
                exp: 7,
            },
            r#"{"kind":"token","sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","exp":7}"#,
        ),
    ];
    for (revocation, json) in cases {
        assert_eq!(revocation_json(&revocation).unwrap(), json);
        assert_eq!(parse_revocation_json(json).unwrap(), revocation);
    }
    assert_eq!(
        parse_revocation_json(r#"{"kind":"teleport","jti":"j","exp":1}"#),
        Err(EntryError::Malformed("payload"))
    );
}

#[test]
fn a_token_revocation_travels_signed_and_only_with_a_canonical_digest() {
    let keys = keys();
    let digest = keygate::token_sha256("opaque-token-1");
    let event = Event::Revoke(Revocation::Token {
        sha256: digest.clone(),
        exp: 1_900_000_000,
    });
    let entry = encode(&keys, &event, 3, "e1", "node-a", from_millis(1_000)).unwrap();
    assert_eq!(entry.kind, "revoke");
    assert!(!entry.payload.contains("opaque-token-1"));
    assert_eq!(decode(&keys, &entry).unwrap().event, event);
    assert_eq!(
        revocation_expiry(&Revocation::Token {
            sha256: digest.clone(),
            exp: 42
        }),
        Ok(Some(42))
    );

    // Capitals, short or non-hex digests are refused, never normalised into another token's.
    for bad in [
        digest.to_ascii_uppercase(),
        digest[..63].to_owned(),
        format!("{}g", &digest[..63]),
        String::new(),
    ] {
        let line = format!(r#"{{"kind":"token","sha256":"{bad}","exp":1}}"#);
        assert_eq!(
            parse_revocation_json(&line),
            Err(EntryError::Malformed("token sha256")),
            "{line}"
        );
    }
    assert_eq!(
        parse_revocation_json(r#"{"kind":"token","exp":1}"#),
        Err(EntryError::Malformed("payload"))
    );
}

/// The revocation payload as builds before the `token` kind read it, kept verbatim: what an
/// older replica in a mixed fleet does with a token revocation.
mod before_token {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    #[allow(dead_code)] // Only parsed, to show what an older reader accepts.
    pub(super) enum RevokePayload {
        Jti {
            jti: String,
            exp: i64,
        },
        Subject {
            tenant: String,
            sub: String,
            before: i64,
            until: i64,
        },
        Kid {
            tenant: String,
            provider: String,
            kid: String,
            until: Option<i64>,
        },
    }
}

#[test]
fn an_older_reader_refuses_a_token_revocation_instead_of_misapplying_it() {
    let keys = keys();
    let event = Event::Revoke(Revocation::Token {
        sha256: keygate::token_sha256("opaque-token-2"),
        exp: 1_900_000_000,
    });
    let entry = encode(&keys, &event, 4, "e1", "node-a", from_millis(1_000)).unwrap();
    // The entry stays a version-1 `revoke`: an older reader checks its MAC, then fails to parse
    // the payload (an unknown kind), which its `parse_event` reports as a malformed payload:
    // dropped and counted, never applied.
    assert_eq!(entry.v, VERSION);
    let old: Result<before_token::RevokePayload, _> = serde_json::from_str(&entry.payload);
    assert!(old.is_err(), "{old:?}");
    // The kinds both know still read alike.
    let jti = encode(
        &keys,
        &Event::Revoke(Revocation::Jti {
            jti: "j".into(),
            exp: 9,
        }),
        5,
        "e1",
        "node-a",
        from_millis(1_000),
    )
    .unwrap();
    let old: before_token::RevokePayload = serde_json::from_str(&jti.payload).unwrap();
    assert!(matches!(
        old,
        before_token::RevokePayload::Jti { exp: 9, .. }
    ));
}
