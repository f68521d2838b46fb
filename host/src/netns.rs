//! The network namespaces the host knows and tunes, each named and identified
//! by its kernel cookie, and entering one on the calling thread behind a guard
//! that returns to the previous namespace on drop.
//!
//! Namespaces come from three places, in this order of naming preference: the
//! daemon's own (`init`), the ones `ip netns add` made (`/run/netns/NAME`), and
//! — when the administrator did not restrict tuning with `--netns` — those of
//! running processes (`pid:<pid>`, after the first process seen in it). A
//! namespace's file descriptor stays open while it is known, so the cookie the
//! registry hands out keeps naming the same namespace; the cookie itself is
//! learned by entering the namespace and asking a socket (`SO_NETNS_COOKIE`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// The name of the daemon's own network namespace.
pub const INIT_NAME: &str = "init";
/// Where `ip netns add` bind-mounts named namespaces.
pub const RUN_NETNS_DIR: &str = "/run/netns";
/// The namespace of the whole process (the thread-group leader's), which is
/// what the daemon calls `init`.
const PROCESS_NETNS: &str = "/proc/self/ns/net";
/// The namespace of the calling thread, which `setns` changes.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";
/// `SO_NETNS_COOKIE` (Linux 5.14) from the generic `asm/socket.h`, which
/// x86_64 and arm64 use; the libc crate does not export it on every target.
const SO_NETNS_COOKIE: libc::c_int = 71;
/// An unknown cookie triggers a rescan at most this often, so a flood of
/// events from a namespace that is not tuned cannot turn into a flood of scans.
const UNKNOWN_COOKIE_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A namespace the host tunes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub cookie: u64,
    pub name: String,
}

/// A namespace that appeared or went away between two scans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceTransition {
    pub cookie: u64,
    pub name: String,
    pub created: bool,
    /// Whether the host tunes (or tuned) it.
    pub tuned: bool,
}

/// Why a namespace could not be found, named or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `--netns` names a namespace that is neither `init` nor in `/run/netns`.
    #[error("network namespace {name:?} does not exist (expected \"init\" or a name under {RUN_NETNS_DIR})")]
    UnknownName { name: String },
    /// A name that cannot be a namespace name (empty, a path, `.` or `..`).
    #[error("{name:?} is not a network namespace name")]
    InvalidName { name: String },
    /// The registry does not know this cookie (never seen, filtered out or gone).
    #[error("network namespace with cookie {cookie} is not known")]
    UnknownCookie { cookie: u64 },
    /// A namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// A directory of namespaces (`/run/netns`, `/proc`) could not be listed.
    #[error("cannot list {path}: {source}")]
    List { path: PathBuf, source: std::io::Error },
    /// `setns(CLONE_NEWNET)` failed (EPERM without CAP_SYS_ADMIN, EINVAL if the
    /// file is not a network namespace).
    #[error("cannot enter network namespace {name}: {errno}")]
    Enter { name: String, errno: Errno },
    /// The file named another namespace by the time it was opened (a process
    /// exited and its pid was reused, or a name was re-created).
    #[error("network namespace file {path} changed while it was being opened")]
    Replaced { path: PathBuf },
    /// The namespace's cookie could not be read from a socket.
    #[error("cannot read the cookie of network namespace {name}: {errno}")]
    Cookie { name: String, errno: Errno },
}

/// Where a namespace's name came from; earlier variants name it better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Init,
    Named,
    Process,
}

/// A namespace file found by a scan, before it is opened.
struct Candidate {
    name: String,
    origin: Origin,
    path: PathBuf,
}

/// The identity of a namespace file (nsfs device and inode), known without
/// entering it, so that many processes in one namespace cost one entry.
type NsInode = (u64, u64);

struct KnownNamespace {
    name: String,
    origin: Origin,
    inode: NsInode,
    tuned: bool,
    /// Keeps the namespace alive and lets the registry enter it by cookie.
    fd: OwnedFd,
}

/// A namespace in a scan's result: newly opened, or one the registry already holds.
struct Found {
    cookie: u64,
    name: String,
    origin: Origin,
    inode: NsInode,
    fd: Option<OwnedFd>,
}

/// The namespaces the daemon knows, shared as `Arc<NetnsRegistry>` by the
/// event router, the policies' capabilities and the actuator.
pub struct NetnsRegistry {
    /// `--netns` names; empty means every namespace is tuned.
    only: Vec<String>,
    known: RwLock<HashMap<u64, KnownNamespace>>,
    /// Serialises scans, so two never race to replace the map.
    scanning: Mutex<()>,
    last_unknown_rescan: Mutex<Option<Instant>>,
    /// Counts scans that found a namespace come or go, whichever thread
    /// scanned: the actuator's kernel epoch folds it in, so that what a
    /// policy read about namespaces is read again after one changed.
    generation: AtomicU64,
}

impl NetnsRegistry {
    /// Finds the daemon's own namespace, every `/run/netns/NAME`, and — only
    /// when `only` is empty — the namespaces of running processes. `only`
    /// restricts tuning to those names (`init` allowed); a name that does not
    /// exist is an error naming it.
    pub fn discover(only: &[String]) -> Result<NetnsRegistry, NetnsError> {
        let registry = NetnsRegistry {
            only: only.to_vec(),
            known: RwLock::new(HashMap::new()),
            scanning: Mutex::new(()),
            last_unknown_rescan: Mutex::new(None),
            generation: AtomicU64::new(0),
        };
        registry.refresh()?;
        let known = registry.known.read().unwrap_or_else(PoisonError::into_inner);
        for name in only {
            if !known.values().any(|ns| &ns.name == name && ns.origin != Origin::Process) {
                return Err(NetnsError::UnknownName { name: name.clone() });
            }
        }
        drop(known);
        Ok(registry)
    }

    /// Rescans: namespaces that appeared are added, those whose every source
    /// vanished are dropped (and their descriptors closed).
    pub fn refresh(&self) -> Result<(), NetnsError> {
        self.refresh_changes().map(|_| ())
    }

    /// Rescans like [`Self::refresh`] and returns what appeared and went away.
    pub fn refresh_changes(&self) -> Result<Vec<NamespaceTransition>, NetnsError> {
        let mut changes = Vec::new();
        let _scanning = self.scanning.lock().unwrap_or_else(PoisonError::into_inner);
        let candidates = self.candidates()?;
        let found = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            resolve_candidates(&candidates, &known)
        };
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::with_capacity(found.len());
        for entry in found {
            let tuned = self.allows(&entry.name);
            let fd = match entry.fd {
                Some(fd) => {
                    tracing::debug!(netns = %entry.name, cookie = entry.cookie, tuned, "network namespace found");
                    changes.push(NamespaceTransition {
                        cookie: entry.cookie,
                        name: entry.name.clone(),
                        created: true,
                        tuned,
                    });
                    fd
                }
                None => match known.remove(&entry.cookie) {
                    Some(previous) => previous.fd,
                    // Scans are serialised, so a reused entry is still there.
                    None => continue,
                },
            };
            next.insert(
                entry.cookie,
                KnownNamespace { name: entry.name, origin: entry.origin, inode: entry.inode, tuned, fd },
            );
        }
        for (cookie, gone) in known.drain() {
            tracing::debug!(netns = %gone.name, cookie, "network namespace gone");
            changes.push(NamespaceTransition { cookie, name: gone.name, created: false, tuned: gone.tuned });
        }
        *known = next;
        if !changes.is_empty() {
            // While the map is still locked: no reader sees the new map
            // with the old generation.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(changes)
    }

    /// A number that changes whenever a namespace was registered or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The name of a known namespace.
    pub fn name_of(&self, cookie: u64) -> Option<String> {
        self.known.read().unwrap_or_else(PoisonError::into_inner).get(&cookie).map(|ns| ns.name.clone())
    }

    /// How a namespace is shown in logs, the journal and answers: its name,
    /// or `netns:COOKIE` for one not (or no longer) known.
    pub fn display_name(&self, cookie: u64) -> String {
        self.name_of(cookie).unwrap_or_else(|| format!("netns:{cookie}"))
    }

    /// The cookie of a known namespace.
    pub fn cookie_of(&self, name: &str) -> Option<u64> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        known.iter().find(|(_, ns)| ns.name == name).map(|(cookie, _)| *cookie)
    }

    /// Whether the host tunes this namespace, from what is known already:
    /// never a rescan. For the policy threads, which run without
    /// capabilities: a scan from there cannot see other processes'
    /// namespaces, and would drop them from the registry until the next
    /// privileged scan (a namespace seen "going" and "appearing" again).
    /// Every namespace an event names was known before the event was routed.
    pub fn is_known_tuned(&self, cookie: u64) -> bool {
        self.known.read().unwrap_or_else(PoisonError::into_inner).get(&cookie).is_some_and(|ns| ns.tuned)
    }

    /// Whether the host tunes this namespace: known and allowed by `--netns`.
    /// A cookie never seen triggers one rescan (at most once per second)
    /// before the answer, so a namespace made after start-up is picked up.
    pub fn is_tuned(&self, cookie: u64) -> bool {
        if let Some(ns) = self.known.read().unwrap_or_else(PoisonError::into_inner).get(&cookie) {
            return ns.tuned;
        }
        {
            let mut last = self.last_unknown_rescan.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < UNKNOWN_COOKIE_RESCAN_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        if let Err(error) = self.refresh() {
            tracing::warn!(%error, "rescanning network namespaces failed");
        }
        self.known.read().unwrap_or_else(PoisonError::into_inner).get(&cookie).is_some_and(|ns| ns.tuned)
    }

    /// The namespaces the host tunes, `init` first, then by name.
    pub fn list(&self) -> Vec<NamespaceInfo> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        let mut tuned: Vec<(&Origin, NamespaceInfo)> = known
            .iter()
            .filter(|(_, ns)| ns.tuned)
            .map(|(cookie, ns)| (&ns.origin, NamespaceInfo { cookie: *cookie, name: ns.name.clone() }))
            .collect();
        tuned.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        tuned.into_iter().map(|(_, info)| info).collect()
    }

    /// Enters a known namespace on the calling thread; the guard returns the
    /// thread to its previous namespace when dropped.
    pub fn enter(&self, cookie: u64) -> Result<NetnsGuard, NetnsError> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        let ns = known.get(&cookie).ok_or(NetnsError::UnknownCookie { cookie })?;
        enter_fd(ns.fd.as_fd(), &ns.name)
    }

    /// Enters a namespace by the name the registry would give it, without a
    /// registry: `init` (this process's namespace), a `/run/netns` name, or
    /// `pid:<pid>`. For rollback after a crash, when no daemon is running; the
    /// caller should compare [`current_cookie`] with the cookie it expects,
    /// because a name can be reused by a new namespace.
    pub fn enter_by_name(name: &str) -> Result<NetnsGuard, NetnsError> {
        let path = path_of_name(name)?;
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        enter_fd(file.as_fd(), name)
    }

    fn allows(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|allowed| allowed == name)
    }

    /// Every namespace file to look at, best name first.
    fn candidates(&self) -> Result<Vec<Candidate>, NetnsError> {
        let mut candidates =
            vec![Candidate { name: INIT_NAME.to_string(), origin: Origin::Init, path: PathBuf::from(PROCESS_NETNS) }];
        let mut named = list_dir(Path::new(RUN_NETNS_DIR))?;
        named.sort();
        candidates.extend(
            named.into_iter().filter(|name| path_of_name(name).is_ok() && name != INIT_NAME).map(|name| Candidate {
                path: Path::new(RUN_NETNS_DIR).join(&name),
                name,
                origin: Origin::Named,
            }),
        );
        if self.only.is_empty() {
            let mut pids: Vec<u32> = list_dir(Path::new("/proc"))?.iter().filter_map(|e| e.parse().ok()).collect();
            pids.sort_unstable();
            candidates.extend(pids.into_iter().map(|pid| Candidate {
                name: format!("pid:{pid}"),
                origin: Origin::Process,
                path: PathBuf::from(format!("/proc/{pid}/ns/net")),
            }));
        }
        Ok(candidates)
    }
}

/// Turns candidates into one entry per namespace: a namespace already known
/// keeps its cookie and descriptor (and its `pid:` name, which would otherwise
/// change whenever that process exits); a new one is opened and its cookie read.
fn resolve_candidates(candidates: &[Candidate], known: &HashMap<u64, KnownNamespace>) -> Vec<Found> {
    let by_inode: HashMap<NsInode, (u64, &KnownNamespace)> =
        known.iter().map(|(cookie, ns)| (ns.inode, (*cookie, ns))).collect();
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for candidate in candidates {
        // A process can exit, or a name be deleted, between listing and here.
        let Ok(metadata) = std::fs::metadata(&candidate.path) else { continue };
        let inode = (metadata.dev(), metadata.ino());
        if !seen.insert(inode) {
            continue;
        }
        if let Some((cookie, ns)) = by_inode.get(&inode) {
            let keep_name = candidate.origin == Origin::Process && ns.origin == Origin::Process;
            let (name, origin) =
                if keep_name { (ns.name.clone(), ns.origin) } else { (candidate.name.clone(), candidate.origin) };
            found.push(Found { cookie: *cookie, name, origin, inode, fd: None });
            continue;
        }
        match open_and_identify(candidate, inode) {
            Ok((cookie, fd)) => found.push(Found {
                cookie,
                name: candidate.name.clone(),
                origin: candidate.origin,
                inode,
                fd: Some(fd),
            }),
            // Without CAP_SYS_ADMIN no namespace can be entered: say so for
            // the ones the administrator named. Otherwise `ip netns add`
            // creates the file before mounting the namespace on it, and
            // processes come and go: the next scan sees the settled state.
            Err(error @ NetnsError::Enter { errno: Errno::EPERM, .. }) if candidate.origin != Origin::Process => {
                tracing::warn!(path = %candidate.path.display(), %error, "skipping network namespace")
            }
            Err(error) => tracing::debug!(path = %candidate.path.display(), %error, "skipping network namespace"),
        }
    }
    found
}

/// Opens a namespace file, checks it is still the namespace that was stat'ed,
/// and reads its cookie.
fn open_and_identify(candidate: &Candidate, inode: NsInode) -> Result<(u64, OwnedFd), NetnsError> {
    let open_error = |source| NetnsError::Open { path: candidate.path.clone(), source };
    let file = File::open(&candidate.path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if (metadata.dev(), metadata.ino()) != inode {
        return Err(NetnsError::Replaced { path: candidate.path.clone() });
    }
    let cookie = {
        let _inside = enter_fd(file.as_fd(), &candidate.name)?;
        current_cookie().map_err(|errno| NetnsError::Cookie { name: candidate.name.clone(), errno })?
    };
    Ok((cookie, OwnedFd::from(file)))
}

/// The file to enter for a namespace name.
fn path_of_name(name: &str) -> Result<PathBuf, NetnsError> {
    if name == INIT_NAME {
        return Ok(PathBuf::from(PROCESS_NETNS));
    }
    if let Some(pid) = name.strip_prefix("pid:") {
        return match pid.parse::<u32>() {
            Ok(pid) => Ok(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            Err(_) => Err(NetnsError::InvalidName { name: name.to_string() }),
        };
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetnsError::InvalidName { name: name.to_string() });
    }
    Ok(Path::new(RUN_NETNS_DIR).join(name))
}

/// File names in a directory; a missing directory (no `ip netns add` yet) is empty.
fn list_dir(dir: &Path) -> Result<Vec<String>, NetnsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(NetnsError::List { path: dir.to_path_buf(), source }),
    };
    Ok(entries.filter_map(Result::ok).filter_map(|entry| entry.file_name().into_string().ok()).collect())
}

/// The cookie of the calling thread's current network namespace.
pub fn current_cookie() -> Result<u64, Errno> {
    // Any socket carries its namespace's cookie; AF_UNIX exists in every one.
    let socket = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    let mut cookie: u64 = 0;
    let mut length = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `length` bytes into `cookie`, which is
    // a live u64 of exactly that size, and updates `length`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast::<libc::c_void>(),
            &raw mut length,
        )
    };
    Errno::result(result)?;
    if length as usize != std::mem::size_of::<u64>() {
        return Err(Errno::EINVAL);
    }
    Ok(cookie)
}

/// Enters the namespace behind `target` on the calling thread, remembering
/// the one to return to.
fn enter_fd(target: BorrowedFd<'_>, name: &str) -> Result<NetnsGuard, NetnsError> {
    let previous =
        File::open(THREAD_NETNS).map_err(|source| NetnsError::Open { path: PathBuf::from(THREAD_NETNS), source })?;
    setns(target, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter { name: name.to_string(), errno })?;
    Ok(NetnsGuard { previous: OwnedFd::from(previous), entered: name.to_string(), _same_thread: PhantomData })
}

/// The calling thread is inside another network namespace while this lives;
/// dropping it returns the thread to where it was. Not `Send`: `setns` acts
/// on one thread, so the guard must be dropped on the thread that made it.
#[must_use = "the thread leaves the namespace as soon as the guard is dropped"]
pub struct NetnsGuard {
    previous: OwnedFd,
    entered: String,
    _same_thread: PhantomData<*const ()>,
}

impl NetnsGuard {
    /// The name of the namespace the guard entered.
    pub fn name(&self) -> &str {
        &self.entered
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(errno) = setns(self.previous.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Every user enters the namespace it needs before acting, so a
            // thread left behind misdirects nothing; say so loudly all the same.
            tracing::error!(netns = %self.entered, %errno, "cannot return from network namespace");
        }
    }
}

/// Follows namespaces as they come and go: a rescan whenever `/run/netns`
/// changes (inotify), and every `rescan` anyway (processes' namespaces, and
/// a `/run/netns` made after start-up). Each scan that finds a change calls
/// `on_change` on the watcher's thread.
pub struct NetnsWatcher {
    /// Dropped to stop the thread.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _inotify: Option<notify::RecommendedWatcher>,
}

impl NetnsWatcher {
    pub fn spawn(
        registry: std::sync::Arc<NetnsRegistry>,
        rescan: Duration,
        mut on_change: impl FnMut(&[NamespaceTransition]) + Send + 'static,
    ) -> std::io::Result<NetnsWatcher> {
        use notify::Watcher;
        let (kick, kicked) = crossbeam_channel::bounded::<()>(1);
        let inotify = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Only names coming and going matter. Opening or listing
            // /run/netns (which every scan does) raises access events too:
            // kicking on those made each scan trigger the next one. An error
            // (a lost queue) may hide a change: rescan.
            let relevant = event.map_or(true, |event| {
                matches!(event.kind, notify::EventKind::Create(_) | notify::EventKind::Remove(_))
                    || matches!(event.kind, notify::EventKind::Modify(notify::event::ModifyKind::Name(_)))
            });
            if relevant {
                let _ = kick.try_send(());
            }
        })
        .ok()
        .and_then(|mut watcher| {
            watcher.watch(Path::new(RUN_NETNS_DIR), notify::RecursiveMode::NonRecursive).ok().map(|()| watcher)
        });
        // Without inotify its sender is gone: the rescans alone find names.
        let kicked = if inotify.is_some() { kicked } else { crossbeam_channel::never() };
        let (stop, stopping) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new().name("netns-watcher".into()).spawn(move || {
            // Sleeps until a name comes or goes in /run/netns, the next
            // rescan (namespaces held only by processes) or the stop.
            let mut next_scan = Instant::now() + rescan;
            loop {
                let woken = crossbeam_channel::select! {
                    recv(kicked) -> kick => kick.is_ok(),
                    recv(stopping) -> _ => return,
                    default(next_scan.saturating_duration_since(Instant::now())) => false,
                };
                if woken {
                    // `ip netns add` creates the file before mounting the namespace on it.
                    std::thread::sleep(Duration::from_millis(50));
                }
                next_scan = Instant::now() + rescan;
                match registry.refresh_changes() {
                    Ok(changes) if !changes.is_empty() => on_change(&changes),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "rescanning network namespaces failed"),
                }
            }
        })?;
        Ok(NetnsWatcher { stop: Some(stop), thread: Some(thread), _inotify: inotify })
    }

    /// Stops the thread (also done on drop).
    pub fn stop(self) {}
}

impl Drop for NetnsWatcher {
    fn drop(&mut self) {
        // Dropping the sender ends the thread's wait.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_to_namespace_files() {
        assert_eq!(path_of_name("init").ok(), Some(PathBuf::from("/proc/self/ns/net")));
        assert_eq!(path_of_name("rx").ok(), Some(PathBuf::from("/run/netns/rx")));
        assert_eq!(path_of_name("pid:42").ok(), Some(PathBuf::from("/proc/42/ns/net")));
        for bad in ["", ".", "..", "a/b", "../etc", "pid:x", "pid:-1"] {
            assert!(path_of_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_cookie_of_the_current_namespace() {
        let first = current_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)");
        assert_ne!(first, 0);
        assert_eq!(current_cookie().expect("cookie"), first);
    }
}
