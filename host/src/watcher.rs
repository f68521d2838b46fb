//! Keeps the running policies equal to what is on offer: the built-ins,
//! overlaid by the `.wasm` files of each policy directory in order (a later
//! directory wins by policy name). Directories are watched; after a change
//! settles, the whole picture is reconciled: new and changed policies are
//! compiled and initialised beside the running ones and only then take over;
//! removed ones are unloaded; a file that fails to load leaves whatever was
//! running in place. A reconcile only takes workers out of the running set
//! ([`Retired`]); they are stopped after the reconciler's lock is released,
//! since stopping waits for each policy's thread.
//!
//! A file runs only once the administrator enables it (by name, or
//! `enable-policy-files`), and takes a built-in's place only when declared
//! its replacement (`replace-builtin`); until then only its manifest is read.
//! A file the administrator pinned or asked to be signed must pass those
//! checks ([`crate::trust`]) on the bytes read, before they are parsed.
//!
//! Install policies with write-then-rename (`cp x.wasm dir/.x.wasm.tmp && mv
//! dir/.x.wasm.tmp dir/x.wasm`): files starting with `.` are ignored, and a
//! rename in, a close after writing or a removal is acted on at once, while
//! a file still being written holds the reconcile until it closes or the
//! directory has been quiet for a moment ([`crate::dir_events`]), so a
//! partial write is never loaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::actuate::Actuator;
use crate::config::{AdminConfig, Origin};
use crate::dir_events::{Meaning, WriteTracker};
use crate::grants::Arbiter;
use crate::router::PolicySet;
use crate::runtime::engine::hex;
use crate::runtime::image::{LoadError, PolicyImage, PolicySource};
use crate::runtime::quarantine::QuarantineEntry;
use crate::runtime::worker::{PolicyWorker, WorkerContext, stop_all};
use crate::trust::{Checked, Trust, Untrusted};

/// The subdirectory of a policy directory that holds shadow versions.
pub const SHADOW_DIR: &str = "shadow";

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
    #[error("{bytes} bytes, more than the {MAX_POLICY_BYTES} a policy may have")]
    TooLarge { bytes: u64 },
    #[error("the directory {dir} is {problem}")]
    UnsafeDir { dir: PathBuf, problem: String },
}

/// The largest policy file read: built-in policies are under 1 MiB.
pub const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;

/// A policy directory must be as trustworthy as the files in it: whoever
/// can write the directory can replace any file in it.
pub fn check_dir(dir: &Path) -> Result<(), FileRefused> {
    let meta = std::fs::metadata(dir).map_err(FileRefused::Stat)?;
    let euid = nix::unistd::geteuid().as_raw();
    let unsafe_dir = |problem: String| FileRefused::UnsafeDir { dir: dir.to_path_buf(), problem };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(unsafe_dir(format!("owned by uid {}, not by root or the daemon's user", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!("writable by group or others (mode {:o})", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// Reads a policy file once, checking what was opened (not the path again):
/// the file cannot be swapped between the check and the read. `None` when
/// it is gone.
pub fn read_policy_file(dir: &Path, path: &Path) -> Result<Option<Vec<u8>>, FileRefused> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    check_dir(dir)?;
    check_file(dir, path)?;
    // O_NONBLOCK: a FIFO swapped in cannot block the reconcile.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileRefused::Stat(e)),
    };
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)))
        .map_err(FileRefused::Stat)?;
    let root = std::fs::canonicalize(dir).map_err(FileRefused::Stat)?;
    if !opened.starts_with(&root) {
        return Err(FileRefused::EscapingSymlink { dir: dir.to_path_buf() });
    }
    let meta = file.metadata().map_err(FileRefused::Stat)?;
    check_metadata(&meta)?;
    if meta.len() > MAX_POLICY_BYTES {
        return Err(FileRefused::TooLarge { bytes: meta.len() });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes).map_err(FileRefused::Stat)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(FileRefused::TooLarge { bytes: bytes.len() as u64 });
    }
    Ok(Some(bytes))
}

/// The checks on an opened (or stat'ed) policy file.
fn check_metadata(meta: &std::fs::Metadata) -> Result<(), FileRefused> {
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
    check_metadata(&meta)
}

mod canary;
pub use canary::{CanaryRequest, Ending, RevertedCanary};

/// Reconciles running policies with the built-ins and directories.
pub struct Reconciler {
    builtins: Vec<Arc<PolicyImage>>,
    dirs: Vec<PathBuf>,
    ctx: WorkerContext,
    config: AdminConfig,
    /// Pinned digests and required signatures, with the trusted keys.
    trust: Trust,
    policies: Arc<PolicySet>,
    /// Compiled files by (path, digest), so unchanged files are not recompiled.
    images: HashMap<(PathBuf, String), Arc<PolicyImage>>,
    /// Failures already reported, so an unchanged bad file is reported once.
    reported: HashSet<(PathBuf, String)>,
    /// Quarantined files already reported as not loaded (kept apart from
    /// `reported`, which also means "do not even compile it again").
    quarantine_reported: HashSet<(PathBuf, String)>,
    /// Files not enabled, already reported as such.
    not_enabled_reported: HashSet<(PathBuf, String)>,
    /// Files refused by [`Trust`], with the reason, already reported. Kept
    /// apart from `reported`: a signature added or fixed beside the same
    /// file must let it load at the next reconcile.
    untrusted_reported: HashSet<((PathBuf, String), String)>,
    /// `wasmtune policy enable|disable NAME` while running; wins over the config.
    enabled_override: BTreeMap<String, bool>,
    /// What the last reconcile found on offer, by name; shared with status,
    /// which must not wait for a reconcile (and its compiling) to finish.
    offered: OfferList,
    /// Shadow files read, by (path, digest).
    shadow_images: HashMap<(PathBuf, String), Arc<PolicyImage>>,
    /// Shadows started with `wasmtune policy shadow FILE`, by policy name.
    shadow_files: BTreeMap<String, PathBuf>,
    /// Running policies to start again although their file is the same:
    /// a reload changed their settings.
    restart: HashSet<String>,
    /// Canary files promoted to be the version of their name everywhere:
    /// by `policy promote` (until the daemon stops) or declared (while the
    /// configuration says so).
    promoted: BTreeMap<String, canary::Promotion>,
    /// What each canary was asked to be, by policy name.
    canary_requests: BTreeMap<String, canary::CanaryRequest>,
    reverted_canaries: canary::RevertedCanaries,
}

/// What a reconcile finds on offer under one name.
enum OnOffer {
    /// Compiled, and run unless disabled.
    Ready(Arc<PolicyImage>),
    /// A file the administrator has not enabled: its manifest was read,
    /// nothing was compiled.
    NotEnabled { version: String, source: PolicySource },
}

/// Policies on offer by name, as of the last reconcile.
pub type OfferList = Arc<Mutex<BTreeMap<String, Offer>>>;

/// A policy on offer (built in or in a directory), running or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub name: String,
    pub version: String,
    pub source: String,
    pub enabled: bool,
}

impl Reconciler {
    pub fn new(
        builtins: Vec<Arc<PolicyImage>>,
        dirs: Vec<PathBuf>,
        ctx: WorkerContext,
        config: AdminConfig,
        trust: Trust,
        policies: Arc<PolicySet>,
    ) -> Reconciler {
        Reconciler {
            builtins,
            dirs,
            ctx,
            config,
            trust,
            policies,
            images: HashMap::new(),
            reported: HashSet::new(),
            quarantine_reported: HashSet::new(),
            not_enabled_reported: HashSet::new(),
            untrusted_reported: HashSet::new(),
            enabled_override: BTreeMap::new(),
            offered: OfferList::default(),
            shadow_images: HashMap::new(),
            shadow_files: BTreeMap::new(),
            restart: HashSet::new(),
            promoted: BTreeMap::new(),
            canary_requests: BTreeMap::new(),
            reverted_canaries: canary::RevertedCanaries::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AdminConfig {
        &self.config
    }

    /// Puts a new configuration in force: policies whose settings changed
    /// start again with them (a hot swap, state handed over), the rest as
    /// any reconcile decides, with verdicts on files said afresh. The
    /// caller stops what was retired once the lock is released; the names
    /// restarted come back with it.
    pub fn reload(&mut self, config: AdminConfig, trust: Trust) -> (Retired, Vec<String>) {
        let restart: Vec<String> = self
            .policies
            .snapshot()
            .iter()
            .filter(|w| {
                let origin = self.origin_of(&w.name, &w.source);
                self.settings_for(&w.name, origin) != {
                    let mut new = config.settings_for(&w.name, origin);
                    if let Some(enabled) = self.enabled_override.get(&w.name) {
                        new.enabled = Some(*enabled);
                    }
                    new
                }
            })
            .map(|w| w.name.clone())
            .collect();
        self.config = config;
        self.trust = trust;
        self.reported.clear();
        self.not_enabled_reported.clear();
        self.untrusted_reported.clear();
        self.quarantine_reported.clear();
        self.restart = restart.iter().cloned().collect();
        let retired = self.reconcile();
        self.restart.clear();
        // Those now disabled were unloaded instead, and said so.
        let restarted = restart.into_iter().filter(|name| self.policies.get(name).is_some()).collect();
        (retired, restarted)
    }

    /// The policies on offer at the last reconcile, kept up to date.
    pub fn offered(&self) -> OfferList {
        self.offered.clone()
    }

    /// Enables or disables `name` until the daemon stops, then reconciles;
    /// the caller stops what was retired once the lock is released. `None`
    /// when no policy of that name is on offer.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Option<Retired> {
        if !self.offered.lock().unwrap_or_else(|p| p.into_inner()).contains_key(name) {
            return None;
        }
        self.enabled_override.insert(name.to_string(), enabled);
        let mut retired = self.retired();
        if enabled {
            self.lift_quarantine(name, &mut retired);
        }
        self.reconcile_into(&mut retired);
        Some(retired)
    }

    /// Nothing retired yet.
    fn retired(&self) -> Retired {
        Retired {
            workers: Vec::new(),
            policies: self.policies.clone(),
            arbiter: self.ctx.arbiter.clone(),
            actuator: self.ctx.actuator.clone(),
        }
    }

    /// `policy enable` gives a quarantined policy another chance: its files
    /// leave the kept quarantine, and a version parked in memory is stopped
    /// so that the reconcile that follows starts it afresh.
    fn lift_quarantine(&mut self, name: &str, retired: &mut Retired) {
        match self.ctx.quarantine.clear_name(name) {
            Ok(cleared) => {
                for entry in cleared {
                    tracing::info!(event = "policy-unquarantined", policy = %name, source = %entry.source,
                        "policy {name} from {} is no longer quarantined: enabled by the administrator", entry.source);
                }
            }
            Err(error) => tracing::warn!(policy = %name, %error,
                "policy {name} is enabled, but its file may be refused again at the next start: {error}"),
        }
        if self.policies.get(name).is_some_and(|w| w.stats.quarantined.load(std::sync::atomic::Ordering::Relaxed))
            && let Some(parked) = self.policies.remove(name)
        {
            retired.superseded(parked);
        }
    }

    /// The settings of `name`, with whether it runs decided: `policy
    /// enable|disable` first, then the configuration, then where it comes from.
    fn settings_for(&self, name: &str, origin: Origin) -> crate::config::PolicySettings {
        let mut settings = self.config.settings_for(name, origin);
        if let Some(enabled) = self.enabled_override.get(name) {
            settings.enabled = Some(*enabled);
        }
        settings
    }

    fn is_builtin(&self, name: &str) -> bool {
        self.builtins.iter().any(|b| b.name() == name)
    }

    fn origin_of(&self, name: &str, source: &PolicySource) -> Origin {
        match source {
            PolicySource::Builtin(_) => Origin::Builtin,
            PolicySource::File(_) if self.is_builtin(name) => Origin::Replacement,
            PolicySource::File(_) => Origin::File,
        }
    }

    /// Takes a policy that is no longer wanted out of the running set; it
    /// is stopped, and what it set restored when the administrator asked
    /// for that, by [`Retired::stop`].
    fn unload(&self, name: &str, why: &str, retired: &mut Retired) {
        if let Some(old) = self.policies.remove(name) {
            retired.unloaded(old, why);
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Brings the running set in line with what is on offer now; the
    /// caller stops what was retired once the lock is released.
    pub fn reconcile(&mut self) -> Retired {
        let mut retired = self.retired();
        self.reconcile_into(&mut retired);
        retired
    }

    fn reconcile_into(&mut self, retired: &mut Retired) {
        self.reconcile_declared_promotions();
        self.reconcile_live(retired);
        self.reconcile_shadows(retired);
        self.reconcile_declared_canaries();
    }

    fn reconcile_live(&mut self, retired: &mut Retired) {
        let (wanted, keep) = self.wanted();
        for (name, offer) in &wanted {
            if keep.contains(name) {
                continue;
            }
            let running = self.policies.get(name);
            let image = match offer {
                OnOffer::Ready(image) => image,
                OnOffer::NotEnabled { .. } => {
                    if running.is_some() {
                        drop(running);
                        self.unload(name, "disabled by the administrator", retired);
                    }
                    continue;
                }
            };
            let settings = self.settings_for(name, self.origin_of(name, &image.source));
            if settings.enabled == Some(false) {
                if running.is_some() {
                    drop(running);
                    self.unload(name, "disabled by the administrator", retired);
                }
                continue;
            }
            if running.as_ref().is_some_and(|w| w.digest == image.digest && w.source == image.source)
                && !self.restart.contains(name)
            {
                continue;
            }
            if let Some(entry) = self.ctx.quarantine.get(&image.digest) {
                self.report_quarantined(image, &entry);
                continue;
            }
            if running.is_none()
                && let Some(conflict) = self.ownership_conflict(image)
            {
                self.report(&image.source, &image.digest, &format!("refused: {conflict}"), false);
                continue;
            }
            match PolicyWorker::start_with_totals(image, &self.ctx, &settings, self.policies.totals_for(name)) {
                Ok(worker) => {
                    announce_namespaces(&worker, &self.ctx.registry);
                    let replaced = self.policies.insert(worker);
                    self.forget_superseded_quarantine(name, &image.digest);
                    let verb = if replaced.is_some() { "replaced" } else { "loaded" };
                    if let Some(old) = replaced {
                        retired.superseded(old);
                    }
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
                    if running.is_some() {
                        drop(running);
                        self.unload(name, "disabled by the administrator", retired);
                    } else {
                        tracing::info!(policy = %name, "policy {name} is disabled by the administrator");
                    }
                }
                Err(e) => self.report(&image.source, &image.digest, &e.to_string(), running.is_some()),
            }
        }
        for name in self.policies.names() {
            if !wanted.contains_key(&name) && !keep.contains(&name) {
                self.unload(&name, "its file is gone", retired);
            }
        }
        let offered = wanted
            .iter()
            .map(|(name, offer)| {
                let offer = match offer {
                    OnOffer::Ready(image) => Offer {
                        name: name.clone(),
                        version: image.manifest.policy.version.clone(),
                        source: image.source.to_string(),
                        enabled: self.settings_for(name, self.origin_of(name, &image.source)).enabled != Some(false),
                    },
                    OnOffer::NotEnabled { version, source } => Offer {
                        name: name.clone(),
                        version: version.clone(),
                        source: source.to_string(),
                        enabled: false,
                    },
                };
                (name.clone(), offer)
            })
            .collect();
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = offered;
    }

    /// The shadow versions equal to the files in each directory's
    /// `shadow/`: started beside the live version of their name (or alone),
    /// stopped when their file goes, replaced when it changes. A shadow
    /// needs no enabling (it changes nothing), but its file passes every
    /// check a policy file passes, and its grant is narrowed as the live
    /// version's is.
    fn reconcile_shadows(&mut self, retired: &mut Retired) {
        let mut wanted: BTreeMap<String, Arc<PolicyImage>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for dir in self.dirs.clone() {
            let dir = dir.join(SHADOW_DIR);
            let Ok(files) = policy_files(&dir) else { continue };
            for path in files {
                if let Some(image) = self.shadow_image(&dir, &path) {
                    seen.insert((path.clone(), image.digest.clone()));
                    wanted.insert(image.name().to_string(), image);
                }
            }
        }
        for path in self.shadow_files.clone().into_values() {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Some(image) = self.shadow_image(&dir, &path) {
                seen.insert((path.clone(), image.digest.clone()));
                wanted.insert(image.name().to_string(), image);
            }
        }
        self.shadow_images.retain(|key, _| seen.contains(key));
        for shadow in self.policies.shadows() {
            let name = shadow.name.clone();
            if wanted.get(&name).is_some_and(|image| image.digest == shadow.digest) {
                continue;
            }
            if let Some(old) = self.policies.remove_shadow(&name) {
                self.ctx.shadows.remove(&name);
                let counts = old.shadow_book.as_ref().map(|b| b.counts()).unwrap_or_default();
                tracing::info!(event = "shadow-stopped", policy = %name, source = %old.source,
                    decisions = counts.decisions, agreements = counts.agreements, disagreements = counts.disagreements,
                    "shadow of {name} from {} stopped: {} decisions, {} agreed with the live version, {} did not",
                    old.source, counts.decisions, counts.agreements, counts.disagreements);
                retired.superseded(old);
            }
        }
        for (name, image) in wanted {
            if self.policies.shadows().iter().any(|s| s.name == name) {
                continue;
            }
            let mut settings = self.settings_for(&name, Origin::File);
            settings.enabled = None;
            let book = Arc::new(crate::caps::shadow::ShadowBook::new(&name));
            self.ctx.shadows.insert(book.clone());
            match PolicyWorker::start_shadow(&image, &self.ctx, &settings, book) {
                Ok(worker) => {
                    announce_namespaces(&worker, &self.ctx.registry);
                    let beside =
                        if self.policies.get(&name).is_some() { "beside the live version" } else { "alone, as advice" };
                    tracing::info!(event = "shadow-started", policy = %name, source = %image.source,
                        "shadow of {name} {} from {} runs {beside}: its changes are logged, never made",
                        image.manifest.policy.version, image.source);
                    self.policies.insert_shadow(worker);
                }
                Err(e) => {
                    self.ctx.shadows.remove(&name);
                    self.report(&image.source, &image.digest, &format!("as a shadow: {e}"), false);
                }
            }
        }
    }

    /// `wasmtune policy shadow FILE`: FILE, checked as a policy file is,
    /// runs as the shadow of its policy name until `--stop` or the daemon
    /// stops. Its name, and what was retired (a shadow it replaced).
    pub fn shadow_file(&mut self, path: &Path) -> Result<(String, Retired), String> {
        let path = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let image = self
            .shadow_image(&dir, &path)
            .ok_or_else(|| format!("{} cannot run as a shadow; see the daemon's log for why", path.display()))?;
        let name = image.name().to_string();
        self.shadow_files.insert(name.clone(), path);
        let mut retired = self.retired();
        self.reconcile_shadows(&mut retired);
        Ok((name, retired))
    }

    /// `wasmtune policy shadow --stop NAME`.
    pub fn stop_shadow(&mut self, name: &str) -> Result<Retired, String> {
        if self.shadow_files.remove(name).is_none() {
            return Err(match self.policies.shadows().iter().find(|s| s.name == name) {
                Some(shadow) => {
                    format!("the shadow of {name} runs from {}: remove that file to stop it", shadow.source)
                }
                None => format!("no shadow of {name} runs"),
            });
        }
        let mut retired = self.retired();
        self.reconcile_shadows(&mut retired);
        Ok(retired)
    }

    /// A policy file's bytes, read through the file checks, and its digest;
    /// `None` when gone or refused (said once).
    fn read_file(&mut self, dir: &Path, path: &Path) -> Option<(PolicySource, Vec<u8>, String)> {
        let source = PolicySource::File(path.to_path_buf());
        match read_policy_file(dir, path) {
            Ok(Some(bytes)) => {
                let digest = hex(&Sha256::digest(&bytes));
                Some((source, bytes, digest))
            }
            Ok(None) => None,
            Err(refused) => {
                self.report(&source, "unread", &format!("refused: {refused}"), false);
                None
            }
        }
    }

    /// A shadow file read and checked as a policy file is (ownership, size,
    /// trust, manifest, grant); `None` when gone or refused (said once).
    fn shadow_image(&mut self, dir: &Path, path: &Path) -> Option<Arc<PolicyImage>> {
        let (source, bytes, digest) = self.read_file(dir, path)?;
        let key = (path.to_path_buf(), digest.clone());
        if let Some(image) = self.shadow_images.get(&key) {
            return Some(image.clone());
        }
        if self.reported.contains(&key) {
            return None;
        }
        let mut checked = Checked::default();
        let file_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !self.trusted(&file_name, &source, &bytes, &digest, &mut checked) {
            return None;
        }
        let image = match PolicyImage::read(&bytes, source.clone()) {
            Ok(image) => image,
            Err(e) => {
                self.report(&source, &digest, &e.to_string(), false);
                return None;
            }
        };
        if !self.trusted(image.name(), &source, &bytes, &digest, &mut checked) {
            return None;
        }
        let settings = self.settings_for(image.name(), Origin::File);
        if let Err(refused) = crate::grants::EffectiveGrant::resolve(&image.manifest, &settings, &self.ctx.limits) {
            self.report(&source, &digest, &refused.to_string(), false);
            return None;
        }
        let image = Arc::new(image);
        self.shadow_images.insert(key, image.clone());
        Some(image)
    }

    /// Built-ins overlaid by each directory's files in order, by policy name;
    /// and the names of running policies whose file now fails to load, which
    /// stay as they are.
    fn wanted(&mut self) -> (BTreeMap<String, OnOffer>, HashSet<String>) {
        let mut wanted: BTreeMap<String, OnOffer> =
            self.builtins.iter().map(|i| (i.name().to_string(), OnOffer::Ready(i.clone()))).collect();
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
                    Some((name, offer)) => {
                        if let OnOffer::Ready(image) = &offer {
                            seen.insert((path.clone(), image.digest.clone()));
                        }
                        wanted.insert(name, offer);
                    }
                    None => {
                        failed.insert(path);
                    }
                }
            }
        }
        self.images.retain(|key, _| seen.contains(key));
        // A promoted canary is the version of its name, wherever it lies.
        for (name, canary::Promotion { file: path, .. }) in self.promoted.clone() {
            match self.shadow_image(&canary::parent_dir(&path), &path) {
                Some(image) if image.name() == name => {
                    wanted.insert(name, OnOffer::Ready(image));
                }
                Some(image) => tracing::warn!(policy = %name, "promoted file {} is policy {} now, not {name}; \
                    the version of {name} stays as the directories offer it", path.display(), image.name()),
                None => {}
            }
        }
        let keep = self
            .policies
            .snapshot()
            .iter()
            .filter(|w| matches!(&w.source, PolicySource::File(p) if failed.contains(p)))
            .map(|w| w.name.clone())
            .collect();
        (wanted, keep)
    }

    /// What the file at `path` offers, by policy name: compiled when it may
    /// run, its manifest alone when the administrator has not enabled it.
    /// `None` when it is gone or refused (reported once).
    fn image_for(&mut self, dir: &Path, path: &Path) -> Option<(String, OnOffer)> {
        let (source, bytes, digest) = self.read_file(dir, path)?;
        // Trusted before anything parses these bytes, under the name the
        // file gives itself (`NAME.wasm`); under its manifest's below.
        let mut checked = Checked::default();
        let file_name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !self.trusted(&file_name, &source, &bytes, &digest, &mut checked) {
            return None;
        }
        let key = (path.to_path_buf(), digest.clone());
        if let Some(image) = self.images.get(&key).cloned() {
            // Checked again: the signature beside an unchanged file may have
            // changed since it was compiled.
            if !self.trusted(image.name(), &source, &bytes, &digest, &mut checked) {
                return None;
            }
            return Some((image.name().to_string(), OnOffer::Ready(image)));
        }
        if self.reported.contains(&key) {
            return None;
        }
        // Untrusted bytes reach the compiler only once their manifest reads,
        // the administrator lets the policy run, and its grant can be given:
        // the checks that need no compiling come first.
        let manifest = match crate::manifest::Manifest::from_component(&bytes) {
            Ok(manifest) => manifest,
            Err(e) => {
                self.report(&source, &digest, &LoadError::from(e).to_string(), false);
                return None;
            }
        };
        let name = manifest.policy.name.clone();
        if !self.trusted(&name, &source, &bytes, &digest, &mut checked) {
            return None;
        }
        if self.is_builtin(&name) && !self.config.replaces_builtin(&name) {
            let refusal = format!(
                "refused: it is named like the built-in policy {name}; a file replaces a built-in only when \
                 the configuration says so ([policies.{name}] replace-builtin = true)"
            );
            self.report(&source, &digest, &refusal, false);
            return None;
        }
        let settings = self.settings_for(&name, self.origin_of(&name, &source));
        if settings.enabled == Some(false) {
            self.report_not_enabled(&name, &source, &digest);
            return Some((name, OnOffer::NotEnabled { version: manifest.policy.version.clone(), source }));
        }
        if let Err(refused) = crate::grants::EffectiveGrant::resolve(&manifest, &settings, &self.ctx.limits) {
            self.report(&source, &digest, &refused.to_string(), false);
            return None;
        }
        say_verified(&name, &source, &digest, &checked);
        match PolicyImage::read(&bytes, source.clone()) {
            Ok(image) => {
                let image = Arc::new(image);
                self.images.insert(key, image.clone());
                Some((name, OnOffer::Ready(image)))
            }
            Err(e) => {
                self.report(&source, &digest, &e.to_string(), false);
                None
            }
        }
    }

    /// A policy file runs only once the administrator enables it; said once
    /// per file, with the way to enable it.
    fn report_not_enabled(&mut self, name: &str, source: &PolicySource, digest: &str) {
        if self.enabled_override.get(name) == Some(&false)
            || !self.not_enabled_reported.insert(report_key(source, digest))
        {
            return;
        }
        let explicit = self.config.policies.get(name).is_some_and(|p| p.enabled == Some(false));
        let why = if explicit {
            "the configuration disables it".to_string()
        } else {
            format!(
                "policy files change nothing until the administrator enables them \
                 (`wasmtune policy enable {name}`, or [policies.{name}] enabled = true in the configuration)"
            )
        };
        tracing::warn!(event = "policy-not-enabled", policy = %name, source = %source,
            "policy {name} from {source} is not loaded: {why}");
    }

    /// A new policy may not claim a tunable another policy already owns: one
    /// tunable in one netns has one owner, and a newcomer does not take it over.
    fn ownership_conflict(&self, image: &PolicyImage) -> Option<String> {
        let name = image.name();
        self.ctx.arbiter.owners().into_iter().find_map(|(netns, tunable, owner)| {
            let writable = image.manifest.sysctl(&tunable).is_some_and(|g| g.access == crate::manifest::Access::Write);
            (owner != name && writable).then(|| {
                let netns = self.ctx.registry.display_name(netns);
                format!(
                    "its manifest claims {tunable}, which policy {owner} owns in netns {netns}; \
                     remove it from the manifest or disable {owner} first"
                )
            })
        })
    }

    /// A file quarantined after repeated faults, in this run or an earlier
    /// one, is not loaded; said once per file, with the way out.
    fn report_quarantined(&mut self, image: &PolicyImage, entry: &QuarantineEntry) {
        if !self.quarantine_reported.insert(report_key(&image.source, &image.digest)) {
            return;
        }
        let name = image.name();
        tracing::warn!(event = "policy-still-quarantined", policy = %name, source = %image.source,
            digest = %image.digest, reason = %entry.reason, quarantined_ms = entry.time_ms,
            "policy {name} from {} is not loaded: this file was quarantined after repeated faults ({}); \
             install a different file, or run `wasmtune policy enable {name}` to try it again",
            image.source, entry.reason);
    }

    /// A different file of a policy now runs: the quarantine of its other
    /// files ends, as it does in memory.
    fn forget_superseded_quarantine(&self, name: &str, digest: &str) {
        match self.ctx.quarantine.forget_superseded(name, digest) {
            Ok(forgotten) => {
                for entry in forgotten {
                    tracing::info!(event = "policy-unquarantined", policy = %name, source = %entry.source,
                        "policy {name}: the quarantined file from {} was replaced", entry.source);
                }
            }
            Err(error) => tracing::warn!(policy = %name, %error, "cannot update the quarantined policies: {error}"),
        }
    }

    fn report(&mut self, source: &PolicySource, digest: &str, error: &str, kept_old: bool) {
        if !self.reported.insert(report_key(source, digest)) {
            return;
        }
        say_load_failed(source, error, kept_old);
    }

    /// Whether the file's bytes pass what the administrator asks of policy
    /// `name` (pin, signature); a refusal is said once per file, content
    /// and reason, and whatever runs under that name stays.
    fn trusted(
        &mut self,
        name: &str,
        source: &PolicySource,
        bytes: &[u8],
        digest: &str,
        checked: &mut Checked,
    ) -> bool {
        let PolicySource::File(path) = source else { return true };
        match self.trust.check(name, path, bytes, digest, checked) {
            Ok(()) => {
                self.untrusted_reported.retain(|((reported, _), _)| reported != path);
                true
            }
            Err(untrusted) => {
                self.refuse_untrusted(name, source, digest, &untrusted);
                false
            }
        }
    }

    fn refuse_untrusted(&mut self, name: &str, source: &PolicySource, digest: &str, untrusted: &Untrusted) {
        let error = untrusted.to_string();
        if !self.untrusted_reported.insert((report_key(source, digest), error.clone())) {
            return;
        }
        let kept_old = self.policies.snapshot().iter().any(|w| w.name == name || w.source == *source);
        say_load_failed(source, &error, kept_old);
    }
}

/// The one line a refused or broken file gets.
fn say_load_failed(source: &PolicySource, error: &str, kept_old: bool) {
    let outcome = if kept_old { "; the running version stays in charge" } else { "" };
    tracing::error!(event = "policy-load-failed", source = %source, error = %error,
        "cannot load policy {source}: {error}{outcome}");
}

/// A file about to be compiled passed the administrator's pin or a
/// signature check: said with the key that vouched for it.
fn say_verified(name: &str, source: &PolicySource, digest: &str, checked: &Checked) {
    if let Some(signature) = &checked.signature {
        tracing::info!(event = "policy-verified", policy = %name, source = %source, digest = %digest,
            key = %signature.key, key_file = %signature.key_file.display(), pinned = checked.pinned,
            trusted_comment = %signature.trusted_comment,
            "policy {name} from {source}: signature by key {} ({}) verified", signature.key,
            signature.key_file.display());
    } else if checked.pinned {
        tracing::info!(event = "policy-verified", policy = %name, source = %source, digest = %digest,
            pinned = true, "policy {name} from {source}: content matches the pinned digest");
    }
}

/// Workers a reconcile took out of the running set. They keep running (no
/// events reach them) until [`Retired::stop`], which the caller runs after
/// releasing the reconciler's lock: stopping waits for each policy's
/// thread, up to its deadline, and `policy enable|disable`, the next
/// reconcile and the daemon's stop must not wait behind that.
#[must_use = "retired policies keep running until stopped"]
pub struct Retired {
    workers: Vec<RetiredWorker>,
    policies: Arc<PolicySet>,
    arbiter: Arc<Arbiter>,
    actuator: Actuator,
}

struct RetiredWorker {
    worker: Arc<PolicyWorker>,
    /// Why it was unloaded; `None` for a version superseded under the same
    /// name, which keeps what it owns and what it set.
    unloaded: Option<String>,
}

impl Retired {
    fn unloaded(&mut self, worker: Arc<PolicyWorker>, why: &str) {
        self.workers.push(RetiredWorker { worker, unloaded: Some(why.to_string()) });
    }

    fn superseded(&mut self, worker: Arc<PolicyWorker>) {
        self.workers.push(RetiredWorker { worker, unloaded: None });
    }

    /// Stops every retired worker (each handles what was queued for it),
    /// then lets go of what the unloaded ones owned, and restores what they
    /// set when the administrator asked for that.
    pub fn stop(self) {
        let workers: Vec<Arc<PolicyWorker>> = self.workers.iter().map(|r| r.worker.clone()).collect();
        stop_all(&workers);
        for retired in &self.workers {
            if let Some(why) = &retired.unloaded {
                self.finish_unload(&retired.worker, why);
            }
        }
    }

    fn finish_unload(&self, worker: &PolicyWorker, why: &str) {
        let name = &worker.name;
        let source = worker.source.to_string();
        // Enabled again while this one stopped: what the name owns and has
        // set is the new version's now.
        if self.policies.get(name).is_some() {
            tracing::info!(event = "policy-unloaded", policy = %name, source = %source,
                "policy {name} from {source} unloaded: {why}; a new version already runs in its place");
            return;
        }
        self.arbiter.release(name);
        if worker.rollback_on_unload {
            let report = self.actuator.rollback_policy(name);
            tracing::info!(event = "policy-unloaded", policy = %name, source = %source,
                "policy {name} unloaded: {why}; {} value(s) it set restored", report.restored.len());
            for line in report.lines() {
                tracing::info!(policy = %name, "{line}");
            }
        } else {
            tracing::info!(event = "policy-unloaded", policy = %name, source = %source,
                "policy {name} unloaded: {why}; values it set stay as they are");
        }
    }
}

/// What a reported failure is remembered by, so an unchanged file is
/// reported once.
fn report_key(source: &PolicySource, digest: &str) -> (PathBuf, String) {
    match source {
        PolicySource::File(path) => (path.clone(), digest.to_string()),
        PolicySource::Builtin(name) => (PathBuf::from(name), digest.to_string()),
    }
}

/// Watches the policy directories and reconciles after each burst of changes.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: crossbeam_channel::Sender<()>,
}

impl DirWatcher {
    pub fn spawn(reconciler: Arc<Mutex<Reconciler>>) -> Result<DirWatcher, notify::Error> {
        use notify::Watcher;
        let (tx, rx) = crossbeam_channel::unbounded::<notify::Event>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                let _ = tx.send(event);
            }
        })?;
        let mut dirs = reconciler.lock().unwrap_or_else(|p| p.into_inner()).dirs().to_vec();
        let shadow_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.join(SHADOW_DIR)).filter(|d| d.is_dir()).collect();
        dirs.extend(shadow_dirs);
        for dir in &dirs {
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
                let mut tracker = WriteTracker::default();
                loop {
                    let first = crossbeam_channel::select! {
                        recv(stopped) -> _ => return,
                        recv(rx) -> msg => match msg { Ok(event) => event, Err(_) => return },
                    };
                    if !wait_until_complete(&rx, &mut tracker, first) {
                        continue;
                    }
                    let retired = reconciler.lock().unwrap_or_else(|p| p.into_inner()).reconcile();
                    retired.stop();
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

/// After `first`, takes the events that came with it; true when the
/// directory should be reconciled now. A final change (a rename in, a close
/// after writing, a removal) with no visible file still being written is
/// acted on at once; otherwise the directory must be quiet for [`SETTLE`],
/// or the last file being written must close, first.
fn wait_until_complete(
    rx: &crossbeam_channel::Receiver<notify::Event>,
    tracker: &mut WriteTracker,
    first: notify::Event,
) -> bool {
    let mut meaning = tracker.note(&first);
    // One rename is several events (from, to, both): take those already here.
    while let Ok(event) = rx.recv_timeout(COALESCE) {
        meaning = meaning.max(tracker.note(&event));
    }
    match meaning {
        Meaning::Nothing => return false,
        Meaning::Final if tracker.quiet() => return true,
        _ => {}
    }
    loop {
        match rx.recv_timeout(SETTLE) {
            Ok(event) => {
                if tracker.note(&event) == Meaning::Final && tracker.quiet() {
                    return true;
                }
            }
            Err(_) => {
                tracker.settled();
                return true;
            }
        }
    }
}

/// How long the events of one change may straggle in after its first.
const COALESCE: Duration = Duration::from_millis(2);

/// A policy that follows namespaces learns, before any other event, of those
/// that existed before it started: later ones arrive as they are created.
fn announce_namespaces(worker: &PolicyWorker, registry: &crate::netns::NetnsRegistry) {
    if !worker.wants(crate::wit::EventKind::NamespaceChange) {
        return;
    }
    let known = crate::runtime::worker::namespace_announcements(registry);
    if !known.is_empty() {
        worker.deliver(known);
    }
}
