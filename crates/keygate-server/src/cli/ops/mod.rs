//! `keygate flush|refresh|revoke|status|reload`: the operator's client for a running sidecar's
//! admin API.
//!
//! Each command makes one request to the admin API (`--admin-url`, by default the
//! sidecar's loopback admin listener) and prints the answer as text, or as the server's JSON
//! with `--json`. The admin key is read from `KEYGATE_ADMIN_KEY` only: a command line is
//! visible to every user of the machine, the environment is not. The key is never printed.
//!
//! Exit codes: [`EXIT_OK`](crate::cli::EXIT_OK) when the admin API did what was asked, [`EXIT_INVALID`](crate::cli::EXIT_INVALID) when it
//! answered with an error status (the error goes to stderr), and `EXIT_USAGE` (through an
//! `anyhow` error) for usage errors and when the admin API could not be reached at all.

mod client;
mod format;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use keygate::{Clock as _, SystemClock};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use self::client::Api;
use self::format::{
    StatusReply, refreshed_text, reloaded_text, revocation_table, revoked_text, status_text,
};
use crate::admin::{
    ActionBody, JtiRevocation, KidRevocation, RefreshBody, ReloadBody, RevocationList,
    RevocationRequest, RevokedBody, SubjectRevocation, TokenRevocation,
};
use crate::cli::escape_text as esc;

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
    group = ArgGroup::new("what")
        .required(true)
        .args(["jti", "sub", "kid", "token_sha256", "token", "list"]),
    group = ArgGroup::new("one_token").args(["jti", "token_sha256", "token"]),
    after_help = AFTER_HELP,
)]
pub struct RevokeArgs {
    /// Revoke the token with this `jti` (requires --exp).
    #[arg(long, value_name = "JTI", requires = "exp", conflicts_with_all = NOT_JTI)]
    pub jti: Option<String>,

    /// When the revoked token expires; the revocation is dropped after that.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        requires = "one_token",
        conflicts_with_all = NOT_JTI
    )]
    pub exp: Option<u64>,

    /// Revoke the token whose text has this SHA-256 (64 lowercase hex digits, as
    /// `sha256sum` prints it for the token without a newline; requires --exp). For opaque
    /// tokens and JWTs without a `jti`.
    #[arg(
        long = "token-sha256",
        value_name = "HEX",
        requires = "exp",
        conflicts_with_all = NOT_JTI
    )]
    pub token_sha256: Option<String>,

    /// `-`: read the token to revoke from standard input and send only its SHA-256 (requires
    /// --exp). The token is never sent or printed; it is not taken on the command line,
    /// where shell history and process lists would keep it.
    #[arg(long, value_name = "-", requires = "exp", conflicts_with_all = NOT_JTI)]
    pub token: Option<String>,

    /// The tenant of the subject or key to revoke.
    #[arg(long, value_name = "TENANT", conflicts_with_all = ["jti", "exp", "list"])]
    pub tenant: Option<String>,

    /// Revoke the tokens of this subject (`sub`) issued before --before.
    #[arg(long, value_name = "SUB", requires = "tenant", conflicts_with_all = NOT_SUB)]
    pub sub: Option<String>,

    /// With --sub: revoke the tokens issued before this instant. Default: now.
    #[arg(long, value_name = "UNIX_SECONDS", requires = "sub", conflicts_with_all = NOT_SUB)]
    pub before: Option<u64>,

    /// The provider whose key to revoke (with --tenant and --kid).
    #[arg(long, value_name = "PROVIDER", requires = "kid", conflicts_with_all = NOT_KID)]
    pub provider: Option<String>,

    /// Revoke the signing key with this `kid` (requires --tenant and --provider).
    #[arg(
        long,
        value_name = "KID",
        requires_all = ["tenant", "provider"],
        conflicts_with_all = NOT_KID
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

/// What the arguments of a token revocation (`--jti`, `--token-sha256`, `--token`, `--exp`)
/// conflict with.
const NOT_JTI: [&str; 6] = ["tenant", "sub", "before", "provider", "kid", "list"];
/// What the arguments of a subject revocation (`--sub`, `--before`) conflict with.
const NOT_SUB: [&str; 5] = ["jti", "exp", "provider", "kid", "list"];
/// What the arguments of a key revocation (`--provider`, `--kid`) conflict with.
const NOT_KID: [&str; 5] = ["jti", "exp", "sub", "before", "list"];

/// Options of `keygate status`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct StatusArgs {
    /// How to reach the admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Options of `keygate reload`.
#[derive(Debug, Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ReloadArgs {
    /// How to reach the admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `keygate reload`: the sidecar re-reads its config file and applies it, or changes nothing
/// and says why.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn reload(args: &ReloadArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.api)?;
    let reply = api.call(Method::POST, &["admin", "v1", "reload"], None)?;
    api.finish(&reply, |r: ReloadBody| reloaded_text(&r))
}

/// `keygate flush`: drops a provider's cached keys and verified tokens on every replica.
///
/// # Errors
/// `KEYGATE_ADMIN_KEY` unset, a bad `--admin-url`, or the admin API unreachable.
pub fn flush(args: &ProviderArgs) -> anyhow::Result<ExitCode> {
    provider_action(args, "flush", |r: ActionBody| {
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
    provider_action(args, "refresh", |r: RefreshBody| refreshed_text(&r))
}

/// `POST` to a provider's `action` route; the answer shown by `human`.
fn provider_action<T: DeserializeOwned>(
    args: &ProviderArgs,
    action: &str,
    human: impl FnOnce(T) -> String,
) -> anyhow::Result<ExitCode> {
    let (tenant, provider) = args.provider_id()?;
    let api = Api::new(&args.api)?;
    let reply = api.call(Method::POST, &provider_path(tenant, provider, action), None)?;
    api.finish(&reply, human)
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
    api.finish(&reply, |r: RevokedBody| revoked_text(&r))
}

/// The SHA-256 of the token on `stdin` (`source` must be `-`), surrounding whitespace and
/// the final newline left out. The token itself goes nowhere else.
fn token_digest(source: &str, stdin: &mut dyn Read) -> anyhow::Result<String> {
    if source != "-" {
        bail!(
            "--token takes only - (the token on standard input): a token on the command line \
             would stay in shell history and process lists"
        );
    }
    // The largest `server.max_token_bytes`: a longer token could never have been accepted.
    let limit: u64 = 1024 * 1024;
    let mut bytes = Vec::new();
    stdin
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .context("reading the token from stdin")?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        bail!("the token on stdin is longer than any token keygate accepts");
    }
    let text = std::str::from_utf8(&bytes).context("the token on stdin is not UTF-8")?;
    let token = text.trim();
    if token.is_empty() {
        bail!(
            "no token on stdin; pipe it in, e.g. printf %s \"$TOKEN\" | keygate revoke --token - --exp ..."
        );
    }
    Ok(keygate::token_sha256(token))
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
    /// The body of `POST /admin/v1/revocations`, or `None` for `--list`; `--token -` reads
    /// standard input.
    fn request(&self) -> anyhow::Result<Option<Value>> {
        self.request_reading(&mut io::stdin().lock())
    }

    /// [`request`](Self::request), reading `--token -` from `stdin`.
    fn request_reading(&self, stdin: &mut dyn Read) -> anyhow::Result<Option<Value>> {
        // Unix seconds beyond i64 are refused by the server like any other out-of-range time.
        let seconds = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
        let until = self.until.map(seconds);
        // clap's groups and requirements allow exactly one of these shapes; the match
        // restates them so that a change to the rules cannot send a half-built request.
        let request = match self {
            RevokeArgs { list: true, .. } => return Ok(None),
            RevokeArgs {
                jti: Some(jti),
                exp: Some(exp),
                ..
            } => RevocationRequest::Jti(JtiRevocation {
                jti: jti.clone(),
                exp: seconds(*exp),
            }),
            RevokeArgs {
                token_sha256: Some(hex),
                exp: Some(exp),
                ..
            } => {
                if !keygate::is_token_sha256(hex) {
                    bail!("--token-sha256 must be the token's SHA-256 as 64 lowercase hex digits");
                }
                RevocationRequest::Token(TokenRevocation {
                    token_sha256: hex.clone(),
                    exp: seconds(*exp),
                })
            }
            RevokeArgs {
                token: Some(source),
                exp: Some(exp),
                ..
            } => RevocationRequest::Token(TokenRevocation {
                token_sha256: token_digest(source, stdin)?,
                exp: seconds(*exp),
            }),
            RevokeArgs {
                tenant: Some(tenant),
                sub: Some(sub),
                ..
            } => {
                let before = match self.before {
                    Some(before) => before,
                    None => unix_now()?,
                };
                RevocationRequest::Subject(SubjectRevocation {
                    tenant: tenant.clone(),
                    sub: sub.clone(),
                    before: seconds(before),
                    until,
                })
            }
            RevokeArgs {
                tenant: Some(tenant),
                provider: Some(provider),
                kid: Some(kid),
                ..
            } => RevocationRequest::Kid(KidRevocation {
                tenant: tenant.clone(),
                provider: provider.clone(),
                kid: kid.clone(),
                until,
            }),
            _ => bail!(
                "give one of --jti JTI --exp UNIX, --token-sha256 HEX --exp UNIX, \
                 --token - --exp UNIX, --tenant T --sub S [--before UNIX], \
                 --tenant T --provider P --kid K, or --list"
            ),
        };
        Ok(Some(
            serde_json::to_value(request).context("encoding the revocation")?,
        ))
    }
}

const REVOCATIONS: &[&str] = &["admin", "v1", "revocations"];

/// `admin/v1/providers/{tenant}/{provider}/{action}`, as path segments: each is
/// percent-encoded on its own, so a `/` in a name cannot change the route.
fn provider_path<'a>(tenant: &'a str, provider: &'a str, action: &'a str) -> [&'a str; 6] {
    ["admin", "v1", "providers", tenant, provider, action]
}

/// Now, in unix seconds, by the system clock: `--before`'s default.
fn unix_now() -> anyhow::Result<u64> {
    u64::try_from(keygate::clock::unix_seconds(SystemClock.now()))
        .context("the system clock is before 1970")
}
