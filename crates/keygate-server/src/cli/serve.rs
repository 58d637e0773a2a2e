//! `keygate serve [--config FILE]`: run the sidecar until SIGTERM or SIGINT; SIGHUP reloads
//! the config file (see [`crate::reload`]).
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
use std::sync::Arc;

use anyhow::Context as _;

use crate::apikey::{self, ApiKey, Scope};
use crate::config::{ClusterBackend, Config};
use crate::dev_issuer::{DevIssuer, MintRequest};
use crate::reload::Reloader;
use crate::serve::{Listeners, Server};

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

SIGHUP re-reads the config file and applies it without a restart (as `keygate reload` and
POST /admin/v1/reload do): a bad file, or one that changes a setting only a restart applies,
changes nothing and is logged; keygate_config_reloads_total{result} counts both outcomes.
Without --config there is nothing to reload: SIGHUP logs so and counts an error.

SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish within
server.shutdown_grace (default 10s), stops the key refreshers and exits 0. A second SIGTERM
or SIGINT during that drain ends the process at once with exit code 130.

Exit codes: 0 stopped cleanly, 64 the config is refused (with --check too), 2 keygate could
not start (a port in use, an unusable state file folder, an unsafe development folder),
130 stopped by a second signal.";

/// Exit code when a second SIGTERM or SIGINT cuts the drain short (128 + SIGINT, as shells
/// report an interrupted command).
pub const EXIT_FORCED: i32 = 130;

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
    if let Err(e) = check_state_file(&config) {
        eprintln!("keygate: config error: {e}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    if args.check {
        println!(
            "config ok: {} provider(s), {} admin key(s){}",
            // The development issuer is a provider too.
            config.providers.len() + usize::from(config.dev_issuer.is_some()),
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
        // Before anything else: SIGHUP's default action ends the process.
        let hangups = hangups()?;
        let embedded = args.config.is_none();
        // The ports first: a second instance that cannot start must not replace the key file
        // (or anything else) of the one that is running.
        let listeners = Listeners::bind(&config).await?;
        let dev_key_file = if embedded && config.admin.keys.is_empty() {
            Some(dev_admin_key(&mut config)?)
        } else {
            None
        };
        if embedded {
            // Revocations survive a restart of the embedded default too. The state file is
            // in the same private folder; a link planted in its place is refused.
            let dir = dev_dir()?;
            let state_file = dir.join("state.jsonl");
            if std::fs::symlink_metadata(&state_file).is_ok_and(|m| m.file_type().is_symlink()) {
                anyhow::bail!(
                    "refusing to use {}: it is a symbolic link, which keygate does not follow; \
                     remove it and start again",
                    state_file.display()
                );
            }
            config.cluster.backend = ClusterBackend::Local {
                state_file: Some(state_file),
            };
        }
        let server = Server::with_listeners(config, listeners)?;
        if let Some(path) = &args.config {
            server.reloader().set_file(path.clone());
        }
        if let Some(hangups) = hangups {
            reload_on(hangups, Arc::clone(server.reloader()));
        }
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

/// SIGHUP, listened to from now on, so it no longer ends the process. `None` off Unix.
#[cfg(unix)]
fn hangups() -> anyhow::Result<Option<tokio::signal::unix::Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .map(Some)
        .context("listening for SIGHUP")
}

#[cfg(not(unix))]
fn hangups() -> anyhow::Result<Option<std::convert::Infallible>> {
    Ok(None)
}

/// Reloads the configuration on every SIGHUP, for as long as the process runs. The reloader
/// logs and counts each outcome itself.
#[cfg(unix)]
fn reload_on(mut hangups: tokio::signal::unix::Signal, reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            let reloader = Arc::clone(&reloader);
            // Reading the file and building fetchers blocks.
            let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
        }
    });
}

#[cfg(not(unix))]
fn reload_on(never: std::convert::Infallible, _: Arc<Reloader>) {
    match never {}
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

/// Resolves on the first SIGTERM or SIGINT. A second one, during the drain, ends the
/// process at once with [`EXIT_FORCED`]: an operator who asks twice does not want to wait
/// out `shutdown_grace`.
async fn shutdown_signal() {
    let mut signals = Signals::new();
    let first = signals.next().await;
    tracing::info!("{first} received");
    tokio::spawn(async move {
        let second = signals.next().await;
        tracing::warn!("{second} received again: stopping now, without waiting for the drain");
        std::process::exit(EXIT_FORCED);
    });
}

/// SIGINT and SIGTERM, listened to from the start so that none is missed between two waits.
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The name of the next signal.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(self.int.as_mut()) => "SIGINT",
                () = recv(self.term.as_mut()) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Checks that the local bus's state file can be written where the config puts it: its
/// folder exists and takes a new file. Loading the config does not touch the disk, so
/// without this `--check` would pass a config that then fails to start.
///
/// # Errors
/// A message naming `cluster.state_file`, the path and the reason.
fn check_state_file(config: &Config) -> Result<(), String> {
    let ClusterBackend::Local {
        state_file: Some(file),
    } = &config.cluster.backend
    else {
        return Ok(());
    };
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let refuse = |why: String| Err(format!("cluster.state_file: {}: {why}", file.display()));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return refuse(format!("{} is not a folder", dir.display())),
        Err(e) => return refuse(format!("its folder {}: {e}", dir.display())),
    }
    if file.exists() {
        return match std::fs::OpenOptions::new().append(true).open(file) {
            Ok(_) => Ok(()),
            Err(e) => refuse(format!("cannot be written: {e}")),
        };
    }
    // Whether the folder takes a new file is known only by trying (permissions, ACLs, a
    // read-only mount): create a probe and remove it.
    let probe = dir.join(format!(".keygate-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => refuse(format!(
            "its folder {} takes no new file: {e}",
            dir.display()
        )),
    }
}

/// Generates the embedded default's admin key, adds its hash to `config` and writes the
/// secret to a file only the current user can read. Returns the file's path.
fn dev_admin_key(config: &mut Config) -> anyhow::Result<PathBuf> {
    let secret = apikey::generate_secret();
    config.admin.keys.push(ApiKey {
        id: "dev".to_owned(),
        hash: apikey::hash_secret(secret.as_bytes()),
        scopes: Scope::EVERY.to_vec(),
    });
    let dir = dev_dir()?;
    write_private(&dir, "admin.key", secret.as_bytes())
}

/// The embedded default's private directory: `$TMPDIR/keygate-dev-$USER`, created 0700 or
/// checked to be ours and private (see [`private_dir`]).
fn dev_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keygate-dev-{}", whoami()));
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` with mode 0700, or accepts an existing one only if it is a real folder
/// (not a symbolic link), owned by the user keygate runs as, and writable by nobody else.
///
/// The folder is in a shared temporary directory under a predictable name: another local
/// user could create it first, world-writable, and plant `admin.key` as a link to a file of
/// ours (run as root: any file), which writing the key would then overwrite. So a folder
/// someone else could have put things in is refused, with the path and the reason.
///
/// # Errors
/// The folder cannot be created, or it exists and is not private to this user.
pub(crate) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "refusing to use {}: {why}; remove it (or fix its owner and mode) and start again",
            dir.display()
        )
    };
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    // Not `metadata`: a link to a folder elsewhere is refused, not followed.
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a folder"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let me = effective_uid()?;
        if meta.uid() != me {
            return Err(refuse(&format!(
                "it is owned by uid {}, not by uid {me} that keygate runs as",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(&format!(
                "its mode {:o} lets other users write in it",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// The user id this process runs as, without `unsafe`: the owner of `/proc/self` on Linux,
/// else the owner of a file created for the purpose.
#[cfg(unix)]
fn effective_uid() -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    if let Ok(m) = std::fs::metadata("/proc/self") {
        return Ok(m.uid());
    }
    let probe = std::env::temp_dir().join(format!(
        ".keygate-uid-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("creating {}", probe.display()))?;
    let uid = file.metadata().map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid.context("reading the owner of a new file")
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".to_owned())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Writes `data` to `name` in the private folder `dir`, readable only by the current user,
/// without following links: an existing `name` that is not a regular file (a symbolic link
/// planted there) is refused and left alone. The data goes to a new file (`create_new`,
/// which never follows a link) that is then renamed over `name`, so nothing outside `dir`
/// is written whatever appears there meanwhile. Returns the path.
///
/// # Errors
/// `name` is a link or not a regular file, or the file cannot be written.
pub(crate) fn write_private(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => anyhow::bail!(
            "refusing to write {}: it is a symbolic link (to {}), which keygate does not follow; \
             remove it and start again",
            path.display(),
            std::fs::read_link(&path).map_or_else(|_| "?".to_owned(), |t| t.display().to_string())
        ),
        Ok(m) if !m.is_file() => anyhow::bail!(
            "refusing to write {}: it is not a regular file",
            path.display()
        ),
        _ => {}
    }
    let temp = dir.join(format!(
        ".{name}.{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut f = options.open(&temp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The embedded default's ready message, on stdout.
fn print_ready(
    issuer: &DevIssuer,
    verify: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    key_file: Option<&Path>,
) -> anyhow::Result<()> {
    let minted = issuer
        .mint(&MintRequest::default(), issuer.now())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keygate-unit-{}-{name}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// A scratch folder and, made in it with `mode`, the folder `private_dir` is given.
    fn scratch_with_folder(name: &str, mode: u32) -> (PathBuf, PathBuf) {
        let base = scratch(name);
        let dir = base.join("keygate-dev-x");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        (base, dir)
    }

    #[test]
    fn a_new_private_folder_is_0700_and_the_key_file_0600() {
        let base = scratch("new");
        let dir = base.join("keygate-dev-x");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let path = write_private(&dir, "admin.key", b"kg_secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kg_secret");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Written again (a restart): replaced, still private, no temporary file left.
        write_private(&dir, "admin.key", b"kg_other").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kg_other");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // Ours and private already: accepted.
        private_dir(&dir).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_folder_others_can_write_is_refused_naming_it() {
        let (base, dir) = scratch_with_folder("world", 0o700);
        for mode in [0o777, 0o1777, 0o770, 0o702] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", private_dir(&dir).unwrap_err());
            assert!(
                err.contains(&dir.display().to_string()) && err.contains("other users write"),
                "{mode:o}: {err}"
            );
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_folder_owned_by_another_user_or_a_link_is_refused() {
        let (base, dir) = scratch_with_folder("owner", 0o700);
        // Another user's folder, as if created first by `nobody`. Only root can give a
        // folder away: these tests run as root.
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534))
            .expect("the tests run as root, which may chown");
        let err = format!("{:#}", private_dir(&dir).unwrap_err());
        assert!(err.contains("owned by uid 65534"), "{err}");
        let elsewhere = scratch("target");
        let link = base.join("keygate-dev-link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = format!("{:#}", private_dir(&link).unwrap_err());
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn a_planted_admin_key_link_is_refused_and_its_target_untouched() {
        let dir = scratch("link");
        let victim_dir = scratch("victim");
        let victim = victim_dir.join("shadow");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("admin.key")).unwrap();
        let err = format!(
            "{:#}",
            write_private(&dir, "admin.key", b"kg_secret").unwrap_err()
        );
        assert!(
            err.contains("admin.key") && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
        // A dangling link (its target not there yet) is refused too and creates nothing.
        std::fs::remove_file(&victim).unwrap();
        assert!(write_private(&dir, "admin.key", b"kg_secret").is_err());
        assert!(!victim.exists());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&victim_dir).unwrap();
    }
}
