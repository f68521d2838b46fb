//! Policies run in a separate runtime process: its own uid, no
//! capabilities, no new privileges, a system-call allow-list. Code run in
//! that same confinement cannot write a sysctl, load BPF, enter a
//! namespace, start a process or open a path, yet starts threads; and when the process is killed under traffic, the host starts
//! another, rebuilds every policy in it and tuning goes on.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmtune::runtime::supervisor::confined_command;
use wasmtune::sandbox::{Confinement, Identity};
use wasmtune_tests::harness::{self, BufferBed, Daemon, READY_TIMEOUT, Requirement, Side};

use crate::lifecycle;

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";

fn status(socket: &str) -> serde_json::Value {
    let status = harness::cli_json(&["status", "--json", "--socket", socket]);
    status["result"].clone()
}

fn runtime_pid(socket: &str) -> u32 {
    let result = status(socket);
    result["runtime"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no runtime pid: {result}"))
}

fn assert_confined(confinement: &Confinement, context: &str) {
    assert!(!confinement.uid.split(' ').any(|id| id == "0"), "{context}: runs as root: Uid {}", confinement.uid);
    assert!(confinement.cap_eff.chars().all(|c| c == '0'), "{context}: CapEff {}", confinement.cap_eff);
    assert_eq!(confinement.no_new_privs, "1", "{context}: NoNewPrivs");
    assert_eq!(confinement.seccomp, "2", "{context}: Seccomp (2 = filter)");
}

#[test]
fn the_runtime_process_is_confined_and_inside_it_sysctl_writes_bpf_and_setns_fail() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let (_sock_dir, socket) = lifecycle::socket_in("runtime-confined");
    let sock = socket.to_string_lossy().into_owned();
    let mut daemon = Daemon::builder().control_socket(&socket).start_ready().expect("daemon ready");
    let pid = runtime_pid(&sock);
    let confinement = Confinement::of_pid(pid).expect("read the runtime's status");
    println!("runtime process {pid}: {confinement:?}");
    assert_confined(&confinement, "the runtime process");
    let daemon_pid = daemon.pid();
    assert_ne!(pid, daemon_pid, "policies run in the daemon's own process");

    // The same confinement, the same way, as the same user, running the
    // self-test instead.
    let runtime = &status(&sock)["runtime"];
    let id = |key: &str| {
        runtime[key].as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or_else(|| panic!("{key}: {runtime}"))
    };
    let identity = Identity { uid: id("uid"), gid: id("gid"), named: false };
    let (control, _keep) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let netns = std::fs::File::open("/proc/self/ns/net").expect("this netns");
    let bin = harness::wasmtune_bin().expect("the wasmtune binary");
    let mut command = confined_command(Some(&bin), identity, &control, &[(netns.as_raw_fd(), 5)]);
    command.args(["runtime", "--self-test", "--netns-fd", "5"]).stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn the self-test");
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read the self-test");
    assert!(child.wait().expect("self-test exits").success(), "self-test failed: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    let inside = Confinement {
        uid: report["confinement"]["uid"].as_str().unwrap_or_default().to_string(),
        cap_eff: report["confinement"]["cap_eff"].as_str().unwrap_or_default().to_string(),
        no_new_privs: report["confinement"]["no_new_privs"].as_str().unwrap_or_default().to_string(),
        seccomp: report["confinement"]["seccomp"].as_str().unwrap_or_default().to_string(),
    };
    assert_confined(&inside, "the self-test");
    let attempts = report["attempts"].as_object().unwrap_or_else(|| panic!("no attempts: {report}"));
    for what in [
        "open /proc/sys/net/ipv4/tcp_rmem for writing",
        "bpf(BPF_PROG_LOAD)",
        "setns(CLONE_NEWNET)",
        "socket(AF_INET)",
        "ptrace(PTRACE_TRACEME)",
        "unshare(CLONE_NEWUSER|CLONE_NEWNET)",
        "fork",
        "clone(CLONE_NEWUSER)",
        "clone3",
        "openat(AT_FDCWD, /etc/passwd)",
        "openat(an open descriptor, /etc/passwd)",
        "unlinkat(/tmp/...)",
    ] {
        let error = attempts.get(what).unwrap_or_else(|| panic!("{what} not tried: {report}"));
        assert!(error.is_string(), "{what} succeeded inside the confinement: {report}");
    }
    // glibc starts threads with clone3 and falls back to clone only on ENOSYS.
    let clone3 = attempts["clone3"].as_str().unwrap_or_default();
    assert!(clone3.contains("os error 38"), "clone3 must fail with ENOSYS, not {clone3}: {report}");
    assert!(report["thread"].is_null(), "a thread no longer starts inside the confinement: {report}");
    assert!(daemon.terminate().expect("daemon exits").success());
    // The cache the runtime wrote through the descriptors it was handed:
    // root's, private, one entry per built-in policy.
    let compiled = daemon.state_dir().join("compiled");
    let entries: Vec<std::fs::Metadata> = std::fs::read_dir(&compiled)
        .unwrap_or_else(|e| panic!("{}: {e}", compiled.display()))
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .collect();
    assert!(entries.len() >= 7, "{} compiled entries in {}", entries.len(), compiled.display());
    for meta in &entries {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "a cache entry not root's and private");
    }
    harness::record("runtime_process::confinement", json!({ "runtime": confinement, "self_test": report }))
        .expect("record figures");
}

/// What the test does to the runtime process.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// `kill -9`.
    Dies,
    /// `kill -STOP`: it stops answering.
    Hangs,
    /// Garbage written into its channels, as a compromised process would.
    SendsGarbage,
}

/// The runtime process's ends of its policy channels: its sockets but the
/// control socket.
fn channel_sockets(pid: u32) -> Vec<i32> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .filter_map(|entry| {
            let fd: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (fd != wasmtune::sandbox::CONTROL_FD && target.to_string_lossy().starts_with("socket:")).then_some(fd)
        })
        .collect()
}

/// Whether this kernel lets a process take another's descriptor
/// (`pidfd_getfd`, Linux 5.6), which the garbage test needs.
fn can_take_descriptors() -> bool {
    // SAFETY: plain integers; -1 is no descriptor, so nothing is taken.
    let result = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    !(result < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// Writes a frame longer than the host accepts, then bytes that decode to
/// nothing, into every channel of process `pid` (through descriptors taken
/// from it with `pidfd_getfd`).
fn write_garbage(pid: u32) -> usize {
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain syscalls; each descriptor returned is new and owned here.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(pidfd >= 0, "pidfd_open {pid}: {}", std::io::Error::last_os_error());
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut written = 0;
    for fd in channel_sockets(pid) {
        let stolen = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        assert!(stolen >= 0, "pidfd_getfd {pid}/{fd}: {}", std::io::Error::last_os_error());
        let mut socket = std::os::unix::net::UnixStream::from(unsafe { OwnedFd::from_raw_fd(stolen as i32) });
        if socket.write_all(&[0xff, 0xff, 0xff, 0x7f, 0xde, 0xad, 0xbe, 0xef]).is_ok() {
            written += 1;
        }
    }
    written
}

/// Makes the runtime process misbehave under a bulk transfer; the host must
/// replace it, rebuild tcp-buffer in the new one and go on tuning.
fn replaced_under_traffic(label: &str, misbehaviour: Misbehaviour) {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    if matches!(misbehaviour, Misbehaviour::SendsGarbage) && !can_take_descriptors() {
        println!(
            "skipped: this kernel has no pidfd_getfd (Linux 5.6), which writing into the runtime's channels needs"
        );
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new(label, Side::Receiver, BAD_RMEM).expect("build the test bed");
    let (_sock_dir, socket) = lifecycle::socket_in(label);
    let sock = socket.to_string_lossy().into_owned();
    let daemon = Daemon::builder().netns(bed.tuned_netns()).control_socket(&socket).start().expect("spawn");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    let first = runtime_pid(&sock);

    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| bed.transfer(10));
        let is_change = bed.matcher("sysctl-change");
        daemon.wait_for("a first change", Duration::from_secs(8), &is_change).expect("tcp-buffer tunes");
        let changes_before = bed.lines_about(&daemon.lines(), "sysctl-change").len();

        let pid = nix::unistd::Pid::from_raw(first as i32);
        let misbehaved_at = Instant::now();
        match misbehaviour {
            Misbehaviour::Dies => nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9"),
            Misbehaviour::Hangs => nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("kill -STOP"),
            Misbehaviour::SendsGarbage => assert!(write_garbage(first) > 0, "no channel written"),
        }
        let first_pid = first.to_string();
        if !matches!(misbehaviour, Misbehaviour::Dies) {
            let killed = daemon
                .wait_for("the host killing the runtime process", Duration::from_secs(10), |line| {
                    line.event() == Some("runtime-killed") && line.field("pid").as_deref() == Some(first_pid.as_str())
                })
                .expect("the host kills a runtime process that hangs or sends garbage");
            let reason = killed.field("reason").unwrap_or_default();
            let expected = match misbehaviour {
                Misbehaviour::Hangs => "no answer within",
                _ => "over the",
            };
            assert!(reason.contains(expected), "killed for {reason:?}, not {expected:?}: {}", killed.raw);
        }
        daemon
            .wait_for("the old runtime process's end", Duration::from_secs(10), |line| {
                line.event() == Some("runtime-exited") && line.field("pid").as_deref() == Some(first_pid.as_str())
            })
            .expect("the host sees the runtime process end");
        daemon
            .wait_for("a new runtime process", Duration::from_secs(10), |line| {
                line.event() == Some("runtime-started") && line.field("pid").as_deref() != Some(first_pid.as_str())
            })
            .expect("a new runtime process starts");
        let replaced = misbehaved_at.elapsed();
        let rebuilt = daemon
            .wait_for("tcp-buffer rebuilt", Duration::from_secs(15), |line| {
                line.event() == Some("policy-rebuilt") && line.field("policy").as_deref() == Some("tcp-buffer")
            })
            .expect("tcp-buffer is rebuilt in a new runtime process");
        let recovered = misbehaved_at.elapsed();
        let second = runtime_pid(&sock);
        assert_ne!(second, first, "the runtime process was not replaced");
        assert_confined(&Confinement::of_pid(second).expect("status"), "the new runtime process");

        let more = daemon.wait_for("a change after the runtime came back", Duration::from_secs(15), |line| {
            is_change(line) && line.at > rebuilt.at
        });
        let throughput = traffic.join().expect("traffic thread").expect("bulk transfer");
        more.expect("tuning goes on in the new runtime process");
        let changes = bed.lines_about(&daemon.lines(), "sysctl-change");
        let last_new = changes.last().and_then(|l| l.field("new")).unwrap_or_default();
        assert_eq!(harness::normalize(&last_new), bed.current().expect("read"), "the kernel holds the last change");

        let result = status(&sock);
        let tcp = result["policies"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "tcp-buffer"))
            .cloned()
            .unwrap_or_else(|| panic!("no tcp-buffer: {result}"));
        assert_eq!(tcp["faults"], 0, "a lost runtime counted as the policy's fault: {tcp}");
        assert!(result["runtime"]["restarts"].as_u64().unwrap_or(0) >= 1, "no restart counted: {result}");
        println!(
            "{misbehaviour:?}: runtime {first} replaced by {second} after {} ms, tcp-buffer running again after {} ms; \
             tcp-buffer events handled {}, failed {}, lost {}; changes {changes_before} before, {} in all; {:.2} Gbit/s",
            replaced.as_millis(),
            recovered.as_millis(),
            tcp["events-handled"],
            tcp["events-failed"],
            tcp["events-lost"],
            changes.len(),
            throughput.gbit_per_s()
        );
        harness::record(
            &format!("runtime_process::{label}"),
            json!({
                "misbehaviour": format!("{misbehaviour:?}"),
                "replaced_ms": replaced.as_millis() as u64,
                "recovered_ms": recovered.as_millis() as u64,
                "events_handled": tcp["events-handled"],
                "events_failed": tcp["events-failed"],
                "events_lost": tcp["events-lost"],
                "changes_before": changes_before,
                "changes_in_all": changes.len(),
                "throughput": throughput.to_json(),
            }),
        )
        .expect("record figures");
    });
}

#[test]
fn a_killed_runtime_process_is_replaced_and_tuning_goes_on_under_traffic() {
    replaced_under_traffic("runtime-kill", Misbehaviour::Dies);
}

#[test]
fn a_runtime_process_that_stops_answering_is_killed_and_replaced() {
    replaced_under_traffic("runtime-hang", Misbehaviour::Hangs);
}

#[test]
fn a_runtime_process_that_sends_garbage_is_killed_and_replaced() {
    replaced_under_traffic("runtime-garbage", Misbehaviour::SendsGarbage);
}
