//! The host's hold on the runtime process: starts it confined
//! ([`crate::sandbox`]) as its own user, hands it one channel per policy,
//! and when it dies, is killed for hanging or sends garbage, starts another
//! after a back-off that doubles with each death in a minute (0.1 s, 0.2 s,
//! ..., at most 30 s). Policies find the new process when their next call
//! fails, and are rebuilt in it with the state the host kept.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::runtime::cache_broker::CacheBroker;
use crate::runtime::channel::{ChannelBroken, PolicyChannel};
use crate::runtime::output::relay_output;
use crate::sandbox::{self, CONTROL_FD, Identity};

/// Wait before the first restart; doubled for each further death within
/// [`DEATH_WINDOW`], up to [`MAX_BACKOFF`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const DEATH_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot choose the runtime process's user: {0}")]
    Identity(#[from] sandbox::SandboxError),
    #[error("cannot prepare the runtime process's cache directory {}: {source}", dir.display())]
    Cache { dir: PathBuf, source: std::io::Error },
    #[error("cannot start the runtime process: {0}")]
    Spawn(std::io::Error),
    #[error("the runtime process is stopping")]
    Stopping,
    #[error("no runtime process within {0} ms")]
    Unavailable(u64),
    #[error("the runtime process's channel: {0}")]
    Channel(#[from] ChannelBroken),
}

/// How the runtime process is started.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The wasmtune binary to run as the runtime; `None`: this one.
    pub program: Option<PathBuf>,
    /// Compiled components (see [`CacheBroker`]); `None`: compile every
    /// time.
    pub cache_dir: Option<PathBuf>,
}

/// The running process, as the host sees it.
struct Live {
    pid: u32,
    control: UnixStream,
    /// Counts processes started: which one a channel leads to.
    number: u64,
    /// Asked to be killed: no new channel goes to it (one sent to a dying
    /// process may not close until its descriptor is collected).
    doomed: bool,
}

#[derive(Default)]
struct Slot {
    live: Option<Live>,
    started: u64,
    /// A kill asked for (the process's number, why), carried out by the
    /// monitor thread: policy threads hold no capability, and signalling
    /// another user's process takes `CAP_KILL`.
    kill: Option<(u64, String)>,
}

pub struct RuntimeProcess {
    identity: Identity,
    options: RuntimeOptions,
    cache: Option<Arc<CacheBroker>>,
    slot: Mutex<Slot>,
    changed: Condvar,
    stopping: AtomicBool,
    restarts: AtomicU64,
    monitor: Mutex<Option<JoinHandle<()>>>,
    /// Written to wake the monitor thread (a kill asked for, or stop).
    wake: OwnedFd,
    woken: OwnedFd,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RuntimeProcess {
    /// Starts the runtime process and the thread that keeps one running;
    /// returns once the first one runs.
    pub fn start(options: RuntimeOptions) -> Result<Arc<RuntimeProcess>, RuntimeError> {
        let identity = Identity::choose()?;
        let cache = match &options.cache_dir {
            Some(dir) => Some(Arc::new(
                CacheBroker::open(dir).map_err(|source| RuntimeError::Cache { dir: dir.clone(), source })?,
            )),
            None => None,
        };
        let (woken, wake) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| RuntimeError::Spawn(e.into()))?;
        let runtime = Arc::new(RuntimeProcess {
            identity,
            options,
            cache,
            slot: Mutex::default(),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            monitor: Mutex::new(None),
            wake,
            woken,
        });
        // The process dies with the thread that starts it (its parent-death
        // signal), so one long-lived thread starts every one of them.
        let (first_tx, first_rx) = crossbeam_channel::bounded(1);
        let keeper = runtime.clone();
        let monitor = std::thread::Builder::new()
            .name("wasmtune-runtime".into())
            .spawn(move || keeper.keep_running(first_tx))
            .map_err(RuntimeError::Spawn)?;
        *lock(&runtime.monitor) = Some(monitor);
        match first_rx.recv() {
            Ok(Ok(())) => Ok(runtime),
            Ok(Err(error)) => {
                runtime.stop();
                Err(error)
            }
            Err(_) => Err(RuntimeError::Spawn(std::io::Error::other("the runtime thread ended"))),
        }
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The current process's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.slot).live.as_ref().map(|live| live.pid)
    }

    /// The number of the process that runs and is not being killed (what
    /// [`PolicyChannel::process`] holds for a channel to it).
    pub fn current_number(&self) -> Option<u64> {
        lock(&self.slot).live.as_ref().filter(|live| !live.doomed).map(|live| live.number)
    }

    /// The number of the process started last, running or not.
    pub fn last_number(&self) -> u64 {
        lock(&self.slot).started
    }

    /// Processes started after the first.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A new channel for one policy, waiting up to `wait` for a process
    /// (one may be restarting).
    pub fn open_channel(&self, wait: Duration) -> Result<PolicyChannel, RuntimeError> {
        let deadline = Instant::now() + wait;
        let mut slot = lock(&self.slot);
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Err(RuntimeError::Stopping);
            }
            if let Some(live) = slot.live.as_ref().filter(|live| !live.doomed) {
                let (host_end, runtime_end) = UnixStream::pair().map_err(RuntimeError::Spawn)?;
                let fds = [runtime_end.as_raw_fd()];
                let sent = sendmsg::<()>(
                    live.control.as_raw_fd(),
                    &[std::io::IoSlice::new(b"c")],
                    &[ControlMessage::ScmRights(&fds)],
                    // Never blocks under the lock: a process that stopped reading is killed.
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    None,
                );
                match sent {
                    Ok(_) => {
                        let number = live.number;
                        drop(slot);
                        return PolicyChannel::open(host_end, number, self.cache.clone()).map_err(|broken| {
                            self.kill(number, &format!("a new channel: {broken}"));
                            broken.into()
                        });
                    }
                    Err(errno) => {
                        let number = live.number;
                        drop(slot);
                        self.kill(number, &format!("its control socket refused a channel: {errno}"));
                        slot = lock(&self.slot);
                        continue;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Unavailable(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)));
            }
            slot = self.changed.wait_timeout(slot, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Kills process `number` (if it is still the current one) for `why`;
    /// another is started after the back-off.
    pub fn kill(&self, number: u64, why: &str) {
        let mut slot = lock(&self.slot);
        let Some(live) = slot.live.as_mut().filter(|live| live.number == number && !live.doomed) else { return };
        live.doomed = true;
        slot.kill = Some((number, why.to_string()));
        drop(slot);
        self.wake_monitor();
    }

    fn wake_monitor(&self) {
        // A full pipe already wakes it.
        let _ = nix::unistd::write(&self.wake, b"k");
    }

    /// Stops the process for good (the daemon is stopping).
    pub fn stop(&self) {
        {
            // Set and announced under the lock: a thread between its look
            // at `stopping` and its wait would miss the wake-up and sleep
            // out its whole back-off.
            let slot = lock(&self.slot);
            self.stopping.store(true, Ordering::Relaxed);
            if let Some(live) = slot.live.as_ref() {
                // Its control socket closing ends it; the monitor makes sure.
                let _ = nix::sys::socket::shutdown(live.control.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
            self.changed.notify_all();
        }
        self.wake_monitor();
        if let Some(monitor) = lock(&self.monitor).take() {
            let _ = monitor.join();
        }
    }

    /// The monitor thread: starts a process, waits for its end, and starts
    /// the next after the back-off, until the daemon stops.
    fn keep_running(&self, first: crossbeam_channel::Sender<Result<(), RuntimeError>>) {
        let mut first = Some(first);
        let mut deaths: Vec<Instant> = Vec::new();
        while !self.stopping.load(Ordering::Relaxed) {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(error) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(error));
                        return;
                    }
                    tracing::error!(event = "runtime-start-failed", %error, "cannot start the runtime process: {error}");
                    deaths.push(Instant::now());
                    self.back_off(&mut deaths);
                    continue;
                }
            };
            if let Some(first) = first.take() {
                let _ = first.send(Ok(()));
            }
            let status = self.wait_or_kill(&mut child);
            let pid = child.id();
            let number = lock(&self.slot).live.take().map(|live| live.number);
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            if let (Some(cache), Some(number)) = (&self.cache, number) {
                cache.forget_process(number);
            }
            let status = match status {
                Ok(status) => status.to_string(),
                Err(error) => error.to_string(),
            };
            deaths.push(Instant::now());
            tracing::warn!(event = "runtime-exited", pid, %status,
                "the runtime process {pid} ended ({status}); a new one is started and every policy rebuilt in it");
            self.back_off(&mut deaths);
        }
        lock(&self.slot).live = None;
        self.changed.notify_all();
    }

    /// Waits for the process to end, killing it when asked to (or when the
    /// daemon stops): the process's pidfd and the wake-up pipe, polled
    /// together, so nothing is polled on a timer.
    fn wait_or_kill(&self, child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
        let pid = child.id();
        let pidfd = pidfd_open(pid);
        loop {
            let mut fds = [
                libc::pollfd { fd: self.woken.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pidfd.as_ref().map_or(-1, AsRawFd::as_raw_fd), events: libc::POLLIN, revents: 0 },
            ];
            // Without a pidfd (a kernel before 5.3) the process is looked
            // at every 100 ms instead.
            let (count, timeout) = if pidfd.is_some() { (2, -1) } else { (1, 100) };
            // SAFETY: `fds` outlives the call; `count` is within it.
            unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
            let mut drained = [0u8; 64];
            while nix::unistd::read(&self.woken, &mut drained).is_ok_and(|n| n > 0) {}
            let asked = lock(&self.slot).kill.take();
            let current = lock(&self.slot).live.as_ref().map(|live| live.number);
            let why = match asked {
                Some((number, why)) if Some(number) == current => Some(why),
                _ if self.stopping.load(Ordering::Relaxed) => Some("the daemon is stopping".to_string()),
                _ => None,
            };
            if let Some(why) = why {
                if !self.stopping.load(Ordering::Relaxed) {
                    tracing::warn!(event = "runtime-killed", pid, reason = %why,
                        "killing the runtime process {pid}: {why}; policies are rebuilt in a new one");
                }
                let _ = child.kill();
                // Its whole process group: it cannot fork, but were a way
                // found, no child of it outlives it. The group keeps its
                // number while its leader is not reaped, so this reaches
                // no other.
                if let Ok(group) = i32::try_from(pid) {
                    // SAFETY: a signal to a process group, plain integers.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
            }
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
        }
    }

    fn back_off(&self, deaths: &mut Vec<Instant>) {
        let now = Instant::now();
        deaths.retain(|t| now.duration_since(*t) < DEATH_WINDOW);
        let doublings = u32::try_from(deaths.len().saturating_sub(1)).unwrap_or(u32::MAX).min(16);
        let wait = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(doublings)).min(MAX_BACKOFF);
        let until = now + wait;
        let mut slot = lock(&self.slot);
        while !self.stopping.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            slot = self.changed.wait_timeout(slot, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn spawn(&self) -> Result<Child, RuntimeError> {
        let (control, runtime_end) = UnixStream::pair().map_err(RuntimeError::Spawn)?;
        let mut command = confined_command(self.options.program.as_deref(), self.identity, &runtime_end, &[]);
        // Its log lines come to the host, which says which are the
        // runtime's: it never writes to the daemon's own output.
        command.arg("runtime").arg("--log-format").arg("json").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(RuntimeError::Spawn)?;
        drop(runtime_end);
        if let Some(output) = child.stderr.take() {
            relay_output(output, child.id());
        }
        let mut slot = lock(&self.slot);
        slot.started += 1;
        if slot.started > 1 {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            event = "runtime-started",
            pid = child.id(),
            uid = self.identity.uid,
            "runtime process {} started as uid {}",
            child.id(),
            self.identity.uid
        );
        slot.live = Some(Live { pid: child.id(), control, number: slot.started, doomed: false });
        drop(slot);
        self.changed.notify_all();
        Ok(child)
    }
}

/// `program` (default: this binary), to run as the runtime's user,
/// confined: the control socket at [`CONTROL_FD`], each of `extra`
/// (descriptor, number) where asked. The caller adds the subcommand.
pub fn confined_command(
    program: Option<&Path>,
    identity: Identity,
    control: &impl AsRawFd,
    extra: &[(i32, i32)],
) -> Command {
    let mut fds = vec![(control.as_raw_fd(), CONTROL_FD)];
    fds.extend_from_slice(extra);
    let mut command = Command::new(program.unwrap_or(Path::new("/proc/self/exe")));
    // What `ps` shows: the binary is run through /proc/self/exe.
    command.arg0("wasmtune-runtime");
    // Dropping root, std also drops every supplementary group.
    // Its own process group: a terminal's Ctrl-C is for the daemon, which
    // stops it in order.
    command.env_clear().stdin(Stdio::null()).uid(identity.uid).gid(identity.gid).process_group(0);
    // SAFETY: `apply_before_exec` makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(move || sandbox::apply_before_exec(&fds));
    }
    command
}

/// A descriptor for process `pid` that polls readable when it ends;
/// `None` on a kernel without `pidfd_open` (before 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags, returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just made `fd` for this process; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
