//! The request being authorized, as the proxy in front describes it, and the token cookie.
//!
//! Method, path and host come from, in this order: `X-Forwarded-Method` / `X-Forwarded-Uri` /
//! `X-Forwarded-Host` (Traefik ForwardAuth, Caddy `forward_auth`); `X-Original-Method` /
//! `X-Original-URI` (ingress-nginx, and the nginx `auth_request` setup the README shows); else
//! the `/verify` request itself: the path after `/verify` (nginx `proxy_pass
//! .../verify$request_uri`, Envoy ext_authz `path_prefix`), its method and its `Host`.
//!
//! A request whose headers name two different methods or paths (a header sent twice with
//! different values, or `X-Forwarded-Uri` and `X-Original-URI` disagreeing) is refused
//! (`ambiguous_request`) rather than matched on either: behind nginx a client can add its own
//! `X-Forwarded-Uri` to the subrequest, and letting it win would let the client pick the
//! route.

use http::{HeaderMap, HeaderName, Method, Uri};

use crate::policy::PolicyReason;

const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// Method, raw path (query included; normalization cuts it off) and host of the request
/// being authorized.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RawTarget<'a> {
    pub(super) method: &'a str,
    pub(super) uri: &'a [u8],
    pub(super) host: Option<&'a str>,
    /// Whether `host` came from `X-Forwarded-Host` rather than the `/verify` request's own
    /// `Host` (which may be keygate's address).
    pub(super) host_forwarded: bool,
}

/// Reads the target from the proxy's headers, or from the `/verify` request itself.
pub(super) fn raw_target<'a>(
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<RawTarget<'a>, PolicyReason> {
    let ambiguous = PolicyReason::AmbiguousRequest;
    let method = match one_of(headers, &[FORWARDED_METHOD, ORIGINAL_METHOD], true)? {
        Some(m) => std::str::from_utf8(m).map_err(|_| ambiguous)?,
        None => method.as_str(),
    };
    let uri = match one_of(headers, &[FORWARDED_URI, ORIGINAL_URI], false)? {
        Some(u) => u,
        None => {
            let path = uri.path();
            let rest = path.strip_prefix("/verify").unwrap_or(path);
            if rest.is_empty() {
                b"/"
            } else {
                rest.as_bytes()
            }
        }
    };
    let forwarded_host = one_of(headers, &[FORWARDED_HOST], true)?;
    let host = match forwarded_host {
        // A proxy chain's comma-separated list names several hosts: which one the upstream
        // serves is not ours to guess.
        Some(h) if h.contains(&b',') => return Err(ambiguous),
        Some(h) => Some(std::str::from_utf8(h).map_err(|_| ambiguous)?),
        None => match headers.get_all(http::header::HOST).iter().count() {
            0 => None,
            1 => headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
            _ => return Err(ambiguous),
        },
    };
    Ok(RawTarget {
        method,
        uri,
        host,
        host_forwarded: forwarded_host.is_some(),
    })
}

/// The one value the headers in `names` agree on (all their values, across every name), or
/// `None` when none is present. `fold_case` compares ASCII case-insensitively.
fn one_of<'a>(
    headers: &'a HeaderMap,
    names: &[HeaderName],
    fold_case: bool,
) -> Result<Option<&'a [u8]>, PolicyReason> {
    let mut found: Option<&[u8]> = None;
    for name in names {
        for value in headers.get_all(name) {
            let v = value.as_bytes();
            match found {
                None => found = Some(v),
                Some(f) if f == v || (fold_case && f.eq_ignore_ascii_case(v)) => {}
                Some(_) => return Err(PolicyReason::AmbiguousRequest),
            }
        }
    }
    Ok(found)
}

/// The token in cookie `name`, if the request carries exactly one such cookie.
///
/// # Errors
/// `()` when the cookie is sent twice (which one the application would read is anyone's
/// guess).
pub(super) fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n.trim() != name {
                continue;
            }
            if found.is_some() {
                return Err(());
            }
            // RFC 6265 section 4.1.1 allows the value in double quotes.
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            found = Some(v);
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn target(
        method: &str,
        uri: &str,
        pairs: &[(&str, &str)],
    ) -> Result<(String, String, Option<String>), PolicyReason> {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let u: Uri = uri.parse().unwrap();
        let h = headers(pairs);
        raw_target(&m, &u, &h).map(|t| {
            (
                t.method.to_owned(),
                String::from_utf8(t.uri.to_vec()).unwrap(),
                t.host.map(str::to_owned),
            )
        })
    }

    #[test]
    fn sources_in_order() {
        let t = |m, u, p: &[(&str, &str)]| target(m, u, p);
        let own = |m: &str, u: &str, h: Option<&str>| {
            Ok((m.to_owned(), u.to_owned(), h.map(str::to_owned)))
        };
        assert_eq!(t("GET", "/verify", &[]), own("GET", "/", None));
        assert_eq!(t("GET", "/verify/", &[]), own("GET", "/", None));
        assert_eq!(
            t("POST", "/verify/api/x?q=1", &[("host", "a.test")]),
            own("POST", "/api/x", Some("a.test"))
        );
        assert_eq!(
            t(
                "GET",
                "/verify/ignored",
                &[
                    ("x-forwarded-method", "DELETE"),
                    ("x-forwarded-uri", "/api/y?z"),
                    ("x-forwarded-host", "b.test"),
                    ("host", "keygate:8080"),
                ]
            ),
            own("DELETE", "/api/y?z", Some("b.test"))
        );
        assert_eq!(
            t(
                "GET",
                "/verify",
                &[("x-original-method", "PUT"), ("x-original-uri", "/o")]
            ),
            own("PUT", "/o", None)
        );
        // Agreeing sources are fine, case of methods aside.
        assert_eq!(
            t(
                "GET",
                "/verify",
                &[
                    ("x-forwarded-method", "put"),
                    ("x-original-method", "PUT"),
                    ("x-forwarded-uri", "/o"),
                    ("x-original-uri", "/o"),
                ]
            ),
            own("put", "/o", None)
        );
    }

    #[test]
    fn disagreeing_sources_are_refused() {
        let amb = Err(PolicyReason::AmbiguousRequest);
        for pairs in [
            &[("x-forwarded-uri", "/public"), ("x-original-uri", "/admin")][..],
            &[
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-uri", "/admin"),
            ],
            &[("x-forwarded-method", "GET"), ("x-original-method", "POST")],
            &[("x-forwarded-host", "a"), ("x-forwarded-host", "b")],
            &[("x-forwarded-host", "a, b")],
            &[("host", "a"), ("host", "b")],
        ] {
            assert_eq!(target("GET", "/verify", pairs), amb, "{pairs:?}");
        }
    }

    #[test]
    fn cookies() {
        let h = headers(&[("cookie", "a=1; kg=tok.en; b=2")]);
        assert_eq!(cookie_token(&h, "kg"), Ok(Some("tok.en")));
        let h = headers(&[("cookie", "a=1"), ("cookie", "kg=\"x\"")]);
        assert_eq!(cookie_token(&h, "kg"), Ok(Some("x")));
        let h = headers(&[("cookie", "kg=1; kg=2")]);
        assert_eq!(cookie_token(&h, "kg"), Err(()));
        let h = headers(&[("cookie", "kgx=1; kg=")]);
        assert_eq!(cookie_token(&h, "kg"), Ok(None));
        assert_eq!(cookie_token(&HeaderMap::new(), "kg"), Ok(None));
    }
}
