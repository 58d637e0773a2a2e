//! The signed entry: how an [`Envelope`] travels on the log and sits in shared state.
//!
//! An entry is a handful of text fields: `v`, `type`, `seq`, `epoch`, `origin`, `at`
//! (milliseconds since 1970), `payload` (JSON), `key` (the id of the MAC key) and `mac`
//! (lowercase hex HMAC-SHA256). The MAC covers a canonical encoding of every field but the
//! two last: a fixed label, then each field as a 4-byte big-endian length and its bytes, so no
//! two different entries encode alike. The payload is MAC'd as the exact bytes sent, never
//! re-serialised. A receiver checks the MAC (in constant time) before it parses the payload.
//!
//! Everything here is pure: no I/O, no clock. [`decode`] is what the fuzzer drives.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use keygate::{FlushId, ProviderId, PublishedDocument, PublishedKeySet, Revocation};
use serde::{Deserialize, Serialize};

use super::{Envelope, Event};

/// Wire version this build writes and reads.
pub const VERSION: &str = "1";
/// Label at the start of the MAC input, so a MAC over anything else never matches.
const MAC_LABEL: &[u8] = b"keygate.bus.v1";
/// Longest payload accepted (a key set is the largest; providers cap JWKS far below this).
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// Longest origin, epoch or key id.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest namespace or key of an application event, and longest revocation field.
pub const MAX_FIELD_BYTES: usize = 1024;

/// A secret that signs and verifies entries.
#[derive(Clone)]
pub struct MacKey {
    id: Arc<str>,
    key: hmac::Key,
}

impl MacKey {
    /// A key named `id` with `secret` (at least 32 bytes; checked by the config).
    #[must_use]
    pub fn new(id: &str, secret: &[u8]) -> Self {
        MacKey {
            id: id.into(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key's id, written beside every MAC it makes.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("MacKey").field("id", &self.id).finish()
    }
}

/// The cluster's MAC keys: the first signs, every one verifies, so keys can be rotated by
/// adding the new one second, then moving it first, then removing the old one.
#[derive(Debug, Clone)]
pub struct MacKeys {
    keys: Arc<[MacKey]>,
}

impl MacKeys {
    /// A ring of `keys`; `None` if it is empty.
    #[must_use]
    pub fn new(keys: Vec<MacKey>) -> Option<Self> {
        (!keys.is_empty()).then(|| MacKeys { keys: keys.into() })
    }

    fn signer(&self) -> &MacKey {
        &self.keys[0]
    }

    fn find(&self, id: &str) -> Option<&MacKey> {
        self.keys.iter().find(|k| &*k.id == id)
    }
}

/// An entry's fields as text, in the order they are written to the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// Wire version.
    pub v: String,
    /// Event type: `flush`, `refresh`, `revoke`, `keyset`, `app`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Sequence number, decimal.
    pub seq: String,
    /// The log's epoch.
    pub epoch: String,
    /// The publishing replica.
    pub origin: String,
    /// Milliseconds since 1970, decimal.
    pub at: String,
    /// The event's JSON.
    pub payload: String,
    /// Id of the MAC key.
    pub key: String,
    /// Lowercase hex HMAC-SHA256.
    pub mac: String,
}

/// Why an entry was dropped. Never applied, always counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// A field is missing or malformed, or the entry is too large.
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
    /// The entry was written by a newer or unknown wire version.
    #[error("unsupported entry version")]
    Version,
    /// No MAC, an unknown MAC key, or a MAC that does not match.
    #[error("entry authentication failed")]
    BadMac,
    /// The MAC is good but the type is one this build does not know (a newer replica wrote it).
    #[error("unknown entry type")]
    UnknownType,
}

impl EntryError {
    /// A stable reason code for metrics and logs.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            EntryError::Malformed(_) => "malformed",
            EntryError::Version => "version",
            EntryError::BadMac => "mac",
            EntryError::UnknownType => "unknown_type",
        }
    }
}

impl SignedEntry {
    /// The fields as `(name, value)` pairs for `XADD`.
    #[must_use]
    pub fn fields(&self) -> [(&'static str, &str); 9] {
        [
            ("v", &self.v),
            ("type", &self.kind),
            ("seq", &self.seq),
            ("epoch", &self.epoch),
            ("origin", &self.origin),
            ("at", &self.at),
            ("payload", &self.payload),
            ("key", &self.key),
            ("mac", &self.mac),
        ]
    }

    /// Rebuilds an entry from stream fields; unknown fields are ignored, missing ones are
    /// [`EntryError::Malformed`].
    ///
    /// # Errors
    /// When a field is missing or repeated.
    pub fn from_fields<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SignedEntry, EntryError> {
        let mut slots: [Option<&str>; 9] = [None; 9];
        const NAMES: [&str; 9] = [
            "v", "type", "seq", "epoch", "origin", "at", "payload", "key", "mac",
        ];
        for (name, value) in pairs {
            if let Some(i) = NAMES.iter().position(|n| *n == name) {
                if slots[i].replace(value).is_some() {
                    return Err(EntryError::Malformed("repeated field"));
                }
            }
        }
        let take = |i: usize| {
            slots[i]
                .map(str::to_owned)
                .ok_or(EntryError::Malformed(NAMES[i]))
        };
        Ok(SignedEntry {
            v: take(0)?,
            kind: take(1)?,
            seq: take(2)?,
            epoch: take(3)?,
            origin: take(4)?,
            at: take(5)?,
            payload: take(6)?,
            key: take(7)?,
            mac: take(8)?,
        })
    }

    /// The entry as one JSON string, for shared state (revocations, key sets).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses [`SignedEntry::to_json`]'s output.
    ///
    /// # Errors
    /// [`EntryError::Malformed`] when it is not that.
    pub fn from_json(text: &str) -> Result<SignedEntry, EntryError> {
        if text.len() > MAX_PAYLOAD_BYTES * 2 {
            return Err(EntryError::Malformed("entry too large"));
        }
        serde_json::from_str(text).map_err(|_| EntryError::Malformed("not an entry"))
    }
}

fn mac_input(e: &SignedEntry) -> Vec<u8> {
    let parts = [
        &e.v, &e.kind, &e.seq, &e.epoch, &e.origin, &e.at, &e.payload,
    ];
    let mut out =
        Vec::with_capacity(MAC_LABEL.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(MAC_LABEL);
    for p in parts {
        // Lengths are bounded by MAX_PAYLOAD_BYTES before anything is signed or checked.
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// The payload of each event type.
#[derive(Debug, Serialize, Deserialize)]
struct ProviderPayload {
    tenant: String,
    provider: String,
    /// The flush's id (flush events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum RevokePayload {
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

#[derive(Debug, Serialize, Deserialize)]
struct KeySetPayload {
    tenant: String,
    provider: String,
    jwks: String,
    fetched_at_ms: u64,
    fresh_until_ms: u64,
    etag: Option<String>,
    /// The flush the set was fetched under (absent: never flushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush: Option<String>,
    /// `kid`s the IdP withdrew (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    withdrawn: Vec<String>,
    /// A provider with several JWKS URLs: each URL's document (then `jwks` is empty).
    /// Absent for a provider with one URL, whose entries are as they always were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    documents: Vec<DocumentPayload>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocumentPayload {
    url: String,
    jwks: String,
    fetched_at_ms: u64,
    fresh_until_ms: u64,
    etag: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AppPayload {
    namespace: String,
    key: String,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Most withdrawn `kid`s a key-set entry may name.
const MAX_WITHDRAWN: usize = 64;

/// The type name and JSON payload of `event`.
#[must_use]
pub fn payload(event: &Event) -> (&'static str, String) {
    let json = match event {
        Event::Flush { provider, flush } => serde_json::to_string(&ProviderPayload {
            tenant: provider.tenant().to_owned(),
            provider: provider.name().to_owned(),
            flush: Some(flush.to_string()),
        }),
        Event::Refresh(id) => serde_json::to_string(&ProviderPayload {
            tenant: id.tenant().to_owned(),
            provider: id.name().to_owned(),
            flush: None,
        }),
        Event::Revoke(r) => serde_json::to_string(&revoke_payload(r)),
        Event::KeySet { provider, set } => serde_json::to_string(&KeySetPayload {
            tenant: provider.tenant().to_owned(),
            provider: provider.name().to_owned(),
            jwks: set.jwks.to_string(),
            fetched_at_ms: millis(set.fetched_at),
            fresh_until_ms: millis(set.fresh_until),
            etag: set.etag.as_deref().map(str::to_owned),
            flush: set.flush.as_ref().map(ToString::to_string),
            withdrawn: set.withdrawn.clone(),
            documents: set
                .documents
                .iter()
                .map(|d| DocumentPayload {
                    url: d.url.clone(),
                    jwks: d.jwks.to_string(),
                    fetched_at_ms: millis(d.fetched_at),
                    fresh_until_ms: millis(d.fresh_until),
                    etag: d.etag.as_deref().map(str::to_owned),
                })
                .collect(),
        }),
        Event::App { namespace, key } => serde_json::to_string(&AppPayload {
            namespace: namespace.clone(),
            key: key.clone(),
        }),
    };
    (event.kind(), json.unwrap_or_default())
}

fn revoke_payload(r: &Revocation) -> RevokePayload {
    match r {
        Revocation::Jti { jti, exp } => RevokePayload::Jti {
            jti: jti.clone(),
            exp: *exp,
        },
        Revocation::Subject {
            tenant,
            sub,
            before,
            until,
        } => RevokePayload::Subject {
            tenant: tenant.clone(),
            sub: sub.clone(),
            before: *before,
            until: *until,
        },
        Revocation::Kid {
            tenant,
            provider,
            kid,
            until,
        } => RevokePayload::Kid {
            tenant: tenant.clone(),
            provider: provider.clone(),
            kid: kid.clone(),
            until: *until,
        },
        // The library may grow kinds this build cannot carry; an empty jti revokes nothing.
        _ => RevokePayload::Jti {
            jti: String::new(),
            exp: 0,
        },
    }
}

/// Signs `event` as entry `seq` of `epoch`, published by `origin` at `at`.
#[must_use]
pub fn encode(
    keys: &MacKeys,
    event: &Event,
    seq: u64,
    epoch: &str,
    origin: &str,
    at: SystemTime,
) -> SignedEntry {
    let (kind, payload) = payload(event);
    let mut entry = SignedEntry {
        v: VERSION.to_owned(),
        kind: kind.to_owned(),
        seq: seq.to_string(),
        epoch: epoch.to_owned(),
        origin: origin.to_owned(),
        at: millis(at).to_string(),
        payload,
        key: keys.signer().id.to_string(),
        mac: String::new(),
    };
    let tag = hmac::sign(&keys.signer().key, &mac_input(&entry));
    entry.mac = hex(tag.as_ref());
    entry
}

/// Checks `entry`'s MAC, then parses it.
///
/// # Errors
/// An [`EntryError`]; nothing is parsed before the MAC is checked.
pub fn decode(keys: &MacKeys, entry: &SignedEntry) -> Result<Envelope, EntryError> {
    if entry.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(EntryError::Malformed("payload too large"));
    }
    for (field, value) in [
        ("epoch", &entry.epoch),
        ("origin", &entry.origin),
        ("key", &entry.key),
        ("type", &entry.kind),
    ] {
        if value.len() > MAX_NAME_BYTES {
            return Err(EntryError::Malformed(field));
        }
    }
    if entry.v != VERSION {
        return Err(EntryError::Version);
    }
    let key = keys.find(&entry.key).ok_or(EntryError::BadMac)?;
    let tag = unhex(&entry.mac).ok_or(EntryError::BadMac)?;
    hmac::verify(&key.key, &mac_input(entry), &tag).map_err(|_| EntryError::BadMac)?;

    let seq: u64 = entry
        .seq
        .parse()
        .map_err(|_| EntryError::Malformed("seq"))?;
    let at: u64 = entry.at.parse().map_err(|_| EntryError::Malformed("at"))?;
    let event = parse_event(&entry.kind, &entry.payload)?;
    Ok(Envelope {
        seq,
        epoch: entry.epoch.as_str().into(),
        origin: entry.origin.as_str().into(),
        at: from_millis(at),
        event,
    })
}

fn parse_event(kind: &str, payload: &str) -> Result<Event, EntryError> {
    fn json<'a, T: Deserialize<'a>>(payload: &'a str) -> Result<T, EntryError> {
        serde_json::from_str(payload).map_err(|_| EntryError::Malformed("payload"))
    }
    fn field(value: &str) -> Result<(), EntryError> {
        if value.len() > MAX_FIELD_BYTES {
            Err(EntryError::Malformed("payload field too long"))
        } else {
            Ok(())
        }
    }
    fn flush_id(id: Option<&str>) -> Result<Option<FlushId>, EntryError> {
        id.map(|id| FlushId::new(id).ok_or(EntryError::Malformed("flush")))
            .transpose()
    }
    fn provider(p: &ProviderPayload) -> Result<ProviderId, EntryError> {
        field(&p.tenant)?;
        field(&p.provider)?;
        Ok(ProviderId::new(&p.tenant, &p.provider))
    }
    Ok(match kind {
        "flush" => {
            let p: ProviderPayload = json(payload)?;
            Event::Flush {
                provider: provider(&p)?,
                // An entry of a version that did not name its flushes is a flush all the same.
                flush: flush_id(p.flush.as_deref())?.unwrap_or_else(FlushId::random),
            }
        }
        "refresh" => Event::Refresh(provider(&json(payload)?)?),
        "revoke" => Event::Revoke(match json::<RevokePayload>(payload)? {
            RevokePayload::Jti { jti, exp } => {
                field(&jti)?;
                Revocation::Jti { jti, exp }
            }
            RevokePayload::Subject {
                tenant,
                sub,
                before,
                until,
            } => {
                field(&tenant)?;
                field(&sub)?;
                Revocation::Subject {
                    tenant,
                    sub,
                    before,
                    until,
                }
            }
            RevokePayload::Kid {
                tenant,
                provider,
                kid,
                until,
            } => {
                field(&tenant)?;
                field(&provider)?;
                field(&kid)?;
                Revocation::Kid {
                    tenant,
                    provider,
                    kid,
                    until,
                }
            }
        }),
        "keyset" => {
            let p: KeySetPayload = json(payload)?;
            field(&p.tenant)?;
            field(&p.provider)?;
            if p.etag.as_ref().is_some_and(|e| e.len() > MAX_FIELD_BYTES) {
                return Err(EntryError::Malformed("etag"));
            }
            if p.withdrawn.len() > MAX_WITHDRAWN {
                return Err(EntryError::Malformed("withdrawn"));
            }
            for kid in &p.withdrawn {
                field(kid)?;
            }
            if p.documents.len() > keygate::MAX_JWKS_URIS {
                return Err(EntryError::Malformed("documents"));
            }
            for d in &p.documents {
                field(&d.url)?;
                if d.etag.as_ref().is_some_and(|e| e.len() > MAX_FIELD_BYTES) {
                    return Err(EntryError::Malformed("etag"));
                }
            }
            let set = if p.documents.is_empty() {
                PublishedKeySet::new(
                    p.jwks,
                    from_millis(p.fetched_at_ms),
                    from_millis(p.fresh_until_ms),
                    p.etag.map(Into::into),
                )
            } else {
                PublishedKeySet::from_documents(
                    p.documents
                        .into_iter()
                        .map(|d| {
                            PublishedDocument::new(
                                d.url,
                                d.jwks,
                                from_millis(d.fetched_at_ms),
                                from_millis(d.fresh_until_ms),
                                d.etag.map(Into::into),
                            )
                        })
                        .collect(),
                )
            };
            Event::KeySet {
                provider: ProviderId::new(&p.tenant, &p.provider),
                set: set
                    .after_flush(flush_id(p.flush.as_deref())?)
                    .withdrawing(p.withdrawn),
            }
        }
        "app" => {
            let p: AppPayload = json(payload)?;
            field(&p.namespace)?;
            field(&p.key)?;
            Event::App {
                namespace: p.namespace,
                key: p.key,
            }
        }
        _ => return Err(EntryError::UnknownType),
    })
}

/// A revocation as one line of JSON (the local state file's format).
#[must_use]
pub fn revocation_json(r: &Revocation) -> String {
    serde_json::to_string(&revoke_payload(r)).unwrap_or_default()
}

/// Parses [`revocation_json`]'s output.
///
/// # Errors
/// [`EntryError::Malformed`] when it is not a revocation.
pub fn parse_revocation_json(line: &str) -> Result<Revocation, EntryError> {
    match parse_event("revoke", line)? {
        Event::Revoke(r) => Ok(r),
        _ => Err(EntryError::Malformed("payload")),
    }
}

/// When a revocation's entry can leave shared state (unix seconds); `None` for never.
#[must_use]
pub fn revocation_expiry(r: &Revocation) -> Option<i64> {
    match r {
        Revocation::Jti { exp, .. } => Some(*exp),
        Revocation::Subject { until, .. } => Some(*until),
        Revocation::Kid { until, .. } => *until,
        _ => Some(0),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // An HMAC-SHA256 tag is 32 bytes; anything else cannot match.
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
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
            let entry = encode(&keys, &event, seq, "ep", "node-a", at);
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
        let entry = encode(&old, &event, 1, "ep", "n", SystemTime::UNIX_EPOCH);
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
        );
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
        let mut e = encode(
            &keys,
            &every_event()[0],
            1,
            "ep",
            "n",
            SystemTime::UNIX_EPOCH,
        );
        e.v = "2".into();
        assert_eq!(decode(&keys, &e), Err(EntryError::Version));
        // A well-signed entry of a type from the future is told apart from a forgery.
        let mut e = encode(
            &keys,
            &every_event()[0],
            1,
            "ep",
            "n",
            SystemTime::UNIX_EPOCH,
        );
        e.kind = "teleport".into();
        e.mac.clear();
        let tag = hmac::sign(&keys.signer().key, &mac_input(&e));
        e.mac = hex(tag.as_ref());
        assert_eq!(decode(&keys, &e), Err(EntryError::UnknownType));
        // Bad JSON under a good MAC.
        let mut e = encode(
            &keys,
            &every_event()[0],
            1,
            "ep",
            "n",
            SystemTime::UNIX_EPOCH,
        );
        e.payload = "[".into();
        let tag = hmac::sign(&keys.signer().key, &mac_input(&e));
        e.mac = hex(tag.as_ref());
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
}
