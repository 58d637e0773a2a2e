//! Compact JWS parsing: segments, the JOSE header and the registered claims.
//!
//! Parsing is strict (RFC 7515, RFC 7519, RFC 8725): unpadded base64url only, JSON objects
//! with no duplicate member names, and every registered claim type-checked. Strings are
//! borrowed from the decoded buffers where possible; unregistered claims are skipped here and
//! parsed only when a caller asks for them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use crate::alg::Algorithm;
use crate::error::{ClaimsError, HeaderError, Malformed, VerifyError};

/// The three segments of a compact JWS, not yet decoded.
pub(crate) struct Segments<'t> {
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the JWS signing input.
    pub(crate) signing_input: &'t str,
    pub(crate) header: &'t str,
    pub(crate) payload: &'t str,
    pub(crate) signature: &'t str,
}

impl<'t> Segments<'t> {
    pub(crate) fn split(token: &'t str) -> Result<Self, VerifyError> {
        let bytes = token.as_bytes();
        // SIMD searches: a kilobyte-long token has only a handful of dots.
        let mut dots = memchr::memchr_iter(b'.', bytes);
        let (Some(first), Some(second)) = (dots.next(), dots.next()) else {
            return Err(VerifyError::Malformed(Malformed::Segments));
        };
        match dots.count() {
            0 => {}
            // Five segments: a JWE (RFC 7516 section 7.1). keygate verifies signatures only.
            2 => return Err(VerifyError::Header(HeaderError::Unsupported)),
            _ => return Err(VerifyError::Malformed(Malformed::Segments)),
        }
        Ok(Segments {
            signing_input: &token[..second],
            header: &token[..first],
            payload: &token[first + 1..second],
            signature: &token[second + 1..],
        })
    }
}

/// Decodes one unpadded base64url segment onto the end of `buf`, refusing padding and
/// non-canonical trailing bits, and returns where it landed. One buffer serves all three
/// segments, so a verification allocates once for decoding.
pub(crate) fn decode_into(buf: &mut Vec<u8>, segment: &str) -> Result<Range<usize>, VerifyError> {
    let start = buf.len();
    // base64-simd: strict RFC 4648 decoding (no padding, no non-canonical trailing bits,
    // no whitespace) several times faster than a scalar decoder on tokens of this size.
    if base64_simd::URL_SAFE_NO_PAD
        .decode_append(segment, buf)
        .is_err()
    {
        // The decoder may have written part of the output; leave `buf` as it was.
        buf.truncate(start);
        return Err(VerifyError::Malformed(Malformed::Base64));
    }
    Ok(start..buf.len())
}

/// The decoded JSON text of a header or payload: JSON is UTF-8 (RFC 8259 section 8.1).
/// Checking it once here lets serde_json skip re-checking every string.
pub(crate) fn json_text(bytes: &[u8], kind: Malformed) -> Result<&str, VerifyError> {
    std::str::from_utf8(bytes).map_err(|_| VerifyError::Malformed(kind))
}

/// The JOSE header members keygate acts on.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Cow<'a, str>>,
    pub(crate) typ: Option<Cow<'a, str>>,
    /// Whether the header offers a key of its own (`jwk`, `jku`, `x5u`, `x5c`). Such members
    /// are never read: the key always comes from the provider's trusted set (RFC 8725
    /// section 3.10). A provider with `refuse_embedded_keys` refuses these tokens outright.
    pub(crate) embedded_key: bool,
}

impl<'a> Header<'a> {
    /// Parses and vets the header. The order of checks fixes which reason code wins.
    ///
    /// Members keygate does not read are skipped, but, as for the payload, the header as a
    /// whole must be a document a full JSON parse accepts: serde_json skips an unread member
    /// without any depth limit, so a header member nested thousands deep would otherwise pass.
    pub(crate) fn parse(json: &'a str) -> Result<Self, VerifyError> {
        let raw: RawHeader<'a> = parse_object(json, Malformed::Header)?;
        if needs_full_parse(json.as_bytes())
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json).is_err()
        {
            return Err(VerifyError::Malformed(Malformed::Header));
        }
        let Some(Field::Str(alg)) = raw.alg else {
            return Err(VerifyError::Malformed(Malformed::Header));
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(VerifyError::Header(HeaderError::AlgNone));
        }
        if raw.enc || raw.zip {
            return Err(VerifyError::Header(HeaderError::Unsupported));
        }
        if let Some(cty) = &raw.cty {
            // A nested JWT (RFC 7519 section 5.2): refused rather than unwrapped.
            let cty = cty.as_ref();
            if cty.eq_ignore_ascii_case("JWT") || cty.eq_ignore_ascii_case("application/jwt") {
                return Err(VerifyError::Header(HeaderError::Unsupported));
            }
        }
        if raw.crit {
            // keygate understands no JWS extension, so any `crit` list must be refused
            // (RFC 7515 section 4.1.11); this includes RFC 7797's `b64`.
            return Err(VerifyError::Header(HeaderError::Crit));
        }
        if raw.b64_false {
            return Err(VerifyError::Header(HeaderError::Unsupported));
        }
        let alg =
            Algorithm::from_header(&alg).ok_or(VerifyError::Header(HeaderError::AlgNotAllowed))?;
        let kid = match raw.kid {
            None => None,
            Some(Field::Str(kid)) => Some(kid),
            Some(Field::Other) => return Err(VerifyError::Malformed(Malformed::Header)),
        };
        let typ = match raw.typ {
            None => None,
            Some(Field::Str(typ)) => Some(typ),
            Some(Field::Other) => return Err(VerifyError::Malformed(Malformed::Header)),
        };
        Ok(Header {
            alg,
            kid,
            typ,
            embedded_key: raw.embedded_key,
        })
    }
}

/// The registered claims (RFC 7519 section 4.1), type-checked lazily: a wrongly typed claim
/// is only reported once the signature has been verified.
#[derive(Debug, Default)]
pub(crate) struct RegisteredClaims<'a> {
    pub(crate) iss: Option<Field<'a>>,
    pub(crate) sub: Option<Field<'a>>,
    pub(crate) jti: Option<Field<'a>>,
    pub(crate) aud: Option<Audience<'a>>,
    pub(crate) exp: Option<NumericDate>,
    pub(crate) nbf: Option<NumericDate>,
    pub(crate) iat: Option<NumericDate>,
}

impl<'a> RegisteredClaims<'a> {
    /// Parses the payload. Unregistered claims are skipped here, but the payload as a whole
    /// must also be what [`VerifiedToken::claims`](crate::VerifiedToken::claims) can read
    /// back: a payload with escapes (lone surrogates) or deep nesting is fully parsed once,
    /// so a token that verifies never yields claims its consumers cannot see.
    pub(crate) fn parse(json: &'a str) -> Result<Self, VerifyError> {
        let claims = parse_object(json, Malformed::Payload)?;
        if needs_full_parse(json.as_bytes())
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json).is_err()
        {
            return Err(VerifyError::Malformed(Malformed::Payload));
        }
        Ok(claims)
    }
}

/// The nesting depth up to which serde_json's default recursion limit (128) is surely met.
const SAFE_DEPTH: usize = 64;

/// Whether the payload has an escape sequence, nests deeper than [`SAFE_DEPTH`], or may hold
/// a number too large for an `f64` (`1e400`, an integer of 300-odd digits): the only ways a
/// document the skipping parser accepted could fail a full parse, after which the verified
/// token's claims could not be shown. Cheap passes that over-approximate.
fn needs_full_parse(json: &[u8]) -> bool {
    // Counting every bracket, inside strings or not, over-approximates the depth.
    let opens = memchr::memchr2_iter(b'{', b'[', json)
        .take(SAFE_DEPTH + 1)
        .count();
    opens > SAFE_DEPTH || memchr::memchr(b'\\', json).is_some() || may_overflow_f64(json)
}

/// An exponent (in JSON it always follows a digit), or a run of about 288 digits or more (the
/// largest finite `f64` has 309 integer digits). Inside strings too: over-approximating only
/// costs a full parse.
fn may_overflow_f64(json: &[u8]) -> bool {
    let exponent =
        memchr::memchr2_iter(b'e', b'E', json).any(|i| i > 0 && json[i - 1].is_ascii_digit());
    exponent || has_long_digit_run(json)
}

/// Whether `json` has 36 consecutive 8-byte chunks of ASCII digits (at least 288 digits in a
/// row), eight bytes at a time.
fn has_long_digit_run(json: &[u8]) -> bool {
    const CHUNKS: usize = 36;
    if json.len() < CHUNKS * 8 {
        return false;
    }
    let mut run = 0;
    for chunk in json.chunks_exact(8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default()) ^ 0x3030_3030_3030_3030;
        // Each byte of `x` is below 10 exactly when that byte of `chunk` is an ASCII digit:
        // adding 0x76 sets the top bit of bytes 10 and up; `| x` catches bytes already >= 0x80.
        let all_digits = (x.wrapping_add(0x7676_7676_7676_7676) | x) & 0x8080_8080_8080_8080 == 0;
        run = if all_digits { run + 1 } else { 0 };
        if run == CHUNKS {
            return true;
        }
    }
    false
}

/// A string-valued member, or a member of another JSON type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'a> Field<'a> {
    pub(crate) fn as_str(&self, name: &'static str) -> Result<&str, ClaimsError> {
        match self {
            Field::Str(s) => Ok(s),
            Field::Other => Err(ClaimsError::Invalid(name)),
        }
    }
}

/// The `aud` claim: one string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
    Invalid,
}

/// A NumericDate (RFC 7519 section 2): seconds since the epoch, possibly fractional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NumericDate {
    Seconds(f64),
    /// Present but not a finite JSON number.
    Invalid,
}

impl NumericDate {
    /// The value in whole seconds, saturating; a fractional part rounds up or down.
    pub(crate) fn whole_seconds(self, up: bool) -> Option<i64> {
        match self {
            // `as` saturates for out-of-range floats, which is the intent for huge dates.
            #[allow(clippy::cast_possible_truncation, reason = "saturation is intended")]
            NumericDate::Seconds(s) => Some(if up { s.ceil() } else { s.floor() } as i64),
            NumericDate::Invalid => None,
        }
    }
}

/// Parses a JSON object into `T` through `T`'s [`ObjectVisitor`], mapping any syntax error,
/// wrong top-level type or duplicate member to `Malformed`.
fn parse_object<'a, T: ObjectFields<'a>>(json: &'a str, kind: Malformed) -> Result<T, VerifyError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = de.deserialize_map(ObjectVisitor::<T>(std::marker::PhantomData));
    match parsed.and_then(|v| de.end().map(|()| v)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Duplicate)) => Err(VerifyError::Malformed(Malformed::DuplicateMember)),
        Err(_) => Err(VerifyError::Malformed(kind)),
    }
}

/// A duplicate member name was seen.
struct Duplicate;

/// The per-member behaviour of a strictly parsed JSON object.
trait ObjectFields<'a>: Default {
    /// The member names this type reads (at most 32); a name's index is its slot.
    const MEMBERS: &'static [&'static str];

    /// The index (below 32) of a member name this type reads, for duplicate tracking.
    fn slot(name: &str) -> Option<u32> {
        let index = Self::MEMBERS.iter().position(|member| *member == name)?;
        u32::try_from(index).ok()
    }

    /// Reads the value of member `name` from `map`.
    fn field<A: MapAccess<'a>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error>;
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'a, T: ObjectFields<'a>> Visitor<'a> for ObjectVisitor<T> {
    type Value = Result<T, Duplicate>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = T::default();
        // Known members are tracked in a bit set, the other names seen so far in `others`.
        let mut known_seen = 0u32;
        let mut others = SeenNames::default();
        let mut duplicate = false;
        while let Some(Key(name)) = map.next_key::<Key<'a>>()? {
            let again = match T::slot(&name) {
                Some(i) => {
                    let bit = 1u32 << i;
                    let again = known_seen & bit != 0;
                    known_seen |= bit;
                    again
                }
                None => !others.insert(name.clone()),
            };
            if again {
                duplicate = true;
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            out.field(&name, &mut map)?;
        }
        Ok(if duplicate { Err(Duplicate) } else { Ok(out) })
    }
}

/// The member names of one object seen so far, to find duplicates.
///
/// Objects here are small, so a short list and a linear scan beat hashing; but the names are
/// chosen by whoever sent the token, and this runs before the signature is checked, so past
/// [`LINEAR_NAMES`] the names move into a hash set. A list alone is quadratic: a 16 KiB
/// payload of two thousand short distinct names cost milliseconds per token, a larger
/// `max_token_bytes` seconds. The hasher is std's randomly keyed SipHash, so colliding names
/// cannot be precomputed either.
#[derive(Default)]
struct SeenNames<'a> {
    few: SmallVec<[Cow<'a, str>; LINEAR_NAMES]>,
    many: Option<HashSet<Cow<'a, str>>>,
}

/// How many unread member names are compared linearly before [`SeenNames`] hashes them.
const LINEAR_NAMES: usize = 16;

impl<'a> SeenNames<'a> {
    /// Records `name`; false when it was seen before.
    fn insert(&mut self, name: Cow<'a, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(name);
        }
        if self.few.contains(&name) {
            return false;
        }
        if self.few.len() < LINEAR_NAMES {
            self.few.push(name);
        } else {
            let mut many: HashSet<Cow<'a, str>> = self.few.drain(..).collect();
            many.insert(name);
            self.many = Some(many);
        }
        true
    }
}

/// A member name, borrowed unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Key)
    }
}

/// Implements the three `Visitor` string methods, wrapping the (borrowed when possible)
/// string with `$wrap`.
macro_rules! json_strings {
    ($wrap:path) => {
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok($wrap(Cow::Borrowed(v)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(Cow::Owned(v.to_owned())))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok($wrap(Cow::Owned(v)))
        }
    };
}

/// Implements the remaining `Visitor` methods for a value that is "some other JSON type":
/// each consumes its input (arrays and objects element by element) and yields `$other`.
macro_rules! other_json_types {
    ($other:expr) => {
        other_json_types!($other, no_seq);

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
    ($other:expr, no_seq) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
}

/// Deserializes `$value` (borrowing from the input) from any JSON type through `$visitor`, a
/// unit struct declared here whose `Visitor` expects `$expecting` and has the given methods.
macro_rules! any_json_value {
    ($value:ident, $visitor:ident, $expecting:literal, { $($methods:tt)* }) => {
        impl<'de> de::Deserialize<'de> for $value<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($visitor)
            }
        }

        struct $visitor;

        impl<'de> Visitor<'de> for $visitor {
            type Value = $value<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($expecting)
            }

            $($methods)*
        }
    };
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    json_strings!(std::convert::identity);
}

/// Reads a member as a string when it is one, and as `Field::Other` otherwise, in one pass.
fn read_field<'a, A: MapAccess<'a>>(map: &mut A) -> Result<Field<'a>, A::Error> {
    map.next_value::<Field<'a>>()
}

any_json_value!(Field, FieldVisitor, "any JSON value", {
    json_strings!(Field::Str);

    other_json_types!(Field::Other);
});

#[derive(Default)]
struct RawHeader<'a> {
    alg: Option<Field<'a>>,
    kid: Option<Field<'a>>,
    typ: Option<Field<'a>>,
    cty: Option<Cow<'a, str>>,
    crit: bool,
    enc: bool,
    zip: bool,
    b64_false: bool,
    embedded_key: bool,
}

impl<'a> ObjectFields<'a> for RawHeader<'a> {
    const MEMBERS: &'static [&'static str] = &[
        "alg", "kid", "typ", "cty", "crit", "enc", "zip", "b64", "jwk", "jku", "x5u", "x5c",
    ];

    fn field<A: MapAccess<'a>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "alg" => self.alg = Some(read_field(map)?),
            "kid" => self.kid = Some(read_field(map)?),
            "typ" => self.typ = Some(read_field(map)?),
            "cty" => {
                if let Field::Str(cty) = read_field(map)? {
                    self.cty = Some(cty);
                }
            }
            "crit" => {
                map.next_value::<IgnoredAny>()?;
                self.crit = true;
            }
            "enc" => {
                map.next_value::<IgnoredAny>()?;
                self.enc = true;
            }
            "zip" => {
                map.next_value::<IgnoredAny>()?;
                self.zip = true;
            }
            "b64" => {
                let raw: &RawValue = map.next_value()?;
                self.b64_false = raw.get() != "true";
            }
            // Noted, never read: nothing here finds, fetches or builds a key.
            "jwk" | "jku" | "x5u" | "x5c" => {
                map.next_value::<IgnoredAny>()?;
                self.embedded_key = true;
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'a> ObjectFields<'a> for RegisteredClaims<'a> {
    const MEMBERS: &'static [&'static str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

    fn field<A: MapAccess<'a>>(&mut self, name: &str, map: &mut A) -> Result<(), A::Error> {
        match name {
            "iss" => self.iss = Some(read_field(map)?),
            "sub" => self.sub = Some(read_field(map)?),
            "jti" => self.jti = Some(read_field(map)?),
            "aud" => self.aud = Some(map.next_value()?),
            "exp" => self.exp = Some(numeric_date(map.next_value()?)),
            "nbf" => self.nbf = Some(numeric_date(map.next_value()?)),
            "iat" => self.iat = Some(numeric_date(map.next_value()?)),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

any_json_value!(
    Audience,
    AudienceVisitor,
    "a string or an array of strings",
    {
        json_strings!(Audience::One);

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            let mut valid = true;
            while let Some(item) = seq.next_element::<Field<'de>>()? {
                match item {
                    Field::Str(s) => all.push(s),
                    Field::Other => valid = false,
                }
            }
            Ok(if valid {
                Audience::Many(all)
            } else {
                Audience::Invalid
            })
        }

        other_json_types!(Audience::Invalid, no_seq);
    }
);

fn numeric_date(raw: &RawValue) -> NumericDate {
    let text = raw.get();
    // Fast path for the usual integer seconds.
    if let Ok(v) = text.parse::<i64>() {
        #[allow(
            clippy::cast_precision_loss,
            reason = "dates are far below 2^53 seconds"
        )]
        return NumericDate::Seconds(v as f64);
    }
    let is_number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(v) if is_number && v.is_finite() => NumericDate::Seconds(v),
        _ => NumericDate::Invalid,
    }
}

#[cfg(test)]
mod tests;
