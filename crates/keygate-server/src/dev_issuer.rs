//! The embedded development issuer: an ES256 signing key, its JWKS, and an endpoint that
//! mints tokens on request.
//!
//! `keygate serve` with no config runs one on loopback next to the sidecar, trusted by it,
//! so that `TOKEN=$(keygate dev mint)` and a `curl` are all it takes to see a request pass.
//! It is a toy on purpose: no client authentication, no consent, tokens for whoever asks.
//! It must never listen beyond loopback, and nothing but the no-config mode starts it.
//!
//! Rotation is part of the toy because it is what keygate exists to handle: after
//! [`DevIssuer::rotate`] (or `keygate dev rotate`) new tokens carry a kid the sidecar has
//! never seen, and older tokens keep verifying because the previous keys stay published.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64_simd::URL_SAFE_NO_PAD;
use http::{HeaderValue, StatusCode, header};
use keygate::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::apikey::random_bytes;
use crate::json::json_response;

/// The lifetime of a minted token when the request names none.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest lifetime a minted token may have: one day.
pub const MAX_TTL_SECS: u64 = 86_400;
/// The subject of a minted token when the request names none.
pub const DEFAULT_SUBJECT: &str = "dev-user";
/// How many keys the JWKS publishes: the current one and the ones before it.
pub const PUBLISHED_KEYS: usize = 3;

/// The development issuer. Cloning is cheap; clones share the keys.
#[derive(Clone)]
pub struct DevIssuer {
    inner: Arc<Inner>,
}

/// Why a [`DevIssuer`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIssuerError {
    /// The issuer is not an absolute http(s) URL.
    #[error("dev issuer: issuer must be an http:// or https:// URL: {0}")]
    Issuer(String),
    /// The audience is empty.
    #[error("dev issuer: audience must not be empty")]
    Audience,
    /// The signing key could not be generated.
    #[error("dev issuer: generating the ES256 signing key failed")]
    KeyGeneration,
}

/// What to put in a token. Every member is optional; an empty request gets the defaults.
///
/// This is also the JSON body of `POST /mint`; unknown members are refused so a typo (say
/// `ttl` for `ttl_secs`) is an error rather than a silently ignored request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    /// `sub`; default [`DEFAULT_SUBJECT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `aud`; default the issuer's audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `scope`, space-separated (RFC 8693 section 4.2); absent by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Seconds until `exp`, 1 to [`MAX_TTL_SECS`]; default [`DEFAULT_TTL_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Further claims. `iss`, `sub`, `aud`, `iat`, `exp` and `jti` are the issuer's and
    /// override any given here; anything else (including `nbf`) is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// `ttl_secs` is out of range.
    #[error("ttl_secs must be from 1 to {MAX_TTL_SECS}, got {0}")]
    Ttl(u64),
    /// `sub` or `aud` is the empty string.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// `now` is before 1970 or too far in the future to represent.
    #[error("the clock is out of range")]
    Clock,
    /// Signing failed.
    #[error("signing the token failed")]
    Signing,
}

/// A minted token.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// The key id in its header.
    pub kid: String,
    /// Its `exp`, in seconds since the Unix epoch.
    pub exp: i64,
}

impl DevIssuer {
    /// An issuer whose tokens say `iss: issuer` and, by default, `aud: audience`, with a
    /// fresh ES256 key.
    ///
    /// # Errors
    /// An `issuer` that is not an http(s) URL, an empty `audience`, or a failure to generate
    /// the key.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<DevIssuer, DevIssuerError> {
        DevIssuer::with_clock(issuer, audience, Arc::new(SystemClock))
    }

    /// Like [`DevIssuer::new`], with the wall clock its endpoint mints tokens by.
    ///
    /// # Errors
    /// As [`DevIssuer::new`].
    pub fn with_clock(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<DevIssuer, DevIssuerError> {
        let issuer = issuer.into();
        let audience = audience.into();
        match url::Url::parse(&issuer) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            Ok(_) => return Err(DevIssuerError::Issuer("not http(s)".into())),
            Err(e) => return Err(DevIssuerError::Issuer(e.to_string())),
        }
        if audience.is_empty() {
            return Err(DevIssuerError::Audience);
        }
        let key = SigningKey::generate().ok_or(DevIssuerError::KeyGeneration)?;
        Ok(DevIssuer {
            inner: Arc::new(Inner {
                issuer,
                audience,
                keys: Mutex::new(VecDeque::from([Arc::new(key)])),
                clock,
            }),
        })
    }

    /// The current time by the issuer's clock: what its endpoint mints tokens as of.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// The `iss` of minted tokens.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The default `aud` of minted tokens.
    #[must_use]
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// Where the key set is published: the issuer followed by `/jwks.json`.
    #[must_use]
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.inner.issuer.trim_end_matches('/'))
    }

    /// The kid of the key that signs new tokens.
    #[must_use]
    pub fn current_kid(&self) -> String {
        self.inner.current().kid.clone()
    }

    /// The kids of the published keys, the current one first.
    #[must_use]
    pub fn kids(&self) -> Vec<String> {
        lock(&self.inner.keys)
            .iter()
            .map(|key| key.kid.clone())
            .collect()
    }

    /// The published key set: the current key first, then up to two previous ones, so that
    /// tokens minted before a rotation still verify.
    #[must_use]
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = lock(&self.inner.keys)
            .iter()
            .map(|key| key.jwk.clone())
            .collect();
        json!({ "keys": keys })
    }

    /// Mints a token as of `now`.
    ///
    /// # Errors
    /// A [`MintError`] for a `ttl_secs` out of range, an empty `sub` or `aud`, a `now`
    /// before 1970, or a signing failure.
    pub fn mint(&self, req: &MintRequest, now: SystemTime) -> Result<Minted, MintError> {
        let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(MintError::Ttl(ttl));
        }
        let sub = req.sub.as_deref().unwrap_or(DEFAULT_SUBJECT);
        let aud = req.aud.as_deref().unwrap_or(&self.inner.audience);
        if sub.is_empty() {
            return Err(MintError::Empty("sub"));
        }
        if aud.is_empty() {
            return Err(MintError::Empty("aud"));
        }
        let iat = keygate::clock::unix_seconds(now);
        if iat < 0 {
            return Err(MintError::Clock);
        }
        let ttl = i64::try_from(ttl).map_err(|_| MintError::Ttl(ttl))?;
        let exp = iat.checked_add(ttl).ok_or(MintError::Clock)?;

        // The extra claims go in first so that the registered claims below replace them:
        // a request cannot mint a token for another issuer or one that never expires.
        let mut claims = req.claims.clone().unwrap_or_default();
        claims.insert("iss".into(), self.inner.issuer.clone().into());
        claims.insert("sub".into(), sub.into());
        claims.insert("aud".into(), aud.into());
        claims.insert("iat".into(), iat.into());
        claims.insert("exp".into(), exp.into());
        let jti = URL_SAFE_NO_PAD.encode_to_string(random_bytes::<16>());
        claims.insert("jti".into(), jti.into());
        if let Some(scope) = &req.scope {
            claims.insert("scope".into(), scope.as_str().into());
        }

        let key = self.inner.current();
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": key.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode_to_string(header.to_string()),
            URL_SAFE_NO_PAD.encode_to_string(Value::Object(claims).to_string()),
        );
        let signature = key
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| MintError::Signing)?;
        Ok(Minted {
            token: format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode_to_string(signature.as_ref())
            ),
            kid: key.kid.clone(),
            exp,
        })
    }

    /// Starts signing with a new key and returns its kid. The previous keys stay published,
    /// [`PUBLISHED_KEYS`] in all; the oldest beyond that is dropped.
    #[must_use = "the new kid is the only way to tell which key now signs"]
    pub fn rotate(&self) -> String {
        // Generating outside the lock keeps minting unblocked meanwhile.
        let key = SigningKey::generate().expect(
            "P-256 key generation fails only if the system RNG or allocation does, which \
             `new` already survived; aws-lc aborts on RNG failure",
        );
        let kid = key.kid.clone();
        let mut keys = lock(&self.inner.keys);
        keys.push_front(Arc::new(key));
        keys.truncate(PUBLISHED_KEYS);
        kid
    }

    /// The issuer's HTTP endpoints:
    ///
    /// - `GET /.well-known/openid-configuration`: discovery, pointing at `/jwks.json`.
    /// - `GET /jwks.json`: the key set, cacheable for five minutes.
    /// - `POST /mint`: a [`MintRequest`] as JSON (or no body for the defaults); answers
    ///   `{"token","kid","exp"}`, or 400 `{"error":"bad_request","message"}`.
    /// - `POST /rotate`: answers `{"kid": new kid, "kids": [published kids]}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .route("/mint", post(mint))
            .route("/rotate", post(rotate))
            .with_state(self.clone())
    }
}

impl fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential, even a development one.
        f.debug_struct("Minted")
            .field("token", &"<redacted>")
            .field("kid", &self.kid)
            .field("exp", &self.exp)
            .finish()
    }
}

struct Inner {
    issuer: String,
    audience: String,
    /// The published keys, the signing one first.
    keys: Mutex<VecDeque<Arc<SigningKey>>>,
    /// The wall clock the endpoint mints by.
    clock: Arc<dyn Clock>,
}

impl Inner {
    fn current(&self) -> Arc<SigningKey> {
        let keys = lock(&self.keys);
        Arc::clone(
            keys.front()
                .expect("there is always a current key: `new` adds one and `rotate` only adds"),
        )
    }
}

struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    /// The public JWK, computed once.
    jwk: Value,
}

impl SigningKey {
    fn generate() -> Option<Self> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
        // Eight lowercase hex digits.
        let kid = format!("dev-{:08x}", u32::from_be_bytes(random_bytes::<4>()));
        // The public key is the uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..)?.split_at_checked(32)?;
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode_to_string(x),
            "y": URL_SAFE_NO_PAD.encode_to_string(y),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        });
        Some(SigningKey { kid, pair, jwk })
    }
}

/// An error answer of the HTTP endpoints; the one place they become responses.
enum ApiError {
    /// The request was at fault: 400.
    BadRequest(String),
    /// The issuer was: 500.
    Internal(&'static str),
}

impl From<MintError> for ApiError {
    fn from(e: MintError) -> Self {
        match e {
            MintError::Ttl(_) | MintError::Empty(_) => ApiError::BadRequest(e.to_string()),
            MintError::Clock => ApiError::Internal("the clock is out of range"),
            MintError::Signing => ApiError::Internal("signing failed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message),
            ApiError::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                message.to_owned(),
            ),
        };
        json_response(status, &json!({ "error": error, "message": message }))
    }
}

async fn discovery(State(issuer): State<DevIssuer>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer.issuer(),
            "jwks_uri": issuer.jwks_uri(),
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }),
    )
}

async fn jwks(State(issuer): State<DevIssuer>) -> Response {
    let mut response = json_response(StatusCode::OK, &issuer.jwks());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Any content type is accepted: `curl -d '{...}'` sends a form content type by default,
/// and this endpoint only ever reads JSON.
async fn mint(State(issuer): State<DevIssuer>, body: Bytes) -> Result<Response, ApiError> {
    let request = if body.trim_ascii().is_empty() {
        MintRequest::default()
    } else {
        serde_json::from_slice::<MintRequest>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid mint request: {e}")))?
    };
    let minted = issuer.mint(&request, issuer.now())?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "token": minted.token, "kid": minted.kid, "exp": minted.exp }),
    ))
}

async fn rotate(State(issuer): State<DevIssuer>) -> Response {
    let kid = issuer.rotate();
    json_response(
        StatusCode::OK,
        &json!({ "kid": kid, "kids": issuer.kids() }),
    )
}

/// Locks the key list. Every update is a push and a truncate, so a panic while holding the
/// lock cannot leave it inconsistent and a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keygate::{ProviderConfig, Verifier, VerifyError};

    use super::*;

    const ISS: &str = "http://127.0.0.1:8082";
    const AUD: &str = "dev-api";

    fn verifier_of(issuer: &DevIssuer) -> Verifier {
        let provider = ProviderConfig::builder("dev", "dev", issuer.issuer())
            .audiences([issuer.audience()])
            .static_jwks(serde_json::to_vec(&issuer.jwks()).unwrap())
            .build()
            .unwrap();
        Verifier::builder().provider(provider).build().unwrap()
    }

    fn claims_of(token: &str) -> Map<String, Value> {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode_to_vec(payload).unwrap()).unwrap()
    }

    fn header_of(token: &str) -> Value {
        let header = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode_to_vec(header).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_library() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        let minted = issuer
            .mint(&MintRequest::default(), SystemClock.now())
            .unwrap();
        let token = verifier_of(&issuer).verify(&minted.token).await.unwrap();
        assert_eq!(token.issuer(), ISS);
        assert_eq!(token.subject(), Some(DEFAULT_SUBJECT));
        assert_eq!(token.kid(), Some(issuer.current_kid().as_str()));
        assert_eq!(token.expires_at(), Some(minted.exp));
        assert_eq!(
            token.expires_at().unwrap() - token.issued_at().unwrap(),
            3600
        );
        assert!(token.jti().is_some_and(|jti| jti.len() >= 16));
    }

    #[test]
    fn header_and_claims_have_the_documented_shape() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut extra = Map::new();
        extra.insert("iss".into(), "https://evil.example".into());
        extra.insert("exp".into(), 9_999_999_999_i64.into());
        extra.insert("role".into(), "admin".into());
        extra.insert("nbf".into(), 1_700_000_000.into());
        let req = MintRequest {
            sub: Some("bob".into()),
            aud: Some("other-api".into()),
            scope: Some("read write".into()),
            ttl_secs: Some(60),
            claims: Some(extra),
        };
        let minted = issuer.mint(&req, now).unwrap();
        assert_eq!(minted.exp, 1_700_000_060);
        assert_eq!(
            header_of(&minted.token),
            json!({ "alg": "ES256", "typ": "JWT", "kid": issuer.current_kid() })
        );
        let claims = claims_of(&minted.token);
        assert_eq!(claims["iss"], ISS);
        assert_eq!(claims["sub"], "bob");
        assert_eq!(claims["aud"], "other-api");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_060);
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["nbf"], 1_700_000_000);
        assert!(claims["jti"].is_string());
        let other = issuer.mint(&req, now).unwrap();
        assert_ne!(claims["jti"], claims_of(&other.token)["jti"]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        let now = SystemClock.now();
        for ttl in [0, MAX_TTL_SECS + 1, u64::MAX] {
            let req = MintRequest {
                ttl_secs: Some(ttl),
                ..MintRequest::default()
            };
            assert!(matches!(issuer.mint(&req, now), Err(MintError::Ttl(t)) if t == ttl));
        }
        let req = MintRequest {
            ttl_secs: Some(MAX_TTL_SECS),
            ..MintRequest::default()
        };
        assert!(issuer.mint(&req, now).is_ok());
        let req = MintRequest {
            sub: Some(String::new()),
            ..MintRequest::default()
        };
        assert!(matches!(
            issuer.mint(&req, now),
            Err(MintError::Empty("sub"))
        ));
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            issuer.mint(&MintRequest::default(), before_1970),
            Err(MintError::Clock)
        ));
    }

    #[test]
    fn new_refuses_a_bad_issuer_or_audience() {
        assert!(matches!(
            DevIssuer::new("not a url", AUD),
            Err(DevIssuerError::Issuer(_))
        ));
        assert!(matches!(
            DevIssuer::new("file:///tmp", AUD),
            Err(DevIssuerError::Issuer(_))
        ));
        assert!(matches!(
            DevIssuer::new(ISS, ""),
            Err(DevIssuerError::Audience)
        ));
    }

    #[test]
    fn jwks_publishes_the_public_key_only() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        assert_eq!(issuer.jwks_uri(), "http://127.0.0.1:8082/jwks.json");
        let jwks = issuer.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys[0].as_object().unwrap();
        let mut members: Vec<&str> = key.keys().map(String::as_str).collect();
        members.sort_unstable();
        assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(key["kid"], issuer.current_kid());
        let kid = issuer.current_kid();
        assert!(kid.starts_with("dev-") && kid.len() == 12, "{kid}");
        assert!(kid[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{kid}");
        for coordinate in ["x", "y"] {
            let bytes = URL_SAFE_NO_PAD
                .decode_to_vec(key[coordinate].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), 32);
        }
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_valid_and_publishes_three_keys() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        let now = SystemClock.now();
        let first_kid = issuer.current_kid();
        let old = issuer.mint(&MintRequest::default(), now).unwrap();

        let new_kid = issuer.rotate();
        assert_ne!(new_kid, first_kid);
        assert_eq!(issuer.current_kid(), new_kid);
        assert_eq!(issuer.kids(), [new_kid.clone(), first_kid.clone()]);
        let new = issuer.mint(&MintRequest::default(), now).unwrap();
        assert_eq!(new.kid, new_kid);
        assert_eq!(header_of(&new.token)["kid"], new_kid.as_str());

        let verifier = verifier_of(&issuer);
        let old_verified = verifier.verify(&old.token).await.unwrap();
        assert_eq!(old_verified.kid(), Some(first_kid.as_str()));
        let new_verified = verifier.verify(&new.token).await.unwrap();
        assert_eq!(new_verified.kid(), Some(new_kid.as_str()));

        let _ = issuer.rotate();
        let last = issuer.rotate();
        let kids = issuer.kids();
        assert_eq!(kids.len(), PUBLISHED_KEYS);
        assert_eq!(kids[0], last);
        assert!(!kids.contains(&first_kid));
        assert_eq!(
            issuer.jwks()["keys"].as_array().unwrap().len(),
            PUBLISHED_KEYS
        );
        // The first key fell off the end: its tokens are now refused.
        let err = verifier_of(&issuer).verify(&old.token).await.unwrap_err();
        assert!(matches!(err, VerifyError::Key(_)), "{err:?}");
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let issuer = DevIssuer::new(ISS, AUD).unwrap();
        let minted = issuer
            .mint(&MintRequest::default(), SystemClock.now())
            .unwrap();
        let debug = format!("{minted:?}");
        let signature = minted.token.rsplit('.').next().unwrap();
        assert!(!debug.contains(signature), "{debug}");
        assert!(debug.contains(&minted.kid), "{debug}");
    }

    #[test]
    fn mint_requests_refuse_unknown_members() {
        let err = serde_json::from_str::<MintRequest>(r#"{"ttl":60}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
        let req: MintRequest = serde_json::from_str(r#"{"sub":"a","claims":{"x":[1]}}"#).unwrap();
        assert_eq!(req.sub.as_deref(), Some("a"));
        assert_eq!(req.claims.unwrap()["x"], json!([1]));
    }
}
