//! End to end, the tcp-buffer policy's SYN-backlog scenario: a listener whose
//! accept queue overflows under real load gets a larger
//! `tcp_max_syn_backlog` in its namespace, explained in the change line.

mod tuning;

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

#[test]
#[ignore = "flaky here: the syn-overflow signal fires only when a handshake's last ACK meets a full accept queue, a race that 8 rounds of 32 connections hit about one run in three"]
fn tcp_buffer_raises_the_syn_backlog_for_a_busy_listener() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let netns = Netns::new("syn").expect("netns");
    let tunable = "net.ipv4.tcp_max_syn_backlog";
    let before = harness::sysctl_fields_in(&netns, tunable).expect("read backlog")[0];
    let mut daemon = start(&[&netns], false);
    // A listener whose two-slot accept queue fills with completed
    // connections it never accepts: further SYNs overflow while connections
    // are established, which is load, not a flood.
    // Rounds until the daemon reacts: the kernel reports overflows at a
    // limited rate, so one round may fall between reports.
    let mut found = None;
    for _ in 0..8 {
        netns
            .run_in("connect to a full listener", || {
                let (_listener, port) = stuck_listener(2)?;
                let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let clients: Vec<_> = (0..32)
                    .map(|_| {
                        std::thread::spawn(move || {
                            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(1500))
                        })
                    })
                    .collect();
                for client in clients {
                    let _ = client.join();
                }
                Ok(())
            })
            .expect("connections");
        if let Ok(line) =
            daemon.wait_for("syn backlog change", Duration::from_secs(3), change_of("tcp-buffer", tunable))
        {
            found = Some(line);
            break;
        }
    }
    let line = found.unwrap_or_else(|| panic!("no {tunable} change\n{}", daemon.dump()));
    std::thread::sleep(Duration::from_millis(300));
    let after = harness::sysctl_fields_in(&netns, tunable).expect("read backlog")[0];
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
    assert!(line.field("reason").unwrap_or_default().contains("real load"), "{}", line.raw);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record("tuners::syn_backlog", json!({ "before": before, "after": after })).expect("record figures");
}
