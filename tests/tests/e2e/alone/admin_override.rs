//! End to end: an administrator's sysctl write from a shell, in a namespace
//! where the tcp-buffer policy owns `tcp_rmem`, is seen by the cgroup/sysctl
//! program: the daemon logs who wrote it, never changes it there again, and
//! keeps tuning the same tunable in another namespace.

use std::time::Duration;

use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";
/// What the administrator writes.
const ADMIN_RMEM: &str = "4096 131072 150000";
const TRANSFER_SECONDS: u32 = 4;
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn an_administrators_write_is_respected_and_tuning_continues_elsewhere() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let overridden = BufferBed::new("admin-a", Side::Receiver, BAD_RMEM).expect("first bed");
    let elsewhere = BufferBed::new("admin-b", Side::Receiver, BAD_RMEM).expect("second bed");
    let daemon = Daemon::builder()
        .netns(overridden.tuned_netns())
        .netns(elsewhere.tuned_netns())
        .start_ready()
        .expect("daemon ready");

    // The policy takes tcp_rmem over in the first namespace.
    overridden.transfer(TRANSFER_SECONDS).expect("transfer in the first bed");
    daemon.wait_for("a change in the first bed", EVENT_TIMEOUT, overridden.matcher("sysctl-change")).expect("tuned");

    // The administrator writes it from a shell.
    let ns = overridden.tuned_netns().name().to_string();
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sysctl", "-q", "-w", &format!("net.ipv4.tcp_rmem={ADMIN_RMEM}")])
        .status()
        .expect("run sysctl");
    assert!(status.success(), "sysctl -w failed");
    let line = daemon
        .wait_for("the admin-override line", EVENT_TIMEOUT, |l| {
            l.is_event("admin-override") && l.field_is("netns", &ns) && l.field("pid").is_some()
        })
        .expect("the write is noticed");
    println!("{}", line.raw);
    assert!(line.field_is("tunable", "net.ipv4.tcp_rmem"), "{}", line.raw);
    assert!(line.field_is("comm", "sysctl"), "{}", line.raw);
    let pid: u32 = line.field("pid").and_then(|p| p.parse().ok()).expect("pid field");
    assert!(pid > 1, "{}", line.raw);
    let changes_before = overridden.lines_about(&daemon.lines(), "sysctl-change").len();

    // Tuning goes on: more traffic in both beds.
    overridden.transfer(TRANSFER_SECONDS).expect("transfer in the first bed again");
    elsewhere.transfer(TRANSFER_SECONDS).expect("transfer in the second bed");
    daemon.wait_for("a change in the second bed", EVENT_TIMEOUT, elsewhere.matcher("sysctl-change")).expect("tuned");
    overridden.transfer(2).expect("a last transfer in the first bed");

    assert_eq!(
        overridden.current().expect("read"),
        harness::normalize(ADMIN_RMEM),
        "the administrator's value was overwritten"
    );
    let changes_after = overridden.lines_about(&daemon.lines(), "sysctl-change").len();
    assert_eq!(changes_after, changes_before, "the host changed tcp_rmem in {ns} after the administrator did");
}
