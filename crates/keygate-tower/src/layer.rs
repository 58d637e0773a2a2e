//! [`JwtAuthLayer`] and the service it makes, [`JwtAuth`]: read the bearer token, verify it,
//! check the layer's scopes, and pass the request on with an [`Authenticated`] extension.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use keygate::{VerifiedToken, Verifier, VerifyError};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticated::Authenticated;
use crate::bearer::{bearer_token, mark_sensitive};
use crate::future::ResponseFuture;
use crate::rejection::{DefaultRejection, OnRejection, Realm, Rejection, RejectionKind, reject};
use crate::scope::{RequireScopesLayer, Scopes};

/// Authenticates every request with a bearer JWT before it reaches the inner service.
///
/// For each request, [`JwtAuth`]:
/// 1. marks every `Authorization` header value [sensitive](http::HeaderValue::set_sensitive)
///    (layers outside this one saw the request before; if one of them logs headers, put
///    tower-http's `SetSensitiveRequestHeadersLayer` in front of it);
/// 2. reads one bearer token from it (RFC 6750 section 2.1);
/// 3. verifies it with the [`Verifier`] (or [`verify_for_tenant`](Verifier::verify_for_tenant)
///    when the layer is narrowed with [`for_tenant`](Self::for_tenant));
/// 4. checks the [required scopes](Self::require_scopes), if any;
/// 5. calls the inner service with an [`Authenticated`] in the request extensions.
///
/// Any failure becomes a [`Rejection`] that the [`OnRejection`] handler (by default
/// [`DefaultRejection`]) turns into the response; the inner service is not called.
///
/// | request | status | `WWW-Authenticate` |
/// |---|---|---|
/// | no `Authorization`, or another scheme | 401 | `Bearer` |
/// | several `Authorization` headers, `Bearer` with no token, not a `b64token` | 400 | `Bearer error="invalid_request", error_description="<reason>"` |
/// | token refused by the verifier | 401 | `Bearer error="invalid_token", error_description="<reason>"` |
/// | issuer's keys unavailable | 503 | none |
/// | a required scope missing | 403 | `Bearer error="insufficient_scope", scope="<required>"` |
///
/// `<reason>` is the stable reason code ([`Rejection::reason`]); the token is never echoed.
///
/// Clones of the layer and of every service it makes share the one verifier, so its key
/// cache and background refresh exist once however many routes or connections there are.
#[must_use]
pub struct JwtAuthLayer<R = DefaultRejection> {
    shared: Shared<R>,
}

impl JwtAuthLayer {
    /// Authenticates with `verifier`, refusing with the [`DefaultRejection`].
    pub fn new(verifier: Verifier) -> Self {
        JwtAuthLayer {
            shared: Shared {
                verifier,
                tenant: None,
                scopes: None,
                realm: None,
                on_rejection: Arc::new(DefaultRejection),
            },
        }
    }
}

impl<R> JwtAuthLayer<R> {
    /// Accepts only tokens from the providers of `tenant` (see
    /// [`Verifier::verify_for_tenant`]); a token from another tenant's issuer is refused
    /// with `bad_issuer`.
    pub fn for_tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.shared.tenant = Some(tenant.into());
        self
    }

    /// Requires every one of `scopes` on every request through this layer (403
    /// `insufficient_scope` otherwise). For scopes that differ per route, put a
    /// [`scopes_layer`](Self::scopes_layer) on those routes instead.
    pub fn require_scopes(mut self, scopes: Scopes) -> Self {
        self.shared.scopes = Some(scopes);
        self
    }

    /// A [`RequireScopesLayer`] for `scopes` with this layer's realm and rejection handler,
    /// to put on the routes (beneath this layer) that need them.
    ///
    /// ```
    /// use axum::{Router, routing::{get, post}};
    /// use keygate_tower::JwtAuthLayer;
    /// # fn app(auth: JwtAuthLayer) -> Result<Router, keygate_tower::InvalidParam> {
    /// let app: Router = Router::new()
    ///     .route("/notes", get(|| async { "notes" }))
    ///     .route("/notes/new", post(|| async { "created" }).route_layer(auth.scopes_layer("write".parse()?)))
    ///     .layer(auth);
    /// # Ok(app) }
    /// ```
    pub fn scopes_layer(&self, scopes: Scopes) -> RequireScopesLayer<R> {
        RequireScopesLayer::with_parts(
            scopes,
            self.shared.realm.clone(),
            Arc::clone(&self.shared.on_rejection),
        )
    }

    /// Names `realm` in every challenge.
    pub fn realm(mut self, realm: Realm) -> Self {
        self.shared.realm = Some(realm);
        self
    }

    /// Builds refusals with `handler` instead: a closure `Fn(Rejection) -> Response<B>` or
    /// any [`OnRejection`].
    pub fn on_rejection<R2>(self, handler: R2) -> JwtAuthLayer<R2> {
        let Shared {
            verifier,
            tenant,
            scopes,
            realm,
            on_rejection: _,
        } = self.shared;
        JwtAuthLayer {
            shared: Shared {
                verifier,
                tenant,
                scopes,
                realm,
                on_rejection: Arc::new(handler),
            },
        }
    }

    /// The verifier, e.g. to read its [`status`](Verifier::status) on an admin route.
    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }
}

impl<R> Clone for JwtAuthLayer<R> {
    fn clone(&self) -> Self {
        JwtAuthLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<R> fmt::Debug for JwtAuthLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("verifier", &self.shared.verifier)
            .field("tenant", &self.shared.tenant)
            .field("scopes", &self.shared.scopes)
            .field("realm", &self.shared.realm)
            .finish_non_exhaustive()
    }
}

impl<S, R> Layer<S> for JwtAuthLayer<R> {
    type Service = JwtAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}

/// The service [`JwtAuthLayer`] makes; see there for what it does.
///
/// `Clone` when `S` is (required anyway: the request waits for verification holding the
/// instance `poll_ready` readied, and a clone takes its place); `Send` and `Sync` when `S`
/// and the handler are.
pub struct JwtAuth<S, R = DefaultRejection> {
    inner: S,
    shared: Arc<Shared<R>>,
}

inner_service_accessors!(JwtAuth);

impl<S: Clone, R> Clone for JwtAuth<S, R> {
    fn clone(&self) -> Self {
        JwtAuth {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for JwtAuth<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("verifier", &self.shared.verifier)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, R> Service<Request<ReqBody>> for JwtAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // First, before anything can fail: the services inside this one, and whatever holds
        // on to the request afterwards, must not print the credentials.
        mark_sensitive(request.headers_mut());
        let token = match bearer_token(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(kind) => return ResponseFuture::rejected(kind, Arc::clone(&self.shared)),
        };
        let verify = self.shared.verify(token);
        // tower's readiness contract: the instance `poll_ready` readied is the one to call,
        // and the call happens only after verification, so it travels with the request and
        // a clone (to be readied by the next `poll_ready`) takes its place.
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(verify, request, ready, Arc::clone(&self.shared))
    }
}

/// The verification in flight; boxed because [`Verifier::verify`]'s future is unnameable.
pub(crate) type VerifyFuture =
    Pin<Box<dyn Future<Output = Result<Arc<VerifiedToken>, VerifyError>> + Send>>;

/// Everything the service and its futures share, behind one `Arc` per
/// [`Layer::layer`] call.
pub(crate) struct Shared<R> {
    verifier: Verifier,
    tenant: Option<Arc<str>>,
    scopes: Option<Scopes>,
    realm: Option<Realm>,
    on_rejection: Arc<R>,
}

impl<R> Shared<R> {
    fn verify(&self, token: String) -> VerifyFuture {
        let verifier = self.verifier.clone();
        let tenant = self.tenant.clone();
        Box::pin(async move {
            match tenant {
                Some(tenant) => verifier.verify_for_tenant(&tenant, &token).await,
                None => verifier.verify(&token).await,
            }
        })
    }

    /// The request's extension if `verified` holds and grants the layer's scopes.
    pub(crate) fn admit(
        &self,
        verified: Result<Arc<VerifiedToken>, VerifyError>,
    ) -> Result<Authenticated, RejectionKind> {
        let token = verified.map_err(RejectionKind::from)?;
        if let Some(scopes) = &self.scopes {
            if !scopes.granted_by(&token) {
                return Err(RejectionKind::InsufficientScope(scopes.clone()));
            }
        }
        Ok(Authenticated::new(token))
    }

    pub(crate) fn reject<B>(&self, kind: RejectionKind) -> Response<B>
    where
        R: OnRejection<B>,
    {
        reject(
            &*self.on_rejection,
            Rejection::in_realm(kind, self.realm.as_ref()),
        )
    }
}

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared {
            verifier: self.verifier.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.clone(),
            realm: self.realm.clone(),
            on_rejection: Arc::clone(&self.on_rejection),
        }
    }
}
