//! `keygate serve [--config FILE]`: run the sidecar until SIGTERM or SIGINT.
//!
//! Without a config file the embedded default runs: a development issuer on loopback, one
//! provider trusting it, the in-process bus (revocations kept in `state.jsonl` beside the
//! admin key), and a freshly generated admin key whose secret
//! goes to a file readable only by the current user (never to the terminal or the log). The
//! ready message shows a curl command with a freshly minted token, so a newcomer sees
//! verification, rotation and flushing work without an identity provider.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;

use crate::apikey::{self, ApiKey, Scope};
use crate::config::{ClusterBackend, Config};
use crate::dev_issuer::{DevIssuer, MintRequest};
use crate::serve::Server;

/// Exit code for a configuration that does not validate (`EX_USAGE` of sysexits.h).
pub const EXIT_CONFIG: u8 = 64;

/// The long help of `keygate serve`.
pub const LONG_ABOUT: &str = "\
Run the sidecar: the forward-auth endpoint /verify on server.listen (default 127.0.0.1:8080),
and the admin API, /metrics, /healthz and /readyz on server.admin_listen (default
127.0.0.1:8081).

With --config, the TOML file is validated first; a bad file exits with code 64 and a message
naming the key at fault. Without --config, the embedded default runs: a development issuer on
127.0.0.1:8082 (mint tokens with `keygate dev mint`, rotate its key with `keygate dev rotate`),
one provider trusting it, and the in-process bus.

SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish within
server.shutdown_grace (default 10s), stops the key refreshers and exits 0.";

/// `keygate serve` arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML). Without it, the embedded development default runs.
    #[arg(long, short = 'c', env = "KEYGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the config file and exit: 0 if it is good, 64 if not.
    #[arg(long)]
    pub check: bool,
}

/// Runs `keygate serve`.
///
/// # Errors
/// A listener that cannot be bound, or a failure while serving.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("keygate: config error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => Config::embedded_default(),
    };
    if args.check {
        println!(
            "config ok: {} provider(s), {} admin key(s){}",
            config.providers.len(),
            config.admin.keys.len(),
            if config.dev_issuer.is_some() {
                ", development issuer"
            } else {
                ""
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let embedded = args.config.is_none();
        let dev_key_file = if embedded && config.admin.keys.is_empty() {
            Some(dev_admin_key(&mut config)?)
        } else {
            None
        };
        if embedded {
            // Revocations survive a restart of the embedded default too.
            config.cluster.backend = ClusterBackend::Local {
                state_file: Some(dev_dir()?.join("state.jsonl")),
            };
        }
        let server = Server::bind(config).await?;
        let verify = server.verify_addr()?;
        let admin = server.admin_addr()?;
        if let Some(issuer) = server.dev_issuer() {
            print_ready(issuer, verify, admin, dev_key_file.as_deref())?;
        }
        tracing::info!(%verify, %admin, "listening");
        server.run(shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs to stderr; `KEYGATE_LOG` (or `RUST_LOG`) sets the filter, default `info`.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Generates the embedded default's admin key, adds its hash to `config` and writes the
/// secret to a file only the current user can read. Returns the file's path.
fn dev_admin_key(config: &mut Config) -> anyhow::Result<PathBuf> {
    let secret = apikey::generate_secret();
    config.admin.keys.push(ApiKey {
        id: "dev".to_owned(),
        hash: apikey::hash_secret(secret.as_bytes()),
        scopes: Scope::ALL.to_vec(),
    });
    let path = dev_dir()?.join("admin.key");
    write_private(&path, secret.as_bytes())
        .with_context(|| format!("writing the development admin key to {}", path.display()))?;
    Ok(path)
}

/// The embedded default's private directory: `$TMPDIR/keygate-dev-$USER`.
fn dev_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keygate-dev-{}", whoami()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".to_owned())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        // An existing file keeps its mode on open; make sure it is private.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.flush()
}

/// The embedded default's ready message, on stdout.
fn print_ready(
    issuer: &DevIssuer,
    verify: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    key_file: Option<&Path>,
) -> anyhow::Result<()> {
    let minted = issuer
        .mint(&MintRequest::default(), SystemTime::now())
        .map_err(|e| anyhow::anyhow!("minting the sample token: {e}"))?;
    let exe = std::env::current_exe()
        .ok()
        .map_or_else(|| "keygate".to_owned(), |p| p.display().to_string());
    let iss = issuer.issuer();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "keygate {version} is ready (embedded default: development issuer, in-process bus, no config file)

  verify       http://{verify}/verify
  admin API    http://{admin}/admin/v1/status   (also /metrics, /healthz, /readyz)
  dev issuer   {iss}   (JWKS {iss}/jwks.json)

Verify a freshly minted token (200 with X-Auth-Subject; without the header: 401):

  curl -i -H 'Authorization: Bearer {token}' http://{verify}/verify

Rotate the issuer's key and verify a token signed by the new key (still 200: one JWKS refetch):

  {exe} dev rotate --issuer-url {iss}
  curl -i -H \"Authorization: Bearer $({exe} dev mint --issuer-url {iss})\" http://{verify}/verify
",
        version = env!("CARGO_PKG_VERSION"),
        token = minted.token,
    )?;
    if let Some(key_file) = key_file {
        writeln!(
            out,
            "Flush the cached JWKS and look at the status (the admin key is in {file}, readable only by you):

  export KEYGATE_ADMIN_KEY=\"$(cat {file})\"
  {exe} flush dev dev --admin-url http://{admin}
  {exe} status --admin-url http://{admin}

Stop with Ctrl-C.",
            file = key_file.display(),
        )?;
    }
    out.flush()?;
    Ok(())
}
