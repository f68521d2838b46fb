//! End to end: hundreds of add, replace and remove operations in a watched
//! policy directory while events flow. The daemon must not crash, its open
//! descriptors must stay flat (memory is measured and reported), and after
//! the last change settles the running policies must be exactly what the
//! directory (over the built-ins) says.

use crate::lifecycle;

use std::time::Duration;

use lifecycle::{count, install, policy, sha256, tcp_buffer_variant};
use serde_json::json;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
const OPERATIONS: u64 = 300;
/// Versions cycled through: each is compiled once, then found in the cache.
const VARIANTS: u64 = 4;
const CAPPED: &str = "[policies.tcp-buffer.sysctl.\"net.ipv4.tcp_rmem\"]\nmax = 4194304\n";

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn e2e_churn_keeps_the_daemon_flat_and_in_step_with_the_directory() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("churn", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("churn-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("churn-sock");
    let mut daemon = lifecycle::start_daemon(
        Daemon::builder().netns(bed.tuned_netns()).config(CAPPED),
        dir.path(),
        &socket,
        &["--learning-rate", "0"],
    );
    let transfer = bed.background_transfer(600).expect("bulk transfer");
    let other = lifecycle::other_policy_bytes();
    // Warm up: every variant once, so the start figures include the caches.
    for nonce in 0..VARIANTS {
        install(dir.path(), "tcp-buffer.wasm", &tcp_buffer_variant(nonce));
        std::thread::sleep(Duration::from_millis(600));
    }
    install(dir.path(), "other.wasm", &other);
    std::thread::sleep(Duration::from_millis(600));
    std::fs::remove_file(dir.path().join("other.wasm")).expect("remove");
    std::fs::remove_file(dir.path().join("tcp-buffer.wasm")).expect("remove");
    std::thread::sleep(Duration::from_secs(2));
    let pid = daemon.pid();
    let (rss_start, fds_start) = lifecycle::rss_and_fds(pid);
    let targets_start = lifecycle::fd_targets(pid);
    let mut samples = Vec::new();
    let handled_start = count(&policy(&socket, "tcp-buffer")["totals"]["handled"]);

    let seed = u64::from(std::process::id());
    let mut random = Lcg(seed);
    let (mut replaced, mut removed, mut added_other, mut removed_other) = (0, 0, 0, 0);
    for op in 0..OPERATIONS {
        if op % 50 == 0 {
            samples.push(lifecycle::rss_and_fds(pid));
        }
        match random.below(10) {
            0..=5 => {
                install(dir.path(), "tcp-buffer.wasm", &tcp_buffer_variant(random.below(VARIANTS)));
                replaced += 1;
            }
            6 | 7 => {
                if std::fs::remove_file(dir.path().join("tcp-buffer.wasm")).is_ok() {
                    removed += 1;
                }
            }
            8 => {
                install(dir.path(), "other.wasm", &other);
                added_other += 1;
            }
            _ => {
                if std::fs::remove_file(dir.path().join("other.wasm")).is_ok() {
                    removed_other += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(random.below(400)));
    }
    // Let the last change settle and be acted on.
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon.is_running(), "the daemon died during the churn");

    let tcp = policy(&socket, "tcp-buffer");
    match std::fs::read(dir.path().join("tcp-buffer.wasm")) {
        Ok(bytes) => assert_eq!(tcp["digest"], sha256(&bytes).as_str(), "tcp-buffer is not the file's: {tcp}"),
        Err(_) => assert_eq!(tcp["source"], "builtin", "tcp-buffer is not the built-in: {tcp}"),
    }
    assert_eq!(tcp["state"], "running", "{tcp}");
    let list = lifecycle::result(&socket, &wasmtune::control::Request::PolicyList);
    let other_running = list["policies"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["name"] == lifecycle::OTHER_POLICY && p["state"] == "running"));
    assert_eq!(other_running, dir.path().join("other.wasm").exists(), "{list}");

    let (rss_end, fds_end) = lifecycle::rss_and_fds(pid);
    let handled_end = count(&tcp["totals"]["handled"]);
    // Stop the events, so that the totals can settle.
    drop(transfer);
    let totals = lifecycle::settled_totals(&socket, "tcp-buffer");
    let targets_end = lifecycle::fd_targets(pid);
    let added: Vec<&String> = targets_end.iter().filter(|t| !targets_start.contains(t)).collect();
    println!(
        "rss {rss_start} kB -> {rss_end} kB, fds {fds_start} -> {fds_end} (new: {added:?}), every 50 operations: {samples:?}, totals {totals}"
    );
    // Flat: descriptors opened once (sysctl files kept open for reading,
    // a control connection being closed) are not growth; growth would
    // show in every sample.
    let after_first_ops = samples.get(1).map_or(fds_start, |s| s.1);
    assert!(handled_end > handled_start, "no event was handled during the churn");
    assert_eq!(
        count(&totals["routed"]),
        count(&totals["handled"]) + count(&totals["lost"]) + count(&totals["failed"]),
        "an event was lost or handled twice: {totals}"
    );
    assert!(fds_end <= after_first_ops + 4, "open descriptors grew: {fds_start} -> {after_first_ops} -> {fds_end}");
    assert!(rss_end < rss_start * 2, "memory doubled: {rss_start} kB -> {rss_end} kB");
    harness::record(
        "churn.directory_churn",
        json!({
            "operations": OPERATIONS, "replaced": replaced, "removed": removed,
            "added_other": added_other, "removed_other": removed_other,
            "rss_kb_start": rss_start, "rss_kb_end": rss_end, "fds_start": fds_start, "fds_end": fds_end,
            "events_handled_during": handled_end - handled_start,
            "samples_rss_kb_fds": samples,
            "versions_started": count(&totals["versions"]),
        }),
    )
    .expect("results file");
    daemon.terminate().expect("clean exit");
}
