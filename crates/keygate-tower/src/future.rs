//! The response futures of [`JwtAuth`](crate::JwtAuth) and
//! [`RequireScopes`](crate::RequireScopes).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::layer::{Shared, VerifyFuture};
use crate::rejection::{DefaultRejection, OnRejection, RejectionKind};

pin_project! {
    /// The response future of [`JwtAuth`](crate::JwtAuth): verification, then the inner
    /// service's future, or the rejection.
    ///
    /// `Send` when the inner service, its future, the request body and the handler are.
    pub struct ResponseFuture<S, ReqBody, R = DefaultRejection>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        shared: Arc<Shared<R>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Verifying {
            verify: VerifyFuture,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        // `None` once the rejection has been sent (pin-project-lite has no empty variants).
        Rejected {
            kind: Option<RejectionKind>,
        },
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn verifying(
        verify: VerifyFuture,
        request: Request<ReqBody>,
        inner: S,
        shared: Arc<Shared<R>>,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                request: Some(request),
                inner: Some(inner),
            },
            shared,
        }
    }

    pub(crate) fn rejected(kind: RejectionKind, shared: Arc<Shared<R>>) -> Self {
        ResponseFuture {
            state: State::Rejected { kind: Some(kind) },
            shared,
        }
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Verifying {
                    verify,
                    request,
                    inner,
                } => {
                    let verified = ready!(verify.as_mut().poll(cx));
                    let (Some(mut request), Some(mut inner)) = (request.take(), inner.take())
                    else {
                        unreachable!("both are taken only when leaving this state")
                    };
                    match this.shared.admit(verified) {
                        Ok(authenticated) => {
                            request.extensions_mut().insert(authenticated);
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(kind) => {
                            this.state.set(State::Rejected { kind: None });
                            return Poll::Ready(Ok(this.shared.reject(kind)));
                        }
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { kind } => {
                    let kind = kind
                        .take()
                        .expect("keygate_tower::ResponseFuture polled after completion");
                    return Poll::Ready(Ok(this.shared.reject(kind)));
                }
            }
        }
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Verifying { .. } => "verifying",
            State::Calling { .. } => "calling",
            State::Rejected { kind: Some(_) } => "rejected",
            State::Rejected { kind: None } => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`RequireScopes`](crate::RequireScopes): the inner service's
    /// future, or the rejection, ready at once.
    pub struct RequireScopesFuture<F, B> {
        #[pin]
        state: ScopesState<F, B>,
    }
}

pin_project! {
    #[project = ScopesStateProj]
    enum ScopesState<F, B> {
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> RequireScopesFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        RequireScopesFuture {
            state: ScopesState::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        RequireScopesFuture {
            state: ScopesState::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for RequireScopesFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ScopesStateProj::Inner { future } => future.poll(cx),
            ScopesStateProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("keygate_tower::RequireScopesFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for RequireScopesFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            ScopesState::Inner { .. } => "calling",
            ScopesState::Rejected { .. } => "rejected",
        };
        f.debug_struct("RequireScopesFuture")
            .field("state", &state)
            .finish()
    }
}
