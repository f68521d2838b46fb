//! End to end: replacing the tcp-buffer policy while a bulk transfer makes
//! it busy. Every replacement is installed with write-then-rename; each new
//! version must take over without an event being lost or handled twice
//! (the router's totals for the name balance), tuning must continue, and a
//! version that traps in `init` must leave the running one in charge. The
//! time from the rename to the new version handling events is measured for
//! a policy compiled before (cache hit) and for a new one.

use crate::lifecycle;

use std::time::{Duration, Instant};

use lifecycle::{count, install, policy, result, sha256, tcp_buffer_variant, trap_in_init_bytes, wait_policy};
use serde_json::json;
use wasmtune::control::Request;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
const POLICY: &str = "tcp-buffer";
const FILE: &str = "tcp-buffer.wasm";
const REPLACEMENTS: u64 = 5;
/// Small steps (1.6 %) so that tuning goes on for the whole test, and a cap
/// on the grant so that sockets keep reaching the limit (and the kernel
/// keeps sending events) once it is reached.
const CAUTIOUS: &[&str] = &["--learning-rate", "0"];
const CAPPED: &str = "[policies.tcp-buffer.sysctl.\"net.ipv4.tcp_rmem\"]\nmax = 4194304\n";

#[test]
fn e2e_replace_under_load_handles_every_event_once() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("hswap", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("hswap-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("hswap-sock");
    let daemon = lifecycle::start_daemon(
        Daemon::builder().netns(bed.tuned_netns()).config(CAPPED),
        dir.path(),
        &socket,
        CAUTIOUS,
    );
    let transfer = bed.background_transfer(30).expect("bulk transfer");

    // The built-in is running and busy before the first replacement.
    wait_policy(&socket, POLICY, Duration::from_secs(15), |p| count(&p["events-handled"]) > 0);
    let mut digests = Vec::new();
    let mut routed_at_swap = Vec::new();
    for nonce in 1..=REPLACEMENTS {
        let bytes = tcp_buffer_variant(nonce);
        let digest = sha256(&bytes);
        install(dir.path(), FILE, &bytes);
        let entry = wait_policy(&socket, POLICY, Duration::from_secs(30), |p| {
            p["digest"] == digest.as_str() && count(&p["events-handled"]) > 0
        });
        assert_eq!(entry["state"], "running", "{entry}");
        routed_at_swap.push(count(&entry["totals"]["routed"]));
        digests.push(digest);
        std::thread::sleep(Duration::from_millis(700));
    }

    // A version that cannot start: the last good one stays in charge.
    let good = digests.last().cloned().expect("a replacement");
    install(dir.path(), FILE, &trap_in_init_bytes());
    daemon
        .wait_for("policy-load-failed for the broken version", Duration::from_secs(30), |l| {
            l.is_event("policy-load-failed") && l.field("source").is_some_and(|s| s.ends_with(FILE))
        })
        .expect("the broken version is reported");
    let before = policy(&socket, POLICY);
    std::thread::sleep(Duration::from_secs(2));
    let after = policy(&socket, POLICY);
    assert_eq!(after["digest"], good.as_str(), "the broken version took over: {after}");
    assert_eq!(after["state"], "running", "{after}");
    assert!(
        count(&after["events-handled"]) > count(&before["events-handled"]),
        "the version in charge stopped handling events: {before} -> {after}"
    );

    let throughput = transfer.wait().expect("transfer");
    let totals = lifecycle::settled_totals(&socket, POLICY);
    let (routed, handled, lost, failed) =
        (count(&totals["routed"]), count(&totals["handled"]), count(&totals["lost"]), count(&totals["failed"]));
    println!("totals over every version: {totals}");
    assert_eq!(routed, handled + lost + failed, "an event was lost or handled twice: {totals}");
    assert_eq!(failed, 0, "tcp-buffer never faults: {totals}");
    assert_eq!(lost, 0, "no queue overflowed, so nothing may be lost: {totals}");
    assert_eq!(count(&totals["versions"]), REPLACEMENTS + 1, "built-in + each replacement: {totals}");
    assert!(routed_at_swap.windows(2).all(|w| w[1] > w[0]), "events flowed between swaps: {routed_at_swap:?}");

    // Tuning continued across the replacements.
    let changes = daemon.events("sysctl-change");
    let status = result(&socket, &Request::Status);
    let tunable = status["tunables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tunable"] == "net.ipv4.tcp_rmem" && t["netns"] == bed.tuned_netns().name()))
        .cloned()
        .unwrap_or_else(|| panic!("tcp_rmem not in status: {status}"));
    assert_eq!(tunable["original"], harness::normalize(BAD_RMEM), "{tunable}");
    assert_eq!(tunable["current"], harness::normalize(&bed.current().expect("read")), "{tunable}");
    let lines = daemon.lines();
    let last_swap = lines
        .iter()
        .rposition(|l| l.is_event("policy-loaded") && l.field("source").is_some_and(|s| s.ends_with(FILE)))
        .expect("the replacements were logged");
    let after_swaps = lines[last_swap..].iter().filter(|l| l.is_event("sysctl-change")).count();
    assert!(after_swaps > 0, "tuning stopped after the replacements ({} changes before)", changes.len());
    harness::record(
        "hotswap.replace_under_load",
        json!({
            "replacements": REPLACEMENTS,
            "routed": routed, "handled": handled, "lost": lost, "failed": failed,
            "sysctl_changes": changes.len(),
            "sysctl_changes_after_last_swap": after_swaps,
            "throughput_gbit_s": throughput.gbit_per_s(),
        }),
    )
    .expect("results file");
}

/// Installs `bytes` and times the rename until the new digest runs, and
/// until it has handled an event (ms).
fn swap_latency(dir: &std::path::Path, socket: &std::path::Path, bytes: &[u8]) -> (f64, f64) {
    let digest = sha256(bytes);
    let started = Instant::now();
    install(dir, FILE, bytes);
    wait_policy(socket, POLICY, Duration::from_secs(30), |p| p["digest"] == digest.as_str());
    let running = started.elapsed().as_secs_f64() * 1000.0;
    wait_policy(socket, POLICY, Duration::from_secs(30), |p| {
        p["digest"] == digest.as_str() && count(&p["events-handled"]) > 0
    });
    (running, started.elapsed().as_secs_f64() * 1000.0)
}

#[test]
fn e2e_measure_swap_latency() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    const ROUNDS: u64 = 12;
    let bed = BufferBed::new("hslat", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("hslat-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("hslat-sock");
    let _daemon = lifecycle::start_daemon(
        Daemon::builder().netns(bed.tuned_netns()).config(CAPPED),
        dir.path(),
        &socket,
        CAUTIOUS,
    );
    let _transfer = bed.background_transfer(120).expect("bulk transfer");
    wait_policy(&socket, POLICY, Duration::from_secs(15), |p| count(&p["events-handled"]) > 0);

    // Never seen before: compiled on the rename. Nonces unique to this run.
    let base = u64::from(std::process::id()) << 20;
    let mut fresh = Vec::new();
    for i in 0..ROUNDS {
        fresh.push(swap_latency(dir.path(), &socket, &tcp_buffer_variant(base + i)));
    }
    // The same files again: compiled before, found in the cache.
    let mut cached = Vec::new();
    for i in 0..ROUNDS {
        cached.push(swap_latency(dir.path(), &socket, &tcp_buffer_variant(base + i)));
    }
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({ "n": v.len(), "p50_ms": lifecycle::percentile(&v, 50.0), "p99_ms": lifecycle::percentile(&v, 99.0),
                "min_ms": v.first(), "max_ms": v.last() })
    };
    let split = |v: Vec<(f64, f64)>| {
        let (running, handling): (Vec<f64>, Vec<f64>) = v.into_iter().unzip();
        json!({ "running": summary(running), "handling_events": summary(handling) })
    };
    let figures = json!({ "new_policy": split(fresh), "precompiled": split(cached) });
    println!("rename -> new version running, and handling events: {figures}");
    harness::record("hotswap.swap_latency", figures).expect("results file");
}
