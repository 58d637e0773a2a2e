//! Required scopes: the [`Scopes`] a route needs, how a token grants them, and the
//! [`RequireScopesLayer`] that checks them per route behind a [`JwtAuthLayer`].
//!
//! [`JwtAuthLayer`]: crate::JwtAuthLayer

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use keygate::VerifiedToken;
use serde::Deserialize;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticated::Authenticated;
use crate::future::RequireScopesFuture;
use crate::rejection::{
    DefaultRejection, InvalidParam, OnRejection, Realm, Rejection, RejectionKind, quoted_safe,
    reject,
};

/// A non-empty set of OAuth scopes, all of which a token must grant.
///
/// A token grants the scopes listed in its `scope` claim (a space-delimited string, RFC 8693
/// section 4.2 and RFC 9068) and in its `scp` claim (an array of strings, or a
/// space-delimited string, as some issuers write it). Cheap to clone.
///
/// ```
/// use keygate_tower::Scopes;
///
/// let scopes: Scopes = "notes:read notes:write".parse()?;
/// assert_eq!(scopes, Scopes::new(["notes:read", "notes:write"])?);
/// assert_eq!(scopes.to_string(), "notes:read notes:write");
/// # Ok::<(), keygate_tower::InvalidParam>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Scopes(Arc<[Box<str>]>);

impl Scopes {
    /// Checks each scope and collects them.
    ///
    /// # Errors
    /// [`InvalidParam`] if there is none, or one is empty or holds a character outside the
    /// `scope-token` alphabet (RFC 6749 appendix A.4: printable ASCII without space, `"` and
    /// `\`).
    pub fn new<I, S>(scopes: I) -> Result<Self, InvalidParam>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for scope in scopes {
            let scope = scope.as_ref();
            if scope.is_empty() || !scope.bytes().all(quoted_safe) {
                return Err(InvalidParam::new(
                    "scope",
                    "a scope is printable ASCII without space, '\"' and '\\'",
                ));
            }
            if !list.iter().any(|s| **s == *scope) {
                list.push(scope.into());
            }
        }
        if list.is_empty() {
            return Err(InvalidParam::new("scope", "at least one scope is required"));
        }
        Ok(Scopes(list.into()))
    }

    /// The scopes, in the order given, without repeats.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    /// Whether `token` grants every one of these scopes.
    #[must_use]
    pub fn granted_by(&self, token: &VerifiedToken) -> bool {
        // Only the two claims are materialised; a claims set that does not even parse into
        // this shape grants nothing.
        let Ok(claims) = token.deserialize_claims::<ScopeClaims>() else {
            return false;
        };
        let granted: Vec<&str> = granted(claims.scope.as_ref())
            .chain(granted(claims.scp.as_ref()))
            .collect();
        self.iter().all(|required| granted.contains(&required))
    }
}

impl FromStr for Scopes {
    type Err = InvalidParam;

    /// Parses a space-delimited list, as in a `scope` claim.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scopes::new(s.split_ascii_whitespace())
    }
}

impl fmt::Display for Scopes {
    /// Space-delimited, as in a `scope` claim or challenge parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Requires scopes of the token a [`JwtAuthLayer`](crate::JwtAuthLayer) in front of it
/// authenticated: 403 `insufficient_scope` when one is missing, 401 when no layer
/// authenticated the request.
///
/// Apply it to the routes that need more than a valid token, beneath one
/// `JwtAuthLayer`. [`JwtAuthLayer::scopes_layer`](crate::JwtAuthLayer::scopes_layer) makes
/// one with the same realm and rejection handler as the authentication layer.
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use keygate_tower::{JwtAuthLayer, RequireScopesLayer};
/// # fn app(auth: JwtAuthLayer) -> Result<Router, keygate_tower::InvalidParam> {
/// let app: Router = Router::new()
///     .route("/notes", get(|| async { "notes" }))
///     .route(
///         "/notes/new",
///         post(|| async { "created" }).route_layer(RequireScopesLayer::new("notes:write".parse()?)),
///     )
///     .layer(auth);
/// # Ok(app) }
/// ```
#[must_use]
pub struct RequireScopesLayer<R = DefaultRejection> {
    scopes: Scopes,
    realm: Option<Realm>,
    on_rejection: Arc<R>,
}

impl RequireScopesLayer {
    /// Requires every one of `scopes`, refusing with the [`DefaultRejection`].
    pub fn new(scopes: Scopes) -> Self {
        RequireScopesLayer {
            scopes,
            realm: None,
            on_rejection: Arc::new(DefaultRejection),
        }
    }
}

impl<R> RequireScopesLayer<R> {
    pub(crate) fn with_parts(scopes: Scopes, realm: Option<Realm>, on_rejection: Arc<R>) -> Self {
        RequireScopesLayer {
            scopes,
            realm,
            on_rejection,
        }
    }

    /// Names `realm` in the challenges this layer sends.
    pub fn realm(mut self, realm: Realm) -> Self {
        self.realm = Some(realm);
        self
    }

    /// Builds refusals with `handler` instead (see [`OnRejection`]).
    pub fn on_rejection<R2>(self, handler: R2) -> RequireScopesLayer<R2> {
        RequireScopesLayer {
            scopes: self.scopes,
            realm: self.realm,
            on_rejection: Arc::new(handler),
        }
    }
}

impl<R> Clone for RequireScopesLayer<R> {
    fn clone(&self) -> Self {
        RequireScopesLayer {
            scopes: self.scopes.clone(),
            realm: self.realm.clone(),
            on_rejection: Arc::clone(&self.on_rejection),
        }
    }
}

impl<R> fmt::Debug for RequireScopesLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesLayer")
            .field("scopes", &self.scopes)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl<S, R> Layer<S> for RequireScopesLayer<R> {
    type Service = RequireScopes<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopes {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RequireScopesLayer`] makes.
pub struct RequireScopes<S, R = DefaultRejection> {
    inner: S,
    layer: RequireScopesLayer<R>,
}

inner_service_accessors!(RequireScopes);

impl<S: Clone, R> Clone for RequireScopes<S, R> {
    fn clone(&self) -> Self {
        RequireScopes {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for RequireScopes<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopes")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, ReqBody, ResBody, R> Service<Request<ReqBody>> for RequireScopes<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequireScopesFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let refused = match request.extensions().get::<Authenticated>() {
            None => Some(RejectionKind::NotAuthenticated),
            Some(auth) if !self.layer.scopes.granted_by(auth) => {
                Some(RejectionKind::InsufficientScope(self.layer.scopes.clone()))
            }
            Some(_) => None,
        };
        match refused {
            None => RequireScopesFuture::inner(self.inner.call(request)),
            Some(kind) => {
                let rejection = Rejection::in_realm(kind, self.layer.realm.as_ref());
                RequireScopesFuture::rejected(reject(&*self.layer.on_rejection, rejection))
            }
        }
    }
}

/// The two claims that grant scopes. Each is kept as raw JSON so that one of an unexpected
/// type spoils only itself.
#[derive(Deserialize)]
struct ScopeClaims {
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
}

/// The scopes one claim grants: the words of a string, or the strings of an array.
fn granted(claim: Option<&Value>) -> impl Iterator<Item = &str> {
    let (text, list) = match claim {
        Some(Value::String(s)) => (Some(s.split_ascii_whitespace()), None),
        Some(Value::Array(items)) => (None, Some(items.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    text.into_iter().flatten().chain(list.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_parse_and_dedupe() {
        let s: Scopes = "  read write read ".parse().unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), ["read", "write"]);
        assert_eq!(s.to_string(), "read write");
        assert_eq!(format!("{s:?}"), r#"["read", "write"]"#);
    }

    #[test]
    fn invalid_scopes_are_refused() {
        assert!("".parse::<Scopes>().is_err());
        assert!(Scopes::new(Vec::<String>::new()).is_err());
        for bad in ["", "a b", "a\"b", "a\\b", "caf\u{e9}", "tab\t"] {
            assert!(Scopes::new([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claims_grant_scopes_from_strings_and_arrays() {
        let words = |v: Value| granted(Some(&v)).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(words(json!("a  b")), ["a", "b"]);
        assert_eq!(words(json!(["a", 1, "b"])), ["a", "b"]);
        assert!(words(json!(5)).is_empty());
        assert!(words(json!({"a": true})).is_empty());
    }
}
