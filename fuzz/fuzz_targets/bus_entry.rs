//! Signed bus entries (`keygate_server::bus::wire`) against a fixed MAC key ring (see
//! `keygate_fuzz::bus`). The first byte picks the mode; the rest is:
//!
//! - mode 0, **stored**: an entry as shared state holds it (`SignedEntry::from_json`), then
//!   `wire::decode`. Only seeds carry a valid MAC, so mutations mostly stop at the MAC check.
//! - mode 1, **stream**: stream fields, one `name=value` per line (`SignedEntry::from_fields`),
//!   then `wire::decode`.
//! - mode 2, **signed**: the lines `v`, `type`, `seq`, `epoch`, `origin`, `at`, then the payload
//!   (the rest, verbatim). The harness signs them with a key of the ring, so `wire::decode`
//!   gets past the MAC and the fuzzer works on the payload parsers.
//!
//! Checks besides "no panic": an entry signed by a key of the ring is never refused for its
//! MAC; flipping a bit of a good MAC gets it refused; an entry `decode` accepts, encoded again
//! with `wire::encode`, decodes to the same envelope; the harness's signing matches
//! `wire::encode`'s (checked once, so a change of the MAC format cannot blind the fuzzer).
//!
//! `KEYGATE_FUZZ_DEBUG=1` prints each entry and what `decode` made of it.

#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use keygate::{FlushId, ProviderId};
use keygate_fuzz::bus::{ring, sign};
use keygate_server::bus::Event;
use keygate_server::bus::wire::{self, EntryError, MacKeys, SignedEntry};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static MacKeys {
    static KEYS: OnceLock<MacKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = ring();
        // The harness signs as `wire::encode` does, or mode 2 would test nothing.
        let event = Event::Flush {
            provider: ProviderId::new("acme", "main"),
            flush: FlushId::new("flush-1").expect("a valid flush id"),
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_123);
        let encoded = wire::encode(&keys, &event, 7, "epoch-1", "node-a", at).expect("a known event");
        let mut resigned = encoded.clone();
        sign(&mut resigned, 0);
        assert_eq!(
            resigned, encoded,
            "keygate_fuzz::bus::sign no longer matches wire::encode"
        );
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            if let Ok(entry) = SignedEntry::from_json(&text) {
                check(keys, &entry);
            }
        }
        1 => {
            let pairs = text
                .split('\n')
                .map(|line| line.split_once('=').unwrap_or((line, "")));
            if let Ok(entry) = SignedEntry::from_fields(pairs) {
                assert_eq!(SignedEntry::from_fields(entry.fields()), Ok(entry.clone()));
                check(keys, &entry);
            }
        }
        _ => {
            let mut parts = text.splitn(7, '\n');
            let mut next = || parts.next().unwrap_or_default().to_owned();
            let mut entry = SignedEntry {
                v: next(),
                kind: next(),
                seq: next(),
                epoch: next(),
                origin: next(),
                at: next(),
                payload: next(),
                key: String::new(),
                mac: String::new(),
            };
            sign(&mut entry, usize::from(mode / 3));
            let result = check(keys, &entry);
            assert_ne!(result, Some(EntryError::BadMac), "a good MAC was refused");
            // The same entry with one bit of its MAC flipped must be refused.
            let mut tampered = entry.clone();
            let flipped = if tampered.mac.starts_with('0') {
                "1"
            } else {
                "0"
            };
            tampered.mac.replace_range(..1, flipped);
            if wire::decode(keys, &entry).is_ok() {
                assert_eq!(
                    wire::decode(keys, &tampered).unwrap_err(),
                    EntryError::BadMac,
                    "a tampered MAC was accepted"
                );
            }
        }
    }
});

/// Decodes `entry`; when accepted, checks that it survives `encode` and `decode` unchanged.
/// Returns the refusal, if any.
fn check(keys: &MacKeys, entry: &SignedEntry) -> Option<EntryError> {
    let _ = SignedEntry::from_json(&entry.to_json());
    let decoded = wire::decode(keys, entry);
    if keygate_fuzz::debug() {
        eprintln!("entry {entry:?}: {decoded:?}");
    }
    match decoded {
        Ok(envelope) => {
            let again = wire::encode(
                keys,
                &envelope.event,
                envelope.seq,
                &envelope.epoch,
                &envelope.origin,
                envelope.at,
            )
            .expect("a decoded event encodes");
            let decoded = wire::decode(keys, &again).expect("an entry encode made decodes");
            assert_eq!(
                decoded, envelope,
                "an entry does not survive encode and decode"
            );
            let stored = SignedEntry::from_json(&again.to_json()).expect("to_json parses back");
            assert_eq!(
                stored, again,
                "an entry does not survive to_json and from_json"
            );
            None
        }
        Err(e) => Some(e),
    }
}
