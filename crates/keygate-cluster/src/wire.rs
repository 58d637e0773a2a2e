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
use std::time::SystemTime;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

pub use self::payload::payload;
pub use self::revocation::{
    UnknownRevocation, parse_revocation_json, revocation_expiry, revocation_json,
};
use crate::{Envelope, Event};

mod payload;
mod revocation;
#[cfg(test)]
mod tests;

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

/// Refuses a payload text field longer than [`MAX_FIELD_BYTES`].
fn check_field(value: &str) -> Result<(), EntryError> {
    if value.len() > MAX_FIELD_BYTES {
        Err(EntryError::Malformed("payload field too long"))
    } else {
        Ok(())
    }
}

/// Signs `event` as entry `seq` of `epoch`, published by `origin` at `at`.
///
/// # Errors
/// [`UnknownRevocation`] for a revocation of a kind the wire format does not have.
pub fn encode(
    keys: &MacKeys,
    event: &Event,
    seq: u64,
    epoch: &str,
    origin: &str,
    at: SystemTime,
) -> Result<SignedEntry, UnknownRevocation> {
    let (kind, payload) = payload(event)?;
    let mut entry = SignedEntry {
        v: VERSION.to_owned(),
        kind: kind.to_owned(),
        seq: seq.to_string(),
        epoch: epoch.to_owned(),
        origin: origin.to_owned(),
        at: payload::millis(at).to_string(),
        payload,
        key: keys.signer().id.to_string(),
        mac: String::new(),
    };
    let tag = hmac::sign(&keys.signer().key, &mac_input(&entry));
    entry.mac = hex(tag.as_ref());
    Ok(entry)
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
    let event = payload::parse_event(&entry.kind, &entry.payload)?;
    Ok(Envelope {
        seq,
        epoch: entry.epoch.as_str().into(),
        origin: entry.origin.as_str().into(),
        at: payload::from_millis(at),
        event,
    })
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
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
