//! End to end, bpftune's rule for administrators: a write by any other
//! process to a tunable a loaded policy may write makes it the
//! administrator's in that namespace, even before the host has changed it
//! there. It is logged with who wrote what, shown by `status`, kept across a
//! daemon restart, and handed back with `wasmtune override clear`, after
//! which tuning resumes.

use crate::lifecycle;

use std::time::Duration;

use lifecycle::{result, socket_in, start_daemon};
use serde_json::{Value as Json, json};
use wasmtune::control::Request;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";
/// What the administrator writes before any change: still low.
const ADMIN_RMEM: &str = "4096 65536 100000";
const TCP_RMEM: &str = "net.ipv4.tcp_rmem";
const TRANSFER_SECONDS: u32 = 4;
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

fn overrides_of(socket: &std::path::Path) -> Vec<Json> {
    let status = result(socket, &Request::Status);
    status["overrides"].as_array().cloned().unwrap_or_default()
}

fn changes_in(daemon: &Daemon, bed: &BufferBed) -> usize {
    bed.lines_about(&daemon.lines(), "sysctl-change").len()
}

#[test]
fn an_administrators_write_before_the_first_change_holds_across_a_restart_until_handed_back() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("adm-first", Side::Receiver, BAD_RMEM).expect("test bed");
    let ns = bed.tuned_netns().name().to_string();
    let dir = harness::scratch_dir("adm-first-policies").expect("policy dir");
    let state = harness::private_dir("adm-first-state").expect("state dir");
    let (_sock_dir, socket) = socket_in("adm-first-sock");
    let builder = || Daemon::builder().netns(bed.tuned_netns()).state_dir(state.path());
    let mut daemon = start_daemon(builder(), dir.path(), &socket, &[]);

    // The administrator writes before the host has changed anything there.
    let written = bed
        .tuned_netns()
        .command("sysctl")
        .args(["-q", "-w", &format!("{TCP_RMEM}={ADMIN_RMEM}")])
        .status()
        .expect("run sysctl");
    assert!(written.success(), "sysctl -w failed");
    let line = daemon
        .wait_for("the admin-override line", EVENT_TIMEOUT, |l| {
            l.is_event("admin-override") && l.field_is("netns", &ns) && l.field_is("tunable", TCP_RMEM)
        })
        .unwrap_or_else(|e| panic!("the write is not noticed: {e}\n{}", daemon.dump()));
    println!("{}", line.raw);
    assert!(line.raw.contains("\"level\":\"WARN\""), "an override is a warning: {}", line.raw);
    assert!(line.field_is("comm", "sysctl"), "{}", line.raw);
    assert!(line.field("pid").and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p > 1), "{}", line.raw);
    assert_eq!(line.field("found").map(|f| harness::normalize(&f)), Some(harness::normalize(ADMIN_RMEM)));
    assert!(line.field("time_ms").is_some(), "when: {}", line.raw);

    // A bulk transfer that would otherwise raise it: nothing changes.
    bed.transfer(TRANSFER_SECONDS).expect("transfer");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(bed.current().expect("read"), harness::normalize(ADMIN_RMEM), "overwritten\n{}", daemon.dump());
    assert_eq!(changes_in(&daemon, &bed), 0, "the host changed tcp_rmem in {ns}\n{}", daemon.dump());
    let listed = overrides_of(&socket);
    let entry = listed
        .iter()
        .find(|o| o["netns"] == ns.as_str() && o["tunable"] == TCP_RMEM)
        .unwrap_or_else(|| panic!("status lacks the override: {listed:?}"));
    assert_eq!(entry["comm"], "sysctl", "{entry}");
    assert_eq!(entry["source"], "write", "{entry}");

    // A restart keeps it: the state directory remembers.
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    let mut daemon = start_daemon(builder(), dir.path(), &socket, &[]);
    assert!(
        overrides_of(&socket).iter().any(|o| o["netns"] == ns.as_str() && o["tunable"] == TCP_RMEM),
        "the override did not survive the restart"
    );
    bed.transfer(TRANSFER_SECONDS).expect("transfer after the restart");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(bed.current().expect("read"), harness::normalize(ADMIN_RMEM), "overwritten after the restart");
    assert_eq!(changes_in(&daemon, &bed), 0, "changed after the restart\n{}", daemon.dump());

    // Handed back: tuning resumes.
    let (ok, stdout, stderr) =
        harness::cli(&["override", "clear", TCP_RMEM, "--netns", &ns, "--socket", &socket.to_string_lossy()]);
    assert!(ok, "override clear failed: {stderr}");
    assert!(stdout.contains("handed back"), "{stdout}");
    daemon
        .wait_for("the override-cleared line", EVENT_TIMEOUT, |l| {
            l.is_event("override-cleared") && l.field_is("netns", &ns)
        })
        .unwrap_or_else(|e| panic!("no override-cleared line: {e}\n{}", daemon.dump()));
    assert!(overrides_of(&socket).is_empty(), "status still lists an override");
    bed.transfer(TRANSFER_SECONDS).expect("transfer after the hand-back");
    let change = daemon
        .wait_for("a change after the hand-back", EVENT_TIMEOUT, bed.matcher("sysctl-change"))
        .unwrap_or_else(|e| panic!("tuning did not resume: {e}\n{}", daemon.dump()));
    assert_eq!(change.field("old").map(|o| harness::normalize(&o)), Some(harness::normalize(ADMIN_RMEM)));
    let after = bed.current().expect("read");
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record(
        "admin_rules::write_before_first_change",
        json!({ "admin_value": ADMIN_RMEM, "kept_across_restart": true, "after_hand_back": after }),
    )
    .expect("record figures");
}

/// A copy of the attacker's helper that the unprivileged user can run
/// wherever the checkout lives.
fn attacker_binary() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("wasmtune-fd-pass").tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.path().join("sysctl-fd-pass");
    std::fs::copy(env!("CARGO_BIN_EXE_sysctl-fd-pass"), &copy).expect("copy the helper");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
    (dir, copy)
}

/// A user without privileges opens `tcp_rmem` in a user and network
/// namespace of their own, passes the descriptor to a process of theirs in
/// the host's namespace and writes `4096 4096 4096` through it. The write is the
/// user's own namespace's: the host's value stays, and the host namespace's
/// tunable is not marked overridden (nor anything put back there).
#[test]
fn an_unprivileged_write_through_a_passed_descriptor_is_not_taken_for_the_hosts() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    // The attack needs user namespaces for unprivileged users; a kernel or
    // distribution that forbids them is not open to it.
    let userns = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "unshare", "-Urn", "true"])
        .output();
    if let Some(why) = match &userns {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Some(e.to_string()),
    } {
        let reason = format!("an unprivileged user cannot make a user namespace here: {why}");
        harness::skip_part("admin_rules::passed_descriptor", "descriptor passed from a user's own namespace", &reason);
        return;
    }
    let guard = harness::GlobalSysctlGuard::record(TCP_RMEM).expect("guard tcp_rmem");
    let before = guard.original().to_string();
    let daemon = Daemon::builder().netns_named("init").start_ready().expect("daemon ready");

    let (_dir, attacker) = attacker_binary();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&attacker)
        .args([TCP_RMEM, "4096 4096 4096"])
        .output()
        .expect("run the helper as nobody");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the write through the descriptor failed: {}", String::from_utf8_lossy(&out.stderr));
    println!("{said}");
    // Long enough for the write to be drained (100 ms) and handled.
    std::thread::sleep(Duration::from_secs(2));

    // Other TCP traffic of this machine may make tcp-buffer raise the
    // host's limit meanwhile: that is a policy's change, logged; the
    // attacker's value must never arrive.
    let now = harness::sysctl_init(TCP_RMEM).expect("read");
    assert_ne!(harness::normalize(&now), "4096 4096 4096", "the attacker's value reached the host");
    if now != before {
        let explained = daemon.events("sysctl-change").iter().any(|l| {
            l.field_is("netns", "init")
                && l.field_is("tunable", TCP_RMEM)
                && l.field("new").is_some_and(|new| harness::normalize(&new) == harness::normalize(&now))
        });
        assert!(explained, "the host's tcp_rmem changed from {before} to {now} without a policy's change line");
    }
    let taken: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| {
            (l.is_event("admin-override") && l.field_is("netns", "init")) || l.is_event("admin-override-restored")
        })
        .map(|l| l.raw)
        .collect();
    assert!(taken.is_empty(), "a write to another namespace was taken for the host's: {taken:?}");
    harness::record(
        "admin_rules::passed_descriptor",
        json!({ "attacker": "nobody", "wrote": "4096 4096 4096", "host_value_kept": before }),
    )
    .expect("record figures");
}
