//! Installs the provider's npm packages once per checkout, safely from parallel tests.
//!
//! `npm ci` installs exactly what `idp/package-lock.json` pins. Within one process a
//! [`OnceLock`] runs it once; across processes (test binaries run in parallel by
//! `cargo nextest` or by several `cargo test` invocations) a lock directory in the temporary
//! directory, created atomically with `mkdir`, lets one process install while the others
//! wait and then find the packages in place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long a process waits for another one's install before giving up.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// A lock directory older than this belongs to an install that died; it is taken over.
const STALE_LOCK: Duration = Duration::from_secs(600);
/// Pause between looks at another process's install.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The Node project's folder, `idp/` next to this crate's `Cargo.toml`.
pub(super) fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("idp")
}

/// Makes sure `idp/node_modules` holds the locked packages, running `npm ci` if not.
///
/// Blocking; panics with npm's output when the install fails.
pub(super) fn ensure_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(install_across_processes);
}

/// Whether the packages the provider imports are installed.
fn installed(dir: &Path) -> bool {
    let modules = dir.join("node_modules");
    ["oidc-provider", "jose"]
        .iter()
        .all(|name| modules.join(name).join("package.json").is_file())
        // npm writes this last, so its presence means an install completed.
        && modules.join(".package-lock.json").is_file()
}

#[allow(
    clippy::disallowed_methods,
    reason = "bounds a wait on another process's npm install, which tokio's clock knows nothing of"
)]
fn install_across_processes() {
    let dir = idp_dir();
    if installed(&dir) {
        return;
    }
    let lock = lock_path(&dir);
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let _guard = loop {
        match fs::create_dir(&lock) {
            Ok(()) => break LockGuard(lock),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if installed(&dir) {
                    return;
                }
                let age = fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok());
                if age.is_some_and(|age| age > STALE_LOCK) {
                    let _ = fs::remove_dir(&lock);
                    continue;
                }
                assert!(
                    Instant::now() < deadline,
                    "another process has held {} for over {INSTALL_TIMEOUT:?} installing the \
                     oidc provider's npm packages",
                    lock.display()
                );
                thread::sleep(POLL_INTERVAL);
            }
            Err(e) => panic!("cannot create lock {}: {e}", lock.display()),
        }
    };
    // Another process may have finished between our look and our lock.
    if installed(&dir) {
        return;
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `npm` (is Node.js 20+ with npm on PATH?): {e}"));
    assert!(
        output.status.success() && installed(&dir),
        "`npm ci` in {} failed ({}):\n{}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A lock directory per checkout: its name carries the folder's path.
fn lock_path(dir: &Path) -> PathBuf {
    let name: String = dir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("keygate-npm-ci-{name}.lock"))
}

/// Removes the lock directory when the install is over, whether it succeeded or panicked.
struct LockGuard(PathBuf);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
