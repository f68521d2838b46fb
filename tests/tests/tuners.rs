//! End to end, per built-in tuner: every policy is embedded and loads, and
//! each scenario whose kernel signal this machine can provoke is provoked for
//! real in namespaces the test builds, with the kernel values checked before
//! and after, the explaining log line checked, and every global sysctl the
//! test or the daemon touched restored by guards. Loss figures with and
//! without tuning go to the results file, not into assertions.

mod tuning;

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::json;
use tuning::{CHANGE_TIMEOUT, change_of, init_value, io, start, transfer};
use wasmtune_tests::harness::{
    self, Daemon, GlobalSysctlGuard, HarnessError, IperfServer, Netns, Requirement, VethPair,
};

/// Every crate of `policies/`, by its manifest name.
const BUILTIN: [&str; 7] = ["tcp-buffer", "tcp-cong", "net-buffer", "udp-buffer", "ip-frag", "neigh", "route"];

#[test]
fn every_builtin_policy_is_embedded_and_loaded() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let netns = Netns::new("tuners-load").expect("netns");
    let mut daemon = start(&[&netns], false);
    let ready = daemon.events("ready").pop().expect("ready line");
    let listed = ready.field("policies").unwrap_or_default();
    let loaded: Vec<String> = daemon
        .events("policy-loaded")
        .iter()
        .filter(|line| line.field_is("source", "builtin"))
        .filter_map(|line| line.field("policy"))
        .collect();
    for name in BUILTIN {
        assert!(loaded.iter().any(|p| p == name), "{name} not loaded from the binary: {loaded:?}\n{}", daemon.dump());
        assert!(listed.split(',').any(|p| p.trim() == name), "{name} missing from ready: {}", ready.raw);
    }
    assert!(daemon.events("policy-load-failed").is_empty(), "a built-in policy failed to load\n{}", daemon.dump());
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
}

/// Datagrams of `size` bytes sent over the loopback in one burst to a
/// fresh socket that does not read until the burst is over: how many of
/// `count` it then holds. Runs in the test's own (initial) namespace, where
/// `rmem_default` lives: in any other it is read-only.
fn udp_burst_received(count: usize, size: usize) -> Result<usize, HarnessError> {
    let receiver = UdpSocket::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    let sender = UdpSocket::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    let target = receiver.local_addr().map_err(|e| io("address", e))?;
    let payload = vec![0x5a_u8; size];
    for _ in 0..count {
        sender.send_to(&payload, target).map_err(|e| io("send", e))?;
    }
    receiver.set_nonblocking(true).map_err(|e| io("nonblocking", e))?;
    let mut buffer = vec![0_u8; size];
    let mut received = 0;
    while receiver.recv(&mut buffer).is_ok() {
        received += 1;
    }
    Ok(received)
}

#[test]
fn udp_buffer_raises_rmem_default_when_a_default_sized_socket_drops() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    // Guards first: dropped last, after the daemon, they restore the values.
    let _rmem_default = GlobalSysctlGuard::set("net.core.rmem_default", "212992").expect("guard rmem_default");
    let _rmem_max = GlobalSysctlGuard::record("net.core.rmem_max").expect("guard rmem_max");
    let _udp_mem = GlobalSysctlGuard::record("net.ipv4.udp_mem").expect("guard udp_mem");
    let before = init_value("net.core.rmem_default");
    let (count, size) = (4000, 1200);
    let untuned = udp_burst_received(count, size).expect("burst before tuning");

    let mut daemon = start(&[], true);
    let tunable = "net.core.rmem_default";
    let mut last = None;
    // Each burst drops datagrams; the policy raises the default a step per
    // (rate-limited) drop report, so a few bursts give a few steps.
    for _ in 0..6 {
        let _ = udp_burst_received(count, size).expect("burst while tuning");
        if let Ok(line) =
            daemon.wait_for("rmem_default change", Duration::from_secs(2), change_of("udp-buffer", tunable))
        {
            last = Some(line);
        }
    }
    let line = match last {
        Some(line) => line,
        None => daemon
            .wait_for("rmem_default change", CHANGE_TIMEOUT, change_of("udp-buffer", tunable))
            .unwrap_or_else(|err| panic!("no rmem_default change: {err}\n{}", daemon.dump())),
    };
    let after = init_value(tunable);
    let changes = daemon.lines().iter().filter(|l| change_of("udp-buffer", tunable)(l)).count();
    assert!(after > before, "rmem_default {before} -> {after}");
    assert!(after <= 256 << 20, "past the 256 MiB cap: {after}");
    assert_eq!(line.field("netns").as_deref(), Some("init"), "a global sysctl changes in init: {}", line.raw);
    assert_eq!(line.field("scenario").as_deref(), Some("need to increase UDP receive buffer size"), "{}", line.raw);
    let reason = line.field("reason").unwrap_or_default();
    assert!(reason.contains("receive queue was full"), "reason does not explain: {}", line.raw);
    let tuned = udp_burst_received(count, size).expect("burst after tuning");
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    println!(
        "udp-buffer: rmem_default {before} -> {after} in {changes} changes; a {count} x {size} B burst kept {untuned} datagrams before, {tuned} after"
    );
    assert!(tuned >= untuned, "a larger default buffer held fewer datagrams: {untuned} -> {tuned}");
    harness::record(
        "tuners::udp_buffer",
        json!({
            "rmem_default_before": before,
            "rmem_default_after": after,
            "changes": changes,
            "burst": { "datagrams": count, "bytes": size },
            "kept_without_tuning": untuned,
            "kept_after_tuning": tuned,
        }),
    )
    .expect("record figures");
}

#[test]
fn neigh_raises_gc_thresholds_when_the_table_nears_full() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let names =
        ["net.ipv4.neigh.default.gc_thresh1", "net.ipv4.neigh.default.gc_thresh2", "net.ipv4.neigh.default.gc_thresh3"];
    let _guards: Vec<GlobalSysctlGuard> = names
        .iter()
        .zip(["128", "256", "512"])
        .map(|(name, value)| GlobalSysctlGuard::set(name, value).expect("guard gc_thresh"))
        .collect();
    // The neighbour table is the kernel's, shared by every namespace, and
    // its thresholds are sysctls of the initial one: the entries go on an
    // initial-namespace end of a veth whose peer is in a namespace of ours.
    let netns = Netns::new("neigh").expect("netns");
    let link = InitLink::new(&netns);
    let mut daemon = start(&[], true);

    // Permanent entries are exempt from garbage collection, so the table
    // grows past gc_thresh3 without the kernel refusing them.
    let mut batch = String::new();
    for i in 0..480u32 {
        batch.push_str(&format!(
            "neigh add 10.77.{}.{} lladdr 02:00:00:00:{:02x}:{:02x} nud permanent dev {}\n",
            1 + i / 250,
            1 + i % 250,
            i / 256,
            i % 256,
            link.name
        ));
    }
    let file = harness::scratch_dir("neigh-batch").expect("scratch");
    let path = file.path().join("batch");
    std::fs::write(&path, batch).expect("write batch");
    let added = std::process::Command::new("ip").args(["-batch", &path.to_string_lossy()]).status().expect("run ip");
    assert!(added.success(), "adding neighbours: {added}");

    let line = daemon
        .wait_for("gc_thresh3 change", CHANGE_TIMEOUT, change_of("neigh", names[2]))
        .unwrap_or_else(|err| panic!("no gc_thresh3 change: {err}\n{}", daemon.dump()));
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u64> = names.iter().map(|name| init_value(name)).collect();
    assert_eq!(line.field("old").as_deref(), Some("512"), "first raise starts at the guard's value: {}", line.raw);
    assert_eq!(line.field("new").as_deref(), Some("640"), "one 25 % step: {}", line.raw);
    assert!(after[2] >= 640, "gc_thresh3 512 -> {}", after[2]);
    assert!(after[1] >= 256 && after[1] <= after[2], "gc_thresh2 {} out of order", after[1]);
    assert!(after[0] >= 128 && after[0] <= after[1], "gc_thresh1 {} out of order", after[0]);
    assert_eq!(line.field("netns").as_deref(), Some("init"), "{}", line.raw);
    assert_eq!(line.field("scenario").as_deref(), Some("neighbour table nearly full"), "{}", line.raw);
    assert!(line.field("reason").unwrap_or_default().contains("IPv4 neighbour table holds"), "{}", line.raw);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record("tuners::neigh", json!({ "gc_thresh_before": [128, 256, 512], "gc_thresh_after": after }))
        .expect("record figures");
}

/// The algorithm the last `peer-change` of tcp-cong set for `peer`.
fn learned_for(daemon: &Daemon, peer: &str) -> Option<String> {
    daemon
        .events("peer-change")
        .iter()
        .rev()
        .filter(|line| line.field_is("policy", "tcp-cong") && line.field_is("peer", peer))
        .filter_map(|line| line.field("settings"))
        .filter_map(|settings| {
            settings.split_whitespace().find_map(|part| part.strip_prefix("congestion=").map(str::to_string))
        })
        .next()
}

#[test]
fn tcp_cong_learns_per_peer_against_every_static_choice() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let offered = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").expect("offered");
    let algorithms: Vec<&str> =
        ["bbr", "cubic", "reno"].into_iter().filter(|a| offered.split_whitespace().any(|o| o == *a)).collect();
    let tx = Netns::new("cong-tx").expect("tx netns");
    let clean = Netns::new("cong-clean").expect("clean netns");
    let lossy = Netns::new("cong-lossy").expect("lossy netns");
    let clean_link = VethPair::new(&tx, &clean).expect("veth tx <-> clean");
    let lossy_link = VethPair::new(&tx, &lossy).expect("veth tx <-> lossy");
    let clean_server = IperfServer::start(&clean, clean_link.addr_b()).expect("clean server");
    let lossy_server = IperfServer::start(&lossy, lossy_link.addr_b()).expect("lossy server");
    // 2 % of the data segments arriving at the lossy peer are dropped.
    let port = lossy_server.port().to_string();
    lossy.run("nft", &["add", "table", "inet", "wtloss"]).expect("nft table");
    lossy
        .run("nft", &["add", "chain", "inet", "wtloss", "input", "{ type filter hook input priority 0 ; }"])
        .expect("nft chain");
    lossy
        .run(
            "nft",
            &[
                "add", "rule", "inet", "wtloss", "input", "tcp", "dport", &port, "numgen", "random", "mod", "1000",
                "<", "20", "drop",
            ],
        )
        .expect("nft random drop");

    let peers = [("clean", &clean_server), ("lossy", &lossy_server)];
    let mut statics = serde_json::Map::new();
    for (label, server) in peers {
        let mut per_algorithm = serde_json::Map::new();
        for algorithm in &algorithms {
            let t = transfer(&tx, server, 2, Some(algorithm));
            per_algorithm.insert(algorithm.to_string(), json!(t.gbit_per_s()));
        }
        statics.insert(label.to_string(), serde_json::Value::Object(per_algorithm));
    }

    let mut daemon = start(&[&tx], false);
    for _ in 0..10 {
        for (_, server) in peers {
            let _ = transfer(&tx, server, 2, None);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut report = serde_json::Map::new();
    for (label, server) in peers {
        let peer = format!("{}/32", server.addr());
        let learned =
            learned_for(&daemon, &peer).unwrap_or_else(|| panic!("tcp-cong set nothing for {peer}\n{}", daemon.dump()));
        assert!(algorithms.contains(&learned.as_str()), "{learned} is not an offered arm");
        let measured = transfer(&tx, server, 3, None);
        let best = statics[label].as_object().map(|m| {
            m.iter()
                .filter_map(|(a, v)| v.as_f64().map(|v| (a.clone(), v)))
                .fold((String::new(), 0.0), |acc, (a, v)| if v > acc.1 { (a, v) } else { acc })
        });
        let (best_name, best_gbit) = best.unwrap_or_default();
        println!(
            "tcp-cong {label} peer {peer}: learned {learned} {:.2} Gbit/s; statics {}; best static {best_name} {best_gbit:.2}",
            measured.gbit_per_s(),
            serde_json::Value::Object(statics[label].as_object().cloned().unwrap_or_default())
        );
        report.insert(
            label.to_string(),
            json!({
                "peer": peer,
                "learned": learned,
                "learned_gbit_s": measured.gbit_per_s(),
                "learned_retransmits": measured.retransmits,
                "static_gbit_s": statics[label],
                "best_static": best_name,
                "learned_over_best_static": if best_gbit > 0.0 { measured.gbit_per_s() / best_gbit } else { 0.0 },
            }),
        );
    }
    let changes = daemon.events("peer-change");
    let explained = changes.iter().all(|l| {
        l.field("reason").is_some_and(|r| r.contains("connections scored"))
            || l.field_is("scenario", "connections to a peer are losing packets")
    });
    assert!(explained, "a peer-change without its explanation\n{}", daemon.dump());
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    report.insert("peer_changes".into(), json!(changes.len()));
    harness::record("tuners::tcp_cong", serde_json::Value::Object(report)).expect("record figures");
}

/// A veth with one end in the initial namespace (addressed 10.77.0.1/16) and
/// the other in `peer`; deleting it on drop also flushes its neighbours.
struct InitLink {
    name: String,
}

impl InitLink {
    fn new(peer: &Netns) -> InitLink {
        let name = format!("wtn{}", std::process::id() % 100_000);
        let link = InitLink { name };
        let run = |args: &[&str]| {
            let status = std::process::Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}: {status}");
        };
        run(&["link", "add", &link.name, "type", "veth", "peer", "name", "wtpeer0", "netns", peer.name()]);
        run(&["addr", "add", "10.77.0.1/16", "dev", &link.name]);
        run(&["link", "set", &link.name, "up"]);
        link
    }
}

impl Drop for InitLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.name]).status();
    }
}
