//! The HTTP side of the operator's client: one request to the admin API, its answer printed
//! or its error reported, and the key and base URL it needs.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use super::{ADMIN_KEY_ENV, ApiArgs};
use crate::cli::{EXIT_INVALID, EXIT_OK, escape_text as esc};

/// A client for one admin API.
pub(super) struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: Url,
    authorization: HeaderValue,
    json: bool,
}

/// An answer from the admin API, whatever its status.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: String,
}

impl Api {
    pub(super) fn new(args: &ApiArgs) -> anyhow::Result<Self> {
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
    pub(super) fn call(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
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
    pub(super) fn finish<T: DeserializeOwned>(
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
pub(super) fn strip_one_newline(key: &str) -> &str {
    key.strip_suffix('\n')
        .map_or(key, |rest| rest.strip_suffix('\r').unwrap_or(rest))
}

pub(super) fn parse_base_url(arg: &str) -> anyhow::Result<Url> {
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
pub(super) fn endpoint(base: &Url, segments: &[&str]) -> Url {
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
pub(super) struct ApiError {
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
    pub(super) fn from_reply(reply: &Reply) -> Self {
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

/// `text` with control and bidirectional characters escaped ([`esc`]), so a name or
/// message from the server cannot move the cursor, recolour the operator's terminal or
/// reorder what it shows.
pub(super) fn clean(text: &str) -> Cow<'_, str> {
    esc(text)
}

/// Valid JSON `text` on one line: whitespace outside strings removed, everything else
/// (member order, number spelling, escapes) kept. `None` if it is not JSON.
pub(super) fn compact_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(crate::cli::compact_json(text))
}

fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}
