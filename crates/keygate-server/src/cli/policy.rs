//! `keygate policy check`: the dry run. Evaluates the config file's policy for one request and
//! one claims set, as `/verify` would for a valid token carrying those claims, and prints one
//! JSON line. No network, no signature: operators test a policy change in CI before
//! reloading it.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::cli::{EXIT_INVALID, EXIT_OK};
use crate::config::Config;

/// The long `--help` text of `keygate policy check`: the output and exit-code contract.
pub(crate) const LONG_ABOUT: &str = "\
Evaluate the config file's [policy] for one request, offline.

The claims stand for a token that verified: no signature, no key set, no network. The
token's provider is --provider, or else the configured provider whose issuer is the
claims' iss (none if no provider has it).

Prints exactly one JSON line on stdout:
  {\"decision\":\"allow\"|\"deny\",\"route\":NAME|null,\"reason\":CODE,\"status\":200|401|403,
   \"path\":NORMALIZED|null,\"provider\":\"TENANT/PROVIDER\"|null}
members in that order.

Exit codes: 0 allow, 1 deny, 2 usage or configuration error (message on stderr).";

/// `keygate policy ...`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum PolicyCommand {
    /// Dry-run the policy for one request and claims set; print one JSON line.
    #[command(long_about = LONG_ABOUT)]
    Check(CheckArgs),
}

/// Arguments of `keygate policy check`.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("claims_source").required(true).args(["claims", "claims_file"]),
)]
pub struct CheckArgs {
    /// The config file whose `[policy]` is evaluated.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The request's method.
    #[arg(long)]
    pub method: String,
    /// The request's path, with or without a query string (which never matches).
    #[arg(long)]
    pub uri: String,
    /// The request's host.
    #[arg(long)]
    pub host: Option<String>,
    /// The token's claims, as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub claims: Option<String>,
    /// A file holding the token's claims as a JSON object; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub claims_file: Option<PathBuf>,
    /// The token's provider as `tenant/provider` (default: found from the claims' `iss`).
    #[arg(long, value_name = "TENANT/PROVIDER")]
    pub provider: Option<String>,
}

/// Runs `keygate policy ...`: prints the verdict line and returns the exit code.
///
/// # Errors
/// An unreadable or invalid config file, unreadable or non-object claims, an unknown
/// provider.
pub fn run(cmd: &PolicyCommand) -> anyhow::Result<u8> {
    let PolicyCommand::Check(args) = cmd;
    let (line, allowed) = check(args)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("writing the verdict to stdout")?;
    Ok(if allowed { EXIT_OK } else { EXIT_INVALID })
}

/// The verdict line and whether it allows.
fn check(args: &CheckArgs) -> anyhow::Result<(String, bool)> {
    let config = Config::load(&args.config).context("the config file")?;
    let text = match (&args.claims, &args.claims_file) {
        (Some(json), _) => json.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("reading claims from stdin")?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading --claims-file {}", path.display()))?,
        (None, None) => bail!("one of --claims or --claims-file is required"),
    };
    let claims: Map<String, Value> =
        serde_json::from_str(&text).context("the claims are not a JSON object")?;
    let mut providers: Vec<(String, String, Option<String>)> = config
        .providers
        .iter()
        .map(|p| {
            (
                p.config.tenant().to_owned(),
                p.config.name().to_owned(),
                Some(p.config.issuer().to_owned()),
            )
        })
        .collect();
    // The development issuer's URL is known only once it listens: `--provider` names it.
    if let Some(dev) = &config.dev_issuer {
        providers.push((dev.tenant.clone(), dev.provider.clone(), None));
    }
    let provider = match &args.provider {
        Some(p) => {
            let Some((t, n)) = p
                .split_once('/')
                .filter(|(t, n)| providers.iter().any(|(pt, pn, _)| pt == t && pn == n))
            else {
                bail!("--provider {p:?} is not a configured \"tenant/provider\"");
            };
            Some((t.to_owned(), n.to_owned()))
        }
        None => claims.get("iss").and_then(Value::as_str).and_then(|iss| {
            providers
                .iter()
                .find(|(_, _, i)| i.as_deref() == Some(iss))
                .map(|(t, n, _)| (t.clone(), n.clone()))
        }),
    };
    let verdict = config.policy.evaluate(
        &args.method,
        &args.uri,
        args.host.as_deref(),
        provider.as_ref().map(|(t, n)| (t.as_str(), n.as_str())),
        Some(&claims),
    );
    let path = crate::policy::NormalizedPath::new(args.uri.as_bytes())
        .ok()
        .map(|p| p.as_str().to_owned());
    let line = Line {
        decision: verdict.reason.decision(),
        route: verdict.route.as_deref(),
        reason: verdict.reason.as_str(),
        status: verdict.status,
        path: path.as_deref(),
        provider: provider.map(|(t, n)| format!("{t}/{n}")),
    };
    let line = serde_json::to_string(&line).context("printing the verdict")?;
    Ok((line, verdict.allowed()))
}

/// The output line; members in this order, a contract.
#[derive(serde::Serialize)]
struct Line<'a> {
    decision: &'static str,
    route: Option<&'a str>,
    reason: &'static str,
    status: u16,
    path: Option<&'a str>,
    provider: Option<String>,
}
