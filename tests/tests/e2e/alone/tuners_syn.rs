//! End to end, the tcp-buffer policy's SYN-backlog scenarios: a listener
//! whose accept queue overflows under real load (connections complete)
//! gets a larger `tcp_max_syn_backlog` in its namespace; a SYN flood
//! (handshakes that never complete) gets SYN cookies instead, and no bigger
//! backlog. Each change is checked in the kernel and in its change line.

use crate::tuning;

use std::time::Duration;

use serde_json::json;
use tuning::{change_of, io, start};
use wasmtune_tests::harness::{self, HarnessError, Netns, Requirement};

/// A listener on 127.0.0.1 with an accept queue of `backlog` that never
/// accepts; its port. Closed when the namespace thread's fd is dropped.
fn stuck_listener(backlog: i32) -> Result<(std::os::fd::OwnedFd, u16), HarnessError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr is a fully initialised sockaddr_in of the length passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(io("socket", std::io::Error::last_os_error()));
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&raw const addr).cast(), len) != 0 || libc::listen(fd, backlog) != 0 {
            return Err(io("listen", std::io::Error::last_os_error()));
        }
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut bound_len = len;
        if libc::getsockname(fd, (&raw mut bound).cast(), &mut bound_len) != 0 {
            return Err(io("getsockname", std::io::Error::last_os_error()));
        }
        Ok((owned, u16::from_be(bound.sin_port)))
    }
}

/// `count` non-blocking connection attempts to `port` on 127.0.0.1 from the
/// calling thread's namespace, kept open until dropped (complete, half-open
/// or dropped: the test does not wait for them).
fn connection_attempts(port: u16, count: usize) -> Result<Vec<std::os::fd::OwnedFd>, HarnessError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    (0..count)
        .map(|_| {
            // SAFETY: a fresh socket owned at once; connect(2) with a fully
            // initialised sockaddr_in of the length passed. A non-blocking
            // connect returns EINPROGRESS, which is what we want.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if fd < 0 {
                    return Err(io("socket", std::io::Error::last_os_error()));
                }
                let owned = OwnedFd::from_raw_fd(fd);
                libc::connect(fd, (&raw const addr).cast(), len);
                Ok(owned)
            }
        })
        .collect()
}

/// Bursts of 16 connection attempts at `port` in `netns`, 3 s apart, until
/// `wanted` matches a daemon line (the daemon compares the namespace's
/// counters once a second, so the burst before its first look is only its
/// baseline). The attempts stay open until the returned vector drops.
fn bursts_until(
    daemon: &harness::Daemon,
    netns: &Netns,
    port: u16,
    what: &str,
    wanted: impl Fn(&harness::LogLine) -> bool,
) -> (harness::LogLine, Vec<std::os::fd::OwnedFd>) {
    let mut kept = Vec::new();
    for _ in 0..8 {
        kept.extend(netns.run_in("connection attempts", move || connection_attempts(port, 16)).expect("attempts"));
        if let Ok(line) = daemon.wait_for(what, Duration::from_secs(3), &wanted) {
            return (line, kept);
        }
    }
    panic!("no {what} after 8 bursts\n{}", daemon.dump());
}

/// Drops every SYN-ACK sent from `port` in `netns`: the handshakes of a SYN
/// flood, never completed. The namespace (and the rule) go with the test.
fn drop_syn_acks(netns: &Netns, port: u16) {
    let ruleset = format!(
        "table inet wtsynflood {{\n chain output {{\n  type filter hook output priority 0;\n  tcp sport {port} tcp flags & (syn | ack) == syn | ack drop\n }}\n}}\n"
    );
    let rules = std::env::temp_dir().join(format!("wt-synflood-{}.nft", std::process::id()));
    std::fs::write(&rules, ruleset).expect("write nft rules");
    netns.run("nft", &["-f", rules.to_str().unwrap_or_default()]).expect("nft -f");
    let _ = std::fs::remove_file(&rules);
}

#[test]
fn tcp_buffer_raises_the_syn_backlog_for_a_busy_listener() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let netns = Netns::new("syn").expect("netns");
    let tunable = "net.ipv4.tcp_max_syn_backlog";
    let before = harness::sysctl_fields_in(&netns, tunable).expect("read backlog")[0];
    let mut daemon = start(&[&netns], false);
    // A listener whose accept queue (backlog 2) fills with completed
    // connections it never accepts: further SYNs overflow while connections
    // are established, which is load, not a flood.
    let (listener, port) = netns.run_in("listener", || stuck_listener(2)).expect("listener");
    let (line, attempts) = bursts_until(&daemon, &netns, port, "syn backlog change", change_of("tcp-buffer", tunable));
    std::thread::sleep(Duration::from_millis(300));
    let after = harness::sysctl_fields_in(&netns, tunable).expect("read backlog")[0];
    drop((attempts, listener));
    assert_eq!(
        line.field("old"),
        Some(before.to_string()),
        "the first change starts at the value before: {}",
        line.raw
    );
    assert_eq!(line.field("new"), Some((before + before / 4).to_string()), "one 25 % step: {}", line.raw);
    assert!(after > before && after <= 65536, "{tunable} {before} -> {after}");
    assert_eq!(line.field("netns").as_deref(), Some(netns.name()), "per-netns tunable: {}", line.raw);
    assert_eq!(line.field("scenario").as_deref(), Some("need to increase SYN backlog"), "{}", line.raw);
    let reason = line.field("reason").unwrap_or_default();
    assert!(reason.contains("real load") && reason.contains(&format!("port {port}")), "{}", line.raw);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record("tuners::syn_backlog", json!({ "before": before, "after": after })).expect("record figures");
}

/// A SYN flood: the listener's SYN-ACKs never reach the clients (nftables),
/// so its SYN queue overflows with nothing established. The policy turns
/// SYN cookies on (they were off) and leaves `tcp_max_syn_backlog` alone.
#[test]
fn tcp_buffer_answers_a_syn_flood_with_cookies_not_a_bigger_backlog() {
    if harness::skip_without(&Requirement::DAEMON_E2E) || harness::skip_without(&[Requirement::Tool("nft")]) {
        return;
    }
    let _serial = harness::measurement_lock();
    let netns = Netns::new("synflood").expect("netns");
    let backlog = "net.ipv4.tcp_max_syn_backlog";
    let cookies = "net.ipv4.tcp_syncookies";
    harness::set_sysctl_in(&netns, cookies, "0").expect("cookies off");
    let backlog_before = harness::sysctl_fields_in(&netns, backlog).expect("read backlog")[0];
    let mut daemon = start(&[&netns], false);
    let (listener, port) = netns.run_in("listener", || stuck_listener(2)).expect("listener");
    drop_syn_acks(&netns, port);
    let (line, mut attempts) =
        bursts_until(&daemon, &netns, port, "syncookies change", change_of("tcp-buffer", cookies));
    assert_eq!((line.field("old").as_deref(), line.field("new").as_deref()), (Some("0"), Some("1")), "{}", line.raw);
    assert_eq!(line.field("netns").as_deref(), Some(netns.name()), "{}", line.raw);
    assert_eq!(line.field("scenario").as_deref(), Some("SYN flood"), "{}", line.raw);
    let reason = line.field("reason").unwrap_or_default();
    assert!(reason.contains("no connection completing") && reason.contains(&format!("port {port}")), "{}", line.raw);
    // The flood goes on, now met with cookies: still no bigger backlog.
    for _ in 0..3 {
        attempts.extend(netns.run_in("connection attempts", move || connection_attempts(port, 16)).expect("attempts"));
        std::thread::sleep(Duration::from_millis(1200));
    }
    let cookies_after = harness::sysctl_fields_in(&netns, cookies).expect("read cookies")[0];
    let backlog_after = harness::sysctl_fields_in(&netns, backlog).expect("read backlog")[0];
    drop((attempts, listener));
    assert_eq!(cookies_after, 1);
    assert!(
        backlog_after <= backlog_before,
        "a flood must not grow {backlog}: {backlog_before} -> {backlog_after}\n{}",
        daemon.dump()
    );
    assert!(
        daemon.wait_for("no backlog change", Duration::ZERO, change_of("tcp-buffer", backlog)).is_err(),
        "{backlog} changed during a flood\n{}",
        daemon.dump()
    );
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record(
        "tuners::syn_flood",
        json!({ "backlog_before": backlog_before, "backlog_after": backlog_after, "syncookies": [0, cookies_after] }),
    )
    .expect("record figures");
}
