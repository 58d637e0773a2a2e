//! Opaque tokens: anything that is not shaped like a compact JWS (two dots) or a JWE (four)
//! goes to the introspecting provider of its tenant (RFC 7662).
//!
//! Which provider: among the providers that opted in (`introspection`), those of the tenant
//! the request names, or all of them when it names none; the first in configuration order.
//! When no tenant is named and the providers that introspect belong to more than one tenant,
//! the token is sent to no one (`tenant_required`): a token must never reach an issuer it was
//! not meant for. Only that one provider is asked: a token is not shopped around.
//!
//! The endpoint's `active: true` answer is judged like a JWT's claims (`iss` when present,
//! `aud`, `exp`, `nbf`, `iat`), and revocations by `jti`, subject and the token's SHA-256 are
//! checked on every use, cached or not. Answers are cached by the token's SHA-256 (the token
//! itself is never stored): accepted ones until the earlier of `exp` and the positive bound,
//! refused ones for the negative time. A token that cannot be checked (the call budget is
//! spent, or the endpoint fails) is answered at once with a 503-class reason, never accepted.

use std::sync::Arc;
use std::time::SystemTime;

use super::checks::check_claims;
use super::{Registry, VerifiedToken, Verifier};
use crate::clock::unix_seconds;
use crate::error::{ClaimsError, VerifyError};
use crate::introspect::{Answer, IntrospectionError, Introspector, Lookup, Said};
use crate::provider::{Counters, Provider};
use crate::revoke::{TokenFacts, token_sha256};
use crate::token::RegisteredClaims;

impl Verifier {
    /// Verifies an opaque token by introspection; `None` when no provider in scope accepts
    /// opaque tokens, so the caller refuses it as before.
    pub(super) async fn verify_opaque(
        &self,
        registry: &Registry,
        tenant: Option<&str>,
        token: &str,
        now: SystemTime,
    ) -> Option<Result<Arc<VerifiedToken>, VerifyError>> {
        let mut candidates = registry
            .providers
            .iter()
            .filter_map(|p| Some((p, p.introspector.as_ref()?)))
            .filter(|(p, _)| tenant.is_none_or(|t| *p.id.tenant() == *t));
        let (provider, introspector) = candidates.next()?;
        if tenant.is_none() && candidates.any(|(p, _)| p.id.tenant() != provider.id.tenant()) {
            return Some(Err(VerifyError::Introspection(
                IntrospectionError::TenantRequired,
            )));
        }
        let result = self.introspect(provider, introspector, token, now).await;
        if let Err(e) = &result {
            tracing::debug!(reason = e.reason().as_str(), "opaque token refused");
        }
        Some(result)
    }

    async fn introspect(
        &self,
        provider: &Arc<Provider>,
        introspector: &Arc<Introspector>,
        token: &str,
        now: SystemTime,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        let digest = token_sha256(token);
        let flight = match introspector.lookup(&digest, now) {
            Lookup::Hit(answer) => {
                Counters::bump(&provider.counters.introspection_cache_hits);
                return self.still_unrevoked(provider, token, answer);
            }
            Lookup::Joined(flight) => flight,
            Lookup::Miss => {
                let permit = introspector.admit().map_err(|e| {
                    Counters::bump(&provider.counters.introspections_over_budget);
                    VerifyError::Introspection(e)
                })?;
                let call_provider = Arc::clone(provider);
                let call_introspector = Arc::clone(introspector);
                let clock = Arc::clone(&self.inner.clock);
                let owned = token.to_owned();
                introspector.start(
                    &digest,
                    now,
                    Box::pin(async move {
                        let said = call_provider.introspect(&call_introspector, &owned).await;
                        drop(permit);
                        Ok(judge(&call_provider, said?, clock.now()))
                    }),
                )
            }
        };
        let answer = flight.await.map_err(VerifyError::Introspection)?;
        self.still_unrevoked(provider, token, answer)
    }

    /// Revocations are checked on every use of an answer, cached or fresh.
    fn still_unrevoked(
        &self,
        provider: &Provider,
        token: &str,
        answer: Answer,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        let verified = answer?;
        let facts = TokenFacts {
            provider: &provider.id,
            kid: None,
            jti: verified.jti(),
            sub: verified.subject(),
            iat: verified.issued_at(),
            token: Some(token),
        };
        match self.inner.revocations.check(&facts) {
            Some(by) => Err(VerifyError::Revoked(by)),
            None => Ok(verified),
        }
    }
}

/// Judges what the endpoint said at `now`: an active token's claims as a JWT's would be.
fn judge(provider: &Provider, said: Said, now: SystemTime) -> Answer {
    let body = match said {
        Said::Inactive => return Err(VerifyError::Introspection(IntrospectionError::Inactive)),
        Said::Active(body) => body,
    };
    let config = &provider.config;
    let claims = RegisteredClaims::parse(&body)?;
    if let Some(iss) = &claims.iss
        && iss.as_str("iss").map_err(VerifyError::Claims)? != &*config.issuer
    {
        return Err(VerifyError::Claims(ClaimsError::BadIssuer));
    }
    let checked = check_claims(&claims, config, unix_seconds(now)).map_err(VerifyError::Claims)?;
    let cnf_jkt = super::dpop::cnf_jkt(config.dpop, &body)?;
    Ok(Arc::new(VerifiedToken {
        provider: provider.id.clone(),
        alg: None,
        kid: None,
        issuer: Arc::clone(&config.issuer),
        subject: checked.sub.map(Into::into),
        jti: checked.jti.map(Into::into),
        exp: checked.exp,
        iat: checked.iat,
        cnf_jkt,
        claims: body.as_str().into(),
    }))
}
