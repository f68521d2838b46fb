//! End to end: a policy that asks for per-destination settings many times a
//! tick, each for another peer, within its grant.
//!
//! - 100 000 calls a tick: the per-call deadline stops each tick, the policy
//!   is quarantined, and what it got through is no more than its change
//!   budget.
//! - A flood that fits in its deadline (2 000 calls a tick, 20 000 a second)
//!   for 30 s: the host's global bounds (a change budget per policy, a
//!   bounded actuator queue, at most 256 peers per policy and namespace, a
//!   journal compacted past its size) keep the daemon's memory and the
//!   journal bounded, and tcp-buffer keeps writing beside it.

use crate::lifecycle;

use std::time::{Duration, Instant};

use serde_json::json;
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
const JOURNAL_BOUND: u64 = 64 * 1024;
const FLOOD_SECONDS: u64 = 30;
/// A policy's change budget: a burst, then a rate (`caps::budget`).
const BUDGET_BURST: usize = 200;
const BUDGET_PER_SECOND: usize = 20;

fn flood_changes(daemon: &Daemon) -> usize {
    daemon.events("peer-change").iter().filter(|l| l.field_is("policy", "hostile-peer-flood")).count()
}

#[test]
fn a_hundred_thousand_calls_a_tick_hit_the_deadline_and_the_change_budget() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let own = harness::Netns::new("flood100k").expect("netns");
    let dir = harness::scratch_dir("flood100k-policies").expect("policy dir");
    lifecycle::install(
        dir.path(),
        "hostile-peer-flood.wasm",
        &std::fs::read(guest_wasm("hostile-peer-flood")).expect("fixture"),
    );
    let mut daemon =
        Daemon::builder().netns(&own).policy_dir(dir.path()).enable_policy_files().start_ready().expect("daemon ready");
    let started = Instant::now();
    let quarantined = daemon
        .wait_for("the flood quarantined", Duration::from_secs(30), |l| {
            l.is_event("policy-quarantined") && l.field_is("policy", "hostile-peer-flood")
        })
        .expect("100 000 calls a tick are stopped by the per-call deadline");
    let seconds = started.elapsed().as_secs_f64();
    assert!(quarantined.raw.contains("deadline"), "{}", quarantined.raw);
    let changes = flood_changes(&daemon);
    let budget = BUDGET_BURST + (seconds.ceil() as usize + 1) * BUDGET_PER_SECOND;
    assert!(changes <= budget, "{changes} peer changes in {seconds:.1} s, budget {budget}");
    let status = daemon.terminate().expect("clean exit");
    assert!(status.success(), "daemon exit status {status}");
    println!("100k a tick: quarantined after {seconds:.1} s, {changes} peer changes (budget {budget})");
    harness::record(
        "hostile_flood.hundred_thousand_a_tick",
        json!({ "quarantined_after_s": seconds, "peer_changes": changes, "budget": budget }),
    )
    .expect("record figures");
}

fn journal_len(state_dir: &std::path::Path) -> u64 {
    std::fs::metadata(state_dir.join("journal.jsonl")).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_sustained_peer_flood_keeps_memory_and_journal_bounded_while_tcp_buffer_writes() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("peerflood", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("flood-policies").expect("policy dir");
    let state = harness::private_dir("flood-state").expect("state dir");
    lifecycle::install(
        dir.path(),
        "hostile-peer-flood.wasm",
        &std::fs::read(guest_wasm("hostile-peer-flood")).expect("fixture"),
    );
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .policy_dir(dir.path())
        .enable_policy_files()
        .state_dir(state.path())
        .config(&format!(
            "journal-max-bytes = {JOURNAL_BOUND}\n[policies.hostile-peer-flood]\nsettings = {{ per-tick = \"2000\" }}\n"
        ))
        .start_ready()
        .expect("daemon ready");
    daemon
        .wait_for("the flood runs", Duration::from_secs(20), |l| {
            l.field_is("policy", "hostile-peer-flood") && l.raw.contains("peer flood:")
        })
        .expect("the flooding policy runs its ticks");

    // Memory after the flood has run a few seconds (allocators and maps warm).
    std::thread::sleep(Duration::from_secs(5));
    let (rss_early_kb, _) = lifecycle::rss_and_fds(daemon.pid());
    let _transfer = bed.background_transfer(FLOOD_SECONDS as u32).expect("bulk transfer");
    let started = Instant::now();
    let mut journal_max = 0;
    while started.elapsed() < Duration::from_secs(FLOOD_SECONDS) {
        journal_max = journal_max.max(journal_len(state.path()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss_late_kb, fds) = lifecycle::rss_and_fds(daemon.pid());

    // tcp-buffer wrote tcp_rmem while the flood went on.
    let rmem_changes: Vec<_> = daemon
        .events("sysctl-change")
        .into_iter()
        .filter(|l| l.field_is("policy", "tcp-buffer") && l.field_is("tunable", "net.ipv4.tcp_rmem"))
        .collect();
    assert!(!rmem_changes.is_empty(), "tcp-buffer made no change to tcp_rmem during the flood");
    let flood_lines: Vec<String> = daemon
        .lines()
        .into_iter()
        .filter(|l| l.field_is("policy", "hostile-peer-flood") && l.raw.contains("peer flood:"))
        .filter_map(|l| l.message())
        .collect();
    let last = flood_lines.last().cloned().unwrap_or_default();
    let counts: Vec<u64> = last.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    let (accepted, refused) = (counts.first().copied().unwrap_or(0), counts.get(1).copied().unwrap_or(0));
    let compactions = daemon.events("journal-compacted").len();
    let peer_changes = flood_changes(&daemon);
    let faults = daemon.events("policy-fault").len();
    println!(
        "flood: {accepted} accepted, {refused} refused; journal max {journal_max} B (bound {JOURNAL_BOUND}), \
         {compactions} compactions; RSS {rss_early_kb} -> {rss_late_kb} kB; {fds} fds; \
         tcp-buffer changes {}",
        rmem_changes.len()
    );
    assert!(refused > accepted * 100, "the flood was not held back: {last}");
    assert!(compactions > 0, "the journal was never compacted (max {journal_max} B)");
    // The bound moves up to twice the last snapshot, so that a large state
    // is not rewritten at every change; one record may pass it.
    let snapshot_max: u64 = daemon
        .events("journal-compacted")
        .iter()
        .filter_map(|l| l.field("after").and_then(|a| a.parse().ok()))
        .max()
        .unwrap_or(0);
    let limit = JOURNAL_BOUND.max(2 * snapshot_max) + 4096;
    assert!(journal_max <= limit, "journal reached {journal_max} bytes, limit {limit}");
    assert!(
        rss_late_kb < rss_early_kb + 32 * 1024,
        "daemon RSS grew from {rss_early_kb} kB to {rss_late_kb} kB in {FLOOD_SECONDS} s of flood"
    );
    let status = daemon.terminate().expect("clean exit");
    assert!(status.success(), "daemon exit status {status}");
    harness::record(
        "hostile_flood.peer_flood",
        json!({
            "accepted": accepted, "refused": refused, "journal_max_bytes": journal_max,
            "journal_bound": JOURNAL_BOUND, "largest_snapshot_bytes": snapshot_max, "compactions": compactions, "peer_change_lines": peer_changes,
            "rss_early_kb": rss_early_kb, "rss_late_kb": rss_late_kb, "fds": fds,
            "tcp_buffer_rmem_changes": rmem_changes.len(), "flood_faults": faults,
        }),
    )
    .expect("record figures");
}
