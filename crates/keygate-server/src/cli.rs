//! The command line: argument types and dispatch.
//!
//! Exit codes are shared by every subcommand: [`EXIT_OK`], [`EXIT_INVALID`] when the
//! command ran and its answer is "no" (a refused token), [`EXIT_USAGE`] when it could not run
//! as asked (clap's own usage errors use 2 as well). `anyhow` is used here and in `main`
//! only; the error's context chain is what the operator reads on stderr.

pub mod dev;
pub mod keys;
pub mod ops;
pub mod policy;
pub mod serve;
pub mod verify;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Success: the token is valid.
pub const EXIT_OK: u8 = 0;
/// The command ran and the answer is negative: the token was refused.
pub const EXIT_INVALID: u8 = 1;
/// The command could not run as asked: bad arguments, an unreadable file, an insecure URL.
pub const EXIT_USAGE: u8 = 2;

/// `keygate`: the operator CLI of the keygate JWKS cache and JWT verifier.
#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "keygate: check JWTs against JWKS key sets, strictly",
    propagate_version = true
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Run the sidecar: forward-auth on `listen`, admin API and metrics on `admin_listen`.
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(serve::ServeArgs),
    /// Verify one token offline against a JWKS file or URL; print one JSON line.
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::VerifyArgs),
    /// Drop a provider's cached key set and verified tokens on every replica.
    Flush(ops::ProviderArgs),
    /// Refetch a provider's key set now.
    Refresh(ops::ProviderArgs),
    /// Revoke a token (jti), a subject's tokens, or a signing key.
    Revoke(ops::RevokeArgs),
    /// Show providers, their keys and the bus.
    Status(ops::StatusArgs),
    /// Make the sidecar re-read its config file and apply it without a restart.
    Reload(ops::ReloadArgs),
    /// Admin API keys: hash a secret, generate a new key.
    #[command(subcommand)]
    Admin(keys::AdminCommand),
    /// The embedded development issuer: mint test tokens, rotate its keys.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// The `[policy]` of a config file: dry-run it offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Runs the parsed command line and returns the process exit code.
///
/// # Errors
/// Anything that kept the command from running as asked; `main` prints it and exits with
/// [`EXIT_USAGE`].
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify(args) => {
            let verdict = verify::run(&args)?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", verdict.to_json_line())
                .and_then(|()| stdout.flush())
                .context("writing the verdict to stdout")?;
            Ok(ExitCode::from(verdict.exit_code()))
        }
        Command::Serve(args) => serve::run(&args),
        Command::Flush(args) => ops::flush(&args),
        Command::Refresh(args) => ops::refresh(&args),
        Command::Revoke(args) => ops::revoke(&args),
        Command::Status(args) => ops::status(&args),
        Command::Reload(args) => ops::reload(&args),
        Command::Admin(cmd) => keys::run(&cmd),
        Command::Dev(cmd) => dev::run(&cmd),
        Command::Policy(cmd) => Ok(ExitCode::from(policy::run(&cmd)?)),
    }
}

/// The message of an error that stopped a command: its context chain on one line
/// ("reading --jwks x: No such file"), where a cause already spelled out at the end of the
/// message before it is not repeated ("cannot listen on ...: Address already in use (os
/// error 98)" once, not twice).
#[must_use]
pub fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.is_empty() {
            message = text;
        } else if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// `text` made safe for one cell or line of a human-readable table: `\n`, `\r` and `\t` as
/// those escapes, every other control character and the bidirectional controls (U+200E,
/// U+200F, U+202A to U+202E, U+2066 to U+2069) as `\u{...}`. Names, `jti`s and messages
/// come from the server or from a token: without this a newline adds a fake row and a
/// right-to-left override makes a row read backwards.
#[must_use]
pub fn escape_text(text: &str) -> std::borrow::Cow<'_, str> {
    fn needs_escape(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Removes the insignificant whitespace from valid JSON text, keeping everything else
/// (member order, number spelling, escapes) byte for byte. A claims set may be
/// pretty-printed; the output must stay on one line. JSON strings cannot hold a raw line
/// break (RFC 8259 section 7), so dropping whitespace outside strings is enough.
pub(crate) fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let err = anyhow::Error::new(crate::serve::ServeError::Bind {
            what: "server.listen",
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io,
        });
        let io_text = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
        let message = error_message(&err);
        assert_eq!(message.matches(&io_text).count(), 1, "{message}");
        let err = anyhow::anyhow!("no such file").context("reading --jwks x");
        assert_eq!(error_message(&err), "reading --jwks x: no such file");
    }

    #[test]
    fn escape_text_shows_controls_and_bidi_overrides() {
        assert_eq!(escape_text("plain name"), "plain name");
        assert_eq!(escape_text("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape_text("x\u{1b}[31m"), "x\\u{1b}[31m");
        assert_eq!(escape_text("\u{202E}gpj.exe"), "\\u{202e}gpj.exe");
        for c in [
            '\u{200E}', '\u{200F}', '\u{202A}', '\u{2066}', '\u{2069}', '\u{7f}',
        ] {
            assert!(!escape_text(&c.to_string()).contains(c), "{c:?}");
        }
        assert_eq!(escape_text("ünïcödé ok"), "ünïcödé ok");
    }
}
