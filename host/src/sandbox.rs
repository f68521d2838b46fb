//! The confinement of the runtime process, the process that compiles and
//! runs policies: its own unprivileged user, no capabilities, no new
//! privileges, resource limits, and a system-call allow-list.
//!
//! The host sets what must be set before the process runs any code of its
//! own ([`Identity`], [`apply_before_exec`]: the user, `no_new_privs`, the
//! rlimits, death with the host); the process itself refuses to go on
//! unless that took, then installs the allow-list ([`confine_self`])
//! before it starts any thread or reads a byte from the host.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// The system user the packages create for the runtime process.
pub const RUNTIME_USER: &str = "wasmtune";
/// Where a uid is chosen when there is no such user: 0x77000000 and the
/// 65536 after it, above every range a distribution, systemd's dynamic
/// users (61184–65519) or its container ranges (524288–1879048191) hand
/// out, and below the 2^31 boundary some tools still treat as signed.
pub const FALLBACK_UIDS: std::ops::RangeInclusive<u32> = 1_996_488_704..=1_996_554_239;
/// Address space of the runtime process: compilation, code, and every
/// policy's memory reservation (64 MiB each, see the engine).
pub const ADDRESS_SPACE_BYTES: u64 = 16 << 30;
/// Descriptors: one socket per policy, the cache directory, and room.
pub const OPEN_FILES: u64 = 256;
/// CPU seconds the process may use in its life; past them it is ended and
/// the host starts a new one (policies are rebuilt, nothing is lost), so a
/// runaway compilation or thread costs at most this much.
pub const CPU_SECONDS: u64 = 3600;
/// Tasks (threads) of the runtime's user: one per policy and the engine's
/// own, with room; a guest that found a way to start threads in a loop
/// stops here, not at the machine's limit.
pub const TASKS: u64 = 1024;
/// How much more readily the kernel's OOM killer picks the runtime than
/// the daemon, which shares its memory limit and holds the journal.
pub const OOM_SCORE_ADJ: &[u8] = b"500";
/// The descriptor number the process finds its control socket at.
pub const CONTROL_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no unused uid in {}..={} for the runtime process", FALLBACK_UIDS.start(), FALLBACK_UIDS.end())]
    NoUid,
    #[error("the runtime process runs as root; it must not run policies")]
    Root,
    #[error("the runtime process still holds capabilities {0}")]
    Capabilities(String),
    #[error("no_new_privs is not set on the runtime process")]
    NewPrivileges,
    #[error("cannot read the process's own status: {0}")]
    Status(std::io::Error),
    #[error("cannot build the system-call filter: {0}")]
    Filter(String),
    #[error("cannot install the system-call filter: {0}")]
    Install(String),
    #[error("the runtime process still belongs to supplementary groups {0}")]
    Groups(String),
    #[error("the {RUNTIME_USER} user has group 0; the runtime process must not run with root's group")]
    RootGroup,
}

/// Who the runtime process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Whether it is the packages' `wasmtune` user (else a chosen uid).
    pub named: bool,
}

impl Identity {
    /// The `wasmtune` user when it exists; otherwise the first uid of
    /// [`FALLBACK_UIDS`] that no user in the password database has and no
    /// running process uses, with the same number as its gid.
    pub fn choose() -> Result<Identity, SandboxError> {
        if let Ok(Some(user)) = nix::unistd::User::from_name(RUNTIME_USER)
            && user.uid.as_raw() != 0
        {
            if user.gid.as_raw() == 0 {
                return Err(SandboxError::RootGroup);
            }
            return Ok(Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw(), named: true });
        }
        let busy = uids_in_use();
        FALLBACK_UIDS
            .clone()
            .find(|uid| {
                !busy.contains(uid)
                    && matches!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid)), Ok(None))
                    && matches!(nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*uid)), Ok(None))
            })
            .map(|uid| Identity { uid, gid: uid, named: false })
            .ok_or(SandboxError::NoUid)
    }
}

/// Real uids of the running processes.
fn uids_in_use() -> std::collections::HashSet<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Default::default() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| e.metadata().ok().map(|m| m.uid()))
        .collect()
}

/// Runs in the forked child after it took the runtime's uid and gid, before
/// `execve`: only async-signal-safe calls. Puts each descriptor of `fds`
/// (from, to) at its number, marks every other one close-on-exec, and sets
/// `no_new_privs`, the rlimits, the OOM score and death with the thread
/// that started it.
///
/// # Safety
/// Must be called only between `fork` and `execve`.
pub unsafe fn apply_before_exec(fds: &[(i32, i32)]) -> std::io::Result<()> {
    // SAFETY: only descriptor numbers and plain integers cross these calls.
    unsafe { place_descriptors(fds)? };
    // SAFETY: prctl and setrlimit take plain integers and a pointer to a
    // local; open and write a constant path and bytes. All are
    // async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for (resource, soft, hard) in [
            (libc::RLIMIT_AS, ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES),
            (libc::RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES),
            (libc::RLIMIT_CPU, CPU_SECONDS, CPU_SECONDS + 60),
            (libc::RLIMIT_CORE, 0, 0),
            (libc::RLIMIT_NPROC, TASKS, TASKS),
        ] {
            let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // Raising one's own score needs no privilege; a kernel without the
        // file leaves the score as it is.
        let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, OOM_SCORE_ADJ.as_ptr().cast(), OOM_SCORE_ADJ.len());
            libc::close(fd);
        }
    }
    Ok(())
}

/// Each (from, to) of `fds` at `to`, without close-on-exec, and every other
/// descriptor above 2 close-on-exec: whatever a library of the host opened
/// without it (a BPF map, a sysctl file) does not cross the exec. Nothing
/// is closed now, so the exec-error pipe of std's spawn still works.
///
/// # Safety
/// Only between `fork` and `execve`.
unsafe fn place_descriptors(fds: &[(i32, i32)]) -> std::io::Result<()> {
    let fail = || Err(std::io::Error::last_os_error());
    // Parked first, above every target: with (5, 3) and (3, 4), moving 5
    // to 3 before 3 is copied would lose it.
    let mut parked = [-1i32; 8];
    if fds.len() > parked.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let above_targets = fds.iter().map(|&(_, to)| to.saturating_add(1)).max().unwrap_or(3);
    for (slot, &(from, _)) in parked.iter_mut().zip(fds) {
        // SAFETY: a descriptor number in, a new one out.
        *slot = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, above_targets) };
        if *slot < 0 {
            return fail();
        }
    }
    for (&temporary, &(_, to)) in parked.iter().zip(fds) {
        // SAFETY: descriptor numbers; dup2 clears close-on-exec on `to`.
        if unsafe { libc::dup2(temporary, to) } < 0 {
            return fail();
        }
    }
    let mut targets = [i32::MAX; 8];
    for (slot, &(_, to)) in targets.iter_mut().zip(fds) {
        *slot = to;
    }
    targets[..fds.len()].sort_unstable();
    // Every gap between the targets, and everything after the last one
    // (the parked copies included).
    let mut next = 3;
    for &to in targets.iter().take(fds.len()).chain(std::iter::once(&i32::MAX)) {
        if to > next {
            // SAFETY: plain integers.
            unsafe { mark_close_on_exec(next, to.saturating_sub(1))? };
        }
        next = next.max(to.saturating_add(1));
    }
    Ok(())
}

/// Marks descriptors `first..=last` close-on-exec: `close_range` where the
/// kernel has it (5.11), else one by one up to the descriptor limit.
///
/// # Safety
/// Only between `fork` and `execve`.
unsafe fn mark_close_on_exec(first: i32, last: i32) -> std::io::Result<()> {
    // SAFETY: plain integers.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, libc::CLOSE_RANGE_CLOEXEC) };
    if done == 0 {
        return Ok(());
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = i32::try_from(limit.rlim_cur).unwrap_or(i32::MAX).min(last.saturating_add(1));
    for fd in first..end {
        // SAFETY: plain integers; a descriptor that is not open fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// What the process's own status says of its confinement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Confinement {
    pub uid: String,
    pub cap_eff: String,
    pub no_new_privs: String,
    pub seccomp: String,
}

impl Confinement {
    /// Read from `/proc/self/status`, or another process's.
    pub fn of_status(status: &str) -> Confinement {
        let field = |name: &str| status_field(status, name);
        Confinement {
            uid: field("Uid"),
            cap_eff: field("CapEff"),
            no_new_privs: field("NoNewPrivs"),
            seccomp: field("Seccomp"),
        }
    }

    pub fn of_pid(pid: u32) -> std::io::Result<Confinement> {
        Ok(Confinement::of_status(&std::fs::read_to_string(format!("/proc/{pid}/status"))?))
    }
}

/// One field of a `/proc/PID/status` text, its words joined by one space.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// In the runtime process, first thing: refuses to go on unless the host's
/// settings took (not root, no capability, `no_new_privs`), then installs
/// the allow-list on this, its only thread.
pub fn confine_self() -> Result<(), SandboxError> {
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return Err(SandboxError::Root);
    }
    let status = std::fs::read_to_string("/proc/self/status").map_err(SandboxError::Status)?;
    let confinement = Confinement::of_status(&status);
    if !confinement.cap_eff.trim_start_matches('0').is_empty() {
        return Err(SandboxError::Capabilities(confinement.cap_eff));
    }
    let permitted = status_field(&status, "CapPrm");
    if !permitted.trim_start_matches('0').is_empty() {
        return Err(SandboxError::Capabilities(permitted));
    }
    if confinement.no_new_privs != "1" {
        return Err(SandboxError::NewPrivileges);
    }
    let groups = status_field(&status, "Groups");
    let own_gid = nix::unistd::getgid().as_raw().to_string();
    if groups.split(' ').any(|group| !group.is_empty() && group != own_gid) {
        return Err(SandboxError::Groups(groups));
    }
    let allowed = allow_list()?;
    let clone3 = clone3_unavailable()?;
    seccompiler::apply_filter(&clone3).map_err(|e| SandboxError::Install(e.to_string()))?;
    seccompiler::apply_filter(&allowed).map_err(|e| SandboxError::Install(e.to_string()))
}

/// What the runtime may call. Anything else fails with `EPERM`: among it
/// `bpf`, `setns`, `unshare`, `ptrace`, `socket`, `connect`, `execve`,
/// `mount`, and every call that names a path to open, create, rename or
/// remove (the host opens the cache files it needs and hands them over).
/// `clone` only makes threads: never a process, never a namespace.
/// What stays: `newfstatat`/`statx`, which glibc's and std's `fstat` use
/// and a filter cannot tell from a path lookup, so the process can learn
/// that a path it can reach exists, and its size and owner; nothing more.
fn allow_list() -> Result<BpfProgram, SandboxError> {
    let plain: &[i64] = &[
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_close,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_fcntl,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mremap,
        libc::SYS_brk,
        libc::SYS_membarrier,
        libc::SYS_memfd_create,
        libc::SYS_ftruncate,
        libc::SYS_fallocate,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_get_robust_list,
        libc::SYS_rseq,
        // Refused by the filter before this one (see `clone3_unavailable`).
        libc::SYS_clone3,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_getrandom,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_ppoll,
        libc::SYS_uname,
        libc::SYS_getrusage,
        libc::SYS_sysinfo,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_restart_syscall,
        libc::SYS_prlimit64,
        // The event loop wasmtime-wasi starts for its own sync wrappers:
        // local objects, nothing outside the process.
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_eventfd2,
        libc::SYS_pipe2,
    ];
    #[cfg(target_arch = "x86_64")]
    let arch_only: &[i64] = &[libc::SYS_poll, libc::SYS_epoll_wait];
    #[cfg(not(target_arch = "x86_64"))]
    let arch_only: &[i64] = &[];
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        plain.iter().chain(arch_only).map(|&nr| (nr, Vec::new())).collect();
    let arg = |index: u8, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(|e| SandboxError::Filter(e.to_string()))
    };
    let rule = |conditions: Vec<SeccompCondition>| {
        SeccompRule::new(conditions).map_err(|e| SandboxError::Filter(e.to_string()))
    };
    // A thread shares everything and is counted against the tasks limit;
    // a process (no CLONE_THREAD) or a namespace is refused.
    let thread_only = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq((libc::CLONE_THREAD | NAMESPACE_FLAGS) as u64),
        libc::CLONE_THREAD as u64,
    )
    .map_err(|e| SandboxError::Filter(e.to_string()))?;
    rules.insert(libc::SYS_clone, vec![rule(vec![thread_only])?]);
    // tokio's signal driver, in that event loop, makes a socket pair: only
    // a pair of connected local sockets, never one that can reach anything.
    rules.insert(libc::SYS_socketpair, vec![rule(vec![arg(0, libc::AF_UNIX as u64)?])?]);
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![arg(0, libc::PR_SET_NAME as u64)?])?, rule(vec![arg(0, libc::PR_GET_NAME as u64)?])?],
    );
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Filter(e.to_string()))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| SandboxError::Filter(e.to_string()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| SandboxError::Filter(e.to_string()))
}

/// Every `clone` flag that makes a namespace.
const NAMESPACE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET;

/// `clone3` takes its flags in memory, where a filter cannot look: it fails
/// with `ENOSYS`, and glibc then makes its threads with `clone`, which the
/// allow-list checks. Installed before the allow-list (which refuses
/// installing another filter), which lets `clone3` through to it: the
/// kernel takes the strictest answer of all filters.
fn clone3_unavailable() -> Result<BpfProgram, SandboxError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Filter(e.to_string()))?;
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)
        .map_err(|e| SandboxError::Filter(e.to_string()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| SandboxError::Filter(e.to_string()))
}

/// What the self-test found, tried inside the runtime's confinement.
#[derive(Debug, serde::Serialize)]
pub struct SelfTest {
    pub confinement: Confinement,
    /// Each attempt, and the error it met (`None`: it succeeded).
    pub attempts: BTreeMap<&'static str, Option<String>>,
    /// Starting a thread, which must still work (`None`: it did).
    pub thread: Option<String>,
}

/// `wasmtune runtime --self-test`: confined exactly as the runtime process
/// is, tries what it must not be able to do. `netns_fd`: a network
/// namespace descriptor the host passed, for `setns`.
pub fn self_test(netns_fd: Option<i32>) -> Result<SelfTest, SandboxError> {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    // Opened before the filter, which refuses opening it after; read after,
    // so that it shows the filter.
    let mut own_status = std::fs::File::open("/proc/self/status").map_err(SandboxError::Status)?;
    confine_self()?;
    let mut attempts = BTreeMap::new();
    let outcome = |result: std::io::Result<()>| result.err().map(|e| e.to_string());
    attempts.insert(
        "open /proc/sys/net/ipv4/tcp_rmem for writing",
        outcome(std::fs::OpenOptions::new().write(true).open("/proc/sys/net/ipv4/tcp_rmem").map(drop)),
    );
    // SAFETY: each call gets plain integers or a pointer to a local that
    // outlives it; none keeps a pointer.
    let bpf = unsafe {
        let mut attr = [0u8; 128];
        libc::syscall(libc::SYS_bpf, 5 /* BPF_PROG_LOAD */, attr.as_mut_ptr(), attr.len())
    };
    attempts.insert("bpf(BPF_PROG_LOAD)", outcome(errno_of(bpf)));
    let setns = unsafe { libc::setns(netns_fd.unwrap_or(-1), libc::CLONE_NEWNET) };
    attempts.insert("setns(CLONE_NEWNET)", outcome(errno_of(setns.into())));
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    attempts.insert("socket(AF_INET)", outcome(errno_of(socket.into())));
    let ptrace = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
    attempts.insert("ptrace(PTRACE_TRACEME)", outcome(errno_of(ptrace)));
    let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) };
    attempts.insert("unshare(CLONE_NEWUSER|CLONE_NEWNET)", outcome(errno_of(unshare.into())));
    attempts.insert("fork", outcome(clone_with(libc::SIGCHLD as u64)));
    attempts.insert("clone(CLONE_NEWUSER)", outcome(clone_with(libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64)));
    attempts.insert("clone3", outcome(clone3_process()));
    let at = |dirfd: i32, path: &std::ffi::CStr| {
        // SAFETY: a constant path; the descriptor, if opened, is closed.
        let fd = unsafe { libc::openat(dirfd, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let result = errno_of(fd.into());
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        outcome(result)
    };
    attempts.insert("openat(AT_FDCWD, /etc/passwd)", at(libc::AT_FDCWD, c"/etc/passwd"));
    attempts.insert("openat(an open descriptor, /etc/passwd)", at(own_status.as_raw_fd(), c"/etc/passwd"));
    let unlink = unsafe { libc::unlinkat(libc::AT_FDCWD, c"/tmp/wasmtune-self-test".as_ptr(), 0) };
    attempts.insert("unlinkat(/tmp/...)", outcome(errno_of(unlink.into())));
    let thread = std::thread::Builder::new()
        .spawn(|| 7)
        .map_err(|e| e.to_string())
        .and_then(|handle| handle.join().map_err(|_| "the thread panicked".to_string()).map(drop));
    let mut status = String::new();
    own_status.rewind().and_then(|()| own_status.read_to_string(&mut status)).map_err(SandboxError::Status)?;
    Ok(SelfTest { confinement: Confinement::of_status(&status), attempts, thread: thread.err() })
}

/// The raw `clone` system call with `flags` and no new stack: were it let
/// through, the copy would run on, so it leaves at once.
fn clone_with(flags: u64) -> std::io::Result<()> {
    // SAFETY: with no stack given, the child (if any) shares nothing it
    // could corrupt before `_exit`; the parent only reads the result.
    let result = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if result == 0 {
        // SAFETY: the child leaves without running anything of the parent's.
        unsafe { libc::_exit(0) };
    }
    errno_of(result)
}

/// `clone3` for a new process: must fail (with `ENOSYS`).
fn clone3_process() -> std::io::Result<()> {
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls (CLONE_ARGS_SIZE_VER0 = 64 bytes).
    let mut args = [0u64; 8];
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: a pointer to a local of the size given.
    let result = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args)) };
    if result == 0 {
        // SAFETY: as in `clone_with`.
        unsafe { libc::_exit(0) };
    }
    errno_of(result)
}

fn errno_of(result: i64) -> std::io::Result<()> {
    if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    /// A file at descriptor `at`, without close-on-exec.
    fn file_at(dir: &std::path::Path, name: &str, at: i32) -> std::path::PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).expect("create");
        // SAFETY: plain descriptor numbers; `at` is unused in this test
        // process (each test runs in its own).
        assert!(unsafe { libc::dup2(file.as_raw_fd(), at) } == at, "dup2");
        path
    }

    /// A swap (each source another's target), one source twice, a
    /// descriptor already at its number, and a gap between targets holding
    /// a descriptor that must not cross the exec.
    #[test]
    fn descriptors_are_placed_even_when_they_overlap_and_nothing_else_crosses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = file_at(dir.path(), "first", 40);
        let second = file_at(dir.path(), "second", 41);
        file_at(dir.path(), "stray", 42);
        let kept = file_at(dir.path(), "kept", 44);
        // SAFETY: sets close-on-exec on a descriptor of this test's own.
        unsafe { libc::fcntl(44, libc::F_SETFD, libc::FD_CLOEXEC) };
        let fds = [(41, 40), (40, 41), (40, 43), (44, 44)];
        let mut command = std::process::Command::new("/bin/sh");
        command.args([
            "-c",
            "readlink /proc/self/fd/40 /proc/self/fd/41 /proc/self/fd/43 /proc/self/fd/44; \
             [ -e /proc/self/fd/42 ] && echo LEAK; true",
        ]);
        // SAFETY: `place_descriptors` makes only async-signal-safe calls.
        unsafe { command.pre_exec(move || place_descriptors(&fds)) };
        let out = command.output().expect("run sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        let expected: Vec<String> =
            [&second, &first, &first, &kept].iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(lines, expected, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
}
