//! `keygate admin hash-key` and `keygate admin new-key`: making admin API keys.
//!
//! The config file holds hashes only ([`KeyHash`]); these commands are how an operator gets
//! one. `new-key` makes a random secret and prints it with its hash and a config snippet;
//! `hash-key` hashes a secret the operator already has, read from standard input so that it
//! never appears on a command line (visible to other users in `ps`) or in shell history.

use std::io::{self, BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::apikey::{
    self, DEFAULT_ITERATIONS, KeyHash, MAX_ITERATIONS, MAX_SECRET_BYTES, MIN_ITERATIONS, Scope,
};
use crate::cli::EXIT_OK;

/// A secret shorter than this gets a warning: it is guessable offline from the hash.
const WEAK_SECRET_BYTES: usize = 16;

/// `keygate admin ...`.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AdminCommand {
    /// Read a secret on standard input, print its hash for `[[admin.keys]]`.
    #[command(long_about = HASH_KEY_ABOUT)]
    HashKey(HashKeyArgs),
    /// Generate a new admin key: print the secret, its hash and a config snippet.
    #[command(long_about = NEW_KEY_ABOUT)]
    NewKey(NewKeyArgs),
}

/// Arguments of `keygate admin hash-key`.
#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The PBKDF2 iteration count.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_ITERATIONS,
        value_parser = clap::value_parser!(u32)
            .range(i64::from(MIN_ITERATIONS)..=i64::from(MAX_ITERATIONS)),
    )]
    pub iterations: u32,
}

/// Arguments of `keygate admin new-key`.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// The key's name in logs and audit records.
    #[arg(long, value_name = "ID", default_value = "admin")]
    pub id: String,

    /// What the key may do, comma-separated. Default: every scope but `config:reload`, which
    /// is given only when named.
    #[arg(long, value_name = "SCOPE,...", value_delimiter = ',')]
    pub scopes: Option<Vec<Scope>>,

    /// Print one JSON object {"id","secret","hash","scopes"} instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs an admin subcommand.
///
/// # Errors
/// An unreadable, empty or oversized secret on standard input, an empty `--id`, or a failure
/// to write to standard output.
pub fn run(cmd: &AdminCommand) -> anyhow::Result<ExitCode> {
    let output = match cmd {
        AdminCommand::HashKey(args) => hash_key(args)?,
        AdminCommand::NewKey(args) => new_key(args)?,
    };
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(ExitCode::from(EXIT_OK))
}

const HASH_KEY_ABOUT: &str = "\
Read a secret on standard input and print its hash, one line, for the `hash` of an
[[admin.keys]] entry in keygate.toml.

One trailing newline (\\n or \\r\\n) is removed; nothing else is. Example:
  printf %s \"$SECRET\" | keygate admin hash-key";

const NEW_KEY_ABOUT: &str = "\
Generate a random admin key. Prints the secret (give it to the operator, e.g. as
KEYGATE_ADMIN_KEY), its hash, and an [[admin.keys]] entry to paste into keygate.toml.
The secret is shown once and stored nowhere.";

fn hash_key(args: &HashKeyArgs) -> anyhow::Result<String> {
    let secret = read_secret()?;
    if secret.len() < WEAK_SECRET_BYTES {
        eprintln!(
            "keygate: warning: the secret is only {} bytes; use at least {WEAK_SECRET_BYTES} \
             random bytes (`keygate admin new-key` makes one)",
            secret.len()
        );
    }
    let hash =
        apikey::hash_secret_with_iterations(&secret, args.iterations).context("--iterations")?;
    Ok(format!("{hash}\n"))
}

fn new_key(args: &NewKeyArgs) -> anyhow::Result<String> {
    // The config's own rule: an id it would refuse is no use in a snippet to paste there.
    crate::config::check_name("--id", &args.id)?;
    let mut scopes: Vec<Scope> = Vec::new();
    for scope in args.scopes.as_deref().unwrap_or(&Scope::ALL) {
        if !scopes.contains(scope) {
            scopes.push(*scope);
        }
    }
    let secret = apikey::generate_secret();
    let hash = apikey::hash_secret(secret.as_bytes());
    Ok(if args.json {
        json_output(&args.id, &secret, &hash, &scopes)
    } else {
        text_output(&args.id, &secret, &hash, &scopes)
    })
}

/// The `--json` output, members in a fixed order.
fn json_output(id: &str, secret: &str, hash: &KeyHash, scopes: &[Scope]) -> String {
    #[derive(Serialize)]
    struct NewKey<'a> {
        id: &'a str,
        secret: &'a str,
        hash: String,
        scopes: Vec<&'static str>,
    }
    let key = NewKey {
        id,
        secret,
        hash: hash.to_string(),
        scopes: scopes.iter().map(|s| s.as_str()).collect(),
    };
    let json = serde_json::to_string(&key).expect("a struct of strings serialises");
    format!("{json}\n")
}

fn text_output(id: &str, secret: &str, hash: &KeyHash, scopes: &[Scope]) -> String {
    let scopes = toml::Value::Array(
        scopes
            .iter()
            .map(|s| toml::Value::String(s.as_str().into()))
            .collect(),
    );
    format!(
        "secret: {secret}\n\
         hash: {hash}\n\
         \n\
         # paste into keygate.toml; give the secret to the operator as KEYGATE_ADMIN_KEY\n\
         [[admin.keys]]\n\
         id = {id}\n\
         hash = {hash_toml}\n\
         scopes = {scopes}\n",
        // Quoted by the TOML writer: an id may hold quotes, backslashes or control
        // characters, and the snippet must still paste as exactly that id.
        id = toml::Value::String(id.into()),
        hash_toml = toml::Value::String(hash.to_string()),
    )
}

/// Reads the secret from standard input and removes one trailing line ending.
fn read_secret() -> anyhow::Result<Vec<u8>> {
    let stdin = io::stdin();
    let mut secret = Vec::new();
    if stdin.is_terminal() {
        // Typed at a prompt: one line. (It is echoed; pipe the secret in to avoid that.)
        eprint!("secret: ");
        stdin
            .lock()
            .take(limit())
            .read_until(b'\n', &mut secret)
            .context("reading the secret from stdin")?;
    } else {
        stdin
            .lock()
            .take(limit())
            .read_to_end(&mut secret)
            .context("reading the secret from stdin")?;
    }
    if let Some(rest) = secret.strip_suffix(b"\n") {
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        secret.truncate(rest.len());
    }
    if secret.is_empty() {
        bail!(
            "no secret on stdin; pipe it in, e.g. printf %s \"$SECRET\" | keygate admin hash-key"
        );
    }
    if secret.len() > MAX_SECRET_BYTES {
        bail!("the secret is longer than {MAX_SECRET_BYTES} bytes; keygate refuses such keys");
    }
    Ok(secret)
}

/// Reading stops a little past the longest acceptable secret and its line ending, so a
/// huge input is refused without being held in memory.
fn limit() -> u64 {
    u64::try_from(MAX_SECRET_BYTES + 3).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_key_refuses_ids_the_config_would_refuse() {
        let args = |id: &str| NewKeyArgs {
            id: id.to_owned(),
            scopes: None,
            json: true,
        };
        for id in ["", "has space", "a/b", &"x".repeat(65), "..", "ops\n"] {
            let err = new_key(&args(id)).expect_err(id);
            let text = format!("{err:#}");
            assert!(
                text.starts_with("--id: ") && text.contains("must be 1 to 64 characters"),
                "{id:?}: {text}"
            );
        }
        let ok = new_key(&args("ops-1.blue_team")).unwrap();
        assert!(ok.contains("\"id\":\"ops-1.blue_team\""), "{ok}");
    }

    #[test]
    fn text_output_pastes_as_toml_with_the_same_values() {
        let hash = apikey::hash_secret_with_iterations(b"kg_x", MIN_ITERATIONS).unwrap();
        let id = "ops \"blue\" \\ team";
        let text = text_output(id, "kg_x", &hash, &[Scope::JwksFlush, Scope::StatusRead]);
        let (head, snippet) = text.split_once("\n\n").unwrap();
        assert_eq!(head, format!("secret: kg_x\nhash: {hash}"));
        let parsed: toml::Table = toml::from_str(snippet).unwrap();
        let entry = &parsed["admin"]["keys"][0];
        assert_eq!(entry["id"].as_str(), Some(id));
        assert_eq!(entry["hash"].as_str(), Some(hash.to_string().as_str()));
        let scopes = entry["scopes"].as_array().unwrap();
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[1].as_str(), Some("status:read"));
    }
}
