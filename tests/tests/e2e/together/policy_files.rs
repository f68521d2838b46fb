//! End to end: a policy file is the administrator's decision, not the
//! directory's. A file dropped into a watched directory changes nothing
//! until it is enabled (by `policy enable`, or in the configuration), and a
//! file named like a built-in does not take the built-in's place, ownership
//! or state unless the configuration declares it the built-in's replacement.

use crate::lifecycle;

use std::time::Duration;

use lifecycle::{install, policy, result, socket_in};
use wasmtune::control::Request;
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, Daemon, Requirement};

#[test]
fn a_dropped_file_runs_only_once_enabled_and_never_in_a_built_ins_place() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let own = harness::Netns::new("files").expect("netns");
    let dir = harness::scratch_dir("files-policies").expect("policy dir");
    let (_sock_dir, socket) = socket_in("files-sock");
    let counter = std::fs::read(guest_wasm("state-counter")).expect("fixture");
    install(dir.path(), "state-counter.wasm", &counter);
    // A newer tcp-buffer, as a vendor package might ship it.
    install(dir.path(), "tcp-buffer.wasm", &lifecycle::tcp_buffer_variant(7));

    let daemon = Daemon::builder()
        .netns(&own)
        .policy_dir(dir.path())
        .control_socket(&socket)
        .start_ready()
        .expect("daemon ready");

    // Not enabled: said once, with the way to enable it; nothing compiled,
    // nothing running.
    let not_enabled = daemon.events("policy-not-enabled");
    assert_eq!(not_enabled.len(), 1, "{:?}", not_enabled.iter().map(|l| &l.raw).collect::<Vec<_>>());
    assert!(not_enabled[0].field_is("policy", "state-counter"), "{}", not_enabled[0].raw);
    assert!(not_enabled[0].raw.contains("wasmtune policy enable state-counter"), "{}", not_enabled[0].raw);
    assert_eq!(policy(&socket, "state-counter")["state"], "disabled");
    assert!(daemon.events("policy-loaded").iter().all(|l| !l.field_is("policy", "state-counter")));

    // Named like a built-in, not declared its replacement: refused, and
    // the built-in keeps running from the binary.
    let refused = daemon.events("policy-load-failed");
    let refusal =
        refused.iter().find(|l| l.field("source").is_some_and(|s| s.ends_with("tcp-buffer.wasm"))).unwrap_or_else(
            || panic!("no refusal of tcp-buffer.wasm: {:?}", refused.iter().map(|l| &l.raw).collect::<Vec<_>>()),
        );
    let error = refusal.field("error").unwrap_or_default();
    assert!(error.contains("built-in policy tcp-buffer") && error.contains("replace-builtin = true"), "{error}");
    let builtin = policy(&socket, "tcp-buffer");
    assert_eq!(builtin["source"], "builtin", "{builtin}");

    // The administrator enables the file: only now is it compiled and run.
    let enabled = result(&socket, &Request::PolicyEnable { name: "state-counter".into() });
    assert_eq!(enabled["running"], true, "{enabled}");
    daemon
        .wait_for("state-counter loaded", Duration::from_secs(10), |l| {
            l.is_event("policy-loaded") && l.field_is("policy", "state-counter")
        })
        .expect("state-counter loads once enabled");
    assert_eq!(policy(&socket, "tcp-buffer")["source"], "builtin");
    harness::record(
        "policy_files.enable_and_replace",
        serde_json::json!({ "not_enabled": not_enabled[0].raw, "builtin_name_refused": error }),
    )
    .expect("record figures");
}

/// The configuration declares the file tcp-buffer's replacement: it takes
/// over from the built-in at start.
#[test]
fn a_declared_replacement_takes_the_built_ins_place() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let own = harness::Netns::new("replace").expect("netns");
    let dir = harness::scratch_dir("replace-policies").expect("policy dir");
    let (_sock_dir, socket) = socket_in("replace-sock");
    let variant = lifecycle::tcp_buffer_variant(8);
    install(dir.path(), "tcp-buffer.wasm", &variant);
    let daemon = Daemon::builder()
        .netns(&own)
        .policy_dir(dir.path())
        .replace_builtin("tcp-buffer")
        .control_socket(&socket)
        .start_ready()
        .expect("daemon ready");
    let entry = policy(&socket, "tcp-buffer");
    assert!(entry["source"].as_str().is_some_and(|s| s.ends_with("tcp-buffer.wasm")), "{entry}");
    assert_eq!(entry["digest"], lifecycle::sha256(&variant), "{entry}");
    assert!(daemon.events("policy-not-enabled").is_empty());
}
