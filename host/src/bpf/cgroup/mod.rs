//! The cgroup-v2 programs: per-destination TCP settings (`sockops`), the
//! administrator's sysctl writes (`cgroup/sysctl`) and, once at start-up,
//! the walk of existing TCP sockets (`iter/tcp`).
//!
//! [`CgroupHooks::start`] spawns one thread that owns both skeletons, their
//! links and the ring buffer of sysctl writes (none of them is `Send`), and
//! returns once each program is attached or has failed on its own; a program
//! that fails disables only what depends on it, and [`CgroupHooks::hooks`]
//! says which and why. Programs are attached to the cgroup-v2 root (found in
//! the mount table) through BPF links and nothing is pinned: stopping, or the
//! process dying, closes the links and the kernel detaches them.

mod admin;
mod existing;
mod mount;
mod peer_map;

use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapHandle, OpenObject, RingBufferBuilder};

pub use existing::{ExistingSocket, WalkReport};
pub use mount::{MountError, cgroup2_root};
pub use peer_map::PeerMap;
// The vocabulary the map holds, where the map's users have always found it.
pub use crate::peer::{PeerError, PeerPrefix, PeerSettings};

use crate::admin_write::AdminWrite;
use crate::probe::ProbeLine;
use crate::wit::Event;

mod generated_sockops {
    include!(concat!(env!("OUT_DIR"), "/sockops.skel.rs"));
}
mod generated_sysctl_watch {
    include!(concat!(env!("OUT_DIR"), "/sysctl_watch.skel.rs"));
}

use generated_sockops::SockopsSkelBuilder;
use generated_sysctl_watch::SysctlWatchSkelBuilder;

// The layouts compiled into the objects must be the ones the host encodes.
const _: () = assert!(size_of::<generated_sockops::types::wasmtune_peer_key>() == crate::peer::PEER_KEY_LEN);
const _: () = assert!(size_of::<generated_sockops::types::wasmtune_peer_settings>() == crate::peer::PEER_SETTINGS_LEN);
const _: () = assert!(size_of::<generated_sockops::types::wasmtune_existing_socket>() == existing::EXISTING_SOCKET_LEN);
const _: () = assert!(size_of::<generated_sysctl_watch::types::wasmtune_sysctl_write>() == admin::SYSCTL_WRITE_LEN);

/// The cgroup programs' names in status lines.
pub const SOCKOPS_HOOK: &str = "sockops/peer-settings";
pub const SYSCTL_HOOK: &str = "cgroup/sysctl";
pub const ITER_TCP_HOOK: &str = "iter/tcp";

/// How the cgroup programs run.
#[derive(Debug, Clone)]
pub struct CgroupConfig {
    /// The start-up walk reports a buffer within `limit >> near_limit_shift` of its limit.
    pub near_limit_shift: u32,
    /// How often the ring buffer of sysctl writes is drained.
    pub poll_interval: Duration,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig { near_limit_shift: 2, poll_interval: Duration::from_millis(50) }
    }
}

/// One cgroup program and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHookStatus {
    pub name: &'static str,
    /// `None` when attached; else what failed.
    pub failure: Option<String>,
}

/// Why the cgroup programs could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup-v2 hierarchy to attach to.
    #[error(transparent)]
    Mount {
        #[from]
        source: MountError,
    },
    /// The cgroup-v2 root could not be opened.
    #[error("cannot open the cgroup-v2 root {path}: {source}")]
    OpenRoot { path: std::path::PathBuf, source: std::io::Error },
    /// The thread could not be spawned.
    #[error("cannot spawn the cgroup BPF thread: {source}")]
    Spawn { source: std::io::Error },
    /// The thread ended before reporting (it panicked).
    #[error("the cgroup BPF thread ended before reporting its programs")]
    ThreadEnded,
}

/// What the thread reports once its programs are attached or have failed.
struct Started {
    hooks: Vec<CgroupHookStatus>,
    peers: Option<MapHandle>,
    walk: Option<WalkReport>,
}

/// The running cgroup programs.
pub struct CgroupHooks {
    hooks: Vec<CgroupHookStatus>,
    peers: Option<Arc<PeerMap>>,
    walked_sockets: Option<(usize, usize)>,
    stop: Arc<AtomicBool>,
    /// Written to on stop: the thread sleeps in poll() until a sysctl write
    /// (the ring buffer wakes it) or this.
    wake: std::os::unix::net::UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl CgroupHooks {
    /// Attaches the programs to the cgroup-v2 root on a thread of its own.
    /// `on_admin_write` is called on that thread for every `net.*` sysctl
    /// write by another process; the events of the start-up walk go to `events`.
    pub fn start(
        config: CgroupConfig,
        on_admin_write: impl FnMut(AdminWrite) + Send + 'static,
        events: Sender<Vec<Event>>,
    ) -> Result<CgroupHooks, CgroupError> {
        let root = cgroup2_root()?;
        let cgroup =
            std::fs::File::open(&root).map_err(|source| CgroupError::OpenRoot { path: root.clone(), source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (wake, woken) = std::os::unix::net::UnixStream::pair().map_err(|source| CgroupError::Spawn { source })?;
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("wasmtune-cgroup".into())
            .spawn(move || run(config, cgroup, (stopping, woken), ready_tx, on_admin_write, events))
            .map_err(|source| CgroupError::Spawn { source })?;
        let started = match ready.recv() {
            Ok(started) => started,
            Err(_) => {
                let _ = thread.join();
                return Err(CgroupError::ThreadEnded);
            }
        };
        for hook in &started.hooks {
            match &hook.failure {
                None => tracing::debug!(hook = hook.name, cgroup = %root.display(), "attached"),
                Some(reason) => tracing::warn!(hook = hook.name, %reason, "cgroup BPF program not running"),
            }
        }
        if let Some(walk) = &started.walk {
            tracing::info!(
                sockets = walk.sockets,
                namespaces = walk.namespaces,
                near_limit = walk.events.len(),
                "walked {} established TCP connections in {} namespaces; {} already near a buffer limit",
                walk.sockets,
                walk.namespaces,
                walk.events.len()
            );
        }
        Ok(CgroupHooks {
            hooks: started.hooks,
            peers: started.peers.map(|map| Arc::new(PeerMap::new(map))),
            walked_sockets: started.walk.map(|w| (w.sockets, w.namespaces)),
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Every cgroup program and whether it runs.
    pub fn hooks(&self) -> &[CgroupHookStatus] {
        &self.hooks
    }

    /// The per-destination map, if the sockops program runs.
    pub fn peer_map(&self) -> Option<Arc<PeerMap>> {
        self.peers.clone()
    }

    /// (sockets, namespaces) the start-up walk found, if it ran.
    pub fn walked_sockets(&self) -> Option<(usize, usize)> {
        self.walked_sockets
    }

    /// Detaches everything and joins the thread (also done on drop).
    pub fn stop(self) {}
}

impl Drop for CgroupHooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(error) = std::io::Write::write_all(&mut &self.wake, &[1]) {
            tracing::warn!(%error, "cannot wake the cgroup BPF thread to stop it");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the cgroup BPF thread panicked while stopping");
        }
    }
}

fn failed(name: &'static str, reason: impl std::fmt::Display) -> CgroupHookStatus {
    CgroupHookStatus { name, failure: Some(reason.to_string()) }
}

fn attached(name: &'static str) -> CgroupHookStatus {
    CgroupHookStatus { name, failure: None }
}

/// What the thread has attached so far, and what it found.
#[derive(Default)]
struct Attached {
    hooks: Vec<CgroupHookStatus>,
    links: Vec<Link>,
    peers: Option<MapHandle>,
    walk: Option<WalkReport>,
}

/// The thread: loads, attaches, walks, then drains sysctl writes until told to stop.
fn run(
    config: CgroupConfig,
    cgroup: std::fs::File,
    (stop, woken): (Arc<AtomicBool>, std::os::unix::net::UnixStream),
    ready: Sender<Started>,
    on_admin_write: impl FnMut(AdminWrite) + Send + 'static,
    events: Sender<Vec<Event>>,
) {
    let mut attached = Attached::default();

    let mut sockops_storage = MaybeUninit::<OpenObject>::uninit();
    let sockops = SockopsSkelBuilder::default()
        .open(&mut sockops_storage)
        .and_then(|open| open.load())
        .map_err(|e| format!("load: {e}"));
    match &sockops {
        Ok(skel) => attach_sockops(skel, &cgroup, &config, &events, &mut attached),
        Err(reason) => {
            attached.hooks.push(failed(SOCKOPS_HOOK, reason));
            attached.hooks.push(failed(ITER_TCP_HOOK, reason));
        }
    }

    let mut watch_storage = MaybeUninit::<OpenObject>::uninit();
    let mut fallback_storage = MaybeUninit::<OpenObject>::uninit();
    let own_pid_namespace = own_pid_namespace();
    let watch = match own_pid_namespace {
        None => load_sysctl_watch(&mut watch_storage, None),
        Some(pidns) => load_sysctl_watch(&mut watch_storage, Some(pidns)).or_else(|error| {
            tracing::warn!(%error, "this daemon runs in a pid namespace of its own and this kernel cannot tell \
                its sysctl writes from another process's there (Linux 6.10 can): each change it makes is also \
                taken for an administrator's write");
            load_sysctl_watch(&mut fallback_storage, None)
        }),
    };
    let ring = match &watch {
        Ok(skel) => attach_sysctl_watch(skel, &cgroup, on_admin_write, &mut attached),
        Err(reason) => {
            attached.hooks.push(failed(SYSCTL_HOOK, reason));
            None
        }
    };

    let Attached { hooks, links, peers, walk } = attached;
    if ready.send(Started { hooks, peers, walk }).is_err() {
        return;
    }
    drain_admin_writes(ring.as_ref(), &stop, &woken, config.poll_interval);
    drop(ring);
    drop(links);
}

/// The sockops program (per-destination settings) and the start-up walk of
/// established connections, from one loaded object.
fn attach_sockops(
    skel: &generated_sockops::SockopsSkel<'_>,
    cgroup: &std::fs::File,
    config: &CgroupConfig,
    events: &Sender<Vec<Event>>,
    attached: &mut Attached,
) {
    match skel.progs.sockops_peer_settings.attach_cgroup(cgroup.as_raw_fd()) {
        Ok(link) => {
            attached.links.push(link);
            match MapHandle::try_from(&skel.maps.peers) {
                Ok(handle) => {
                    attached.peers = Some(handle);
                    attached.hooks.push(self::attached(SOCKOPS_HOOK));
                }
                Err(e) => attached.hooks.push(failed(SOCKOPS_HOOK, format!("map handle: {e}"))),
            }
        }
        Err(e) => attached.hooks.push(failed(SOCKOPS_HOOK, format!("attach to the cgroup-v2 root: {e}"))),
    }
    match walk_existing(&skel.progs.iter_tcp_existing) {
        Ok(sockets) => {
            let report = existing::report(&sockets, config.near_limit_shift);
            if !report.events.is_empty() {
                // A full router queue drops the batch; these are hints, not state.
                let _ = events.try_send(report.events.clone());
            }
            attached.walk = Some(report);
            attached.hooks.push(self::attached(ITER_TCP_HOOK));
        }
        Err(reason) => attached.hooks.push(failed(ITER_TCP_HOOK, reason)),
    }
}

/// The cgroup/sysctl program and the ring buffer its writes arrive on,
/// each handed to `on_admin_write`.
/// The device and inode of this process's pid namespace when it is not the
/// initial one (a container), in which the kernel numbers the daemon's
/// thread group differently from the way its programs see it by default.
fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    /// The initial pid namespace's inode (PROC_PID_INIT_INO), fixed by the kernel.
    const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
    let ns = std::fs::metadata("/proc/self/ns/pid").ok()?;
    (ns.ino() != INITIAL_PID_NAMESPACE).then(|| (ns.dev(), ns.ino()))
}

/// Opens and loads the sysctl-write program: the one that tells the
/// daemon's writes by its id in `pidns` when given, else the one that
/// tells them by its id in the initial namespace.
fn load_sysctl_watch(
    storage: &mut MaybeUninit<OpenObject>,
    pidns: Option<(u64, u64)>,
) -> Result<generated_sysctl_watch::SysctlWatchSkel<'_>, String> {
    let mut open = SysctlWatchSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.host_tgid = std::process::id();
        if let Some((dev, ino)) = pidns {
            rodata.host_pidns_dev = dev;
            rodata.host_pidns_ino = ino;
        }
    }
    let (wanted, unwanted) = match pidns {
        Some(_) => (&mut open.progs.sysctl_watch_writes_pidns, &mut open.progs.sysctl_watch_writes),
        None => (&mut open.progs.sysctl_watch_writes, &mut open.progs.sysctl_watch_writes_pidns),
    };
    wanted.set_autoload(true);
    unwanted.set_autoload(false);
    open.load().map_err(|e| format!("load: {e}"))
}

fn attach_sysctl_watch<'skel>(
    skel: &'skel generated_sysctl_watch::SysctlWatchSkel<'_>,
    cgroup: &std::fs::File,
    mut on_admin_write: impl FnMut(AdminWrite) + 'skel,
    attached: &mut Attached,
) -> Option<libbpf_rs::RingBuffer<'skel>> {
    // The one `load_sysctl_watch` loaded.
    let program = if skel.progs.sysctl_watch_writes_pidns.autoload() {
        &skel.progs.sysctl_watch_writes_pidns
    } else {
        &skel.progs.sysctl_watch_writes
    };
    let link = match program.attach_cgroup(cgroup.as_raw_fd()) {
        Ok(link) => link,
        Err(e) => {
            attached.hooks.push(failed(SYSCTL_HOOK, format!("attach to the cgroup-v2 root: {e}")));
            return None;
        }
    };
    attached.links.push(link);
    let mut builder = RingBufferBuilder::new();
    let added = builder
        .add(&skel.maps.sysctl_writes, move |record: &[u8]| {
            if let Some(write) = admin::decode(record) {
                on_admin_write(write);
            }
            0
        })
        .map(|_| ());
    match added.and_then(|()| builder.build()) {
        Ok(ring) => {
            attached.hooks.push(self::attached(SYSCTL_HOOK));
            Some(ring)
        }
        Err(e) => {
            attached.hooks.push(failed(SYSCTL_HOOK, format!("ring buffer: {e}")));
            None
        }
    }
}

/// Hands every administrator write to its callback until told to stop.
/// Sleeps until the kernel has sysctl writes (the program submits with a
/// wake-up: they are rare, and an administrator's write must be seen at
/// once) or the stop; an idle daemon's thread never wakes.
fn drain_admin_writes(
    ring: Option<&libbpf_rs::RingBuffer<'_>>,
    stop: &AtomicBool,
    woken: &std::os::unix::net::UnixStream,
    retry: Duration,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::{AsFd, BorrowedFd};
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the ring buffer's epoll descriptor lives as long as `ring`,
        // which outlives this borrow.
        let epoll = ring.map(|r| unsafe { BorrowedFd::borrow_raw(r.epoll_fd()) });
        let mut fds = vec![PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
        if let Some(epoll) = epoll {
            fds.push(PollFd::new(epoll, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(error) => {
                tracing::debug!(%error, "waiting for sysctl writes failed");
                std::thread::sleep(retry);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some(ring) = ring
            && let Err(error) = ring.consume()
        {
            tracing::debug!(%error, "reading the sysctl-write ring buffer failed");
            std::thread::sleep(retry);
        }
    }
}

/// Runs the `iter/tcp` program once and decodes what it wrote.
fn walk_existing(program: &libbpf_rs::ProgramMut<'_>) -> Result<Vec<ExistingSocket>, String> {
    let link = program.attach().map_err(|e| format!("attach: {e}"))?;
    let mut iter = libbpf_rs::Iter::new(&link).map_err(|e| format!("create iterator: {e}"))?;
    let mut bytes = Vec::new();
    iter.read_to_end(&mut bytes).map_err(|e| format!("read: {e}"))?;
    Ok(existing::decode_all(&bytes))
}

/// `wasmtune support` lines for the cgroup programs: each is attached to the
/// cgroup-v2 root for a moment (the start-up walk included) and detached.
pub fn probe_lines() -> Vec<ProbeLine> {
    let (events, _walk) = crossbeam_channel::bounded(16);
    let feeds = |name: &str| match name {
        SOCKOPS_HOOK => "per-destination settings (wasmtune:policy/tcp)",
        SYSCTL_HOOK => "admin-override (administrator sysctl writes)",
        _ => "tcp-buffer-limit for connections open at start-up",
    };
    match CgroupHooks::start(CgroupConfig::default(), |_| {}, events) {
        Ok(hooks) => hooks
            .hooks()
            .iter()
            .map(|hook| ProbeLine {
                feature: hook.name.to_string(),
                ok: hook.failure.is_none(),
                detail: match &hook.failure {
                    None => format!("feeds {}", feeds(hook.name)),
                    Some(reason) => format!("feeds {} because {reason}", feeds(hook.name)),
                },
            })
            .collect(),
        Err(error) => [SOCKOPS_HOOK, SYSCTL_HOOK, ITER_TCP_HOOK]
            .iter()
            .map(|name| ProbeLine {
                feature: name.to_string(),
                ok: false,
                detail: format!("feeds {} because {error}", feeds(name)),
            })
            .collect(),
    }
}
