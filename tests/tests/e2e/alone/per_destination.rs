//! Per-destination TCP settings through the sockops map, on the real kernel:
//! a congestion choice for one peer applies to new connections to that peer
//! only (`ss -ti` in the namespace shows it), and the rest keep the
//! namespace's default. Each change is journaled before the map holds it
//! and listed in the exit summary. In the daemon: the administrator's
//! configuration narrows a policy's `[tcp]` grant, `wasmtune status` lists
//! the entries with their policy, and `wasmtune rollback` after a SIGKILL
//! says in one line that nothing is left to undo.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use wasmtune::actuate::{Actuator, ActuatorConfig, PeerEntryChange};
use wasmtune::bpf::cgroup::{CgroupConfig, CgroupHooks, PeerPrefix, PeerSettings};
use wasmtune::netns::NetnsRegistry;
use wasmtune::wit::IpAddr;
use wasmtune_tests::harness::{self, Daemon, IperfServer, Netns, Requirement, VethPair};

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
        journal_max_bytes: wasmtune::ledger::COMPACT_AT_BYTES,
    })
    .expect("actuator");
    let (events, _walk) = crossbeam_channel::bounded(16);
    let hooks = CgroupHooks::start(CgroupConfig::default(), |_| {}, events).expect("cgroup programs");
    assert!(hooks.hooks().iter().all(|h| h.failure.is_none()), "{:?}", hooks.hooks());
    actuator.attach_peer_map(hooks.peer_map().expect("sockops runs"));

    let prefix = PeerPrefix::new(&IpAddr::V4((10, 77, 0, 2)), 32).expect("prefix");
    actuator.submit_peer(PeerEntryChange {
        policy: "test".into(),
        netns: cookie,
        prefix,
        settings: Some(PeerSettings { congestion: Some("reno".into()), no_delay: Some(true), ..Default::default() }),
        scenario: "per-destination test".into(),
        reason: "reno for 10.77.0.2 only".into(),
    });
    // The change is journaled (and synced) before the map holds it: the
    // moment the entry is visible, its intent is already in the journal.
    let map = hooks.peer_map().expect("map");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !map.contains(cookie, &prefix) {
        assert!(Instant::now() < deadline, "the entry never reached the map");
        std::hint::spin_loop();
    }
    let journal = harness::journal_records(state.path());
    let intent = journal
        .iter()
        .find(|r| r["kind"] == "peer-intent" && r["peer"] == "10.77.0.2/32")
        .unwrap_or_else(|| panic!("the map holds the entry but the journal has no intent for it: {journal:#?}"));
    assert_eq!(intent["policy"], "test");
    assert_eq!(intent["netns"], cookie);
    assert_eq!(intent["netns_name"], ns.name());
    assert_eq!(intent["settings"]["congestion"], "reno", "{intent}");
    // A round trip through the actuator thread: every change before it is applied.
    let summary = actuator.summary();
    let seq = intent["seq"].clone();
    assert!(
        harness::journal_records(state.path()).iter().any(|r| r["kind"] == "applied" && r["seq"] == seq),
        "no outcome journaled for the intent {intent}"
    );
    let lines = summary.lines();
    println!("{}", lines.join("\n"));
    let listed =
        format!("new connections to 10.77.0.2/32 in netns {}: congestion=reno no-delay=true (policy test", ns.name());
    assert!(lines.iter().any(|l| l.starts_with(&listed)), "the exit summary does not list the entry: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("they end when wasmtune stops (nothing to undo by hand)")),
        "the exit summary does not say how the entry is undone: {lines:#?}"
    );

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
    actuator.submit_peer(PeerEntryChange {
        policy: "test".into(),
        netns: cookie,
        prefix,
        settings: None,
        scenario: "per-destination test".into(),
        reason: "cleared".into(),
    });
    let summary = actuator.summary();
    assert!(!hooks.peer_map().expect("map").contains(cookie, &prefix));
    assert!(summary.peers.is_empty(), "a cleared entry is not in effect: {:?}", summary.peers);
    let cleared = harness::journal_records(state.path())
        .into_iter()
        .filter(|r| r["kind"] == "peer-intent" && r["peer"] == "10.77.0.2/32" && r["settings"].is_null())
        .count();
    assert_eq!(cleared, 1, "the clear is journaled too");
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

/// tcp-cong alone, its `[tcp]` grant (every prefix in its manifest)
/// narrowed by the administrator to one peer.
fn tcp_cong_narrowed_to(peer: &str) -> String {
    let mut config = crate::tuning::only("tcp-cong");
    config.push_str(&format!("[policies.tcp-cong.tcp]\nprefixes = [\"{peer}\"]\n"));
    config
}

/// tcp-cong sees connections to two peers from a tuned namespace and picks
/// an algorithm for each. The administrator's configuration narrowed its
/// grant to the first peer: its choice there goes through (journaled, in
/// the map, listed by `wasmtune status` with the policy), its choice for the
/// second is denied as `not-granted` and logged. Then the daemon is killed
/// with SIGKILL, and `wasmtune rollback` exits 0 saying in one line that the
/// entry ended with the process: nothing is left to undo.
#[test]
fn e2e_narrowed_tcp_grant_status_and_rollback_after_sigkill() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let tx = Netns::new("pd-tx").expect("tx netns");
    let granted_ns = Netns::new("pd-in").expect("granted peer netns");
    let other_ns = Netns::new("pd-out").expect("other peer netns");
    let links = [VethPair::new(&tx, &granted_ns).expect("veth"), VethPair::new(&tx, &other_ns).expect("veth")];
    let servers = [
        IperfServer::start(&granted_ns, links[0].addr_b()).expect("granted server"),
        IperfServer::start(&other_ns, links[1].addr_b()).expect("other server"),
    ];
    let granted = format!("{}/32", links[0].addr_b());
    let other = format!("{}/32", links[1].addr_b());
    let state = harness::private_dir("pd-state").expect("state dir");
    let socket = state.path().join("control.sock").to_string_lossy().into_owned();
    let mut daemon = Daemon::builder()
        .netns(&tx)
        .state_dir(state.path())
        .config(&tcp_cong_narrowed_to(&granted))
        .arg("--control-socket")
        .arg(&socket)
        .start_ready()
        .expect("daemon ready");

    let change_for = |daemon: &Daemon, peer: &str| {
        daemon.events("peer-change").into_iter().find(|l| l.field_is("policy", "tcp-cong") && l.field_is("peer", peer))
    };
    let denial_for = |daemon: &Daemon, peer: &str| {
        let tunable = format!("tcp-peer:{peer}");
        daemon
            .events("denied")
            .into_iter()
            .find(|l| l.field_is("policy", "tcp-cong") && l.field_is("tunable", &tunable))
    };
    // Each 1 s transfer ends in a connection summary tcp-cong scores; a few
    // rounds leave room for a loaded machine.
    for _ in 0..6 {
        for server in &servers {
            harness::run_client(&tx, server, 1).expect("transfer");
        }
        std::thread::sleep(Duration::from_millis(300));
        if change_for(&daemon, &granted).is_some() && denial_for(&daemon, &other).is_some() {
            break;
        }
    }
    let change = change_for(&daemon, &granted)
        .unwrap_or_else(|| panic!("no per-destination change for the granted peer\n{}", daemon.dump()));
    assert!(change.field("settings").is_some_and(|s| s.contains("congestion=")), "{}", change.raw);
    let denial = denial_for(&daemon, &other)
        .unwrap_or_else(|| panic!("no denial for the peer outside the narrowed prefixes\n{}", daemon.dump()));
    assert_eq!(denial.field("denial").as_deref(), Some("not-granted"), "{}", denial.raw);
    let detail = denial.field("detail").unwrap_or_default();
    assert!(detail.contains("not inside its [tcp] prefixes") && detail.contains(&granted), "{}", denial.raw);
    assert!(change_for(&daemon, &other).is_none(), "a change outside the grant went through\n{}", daemon.dump());

    let journal = harness::journal_records(state.path());
    assert!(
        journal
            .iter()
            .any(|r| r["kind"] == "peer-intent" && r["peer"] == granted.as_str() && r["policy"] == "tcp-cong"),
        "the change is not journaled: {journal:#?}"
    );
    assert!(
        !journal.iter().any(|r| r["kind"] == "peer-intent" && r["peer"] == other.as_str()),
        "a denied change was journaled"
    );

    let (ok, status, stderr) = harness::cli(&["status", "--json", "--socket", &socket]);
    assert!(ok, "status failed: {stderr}");
    let status: Json = serde_json::from_str(&status).expect("status JSON");
    let peers = status["result"]["peers"].as_array().cloned().unwrap_or_default();
    let listed = peers
        .iter()
        .find(|p| p["peer"] == granted.as_str())
        .unwrap_or_else(|| panic!("status lacks the entry: {status}"));
    assert_eq!(listed["netns"], tx.name(), "{listed}");
    assert_eq!(listed["policy"], "tcp-cong", "{listed}");
    assert!(listed["settings"].as_str().is_some_and(|s| s.contains("congestion=")), "{listed}");
    let (ok, text, _) = harness::cli(&["status", "--socket", &socket]);
    assert!(
        ok && text.lines().any(|l| l.contains(&granted) && l.contains("tcp-cong")),
        "status text lacks the entry:\n{text}"
    );

    let pid = daemon.pid();
    daemon.kill().expect("SIGKILL");
    let state_dir = state.path().to_string_lossy().into_owned();
    let (ok, out, stderr) = harness::cli(&["rollback", "--state-dir", &state_dir, "--socket", &socket]);
    println!("{out}");
    assert!(ok, "rollback after SIGKILL failed: {stderr}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line for the per-destination entries: {out}");
    let expected = format!("ended with the wasmtune process that made them (pid {pid})");
    assert!(lines[0].contains(&expected), "{out}");
    assert!(lines[0].contains(&format!("{granted} in netns {} (policy tcp-cong)", tx.name())), "{out}");
    assert!(lines[0].contains("nothing left to undo") && lines[0].contains("keep what they were given"), "{out}");
    let (ok, again, stderr) = harness::cli(&["rollback", "--state-dir", &state_dir, "--socket", &socket]);
    assert!(ok, "{stderr}");
    assert_eq!(again.trim(), "nothing to roll back", "the first rollback completed");
}
