//! Every directory and file the daemon uses, with its default, in one place
//! so tests and packagers can see and override them.

use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/wasmtune";
pub const DEFAULT_CONFIG: &str = "/etc/wasmtune/config.toml";
/// Policies installed by packages.
pub const SYSTEM_POLICY_DIR: &str = "/usr/lib/wasmtune/policies";
/// Policies installed by the administrator; wins by name over the system directory.
pub const ADMIN_POLICY_DIR: &str = "/etc/wasmtune/policies";
/// Public keys whose signatures make a policy file trusted (`keys-dir`).
pub const DEFAULT_KEYS_DIR: &str = "/etc/wasmtune/keys";

/// Compiled policies, keyed by content and engine: root's, its files opened
/// by the daemon and written by the runtime process through the descriptor
/// handed over. (`cache`, of an earlier layout that gave the directory to
/// the runtime's user, is no longer read.)
pub fn component_cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("compiled")
}
