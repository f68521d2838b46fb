//! End to end: a network namespace created and deleted while the daemon
//! runs is followed: one `namespace-change` line each way, naming it.

use std::time::Duration;

use wasmtune_tests::harness::{self, Daemon, Netns, Requirement};

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn a_namespace_made_and_deleted_while_running_is_followed() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    // Every namespace is tuned without --netns; --dry-run keeps the daemon
    // from changing anything in the ones this test does not own.
    let daemon = Daemon::builder().arg("--dry-run").start_ready().expect("daemon ready");

    let ns = Netns::new("ns-follow").expect("create a namespace");
    let name = ns.name().to_string();
    let created = daemon
        .wait_for("namespace-change (created)", EVENT_TIMEOUT, |l| {
            l.is_event("namespace-change") && l.field_is("netns", &name) && l.field_is("created", "true")
        })
        .expect("the new namespace is noticed");
    let cookie = created.field("cookie").expect("cookie field");
    assert!(cookie.parse::<u64>().is_ok_and(|c| c > 0), "{}", created.raw);

    drop(ns);
    let gone = daemon
        .wait_for("namespace-change (gone)", EVENT_TIMEOUT, |l| {
            l.is_event("namespace-change") && l.field_is("netns", &name) && l.field_is("created", "false")
        })
        .expect("the deleted namespace is noticed");
    assert_eq!(gone.field("cookie"), Some(cookie), "{}", gone.raw);
}
