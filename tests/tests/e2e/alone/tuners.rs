//! End to end, per built-in tuner: every policy is embedded and loads, and
//! each scenario whose kernel signal this machine can provoke is provoked for
//! real in namespaces the test builds, with the kernel values checked before
//! and after, the explaining log line checked, and every global sysctl the
//! test or the daemon touched restored by guards. Loss figures with and
//! without tuning go to the results file, not into assertions.

use crate::tuning;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use serde_json::json;
use tuning::{BUILTIN, CHANGE_TIMEOUT, change_of, init_value, io, pinned_transfer, random_loss, start};
use wasmtune_tests::harness::{
    self, Daemon, GlobalSysctlGuard, HarnessError, IperfServer, LogLine, Netns, Requirement, VethPair,
};

/// Every crate of `policies/`, by its manifest name.

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
    last_choice(daemon, peer, |_| true).and_then(|line| congestion_of(&line))
}

/// The last `peer-change` of tcp-cong for `peer` that `matches`.
fn last_choice(daemon: &Daemon, peer: &str, matches: impl Fn(&LogLine) -> bool) -> Option<LogLine> {
    daemon
        .events("peer-change")
        .into_iter()
        .rev()
        .filter(|line| line.field_is("policy", "tcp-cong") && line.field_is("peer", peer))
        .find(|line| congestion_of(line).is_some() && matches(line))
}

/// `congestion=NAME` of a `peer-change` line's settings.
fn congestion_of(line: &LogLine) -> Option<String> {
    line.field("settings")?.split_whitespace().find_map(|part| part.strip_prefix("congestion=").map(str::to_string))
}

/// One arm as the policy's reason lists it:
/// `cubic cost 0.00 (41.20 Gbit/s, 35 µs, 7 scored)` or
/// `reno always switched on loss (3 scored)`.
#[derive(Debug, Clone, PartialEq)]
struct ArmView {
    algorithm: String,
    cost: f64,
    gbit_per_s: f64,
    scored: u32,
}

/// The arms listed between `[` and `]` in a tcp-cong reason.
fn arms_in(reason: &str) -> Vec<ArmView> {
    let Some(list) = reason.rsplit_once('[').and_then(|(_, rest)| rest.strip_suffix(']')) else {
        return vec![];
    };
    list.split("), ")
        .filter_map(|arm| {
            let mut words = arm.split_whitespace();
            let algorithm = words.next()?.to_string();
            let scored = arm.rsplit_once('(')?.1.rsplit_once(", ").map_or(arm.rsplit_once('(')?.1, |(_, last)| last);
            let scored = scored.split_whitespace().next()?.parse().ok()?;
            if arm.contains("always switched on loss") {
                // Every connection it started lost more than 1/64 and
                // became the on-loss algorithm's sample.
                return Some(ArmView { algorithm, cost: f64::INFINITY, gbit_per_s: 0.0, scored });
            }
            if words.next()? != "cost" {
                return None;
            }
            let cost = words.next()?.parse().ok()?;
            let gbit_per_s = words.next()?.trim_start_matches('(').parse().ok()?;
            Some(ArmView { algorithm, cost, gbit_per_s, scored })
        })
        .collect()
}

/// Median and spread (lowest, highest) of `values`.
fn median_spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted.first().copied().unwrap_or(0.0), sorted.last().copied().unwrap_or(0.0))
}

/// `WASMTUNE_CONG_ROUNDS` / `WASMTUNE_CONG_SECONDS` (the benchmark script
/// measures longer than the test), else `default`.
fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// tcp-cong's grant (`policies/tcp-cong/policy.toml`).
const CONG_GRANTED: [&str; 10] =
    ["bbr", "cubic", "reno", "htcp", "vegas", "westwood", "illinois", "hybla", "highspeed", "veno"];
/// Connections tcp-cong scores per arm before preferring one (`learner::MIN_PULLS`).
const CONG_MIN_PULLS: u32 = 3;
/// How much cheaper another arm must be to replace its choice (`learner::SWITCH_MARGIN`).
const CONG_SWITCH_MARGIN: f64 = 0.05;

/// tcp-cong learns per peer, over a clean veth path and one with 2 %
/// random loss, from the connections the daemon sees in a tuned namespace.
/// Then, in interleaved rounds, the learned choice (the daemon's sockops
/// program sets it at connect, overriding the client's `-C`, which only
/// gives the receiving end the same algorithm) is measured against every
/// offered algorithm set statically (`-C`) from the same namespace over the
/// same veth to a second address of the same peer, which the administrator's
/// config keeps out of tcp-cong's reach; iperf3 ends are pinned to separate
/// CPUs. Medians, spreads and learned/best-static ratios
/// go to stdout and the results file; the assertions are about behaviour:
/// each peer's choice comes from every arm measured there, and is the arm
/// the policy's own figures rank cheapest (within its switching margin).
#[test]
fn tcp_cong_learns_per_peer_against_every_static_choice() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let rounds = env_number("WASMTUNE_CONG_ROUNDS", 3);
    let seconds = env_number("WASMTUNE_CONG_SECONDS", 1);
    let offered = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").expect("offered");
    // Every algorithm the kernel offers that the policy's grant allows.
    let algorithms: Vec<String> =
        offered.split_whitespace().filter(|a| CONG_GRANTED.contains(a)).map(str::to_string).collect();
    assert!(!algorithms.is_empty(), "none of {offered:?} is granted");

    let tx = Netns::new("cong-tx").expect("tx netns");
    let clean = Netns::new("cong-clean").expect("clean netns");
    let lossy = Netns::new("cong-lossy").expect("lossy netns");
    let links: Vec<VethPair> =
        [(&tx, &clean), (&tx, &lossy)].into_iter().map(|(a, b)| VethPair::new(a, b).expect("veth")).collect();
    let learned_servers = [
        IperfServer::start(&clean, links[0].addr_b()).expect("clean server"),
        IperfServer::start(&lossy, links[1].addr_b()).expect("lossy server"),
    ];
    // The static runs go from the same namespace over the same veth to a
    // second address of the same peer, which tcp-cong never configures (its
    // entries are per address): the same path, the same sender, and the
    // client's `-C` stands.
    let static_servers: Vec<IperfServer> = [(&clean, &links[0]), (&lossy, &links[1])]
        .into_iter()
        .map(|(netns, link)| {
            let [a, b, c, d] = link.addr_b().octets();
            let second = std::net::Ipv4Addr::new(a, b, c, d.wrapping_add(100));
            netns.run("ip", &["addr", "add", &format!("{second}/24"), "dev", link.dev_b()]).expect("second address");
            IperfServer::start(netns, second).expect("static server")
        })
        .collect();
    random_loss(&lossy, learned_servers[1].port());
    // The kernel caches per destination what earlier connections learned
    // (ssthresh, RTT): a cubic run after a bbr run to the same address would
    // start from bbr's figures, and the static runs, which change algorithm
    // every run, would pay for it where the learned runs do not. Every run
    // starts fresh in both sending namespaces.
    harness::set_sysctl_in(&tx, "net.ipv4.tcp_no_metrics_save", "1").expect("tcp_no_metrics_save");
    let labels = ["clean", "lossy"];
    let peers: Vec<String> = learned_servers.iter().map(|s| format!("{}/32", s.addr())).collect();

    // The administrator's config keeps tcp-cong to the two learned peers:
    // its requests for the static servers' addresses are denied, so the
    // static runs stay static.
    let config = format!(
        "{}[policies.tcp-cong.tcp]\nprefixes = [{}]\n",
        // Only tcp-cong runs: no other policy changes buffers under the transfers.
        tuning::only("tcp-cong"),
        peers.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ")
    );
    let mut daemon = Daemon::builder().netns(&tx).config(&config).start_ready().expect("daemon ready");

    // Learning: transfers alternate between the peers until each has left
    // its measuring phase (every arm scored MIN_PULLS times), or a cap.
    let measured = |daemon: &Daemon, peer: &str| {
        last_choice(daemon, peer, |l| l.field("reason").is_some_and(|r| !r.contains("still measuring"))).is_some()
    };
    let cap = algorithms.len() * 3 + 8;
    let mut learning_transfers = 0;
    for _ in 0..cap {
        if peers.iter().all(|peer| measured(&daemon, peer)) {
            break;
        }
        for (server, peer) in learned_servers.iter().zip(&peers) {
            if !measured(&daemon, peer) {
                let _ = pinned_transfer(&tx, server, seconds, None);
                learning_transfers += 1;
                // The summary reaches the policy as the connection closes;
                // let its choice land before the next connection.
                std::thread::sleep(Duration::from_millis(150));
            }
        }
    }

    // Measuring: every round runs each choice once per peer, in turn.
    let choices: Vec<Option<&str>> = std::iter::once(None).chain(algorithms.iter().map(|a| Some(a.as_str()))).collect();
    let mut figures: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut learned_used: Vec<Vec<String>> = vec![vec![], vec![]];
    for round in 0..rounds {
        // Each round starts the rotation one choice later, so every choice
        // takes every place in the order equally often: back-to-back runs
        // on this machine slow down along a round, and a fixed order would
        // charge that to whichever choices come last.
        let mut order = choices.clone();
        let shift = round as usize % order.len();
        order.rotate_left(shift);
        for peer_index in 0..2 {
            for choice in &order {
                let (label, gbit) = match choice {
                    None => {
                        let used = learned_for(&daemon, &peers[peer_index]).unwrap_or_default();
                        // The daemon's sockops program overrides the client's
                        // `-C` at connect; passing the learned algorithm gives
                        // the receiving end the same algorithm as in the
                        // static run of it, so the two differ only in who
                        // chose the sender's (and in the on-loss switch).
                        let t = pinned_transfer(
                            &tx,
                            &learned_servers[peer_index],
                            seconds,
                            Some(used.as_str()).filter(|u| !u.is_empty()),
                        );
                        learned_used[peer_index].push(used);
                        std::thread::sleep(Duration::from_millis(150));
                        ("learned".to_string(), t.gbit_per_s())
                    }
                    Some(algorithm) => {
                        let t = pinned_transfer(&tx, &static_servers[peer_index], seconds, Some(algorithm));
                        // The same pause as after a learned run.
                        std::thread::sleep(Duration::from_millis(150));
                        (algorithm.to_string(), t.gbit_per_s())
                    }
                };
                figures[peer_index].entry(label).or_default().push(gbit);
            }
        }
    }

    let mut report = serde_json::Map::new();
    for (peer_index, label) in labels.iter().enumerate() {
        let peer = &peers[peer_index];
        let final_best = last_choice(&daemon, peer, |l| l.field("reason").is_some_and(|r| r.contains("lowest cost")))
            .unwrap_or_else(|| panic!("tcp-cong never chose by cost for {peer}\n{}", daemon.dump()));
        let learned = congestion_of(&final_best).unwrap_or_default();
        let reason = final_best.field("reason").unwrap_or_default();
        let arms = arms_in(&reason);
        // Behaviour: every arm was measured at this peer, and the choice is
        // the one its own figures rank cheapest (or the one it holds, within
        // the margin that keeps noise from flipping it).
        for algorithm in &algorithms {
            let arm = arms.iter().find(|a| &a.algorithm == algorithm);
            assert!(
                arm.is_some_and(|a| a.scored >= CONG_MIN_PULLS),
                "{algorithm} not measured {} times at {peer} before choosing: {reason}",
                CONG_MIN_PULLS
            );
        }
        let cheapest = arms.iter().map(|a| a.cost).fold(f64::INFINITY, f64::min);
        assert!(cheapest.is_finite(), "{peer}: no arm has a cost: {reason}");
        let chosen = arms.iter().find(|a| a.algorithm == learned).expect("the chosen arm is listed");
        assert!(
            chosen.cost <= cheapest + CONG_SWITCH_MARGIN + 0.01,
            "{peer}: chose {learned} at cost {} while another cost {cheapest}: {reason}",
            chosen.cost
        );

        let stats: BTreeMap<&String, (f64, f64, f64)> =
            figures[peer_index].iter().map(|(choice, values)| (choice, median_spread(values))).collect();
        let (best_static, best_median) = stats
            .iter()
            .filter(|(choice, _)| choice.as_str() != "learned")
            .map(|(choice, (median, ..))| ((*choice).clone(), *median))
            .fold((String::new(), 0.0), |acc, (c, m)| if m > acc.1 { (c, m) } else { acc });
        let learned_stats = stats.get(&"learned".to_string()).copied().unwrap_or_default();
        let ratio = if best_median > 0.0 { learned_stats.0 / best_median } else { 0.0 };
        let mut table = String::new();
        for (choice, (median, low, high)) in &stats {
            table.push_str(&format!("  {choice:>8}: median {median:7.2} Gbit/s (spread {low:.2}–{high:.2})\n"));
        }
        println!(
            "tcp-cong {label} peer {peer}: learned {learned} (runs used {:?}); learned/best static ({best_static}) = {ratio:.3}; {rounds} rounds of {seconds} s on a shared, loaded machine\n{table}  learner's view: {}",
            learned_used[peer_index],
            arms.iter()
                .map(|a| if a.cost.is_finite() {
                    format!("{} {:.2} Gbit/s cost {:.2} ({} scored)", a.algorithm, a.gbit_per_s, a.cost, a.scored)
                } else {
                    format!("{} always switched on loss ({} scored)", a.algorithm, a.scored)
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.insert(
            label.to_string(),
            json!({
                "peer": peer,
                "learned": learned,
                "learned_runs_used": learned_used[peer_index],
                "gbit_s": figures[peer_index],
                "median_gbit_s": stats.iter().map(|(c, s)| ((*c).clone(), json!(s.0))).collect::<serde_json::Map<_, _>>(),
                "spread_gbit_s": stats.iter().map(|(c, s)| ((*c).clone(), json!([s.1, s.2]))).collect::<serde_json::Map<_, _>>(),
                "best_static": best_static,
                "learned_over_best_static": ratio,
                "learner_view": arms.iter().map(|a| json!({"algorithm": a.algorithm, "cost": a.cost.is_finite().then_some(a.cost), "gbit_s": a.gbit_per_s, "scored": a.scored})).collect::<Vec<_>>(),
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
    report.insert("rounds".into(), json!(rounds));
    report.insert("seconds_per_run".into(), json!(seconds));
    report.insert("learning_transfers".into(), json!(learning_transfers));
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
