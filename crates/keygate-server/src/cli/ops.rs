//! `keygate flush|refresh|revoke|status`: the operator's client for a running sidecar's
//! admin API.
//!
//! Each command makes one request to the admin API (`--admin-url`, by default the
//! sidecar's loopback admin listener) and prints the answer as text, or as the server's JSON
//! with `--json`. The admin key is read from `KEYGATE_ADMIN_KEY` only: a command line is
//! visible to every user of the machine, the environment is not. The key is never printed.
//!
//! Exit codes: [`EXIT_OK`] when the admin API did what was asked, [`EXIT_INVALID`] when it
//! answered with an error status (the error goes to stderr), and `EXIT_USAGE` (through an
//! `anyhow` error) for usage errors and when the admin API could not be reached at all.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use crate::cli::{EXIT_INVALID, EXIT_OK, escape_text as esc};

/// The environment variable holding the admin API key.
pub const ADMIN_KEY_ENV: &str = "KEYGATE_ADMIN_KEY";

/// Where `keygate serve` puts the admin API unless configured otherwise.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8081";

/// Shown after the options of every command here.
const AFTER_HELP: &str = "\
The admin API key is read from the KEYGATE_ADMIN_KEY environment variable, never from the \
command line, and is never printed.

Exit codes: 0 done, 1 the admin API answered with an error (printed on stderr), 2 usage error \
or the admin API could not be reached.";

/// Options shared by every command that talks to the admin API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL,
        value_name = "URL"
    )]
    pub admin_url: String,

    /// Print the admin API's JSON answer on one line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Give up on the admin API after this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
}

/// Which provider: `TENANT PROVIDER`, or `--tenant TENANT --provider PROVIDER`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ProviderArgs {
    /// The provider's tenant.
    #[arg(
        value_name = "TENANT",
        requires = "provider",
        required_unless_present = "tenant_flag",
        conflicts_with_all = ["tenant_flag", "provider_flag"]
    )]
    pub tenant: Option<String>,

    /// The provider's name within its tenant.
    #[arg(value_name = "PROVIDER")]
    pub provider: Option<String>,

    /// The provider's tenant (instead of the first positional argument).
    #[arg(long = "tenant", value_name = "TENANT", requires = "provider_flag")]
    pub tenant_flag: Option<String>,

    /// The provider's name (instead of the second positional argument).
    #[arg(long = "provider", value_name = "PROVIDER", requires = "tenant_flag")]
    pub provider_flag: Option<String>,

    /// How to reach the admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// What to revoke: exactly one of a token (`--jti --exp`), a subject's tokens
/// (`--tenant --sub [--before]`) or a signing key (`--tenant --provider --kid`); or `--list`
/// to show the revocations in force.
//
// Every argument names the arguments of the other shapes as conflicts, not only the group:
// clap waives a `requires` when the missing argument conflicts with one that is present, so
// `--exp 1 --tenant t --sub s` would otherwise slip through as a subject revocation.
#[derive(Debug, Clone, Args)]
#[command(
    group = ArgGroup::new("what").required(true).args(["jti", "sub", "kid", "list"]),
    after_help = AFTER_HELP,
)]
pub struct RevokeArgs {
    /// Revoke the token with this `jti` (requires --exp).
    #[arg(
        long,
        value_name = "JTI",
        requires = "exp",
        conflicts_with_all = ["tenant", "sub", "before", "provider", "kid", "list"]
    )]
    pub jti: Option<String>,

    /// When the revoked token expires; the revocation is dropped after that.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        requires = "jti",
        conflicts_with_all = ["tenant", "sub", "before", "provider", "kid", "list"]
    )]
    pub exp: Option<u64>,

    /// The tenant of the subject or key to revoke.
    #[arg(long, value_name = "TENANT", conflicts_with_all = ["jti", "exp", "list"])]
    pub tenant: Option<String>,

    /// Revoke the tokens of this subject (`sub`) issued before --before.
    #[arg(
        long,
        value_name = "SUB",
        requires = "tenant",
        conflicts_with_all = ["jti", "exp", "provider", "kid", "list"]
    )]
    pub sub: Option<String>,

    /// With --sub: revoke the tokens issued before this instant. Default: now.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        requires = "sub",
        conflicts_with_all = ["jti", "exp", "provider", "kid", "list"]
    )]
    pub before: Option<u64>,

    /// The provider whose key to revoke (with --tenant and --kid).
    #[arg(
        long,
        value_name = "PROVIDER",
        requires = "kid",
        conflicts_with_all = ["jti", "exp", "sub", "before", "list"]
    )]
    pub provider: Option<String>,

    /// Revoke the signing key with this `kid` (requires --tenant and --provider).
    #[arg(
        long,
        value_name = "KID",
        requires_all = ["tenant", "provider"],
        conflicts_with_all = ["jti", "exp", "sub", "before", "list"]
    )]
    pub kid: Option<String>,

    /// With --sub or --kid: when the server may drop the revocation. Default: the server's
    /// (for a subject, --before plus the longest token lifetime; for a key, never).
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        conflicts_with_all = ["jti", "exp", "list"]
    )]
    pub until: Option<u64>,

    /// List the revocations in force instead of adding one.
    #[arg(long)]
    pub list: bool,

    /// How to reach the admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Options of `keygate status`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct StatusArgs {
    /// How to reach the admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `keygate flush`: drops a provider's cached keys and verified tokens on every replica.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn flush(args: &ProviderArgs) -> anyhow::Result<ExitCode> {
    let (tenant, provider) = args.provider_id()?;
    let api = Api::new(&args.api)?;
    let reply = api.call(
        Method::POST,
        &provider_path(tenant, provider, "flush"),
        None,
    )?;
    api.finish(&reply, |r: FlushReply| {
        format!(
            "flushed {}/{} (seq {})",
            esc(&r.tenant),
            esc(&r.provider),
            r.seq
        )
    })
}

/// `keygate refresh`: refetches a provider's key set now.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn refresh(args: &ProviderArgs) -> anyhow::Result<ExitCode> {
    let (tenant, provider) = args.provider_id()?;
    let api = Api::new(&args.api)?;
    let reply = api.call(
        Method::POST,
        &provider_path(tenant, provider, "refresh"),
        None,
    )?;
    api.finish(&reply, |r: RefreshReply| {
        let kids = if r.kids.is_empty() {
            "no kids".to_owned()
        } else {
            format!("kids {}", esc(&r.kids.join(", ")))
        };
        format!(
            "refreshed {}/{}: {}, {kids} (seq {})",
            esc(&r.tenant),
            esc(&r.provider),
            esc(&r.state),
            r.seq
        )
    })
}

/// `keygate revoke`: revokes a token, a subject's tokens or a key; or lists revocations.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn revoke(args: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let request = args.request()?;
    let api = Api::new(&args.api)?;
    let Some(body) = request else {
        let reply = api.call(Method::GET, REVOCATIONS, None)?;
        return api.finish(&reply, |r: RevocationList| revocation_table(&r.revocations));
    };
    let reply = api.call(Method::POST, REVOCATIONS, Some(&body))?;
    api.finish(&reply, |r: RevokeReply| {
        let what = match r.revoked {
            Revoked::Jti { jti, exp } => format!("jti {} until {}", esc(&jti), Unix(exp)),
            Revoked::Subject {
                tenant,
                sub,
                before,
                until,
            } => format!(
                "subject {} of tenant {}: tokens issued before {}{}",
                esc(&sub),
                esc(&tenant),
                Unix(before),
                kept_until(until)
            ),
            Revoked::Kid {
                tenant,
                provider,
                kid,
                until,
            } => format!(
                "key {} of {}/{}{}",
                esc(&kid),
                esc(&tenant),
                esc(&provider),
                kept_until(until)
            ),
        };
        format!("revoked {what} (seq {})", r.seq)
    })
}

/// `keygate status`: providers, their keys, the bus.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.api)?;
    let reply = api.call(Method::GET, &["admin", "v1", "status"], None)?;
    api.finish(&reply, |r: StatusReply| status_text(&r))
}

impl ProviderArgs {
    /// The tenant and provider, whichever form they were given in.
    ///
    /// # Errors
    /// Neither form complete; clap's rules make this unreachable from the command line.
    pub fn provider_id(&self) -> anyhow::Result<(&str, &str)> {
        match (
            &self.tenant,
            &self.provider,
            &self.tenant_flag,
            &self.provider_flag,
        ) {
            (Some(t), Some(p), None, None) | (None, None, Some(t), Some(p)) => Ok((t, p)),
            _ => bail!("give TENANT PROVIDER, or --tenant TENANT --provider PROVIDER"),
        }
    }
}

impl RevokeArgs {
    /// The body of `POST /admin/v1/revocations`, or `None` for `--list`.
    fn request(&self) -> anyhow::Result<Option<Value>> {
        // clap's groups and requirements allow exactly one of these shapes; the match
        // restates them so that a change to the rules cannot send a half-built request.
        let mut body = match self {
            RevokeArgs { list: true, .. } => return Ok(None),
            RevokeArgs {
                jti: Some(jti),
                exp: Some(exp),
                ..
            } => json!({ "jti": jti, "exp": exp }),
            RevokeArgs {
                tenant: Some(tenant),
                sub: Some(sub),
                ..
            } => {
                let before = match self.before {
                    Some(before) => before,
                    None => unix_now()?,
                };
                json!({ "tenant": tenant, "sub": sub, "before": before })
            }
            RevokeArgs {
                tenant: Some(tenant),
                provider: Some(provider),
                kid: Some(kid),
                ..
            } => json!({ "tenant": tenant, "provider": provider, "kid": kid }),
            _ => bail!(
                "give one of --jti JTI --exp UNIX, --tenant T --sub S [--before UNIX], \
                 --tenant T --provider P --kid K, or --list"
            ),
        };
        if let (Some(until), Value::Object(body)) = (self.until, &mut body) {
            body.insert("until".to_owned(), until.into());
        }
        Ok(Some(body))
    }
}

const REVOCATIONS: &[&str] = &["admin", "v1", "revocations"];

/// `admin/v1/providers/{tenant}/{provider}/{action}`, as path segments: each is
/// percent-encoded on its own, so a `/` in a name cannot change the route.
fn provider_path<'a>(tenant: &'a str, provider: &'a str, action: &'a str) -> [&'a str; 6] {
    ["admin", "v1", "providers", tenant, provider, action]
}

/// A client for one admin API.
struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    json: bool,
}

/// An answer from the admin API, whatever its status.
struct Reply {
    status: StatusCode,
    body: String,
}

impl Api {
    fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        // The key first: without it no command can do anything, whatever else is wrong.
        let authorization = authorization_from_env()?;
        let base = parse_base_url(&args.admin_url)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout))
            // A redirect would carry the key somewhere the operator did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Api {
            runtime,
            http,
            base,
            authorization,
            json: args.json,
        })
    }

    /// Sends one request. Any answer is `Ok`, error statuses included; `Err` means no answer.
    fn call(&self, method: Method, path: &[&str], body: Option<&Value>) -> anyhow::Result<Reply> {
        let url = endpoint(&self.base, path);
        let mut request = self
            .http
            .request(method, url)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let unreachable = || format!("could not reach the admin API at {}", self.base);
        self.runtime.block_on(async {
            let response = request.send().await.with_context(unreachable)?;
            let status = response.status();
            let body = response.bytes().await.with_context(unreachable)?;
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        })
    }

    /// Prints `reply` and picks the exit code: on success the JSON body (`--json`) or
    /// `human` of it parsed; on an error status the error on stderr (and the body with
    /// `--json`).
    fn finish<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        human: impl FnOnce(T) -> String,
    ) -> anyhow::Result<ExitCode> {
        if !reply.status.is_success() {
            let error = ApiError::from_reply(reply);
            let mut stderr = std::io::stderr().lock();
            // Errors go to stderr only, with --json too: stdout holds answers, so a script
            // reading it never mistakes an error body for one. Nothing more useful can be
            // done when stderr itself is gone.
            if self.json {
                let body = compact_json(&reply.body).unwrap_or_else(|| error.to_json());
                let _ = writeln!(stderr, "{body}");
            }
            let _ = writeln!(stderr, "keygate: {}", clean(&error.to_string()));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        let unexpected = || format!("unexpected answer from the admin API at {}", self.base);
        if self.json {
            let body = compact_json(&reply.body)
                .with_context(unexpected)
                .context("the body is not JSON")?;
            print_stdout(&body)?;
        } else {
            let parsed: T = serde_json::from_str(&reply.body).with_context(unexpected)?;
            // Names and messages come from the server: keep control characters (terminal
            // escapes) out of the operator's terminal.
            let text: Vec<_> = human(parsed)
                .lines()
                .map(|l| clean(l).into_owned())
                .collect();
            print_stdout(&text.join("\n"))?;
        }
        Ok(ExitCode::from(EXIT_OK))
    }
}

/// `Authorization: Bearer <KEYGATE_ADMIN_KEY>`, marked sensitive.
fn authorization_from_env() -> anyhow::Result<HeaderValue> {
    let key = match std::env::var_os(ADMIN_KEY_ENV) {
        Some(key) if !key.is_empty() => key,
        _ => bail!(
            "{ADMIN_KEY_ENV} is not set: set it to an admin API key of the sidecar \
             (see `keygate admin --help`)"
        ),
    };
    // The messages below must not include the key, so the parse errors are not chained.
    let Some(key) = key.to_str() else {
        bail!("{ADMIN_KEY_ENV} is not valid UTF-8");
    };
    let key = strip_one_newline(key);
    let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {key}")) else {
        bail!("{ADMIN_KEY_ENV} holds characters that cannot go in an HTTP header");
    };
    // Keeps the value out of HTTP/2 header compression tables and any debug output.
    value.set_sensitive(true);
    Ok(value)
}

/// `key` without one trailing `\n` or `\r\n`, as `keygate admin hash-key` reads its
/// secret: `export KEYGATE_ADMIN_KEY="$(cat file)"` strips it, but a secret mounted from a
/// file by an orchestrator often keeps it.
fn strip_one_newline(key: &str) -> &str {
    key.strip_suffix('\n')
        .map_or(key, |rest| rest.strip_suffix('\r').unwrap_or(rest))
}

fn parse_base_url(arg: &str) -> anyhow::Result<Url> {
    let url = Url::parse(arg).with_context(|| format!("invalid --admin-url {arg:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("invalid --admin-url {arg:?}: the scheme must be http or https");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("invalid --admin-url {arg:?}: a base URL takes no query or fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("invalid --admin-url: put the admin key in {ADMIN_KEY_ENV}, not in the URL");
    }
    Ok(url)
}

/// `base` with `segments` appended to its path, each percent-encoded.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http and https URLs always have a path (checked in parse_base_url)")
        .pop_if_empty()
        .extend(segments);
    url
}

/// The error body of the admin API, or the best that can be made of a body that is not one
/// (a proxy's HTML page, say).
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(skip)]
    status: u16,
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

impl ApiError {
    fn from_reply(reply: &Reply) -> Self {
        let status = reply.status.as_u16();
        if let Ok(error) = serde_json::from_str::<ApiError>(&reply.body) {
            return ApiError { status, ..error };
        }
        let error = reply
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        let text = reply.body.trim();
        let message = match text.char_indices().nth(200) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None if text.is_empty() => "no error body".to_owned(),
            None => text.to_owned(),
        };
        ApiError {
            status,
            error,
            message,
            field: None,
            reason: None,
        }
    }

    /// A JSON error body for `--json` when the server did not send one.
    fn to_json(&self) -> String {
        json!({ "error": self.error, "message": self.message }).to_string()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, " (reason {reason})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct FlushReply {
    tenant: String,
    provider: String,
    seq: u64,
}

#[derive(Debug, Deserialize)]
struct RefreshReply {
    tenant: String,
    provider: String,
    seq: u64,
    state: String,
    #[serde(default)]
    kids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RevokeReply {
    revoked: Revoked,
    seq: u64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Revoked {
    Jti {
        jti: String,
        exp: i64,
    },
    Subject {
        tenant: String,
        sub: String,
        before: i64,
        #[serde(default)]
        until: Option<i64>,
    },
    Kid {
        tenant: String,
        provider: String,
        kid: String,
        #[serde(default)]
        until: Option<i64>,
    },
}

/// `, kept until <time>` when the server says when it drops the revocation.
fn kept_until(until: Option<i64>) -> String {
    until.map_or_else(String::new, |t| format!(", kept until {}", Unix(t)))
}

#[derive(Debug, Deserialize)]
struct RevocationList {
    revocations: Vec<Revocation>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Revocation {
    Jti {
        jti: String,
        exp: i64,
    },
    Subject {
        tenant: String,
        sub: String,
        before: i64,
        #[serde(default)]
        until: Option<i64>,
    },
    Kid {
        tenant: String,
        provider: String,
        kid: String,
        #[serde(default)]
        until: Option<i64>,
    },
    /// A kind of revocation newer than this client.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StatusReply {
    now: i64,
    providers: Vec<ProviderRow>,
    bus: BusRow,
    revocations: u64,
    cached_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct ProviderRow {
    tenant: String,
    provider: String,
    state: String,
    #[serde(default)]
    kids: Vec<String>,
    fetched_at: Option<i64>,
    expires_at: Option<i64>,
    last_error: Option<LastErrorRow>,
    /// One row per JWKS URL of a provider with several.
    #[serde(default)]
    sources: Vec<SourceRow>,
}

#[derive(Debug, Deserialize)]
struct SourceRow {
    url: String,
    state: String,
    #[serde(default)]
    kids: Vec<String>,
    fetched_at: Option<i64>,
    expires_at: Option<i64>,
    last_error: Option<LastErrorRow>,
}

#[derive(Debug, Deserialize)]
struct LastErrorRow {
    reason: String,
}

#[derive(Debug, Deserialize)]
struct BusRow {
    backend: String,
    state: String,
    last_seq: u64,
    lag_seconds: f64,
    #[serde(default)]
    primary: Option<String>,
    #[serde(default)]
    last_resync: Option<ResyncRow>,
}

#[derive(Debug, Deserialize)]
struct ResyncRow {
    at: i64,
    reason: String,
}

fn status_text(r: &StatusReply) -> String {
    let mut rows = vec![
        [
            "TENANT",
            "PROVIDER",
            "STATE",
            "KEYS",
            "FETCHED",
            "EXPIRES",
            "LAST ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in &r.providers {
        let fetched = p
            .fetched_at
            .map_or_else(|| "-".into(), |t| relative(t, r.now));
        let expires = match (p.expires_at, p.fetched_at) {
            (Some(t), _) => relative(t, r.now),
            // Keys are cached but have no expiry: a static key set.
            (None, Some(_)) => "never".into(),
            (None, None) => "-".into(),
        };
        let error = p
            .last_error
            .as_ref()
            .map_or_else(|| "-".into(), |e| e.reason.clone());
        rows.push(vec![
            p.tenant.clone(),
            p.provider.clone(),
            p.state.clone(),
            p.kids.len().to_string(),
            fetched,
            expires,
            error,
        ]);
        // A provider with several JWKS URLs: one indented row per URL under it.
        for u in &p.sources {
            let at = |t: Option<i64>| t.map_or_else(|| "-".into(), |t| relative(t, r.now));
            rows.push(vec![
                String::new(),
                format!("  {}", u.url),
                u.state.clone(),
                u.kids.len().to_string(),
                at(u.fetched_at),
                at(u.expires_at),
                u.last_error
                    .as_ref()
                    .map_or_else(|| "-".into(), |e| e.reason.clone()),
            ]);
        }
    }
    let mut text = table(&rows);
    let mut extra = String::new();
    if let Some(node) = &r.bus.primary {
        extra.push_str(&format!(", primary {}", esc(node)));
    }
    if let Some(resync) = &r.bus.last_resync {
        extra.push_str(&format!(
            ", last resync {} ({})",
            relative(resync.at, r.now),
            esc(&resync.reason)
        ));
    }
    text.push_str(&format!(
        "bus: {} {} (seq {}, lag {:.1}s{extra})\nrevocations: {}, cached tokens: {}",
        esc(&r.bus.backend),
        esc(&r.bus.state),
        r.bus.last_seq,
        r.bus.lag_seconds,
        r.revocations,
        r.cached_tokens
    ));
    text
}

fn revocation_table(revocations: &[Revocation]) -> String {
    if revocations.is_empty() {
        return "no revocations".to_owned();
    }
    let mut rows = vec![
        ["TYPE", "TARGET", "BEFORE", "UNTIL"]
            .map(str::to_owned)
            .to_vec(),
    ];
    let until = |t: Option<i64>| t.map_or_else(|| "-".into(), |t| Unix(t).to_string());
    for r in revocations {
        rows.push(match r {
            Revocation::Jti { jti, exp } => vec![
                "jti".into(),
                format!("jti={jti}"),
                "-".into(),
                Unix(*exp).to_string(),
            ],
            Revocation::Subject {
                tenant,
                sub,
                before,
                until: t,
            } => vec![
                "subject".into(),
                format!("tenant={tenant} sub={sub}"),
                Unix(*before).to_string(),
                until(*t),
            ],
            Revocation::Kid {
                tenant,
                provider,
                kid,
                until: t,
            } => vec![
                "kid".into(),
                format!("tenant={tenant} provider={provider} kid={kid}"),
                "-".into(),
                until(*t),
            ],
            Revocation::Other => ["other", "-", "-", "-"].map(str::to_owned).to_vec(),
        });
    }
    let mut text = table(&rows);
    text.pop();
    text
}

/// Left-aligned columns two spaces apart, one line per row, no trailing spaces. Every cell
/// goes through [`esc`]: a cell can hold nothing that starts a new row or reorders one.
fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| esc(cell).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `t` relative to `now`: `12s ago`, `in 4m58s`.
fn relative(t: i64, now: i64) -> String {
    let span = Span(t.abs_diff(now));
    if t > now {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A number of seconds, shortly: `42s`, `4m58s`, `2h05m`, `3d04h`.
struct Span(u64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s {
            0..60 => write!(f, "{s}s"),
            60..3_600 => write!(f, "{}m{:02}s", s / 60, s % 60),
            3_600..86_400 => write!(f, "{}h{:02}m", s / 3_600, s % 3_600 / 60),
            _ => write!(f, "{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
        }
    }
}

/// Seconds since the Unix epoch, shown as an RFC 3339 UTC timestamp.
struct Unix(i64);

impl fmt::Display for Unix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, secs) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3_600,
            secs % 3_600 / 60,
            secs % 60
        )
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix_now() -> anyhow::Result<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .context("the system clock is before 1970")
}

/// `text` with control and bidirectional characters escaped ([`esc`]), so a name or
/// message from the server cannot move the cursor, recolour the operator's terminal or
/// reorder what it shows.
fn clean(text: &str) -> Cow<'_, str> {
    esc(text)
}

/// Valid JSON `text` on one line: whitespace outside strings removed, everything else
/// (member order, number spelling, escapes) kept. `None` if it is not JSON.
fn compact_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(super::compact_json(text))
}

fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("keygate").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    fn revoke_args(args: &[&str]) -> Result<RevokeArgs, clap::Error> {
        let mut full = vec!["revoke"];
        full.extend(args);
        match parse(&full)? {
            Command::Revoke(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn provider_is_positional_or_flags_but_not_both() {
        for ok in [
            &["flush", "acme", "idp"][..],
            &["refresh", "--tenant", "acme", "--provider", "idp"],
        ] {
            match parse(ok).unwrap() {
                Command::Flush(a) | Command::Refresh(a) => {
                    assert_eq!(a.provider_id().unwrap(), ("acme", "idp"));
                }
                other => panic!("{other:?}"),
            }
        }
        for bad in [
            &["flush"][..],
            &["flush", "acme"],
            &["flush", "--tenant", "acme"],
            &["flush", "--provider", "idp"],
            &["flush", "acme", "idp", "--tenant", "acme"],
            &["flush", "--tenant", "acme", "--provider", "idp", "extra"],
            &["flush", "acme", "idp", "--timeout", "0"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn revoke_accepts_exactly_one_shape() {
        let jti = revoke_args(&["--jti", "j1", "--exp", "1700000000"]).unwrap();
        assert_eq!(
            jti.request().unwrap(),
            Some(json!({"jti": "j1", "exp": 1_700_000_000}))
        );
        let sub = revoke_args(&["--tenant", "t", "--sub", "s", "--before", "5"]).unwrap();
        assert_eq!(
            sub.request().unwrap(),
            Some(json!({"tenant": "t", "sub": "s", "before": 5}))
        );
        let before = unix_now().unwrap();
        let sub_now = revoke_args(&["--tenant", "t", "--sub", "s"]).unwrap();
        let sent = sub_now.request().unwrap().unwrap()["before"]
            .as_u64()
            .unwrap();
        assert!(sent >= before && sent <= unix_now().unwrap(), "{sent}");
        let kid = revoke_args(&["--tenant", "t", "--provider", "p", "--kid", "k"]).unwrap();
        assert_eq!(
            kid.request().unwrap(),
            Some(json!({"tenant": "t", "provider": "p", "kid": "k"}))
        );
        assert_eq!(revoke_args(&["--list"]).unwrap().request().unwrap(), None);
        let kid_until = [
            "--tenant",
            "t",
            "--provider",
            "p",
            "--kid",
            "k",
            "--until",
            "9",
        ];
        assert_eq!(
            revoke_args(&kid_until).unwrap().request().unwrap(),
            Some(json!({"tenant": "t", "provider": "p", "kid": "k", "until": 9}))
        );

        for bad in [
            &[][..],
            &["--jti", "j"],
            &["--exp", "1"],
            &["--tenant", "t"],
            &["--sub", "s"],
            &["--tenant", "t", "--provider", "p"],
            &["--jti", "j", "--exp", "1", "--tenant", "t", "--sub", "s"],
            &["--jti", "j", "--exp", "1", "--tenant", "t"],
            &["--tenant", "t", "--sub", "s", "--kid", "k"],
            &[
                "--tenant",
                "t",
                "--sub",
                "s",
                "--provider",
                "p",
                "--kid",
                "k",
            ],
            &[
                "--tenant",
                "t",
                "--provider",
                "p",
                "--kid",
                "k",
                "--before",
                "1",
            ],
            &["--list", "--jti", "j", "--exp", "1"],
            &["--list", "--tenant", "t"],
            &["--list", "--exp", "1"],
            &["--exp", "1", "--tenant", "t", "--sub", "s"],
            &[
                "--exp",
                "1",
                "--tenant",
                "t",
                "--provider",
                "p",
                "--kid",
                "k",
            ],
            &["--before", "1", "--jti", "j", "--exp", "2"],
            &["--before", "1", "--tenant", "t"],
            &["--provider", "p", "--tenant", "t", "--sub", "s"],
            &["--tenant", "t", "--kid", "k"],
            &["--jti", "j", "--exp", "1", "--until", "2"],
            &["--until", "2"],
            &["--list", "--until", "2"],
        ] {
            let err = revoke_args(bad).expect_err(&format!("{bad:?} parsed"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn endpoints_encode_each_segment_and_keep_a_base_path() {
        let base = parse_base_url("http://127.0.0.1:8081").unwrap();
        assert_eq!(
            endpoint(&base, &provider_path("a b", "x/y", "flush")).as_str(),
            "http://127.0.0.1:8081/admin/v1/providers/a%20b/x%2Fy/flush"
        );
        let prefixed = parse_base_url("https://ops.example/keygate/").unwrap();
        assert_eq!(
            endpoint(&prefixed, REVOCATIONS).as_str(),
            "https://ops.example/keygate/admin/v1/revocations"
        );
        for bad in [
            "ftp://host",
            "not a url",
            "http://h/?q=1",
            "http://user:pw@h/",
        ] {
            let err = parse_base_url(bad).unwrap_err();
            assert!(!format!("{err:#}").contains("pw"), "{err:#}");
        }
    }

    #[test]
    fn times_are_shown_relative_and_in_rfc3339() {
        assert_eq!(relative(88, 100), "12s ago");
        assert_eq!(relative(100, 100), "0s ago");
        assert_eq!(relative(100 + 4 * 60 + 58, 100), "in 4m58s");
        assert_eq!(relative(100 + 2 * 3_600 + 5 * 60, 100), "in 2h05m");
        assert_eq!(relative(0, 3 * 86_400 + 4 * 3_600), "3d04h ago");
        assert_eq!(Unix(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Unix(1_700_000_000).to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(Unix(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Unix(-1).to_string(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["A".to_owned(), "LONG HEADER".to_owned(), "Z".to_owned()],
            vec!["wide cell".to_owned(), "x".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "A          LONG HEADER  Z\nwide cell  x            -\n"
        );
    }

    #[test]
    fn json_is_compacted_but_otherwise_kept() {
        assert_eq!(
            compact_json("{\n  \"b\": \"x y\",\n  \"a\": [1, 2.50]\n}\n").as_deref(),
            Some(r#"{"b":"x y","a":[1,2.50]}"#)
        );
        assert_eq!(compact_json("<html>"), None);
    }

    #[test]
    fn one_trailing_newline_is_stripped_from_the_admin_key_like_hash_key_does() {
        assert_eq!(strip_one_newline("kg_x\n"), "kg_x");
        assert_eq!(strip_one_newline("kg_x\r\n"), "kg_x");
        assert_eq!(strip_one_newline("kg_x\n\n"), "kg_x\n");
        assert_eq!(strip_one_newline("kg_x"), "kg_x");
    }

    #[test]
    fn a_jti_with_a_newline_or_bidi_override_cannot_add_or_reorder_rows() {
        let text = revocation_table(&[
            Revocation::Jti {
                jti: "real\njti  jti=forged".to_owned(),
                exp: 0,
            },
            Revocation::Jti {
                jti: "\u{202E}evil".to_owned(),
                exp: 0,
            },
        ]);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("jti=real\\njti"), "{text}");
        assert!(
            text.contains("\\u{202e}evil") && !text.contains('\u{202E}'),
            "{text}"
        );
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(clean("ok"), "ok");
        assert_eq!(clean("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\nc");
    }

    #[test]
    fn error_bodies_that_are_not_json_still_make_a_message() {
        let reply = Reply {
            status: StatusCode::BAD_GATEWAY,
            body: "<html>upstream down</html>".into(),
        };
        let error = ApiError::from_reply(&reply);
        assert_eq!(
            error.to_string(),
            "502 bad_gateway: <html>upstream down</html>"
        );
        let reply = Reply {
            status: StatusCode::BAD_REQUEST,
            body: r#"{"error":"bad_request","message":"exp is in the past","field":"exp"}"#.into(),
        };
        assert_eq!(
            ApiError::from_reply(&reply).to_string(),
            "400 bad_request: exp is in the past (field exp)"
        );
    }

    #[test]
    fn status_shows_the_primary_and_the_last_resync_when_the_server_sends_them() {
        let reply: StatusReply = serde_json::from_value(serde_json::json!({
            "now": 1_000,
            "providers": [],
            "bus": {
                "backend": "redis", "state": "ok", "last_seq": 9, "lag_seconds": 0.0,
                "primary": "10.0.0.5:6380",
                "last_resync": {"at": 880, "reason": "epoch"}
            },
            "revocations": 1,
            "cached_tokens": 0
        }))
        .unwrap();
        let text = status_text(&reply);
        assert!(
            text.contains(
                "bus: redis ok (seq 9, lag 0.0s, primary 10.0.0.5:6380, last resync 2m00s ago (epoch))"
            ),
            "{text}"
        );
    }
}
