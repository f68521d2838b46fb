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
/// Where a uid is chosen when there is no such user: the range systemd
/// keeps for dynamic users, which no package or login uses.
pub const FALLBACK_UIDS: std::ops::RangeInclusive<u32> = 61184..=65519;
/// Address space of the runtime process: compilation, code, and every
/// policy's memory reservation (64 MiB each, see the engine).
pub const ADDRESS_SPACE_BYTES: u64 = 16 << 30;
/// Descriptors: one socket per policy, the cache directory, and room.
pub const OPEN_FILES: u64 = 256;
/// CPU seconds the process may use in its life; past them it is ended and
/// the host starts a new one (policies are rebuilt, nothing is lost), so a
/// runaway compilation or thread costs at most this much.
pub const CPU_SECONDS: u64 = 3600;
/// The descriptor numbers the process finds its sockets and cache at.
pub const CONTROL_FD: i32 = 3;
pub const CACHE_FD: i32 = 4;

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
            return Ok(Identity { uid: user.uid.as_raw(), gid: user.gid.as_raw(), named: true });
        }
        let busy = uids_in_use();
        FALLBACK_UIDS
            .clone()
            .find(|uid| {
                !busy.contains(uid) && matches!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid)), Ok(None))
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
/// `execve`: only async-signal-safe calls. Sets the descriptors the process
/// expects, `no_new_privs`, the rlimits, and death with the thread that
/// started it.
///
/// # Safety
/// Must be called only between `fork` and `execve`.
pub unsafe fn apply_before_exec(fds: &[(i32, i32)]) -> std::io::Result<()> {
    for &(from, to) in fds {
        // SAFETY: plain descriptor numbers; dup2 clears close-on-exec.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // Nothing else of the host's crosses the exec, whatever a library
    // opened without close-on-exec (a BPF map, a sysctl file).
    let first_other = fds.iter().map(|&(_, to)| to + 1).max().unwrap_or(3).max(3);
    // SAFETY: plain integers; marks descriptors, closes nothing now (so
    // the exec-error pipe of std's spawn still works).
    if unsafe { libc::syscall(libc::SYS_close_range, first_other as u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl and setrlimit take plain integers and a pointer to a
    // local; both are async-signal-safe.
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
        ] {
            let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
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
    let program = allow_list()?;
    seccompiler::apply_filter(&program).map_err(|e| SandboxError::Install(e.to_string()))
}

/// What the runtime may call. Anything else fails with `EPERM`: among it
/// `bpf`, `setns`, `unshare`, `ptrace`, `socket`, `connect`, `execve`,
/// `mount`, `open` of a path, and every `openat` not relative to the cache
/// directory's descriptor.
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
        libc::SYS_clone,
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
        libc::SYS_unlinkat,
        libc::SYS_renameat2,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fchmod,
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
    let arch_only: &[i64] = &[libc::SYS_poll, libc::SYS_renameat, libc::SYS_epoll_wait];
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
    rules.insert(libc::SYS_openat, vec![rule(vec![arg(0, CACHE_FD as u64)?])?]);
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

/// What the self-test found, tried inside the runtime's confinement.
#[derive(Debug, serde::Serialize)]
pub struct SelfTest {
    pub confinement: Confinement,
    /// Each attempt, and the error it met (`None`: it succeeded).
    pub attempts: BTreeMap<&'static str, Option<String>>,
}

/// `wasmtune runtime --self-test`: confined exactly as the runtime process
/// is, tries what it must not be able to do. `netns_fd`: a network
/// namespace descriptor the host passed, for `setns`.
pub fn self_test(netns_fd: Option<i32>) -> Result<SelfTest, SandboxError> {
    use std::io::{Read, Seek};
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
    let mut status = String::new();
    own_status.rewind().and_then(|()| own_status.read_to_string(&mut status)).map_err(SandboxError::Status)?;
    Ok(SelfTest { confinement: Confinement::of_status(&status), attempts })
}

fn errno_of(result: i64) -> std::io::Result<()> {
    if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}
