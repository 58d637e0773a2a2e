//! The JWKS wire format (RFC 7517), private to the parser.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

/// The entries of a JWK Set (`{"keys": [...]}`), each left raw so that one broken entry can
/// be skipped on its own.
///
/// At most `max_keys` entries are ever collected: one more stops the parse there, so a set of
/// a hundred thousand entries costs no more memory than one of `max_keys` (`too_many` is set
/// to tell that refusal from a document that is not a JWK Set at all).
pub(super) fn entries<'a>(
    document: &'a [u8],
    max_keys: usize,
    too_many: &Cell<bool>,
) -> Option<Vec<&'a RawValue>> {
    let mut de = serde_json::Deserializer::from_slice(document);
    let keys = de.deserialize_map(SetVisitor { max_keys, too_many }).ok()?;
    de.end().ok()?;
    keys
}

/// The members of a JWK that keygate reads; everything else is ignored.
#[derive(Deserialize)]
pub(super) struct Jwk<'a> {
    #[serde(borrow)]
    pub(super) kty: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "use")]
    pub(super) use_: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) key_ops: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub(super) alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) crv: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) n: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) e: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) x: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) y: Option<Cow<'a, str>>,
}

/// The outer object: exactly one `keys` member, any others ignored.
struct SetVisitor<'c> {
    max_keys: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for SetVisitor<'_> {
    /// `None` when there is no `keys` member.
    type Value = Option<Vec<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWK Set object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = None;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name != "keys" {
                map.next_value::<IgnoredAny>()?;
            } else if keys.is_some() {
                return Err(de::Error::duplicate_field("keys"));
            } else {
                keys = Some(map.next_value_seed(KeysSeed {
                    max_keys: self.max_keys,
                    too_many: self.too_many,
                })?);
            }
        }
        Ok(keys)
    }
}

/// The `keys` array, collected up to `max_keys` entries.
struct KeysSeed<'c> {
    max_keys: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of JWKs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // A size hint from the document is never trusted for the allocation.
        let mut keys = Vec::with_capacity(self.max_keys.min(16));
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if keys.len() == self.max_keys {
                self.too_many.set(true);
                return Err(de::Error::custom("too many keys"));
            }
            keys.push(raw);
        }
        Ok(keys)
    }
}
