//! The daemon's small state files beside the journal (`overrides.json`,
//! `quarantine.json`): each read whole and replaced whole. Never read or
//! written through a symlink, owner-only, and replaced atomically (a
//! synced temporary file renamed over the old one, the directory synced),
//! so a crash leaves the old file or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a state file could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}, column {column}: {message}; fix or remove it (it lists {lists})")]
    Parse { path: PathBuf, line: usize, column: usize, message: String, lists: &'static str },
    #[error("{path} has format version {found}; this wasmtune reads version {supported}")]
    Version { path: PathBuf, found: u32, supported: u32 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The file's contents; `None` when it does not exist. `lists` says what it
/// holds (for the error); a format version above `supported` is refused
/// rather than misread.
pub fn read<T: DeserializeOwned>(
    path: &Path,
    lists: &'static str,
    version_of: impl Fn(&T) -> u32,
    supported: u32,
) -> Result<Option<T>, StateFileError> {
    let read_error = |source| StateFileError::Read { path: path.to_path_buf(), source };
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    let value: T = serde_json::from_str(&text).map_err(|error| StateFileError::Parse {
        path: path.to_path_buf(),
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
        lists,
    })?;
    let found = version_of(&value);
    if found > supported {
        return Err(StateFileError::Version { path: path.to_path_buf(), found, supported });
    }
    Ok(Some(value))
}

/// Replaces the file with `value` as pretty JSON; on disk when this returns.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StateFileError> {
    let write_error = |source| StateFileError::Write { path: path.to_path_buf(), source };
    let mut text = serde_json::to_string_pretty(value).map_err(|e| write_error(std::io::Error::other(e)))?;
    text.push('\n');
    write_atomically(path, text.as_bytes()).map_err(write_error)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut out =
        OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&temporary)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temporary, path)?;
    // The rename itself must survive a crash too.
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
