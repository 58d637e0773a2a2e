//! What a route asks of a verified token's claims: scopes (`scope` string or `scp` array) and
//! claim conditions on an RFC 6901 pointer or a bare top-level name.

use serde_json::{Map, Value};

/// Where a condition looks: an RFC 6901 pointer (`/realm_access/roles`) or a top-level name
/// taken verbatim (`roles`, `https://example.com/groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimPath {
    Pointer(Box<str>),
    Name(Box<str>),
}

impl ClaimPath {
    /// Parses `text`, or says why it is not usable.
    pub(crate) fn parse(text: &str) -> Result<ClaimPath, String> {
        if text.is_empty() {
            return Err("must not be empty (\"\" would be the whole claims set)".to_owned());
        }
        if !text.starts_with('/') {
            return Ok(ClaimPath::Name(text.into()));
        }
        // RFC 6901 section 3: `~` is only ever followed by `0` or `1`.
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{text:?} is not an RFC 6901 pointer: '~' must be followed by '0' or '1'"
                ));
            }
        }
        Ok(ClaimPath::Pointer(text.into()))
    }

    /// The top-level claim the path starts in.
    pub(crate) fn top_level(&self) -> String {
        match self {
            ClaimPath::Name(name) => name.to_string(),
            ClaimPath::Pointer(pointer) => {
                let rest = &pointer[1..];
                let first = rest.find('/').map_or(rest, |i| &rest[..i]);
                first.replace("~1", "/").replace("~0", "~")
            }
        }
    }

    /// The value at this path, if any (`null` counts as absent).
    pub(crate) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let value = match self {
            ClaimPath::Name(name) => claims.get(&**name),
            ClaimPath::Pointer(pointer) => {
                // `Value::pointer` works on a `Value`: take the first step on the map, so the
                // claims are not cloned into one.
                let rest = &pointer[1..];
                let (first, tail) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
                let top = if first.contains('~') {
                    claims.get(&first.replace("~1", "/").replace("~0", "~"))?
                } else {
                    claims.get(first)?
                };
                if tail.is_empty() {
                    Some(top)
                } else {
                    top.pointer(tail)
                }
            }
        };
        value.filter(|v| !v.is_null())
    }
}

/// One condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    Equals(Value),
    OneOf(Vec<Value>),
    Contains(Value),
    ContainsAny(Vec<Value>),
    Exists(bool),
}

/// A claim condition: a path and a test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClaimRule {
    pub(crate) path: ClaimPath,
    pub(crate) test: Test,
}

impl ClaimRule {
    /// Whether `claims` meet the condition.
    pub(crate) fn holds(&self, claims: &Map<String, Value>) -> bool {
        let value = self.path.lookup(claims);
        match (&self.test, value) {
            (Test::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Equals(want), Some(v)) => v == want,
            (Test::OneOf(wants), Some(v)) => wants.contains(v),
            (Test::Contains(want), Some(v)) => contains(v, want),
            (Test::ContainsAny(wants), Some(v)) => wants.iter().any(|w| contains(v, w)),
        }
    }
}

/// An array holding `want`, or a space-delimited string (like `scope`) with `want` as one of
/// its words.
fn contains(value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::Array(items), _) => items.contains(want),
        (Value::String(s), Value::String(w)) => s.split_ascii_whitespace().any(|x| x == w),
        _ => false,
    }
}

/// Whether `claims` grant `scope`: a word of the `scope` string, or an element (or word) of
/// `scp`, which some issuers send as an array and some as a string.
pub(crate) fn granted(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    fn words(v: Option<&Value>) -> Box<dyn Iterator<Item = &str> + '_> {
        match v {
            Some(Value::String(s)) => Box::new(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => Box::new(items.iter().filter_map(Value::as_str)),
            _ => Box::new(std::iter::empty()),
        }
    }
    words(claims.get("scope")).chain(words(claims.get("scp")))
}

/// The members named `names` of a claims set given as JSON text, parsed; every other member
/// is skipped unparsed. Names are compared as they are read, escaped or not, without
/// allocating; a text that is not a JSON object gives an empty map (a verified token's claims
/// always are one).
pub(crate) fn pick(json: &str, names: &[Box<str>]) -> Map<String, Value> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(Wanted(names), &mut de).unwrap_or_default()
}

/// Reads an object, keeping the members in `.0`.
struct Wanted<'n>(&'n [Box<str>]);

/// Reads a member name: its index in `.0`, if it is there.
struct Name<'n>(&'n [Box<str>]);

impl<'de> serde::de::DeserializeSeed<'de> for Wanted<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Wanted<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a claims set")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(found) = map.next_key_seed(Name(self.0))? {
            match found {
                Some(i) => {
                    let value: Value = map.next_value()?;
                    out.insert(self.0[i].to_string(), value);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Name<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Name<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| **n == *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({
            "sub": "alice",
            "roles": ["a", "b"],
            "realm_access": {"roles": ["admin", "user"]},
            "a/b": {"m~n": 1},
            "https://example.com/groups": ["g1"],
            "scope": "read write",
            "scp": ["extra"],
            "nul": null,
            "n": 3,
            "flag": true,
            "list": [[1], {"k": 1}],
            "": "empty-name",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn rule(path: &str, test: Test) -> ClaimRule {
        ClaimRule {
            path: ClaimPath::parse(path).unwrap(),
            test,
        }
    }

    #[test]
    fn claim_table() {
        let c = claims();
        let cases = [
            (rule("sub", Test::Equals(json!("alice"))), true),
            (rule("/sub", Test::Equals(json!("alice"))), true),
            (rule("sub", Test::Equals(json!("Alice"))), false),
            (
                rule("sub", Test::OneOf(vec![json!("bob"), json!("alice")])),
                true,
            ),
            (rule("sub", Test::OneOf(vec![json!("bob")])), false),
            (
                rule("/realm_access/roles", Test::Contains(json!("admin"))),
                true,
            ),
            (
                rule("/realm_access/roles", Test::Contains(json!("root"))),
                false,
            ),
            (
                rule("/realm_access/roles/0", Test::Equals(json!("admin"))),
                true,
            ),
            (rule("/realm_access/roles/2", Test::Exists(true)), false),
            (rule("/realm_access/missing", Test::Exists(false)), true),
            (rule("/a~1b/m~0n", Test::Equals(json!(1))), true),
            (rule("/a~1b", Test::Exists(true)), true),
            (rule("a/b", Test::Exists(true)), true),
            (
                rule("https://example.com/groups", Test::Contains(json!("g1"))),
                true,
            ),
            (
                rule("roles", Test::ContainsAny(vec![json!("x"), json!("b")])),
                true,
            ),
            (rule("roles", Test::ContainsAny(vec![json!("x")])), false),
            (rule("roles", Test::Equals(json!("a"))), false),
            (rule("scope", Test::Contains(json!("write"))), true),
            (rule("scope", Test::Contains(json!("wri"))), false),
            (rule("nul", Test::Exists(true)), false),
            (rule("nul", Test::Exists(false)), true),
            (rule("nul", Test::Equals(Value::Null)), false),
            (rule("n", Test::Equals(json!(3))), true),
            (rule("n", Test::Equals(json!("3"))), false),
            (rule("n", Test::Contains(json!(3))), false),
            (rule("flag", Test::Equals(json!(true))), true),
            (rule("list", Test::Contains(json!([1]))), true),
            (rule("list", Test::Contains(json!({"k": 1}))), true),
            (rule("/list/1/k", Test::Equals(json!(1))), true),
            (rule("/sub/x", Test::Exists(true)), false),
            (rule("/roles/-", Test::Exists(true)), false),
            (rule("/roles/01", Test::Exists(true)), false),
            (rule("/", Test::Equals(json!("empty-name"))), true),
            (rule("missing", Test::Equals(json!("x"))), false),
            (rule("missing", Test::Contains(json!("x"))), false),
        ];
        for (r, want) in cases {
            assert_eq!(r.holds(&c), want, "{r:?}");
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "/a~", "/a~2", "/~x"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ClaimPath::parse("/a~0~1").is_ok());
    }

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let c = claims();
        let got: Vec<&str> = granted(&c).collect();
        assert_eq!(got, ["read", "write", "extra"]);
        let c = json!({"scp": "a b"}).as_object().unwrap().clone();
        assert_eq!(granted(&c).collect::<Vec<_>>(), ["a", "b"]);
        let c = json!({"scope": ["not", "a string"]})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(granted(&c).collect::<Vec<_>>(), ["not", "a string"]);
    }
}
