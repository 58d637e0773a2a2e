//! Comparing a proof's `htu` with the URL of the request (RFC 9449 section 4.3, check 9):
//! query and fragment ignored, and both sides put through RFC 3986 section 6.2.2 syntax-based
//! and section 6.2.3 scheme-based normalization first.

use url::Url;

/// Whether `htu` names the request URL `url`. Either side that is not an absolute `http` or
/// `https` URL with a host matches nothing.
pub(crate) fn htu_matches(htu: &str, url: &str) -> bool {
    match (normalize(htu), normalize(url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The normalized form of an absolute `http(s)` URL, without query and fragment.
///
/// The `url` crate already lowercases the scheme and the host, drops a port that is the
/// scheme's default, writes an empty path as `/` and removes dot segments; what is left is
/// percent-encoding: hex digits uppercased, and octets of unreserved characters decoded
/// (RFC 3986 section 6.2.2.2), so that `/%7euser` and `/~user` are one resource.
fn normalize(text: &str) -> Option<String> {
    let mut url = Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = normalize_percent(url.path());
    url.set_path(&path);
    Some(url.into())
}

/// Decodes `%XX` octets of unreserved characters and uppercases the hex digits of the others.
fn normalize_percent(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            let octet = hi << 4 | lo;
            if octet.is_ascii_alphanumeric() || matches!(octet, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(octet));
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
            }
            i += 3;
            continue;
        }
        // Everything else is copied as it is: `path` is the `url` crate's serialization, so
        // ASCII, and a lone `%` stays a lone `%`.
        out.push(char::from(b));
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_urls_match() {
        let same = [
            (
                "https://server.example.com/token",
                "https://server.example.com/token",
            ),
            (
                "HTTPS://Server.Example.COM/token",
                "https://server.example.com/token",
            ),
            (
                "https://server.example.com:443/token",
                "https://server.example.com/token",
            ),
            ("http://server.example.com:80/", "http://server.example.com"),
            ("https://server.example.com", "https://server.example.com/"),
            ("https://s.example/a/%7euser", "https://s.example/a/~user"),
            ("https://s.example/a%2fb", "https://s.example/a%2Fb"),
            ("https://s.example/a/./b/../c", "https://s.example/a/c"),
            ("https://s.example/r?x=1#f", "https://s.example/r?y=2"),
            ("https://s.example/r?x=1", "https://s.example/r"),
        ];
        for (a, b) in same {
            assert!(htu_matches(a, b), "{a} {b}");
            assert!(htu_matches(b, a), "{b} {a}");
        }
    }

    #[test]
    fn different_urls_do_not() {
        let different = [
            (
                "https://server.example.com/token",
                "http://server.example.com/token",
            ),
            (
                "https://server.example.com/token",
                "https://server.example.com/Token",
            ),
            (
                "https://server.example.com/token",
                "https://server.example.com:8443/token",
            ),
            (
                "https://server.example.com/token",
                "https://other.example.com/token",
            ),
            (
                "https://server.example.com/token",
                "https://server.example.com/token/",
            ),
            ("https://s.example/a%2fb", "https://s.example/a/b"),
            ("/token", "/token"),
            ("ftp://s.example/x", "ftp://s.example/x"),
            ("not a url", "not a url"),
            ("", ""),
        ];
        for (a, b) in different {
            assert!(!htu_matches(a, b), "{a} {b}");
        }
    }

    #[test]
    fn percent_normalization() {
        assert_eq!(normalize_percent("/%41%7e%2f%2F%zz%"), "/A~%2F%2F%zz%");
    }
}
