//! Per-destination TCP settings through the sockops map, on the real kernel:
//! a congestion choice for one peer applies to new connections to that peer
//! only (`ss -ti` in the namespace shows it), and the rest keep the
//! namespace's default.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use wasmtune::actuate::{Actuator, ActuatorConfig, PeerChange};
use wasmtune::bpf::cgroup::{CgroupConfig, CgroupHooks, PeerPrefix, PeerSettings};
use wasmtune::netns::NetnsRegistry;
use wasmtune::wit::IpAddr;
use wasmtune_tests::harness::{self, Netns, Requirement};

/// Congestion control of the connection to `peer:port` in `ss -tin` output.
fn congestion_towards(ss: &str, peer: &str, port: u16) -> Option<String> {
    let needle = format!("{peer}:{port}");
    let mut lines = ss.lines();
    while let Some(line) = lines.next() {
        // Local and peer are the first two address:port columns.
        if line.split_whitespace().filter(|field| field.contains(':')).nth(1) == Some(needle.as_str()) {
            let details = lines.next()?;
            return ["reno", "cubic", "bbr"]
                .iter()
                .find(|ca| details.split_whitespace().any(|w| w == **ca))
                .map(|s| s.to_string());
        }
    }
    None
}

#[test]
fn a_congestion_choice_for_one_peer_applies_to_that_peer_only() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let ns = Netns::new("per-dest").expect("netns");
    for addr in ["10.77.0.1/32", "10.77.0.2/32"] {
        ns.run("ip", &["addr", "add", addr, "dev", "lo"]).expect("address on lo");
    }
    let default = harness::sysctl_in(&ns, "net.ipv4.tcp_congestion_control").expect("default congestion");
    let default = default.trim().to_string();
    assert_ne!(default, "reno", "the namespace default must differ from the per-peer choice");

    let registry = Arc::new(NetnsRegistry::discover(&[]).expect("namespaces"));
    let cookie = registry.cookie_of(ns.name()).expect("the registry knows the test namespace");
    let state = harness::scratch_dir("per-dest").expect("state dir");
    let (actuator, thread) = Actuator::spawn(ActuatorConfig {
        dry_run: false,
        state_dir: state.path().to_path_buf(),
        registry: registry.clone(),
    })
    .expect("actuator");
    let (events, _walk) = crossbeam_channel::bounded(16);
    let hooks = CgroupHooks::start(CgroupConfig::default(), |_| {}, events).expect("cgroup programs");
    assert!(hooks.hooks().iter().all(|h| h.failure.is_none()), "{:?}", hooks.hooks());
    actuator.attach_peer_map(hooks.peer_map().expect("sockops runs"));

    let prefix = PeerPrefix::new(&IpAddr::V4((10, 77, 0, 2)), 32).expect("prefix");
    actuator.submit_peer(PeerChange {
        policy: "test".into(),
        netns: cookie,
        prefix,
        settings: Some(PeerSettings { congestion: Some("reno".into()), no_delay: Some(true), ..Default::default() }),
        scenario: "per-destination test".into(),
        reason: "reno for 10.77.0.2 only".into(),
    });
    // A round trip through the actuator thread: every change before it is applied.
    let _ = actuator.summary();
    assert!(hooks.peer_map().expect("map").contains(cookie, &prefix));

    let (ss, port) = ns
        .run_in("connect to both peers", move || {
            let listener = TcpListener::bind("0.0.0.0:0").expect("listen");
            let port = listener.local_addr().expect("addr").port();
            let to_one = TcpStream::connect(("10.77.0.1", port)).expect("connect .1");
            let to_two = TcpStream::connect(("10.77.0.2", port)).expect("connect .2");
            let accepted: Vec<TcpStream> = (0..2).map(|_| listener.accept().expect("accept").0).collect();
            let ss = std::process::Command::new("ss").args(["-tin", "state", "established"]).output().expect("ss");
            drop((to_one, to_two, accepted));
            Ok((String::from_utf8_lossy(&ss.stdout).into_owned(), port))
        })
        .expect("connections in the namespace");
    println!("{ss}");
    assert_eq!(congestion_towards(&ss, "10.77.0.2", port).as_deref(), Some("reno"), "peer with settings:\n{ss}");
    assert_eq!(congestion_towards(&ss, "10.77.0.1", port).as_deref(), Some(default.as_str()), "other peer:\n{ss}");

    // Cleared: new connections to that peer get the default again.
    actuator.submit_peer(PeerChange {
        policy: "test".into(),
        netns: cookie,
        prefix,
        settings: None,
        scenario: "per-destination test".into(),
        reason: "cleared".into(),
    });
    let _ = actuator.summary();
    assert!(!hooks.peer_map().expect("map").contains(cookie, &prefix));
    let (ss, port) = ns
        .run_in("connect again", move || {
            let listener = TcpListener::bind("0.0.0.0:0").expect("listen");
            let port = listener.local_addr().expect("addr").port();
            let again = TcpStream::connect(("10.77.0.2", port)).expect("connect .2");
            let accepted = listener.accept().expect("accept").0;
            let ss = std::process::Command::new("ss").args(["-tin", "state", "established"]).output().expect("ss");
            drop((again, accepted));
            Ok((String::from_utf8_lossy(&ss.stdout).into_owned(), port))
        })
        .expect("connection in the namespace");
    assert_eq!(congestion_towards(&ss, "10.77.0.2", port).as_deref(), Some(default.as_str()), "after clear:\n{ss}");

    drop(hooks);
    actuator.shutdown();
    let _ = thread.join();
}
