//! A real OpenID provider for tests: panva's `oidc-provider` (Node.js) on loopback.
//!
//! The stub IdP in [`stub`](crate::stub) answers whatever a test scripts; this one is a
//! certified OAuth 2.0 / OpenID Connect server, so tests of token introspection (RFC 7662)
//! and DPoP (RFC 9449) run against the shapes a real provider produces rather than against
//! our own reading of the RFCs.
//!
//! # How it works
//!
//! `idp/idp.mjs` (next to this crate's `Cargo.toml`) is one Node process with two loopback
//! HTTP servers:
//!
//! - the provider, issuer `http://127.0.0.1:<port>`, with discovery, `/jwks`, `/token`
//!   (client credentials, DPoP), `/token/introspection` and `/token/revocation`. Two
//!   resources are known: [`OPAQUE_RESOURCE`] gets opaque access tokens, [`JWT_RESOURCE`]
//!   gets RFC 9068 `at+jwt` tokens (RS256, `kid` `keystore-CHANGE-ME`: oidc-provider's
//!   development keys). The audience of a token is its resource. Two clients are
//!   registered, both with `client_secret_basic`: [`TOKEN_CLIENT_ID`] obtains tokens,
//!   [`RS_CLIENT_ID`] (the resource server, i.e. keygate) introspects them; any other client
//!   sees every token inactive.
//! - a helper API that this module calls: it obtains tokens from the provider over real
//!   HTTP, makes DPoP key pairs and proofs with the `jose` library (ES256), revokes tokens,
//!   counts the requests that reached the provider's endpoints, and can make introspection
//!   slow or failing.
//!
//! [`OidcProvider::start`] installs the npm packages on first use (`npm ci` from the
//! committed lock file, once per checkout: a lock directory keeps parallel test binaries
//! from racing), spawns `node idp.mjs`, and waits for its `READY <idp_port> <helper_port>`
//! line. Node picks free ports itself, so starting never races another test for a port;
//! [`OidcProvider::restart`] asks for the same ports again. The child is killed when the
//! [`OidcProvider`] drops, and it exits by itself when its stdin closes, so a test process
//! that dies never leaves `node` behind. Its stderr goes to a log file whose tail is part of
//! every panic message.
//!
//! Tokens live in the provider's memory: after [`OidcProvider::restart`] the old ones are
//! unknown (introspection says `{"active": false}`) while JWTs still verify with the same
//! (development) key. Time is the machine's wall clock.
//!
//! Needs `node` (20 or later) and `npm` on `PATH`, and the npm registry on first use;
//! without them [`OidcProvider::start`] panics rather than letting a test pass vacuously.
//!
//! ```no_run
//! # async fn run() {
//! use keygate_test_support::oidc::{OidcProvider, TokenRequest};
//!
//! let idp = OidcProvider::start().await;
//! let token = idp.token(TokenRequest::opaque("read").dpop()).await;
//! let answer = idp.introspect(&token.access_token).await;
//! assert_eq!(answer["cnf"]["jkt"], token.jkt.unwrap().as_str());
//! # }
//! ```

mod npm;

use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The client that obtains tokens (`client_credentials`, `client_secret_basic`).
pub const TOKEN_CLIENT_ID: &str = "keygate-app";
/// The secret of [`TOKEN_CLIENT_ID`].
pub const TOKEN_CLIENT_SECRET: &str = "keygate-app-secret-for-tests-only";
/// The resource server client, allowed to introspect every token (`client_secret_basic`).
pub const RS_CLIENT_ID: &str = "keygate-rs";
/// The secret of [`RS_CLIENT_ID`].
pub const RS_CLIENT_SECRET: &str = "keygate-rs-secret-for-tests-only";
/// A resource server client that authenticates with `private_key_jwt` (ES256) and may
/// introspect every token.
pub const RS_JWT_CLIENT_ID: &str = "keygate-rs-jwt";
/// The private key (PKCS#8 PEM, P-256) of [`RS_JWT_CLIENT_ID`]: a test-only key, committed
/// beside `idp.mjs`, which registers its public half.
pub const RS_JWT_CLIENT_KEY_PEM: &str = include_str!("../idp/rs-client-key.pem");
/// The resource whose access tokens are opaque; also their audience.
pub const OPAQUE_RESOURCE: &str = "urn:keygate:opaque";
/// The resource whose access tokens are `at+jwt` JWTs; also their audience.
pub const JWT_RESOURCE: &str = "urn:keygate:jwt";
/// The scopes a token may carry (space-separated).
pub const SCOPES: &str = "read write admin";

/// How long the child has to print `READY` before the start counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every helper and provider request this module makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings for [`OidcProvider::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcOptions {
    /// Lifetime of client-credentials tokens unless a [`TokenRequest`] asks for another
    /// (whole seconds; default 600).
    pub token_ttl: Duration,
    /// Whether the token endpoint demands a DPoP nonce (RFC 9449 section 8); the helper
    /// answers the `use_dpop_nonce` challenge itself. Default off.
    pub dpop_nonce: bool,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(600),
            dpop_nonce: false,
        }
    }
}

/// What [`OidcProvider::token`] asks the provider's token endpoint for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenRequest {
    /// The RFC 8707 resource ([`OPAQUE_RESOURCE`] or [`JWT_RESOURCE`]); none gives an opaque
    /// token without audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Space-separated scopes out of [`SCOPES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether to bind the token to a DPoP key (a new one unless `key_id` names one).
    pub dpop: bool,
    /// A lifetime for this token instead of [`OidcOptions::token_ttl`] (whole seconds).
    #[serde(
        rename = "ttl_secs",
        serialize_with = "secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// The DPoP key to bind to, from an earlier [`IssuedToken`] or [`OidcProvider::new_key`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl TokenRequest {
    /// An opaque token for [`OPAQUE_RESOURCE`] with `scope`.
    pub fn opaque(scope: &str) -> Self {
        Self {
            resource: Some(OPAQUE_RESOURCE.to_owned()),
            scope: Some(scope.to_owned()),
            ..Self::default()
        }
    }

    /// A JWT access token for [`JWT_RESOURCE`] with `scope`.
    pub fn jwt(scope: &str) -> Self {
        Self {
            resource: Some(JWT_RESOURCE.to_owned()),
            scope: Some(scope.to_owned()),
            ..Self::default()
        }
    }

    /// Binds the token to a fresh DPoP key.
    #[must_use]
    pub fn dpop(mut self) -> Self {
        self.dpop = true;
        self
    }

    /// Binds the token to the DPoP key `key_id`.
    #[must_use]
    pub fn dpop_key(mut self, key_id: &str) -> Self {
        self.dpop = true;
        self.key_id = Some(key_id.to_owned());
        self
    }

    /// Gives the token this lifetime (whole seconds, at least one).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A token the provider issued, as its token endpoint answered, plus the DPoP key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct IssuedToken {
    /// The access token (opaque or a JWT).
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound token.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The granted scopes, when any.
    pub scope: Option<String>,
    /// The RFC 7638 SHA-256 thumbprint of the DPoP key, for a DPoP-bound token.
    pub jkt: Option<String>,
    /// The helper's name for the DPoP key, for [`ProofRequest::key_id`].
    pub key_id: Option<String>,
}

impl fmt::Debug for IssuedToken {
    // The access token is a bearer credential: keep it out of test output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("jkt", &self.jkt)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// A DPoP key pair the helper holds (ES256, P-256).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DpopKey {
    /// The helper's name for the key, for [`ProofRequest::key_id`] and
    /// [`TokenRequest::dpop_key`].
    pub key_id: String,
    /// The RFC 7638 SHA-256 thumbprint of its public key.
    pub jkt: String,
}

/// What [`OidcProvider::proof`] makes a DPoP proof of. Everything but the key, method and
/// URI is optional; the defaults make a valid proof.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProofRequest {
    /// The key to sign with (its public JWK goes in the header).
    pub key_id: String,
    /// The `htm` claim (HTTP method).
    pub htm: String,
    /// The `htu` claim (HTTP URI without query and fragment).
    pub htu: String,
    /// The token whose SHA-256 becomes the `ath` claim; none leaves `ath` out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Seconds added to the current time for `iat` (negative: in the past).
    pub iat_offset: i64,
    /// The `jti`; random unless given (give one to replay a proof).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A `nonce` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// `"none"` for an unsigned `alg: none` proof, `"HS256"` for one signed with a random
    /// HMAC secret; none signs with ES256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg_override: Option<String>,
    /// The `typ` header instead of `dpop+jwt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Whether the header's `jwk` is the private key (with `d`), which RFC 9449 forbids.
    pub private_jwk: bool,
    /// Whether to sign with (and put in the header) a fresh key, whose thumbprint differs
    /// from the token's `cnf.jkt`.
    pub other_key: bool,
    /// Claims merged over the usual ones (to set one to a wrong type, say).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, Value>,
    /// Claims to leave out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub omit: Vec<String>,
}

impl ProofRequest {
    /// A valid proof by `key_id` for a request `htm htu`, without `ath`.
    pub fn new(key_id: &str, htm: &str, htu: &str) -> Self {
        Self {
            key_id: key_id.to_owned(),
            htm: htm.to_owned(),
            htu: htu.to_owned(),
            ..Self::default()
        }
    }

    /// Adds `ath`, the hash of `access_token`.
    #[must_use]
    pub fn access_token(mut self, access_token: &str) -> Self {
        self.access_token = Some(access_token.to_owned());
        self
    }

    /// Moves `iat` by `seconds` from now.
    #[must_use]
    pub fn iat_offset(mut self, seconds: i64) -> Self {
        self.iat_offset = seconds;
        self
    }

    /// Uses this `jti`.
    #[must_use]
    pub fn jti(mut self, jti: &str) -> Self {
        self.jti = Some(jti.to_owned());
        self
    }
}

/// How many requests reached each endpoint of the provider since it (last) started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct IdpStats {
    /// Requests to the introspection endpoint.
    pub introspections: u64,
    /// Requests to the token endpoint (a DPoP nonce challenge counts twice).
    pub tokens: u64,
    /// Requests to the revocation endpoint.
    pub revocations: u64,
    /// Requests for the key set.
    pub jwks: u64,
}

/// A running `oidc-provider` on loopback with its helper API; killed on drop.
pub struct OidcProvider {
    child: Option<Running>,
    idp_port: u16,
    helper_port: u16,
    options: OidcOptions,
    log: PathBuf,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts a provider with [`OidcOptions::default`].
    ///
    /// # Panics
    ///
    /// If `node` or `npm` is missing, installing the packages fails, or the provider does
    /// not report ready within 30 seconds.
    pub async fn start() -> Self {
        Self::start_with(OidcOptions::default()).await
    }

    /// Starts a provider with `options`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_with(options: OidcOptions) -> Self {
        tokio::task::spawn_blocking(npm::ensure_installed)
            .await
            .expect("npm install task panicked");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "keygate-oidc-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut provider = Self {
            child: None,
            idp_port: 0,
            helper_port: 0,
            options,
            log,
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("a plain-HTTP reqwest client always builds"),
        };
        provider.launch().await;
        provider
    }

    /// The issuer, `http://127.0.0.1:<port>` (no trailing slash), as in every token.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.idp_port)
    }

    /// The provider's port.
    pub fn port(&self) -> u16 {
        self.idp_port
    }

    /// The OpenID discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// The key set's URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// The RFC 7662 introspection endpoint.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/token/introspection", self.issuer())
    }

    /// The RFC 7009 revocation endpoint.
    pub fn revocation_endpoint(&self) -> String {
        format!("{}/token/revocation", self.issuer())
    }

    /// Whether the node process is running (not [`kill`](Self::kill)ed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Obtains a token from the provider's token endpoint (client credentials as
    /// [`TOKEN_CLIENT_ID`], with a DPoP proof when `request.dpop`).
    ///
    /// # Panics
    ///
    /// If the provider refuses (the message carries its error) or is not running.
    pub async fn token(&self, request: TokenRequest) -> IssuedToken {
        self.helper("POST", "/token", &request).await
    }

    /// Makes a fresh DPoP key pair in the helper.
    ///
    /// # Panics
    ///
    /// If the helper is not running.
    pub async fn new_key(&self) -> DpopKey {
        self.helper("POST", "/key", &serde_json::json!({})).await
    }

    /// Makes a DPoP proof (a compact JWS for the `DPoP` header).
    ///
    /// # Panics
    ///
    /// If the key is unknown or the helper is not running.
    pub async fn proof(&self, request: ProofRequest) -> String {
        #[derive(Deserialize)]
        struct Proof {
            proof: String,
        }
        let proof: Proof = self.helper("POST", "/proof", &request).await;
        proof.proof
    }

    /// Revokes `token` at the revocation endpoint (as its client, [`TOKEN_CLIENT_ID`]).
    /// Only opaque tokens can be revoked; the provider refuses JWTs.
    ///
    /// # Panics
    ///
    /// If the provider refuses or is not running.
    pub async fn revoke(&self, token: &str) {
        let _: Value = self
            .helper("POST", "/revoke", &serde_json::json!({ "token": token }))
            .await;
    }

    /// Introspects `token` at the provider as [`RS_CLIENT_ID`], as keygate would, and
    /// returns the JSON answer.
    ///
    /// # Panics
    ///
    /// If the answer is not `200` with a JSON object, or the provider is not running.
    pub async fn introspect(&self, token: &str) -> Value {
        let body = format!(
            "token={}",
            percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
        );
        let response = self
            .http
            .post(self.introspection_endpoint())
            .basic_auth(RS_CLIENT_ID, Some(RS_CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("introspection request failed: {e}{}", self.log_tail()));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "introspection answered {status}: {text}"
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("introspection answered non-JSON ({e}): {text}"))
    }

    /// How many requests reached each provider endpoint since it (last) started.
    ///
    /// # Panics
    ///
    /// If the helper is not running.
    pub async fn stats(&self) -> IdpStats {
        self.helper("GET", "/stats", &Value::Null).await
    }

    /// How many requests reached the introspection endpoint since it (last) started.
    ///
    /// # Panics
    ///
    /// If the helper is not running.
    pub async fn introspections(&self) -> u64 {
        self.stats().await.introspections
    }

    /// Makes every later introspection wait `delay` before it is answered (zero: no wait).
    ///
    /// # Panics
    ///
    /// If the helper is not running.
    pub async fn set_introspection_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let _: Value = self
            .helper("POST", "/pause", &serde_json::json!({ "ms": ms }))
            .await;
    }

    /// Makes every later introspection answer `status` with an OAuth error body
    /// (`temporarily_unavailable`), or answer normally again with `None`.
    ///
    /// # Panics
    ///
    /// If the helper is not running.
    pub async fn set_introspection_failure(&self, status: Option<u16>) {
        let _: Value = self
            .helper(
                "POST",
                "/fail",
                &serde_json::json!({ "status": status.unwrap_or(0) }),
            )
            .await;
    }

    /// Kills the node process and waits for it to exit: the provider is down, its port
    /// refuses connections, until [`restart`](Self::restart).
    pub async fn kill(&mut self) {
        if let Some(mut running) = self.child.take() {
            // An error means it already exited, which is what we want.
            let _ = running.child.kill().await;
        }
    }

    /// Starts the provider again on the same ports (killing it first if it runs), with its
    /// options and an empty token store.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), or if a port was taken meanwhile.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// Spawns `node idp.mjs` on the remembered ports (0 the first time) and waits for ready.
    async fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let mut command = Command::new("node");
        command
            .arg("idp.mjs")
            .args(["--port", &self.idp_port.to_string()])
            .args(["--helper-port", &self.helper_port.to_string()])
            .current_dir(npm::idp_dir())
            .env(
                "IDP_TOKEN_TTL",
                self.options.token_ttl.as_secs().to_string(),
            )
            .env(
                "IDP_DPOP_NONCE",
                if self.options.dpop_nonce { "1" } else { "0" },
            )
            // Stdin stays open while we live; node exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `node` (is Node.js 20+ on PATH?): {e}"));
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => panic!(
                "oidc provider exited before READY ({:?}){}",
                child.try_wait(),
                self.log_tail()
            ),
            Ok(Err(e)) => panic!("reading the oidc provider's stdout: {e}{}", self.log_tail()),
            Err(_) => panic!(
                "oidc provider not ready within {READY_TIMEOUT:?}{}",
                self.log_tail()
            ),
        }
        let (idp_port, helper_port) = parse_ready(&line).unwrap_or_else(|| {
            panic!(
                "oidc provider printed {line:?} instead of READY{}",
                self.log_tail()
            )
        });
        self.idp_port = idp_port;
        self.helper_port = helper_port;
        self.child = Some(Running {
            child,
            _stdout: stdout,
        });
    }

    /// Calls the helper API and decodes its JSON answer.
    async fn helper<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl Serialize,
    ) -> T {
        assert!(self.is_running(), "oidc provider is not running (killed)");
        let url = format!("http://127.0.0.1:{}{path}", self.helper_port);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("helper requests serialize")),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("oidc helper {path} failed: {e}{}", self.log_tail()));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "oidc helper {path} answered {status}: {text}{}",
            self.log_tail()
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("oidc helper {path} answered {text:?}: {e}"))
    }

    /// The end of the node process's stderr, for panic messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!(
            "\n--- {} (tail) ---\n{}",
            self.log.display(),
            &text[start..]
        )
    }
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer())
            .field("helper_port", &self.helper_port)
            .field("running", &self.is_running())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut running) = self.child.take() {
            // kill_on_drop would do it too; this also reaps when it can.
            let _ = running.child.start_kill();
            let _ = running.child.try_wait();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// The child process, with its stdout kept open so that node never writes to a closed pipe.
struct Running {
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

/// Parses `READY <idp_port> <helper_port>`.
fn parse_ready(line: &str) -> Option<(u16, u16)> {
    let mut words = line.split_whitespace();
    if words.next()? != "READY" {
        return None;
    }
    let idp = words.next()?.parse().ok()?;
    let helper = words.next()?.parse().ok()?;
    words.next().is_none().then_some((idp, helper))
}

/// Serializes a lifetime as whole seconds (at least one).
fn secs<S: serde::Serializer>(ttl: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match ttl {
        Some(ttl) => serializer.serialize_u64(ttl.as_secs().max(1)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        assert_eq!(parse_ready("READY 1 2\n"), Some((1, 2)));
        assert_eq!(parse_ready("READY 1\n"), None);
        assert_eq!(parse_ready("READY 1 2 3\n"), None);
        assert_eq!(parse_ready("ready 1 2\n"), None);
        assert_eq!(parse_ready("READY 1 70000\n"), None);
    }

    #[test]
    fn requests_serialize_as_the_helper_expects() {
        let token = TokenRequest::opaque("read")
            .dpop()
            .ttl(Duration::from_millis(2500));
        assert_eq!(
            serde_json::to_value(&token).unwrap(),
            serde_json::json!({
                "resource": OPAQUE_RESOURCE, "scope": "read", "dpop": true, "ttl_secs": 2
            })
        );
        let proof = ProofRequest::new("k", "GET", "http://a/b").iat_offset(-5);
        assert_eq!(
            serde_json::to_value(&proof).unwrap(),
            serde_json::json!({
                "key_id": "k", "htm": "GET", "htu": "http://a/b", "iat_offset": -5,
                "private_jwk": false, "other_key": false
            })
        );
    }
}
