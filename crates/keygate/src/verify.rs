//! The [`Verifier`]: selects the provider by `iss`, finds the key, checks the signature, the
//! claims and the revocations, and returns a [`VerifiedToken`] that only it can construct.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;

use crate::alg::Algorithm;
use crate::clock::{Clock, unix_seconds};
use crate::error::{ClaimsError, HeaderError, KeyError, KeysUnavailable, Malformed, VerifyError};
use crate::exchange::{AdoptError, PublishedKeySet};
use crate::jwk::Lookup;
use crate::provider::{Counters, FlushId, Provider, ProviderId, ProviderStatus};
use crate::revoke::{RevocationCheck, TokenFacts};
use crate::token::{Header, RegisteredClaims, Segments, decode_into, json_text};
use crate::token_cache::{Cached, TokenCache};

mod builder;
mod checks;
mod dpop;
mod opaque;
mod reconfigure;

pub use builder::VerifierBuilder;
use checks::{SigFailure, Signed, check_claims, check_signature, typ_matches};
pub use reconfigure::ReconfigureReport;
use reconfigure::Registry;

/// The default cap on a token's length in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies JWTs against the key sets of the configured providers.
///
/// Cheap to clone: clones share the providers, their caches and background refreshers,
/// which stop when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// The providers and the issuer index over them, swapped whole by
    /// [`Verifier::reconfigure`]: a verification sees the old set or the new one, never a mix.
    registry: arc_swap::ArcSwap<Registry>,
    clock: Arc<dyn Clock>,
    revocations: Arc<dyn RevocationCheck>,
    token_cache: Option<TokenCache>,
    max_token_bytes: usize,
    /// What new providers are built with when the verifier is reconfigured.
    fetcher: Arc<dyn crate::fetch::Fetch>,
    key_exchange: Option<Arc<dyn crate::exchange::KeyExchange>>,
    /// Where seen DPoP proofs are remembered (by default in this process's memory).
    replay_guard: Arc<dyn crate::dpop::ReplayGuard>,
    /// Serializes reconfigurations; verifications never take it.
    reconfiguring: std::sync::Mutex<()>,
}

/// A token whose signature, claims and revocation status have been checked.
///
/// Only a [`Verifier`] constructs one.
pub struct VerifiedToken {
    provider: ProviderId,
    /// `None` for an opaque token accepted by introspection.
    alg: Option<Algorithm>,
    kid: Option<Arc<str>>,
    issuer: Arc<str>,
    subject: Option<Box<str>>,
    jti: Option<Box<str>>,
    exp: Option<i64>,
    iat: Option<i64>,
    /// The thumbprint of the key the token is bound to (`cnf.jkt`, RFC 9449), read only when
    /// the provider checks DPoP.
    cnf_jkt: Option<Box<str>>,
    claims: Box<str>,
}

/// The provider named in an operation does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0}")]
pub struct UnknownProvider(pub ProviderId);

/// Why an explicit refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// No such provider.
    #[error(transparent)]
    UnknownProvider(#[from] UnknownProvider),
    /// The provider's keys are fixed and never fetched.
    #[error("provider {0} has a static key set")]
    Static(ProviderId),
    /// The fetch failed; cached keys were kept.
    #[error("refresh failed: {0}")]
    Failed(KeysUnavailable),
}

impl Verifier {
    /// Starts building a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// Verifies `token`, choosing the provider by its `iss` claim among all tenants.
    ///
    /// # Errors
    /// A [`VerifyError`]; its [`reason`](VerifyError::reason) is the stable reason code.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, VerifyError> {
        self.verify_inner(None, token).await
    }

    /// Verifies `token` against the providers of `tenant` only.
    ///
    /// # Errors
    /// As [`Verifier::verify`]; a token from another tenant's issuer gets `bad_issuer`.
    pub async fn verify_for_tenant(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        self.verify_inner(Some(tenant), token).await
    }

    /// Drops a provider's cached key set and its verified tokens, and refetches at once in
    /// the background (inside a tokio runtime; otherwise the next verification fetches).
    /// Verifications meanwhile wait for that fetch. From now on no key set fetched before this
    /// call is installed or adopted: not one already in flight, not one a peer publishes.
    ///
    /// Returns the new flush's id, for replaying it on other replicas with
    /// [`Verifier::apply_flush`]. A static key set is never flushed (the id is still new).
    ///
    /// # Errors
    /// [`UnknownProvider`] if there is no such provider.
    pub fn flush(&self, id: &ProviderId) -> Result<FlushId, UnknownProvider> {
        let flush = FlushId::random();
        self.apply_flush(id, flush.clone())?;
        Ok(flush)
    }

    /// Applies flush `flush`, made on another replica (or earlier on this one), as
    /// [`Verifier::flush`] does. A flush already applied (the same id as the last one) changes
    /// nothing and returns `Ok(false)`, so replaying a log is harmless.
    ///
    /// # Errors
    /// [`UnknownProvider`] if there is no such provider.
    pub fn apply_flush(&self, id: &ProviderId, flush: FlushId) -> Result<bool, UnknownProvider> {
        let (idx, provider) = self.find(id)?;
        let applied = provider.flush(flush);
        if applied && let Some(cache) = &self.inner.token_cache {
            cache.purge_provider(idx);
        }
        // Introspection answers go with a flush too (a static key set's provider included):
        // the IdP is asked again, so a token it revoked on its side is refused from now on.
        if (applied || provider.is_static())
            && let Some(introspector) = &provider.introspector
        {
            introspector.clear();
        }
        Ok(applied)
    }

    /// The last flush applied to each provider that has one, in configuration order: what a
    /// replica hands back to a shared log that lost it.
    #[must_use]
    pub fn flushes(&self) -> Vec<(ProviderId, FlushId)> {
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .filter_map(|p| Some((p.id.clone(), p.refresher.flush_id()?)))
            .collect()
    }

    /// Refetches a provider's key set now, bypassing freshness.
    ///
    /// # Errors
    /// [`RefreshError`] when the provider is unknown or static, or the fetch fails (the
    /// cached keys are kept).
    pub async fn refresh(&self, id: &ProviderId) -> Result<(), RefreshError> {
        let (_, provider) = self.find(id)?;
        if provider.is_static() {
            return Err(RefreshError::Static(id.clone()));
        }
        provider
            .refresh_all()
            .await
            .map(drop)
            .map_err(RefreshError::Failed)
    }

    /// Fetches the keys of every provider that has none yet, e.g. at start-up. Failures are
    /// recorded in [`Verifier::status`], not returned.
    pub async fn warm_up(&self) {
        let pending: Vec<_> = self
            .inner
            .registry
            .load()
            .providers
            .iter()
            .filter(|p| p.snapshot.load().is_none())
            .map(|p| p.refresh())
            .collect();
        for refresh in pending {
            let _ = refresh.await;
        }
    }

    /// Installs a key set another replica fetched, e.g. one that arrived on the cluster's log
    /// without this replica asking, or one persisted for a warm start.
    ///
    /// The set is installed only if its `fetched_at` is newer than the held set's, and it is
    /// still usable under this provider's policy (its freshness, clamped to this provider's
    /// TTL bounds, plus this provider's stale window); otherwise it is ignored and `Ok(false)`
    /// returned. An installed set counts as a successful refresh: failures are cleared, and
    /// the next scheduled refresh is computed from its freshness. When its keys are the ones
    /// held, only the freshness is extended and verified tokens stay cached; otherwise it
    /// replaces the keys like a fetched set would. It is not published again.
    ///
    /// # Errors
    /// [`AdoptError`] when the provider is unknown or static, or the document is not a usable
    /// key set under this provider's limits (checked only for sets newer than the held one).
    pub fn adopt(&self, id: &ProviderId, set: PublishedKeySet) -> Result<bool, AdoptError> {
        let (_, provider) = self.find(id)?;
        if provider.is_static() {
            return Err(AdoptError::Static(id.clone()));
        }
        provider.adopt(&set).map_err(AdoptError::MalformedJwks)
    }

    /// The key set each provider holds, as another replica would adopt it, in configuration
    /// order: e.g. to persist the last good sets for a warm start. Static providers and
    /// providers without keys are left out.
    #[must_use]
    pub fn key_sets(&self) -> Vec<(ProviderId, PublishedKeySet)> {
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .filter_map(|p| Some((p.id.clone(), p.snapshot.load().as_ref()?.published()?)))
            .collect()
    }

    /// The state of every provider, in configuration order.
    #[must_use]
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .map(|p| p.status())
            .collect()
    }

    /// The ids of every provider, in configuration order (as configured now: a
    /// [`reconfigure`](Verifier::reconfigure) may change them).
    pub fn providers(&self) -> impl Iterator<Item = ProviderId> + use<> {
        let registry = self.inner.registry.load_full();
        (0..registry.providers.len()).map(move |i| registry.providers[i].id.clone())
    }

    /// The number of entries in the verified-token cache (0 when it is disabled).
    #[must_use]
    pub fn cached_tokens(&self) -> usize {
        self.inner.token_cache.as_ref().map_or(0, TokenCache::len)
    }

    /// Drops every verified token (keys stay), e.g. when a replica may have missed an
    /// invalidation: the next request for each token verifies it in full.
    pub fn forget_verified_tokens(&self) {
        if let Some(cache) = &self.inner.token_cache {
            cache.reindex(|_| None);
        }
        for provider in &self.inner.registry.load().providers {
            if let Some(introspector) = &provider.introspector {
                introspector.clear();
            }
        }
    }

    /// The number of cached introspection answers, over every provider.
    #[must_use]
    pub fn cached_introspections(&self) -> usize {
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .filter_map(|p| p.introspector.as_ref())
            .map(|i| i.cached())
            .sum()
    }

    /// The clock the verifier judges time by.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    fn find(&self, id: &ProviderId) -> Result<(usize, Arc<Provider>), UnknownProvider> {
        self.inner
            .registry
            .load()
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.id == *id)
            .map(|(idx, p)| (idx, Arc::clone(p)))
            .ok_or_else(|| UnknownProvider(id.clone()))
    }

    async fn verify_inner(
        &self,
        tenant: Option<&str>,
        token: &str,
    ) -> Result<Arc<VerifiedToken>, VerifyError> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Err(VerifyError::TokenTooLarge {
                limit: inner.max_token_bytes,
            });
        }
        let now = inner.clock.now();
        // Read before any check: a revocation landing mid-verification then moves the
        // generation past the one this result is cached under, so the entry is dead at once.
        let revocation_generation = inner.revocations.generation();
        if let Some(cache) = &inner.token_cache {
            let registry = inner.registry.load();
            let hit = cache.get(token, |c| {
                registry.providers.get(c.provider).is_some_and(|p| {
                    tenant.is_none_or(|t| *p.id.tenant() == *t)
                        && still_holds(p, c, revocation_generation, now)
                })
            });
            if let Some((verified, idx)) = hit {
                if let Some(provider) = registry.providers.get(idx) {
                    Counters::bump(&provider.counters.token_cache_hits);
                }
                return Ok(verified);
            }
        }

        if !looks_signed_or_encrypted(token) {
            let registry = inner.registry.load_full();
            if let Some(result) = self.verify_opaque(&registry, tenant, token, now).await {
                return result;
            }
        }
        let segments = Segments::split(token)?;
        // Decoded header, payload and signature, back to back in one buffer.
        let mut decoded = Vec::with_capacity(token.len());
        let header_at = decode_into(&mut decoded, segments.header)?;
        let payload_at = decode_into(&mut decoded, segments.payload)?;
        let signature_at = decode_into(&mut decoded, segments.signature)?;
        let header = Header::parse(json_text(&decoded[header_at], Malformed::Header)?)?;
        let payload = json_text(&decoded[payload_at], Malformed::Payload)?;
        let claims = RegisteredClaims::parse(payload)?;
        let signature = &decoded[signature_at];
        let signed = Signed {
            message: segments.signing_input.as_bytes(),
            payload,
            signature,
        };
        let iss = match &claims.iss {
            None => return Err(VerifyError::Claims(ClaimsError::Missing("iss"))),
            Some(f) => f.as_str("iss").map_err(VerifyError::Claims)?,
        };
        // The registry as it is now, held for this verification: a reconfiguration meanwhile
        // does not change the providers it chooses among.
        let registry = inner.registry.load_full();
        let candidates = registry
            .by_issuer
            .get(iss)
            .ok_or(VerifyError::Claims(ClaimsError::BadIssuer))?;
        let mut first_err = None;
        for &idx in candidates {
            let provider = &registry.providers[idx];
            if tenant.is_some_and(|t| *provider.id.tenant() != *t) {
                continue;
            }
            let attempt = self
                .verify_with(provider, token, &header, &claims, signed, now)
                .await;
            match attempt {
                Ok((verified, generation)) => {
                    let verified = Arc::new(verified);
                    let verified_under = (generation, revocation_generation);
                    self.remember(token, idx, &verified, provider, verified_under);
                    return Ok(verified);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let err = first_err.unwrap_or(VerifyError::Claims(ClaimsError::BadIssuer));
        tracing::debug!(reason = err.reason().as_str(), "token refused");
        Err(err)
    }

    async fn verify_with(
        &self,
        provider: &Arc<Provider>,
        token: &str,
        header: &Header<'_>,
        claims: &RegisteredClaims<'_>,
        signed: Signed<'_>,
        now: SystemTime,
    ) -> Result<(VerifiedToken, u64), VerifyError> {
        let config = &provider.config;
        if header.embedded_key && config.refuse_embedded_keys {
            return Err(VerifyError::Header(HeaderError::EmbeddedKey));
        }
        // RFC 9864: an `Ed25519` entry also admits `EdDSA` tokens and the other way round;
        // the key lookup then insists on an Ed25519 key.
        if !header.alg.allowed_by(&config.algorithms) {
            return Err(VerifyError::Header(HeaderError::AlgNotAllowed));
        }
        if let Some(required) = &config.required_typ {
            if !header
                .typ
                .as_deref()
                .is_some_and(|t| typ_matches(t, required))
            {
                return Err(VerifyError::Header(HeaderError::Unsupported));
            }
        }
        let kid = header.kid.as_deref();
        let Signed {
            message,
            payload,
            signature,
        } = signed;
        let snapshot = provider
            .usable_snapshot()
            .await
            .map_err(VerifyError::KeysUnavailable)?;
        let outcome = check_signature(&snapshot, kid, header.alg, message, signature);
        let (verified_kid, generation) = match outcome {
            Ok(kid) => {
                Counters::bump(&provider.counters.hits);
                kid
            }
            Err(SigFailure::Refused(e)) => return Err(VerifyError::Key(e)),
            Err(SigFailure::Missing) => {
                Counters::bump(&provider.counters.misses);
                // Rotation: one forced, rate-limited refetch, then one retry.
                let retried = match provider.forced_refresh(kid, &snapshot).await {
                    Some(Ok(fresh)) => {
                        Some(check_signature(&fresh, kid, header.alg, message, signature))
                    }
                    Some(Err(e)) => return Err(VerifyError::KeysUnavailable(e)),
                    None => None,
                };
                match retried {
                    Some(Ok(kid)) => kid,
                    Some(Err(SigFailure::Refused(e))) => return Err(VerifyError::Key(e)),
                    Some(Err(SigFailure::BadSignature(_))) => {
                        return Err(VerifyError::BadSignature);
                    }
                    Some(Err(SigFailure::Missing)) | None => {
                        // The refresher alone decides whether the refetch proved the kid
                        // absent and remembers it (see refresh/budget.rs): a set that predates the
                        // request, a peer's set or an empty bucket proves nothing.
                        Counters::bump(&provider.counters.unknown_kid_rejections);
                        return Err(VerifyError::Key(KeyError::UnknownKid));
                    }
                }
            }
            Err(SigFailure::BadSignature(material)) => {
                // The IdP may have replaced the key behind this `kid`: refetch once (within
                // the same budget) and retry only if the key actually changed.
                let Some(Ok(fresh)) = provider.forced_refresh(None, &snapshot).await else {
                    return Err(VerifyError::BadSignature);
                };
                let changed = match fresh.keys.lookup(kid, header.alg) {
                    // Several documents: any of their keys for this `kid` may have changed.
                    _ if fresh.keys.is_union() => fresh.generation != snapshot.generation,
                    Lookup::Found(key) => key.material() != &*material,
                    _ => true,
                };
                if !changed {
                    return Err(VerifyError::BadSignature);
                }
                match check_signature(&fresh, kid, header.alg, message, signature) {
                    Ok(kid) => kid,
                    Err(SigFailure::Refused(e)) => return Err(VerifyError::Key(e)),
                    Err(SigFailure::Missing) => return Err(VerifyError::Key(KeyError::UnknownKid)),
                    Err(SigFailure::BadSignature(_)) => return Err(VerifyError::BadSignature),
                }
            }
        };

        let checked =
            check_claims(claims, config, unix_seconds(now)).map_err(VerifyError::Claims)?;
        let facts = TokenFacts {
            provider: &provider.id,
            kid: verified_kid.as_deref(),
            jti: checked.jti,
            sub: checked.sub,
            iat: checked.iat,
            token: Some(token),
        };
        if let Some(by) = self.inner.revocations.check(&facts) {
            return Err(VerifyError::Revoked(by));
        }
        let verified = VerifiedToken {
            provider: provider.id.clone(),
            alg: Some(header.alg),
            kid: verified_kid,
            issuer: Arc::clone(&config.issuer),
            subject: checked.sub.map(Into::into),
            jti: checked.jti.map(Into::into),
            exp: checked.exp,
            iat: checked.iat,
            cnf_jkt: dpop::cnf_jkt(config.dpop, payload)?,
            claims: payload.into(),
        };
        Ok((verified, generation))
    }

    /// Caches a result under the key-set and revocation generations it was verified with,
    /// never later ones, so a change during verification cannot be papered over.
    fn remember(
        &self,
        token: &str,
        idx: usize,
        verified: &Arc<VerifiedToken>,
        provider: &Provider,
        (generation, revocation_generation): (u64, u64),
    ) {
        let Some(cache) = &self.inner.token_cache else {
            return;
        };
        // Tokens without `exp` are never cached: nothing would bound the entry's life.
        let Some(exp) = verified.exp else { return };
        let leeway = i64::try_from(provider.config.leeway.as_secs()).unwrap_or(i64::MAX);
        let now = self.inner.clock.now();
        // Eviction judges other entries against the providers as configured now.
        let registry = self.inner.registry.load();
        cache.insert(
            token,
            Cached {
                verified: Arc::clone(verified),
                provider: idx,
                generation,
                revocation_generation,
                valid_until: exp.saturating_add(leeway),
            },
            |c| {
                registry
                    .providers
                    .get(c.provider)
                    .is_some_and(|p| still_holds(p, c, revocation_generation, now))
            },
        );
    }
}

/// Whether `token` has the shape of a compact JWS (two dots) or JWE (four): anything else is
/// opaque and may go to introspection.
fn looks_signed_or_encrypted(token: &str) -> bool {
    matches!(memchr::memchr_iter(b'.', token.as_bytes()).count(), 2 | 4)
}

/// Whether a cached verification still holds at `now` under `provider`, the provider at its
/// index: same revocation state, token not expired, and the provider serving the very key set
/// it was verified under. Snapshot generations are unique across providers, so an entry
/// cached under an index that a reconfiguration gave to another provider is dead.
fn still_holds(
    provider: &Provider,
    c: &Cached,
    revocation_generation: u64,
    now: SystemTime,
) -> bool {
    c.revocation_generation == revocation_generation
        && unix_seconds(now) < c.valid_until
        && provider
            .snapshot
            .load()
            .as_ref()
            .is_some_and(|s| s.generation == c.generation && s.is_usable(now))
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("providers", &self.providers().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    /// The provider that verified the token.
    #[must_use]
    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    /// The tenant of that provider.
    #[must_use]
    pub fn tenant(&self) -> &str {
        self.provider.tenant()
    }

    /// The algorithm the token was signed with; `None` for an opaque token accepted by
    /// introspection.
    #[must_use]
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// Whether the token was opaque and accepted by introspection (RFC 7662) rather than
    /// verified as a JWT.
    #[must_use]
    pub fn is_introspected(&self) -> bool {
        self.alg.is_none()
    }

    /// The RFC 7638 thumbprint of the key the token is bound to (`cnf.jkt`, RFC 9449), when
    /// the provider checks DPoP and the token is bound.
    #[must_use]
    pub fn cnf_jkt(&self) -> Option<&str> {
        self.cnf_jkt.as_deref()
    }

    /// The `kid` of the key that verified the token.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `iss` claim.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `sub` claim.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The `jti` claim.
    #[must_use]
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// The `exp` claim, in unix seconds.
    #[must_use]
    pub fn expires_at(&self) -> Option<i64> {
        self.exp
    }

    /// The `iat` claim, in unix seconds.
    #[must_use]
    pub fn issued_at(&self) -> Option<i64> {
        self.iat
    }

    /// The claims set as JSON text, exactly as the token carried it.
    #[must_use]
    pub fn claims_json(&self) -> &str {
        &self.claims
    }

    /// The claims set as a JSON object.
    #[must_use]
    pub fn claims(&self) -> serde_json::Map<String, serde_json::Value> {
        // Verification refused any payload that does not parse into a map this way (see
        // `RegisteredClaims::parse`), so the default is unreachable; it keeps this total.
        serde_json::from_str(&self.claims).unwrap_or_default()
    }

    /// Deserializes the claims into the caller's own type.
    ///
    /// # Errors
    /// The deserialization error when the claims do not fit `T`.
    pub fn deserialize_claims<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.claims)
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims may carry personal data; the token itself is never kept.
        f.debug_struct("VerifiedToken")
            .field("provider", &self.provider)
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("sub", &self.subject)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    #[test]
    fn verifier_and_its_futures_are_send() {
        fn assert_send<T: Send + Sync>(_: &T) {}
        fn assert_send_fut<F: std::future::Future + Send>(_: F) {}
        let v = Verifier::builder()
            .provider(
                ProviderConfig::builder("t", "p", "https://issuer.example")
                    .static_jwks(br#"{"keys":[]}"#.to_vec())
                    .audiences(["api"])
                    .dpop(crate::dpop::DpopMode::Required)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_send(&v);
        assert_send_fut(v.verify("a.b.c"));
        assert_send_fut(v.refresh(&ProviderId::new("t", "p")));
        let token = VerifiedToken {
            provider: ProviderId::new("t", "p"),
            alg: Some(Algorithm::ES256),
            kid: None,
            issuer: "https://issuer.example".into(),
            subject: None,
            jti: None,
            exp: None,
            iat: None,
            cnf_jkt: Some("jkt".into()),
            claims: "{}".into(),
        };
        let request = crate::dpop::DpopRequest {
            method: "GET",
            url: "https://api.example/",
            proofs: &[],
        };
        assert_send_fut(v.check_dpop(&token, "t", crate::bearer::Scheme::Dpop, &request));
        assert_eq!(
            v.dpop_algorithms(&ProviderId::new("t", "p")),
            Algorithm::ALL
        );
    }
}
