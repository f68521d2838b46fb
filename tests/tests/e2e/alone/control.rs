//! End to end: the control socket and the commands on top of it — file
//! modes and the peer-credential check, `status`/`policy list` JSON schema,
//! `policy disable` with `rollback-on-unload`, `policy enable`, `summary`,
//! `rollback` against the running daemon and offline, and a quarantined
//! policy (backed off, then parked) coming back when its file changes.

use crate::lifecycle;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use lifecycle::{count, install, policy, result, wait_policy};
use serde_json::{Value as Json, json};
use wasmtune::control::{ClientError, ControlClient, Request};
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen in {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn e2e_control_socket_status_disable_enable_rollback() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("ctl", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("ctl-policies").expect("policy dir");
    let state = harness::private_dir("ctl-state").expect("state dir");
    let (_sock_dir, socket) = lifecycle::socket_in("ctl-sock");
    let sock = socket.to_string_lossy().into_owned();
    let config = "[policies.tcp-buffer]\nrollback-on-unload = true\n";
    let mut daemon = lifecycle::start_daemon(
        Daemon::builder().netns(bed.tuned_netns()).state_dir(state.path()).config(config),
        dir.path(),
        &socket,
        &[],
    );

    // Modes: directory 0700 (made by the daemon), socket 0600.
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);
    assert_eq!(mode(&socket), 0o600);

    bed.transfer(3).expect("transfer");
    wait_until("a change of tcp_rmem", Duration::from_secs(15), || {
        harness::normalize(&bed.current().expect("read")) != harness::normalize(BAD_RMEM)
    });

    // status --json: the documented schema.
    let status = harness::cli_json(&["status", "--json", "--socket", &sock]);
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["schema"], 1, "{status}");
    let result_ = &status["result"];
    for key in ["pid", "uptime-ms", "dry-run", "state-dir", "policies", "tunables", "overrides"] {
        assert!(result_.get(key).is_some(), "status lacks `{key}`: {result_}");
    }
    let tcp = result_["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "tcp-buffer"))
        .unwrap_or_else(|| panic!("no tcp-buffer: {result_}"));
    for key in [
        "version",
        "source",
        "digest",
        "state",
        "events-handled",
        "events-lost",
        "events-failed",
        "faults",
        "queued-batches",
        "granted-tunables",
        "owned-tunables",
        "totals",
    ] {
        assert!(tcp.get(key).is_some(), "policy entry lacks `{key}`: {tcp}");
    }
    assert_eq!(tcp["state"], "running");
    assert!(count(&tcp["events-handled"]) > 0, "{tcp}");
    let owned = format!("{}/net.ipv4.tcp_rmem", bed.tuned_netns().name());
    assert!(tcp["owned-tunables"].as_array().is_some_and(|o| o.iter().any(|t| t == owned.as_str())), "{tcp}");
    let tunable = result_["tunables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tunable"] == "net.ipv4.tcp_rmem"))
        .unwrap_or_else(|| panic!("no tcp_rmem: {result_}"));
    assert_eq!(tunable["original"], harness::normalize(BAD_RMEM), "{tunable}");
    assert_eq!(tunable["current"], harness::normalize(&bed.current().expect("read")), "{tunable}");
    assert_eq!(tunable["last-change"]["policy"], "tcp-buffer", "{tunable}");
    assert!(!tunable["last-change"]["reason"].as_str().unwrap_or_default().is_empty(), "{tunable}");

    // Text forms answer too.
    let (ok, text, _) = harness::cli(&["status", "--socket", &sock]);
    assert!(ok && text.contains("tcp-buffer") && text.contains("net.ipv4.tcp_rmem"), "{text}");
    let summary = harness::cli_json(&["summary", "--json", "--socket", &sock]);
    assert!(summary["result"]["tunables"].as_array().is_some_and(|t| !t.is_empty()), "{summary}");

    // A peer that is not root is not answered, even when the file modes let it in.
    for dir in socket.ancestors().skip(1).take(2) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(65534)).expect("become nobody");
    let as_nobody = ControlClient::connect(&socket).and_then(|mut c| c.ask(&Request::Status));
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).expect("back to root");
    assert!(matches!(as_nobody, Err(ClientError::NoAnswer { .. }) | Err(ClientError::Io { .. })), "{as_nobody:?}");

    // Disable with rollback-on-unload: the values it set are restored.
    let disabled = harness::cli_json(&["policy", "disable", "tcp-buffer", "--json", "--socket", &sock]);
    assert_eq!(disabled["ok"], true, "{disabled}");
    assert_eq!(harness::normalize(&bed.current().expect("read")), harness::normalize(BAD_RMEM));
    assert_eq!(policy(&socket, "tcp-buffer")["state"], "disabled");
    assert!(daemon.events("rollback").iter().any(|l| l.field_is("tunable", "net.ipv4.tcp_rmem")));
    let unknown = lifecycle::ask(&socket, &Request::PolicyDisable { name: "no-such-policy".into() });
    assert_eq!(unknown["ok"], false, "{unknown}");

    // Enable: it runs and tunes again.
    let enabled = harness::cli_json(&["policy", "enable", "tcp-buffer", "--json", "--socket", &sock]);
    assert_eq!(enabled["ok"], true, "{enabled}");
    assert_eq!(policy(&socket, "tcp-buffer")["state"], "running");
    bed.transfer(3).expect("transfer");
    wait_until("tuning after enable", Duration::from_secs(15), || {
        harness::normalize(&bed.current().expect("read")) != harness::normalize(BAD_RMEM)
    });

    // Rollback through the running daemon.
    let rollback =
        harness::cli_json(&["rollback", "--json", "--socket", &sock, "--state-dir", &state.path().to_string_lossy()]);
    assert_eq!(rollback["ok"], true, "{rollback}");
    assert!(rollback["result"]["restored"].as_array().is_some_and(|r| !r.is_empty()), "{rollback}");
    assert_eq!(harness::normalize(&bed.current().expect("read")), harness::normalize(BAD_RMEM));

    // With the daemon gone: the socket is removed and rollback runs offline.
    daemon.terminate().expect("clean exit");
    assert!(!socket.exists(), "the socket outlived the daemon");
    let offline =
        harness::cli_json(&["rollback", "--json", "--socket", &sock, "--state-dir", &state.path().to_string_lossy()]);
    assert_eq!(offline["ok"], true, "{offline}");
    let (ok, _, stderr) = harness::cli(&["status", "--socket", &sock]);
    assert!(!ok && stderr.contains("no wasmtune daemon answers"), "{stderr}");
}

#[test]
fn e2e_quarantine_backs_off_parks_and_recovers_on_a_new_file() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("quar", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("quar-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("quar-sock");
    // Installed before the start: once tcp-buffer owns tcp_rmem, a newcomer
    // claiming it would be refused.
    let trap = std::fs::read(wasmtune_tests::guests::guest_wasm("hostile-trap")).expect("fixture");
    install(dir.path(), "trap.wasm", &trap);
    let _daemon = lifecycle::start_daemon(Daemon::builder().netns(bed.tuned_netns()), dir.path(), &socket, &[]);
    let _transfer = bed.background_transfer(40).expect("transfer");

    let started = Instant::now();
    let backing = wait_policy(&socket, "hostile-trap", Duration::from_secs(20), |p| p["state"] == "backing-off");
    let parked = wait_policy(&socket, "hostile-trap", Duration::from_secs(30), |p| p["state"] == "quarantined");
    let to_quarantine = started.elapsed();
    assert_eq!(count(&parked["faults"]), 3, "{parked}");
    // Back-off 1 s then 2 s: parked no sooner than 3 s after the first fault.
    assert!(to_quarantine >= Duration::from_secs(3), "quarantined after {to_quarantine:?}: {backing} {parked}");

    // The same file again changes nothing; a new file starts afresh.
    let renewed = lifecycle::with_nonce(&trap, 1);
    let digest = lifecycle::sha256(&renewed);
    install(dir.path(), "trap.wasm", &renewed);
    let fresh = wait_policy(&socket, "hostile-trap", Duration::from_secs(20), |p| p["digest"] == digest.as_str());
    assert_ne!(fresh["state"], "quarantined", "{fresh}");
    assert!(count(&fresh["faults"]) < 3, "{fresh}");
    harness::record(
        "control.quarantine",
        json!({ "seconds_to_quarantine": to_quarantine.as_secs_f64(), "faults": count(&parked["faults"]) }),
    )
    .expect("results file");
    let _ = result(&socket, &Request::Status);
}

/// A quarantine outlives the daemon: the file is recorded in
/// `<state-dir>/quarantine.json`, is not loaded at the next start (said
/// once, with the way out), and `policy enable` clears it.
#[test]
fn e2e_quarantine_is_kept_across_a_restart_until_policy_enable() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bed = BufferBed::new("quarkeep", Side::Receiver, BAD_RMEM).expect("test bed");
    let dir = harness::scratch_dir("quarkeep-policies").expect("policy dir");
    let state = harness::private_dir("quarkeep-state").expect("state dir");
    let (_sock_dir, socket) = lifecycle::socket_in("quarkeep-sock");
    let sock = socket.to_string_lossy().into_owned();
    let trap = std::fs::read(wasmtune_tests::guests::guest_wasm("hostile-trap")).expect("fixture");
    let digest = lifecycle::sha256(&trap);
    install(dir.path(), "trap.wasm", &trap);
    let builder = || Daemon::builder().netns(bed.tuned_netns()).state_dir(state.path());

    let mut first = lifecycle::start_daemon(builder(), dir.path(), &socket, &[]);
    let transfer = bed.background_transfer(60).expect("transfer");
    wait_policy(&socket, "hostile-trap", Duration::from_secs(30), |p| p["state"] == "quarantined");
    // No traffic from here on: tcp-buffer must not come to own tcp_rmem in
    // the second run, or hostile-trap (which claims it) could not start again.
    drop(transfer);
    let kept_file = state.path().join("quarantine.json");
    let kept: Json = serde_json::from_str(&std::fs::read_to_string(&kept_file).expect("quarantine.json written"))
        .expect("quarantine.json is JSON");
    let entry = kept["quarantined"].as_array().and_then(|l| l.iter().find(|e| e["digest"] == digest.as_str()));
    let reason = entry.and_then(|e| e["reason"].as_str()).unwrap_or_default();
    assert!(entry.is_some_and(|e| e["name"] == "hostile-trap") && reason.starts_with("trap"), "{kept}");
    assert_eq!(std::fs::metadata(&kept_file).expect("stat").permissions().mode() & 0o777, 0o600);
    assert!(first.terminate().expect("clean exit").success());

    // The same file at the next start: refused, and said so once.
    let second = lifecycle::start_daemon(builder(), dir.path(), &socket, &[]);
    assert_eq!(policy(&socket, "hostile-trap")["state"], "not-running");
    let refused = second.events("policy-still-quarantined");
    assert_eq!(refused.len(), 1, "{:?}", refused.iter().map(|l| &l.raw).collect::<Vec<_>>());
    assert!(refused[0].raw.contains("wasmtune policy enable hostile-trap"), "{}", refused[0].raw);

    // `policy enable` clears it: the file runs again and leaves the list.
    let enabled = harness::cli_json(&["policy", "enable", "hostile-trap", "--json", "--socket", &sock]);
    assert_eq!(enabled["ok"], true, "{enabled}");
    let fresh = policy(&socket, "hostile-trap");
    assert_ne!(fresh["state"], "quarantined", "{fresh}");
    assert_ne!(fresh["state"], "not-running", "{fresh}");
    let cleared = std::fs::read_to_string(&kept_file).expect("quarantine.json");
    assert!(!cleared.contains(&digest), "still listed after `policy enable`: {cleared}");
    harness::record("control.quarantine_kept", json!({ "refused_lines": refused.len() })).expect("results file");
}
