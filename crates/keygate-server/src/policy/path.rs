//! Path normalization: the request path as the proxies in front and the upstream read it,
//! made canonical before any glob sees it, or refused when no single reading is safe.
//!
//! In order: the query and fragment are cut off (they never take part in matching); every
//! percent-escape is decoded (a superset of RFC 3986 section 6.2.2.2's decoding of unreserved
//! characters: nginx, Envoy and most frameworks decode them all before routing); repeated
//! slashes are merged; dot segments are removed (RFC 3986 section 5.2.4), after decoding, so
//! `%2e%2e` is `..`. Refused outright (reason `invalid_path`), because two servers would read
//! them two ways:
//! - an encoded `/` or `\` (`%2F`, `%5C`), a raw `\` (Windows servers and some frameworks turn
//!   it into `/`), NUL or any other control character, raw or encoded;
//! - an encoded `%` (`%25`): decoded once it is a literal `%`, decoded twice (some upstreams
//!   do) it opens a second round of escapes, `%252e%252e` becoming `..`;
//! - a `;` anywhere: servlet containers cut `;params` out of each segment, so `/public/..;/admin`
//!   is `/admin` to Tomcat and `/public/..;/admin` to nginx;
//! - a segment ending in `.` or a space other than the dot segments themselves: Windows
//!   servers drop trailing dots and spaces (`/admin.` is `/admin`);
//! - bytes that are not UTF-8 after decoding (overlong encodings of `.` and `/` among them);
//! - anything that does not start with `/`.
//!
//! Case is kept: paths are case-sensitive (RFC 3986 section 6.2.2.1 lowercases only the
//! scheme and host).

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// It does not start with `/`.
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("a '%' is not followed by two hex digits")]
    BadEscape,
    /// An encoded `/` or `\`, a raw `\`, or an encoded `%`.
    #[error("an encoded '/', '\\' or '%', or a raw '\\'")]
    AmbiguousSeparator,
    /// NUL or another control character.
    #[error("a control character")]
    Control,
    /// A `;` path parameter.
    #[error("a ';' path parameter")]
    Parameter,
    /// A segment ending in `.` or a space.
    #[error("a segment ends in '.' or a space")]
    TrailingDot,
    /// Not UTF-8 once decoded.
    #[error("not UTF-8 once decoded")]
    NotUtf8,
}

/// A normalized path: starts with `/`, no empty segments but possibly a last one (a trailing
/// slash), no dot segments, no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// Normalizes `raw`, a request target's path (with or without a query string).
    ///
    /// # Errors
    /// A [`PathError`] when the path cannot be normalized unambiguously.
    pub fn new(raw: &[u8]) -> Result<NormalizedPath, PathError> {
        let end = raw
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(raw.len());
        let raw = &raw[..end];
        if raw.first() != Some(&b'/') {
            return Err(PathError::NotAbsolute);
        }
        let mut decoded = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            let byte = if b == b'%' {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                i += 3;
                // Both digits are below 16, so the byte fits.
                let byte = u8::try_from(hi * 16 + lo).map_err(|_| PathError::BadEscape)?;
                if matches!(byte, b'/' | b'\\' | b'%') {
                    return Err(PathError::AmbiguousSeparator);
                }
                byte
            } else {
                i += 1;
                if b == b'\\' {
                    return Err(PathError::AmbiguousSeparator);
                }
                b
            };
            if byte < 0x20 || byte == 0x7f {
                return Err(PathError::Control);
            }
            if byte == b';' {
                return Err(PathError::Parameter);
            }
            decoded.push(byte);
        }
        let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
        let mut out: Vec<&str> = Vec::new();
        let mut segments = decoded[1..].split('/').peekable();
        while let Some(seg) = segments.next() {
            let last = segments.peek().is_none();
            match seg {
                "." | ".." => {
                    if seg == ".." {
                        out.pop();
                    }
                    // A dot segment at the end leaves the path ending in a slash (RFC 3986
                    // section 5.2.4, steps 2B and 2C).
                    if last {
                        out.push("");
                    }
                }
                "" if !last => {}
                _ if seg.ends_with('.') || seg.ends_with(' ') => {
                    return Err(PathError::TrailingDot);
                }
                _ => out.push(seg),
            }
        }
        let mut path = String::with_capacity(decoded.len());
        for seg in &out {
            path.push('/');
            path.push_str(seg);
        }
        if path.is_empty() {
            path.push('/');
        }
        Ok(NormalizedPath(path))
    }

    /// The path as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments after the leading `/`; a trailing slash gives an empty last segment,
    /// and `/` itself one empty segment.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b?x=1#f", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/./admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/%61dmin", "/admin"),
            ("/caf%C3%A9", "/café"),
            ("/a%20b", "/a b"),
            ("/ADMIN", "/ADMIN"),
            ("/v1.2/x", "/v1.2/x"),
            ("/.well-known/x", "/.well-known/x"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                NormalizedPath::new(raw.as_bytes()).map(|p| p.0),
                Ok(want.to_owned()),
                "{raw}"
            );
        }
        let refused = [
            ("", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
            ("http://h/admin", PathError::NotAbsolute),
            ("/a%2fb", PathError::AmbiguousSeparator),
            ("/a%2Fb", PathError::AmbiguousSeparator),
            ("/a%5cb", PathError::AmbiguousSeparator),
            ("/a\\b", PathError::AmbiguousSeparator),
            ("/a%252e%252e/b", PathError::AmbiguousSeparator),
            ("/a%00b", PathError::Control),
            ("/a%0ab", PathError::Control),
            ("/a%7f", PathError::Control),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/public/..;/admin", PathError::Parameter),
            ("/admin;jsessionid=1", PathError::Parameter),
            ("/admin%3bx", PathError::Parameter),
            ("/admin.", PathError::TrailingDot),
            ("/admin%2e", PathError::TrailingDot),
            ("/admin%20", PathError::TrailingDot),
            ("/.../x", PathError::TrailingDot),
            ("/%c0%ae%c0%ae/admin", PathError::NotUtf8),
            ("/%ff", PathError::NotUtf8),
        ];
        for (raw, want) in refused {
            assert_eq!(NormalizedPath::new(raw.as_bytes()), Err(want), "{raw}");
        }
    }

    #[test]
    fn segments_keep_a_trailing_slash() {
        let p = NormalizedPath::new(b"/a/b/").unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["a", "b", ""]);
        let p = NormalizedPath::new(b"/").unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), [""]);
    }
}
