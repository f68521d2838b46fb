//! End to end: SIGKILL the daemon at random moments while it tunes (also in
//! the middle of a change), restart it each time (adopting or rolling back
//! what the killed run left), and finally restart it with `--on-crash
//! rollback`: every `net.*` sysctl of the tuned namespace (all that
//! wasmtune can write) must then equal what it was before the test.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wasmtune_tests::harness::{self, BufferBed, Daemon, LogLine, Netns, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
const ROUNDS: u64 = 10;

/// Every `net.*` sysctl visible in `netns`, by name: everything wasmtune
/// could write (a manifest can declare nothing else). Kernel counters such
/// as `fs.file-nr` move on their own and are not compared.
fn all_sysctls(netns: &Netns) -> BTreeMap<String, String> {
    let out = Command::new("ip").args(["netns", "exec", netns.name(), "sysctl", "-a"]).output().expect("sysctl -a");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, v)| (k.trim().to_string(), harness::normalize(v))))
        .filter(|(k, _)| k.starts_with("net."))
        .collect()
}

/// Names whose values differ between two snapshots.
fn differing(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect()
}

/// A small deterministic generator, so that a failing run can be repeated
/// from its printed seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn start(bed: &BufferBed, state: &std::path::Path, extra: &[&str]) -> Daemon {
    // A socket of its own: the default one may belong to another daemon.
    let socket = state.join("control.sock");
    let mut builder = Daemon::builder().netns(bed.tuned_netns()).state_dir(state).control_socket(&socket);
    for arg in extra {
        builder = builder.arg(arg);
    }
    builder.start_ready().expect("daemon ready")
}

/// Leaves the journal as a SIGKILL between "intent journaled" and "outcome
/// journaled" would: appends an intent to grow tcp_rmem[2] by 4 KiB, and,
/// when `written`, also makes the write (the kill came after it). Returns
/// false when the journal has no change to copy the namespace from yet.
fn interrupt_a_change(bed: &BufferBed, state: &std::path::Path, written: bool) -> bool {
    let path = state.join("journal.jsonl");
    let text = std::fs::read_to_string(&path).expect("journal");
    let records: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let Some(template) = records.iter().rev().find(|r| r["kind"] == "intent" && r["tunable"] == "net.ipv4.tcp_rmem")
    else {
        return false;
    };
    let seq = records.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap_or(0) + 1;
    let old: Vec<u64> = harness::sysctl_fields_in(bed.tuned_netns(), "net.ipv4.tcp_rmem").expect("read");
    let new = vec![old[0], old[1], old[2] + 4096];
    let intent = json!({
        "kind": "intent", "seq": seq, "time": 0, "policy": "tcp-buffer",
        "netns": template["netns"], "netns_name": template["netns_name"], "tunable": "net.ipv4.tcp_rmem",
        "old": {"integers": old}, "new": {"integers": new.clone()},
        "scenario": "interrupted", "reason": "a change the test interrupted",
    });
    let mut line = intent.to_string();
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(&path).expect("journal").write_all(line.as_bytes()).expect("append");
    if written {
        let value = new.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        harness::set_sysctl_in(bed.tuned_netns(), "net.ipv4.tcp_rmem", &value).expect("write");
    }
    true
}

fn settled_line(l: &LogLine) -> bool {
    l.message().is_some_and(|m| m.contains("settled changes interrupted"))
}

#[test]
fn e2e_sigkill_at_random_then_rollback_restores_every_sysctl() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let seed = std::env::var("WASMTUNE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    println!("seed {seed} (repeat with WASMTUNE_CRASH_SEED={seed})");
    let mut random = Lcg(seed);
    let bed = BufferBed::new("crash", Side::Receiver, BAD_RMEM).expect("test bed");
    let state = harness::private_dir("crash-state").expect("state dir");
    let first = all_sysctls(bed.tuned_netns());
    std::thread::sleep(Duration::from_millis(500));
    let second = all_sysctls(bed.tuned_netns());
    let volatile = differing(&first, &second);
    println!("{} sysctls in the namespace; changing on their own: {volatile:?}", first.len());
    assert!(first.len() > 100, "sysctl -a saw too little: {}", first.len());
    assert_eq!(first.get("net.ipv4.tcp_rmem").map(String::as_str), Some(harness::normalize(BAD_RMEM).as_str()));

    let mut changes = 0;
    let mut settled_restarts = 0;
    let mut rolled_back_restarts = 0;
    for round in 0..ROUNDS {
        let on_crash = if random.below(2) == 0 { "adopt" } else { "rollback" };
        let mut daemon = start(&bed, state.path(), &["--on-crash", on_crash]);
        if daemon.lines().iter().any(settled_line) {
            settled_restarts += 1;
        }
        if on_crash == "rollback" && !daemon.events("rollback").is_empty() {
            rolled_back_restarts += 1;
        }
        let transfer = bed.background_transfer(4).expect("transfer");
        let delay = Duration::from_millis(100 + random.below(2000));
        std::thread::sleep(delay);
        daemon.kill().expect("SIGKILL");
        let made = daemon.events("sysctl-change").len();
        changes += made;
        let _ = transfer.wait();
        // Every third round, the kill lands in the middle of a change.
        let interrupted = match round % 3 {
            0 => interrupt_a_change(&bed, state.path(), false).then_some("before the write"),
            1 => interrupt_a_change(&bed, state.path(), true).then_some("after the write"),
            _ => None,
        };
        println!(
            "round {round}: --on-crash {on_crash}, killed after {delay:?}, {made} change(s){}",
            interrupted.map(|at| format!(", interrupted a change {at}")).unwrap_or_default()
        );
    }
    assert!(changes > 0, "no change was ever made: the test proved nothing");

    // The last restart rolls back what the killed runs left.
    let mut daemon = start(&bed, state.path(), &["--on-crash", "rollback", "--rollback"]);
    let at_ready = all_sysctls(bed.tuned_netns());
    daemon.terminate().expect("clean exit");
    let after = all_sysctls(bed.tuned_netns());
    let changed_at_ready: Vec<String> =
        differing(&first, &at_ready).into_iter().filter(|k| !volatile.contains(k)).collect();
    let changed: Vec<String> = differing(&first, &after).into_iter().filter(|k| !volatile.contains(k)).collect();
    let report: Vec<String> =
        changed.iter().map(|k| format!("{k}: {:?} -> {:?}", first.get(k), after.get(k))).collect();
    assert!(report.is_empty(), "not restored after the crashes: {report:#?}");
    assert!(changed_at_ready.is_empty(), "not restored by --on-crash rollback at start: {changed_at_ready:?}");
    harness::record(
        "crash.sigkill_rollback",
        json!({
            "seed": seed, "rounds": ROUNDS, "changes": changes,
            "restarts_settling_an_interrupted_change": settled_restarts,
            "restarts_rolling_back": rolled_back_restarts,
            "sysctls_compared": first.len() - volatile.len(),
        }),
    )
    .expect("results file");
}
