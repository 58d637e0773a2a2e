//! The JWKS wire format (RFC 7517), private to the parser.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A JWK Set. Entries stay raw so that one broken entry can be skipped on its own.
#[derive(Deserialize)]
pub(super) struct JwkSet<'a> {
    #[serde(borrow)]
    pub(super) keys: Vec<&'a RawValue>,
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
