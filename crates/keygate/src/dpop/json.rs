//! Strict reading of the JSON objects in a DPoP proof: its header, its claims and the `jwk`
//! in its header. Every member is kept raw, and an object with the same member twice is
//! refused (RFC 7515 section 4, RFC 7519 section 4): two parsers reading one proof must never
//! see two different keys or two different `htu`s.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of one JSON object, in document order, values unparsed.
pub(crate) struct Members<'a> {
    members: Vec<(String, &'a RawValue)>,
}

impl<'a> Members<'a> {
    /// Parses `json` as one object with distinct member names; `None` when it is not one.
    pub(crate) fn parse(json: &'a str) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_str(json);
        let members = de.deserialize_map(MembersVisitor).ok()?;
        de.end().ok()?;
        let mut seen = HashSet::with_capacity(members.len());
        if !members.iter().all(|(name, _)| seen.insert(name.as_str())) {
            return None;
        }
        Some(Members { members })
    }

    /// The raw value of member `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// Whether the object has member `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Member `name` as a string: `Ok(None)` when absent, `Err` when not a string.
    pub(crate) fn str(&self, name: &str) -> Result<Option<String>, WrongType> {
        self.get(name)
            .map(|raw| serde_json::from_str::<String>(raw.get()).map_err(|_| WrongType))
            .transpose()
    }

    /// Member `name` as a finite number: `Ok(None)` when absent, `Err` otherwise.
    pub(crate) fn number(&self, name: &str) -> Result<Option<f64>, WrongType> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let text = raw.get();
        // JSON numbers start with a digit or a minus sign; `"1"`, `true` and `null` do not.
        if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(WrongType);
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(WrongType),
        }
    }

    /// Iterates over the member names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(n, _)| n.as_str())
    }
}

/// A member of the wrong JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrongType;

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((name, value));
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_read_strictly() {
        let m = Members::parse(r#"{"a":"x","b":1.5,"c":{"d":[1]},"e":null}"#).unwrap();
        assert_eq!(m.str("a"), Ok(Some("x".to_owned())));
        assert_eq!(m.str("b"), Err(WrongType));
        assert_eq!(m.str("zz"), Ok(None));
        assert_eq!(m.number("b"), Ok(Some(1.5)));
        assert_eq!(m.number("a"), Err(WrongType));
        assert_eq!(m.number("e"), Err(WrongType));
        assert_eq!(m.get("c").unwrap().get(), r#"{"d":[1]}"#);
        assert!(m.has("e"));
        assert_eq!(m.names().collect::<Vec<_>>(), ["a", "b", "c", "e"]);
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"[1]"#,
            r#"{"a":1} x"#,
            r#"{"a":1e400}"#,
            "",
        ] {
            let parsed = Members::parse(bad);
            // `1e400` parses as JSON but is no finite number.
            if let Some(m) = parsed {
                assert_eq!(m.number("a"), Err(WrongType), "{bad}");
            }
        }
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            "[1]",
            "{} x",
            "",
        ] {
            assert!(Members::parse(bad).is_none(), "{bad}");
        }
    }
}
