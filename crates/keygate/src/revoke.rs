//! Revocation checks: by token id (`jti`), by subject (tokens issued before a time), by
//! signing key (`kid`) and by the token itself (the SHA-256 of its text, for opaque tokens
//! that carry no `jti`).
//!
//! [`Revocations`] is the in-memory implementation; the cluster layer feeds it. Every change
//! bumps a generation number, which drops the verified-token cache so that a revoked token is
//! refused on its very next use.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::clock::unix_seconds;
use crate::error::RevokedBy;
use crate::provider::ProviderId;

/// What a revocation check sees of a verified token.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// The provider that verified the token.
    pub provider: &'a ProviderId,
    /// The signing key's `kid`, if any.
    pub kid: Option<&'a str>,
    /// The `jti` claim, if any.
    pub jti: Option<&'a str>,
    /// The `sub` claim, if any.
    pub sub: Option<&'a str>,
    /// The `iat` claim in seconds, if any.
    pub iat: Option<i64>,
    /// The token's text, for revocations by its SHA-256 (hashed only while such a
    /// revocation exists).
    pub token: Option<&'a str>,
}

/// A source of revocations consulted after a token's signature and claims check out.
pub trait RevocationCheck: Send + Sync + fmt::Debug + 'static {
    /// Returns which revocation covers the token, if any.
    fn check(&self, token: &TokenFacts<'_>) -> Option<RevokedBy>;

    /// A number that changes whenever the revocation state changes. The verified-token cache
    /// drops its entries when it moves.
    fn generation(&self) -> u64;
}

/// One revocation, as listed by [`Revocations::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// A single token, until its expiry.
    Jti {
        /// The token id.
        jti: String,
        /// When the token expires (unix seconds); the entry is dropped after that.
        exp: i64,
    },
    /// Every token of `sub` in `tenant` issued before `before`.
    Subject {
        /// The tenant.
        tenant: String,
        /// The subject.
        sub: String,
        /// Tokens with `iat` before this (unix seconds) are refused.
        before: i64,
        /// When the entry can be dropped (unix seconds): once no covered token can be valid.
        until: i64,
    },
    /// A signing key of one provider.
    Kid {
        /// The tenant.
        tenant: String,
        /// The provider name.
        provider: String,
        /// The distrusted key id.
        kid: String,
        /// When the entry can be dropped (unix seconds), if ever.
        until: Option<i64>,
    },
    /// One token, named by the SHA-256 of its text, until its expiry.
    Token {
        /// The lowercase hex SHA-256 of the token's text ([`token_sha256`]).
        sha256: String,
        /// When the entry can be dropped (unix seconds).
        exp: i64,
    },
}

/// The lowercase hex SHA-256 of a token's text: how a [`Revocation::Token`] names it, and how
/// caches key opaque tokens without keeping them.
#[must_use]
pub fn token_sha256(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `text` is a SHA-256 as [`token_sha256`] writes it: 64 lowercase hex digits.
#[must_use]
pub fn is_token_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| HEX.contains(&b))
}

/// In-memory revocations.
///
/// Cloning shares the same state.
#[derive(Clone, Default)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: RwLock<State>,
    generation: AtomicU64,
}

#[derive(Default)]
struct State {
    jti: HashMap<String, i64>,
    /// (tenant, sub) -> (before, until).
    subjects: HashMap<(String, String), (i64, i64)>,
    /// (tenant, provider, kid) -> until.
    kids: HashMap<(String, String, String), Option<i64>>,
    /// Lowercase hex SHA-256 of the token -> exp.
    tokens: HashMap<String, i64>,
}

impl Revocations {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes the token with id `jti`, which expires at `exp` (unix seconds).
    pub fn revoke_jti(&self, jti: &str, exp: i64) {
        self.write(|s| match s.jti.get_mut(jti) {
            Some(e) => {
                // Already refused: a later expiry keeps the entry longer, covers no new token.
                *e = (*e).max(exp);
                false
            }
            None => {
                s.jti.insert(jti.to_owned(), exp);
                true
            }
        });
    }

    /// Revokes every token of `sub` in `tenant` issued before `before` (unix seconds).
    ///
    /// `until` is when the entry may be forgotten: `before` plus the longest token lifetime
    /// the issuer grants is a safe choice.
    pub fn revoke_subject(&self, tenant: &str, sub: &str, before: i64, until: i64) {
        self.write(
            |s| match s.subjects.get_mut(&(tenant.to_owned(), sub.to_owned())) {
                Some(e) => {
                    let covers_more = before > e.0;
                    *e = (e.0.max(before), e.1.max(until));
                    covers_more
                }
                None => {
                    s.subjects
                        .insert((tenant.to_owned(), sub.to_owned()), (before, until));
                    true
                }
            },
        );
    }

    /// Revokes the token whose text has this SHA-256 (lowercase hex, [`token_sha256`]), which
    /// expires at `exp` (unix seconds). Hex in capitals is taken as the same digest.
    pub fn revoke_token(&self, sha256: &str, exp: i64) {
        let sha256 = sha256.to_ascii_lowercase();
        self.write(|s| match s.tokens.get_mut(&sha256) {
            Some(e) => {
                *e = (*e).max(exp);
                false
            }
            None => {
                s.tokens.insert(sha256, exp);
                true
            }
        });
    }

    /// Distrusts key `kid` of a provider, even while its issuer still publishes it.
    pub fn revoke_kid(&self, provider: &ProviderId, kid: &str, until: Option<i64>) {
        let key = (
            provider.tenant().to_owned(),
            provider.name().to_owned(),
            kid.to_owned(),
        );
        self.write(|s| match s.kids.get_mut(&key) {
            // Kept as long as the longest of the two says; `None` is for good.
            Some(e) => {
                *e = match (*e, until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                false
            }
            None => {
                s.kids.insert(key, until);
                true
            }
        });
    }

    /// Drops entries that can no longer cover a valid token.
    ///
    /// Pruning never changes the generation: a dropped entry covered only tokens that were
    /// refused, and refused tokens are never in the verified-token cache, so every cached
    /// entry stays valid.
    pub fn prune(&self, now: SystemTime) {
        let now = unix_seconds(now);
        self.write(|s| {
            s.jti.retain(|_, exp| *exp >= now);
            s.subjects.retain(|_, (_, until)| *until >= now);
            s.kids.retain(|_, until| until.is_none_or(|u| u >= now));
            s.tokens.retain(|_, exp| *exp >= now);
            false
        });
    }

    /// Every current revocation.
    #[must_use]
    pub fn list(&self) -> Vec<Revocation> {
        let s = self.read();
        let mut out = Vec::with_capacity(s.len());
        out.extend(s.jti.iter().map(|(jti, &exp)| Revocation::Jti {
            jti: jti.clone(),
            exp,
        }));
        out.extend(s.subjects.iter().map(|((tenant, sub), &(before, until))| {
            Revocation::Subject {
                tenant: tenant.clone(),
                sub: sub.clone(),
                before,
                until,
            }
        }));
        out.extend(
            s.kids
                .iter()
                .map(|((tenant, provider, kid), &until)| Revocation::Kid {
                    tenant: tenant.clone(),
                    provider: provider.clone(),
                    kid: kid.clone(),
                    until,
                }),
        );
        out.extend(s.tokens.iter().map(|(sha256, &exp)| Revocation::Token {
            sha256: sha256.clone(),
            exp,
        }));
        out
    }

    /// The number of entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is revoked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each write is one map operation), so a poisoned lock is still usable.
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f`; bumps the generation (dropping verified tokens) only when `f` says the
    /// change can refuse a token that was accepted before. Revoking again what is revoked, or
    /// pruning, keeps the verified-token cache.
    fn write(&self, f: impl FnOnce(&mut State) -> bool) {
        let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
        let covers_more = f(&mut state);
        drop(state);
        if covers_more {
            self.inner.generation.fetch_add(1, Ordering::Release);
        }
    }
}

impl State {
    fn len(&self) -> usize {
        self.jti.len() + self.subjects.len() + self.kids.len() + self.tokens.len()
    }
}

impl RevocationCheck for Revocations {
    fn check(&self, t: &TokenFacts<'_>) -> Option<RevokedBy> {
        let s = self.read();
        if s.len() == 0 {
            return None;
        }
        if let Some(token) = t.token
            && !s.tokens.is_empty()
            && s.tokens.contains_key(&token_sha256(token))
        {
            return Some(RevokedBy::Token);
        }
        if let Some(jti) = t.jti {
            if s.jti.contains_key(jti) {
                return Some(RevokedBy::Jti);
            }
        }
        if let Some(sub) = t.sub {
            // The tuple key needs owned strings; lookups are rare enough (only when subject
            // revocations exist) that the allocation is acceptable.
            let key = (t.provider.tenant().to_owned(), sub.to_owned());
            if let Some(&(before, _)) = s.subjects.get(&key) {
                // A token without `iat` cannot prove it was issued after the cut-off.
                if t.iat.is_none_or(|iat| iat < before) {
                    return Some(RevokedBy::Subject);
                }
            }
        }
        if let Some(kid) = t.kid {
            if !s.kids.is_empty() {
                let key = (
                    t.provider.tenant().to_owned(),
                    t.provider.name().to_owned(),
                    kid.to_owned(),
                );
                if s.kids.contains_key(&key) {
                    return Some(RevokedBy::Kid);
                }
            }
        }
        None
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("entries", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn facts<'a>(
        provider: &'a ProviderId,
        jti: Option<&'a str>,
        sub: Option<&'a str>,
        iat: Option<i64>,
        kid: Option<&'a str>,
    ) -> TokenFacts<'a> {
        TokenFacts {
            provider,
            kid,
            jti,
            sub,
            iat,
            token: None,
        }
    }

    /// Revocations of `jti` `j1` (until 2000), of `alice` of `acme` (tokens issued before
    /// 1000, until `subject_until`) and of `kid` `k1` of `acme/idp` (until `kid_until`), and
    /// that provider.
    fn one_of_each(subject_until: i64, kid_until: i64) -> (Revocations, ProviderId) {
        let r = Revocations::new();
        let p = ProviderId::new("acme", "idp");
        r.revoke_jti("j1", 2_000);
        r.revoke_subject("acme", "alice", 1_000, subject_until);
        r.revoke_kid(&p, "k1", Some(kid_until));
        (r, p)
    }

    #[test]
    fn only_a_change_that_refuses_more_tokens_bumps_the_generation() {
        let (r, p) = one_of_each(5_000, 3_000);
        let g = r.generation();
        // Again, or longer: nothing newly refused, the verified-token cache stays.
        r.revoke_jti("j1", 9_000);
        r.revoke_subject("acme", "alice", 900, 9_000);
        r.revoke_kid(&p, "k1", Some(2_000));
        r.prune(UNIX_EPOCH + Duration::from_secs(1_500));
        assert_eq!(r.generation(), g);
        // The pruner runs every minute: dropping the expired entries alone must not flush.
        r.prune(UNIX_EPOCH + Duration::from_secs(1_000_000));
        assert_eq!(r.generation(), g);
        assert!(r.is_empty());
        // Anything that refuses more does.
        r.revoke_jti("j2", 2_000_000);
        assert!(r.generation() > g);
        let g = r.generation();
        r.revoke_subject("acme", "bob", 1_000, 2_000_000);
        let g2 = r.generation();
        assert!(g2 > g);
        r.revoke_subject("acme", "bob", 1_500, 2_000_000);
        assert!(r.generation() > g2, "a later cut-off covers more tokens");
        // A kid kept for good stays kept for good.
        r.revoke_kid(&p, "k2", None);
        r.revoke_kid(&p, "k2", Some(5));
        r.prune(UNIX_EPOCH + Duration::from_secs(3_000_000));
        assert!(
            r.list()
                .iter()
                .any(|x| matches!(x, Revocation::Kid { kid, until: None, .. } if kid == "k2"))
        );
    }

    #[test]
    fn each_kind_matches_only_what_it_covers_and_bumps_the_generation() {
        let r = Revocations::new();
        let p = ProviderId::new("acme", "idp");
        let other = ProviderId::new("globex", "idp");
        let g0 = r.generation();
        assert_eq!(r.check(&facts(&p, Some("j1"), None, None, None)), None);

        r.revoke_jti("j1", 2_000);
        assert!(r.generation() > g0);
        assert_eq!(
            r.check(&facts(&p, Some("j1"), None, None, None)),
            Some(RevokedBy::Jti)
        );
        assert_eq!(r.check(&facts(&p, Some("j2"), None, None, None)), None);

        r.revoke_subject("acme", "alice", 1_000, 5_000);
        let alice = |iat| facts(&p, None, Some("alice"), iat, None);
        assert_eq!(r.check(&alice(Some(999))), Some(RevokedBy::Subject));
        assert_eq!(r.check(&alice(None)), Some(RevokedBy::Subject));
        assert_eq!(r.check(&alice(Some(1_000))), None);
        let elsewhere = facts(&other, None, Some("alice"), Some(10), None);
        assert_eq!(r.check(&elsewhere), None, "subjects are per tenant");

        r.revoke_kid(&p, "k1", None);
        assert_eq!(
            r.check(&facts(&p, None, None, None, Some("k1"))),
            Some(RevokedBy::Kid)
        );
        assert_eq!(r.check(&facts(&other, None, None, None, Some("k1"))), None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn a_token_is_revoked_by_the_sha256_of_its_text() {
        let r = Revocations::new();
        let p = ProviderId::new("acme", "idp");
        let digest = token_sha256("opaque-1");
        assert!(is_token_sha256(&digest));
        assert!(!is_token_sha256(&digest.to_ascii_uppercase()));
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let g = r.generation();
        r.revoke_token(&digest.to_ascii_uppercase(), 2_000);
        assert!(r.generation() > g);
        let mut t = facts(&p, None, None, None, None);
        assert_eq!(r.check(&t), None, "no text, nothing to hash");
        t.token = Some("opaque-1");
        assert_eq!(r.check(&t), Some(RevokedBy::Token));
        t.token = Some("opaque-2");
        assert_eq!(r.check(&t), None);
        assert_eq!(
            r.list(),
            vec![Revocation::Token {
                sha256: digest,
                exp: 2_000
            }]
        );
        r.prune(SystemTime::UNIX_EPOCH + Duration::from_secs(2_001));
        assert!(r.is_empty());
    }

    #[test]
    fn prune_forgets_entries_once_nothing_they_cover_can_be_valid() {
        let (r, p) = one_of_each(3_000, 4_000);
        r.revoke_kid(&p, "k2", None);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        r.prune(at(2_000));
        assert_eq!(r.len(), 4);
        r.prune(at(2_001));
        assert_eq!(r.len(), 3);
        r.prune(at(4_001));
        assert_eq!(
            r.list(),
            vec![Revocation::Kid {
                tenant: "acme".into(),
                provider: "idp".into(),
                kid: "k2".into(),
                until: None,
            }]
        );
    }
}
