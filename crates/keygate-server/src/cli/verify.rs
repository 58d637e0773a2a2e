//! `keygate verify`: one token, one key set, one JSON line.
//!
//! A diagnostic for operators: "would keygate accept this token from this issuer for this
//! audience, and if not, why?" It runs the library's [`Verifier`] with a single provider,
//! so its verdicts and reason codes are exactly the ones the library and the sidecar give.
//!
//! Keys are obtained before the token is looked at, so a broken key set is reported as
//! `malformed_jwks` (or `keys_unavailable`) whatever the token. The output is a contract:
//! one line of JSON whose members come in this order, `valid`, `error_class`, then `claims`
//! or `detail`. It never contains the token.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::Args;
use clap::builder::{PossibleValue, TypedValueParser};
use keygate::fetch::FetchError;
use keygate::jwk::{DEFAULT_MAX_KEYS, KeySet};
use keygate::{
    Algorithm, Clock, DEFAULT_MAX_TOKEN_BYTES, JwksError, KeysUnavailable, ProviderConfig,
    ProviderId, RefreshError, SystemClock, VerifiedToken, Verifier, VerifyError,
};

use crate::cli::{EXIT_INVALID, EXIT_OK};

/// The tenant and provider name of the one provider the command configures.
const TENANT: &str = "cli";
const PROVIDER: &str = "cli";

/// The long `--help` text of `keygate verify`: the output and exit-code contract.
pub(crate) const LONG_ABOUT: &str = "\
Verify one token offline against a JWKS file or URL.

Prints exactly one JSON line on stdout, members in this order:
  {\"valid\":true,\"error_class\":null,\"claims\":{...}}
  {\"valid\":false,\"error_class\":\"<reason code>\",\"detail\":\"<text>\"}

Exit codes: 0 valid, 1 invalid, 2 usage or configuration error (message on stderr).
A key set that is not a JWK set is a verdict (malformed_jwks, exit 1); an unreachable JWKS
URL is too (keys_unavailable, exit 1).

The token is read verbatim: a trailing newline makes it malformed. It is never printed.";

/// Arguments of `keygate verify`.
#[derive(Args)]
#[command(
    group = clap::ArgGroup::new("token_source").required(true).args(["token_file", "token"]),
)]
pub struct VerifyArgs {
    /// The key set: a JWKS file, or an https:// URL to fetch it from. Plain http:// is
    /// accepted for loopback hosts only (localhost, 127.0.0.0/8, ::1).
    #[arg(long, value_name = "FILE_OR_URL")]
    pub jwks: String,

    /// Read the token from FILE, verbatim; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The token itself. Prefer --token-file: command lines are visible to other users.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// The issuer to trust; the token's `iss` must equal it exactly.
    #[arg(long, value_name = "ISS")]
    pub iss: String,

    /// The audience to accept; the token's `aud` must contain it.
    #[arg(long, value_name = "AUD")]
    pub aud: String,

    /// An algorithm to accept; repeat for several. Default: every supported algorithm.
    /// `Ed25519` and `EdDSA` admit each other (RFC 9864). HMAC algorithms are refused.
    #[arg(long = "alg", value_name = "ALG", value_parser = AlgorithmParser)]
    pub algorithms: Vec<Algorithm>,

    /// Judge `exp`, `nbf` and `iat` as if it were this time (seconds since the Unix epoch).
    /// Default: the system clock.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub now: Option<u64>,

    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 0, unlike the library's 30 s:
    /// this is a precise diagnostic, so a token one second past `exp` is reported expired.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub leeway: u64,
}

/// Parses `--alg`: the supported names, case-sensitively (RFC 7515 section 4.1.1), listed in
/// `--help`; a refused name is a usage error whose message says why, which clap's generic
/// "invalid value" for a name outside a fixed list would not (an HMAC algorithm is refused
/// as a key-confusion hazard, not as a typo).
#[derive(Clone, Copy)]
struct AlgorithmParser;

impl TypedValueParser for AlgorithmParser {
    type Value = Algorithm;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Algorithm, clap::Error> {
        let name = value.to_string_lossy();
        name.parse::<Algorithm>().map_err(|e| {
            let flag = arg.map_or_else(|| "--alg".to_owned(), ToString::to_string);
            let all = Algorithm::ALL.map(Algorithm::as_str).join(", ");
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{flag}: {e}\n  [possible values: {all}]\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            Algorithm::ALL
                .into_iter()
                .map(|a| PossibleValue::new(a.as_str())),
        ))
    }
}

/// The command's answer about the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The token verified.
    Valid {
        /// The token's claims set, as compact JSON text in the token's own member order.
        claims: String,
    },
    /// The token was refused.
    Invalid {
        /// The stable reason code, [`VerifyError::reason`].
        error_class: &'static str,
        /// A human-readable explanation; never contains the token.
        detail: String,
    },
}

/// Runs `keygate verify`.
///
/// # Errors
/// When the command cannot run as asked: an unreadable token or JWKS file, a JWKS URL the
/// fetcher refuses to contact (plain http to a non-loopback host), a provider configuration
/// the library rejects, or a `--now` out of range. A refused token is not an error: it is a
/// [`Verdict::Invalid`].
pub fn run(args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let token = read_token(args)?;
    let clock: Arc<dyn Clock> = match args.now {
        Some(secs) => Arc::new(FixedClock::at_unix(secs)?),
        None => Arc::new(SystemClock),
    };
    let algorithms = if args.algorithms.is_empty() {
        Algorithm::ALL.to_vec()
    } else {
        args.algorithms.clone()
    };
    let provider = ProviderConfig::builder(TENANT, PROVIDER, args.iss.as_str())
        .audiences([args.aud.as_str()])
        .algorithms(algorithms.iter().copied())
        .leeway(Duration::from_secs(args.leeway));

    let (provider, fetcher) = match JwksSource::parse(&args.jwks) {
        JwksSource::Url(url) => {
            // The operator typed this URL on their own machine, so plain http to loopback (a
            // local IdP, a port-forward) is a reasonable request. Every other rule of the
            // fetcher (no http elsewhere, size and time limits, redirect checks) still holds.
            let fetcher = keygate::HttpFetcher::builder()
                .danger_allow_http_loopback(true)
                .build()
                .context("building the HTTP client")?;
            (provider.jwks_uri(url), Some(fetcher))
        }
        JwksSource::File(path) => {
            let document = std::fs::read(path)
                .with_context(|| format!("reading --jwks {}", path.display()))?;
            if let Err(e) = check_key_set(&document, &algorithms) {
                return Ok(Verdict::from_error(&e));
            }
            (provider.static_jwks(document), None)
        }
    };
    let provider = provider.build().context("invalid provider configuration")?;
    let mut verifier = Verifier::builder().provider(provider).clock(clock);
    if let Some(fetcher) = fetcher {
        verifier = verifier.fetcher(Arc::new(fetcher));
    }
    let verifier = verifier.build().context("invalid verifier configuration")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(verify(&verifier, &token))
}

impl Verdict {
    /// The one function that turns the library's answer into the CLI's.
    #[must_use]
    pub fn from_result(result: &Result<Arc<VerifiedToken>, VerifyError>) -> Self {
        match result {
            Ok(token) => Verdict::Valid {
                claims: super::compact_json(token.claims_json()),
            },
            Err(e) => Verdict::from_error(e),
        }
    }

    /// The verdict for a refused token.
    #[must_use]
    pub fn from_error(error: &VerifyError) -> Self {
        Verdict::Invalid {
            error_class: error.reason().as_str(),
            detail: detail(error),
        }
    }

    /// The process exit code: [`EXIT_OK`] or [`EXIT_INVALID`].
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Valid { .. } => EXIT_OK,
            Verdict::Invalid { .. } => EXIT_INVALID,
        }
    }

    /// The output line, without its newline. Built by hand so the member order is fixed
    /// whatever features `serde_json` is compiled with.
    #[must_use]
    pub fn to_json_line(&self) -> String {
        match self {
            Verdict::Valid { claims } => {
                format!(r#"{{"valid":true,"error_class":null,"claims":{claims}}}"#)
            }
            Verdict::Invalid {
                error_class,
                detail,
            } => format!(
                r#"{{"valid":false,"error_class":{},"detail":{}}}"#,
                json_string(error_class),
                json_string(detail),
            ),
        }
    }
}

impl fmt::Debug for VerifyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential: never in logs, panics or debug output.
        f.debug_struct("VerifyArgs")
            .field("jwks", &self.jwks)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .field("algorithms", &self.algorithms)
            .field("now", &self.now)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Where `--jwks` points.
enum JwksSource<'a> {
    Url(&'a str),
    File(&'a Path),
}

impl<'a> JwksSource<'a> {
    /// An argument starting with `http://` or `https://` is a URL; anything else is a path
    /// (write `./http:...` for a file with such a name).
    fn parse(arg: &'a str) -> Self {
        let is_url = ["http://", "https://"].iter().any(|scheme| {
            arg.get(..scheme.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
        });
        if is_url {
            JwksSource::Url(arg)
        } else {
            JwksSource::File(Path::new(arg))
        }
    }
}

/// A clock stopped at one instant, for `--now`.
#[derive(Debug, Clone, Copy)]
struct FixedClock(SystemTime);

impl FixedClock {
    fn at_unix(secs: u64) -> anyhow::Result<Self> {
        match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
            Some(t) => Ok(FixedClock(t)),
            None => bail!("--now {secs} is out of range"),
        }
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Reads the token verbatim. At most one byte over the verifier's limit is read, so a huge
/// file costs no memory and is still refused as `token_too_large`.
fn read_token(args: &VerifyArgs) -> anyhow::Result<String> {
    let limit = u64::try_from(DEFAULT_MAX_TOKEN_BYTES + 1).unwrap_or(u64::MAX);
    let bytes = match (&args.token, &args.token_file) {
        (Some(token), _) => return Ok(token.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .context("reading the token from stdin")?;
            bytes
        }
        (None, Some(path)) => {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|f| f.take(limit).read_to_end(&mut bytes))
                .with_context(|| format!("reading --token-file {}", path.display()))?;
            bytes
        }
        // clap's required argument group rules this out; say so rather than panic.
        (None, None) => bail!("one of --token-file or --token is required"),
    };
    // A valid token is ASCII. Invalid UTF-8 becomes U+FFFD, which the verifier then refuses
    // as malformed: the verdict stays the library's, not this command's.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Refuses a static key set the way the library refuses a fetched one: not a JWK set, too
/// many keys, or no key usable with the allowed algorithms (`malformed_jwks` in every case).
///
/// `VerifierBuilder::build` would also reject the first two, but only as a `ConfigError`
/// naming `static_jwks`; parsing here keeps the typed [`JwksError`].
fn check_key_set(document: &[u8], algorithms: &[Algorithm]) -> Result<(), VerifyError> {
    let keys = KeySet::parse(document, algorithms, DEFAULT_MAX_KEYS)?;
    if keys.usable() == 0 {
        return Err(JwksError::Empty.into());
    }
    Ok(())
}

/// Obtains the keys, then verifies the token.
async fn verify(verifier: &Verifier, token: &str) -> anyhow::Result<Verdict> {
    let id = ProviderId::new(TENANT, PROVIDER);
    match verifier.refresh(&id).await {
        // A static set is parsed already; `refresh` has nothing to do.
        Ok(()) | Err(RefreshError::Static(_)) => {}
        Err(RefreshError::Failed(KeysUnavailable::Fetch(Some(e)))) if refused_to_fetch(&e) => {
            // The URL itself is unacceptable: a usage error, not a verdict about the token.
            bail!("refusing to fetch --jwks: {e}");
        }
        // Answer now rather than let verification fetch (and retry) all over again.
        Err(RefreshError::Failed(e)) => {
            return Ok(Verdict::from_error(&VerifyError::KeysUnavailable(e)));
        }
        Err(e) => return Err(e).context("fetching --jwks"),
    }
    Ok(Verdict::from_result(&verifier.verify(token).await))
}

/// Fetch failures that are the URL's fault, found before any connection is made.
fn refused_to_fetch(error: &FetchError) -> bool {
    matches!(
        error,
        FetchError::InsecureUrl(_) | FetchError::HostNotAllowed(_) | FetchError::Config(_)
    )
}

/// The `detail` text: the error's message. A fetch failure's message already names its
/// cause (`keys unavailable: connect failed: ...`).
///
/// No message of the library's contains the token; this adds nothing that could.
fn detail(error: &VerifyError) -> String {
    error.to_string()
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_drops_whitespace_outside_strings_only() {
        let pretty = "{\n  \"a b\" : [1, 2e3 ],\r\n\t\"c\": \"x \\\" y\\\\\", \"d\": {} }";
        assert_eq!(
            crate::cli::compact_json(pretty),
            r#"{"a b":[1,2e3],"c":"x \" y\\","d":{}}"#
        );
    }

    #[test]
    fn json_lines_keep_member_order_and_escape_detail() {
        let valid = Verdict::Valid {
            claims: r#"{"sub":"x"}"#.into(),
        };
        assert_eq!(
            valid.to_json_line(),
            r#"{"valid":true,"error_class":null,"claims":{"sub":"x"}}"#
        );
        let invalid = Verdict::Invalid {
            error_class: "malformed",
            detail: "say \"hi\"\n".into(),
        };
        assert_eq!(
            invalid.to_json_line(),
            r#"{"valid":false,"error_class":"malformed","detail":"say \"hi\"\n"}"#
        );
    }

    #[test]
    fn urls_are_told_from_paths_by_scheme() {
        for url in ["HTTPS://idp.example/jwks", "http://127.0.0.1:1/jwks"] {
            assert!(
                matches!(JwksSource::parse(url), JwksSource::Url(_)),
                "{url}"
            );
        }
        for path in ["./http://x", "jwks.json"] {
            assert!(
                matches!(JwksSource::parse(path), JwksSource::File(_)),
                "{path}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let args = VerifyArgs {
            jwks: "jwks.json".into(),
            token_file: None,
            token: Some("eyJ.secret.sig".into()),
            iss: "https://issuer.example".into(),
            aud: "api".into(),
            algorithms: Vec::new(),
            now: None,
            leeway: 0,
        };
        let debug = format!("{args:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }
}
