//! SIGHUP (`systemctl reload wasmtune`): the configuration is read again
//! and the policy directories rescanned, without a restart. A
//! configuration that does not parse, or that cannot be honoured (a
//! signature required with no key to check it), is refused with its line
//! and column, and the one in force stays; the directories are rescanned
//! all the same.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::config::AdminConfig;
use crate::paths;
use crate::trust::Trust;
use crate::watcher::Reconciler;

use super::RunOptions;

/// Whether the configuration was taken.
pub(super) fn reload(opts: &RunOptions, reconciler: &Mutex<Reconciler>) -> bool {
    let path = opts.config.clone().unwrap_or_else(|| PathBuf::from(paths::DEFAULT_CONFIG));
    let file = path.display().to_string();
    let read = AdminConfig::load(&path, opts.config.is_some())
        .and_then(|config| Trust::from_config(&config).map(|trust| (config, trust)));
    let (config, trust) = match read {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(event = "reload-refused", file = %file, %error,
                "configuration not reloaded: {error}; the configuration loaded before stays in force");
            let retired = reconciler.lock().unwrap_or_else(|p| p.into_inner()).reconcile();
            retired.stop();
            return false;
        }
    };
    let at_next_start = needs_restart(reconciler.lock().unwrap_or_else(|p| p.into_inner()).config(), &config);
    let (retired, restarted) = reconciler.lock().unwrap_or_else(|p| p.into_inner()).reload(config, trust);
    retired.stop();
    let restarted_list = if restarted.is_empty() { "none".to_string() } else { restarted.join(", ") };
    let later = if at_next_start.is_empty() {
        String::new()
    } else {
        format!("; {} take effect at the next start", at_next_start.join(", "))
    };
    tracing::info!(event = "reload", file = %file, restarted = %restarted_list,
        "configuration reloaded from {file} and policy directories rescanned; policies restarted with new \
         settings: {restarted_list}{later}");
    true
}

/// The keys that changed but are read only at start: the learning rate
/// (also built into the kernel hooks' thresholds), the journal's bound, the
/// boot-time sysctl files, the metrics endpoint.
fn needs_restart(old: &AdminConfig, new: &AdminConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.learning_rate != new.learning_rate {
        keys.push("learning-rate");
    }
    if old.journal_max_bytes != new.journal_max_bytes {
        keys.push("journal-max-bytes");
    }
    if old.respect_sysctl_d != new.respect_sysctl_d || old.sysctl_d_dirs != new.sysctl_d_dirs {
        keys.push("respect-sysctl-d and sysctl-d-dirs");
    }
    let listen = |c: &AdminConfig| c.metrics.as_ref().and_then(|m| m.listen);
    if listen(old) != listen(new) {
        keys.push("metrics.listen");
    }
    keys
}
