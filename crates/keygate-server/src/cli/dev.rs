//! `keygate dev mint` and `keygate dev rotate`: clients of the embedded development issuer
//! ([`crate::dev_issuer`]) that `keygate serve` runs when started without a config.
//!
//! `mint` prints the token alone, so `TOKEN=$(keygate dev mint)` works in a shell.

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use url::Url;

use crate::cli::EXIT_OK;
use crate::dev_issuer::MintRequest;

/// Where `keygate serve` with no config runs the development issuer.
pub const DEFAULT_ISSUER_URL: &str = "http://127.0.0.1:8082";

/// `keygate dev ...`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum DevCommand {
    /// Mint a token from the development issuer and print it.
    Mint(MintArgs),
    /// Give the development issuer a new signing key and print its kid.
    Rotate(RotateArgs),
}

/// Arguments of `keygate dev mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Where the issuer is.
    #[command(flatten)]
    pub issuer: IssuerArgs,

    /// The token's `sub`. Default: dev-user.
    #[arg(long, value_name = "SUB")]
    pub sub: Option<String>,

    /// The token's `aud`. Default: the audience the sidecar expects.
    #[arg(long, value_name = "AUD")]
    pub aud: Option<String>,

    /// The token's `scope`, space-separated, e.g. "read write".
    #[arg(long, value_name = "SCOPES")]
    pub scope: Option<String>,

    /// Seconds until the token expires, 1 to 86400. Default: 3600.
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u64>,

    /// An extra claim; repeat for several. VALUE is taken as JSON when it parses as JSON
    /// (`n=5`, `admin=true`, `roles=["a","b"]`), as a string otherwise (`role=admin`);
    /// quote it as JSON (`n='"5"'`) to force a string.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = parse_claim)]
    pub claims: Vec<(String, Value)>,

    /// Print the issuer's whole answer {"token","kid","exp"} instead of the token alone.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `keygate dev rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Where the issuer is.
    #[command(flatten)]
    pub issuer: IssuerArgs,
}

/// Where the development issuer is.
#[derive(Debug, Args)]
pub struct IssuerArgs {
    /// The development issuer's base URL.
    #[arg(
        long = "issuer-url",
        value_name = "URL",
        env = "KEYGATE_DEV_ISSUER",
        default_value = DEFAULT_ISSUER_URL,
    )]
    pub url: String,
}

/// Runs a dev subcommand.
///
/// # Errors
/// A bad `--issuer-url`, an issuer that cannot be reached (start `keygate serve`), or one
/// that refuses the request (its message is passed on).
pub fn run(cmd: &DevCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let output = match cmd {
        DevCommand::Mint(args) => runtime.block_on(mint(args))?,
        DevCommand::Rotate(args) => runtime.block_on(rotate(args))?,
    };
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{output}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(ExitCode::from(EXIT_OK))
}

async fn mint(args: &MintArgs) -> anyhow::Result<String> {
    let claims: Option<Map<String, Value>> =
        (!args.claims.is_empty()).then(|| args.claims.iter().cloned().collect());
    let request = MintRequest {
        sub: args.sub.clone(),
        aud: args.aud.clone(),
        scope: args.scope.clone(),
        ttl_secs: args.ttl,
        claims,
    };
    let body = serde_json::to_string(&request).context("encoding the mint request")?;
    let answer = post(&args.issuer, "mint", body).await?;
    if args.json {
        return Ok(answer.to_string());
    }
    answer
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the dev issuer's answer has no token"))
}

async fn rotate(args: &RotateArgs) -> anyhow::Result<String> {
    let answer = post(&args.issuer, "rotate", String::new()).await?;
    answer
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the dev issuer's answer has no kid"))
}

/// POSTs `body` to `{issuer}/{endpoint}` and returns the JSON answer.
async fn post(issuer: &IssuerArgs, endpoint: &str, body: String) -> anyhow::Result<Value> {
    let base = Url::parse(&issuer.url).with_context(|| format!("--issuer-url {}", issuer.url))?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--issuer-url {base}: must be an http:// or https:// URL");
    }
    let url = format!("{}/{endpoint}", base.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        // The issuer is on loopback; an HTTP_PROXY meant for the outside would break this.
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let response = client
        .post(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            // `{:#}` in main prints the context, then the causes down to e.g. "Connection
            // refused", which reqwest's own message leaves out.
            let context = if e.is_connect() {
                format!(
                    "cannot reach the dev issuer at {base} (start it with `keygate serve` and no \
                     config, or point --issuer-url / KEYGATE_DEV_ISSUER at it)"
                )
            } else {
                format!("POST {url}")
            };
            anyhow::Error::new(e).context(context)
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer of POST {url}"))?;
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        let message = answer
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("no message");
        bail!("the dev issuer refused the request ({status}): {message}");
    }
    answer.with_context(|| format!("the answer of POST {url} is not JSON"))
}

/// Parses `--claim KEY=VALUE`.
fn parse_claim(arg: &str) -> Result<(String, Value), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{arg}`"))?;
    if key.is_empty() {
        return Err("the claim name must not be empty".into());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
    Ok((key.into(), value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claim_values_are_json_when_they_parse_and_strings_otherwise() {
        let cases = [
            ("role=admin", ("role", json!("admin"))),
            ("n=5", ("n", json!(5))),
            ("ok=true", ("ok", json!(true))),
            (r#"n="5""#, ("n", json!("5"))),
            (r#"roles=["a","b"]"#, ("roles", json!(["a", "b"]))),
            ("eq=a=b", ("eq", json!("a=b"))),
            ("empty=", ("empty", json!(""))),
        ];
        for (arg, (key, value)) in cases {
            assert_eq!(parse_claim(arg), Ok((key.to_owned(), value)), "{arg}");
        }
        assert!(parse_claim("no-equals").is_err());
        assert!(parse_claim("=x").is_err());
    }
}
