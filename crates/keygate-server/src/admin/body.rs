//! Reading JSON request bodies of the admin API: one object with unique member names, and
//! its string and unix-time members, each error naming the field at fault.

use serde_json::{Map, Value};

use super::ApiError;

/// The longest string accepted in a request body member (`jti`, `sub`, `kid`, a tenant or
/// provider name, an event's namespace or key), in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Parses a body that must be one JSON object whose member names are unique: with
/// `{"jti":"a","exp":1,"jti":"b"}` the caller meant something, and last-one-wins would
/// silently pick for them. `not_object` is the message when the body is another JSON value.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `body`, or the repeated member.
pub(crate) fn json_object(body: &[u8], not_object: &str) -> Result<Map<String, Value>, ApiError> {
    use std::cell::RefCell;

    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};

    /// Reads a top-level object, remembering the first repeated member name.
    struct Unique<'a>(&'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = Option<Map<String, Value>>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = Option<Map<String, Value>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = Map::new();
            while let Some(name) = access.next_key::<String>()? {
                let value: Value = access.next_value()?;
                if map.contains_key(&name) {
                    *self.0.borrow_mut() = Some(name);
                    return Err(A::Error::custom("repeated member"));
                }
                map.insert(name, value);
            }
            Ok(Some(map))
        }

        // Any other JSON value: well-formed, but not an object.
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Unique(&repeated)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, repeated.into_inner()) {
        (_, Some(name)) => Err(ApiError::bad(&name, "appears more than once")),
        (Ok(Some(map)), None) => Ok(map),
        (Ok(None), None) => Err(ApiError::bad("body", not_object)),
        (Err(e), None) => Err(ApiError::bad("body", format!("not valid JSON: {e}"))),
    }
}

/// The non-empty string member `field`, at most [`MAX_FIELD_BYTES`].
pub(crate) fn text(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match map.get(field) {
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::bad(field, "must not be empty")),
        Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => Err(ApiError::bad(
            field,
            format!("longer than {MAX_FIELD_BYTES} bytes"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad(field, "must be a string")),
        None => Err(ApiError::bad(field, "missing")),
    }
}

/// The unix-time member `field`, required.
pub(crate) fn number(map: &Map<String, Value>, field: &str) -> Result<i64, ApiError> {
    optional_number(map, field)?.ok_or_else(|| ApiError::bad(field, "missing"))
}

/// The unix-time member `field`; absent or `null` is `None`.
pub(crate) fn optional_number(
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<i64>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (0..=253_402_300_799).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::bad(
                field,
                "must be a whole number of seconds since 1970 (0 to 253402300799)",
            )),
        },
        Some(_) => Err(ApiError::bad(field, "must be a number (unix seconds)")),
    }
}
