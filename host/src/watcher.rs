//! Keeps the running policies equal to what is on offer: the built-ins,
//! overlaid by the `.wasm` files of each policy directory in order (a later
//! directory wins by policy name). Directories are watched; after a change
//! settles, the whole picture is reconciled: new and changed policies are
//! compiled and initialised beside the running ones and only then take over;
//! removed ones are unloaded; a file that fails to load leaves whatever was
//! running in place.
//!
//! Install policies with write-then-rename (`cp x.wasm dir/.x.wasm.tmp && mv
//! dir/.x.wasm.tmp dir/x.wasm`): files starting with `.` are ignored, and a
//! change is acted on only after the directory has been quiet for a moment,
//! so a partial write is never loaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::AdminConfig;
use crate::router::PolicySet;
use crate::runtime::engine::hex;
use crate::runtime::image::{LoadError, PolicyImage, PolicySource};
use crate::runtime::worker::{PolicyWorker, WorkerContext};

/// How long a directory must be quiet before it is reconciled.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Why a file in a policy directory is refused before it is even read.
#[derive(Debug, thiserror::Error)]
pub enum FileRefused {
    #[error("cannot inspect: {0}")]
    Stat(std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("owned by uid {uid}, not by root or the daemon's user")]
    Owner { uid: u32 },
    #[error("writable by group or others (mode {mode:o}); only its owner may write a policy")]
    Writable { mode: u32 },
    #[error("a symlink leading outside {dir}")]
    EscapingSymlink { dir: PathBuf },
}

/// The `.wasm` files of a directory, sorted, hidden files skipped.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    Ok(files)
}

/// Files a root daemon runs must be as trustworthy as the daemon itself.
pub fn check_file(dir: &Path, path: &Path) -> Result<(), FileRefused> {
    let link = std::fs::symlink_metadata(path).map_err(FileRefused::Stat)?;
    if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(FileRefused::Stat)?;
        let root = std::fs::canonicalize(dir).map_err(FileRefused::Stat)?;
        if !target.starts_with(&root) {
            return Err(FileRefused::EscapingSymlink { dir: dir.to_path_buf() });
        }
    }
    let meta = std::fs::metadata(path).map_err(FileRefused::Stat)?;
    if !meta.file_type().is_file() {
        return Err(FileRefused::NotRegular);
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(FileRefused::Owner { uid: meta.uid() });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(FileRefused::Writable { mode: meta.mode() & 0o7777 });
    }
    Ok(())
}

/// Reconciles running policies with the built-ins and directories.
pub struct Reconciler {
    builtins: Vec<Arc<PolicyImage>>,
    dirs: Vec<PathBuf>,
    ctx: WorkerContext,
    config: AdminConfig,
    policies: Arc<PolicySet>,
    /// Compiled files by (path, digest), so unchanged files are not recompiled.
    images: HashMap<(PathBuf, String), Arc<PolicyImage>>,
    /// Failures already reported, so an unchanged bad file is reported once.
    reported: HashSet<(PathBuf, String)>,
}

impl Reconciler {
    pub fn new(
        builtins: Vec<Arc<PolicyImage>>,
        dirs: Vec<PathBuf>,
        ctx: WorkerContext,
        config: AdminConfig,
        policies: Arc<PolicySet>,
    ) -> Reconciler {
        Reconciler { builtins, dirs, ctx, config, policies, images: HashMap::new(), reported: HashSet::new() }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Brings the running set in line with what is on offer now.
    pub fn reconcile(&mut self) {
        let (wanted, keep) = self.wanted();
        for (name, image) in &wanted {
            if keep.contains(name) {
                continue;
            }
            let running = self.policies.get(name);
            if running.as_ref().is_some_and(|w| w.digest == image.digest && w.source == image.source) {
                continue;
            }
            let settings = self.config.policy(name);
            match PolicyWorker::start(image, &self.ctx, &settings) {
                Ok(worker) => {
                    let replaced = self.policies.insert(worker);
                    let verb = if replaced.is_some() { "replaced" } else { "loaded" };
                    tracing::info!(
                        event = "policy-loaded",
                        policy = %name,
                        version = %image.manifest.policy.version,
                        source = %image.source,
                        "policy {name} {} {verb} from {}",
                        image.manifest.policy.version,
                        image.source
                    );
                }
                Err(LoadError::Disabled) => {
                    if let Some(old) = self.policies.remove(name) {
                        tracing::info!(event = "policy-unloaded", policy = %name, source = %old.source,
                            "policy {name} unloaded: disabled in the administrator's config");
                    } else {
                        tracing::info!(policy = %name, "policy {name} is disabled in the administrator's config");
                    }
                }
                Err(e) => self.report(&image.source, &image.digest, &e.to_string(), running.is_some()),
            }
        }
        for name in self.policies.names() {
            if !wanted.contains_key(&name)
                && !keep.contains(&name)
                && let Some(old) = self.policies.remove(&name)
            {
                self.ctx.arbiter.release(&name);
                tracing::info!(event = "policy-unloaded", policy = %name, source = %old.source,
                    "policy {name} unloaded: its file is gone; values it set stay as they are");
            }
        }
    }

    /// Built-ins overlaid by each directory's files in order, by policy name;
    /// and the names of running policies whose file now fails to load, which
    /// stay as they are.
    fn wanted(&mut self) -> (BTreeMap<String, Arc<PolicyImage>>, HashSet<String>) {
        let mut wanted: BTreeMap<String, Arc<PolicyImage>> =
            self.builtins.iter().map(|i| (i.name().to_string(), i.clone())).collect();
        let mut seen = HashSet::new();
        let mut failed = HashSet::new();
        for dir in self.dirs.clone() {
            let files = match policy_files(&dir) {
                Ok(files) => files,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot list policy directory: {e}");
                    continue;
                }
            };
            for path in files {
                match self.image_for(&dir, &path) {
                    Some(image) => {
                        seen.insert((path.clone(), image.digest.clone()));
                        wanted.insert(image.name().to_string(), image);
                    }
                    None => {
                        failed.insert(path);
                    }
                }
            }
        }
        self.images.retain(|key, _| seen.contains(key));
        let keep = self
            .policies
            .snapshot()
            .iter()
            .filter(|w| matches!(&w.source, PolicySource::File(p) if failed.contains(p)))
            .map(|w| w.name.clone())
            .collect();
        (wanted, keep)
    }

    fn image_for(&mut self, dir: &Path, path: &Path) -> Option<Arc<PolicyImage>> {
        let source = PolicySource::File(path.to_path_buf());
        if let Err(refused) = check_file(dir, path) {
            self.report(&source, "unread", &format!("refused: {refused}"), false);
            return None;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.report(&source, "unread", &format!("cannot read the file: {e}"), false);
                return None;
            }
        };
        let digest = hex(&Sha256::digest(&bytes));
        let key = (path.to_path_buf(), digest.clone());
        if let Some(image) = self.images.get(&key) {
            return Some(image.clone());
        }
        if self.reported.contains(&key) {
            return None;
        }
        match PolicyImage::load(&self.ctx.engine, &bytes, source.clone()) {
            Ok(image) => {
                let image = Arc::new(image);
                self.images.insert(key, image.clone());
                Some(image)
            }
            Err(e) => {
                self.report(&source, &digest, &e.to_string(), false);
                None
            }
        }
    }

    fn report(&mut self, source: &PolicySource, digest: &str, error: &str, kept_old: bool) {
        let key = match source {
            PolicySource::File(path) => (path.clone(), digest.to_string()),
            PolicySource::Builtin(name) => (PathBuf::from(name), digest.to_string()),
        };
        if !self.reported.insert(key) {
            return;
        }
        let outcome = if kept_old { "; the running version stays in charge" } else { "" };
        tracing::error!(event = "policy-load-failed", source = %source, error = %error,
            "cannot load policy {source}: {error}{outcome}");
    }
}

/// Watches the policy directories and reconciles after each burst of changes.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: crossbeam_channel::Sender<()>,
}

impl DirWatcher {
    pub fn spawn(mut reconciler: Reconciler) -> Result<DirWatcher, notify::Error> {
        use notify::Watcher;
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        })?;
        for dir in reconciler.dirs() {
            if !dir.is_dir() {
                tracing::info!(dir = %dir.display(), "policy directory {} does not exist; not watched", dir.display());
                continue;
            }
            match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => tracing::info!(dir = %dir.display(), "watching policy directory {}", dir.display()),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch policy directory {}: {e}", dir.display()),
            }
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("policy-watcher".into())
            .spawn(move || {
                loop {
                    crossbeam_channel::select! {
                        recv(stopped) -> _ => return,
                        recv(rx) -> msg => if msg.is_err() { return },
                    }
                    // Let the burst settle, then act once.
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    reconciler.reconcile();
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(DirWatcher { _watcher: watcher, thread: Some(thread), stop })
    }

    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
