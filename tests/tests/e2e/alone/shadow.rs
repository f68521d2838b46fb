//! Shadow versions on the real kernel: a tcp-buffer variant (it raises by
//! two steps) placed in `shadow/` of a policy directory runs on the events
//! of a namespace with a tiny `tcp_rmem` and real traffic. Alone, it logs
//! the changes it would make and the kernel value is untouched. Beside the
//! live tcp-buffer, each of its changes is logged with the live version's
//! for the same batch, and `status` counts agreements; a shadow identical
//! to the live version agrees with it.

use crate::lifecycle;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};
use wasmtune::control::Request;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";

fn shadow_dir(policies: &Path) -> std::path::PathBuf {
    let dir = policies.join("shadow");
    std::fs::create_dir_all(&dir).expect("shadow directory");
    dir
}

/// Runs a daemon over `bed` with `config`, traffic for a few seconds; the
/// daemon's lines and its status entry for the tcp-buffer shadow.
fn run_with_shadow(bed: &BufferBed, policies: &Path, config: &str, label: &str) -> (Vec<harness::LogLine>, Json) {
    let (_sock_dir, socket) = lifecycle::socket_in(label);
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .policy_dir(policies)
        .control_socket(&socket)
        .config(config)
        .start_ready()
        .expect("daemon ready");
    let started = daemon.lines().iter().any(|l| l.is_event("shadow-started"));
    assert!(started, "the shadow did not start");
    let is_shadow_change = bed.matcher("shadow-change");
    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| bed.transfer(5));
        let seen = daemon.wait_for("a shadow-change line", Duration::from_secs(15), &is_shadow_change);
        traffic.join().expect("traffic thread").expect("transfer");
        seen.expect("the shadow decides on the namespace's events");
    });
    let status = lifecycle::result(&socket, &Request::Status);
    let shadow = status["shadows"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "tcp-buffer").cloned())
        .unwrap_or_else(|| panic!("no tcp-buffer shadow in status: {status}"));
    assert!(daemon.terminate().expect("daemon exits").success());
    (daemon.lines(), shadow)
}

#[test]
fn a_shadow_logs_what_it_would_change_and_changes_nothing() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let work = tempfile::tempdir().expect("a work directory");
    let variant = lifecycle::build_tcp_buffer_variant(&work.path().join("variant"));
    let policies = harness::scratch_dir("shadow-policies").expect("policy directory");
    std::fs::copy(&variant, shadow_dir(policies.path()).join("tcp-buffer.wasm")).expect("install the shadow");
    let bed = BufferBed::new("shadow", Side::Receiver, BAD_RMEM).expect("test bed");

    // Alone: the live tcp-buffer is off; the shadow advises.
    let (lines, alone) = run_with_shadow(&bed, policies.path(), "[policies.tcp-buffer]\nenabled = false\n", "shadow-a");
    let changes: Vec<_> = bed.lines_about(&lines, "shadow-change");
    assert_eq!(bed.current().expect("read tcp_rmem"), harness::normalize(BAD_RMEM), "the kernel value is untouched");
    assert!(bed.lines_about(&lines, "sysctl-change").is_empty(), "nothing was changed");
    let first = &changes[0];
    assert_eq!(first.field("value").as_deref(), Some("4096 131072 147456"), "two steps of 98304: {}", first.raw);
    assert_eq!(first.field("live").as_deref(), Some("no live version"), "{}", first.raw);
    assert!(alone["decisions"].as_u64().unwrap_or(0) >= 1 && alone["live"] == false, "{alone}");

    // Beside the live tcp-buffer: each shadow change names what the live
    // version did on the same batch; the variant's two steps never agree
    // with the live version's one.
    let (lines, beside) = run_with_shadow(&bed, policies.path(), "", "shadow-b");
    let live_changes = bed.lines_about(&lines, "sysctl-change");
    assert!(!live_changes.is_empty(), "the live version tuned");
    assert!(
        live_changes.iter().all(|l| l.field("policy").as_deref() == Some("tcp-buffer")),
        "only the live version changed anything"
    );
    let shadow_changes = bed.lines_about(&lines, "shadow-change");
    let paired = shadow_changes.iter().filter(|l| l.field("live").is_some_and(|v| v.starts_with("4096"))).count();
    assert!(paired >= 1, "a shadow change names the live version's value for the same batch");
    assert!(beside["live"] == true && beside["disagreements"].as_u64().unwrap_or(0) >= 1, "{beside}");

    // The live version's own bytes as the shadow: they decide alike.
    let same = lifecycle::tcp_buffer_variant(u64::from(std::process::id()));
    std::fs::write(shadow_dir(policies.path()).join("tcp-buffer.wasm"), same).expect("install the same version");
    harness::set_sysctl_in(bed.tuned_netns(), bed.tunable(), BAD_RMEM).expect("reset tcp_rmem");
    let (_, twin) = run_with_shadow(&bed, policies.path(), "", "shadow-c");
    let agreements = twin["agreements"].as_u64().unwrap_or(0);
    assert!(agreements >= 1, "{twin}");
    println!(
        "alone: {} shadow changes, kernel untouched; variant beside live: {} decisions, {} agreements, {} \
         disagreements; identical beside live: {} decisions, {} agreements, {} disagreements",
        changes.len(),
        beside["decisions"],
        beside["agreements"],
        beside["disagreements"],
        twin["decisions"],
        twin["agreements"],
        twin["disagreements"]
    );
    harness::record(
        "shadow::tcp_buffer_variant",
        json!({ "alone_changes_logged": changes.len(), "variant": { "decisions": beside["decisions"],
                "agreements": beside["agreements"], "disagreements": beside["disagreements"] },
                "identical": { "decisions": twin["decisions"], "agreements": twin["agreements"],
                "disagreements": twin["disagreements"] } }),
    )
    .expect("record figures");
}

#[test]
fn a_shadow_starts_and_stops_from_the_command_line() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let files = harness::scratch_dir("shadow-cli").expect("a directory for the file");
    let file = files.path().join("candidate.wasm");
    std::fs::write(&file, lifecycle::tcp_buffer_variant(u64::from(std::process::id()) + 7)).expect("write the file");
    let policies = harness::scratch_dir("shadow-cli-policies").expect("policy directory");
    let bed = BufferBed::new("shcli", Side::Receiver, BAD_RMEM).expect("test bed");
    let (_sock_dir, socket) = lifecycle::socket_in("shadow-cli");
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .policy_dir(policies.path())
        .control_socket(&socket)
        .start_ready()
        .expect("daemon ready");
    let socket_arg = socket.to_string_lossy().into_owned();
    let file_arg = file.to_string_lossy().into_owned();
    let (ok, out, err) = harness::cli(&["policy", "shadow", &file_arg, "--socket", &socket_arg]);
    assert!(ok, "policy shadow failed: {out}{err}");
    assert!(out.contains("shadow of tcp-buffer running"), "{out}");
    let status = lifecycle::result(&socket, &Request::Status);
    assert_eq!(status["shadows"][0]["name"], "tcp-buffer", "{status}");
    assert_eq!(status["shadows"][0]["live"], true, "{status}");
    let (ok, out, err) = harness::cli(&["policy", "shadow", "--stop", "tcp-buffer", "--socket", &socket_arg]);
    assert!(ok, "policy shadow --stop failed: {out}{err}");
    let status = lifecycle::result(&socket, &Request::Status);
    assert_eq!(status["shadows"], json!([]), "{status}");
    let (ok, _, err) = harness::cli(&["policy", "shadow", "--stop", "tcp-buffer", "--socket", &socket_arg]);
    assert!(!ok && err.contains("no shadow of tcp-buffer runs"), "{err}");
    let (ok, _, err) = harness::cli(&["policy", "shadow", "/nonexistent/x.wasm", "--socket", &socket_arg]);
    assert!(!ok && err.contains("cannot run as a shadow"), "{err}");
    assert!(daemon.terminate().expect("daemon exits").success());
    assert!(daemon.lines().iter().any(|l| l.is_event("shadow-stopped")), "the stop is logged");
}
