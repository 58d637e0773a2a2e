//! The local state file of a single node: every revocation, one JSON line each, so a restart
//! loses none.
//!
//! A revocation is appended and synced to disk before the admin API answers. On open and every
//! [`COMPACT_EVERY`], the file is rewritten without the entries that expired: written to a
//! temporary file beside it, synced, then renamed over it, so a crash leaves either the old or
//! the new file, never half of one. A line that does not parse (e.g. torn by a crash in the
//! middle of an append) is skipped with a warning, never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use keygate::Revocation;
use keygate::clock::unix_seconds;

use super::wire;

/// How often the file is rewritten without expired entries.
pub const COMPACT_EVERY: Duration = Duration::from_secs(600);
/// Longest line read back; a revocation is far shorter.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateFileError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: io::Error,
}

/// An open state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The append handle; held while appending or compacting, so neither loses the other's
    /// lines.
    file: Mutex<File>,
    loaded: Vec<Revocation>,
}

impl StateFile {
    /// Opens (or creates, mode 0600) the file at `path`, keeps the revocations still in force
    /// at `now` and rewrites the file with just those.
    ///
    /// # Errors
    /// When the file cannot be read, written or renamed.
    pub fn open(path: PathBuf, now: SystemTime) -> Result<StateFile, StateFileError> {
        let err = |source| StateFileError {
            path: path.clone(),
            source,
        };
        let loaded = rewrite(&path, now).map_err(err)?;
        let file = open_append(&path).map_err(err)?;
        Ok(StateFile {
            path,
            file: Mutex::new(file),
            loaded,
        })
    }

    /// The revocations the file held when it was opened.
    #[must_use]
    pub fn loaded(&self) -> Vec<Revocation> {
        self.loaded.clone()
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `r` and syncs it to disk.
    ///
    /// # Errors
    /// When the revocation is of a kind the file cannot hold, or the write or the sync fails;
    /// the revocation is then not on disk.
    pub fn append(&self, r: &Revocation) -> Result<(), StateFileError> {
        let err = |source| StateFileError {
            path: self.path.clone(),
            source,
        };
        let mut line = wire::revocation_json(r)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(err)
    }

    /// Rewrites the file without the entries expired at `now`.
    ///
    /// # Errors
    /// When the rewrite fails; the old file is then left as it was.
    pub fn compact(&self, now: SystemTime) -> Result<usize, StateFileError> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let err = |source| StateFileError {
            path: self.path.clone(),
            source,
        };
        let kept = rewrite(&self.path, now).map_err(err)?;
        *file = open_append(&self.path).map_err(err)?;
        Ok(kept.len())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Reads the file (if any), keeps what is in force at `now`, and atomically replaces the file
/// with just that.
fn rewrite(path: &Path, now: SystemTime) -> io::Result<Vec<Revocation>> {
    let now_secs = unix_seconds(now).max(0);
    let mut kept = Vec::new();
    let mut skipped = 0usize;
    match File::open(path) {
        Ok(file) => {
            let mut reader = BufReader::new(file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                if line.len() > MAX_LINE_BYTES {
                    // Skip the rest of an overlong line.
                    reader.skip_until(b'\n')?;
                    skipped += 1;
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                match wire::parse_revocation_json(text) {
                    Ok(r)
                        if wire::revocation_expiry(&r)
                            .is_ok_and(|expiry| expiry.is_none_or(|e| e > now_secs)) =>
                    {
                        kept.push(r);
                    }
                    Ok(_) => {}
                    Err(_) => skipped += 1,
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if skipped > 0 {
        tracing::warn!(path = %path.display(), skipped, "state file: skipped lines that do not parse");
    }
    let tmp = path.with_extension("tmp");
    {
        let mut options = OpenOptions::new();
        options.create(true).write(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = io::BufWriter::new(options.open(&tmp)?);
        // Everything kept was read from the wire format, so writes back in it.
        for line in kept.iter().filter_map(|r| wire::revocation_json(r).ok()) {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable; not every platform lets a directory be synced.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "keygate-state-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn revocations_survive_a_reopen_and_expired_ones_are_dropped() {
        let path = dir().join("state.jsonl");
        let file = StateFile::open(path.clone(), at(1_000)).unwrap();
        assert!(file.loaded().is_empty());
        let live = Revocation::Jti {
            jti: "a".into(),
            exp: 5_000,
        };
        let short = Revocation::Jti {
            jti: "b".into(),
            exp: 2_000,
        };
        let forever = Revocation::Kid {
            tenant: "t".into(),
            provider: "p".into(),
            kid: "k".into(),
            until: None,
        };
        for r in [&live, &short, &forever] {
            file.append(r).unwrap();
        }
        drop(file);
        let reopened = StateFile::open(path.clone(), at(3_000)).unwrap();
        assert_eq!(reopened.loaded(), vec![live.clone(), forever]);
        // The rewrite kept only those, and appends still land after a compaction.
        reopened.append(&short).unwrap();
        assert_eq!(reopened.compact(at(3_000)).unwrap(), 2);
        reopened.append(&live).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn token_revocations_are_kept_by_digest_until_they_expire() {
        let path = dir().join("state.jsonl");
        let file = StateFile::open(path.clone(), at(1_000)).unwrap();
        let live = Revocation::Token {
            sha256: keygate::token_sha256("opaque-live"),
            exp: 5_000,
        };
        let gone = Revocation::Token {
            sha256: keygate::token_sha256("opaque-gone"),
            exp: 2_000,
        };
        file.append(&live).unwrap();
        file.append(&gone).unwrap();
        drop(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("opaque-live"), "only the digest is written");
        let reopened = StateFile::open(path, at(3_000)).unwrap();
        assert_eq!(reopened.loaded(), vec![live]);
    }

    #[test]
    fn torn_and_junk_lines_are_skipped_not_fatal() {
        let path = dir().join("state.jsonl");
        let good = wire::revocation_json(&Revocation::Jti {
            jti: "ok".into(),
            exp: 9_999,
        })
        .unwrap();
        let long = "x".repeat(MAX_LINE_BYTES * 2);
        fs::write(
            &path,
            format!("{good}\nnot json\n{long}\n{{\"kind\":\"jti\",\"jti\":\"tor\n{good}\n"),
        )
        .unwrap();
        let file = StateFile::open(path, at(1)).unwrap();
        assert_eq!(file.loaded().len(), 2);
    }

    #[test]
    fn an_unwritable_place_is_a_typed_error() {
        let path = dir().join("no-such-dir").join("state.jsonl");
        let e = StateFile::open(path.clone(), at(1)).unwrap_err();
        assert_eq!(e.path, path);
    }
}
