//! End to end: one tunable in one netns has one owner. Once tcp-buffer owns
//! a namespace's tcp_rmem, a newly dropped policy whose manifest claims
//! tcp_rmem is refused with a message naming the owner, while a policy that
//! claims nothing owned still loads.

use crate::lifecycle;

use std::time::Duration;

use lifecycle::install;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

#[test]
fn e2e_a_new_policy_claiming_an_owned_tunable_is_refused() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("owner", Side::Receiver, "4096 131072 98304").expect("test bed");
    let dir = harness::scratch_dir("owner-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("owner-sock");
    let daemon = lifecycle::start_daemon(Daemon::builder().netns(bed.tuned_netns()), dir.path(), &socket, &[]);
    let _transfer = bed.background_transfer(15).expect("bulk transfer");
    daemon
        .wait_for("tcp-buffer owns tcp_rmem", Duration::from_secs(20), |l| {
            l.is_event("sysctl-change") && l.field_is("tunable", "net.ipv4.tcp_rmem")
        })
        .expect("tcp-buffer changes tcp_rmem first");

    let claimant = std::fs::read(wasmtune_tests::guests::guest_wasm("hostile-bounds")).expect("fixture");
    install(dir.path(), "hostile-bounds.wasm", &claimant);
    let refused = daemon
        .wait_for("the claimant refused", Duration::from_secs(20), |l| {
            l.is_event("policy-load-failed") && l.field("source").is_some_and(|s| s.ends_with("hostile-bounds.wasm"))
        })
        .expect("a policy-load-failed line for the claimant");
    let error = refused.field("error").unwrap_or_default();
    assert!(error.contains("net.ipv4.tcp_rmem") && error.contains("owns") && error.contains("tcp-buffer"), "{error}");

    let bystander = std::fs::read(wasmtune_tests::guests::guest_wasm("state-counter")).expect("fixture");
    install(dir.path(), "state-counter.wasm", &bystander);
    daemon
        .wait_for("the bystander loaded", Duration::from_secs(20), |l| {
            l.is_event("policy-loaded") && l.field_is("policy", "state-counter")
        })
        .expect("a policy claiming nothing owned loads");
    assert!(daemon.events("policy-loaded").iter().all(|l| !l.field_is("policy", "hostile-bounds")));
}
