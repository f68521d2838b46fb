//! Where the harness finds the build and keeps its files: the target
//! directory (found from the running test executable) and scratch
//! directories under it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tempfile::TempDir;

use super::HarnessError;

/// The cargo target directory the running test was built into.
///
/// A test executable lives at `<target>/<profile>/deps/<name>-<hash>`; the
/// build's own layout is the most reliable source, because tests may be run by
/// cargo, by nextest, or by hand.
pub fn target_dir() -> PathBuf {
    profile_dir().parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"))
}

/// `<target>/<profile>`, e.g. `target/release`.
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("target/release/deps/unknown"));
    match exe.parent() {
        Some(deps) if deps.file_name().is_some_and(|n| n == "deps") => {
            deps.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target/release"))
        }
        // Not inside a cargo layout (copied or run by hand): assume the usual one.
        _ => PathBuf::from("target/release"),
    }
}

/// A fresh root-owned directory with mode 0755 under `<target>/e2e-tmp`,
/// removed when dropped.
///
/// It lives in the target directory rather than /tmp because the daemon may
/// rightly refuse policy directories below a world-writable parent.
pub fn scratch_dir(label: &str) -> Result<TempDir, HarnessError> {
    scratch_dir_with_mode(label, 0o755)
}

/// A fresh root-only directory (mode 0700) under `<target>/e2e-tmp`, removed
/// when dropped: for the daemon's state directory, which holds the journal.
pub fn private_dir(label: &str) -> Result<TempDir, HarnessError> {
    scratch_dir_with_mode(label, 0o700)
}

fn scratch_dir_with_mode(label: &str, mode: u32) -> Result<TempDir, HarnessError> {
    let parent = target_dir().join("e2e-tmp");
    fs::create_dir_all(&parent).map_err(|source| HarnessError::Io {
        action: "create",
        path: parent.clone(),
        source,
    })?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(&parent)
        .map_err(|source| HarnessError::Io { action: "create a directory in", path: parent.clone(), source })?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).map_err(|source| HarnessError::Io {
        action: "chmod",
        path: dir.path().to_path_buf(),
        source,
    })?;
    Ok(dir)
}
