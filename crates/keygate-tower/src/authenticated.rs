//! [`Authenticated`]: the verified token, as the layer leaves it in request extensions.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use keygate::VerifiedToken;

/// The token [`JwtAuth`](crate::JwtAuth) verified for this request, in its extensions.
///
/// Dereferences to [`VerifiedToken`] (subject, issuer, tenant, claims). Without the `axum`
/// feature, read it with `request.extensions().get::<Authenticated>()`; with it, it is also
/// an extractor. Cheap to clone.
#[derive(Clone)]
pub struct Authenticated(Arc<VerifiedToken>);

impl Authenticated {
    /// Wraps a verified token, e.g. to call a handler in a unit test.
    #[must_use]
    pub fn new(token: Arc<VerifiedToken>) -> Self {
        Authenticated(token)
    }

    /// The verified token.
    #[must_use]
    pub fn token(&self) -> &Arc<VerifiedToken> {
        &self.0
    }

    /// Unwraps the verified token.
    #[must_use]
    pub fn into_token(self) -> Arc<VerifiedToken> {
        self.0
    }
}

impl Deref for Authenticated {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        &self.0
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `VerifiedToken`'s own `Debug` shows no claims beyond `sub`.
        f.debug_tuple("Authenticated").field(&self.0).finish()
    }
}
