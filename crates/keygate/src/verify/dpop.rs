//! The DPoP side of the [`Verifier`]: which tokens must come with a proof, checking that proof
//! against the token and the request, and reading a JWT's `cnf.jkt` (RFC 9449 section 6.1).

use crate::alg::Algorithm;
use crate::bearer::Scheme;
use crate::dpop::json::Members;
use crate::dpop::{DpopError, DpopMode, DpopRequest, ProofCheck};
use crate::error::{ClaimsError, VerifyError};
use crate::provider::ProviderId;

use super::{VerifiedToken, Verifier};

impl Verifier {
    /// Checks that `token`, verified from `raw_token` and presented with `scheme`, is
    /// presented as its provider's DPoP mode demands, with a valid proof when it is bound to a
    /// key (`cnf.jkt`):
    ///
    /// - mode `off`: `Bearer` passes (any proof is ignored); `DPoP` is
    ///   [`DpopError::UnboundToken`];
    /// - mode `allowed`: a bound token must come as `DPoP` ([`DpopError::BoundTokenAsBearer`])
    ///   with a proof by its key for this request (see [`crate::dpop`] for every check, the
    ///   replay check last); an unbound token must come as `Bearer`
    ///   ([`DpopError::UnboundToken`]);
    /// - mode `required`: an unbound token is [`DpopError::Required`]; a bound one as for
    ///   `allowed`.
    ///
    /// A token whose provider has since been removed is judged as mode `off`.
    ///
    /// # Errors
    /// [`VerifyError::Dpop`] with the [`DpopError`] at fault.
    pub async fn check_dpop(
        &self,
        token: &VerifiedToken,
        raw_token: &str,
        scheme: Scheme,
        request: &DpopRequest<'_>,
    ) -> Result<(), VerifyError> {
        // Held whole for this check, so a reconfiguration meanwhile cannot mix two configs.
        let provider = self.find(&token.provider).ok().map(|(_, p)| p);
        let config = provider
            .as_ref()
            .map(|p| &p.config)
            .filter(|c| c.dpop != DpopMode::Off);
        let refuse = |e| Err(VerifyError::Dpop(e));
        let (Some(config), Some(jkt)) = (config, token.cnf_jkt()) else {
            // DPoP off, or a token bound to no key: a bearer token, unless DPoP is required.
            return match (config.map(|c| c.dpop), scheme) {
                (Some(DpopMode::Required), _) => refuse(DpopError::Required),
                (_, Scheme::Bearer) => Ok(()),
                (_, Scheme::Dpop) => refuse(DpopError::UnboundToken),
            };
        };
        if scheme != Scheme::Dpop {
            return refuse(DpopError::BoundTokenAsBearer);
        }
        ProofCheck::new(request.method, request.url, self.inner.clock.now())
            .access_token(raw_token)
            .jkt(jkt)
            .algorithms(&config.algorithms)
            .iat_window(config.dpop_iat_window)
            .check_once(request.proofs, &*self.inner.replay_guard)
            .await
            .map(drop)
            .map_err(VerifyError::Dpop)
    }

    /// How `provider` treats DPoP ([`DpopMode::Off`] for an unknown provider): lets a caller
    /// skip building the request's URL for a bearer token that needs no proof.
    #[must_use]
    pub fn dpop_mode(&self, provider: &ProviderId) -> DpopMode {
        // On every bearer request: a look through the registry, no reference taken (cores
        // would contend for one count).
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .find(|p| p.id == *provider)
            .map_or(DpopMode::Off, |p| p.config.dpop)
    }

    /// The algorithms a DPoP proof may be signed with for `provider`, for the `algs`
    /// parameter of a `WWW-Authenticate: DPoP` challenge (RFC 9449 section 7.1): the
    /// provider's allow-list, all asymmetric. Empty for an unknown provider.
    #[must_use]
    pub fn dpop_algorithms(&self, provider: &ProviderId) -> Vec<Algorithm> {
        self.find(provider)
            .map(|(_, p)| p.config.algorithms.clone())
            .unwrap_or_default()
    }
}

/// The `cnf.jkt` of a verified JWT's payload when its provider checks DPoP (`mode` not
/// `off`); `None` without `cnf` or without `jkt` in it (`cnf` may confirm other kinds of
/// key). With mode `off` the payload is not looked at again.
///
/// # Errors
/// [`ClaimsError::Invalid`]`("cnf")` when `cnf` is not an object with distinct members, or
/// its `jkt` is not a string.
pub(super) fn cnf_jkt(mode: DpopMode, payload: &str) -> Result<Option<Box<str>>, VerifyError> {
    if mode == DpopMode::Off {
        return Ok(None);
    }
    let invalid = || VerifyError::Claims(ClaimsError::Invalid("cnf"));
    // The payload already parsed strictly once; this second pass reads only `cnf`.
    let claims = Members::parse(payload).ok_or_else(invalid)?;
    let Some(cnf) = claims.get("cnf") else {
        return Ok(None);
    };
    let cnf = Members::parse(cnf.get()).ok_or_else(invalid)?;
    match cnf.str("jkt") {
        Ok(jkt) => Ok(jkt.map(String::into_boxed_str)),
        Err(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cnf_jkt_is_read_only_when_dpop_is_on() {
        let bound = r#"{"sub":"a","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}"#;
        assert_eq!(cnf_jkt(DpopMode::Off, bound).unwrap(), None);
        for mode in [DpopMode::Allowed, DpopMode::Required] {
            assert_eq!(
                cnf_jkt(mode, bound).unwrap().as_deref(),
                Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
            );
            assert_eq!(cnf_jkt(mode, r#"{"sub":"a"}"#).unwrap(), None);
            assert_eq!(
                cnf_jkt(mode, r#"{"cnf":{"x5t#S256":"abc"}}"#).unwrap(),
                None
            );
            for bad in [
                r#"{"cnf":"jkt"}"#,
                r#"{"cnf":null}"#,
                r#"{"cnf":{"jkt":7}}"#,
                r#"{"cnf":{"jkt":"a","jkt":"b"}}"#,
            ] {
                assert!(
                    matches!(
                        cnf_jkt(mode, bad),
                        Err(VerifyError::Claims(ClaimsError::Invalid("cnf")))
                    ),
                    "{bad}"
                );
            }
        }
    }
}
