//! The DPoP side of `/verify` (RFC 9449): the proof is checked against the request the proxy
//! describes, as the client made it.
//!
//! `htm` is the request's method and `htu` its URL without query and fragment, both as the
//! policy reads them (see `target.rs`): the path from `X-Forwarded-Uri` / `X-Original-URI` /
//! the path after `/verify`; the host from `X-Forwarded-Host`, else the `[server]
//! external_url`'s, else `Host`; the scheme from `X-Forwarded-Proto`, else the external URL's,
//! else `https`. A bearer token that needs no proof costs none of this.

use http::{HeaderMap, HeaderName, Method, Uri};
use keygate::bearer::Scheme;
use keygate::dpop::{DpopMode, DpopRequest};
use keygate::{VerifiedToken, VerifyError};
use url::Url;

use super::target::{RawTarget, raw_target};
use super::{Forward, ForwardSettings, Refusal};

const DPOP: HeaderName = HeaderName::from_static("dpop");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Checks that `verified` (from `token`, sent with `scheme`) is presented as its provider's
/// DPoP mode demands.
pub(super) async fn check_binding(
    app: &Forward,
    s: &ForwardSettings,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    scheme: Scheme,
    token: &str,
    verified: &VerifiedToken,
) -> Result<(), Refusal> {
    let verifier = app.node.verifier();
    let provider = verified.provider();
    if scheme == Scheme::Bearer
        && verified.cnf_jkt().is_none()
        && verifier.dpop_mode(provider) != DpopMode::Required
    {
        return Ok(());
    }
    // A header value that is not text cannot be a proof: it counts as one, and fails.
    let proofs: Vec<&str> = headers
        .get_all(DPOP)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    let (htm, htu) = match raw_target(method, uri, headers) {
        Ok(target) => (
            target.method,
            request_url(s.external_url.as_ref(), headers, &target),
        ),
        // Headers that disagree name no one request: no proof can be for it.
        Err(_) => (method.as_str(), String::new()),
    };
    let request = DpopRequest {
        method: htm,
        url: &htu,
        proofs: &proofs,
    };
    verifier
        .check_dpop(verified, token, scheme, &request)
        .await
        .map_err(|error| Refusal::Dpop {
            algs: algs(&verifier.dpop_algorithms(provider)),
            error,
        })
}

/// The URL the client called, without query and fragment: the target's path, its host as
/// the proxy forwarded it (else the external URL's, else the `/verify` request's own), and
/// the scheme from `X-Forwarded-Proto` (one value; else the external URL's, else `https`).
fn request_url(external: Option<&Url>, headers: &HeaderMap, target: &RawTarget<'_>) -> String {
    let mut protos = headers.get_all(FORWARDED_PROTO).iter();
    let proto = match (protos.next(), protos.next()) {
        (Some(v), None) => v.to_str().ok().filter(|v| !v.contains(',')),
        _ => None,
    };
    let scheme = proto
        .map(str::trim)
        .or(external.map(Url::scheme))
        .unwrap_or("https");
    let external_host = external.and_then(|u| {
        let host = u.host_str()?;
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        })
    });
    let host = match (target.host, external_host) {
        (Some(h), _) if target.host_forwarded => h.to_owned(),
        (_, Some(h)) => h,
        (h, None) => h.unwrap_or_default().to_owned(),
    };
    let uri = target.uri;
    let end = uri
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(uri.len());
    let path = String::from_utf8_lossy(&uri[..end]);
    format!("{scheme}://{host}{path}")
}

/// The `algs` parameter: the provider's algorithms, space-separated.
fn algs(algorithms: &[keygate::Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `WWW-Authenticate: DPoP` challenge for a refused binding (RFC 9449 section 7.1):
/// `invalid_dpop_proof` when the proof is at fault, `invalid_token` when the token was
/// presented the wrong way.
pub(super) fn challenge(error: &VerifyError, algs: &str) -> String {
    let code = match error {
        VerifyError::Dpop(e) if !e.is_proof_error() => "invalid_token",
        _ => "invalid_dpop_proof",
    };
    let description = error.reason().description();
    format!("DPoP error=\"{code}\", error_description=\"{description}\", algs=\"{algs}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_url_comes_from_the_proxy_then_the_external_url_then_host() {
        let external: Url = "https://api.example.com:8443/".parse().unwrap();
        // The target as `raw_target` reads it from these headers.
        let url = |external: Option<&Url>, pairs: &[(&'static str, &str)], path: &str| {
            let h = headers(pairs);
            let uri: Uri = format!("/verify{path}").parse().unwrap();
            let target = raw_target(&Method::GET, &uri, &h).unwrap();
            request_url(external, &h, &target)
        };
        assert_eq!(
            url(
                Some(&external),
                &[
                    ("x-forwarded-proto", "http"),
                    ("x-forwarded-host", "shop.test"),
                    ("x-forwarded-uri", "/orders/1?x=1#f"),
                    ("host", "keygate:8080"),
                ],
                ""
            ),
            "http://shop.test/orders/1"
        );
        let h = [("host", "keygate:8080")];
        assert_eq!(
            url(Some(&external), &h, "/a"),
            "https://api.example.com:8443/a"
        );
        assert_eq!(url(None, &h, "/a"), "https://keygate:8080/a");
        // A proxy chain's list names no one scheme: the fallback decides.
        let h = [("x-forwarded-proto", "http, https"), ("host", "h")];
        assert_eq!(url(None, &h, "/"), "https://h/");
    }

    #[test]
    fn the_challenge_names_the_error_and_the_algorithms() {
        let proof = VerifyError::Dpop(keygate::dpop::DpopError::Replayed);
        assert_eq!(
            challenge(&proof, "ES256 PS256"),
            "DPoP error=\"invalid_dpop_proof\", error_description=\"DPoP proof replayed\", algs=\"ES256 PS256\""
        );
        let bearer = VerifyError::Dpop(keygate::dpop::DpopError::BoundTokenAsBearer);
        assert!(challenge(&bearer, "ES256").starts_with("DPoP error=\"invalid_token\""));
    }
}
