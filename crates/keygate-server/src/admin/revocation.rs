//! Revocations on the admin API: the request body (one of four shapes), the view of a
//! revocation in force, the conversions between them and the library's
//! [`keygate::Revocation`] (written once), and the checks a request passes before it
//! becomes one. The CLI client sends and reads these same types.

use std::collections::HashSet;
use std::time::Duration;

use keygate::clock::unix_seconds;
use keygate::{ProviderId, Revocation, Verifier};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use super::body::{json_object, number, optional_number, text};

/// `POST /admin/v1/revocations`: one of four shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RevocationRequest {
    /// One token.
    Jti(JtiRevocation),
    /// Every token of a subject issued before a time.
    Subject(SubjectRevocation),
    /// One signing key of a provider.
    Kid(KidRevocation),
    /// One token, by the SHA-256 of its text: opaque tokens, and JWTs without a `jti`.
    Token(TokenRevocation),
}

/// Revoke one token by its `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct JtiRevocation {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp` (unix seconds); the revocation is dropped after it.
    pub exp: i64,
}

/// Revoke every token of a subject issued before a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubjectRevocation {
    /// The tenant.
    pub tenant: String,
    /// The subject (`sub`).
    pub sub: String,
    /// Tokens with `iat` before this (unix seconds) are refused.
    pub before: i64,
    /// When the revocation may be dropped (unix seconds); default `before` plus
    /// `revocations.max_token_lifetime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// Distrust one signing key at once, even while the issuer still publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KidRevocation {
    /// The tenant.
    pub tenant: String,
    /// The provider name.
    pub provider: String,
    /// The key's `kid`.
    pub kid: String,
    /// When the revocation may be dropped (unix seconds); kept until removed if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// Revoke one token by the SHA-256 of its text (`keygate::token_sha256`): the token itself
/// never reaches the admin API, its logs or the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenRevocation {
    /// The lowercase hex SHA-256 of the token's exact text (64 digits).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub token_sha256: String,
    /// The token's expiry (unix seconds); the revocation is dropped after it.
    pub exp: i64,
}

/// A revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RevocationView {
    /// One token.
    Jti {
        /// The token id.
        jti: String,
        /// Its expiry (unix seconds).
        exp: i64,
    },
    /// A subject's tokens issued before a time.
    Subject {
        /// The tenant.
        tenant: String,
        /// The subject.
        sub: String,
        /// Tokens issued before this are refused (unix seconds).
        before: i64,
        /// When the entry is dropped (unix seconds).
        until: i64,
    },
    /// A signing key.
    Kid {
        /// The tenant.
        tenant: String,
        /// The provider name.
        provider: String,
        /// The key id.
        kid: String,
        /// When the entry is dropped (unix seconds), if ever.
        until: Option<i64>,
    },
    /// A token, by the SHA-256 of its text.
    Token {
        /// The lowercase hex SHA-256 of the token's text.
        token_sha256: String,
        /// Its expiry (unix seconds).
        exp: i64,
    },
    /// A kind newer than the reader (the CLI reading a newer server); this server never
    /// sends it.
    #[serde(other)]
    Other,
}

/// The answer to a revocation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedBody {
    /// What was revoked.
    pub revoked: RevocationView,
    /// The event's sequence number on the bus.
    pub seq: u64,
}

/// `GET /admin/v1/revocations`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevocationList {
    /// Every revocation in force.
    pub revocations: Vec<RevocationView>,
}

/// A library revocation of a kind this server does not know how to show.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a revocation of a kind the admin API does not know")]
pub struct UnknownRevocationKind;

impl TryFrom<&Revocation> for RevocationView {
    type Error = UnknownRevocationKind;

    fn try_from(r: &Revocation) -> Result<Self, Self::Error> {
        Ok(match r {
            Revocation::Jti { jti, exp } => RevocationView::Jti {
                jti: jti.clone(),
                exp: *exp,
            },
            Revocation::Subject {
                tenant,
                sub,
                before,
                until,
            } => RevocationView::Subject {
                tenant: tenant.clone(),
                sub: sub.clone(),
                before: *before,
                until: *until,
            },
            Revocation::Kid {
                tenant,
                provider,
                kid,
                until,
            } => RevocationView::Kid {
                tenant: tenant.clone(),
                provider: provider.clone(),
                kid: kid.clone(),
                until: *until,
            },
            Revocation::Token { sha256, exp } => RevocationView::Token {
                token_sha256: sha256.clone(),
                exp: *exp,
            },
            _ => return Err(UnknownRevocationKind),
        })
    }
}

/// What a revocation request is checked against, and the default it is completed with.
#[derive(Debug, Clone)]
pub struct RevocationPolicy {
    /// Every configured tenant.
    pub tenants: HashSet<String>,
    /// How long a subject revocation is kept after its `before` time by default.
    pub max_token_lifetime: Duration,
}

impl RevocationPolicy {
    /// Checks a revocation request against the configuration and the verifier's providers,
    /// and fills in defaults.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] for a revocation that ends before now, [`ApiError::NotFound`]
    /// for an unknown tenant or provider.
    pub fn resolve(
        &self,
        verifier: &Verifier,
        request: &RevocationRequest,
    ) -> Result<Revocation, ApiError> {
        // A revocation that ends before now covers no token that could still be valid: it
        // would be enforced, listed, then silently dropped by the pruner. Refuse it, by the
        // verifier's clock (the one the pruner and claim checks use).
        let now = unix_seconds(verifier.clock().now()).max(0);
        let past = |field: &str, t: i64| {
            if t < now {
                Err(ApiError::bad(
                    field,
                    format!(
                        "{t} is in the past (now is {now}): the revocation would cover no token \
                         that is still valid"
                    ),
                ))
            } else {
                Ok(())
            }
        };
        Ok(match request {
            RevocationRequest::Jti(r) => {
                past("exp", r.exp)?;
                Revocation::Jti {
                    jti: r.jti.clone(),
                    exp: r.exp,
                }
            }
            RevocationRequest::Subject(r) => {
                if let Some(until) = r.until {
                    past("until", until)?;
                }
                if !self.tenants.contains(&r.tenant) {
                    return Err(ApiError::NotFound(format!("no tenant {}", r.tenant)));
                }
                let lifetime = i64::try_from(self.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
                Revocation::Subject {
                    tenant: r.tenant.clone(),
                    sub: r.sub.clone(),
                    before: r.before,
                    until: r.until.unwrap_or_else(|| r.before.saturating_add(lifetime)),
                }
            }
            RevocationRequest::Kid(r) => {
                if let Some(until) = r.until {
                    past("until", until)?;
                }
                provider_id(verifier, &r.tenant, &r.provider)?;
                Revocation::Kid {
                    tenant: r.tenant.clone(),
                    provider: r.provider.clone(),
                    kid: r.kid.clone(),
                    until: r.until,
                }
            }
            RevocationRequest::Token(r) => {
                past("exp", r.exp)?;
                Revocation::Token {
                    sha256: r.token_sha256.clone(),
                    exp: r.exp,
                }
            }
        })
    }
}

/// The id of a configured provider.
///
/// # Errors
/// [`ApiError::NotFound`] when the verifier has no such provider.
pub(crate) fn provider_id(
    verifier: &Verifier,
    tenant: &str,
    provider: &str,
) -> Result<ProviderId, ApiError> {
    let id = ProviderId::new(tenant, provider);
    if verifier.providers().any(|p| p == id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(format!(
            "no provider {tenant}/{provider}"
        )))
    }
}

/// What the audit log says a revocation targets: never a `jti` or a subject (they may be
/// personal data or secrets).
pub(crate) fn audit_target(revocation: &Revocation) -> String {
    match revocation {
        Revocation::Jti { .. } => "jti".to_owned(),
        Revocation::Token { .. } => "token".to_owned(),
        Revocation::Subject { tenant, .. } => format!("subject in {tenant}"),
        Revocation::Kid {
            tenant,
            provider,
            kid,
            ..
        } => format!("kid {kid} of {tenant}/{provider}"),
        _ => "other".to_owned(),
    }
}

/// Parses a revocation body, naming the field at fault.
///
/// # Errors
/// [`ApiError::BadRequest`] with the field.
pub fn parse_revocation(body: &[u8]) -> Result<RevocationRequest, ApiError> {
    let map = json_object(body, "expected a JSON object")?;
    let kinds: Vec<&str> = ["jti", "sub", "kid", "token_sha256"]
        .into_iter()
        .filter(|k| map.contains_key(*k))
        .collect();
    let allowed: &[&str] = match kinds.as_slice() {
        ["jti"] => &["jti", "exp"],
        ["sub"] => &["tenant", "sub", "before", "until"],
        ["token_sha256"] => &["token_sha256", "exp"],
        [_] => &["tenant", "provider", "kid", "until"],
        [] => {
            return Err(ApiError::bad(
                "body",
                "expected one of {\"jti\",\"exp\"}, {\"tenant\",\"sub\",\"before\"}, {\"tenant\",\"provider\",\"kid\"} or {\"token_sha256\",\"exp\"}",
            ));
        }
        [_, second, ..] => {
            return Err(ApiError::bad(
                second,
                "a revocation is by jti, by sub, by kid or by token_sha256, not several at once",
            ));
        }
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(
            extra,
            format!("unknown field; expected {}", allowed.join(", ")),
        ));
    }
    Ok(match kinds[0] {
        "jti" => RevocationRequest::Jti(JtiRevocation {
            jti: text(&map, "jti")?,
            exp: number(&map, "exp")?,
        }),
        "token_sha256" => {
            let token_sha256 = text(&map, "token_sha256")?;
            // Exactly as `keygate::token_sha256` writes it: one spelling per token, so the
            // fleet signs, stores and lists one entry for it.
            if !keygate::is_token_sha256(&token_sha256) {
                return Err(ApiError::bad(
                    "token_sha256",
                    "expected the SHA-256 of the token's text as 64 lowercase hex digits",
                ));
            }
            RevocationRequest::Token(TokenRevocation {
                token_sha256,
                exp: number(&map, "exp")?,
            })
        }
        "sub" => RevocationRequest::Subject(SubjectRevocation {
            tenant: text(&map, "tenant")?,
            sub: text(&map, "sub")?,
            before: number(&map, "before")?,
            until: optional_number(&map, "until")?,
        }),
        _ => RevocationRequest::Kid(KidRevocation {
            tenant: text(&map, "tenant")?,
            provider: text(&map, "provider")?,
            kid: text(&map, "kid")?,
            until: optional_number(&map, "until")?,
        }),
    })
}
