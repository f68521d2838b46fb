//! End to end: the host-owned state store hands a policy's state to its
//! next version. A counting policy runs under a bulk transfer and keeps its
//! running count in the store; it is replaced (write-then-rename) by a new
//! version, which must start from the old version's count rather than zero;
//! and the store's quota refuses an oversized value.

use crate::lifecycle;

use std::time::Duration;

use lifecycle::{count, install, wait_policy, with_nonce};
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const POLICY: &str = "state-counter";
const FILE: &str = "state-counter.wasm";

fn inherited(line: &str) -> Option<u64> {
    line.strip_prefix("state-counter starting with ")?.split_whitespace().next()?.parse().ok()
}

#[test]
fn e2e_the_new_version_starts_from_the_old_versions_state() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("state", Side::Receiver, "4096 131072 98304").expect("test bed");
    let dir = harness::scratch_dir("state-policies").expect("policy dir");
    let counter = std::fs::read(wasmtune_tests::guests::guest_wasm(POLICY)).expect("fixture");
    install(dir.path(), FILE, &counter);
    let (_sock_dir, socket) = lifecycle::socket_in("state-sock");
    // Small steps keep sockets at the limit, so events keep coming.
    let daemon = lifecycle::start_daemon(
        Daemon::builder().netns(bed.tuned_netns()),
        dir.path(),
        &socket,
        &["--learning-rate", "0"],
    );
    let _transfer = bed.background_transfer(20).expect("bulk transfer");

    let before = wait_policy(&socket, POLICY, Duration::from_secs(20), |p| count(&p["events-handled"]) >= 5);
    let handled_by_first = count(&before["events-handled"]);
    install(dir.path(), FILE, &with_nonce(&counter, 1));
    daemon
        .wait_for("a second init", Duration::from_secs(20), |l| {
            l.is_event("policy-log") && l.message().and_then(|m| inherited(&m)).is_some_and(|n| n > 0)
        })
        .expect("the new version logs its inherited count");

    let starts: Vec<u64> =
        daemon.events("policy-log").iter().filter_map(|l| l.message().and_then(|m| inherited(&m))).collect();
    assert_eq!(starts.first(), Some(&0), "the first version starts from nothing: {starts:?}");
    let second = *starts.get(1).expect("a second version started");
    assert!(
        second >= handled_by_first,
        "the new version inherits the old one's count: {second} < {handled_by_first} handled before the swap"
    );
    // The new version logs its quota check right after its inherited count.
    let quota_checks = || {
        daemon
            .events("policy-log")
            .iter()
            .filter(|l| l.message().as_deref() == Some("state quota holds: quota-exceeded"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while quota_checks() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(quota_checks(), 2, "each version's oversized write is refused");
    harness::record(
        "state_handover",
        serde_json::json!({ "handled_by_first_version": handled_by_first, "inherited_by_second": second }),
    )
    .expect("record the figures");
    println!("state handover: first version handled {handled_by_first} events; the second started from {second}");
}
